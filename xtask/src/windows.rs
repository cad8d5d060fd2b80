//! The Windows agent in CI, without Windows: cross-build `botmox-agent` for
//! `x86_64-pc-windows-gnu` with mingw-w64 and run its tests under Wine, then the end-to-end
//! tests (`tests/tests/windows`) that run `botmox-agent.exe` under Wine against the real
//! server. Part of `cargo xtask test`; `--no-windows` skips it.
//!
//! A fresh Debian machine gets what it lacks: `gcc-mingw-w64-x86-64` and `wine` (apt), the
//! Rust target (rustup), a Wine prefix under the target dir, and `bcryptprimitives.dll`.
//! That last one is a shim built from `xtask/wine/`: Rust's std (1.78+) imports
//! `ProcessPrng` from it, which Wine 8 (Debian 12) does not have, so without it no Rust
//! program starts under that Wine. It lives only in the test prefix, never in a release.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

pub const TARGET: &str = "x86_64-pc-windows-gnu";
const LINKER: &str = "x86_64-w64-mingw32-gcc";

/// Everything the Windows step needs in the environment of the cargo commands it runs.
struct Wine {
    /// The Wine loader that runs a 64-bit .exe.
    loader: PathBuf,
    prefix: PathBuf,
}

impl Wine {
    fn apply(&self, command: &mut Command) {
        command
            .env(format!("CARGO_TARGET_{}_LINKER", env_name(TARGET)), LINKER)
            .env(format!("CARGO_TARGET_{}_RUNNER", env_name(TARGET)), &self.loader)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("BOTMOX_WINE", &self.loader);
    }
}

/// `x86_64-pc-windows-gnu` → `X86_64_PC_WINDOWS_GNU`, as cargo spells target env vars.
fn env_name(target: &str) -> String {
    target.to_uppercase().replace('-', "_")
}

/// `cargo xtask test-windows [--quick]`: the Windows step alone, for working on the Windows
/// agent without running the whole suite.
pub fn test_only(args: &[String]) -> Result<std::process::ExitCode> {
    let mut quick = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other => bail!("unknown option `{other}` for `cargo xtask test-windows` (it knows --quick)"),
        }
    }
    test(&cmd::cargo, quick)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs the Windows step: tools, prefix, clippy (unless `quick`), the agent's tests under
/// Wine, then the end-to-end tests. `cargo` makes a cargo command with the caller's env.
pub fn test(cargo: &impl Fn() -> Command, quick: bool) -> Result<()> {
    let started = Instant::now();
    cmd::step("Windows agent: mingw-w64, Wine, the Rust target, a Wine prefix");
    ensure_packages()?;
    ensure_target()?;
    let wine = prepare_prefix()?;
    println!("Wine: {} with WINEPREFIX={}", wine.loader.display(), wine.prefix.display());

    if !quick {
        cmd::step(&format!("cargo clippy -p botmox-agent --target {TARGET} --all-targets -- -D warnings"));
        let mut clippy = cargo();
        clippy.args(["clippy", "-p", "botmox-agent", "--target", TARGET, "--all-targets", "--", "-D", "warnings"]);
        wine.apply(&mut clippy);
        cmd::run(&mut clippy).context("clippy found problems in the Windows build of the agent (see above)")?;
    }

    cmd::step(&format!("cargo test -p botmox-agent --target {TARGET} (under Wine)"));
    let mut unit = cargo();
    unit.args(["test", "-p", "botmox-agent", "--target", TARGET]);
    wine.apply(&mut unit);
    cmd::run(&mut unit).context("the agent's tests failed under Wine (see above)")?;

    cmd::step(&format!("cargo build -p botmox-agent --target {TARGET}"));
    let mut build = cargo();
    build.args(["build", "-p", "botmox-agent", "--bin", "botmox-agent", "--target", TARGET]);
    wine.apply(&mut build);
    cmd::run(&mut build).context("the Windows agent did not build")?;
    let exe = cmd::target_dir().join(TARGET).join("debug").join("botmox-agent.exe");
    anyhow::ensure!(exe.is_file(), "the build did not produce {}", exe.display());

    cmd::step("cargo nextest run -p botmox-e2e --test windows --run-ignored only (the Windows agent under Wine)");
    println!("(ignored by plain nextest runs; here with BOTMOX_WINDOWS_AGENT={})", exe.display());
    let mut e2e = cargo();
    e2e.args(["nextest", "run", "-p", "botmox-e2e", "--test", "windows", "--run-ignored", "only", "--no-fail-fast"]);
    e2e.env("BOTMOX_WINDOWS_AGENT", &exe);
    wine.apply(&mut e2e);
    cmd::run(&mut e2e).context("the Windows end-to-end tests failed (see above)")?;

    println!("==> Windows agent checks passed in {:.0?}", started.elapsed());
    Ok(())
}

/// mingw-w64 and Wine from apt, only when missing (CI machines start bare; this runs as root
/// there, and says what to install when it cannot).
fn ensure_packages() -> Result<()> {
    if cmd::find_on_path(LINKER).is_some() && wine_loader().is_some() {
        return Ok(());
    }
    if cmd::find_on_path("apt-get").is_none() {
        bail!("the Windows step needs {LINKER} (mingw-w64) and Wine; install them, or skip it with --no-windows");
    }
    println!("installing mingw-w64 and Wine with apt-get (once; a few minutes)");
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd::run(&mut command)
    };
    apt(&["update"]).context("apt-get update failed (the Windows step needs root; or use --no-windows)")?;
    apt(&["install", "-y", "--no-install-recommends", "gcc-mingw-w64-x86-64", "wine", "wine64"])
        .context("could not install mingw-w64 and Wine (or skip the Windows step with --no-windows)")?;
    anyhow::ensure!(cmd::find_on_path(LINKER).is_some(), "{LINKER} is still missing after apt-get install");
    anyhow::ensure!(wine_loader().is_some(), "no Wine loader (wine64) after apt-get install");
    Ok(())
}

/// The loader that runs 64-bit programs: Debian keeps `wine64` out of PATH.
fn wine_loader() -> Option<PathBuf> {
    let known = ["/usr/lib/wine/wine64", "/usr/lib64/wine/wine64", "/opt/wine-stable/bin/wine64"];
    known
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| cmd::find_on_path("wine64"))
        .or_else(|| cmd::find_on_path("wine"))
}

fn wineserver() -> Option<PathBuf> {
    ["/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| cmd::find_on_path("wineserver"))
}

fn ensure_target() -> Result<()> {
    let Some(rustup) = cmd::find_on_path("rustup") else {
        // Without rustup, assume the target is provided some other way; the build says if not.
        return Ok(());
    };
    let installed = Command::new(&rustup).args(["target", "list", "--installed"]).output()?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    println!("adding the Rust target {TARGET}");
    cmd::run(Command::new(rustup).args(["target", "add", TARGET]))
}

/// A Wine prefix under the target dir, initialised once, with the `bcryptprimitives.dll`
/// shim in its `system32` (rebuilt when its source changes).
fn prepare_prefix() -> Result<Wine> {
    let loader = wine_loader().context("no Wine loader found")?;
    let prefix = cmd::target_dir().join("wine-prefix");
    let system32 = prefix.join("drive_c").join("windows").join("system32");
    if !prefix.join("system.reg").is_file() || !system32.is_dir() {
        println!("creating the Wine prefix {} (once)", prefix.display());
        std::fs::create_dir_all(&prefix)?;
        let mut boot = Command::new(&loader);
        boot.args(["wineboot", "-i"]).env("WINEPREFIX", &prefix).env("WINEDEBUG", "-all");
        cmd::run(&mut boot).context("wineboot could not create the Wine prefix")?;
        if let Some(server) = wineserver() {
            // wineboot returns before Wine's own services have settled; wait for them.
            let _ = cmd::status(Command::new(server).arg("-w").env("WINEPREFIX", &prefix));
        }
    }
    let dll = build_shim()?;
    let installed = system32.join("bcryptprimitives.dll");
    if std::fs::read(&installed).ok() != Some(std::fs::read(&dll)?) {
        std::fs::copy(&dll, &installed).with_context(|| format!("cannot copy the shim to {}", installed.display()))?;
    }
    Ok(Wine { loader, prefix })
}

/// Builds `xtask/wine/bcryptprimitives.dll` into the target dir when missing or stale.
fn build_shim() -> Result<PathBuf> {
    let sources = cmd::repo_root().join("xtask").join("wine");
    let (c, def) = (sources.join("bcryptprimitives.c"), sources.join("bcryptprimitives.def"));
    let out_dir = cmd::target_dir().join("wine-shim");
    let dll = out_dir.join("bcryptprimitives.dll");
    if newer_than(&dll, &[&c, &def]) {
        return Ok(dll);
    }
    std::fs::create_dir_all(&out_dir)?;
    let mut gcc = Command::new(LINKER);
    gcc.args(["-shared", "-O2", "-s", "-o"]).arg(&dll).arg(&c).arg(&def).arg("-ladvapi32");
    cmd::run(&mut gcc).context("could not build the bcryptprimitives.dll shim")?;
    Ok(dll)
}

/// Whether `output` exists and is newer than every input.
fn newer_than(output: &Path, inputs: &[&Path]) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(output) else { return false };
    inputs.iter().all(|input| modified(input).is_some_and(|changed| changed <= built))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_env_names_are_cargos() {
        assert_eq!(env_name(TARGET), "X86_64_PC_WINDOWS_GNU");
    }
}
