//! `cargo xtask test`: every check CI runs, in the order that fails fastest and most
//! clearly: the web panel built (it is embedded in `botmox`), Postgres up, cargo-nextest
//! present, formatting, clippy, then the whole test suite under nextest; then the API fuzzed
//! by schemathesis against a real server (`fuzz.rs`); then the production stack natively
//! (Debian's `caddy` in front of two replicas, `tests/tests/stack`); then the
//! panel's unit tests and real-browser test (`panel.rs`); then the tray build and its screenshot test (`tray.rs`); then the
//! Windows agent cross-built and tested under Wine (`windows.rs`). `--quick` skips formatting
//! and clippy, `--no-windows` the Windows step.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::{cmd, debian, fuzz, panel, postgres, split_passthrough, tray, windows};

pub fn test(args: &[String]) -> Result<ExitCode> {
    let (own, nextest_args) = split_passthrough(args);
    let mut quick = false;
    let mut with_windows = cfg!(all(target_os = "linux", target_arch = "x86_64"));
    for arg in own {
        match arg.as_str() {
            "--quick" => quick = true,
            "--no-windows" => with_windows = false,
            other => bail!(
                "unknown option `{other}` for `cargo xtask test` \
                 (it knows --quick and --no-windows; arguments for nextest go after `--`)"
            ),
        }
    }
    let started = Instant::now();

    panel::build()?;

    cmd::step("Postgres for tests");
    let pg_url = postgres::ensure_running()?;
    // Every child below gets the URL, including cargo's test runs.
    let cargo = || {
        let mut cargo = cmd::cargo();
        cargo.env(postgres::URL_VAR, &pg_url);
        cargo
    };

    cmd::step("cargo nextest --version");
    ensure_nextest(&cargo)?;

    if quick {
        println!("==> --quick: skipping cargo fmt and cargo clippy");
    } else {
        cmd::step("cargo fmt --all -- --check");
        ensure_component(&cargo, "fmt", "rustfmt")?;
        cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs from rustfmt's; run `cargo fmt --all`")?;

        cmd::step("cargo clippy --workspace --all-targets -- -D warnings");
        ensure_component(&cargo, "clippy", "clippy")?;
        cmd::run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
            .context("clippy found problems (see above)")?;
    }

    cmd::step("cargo nextest run --workspace --no-fail-fast");
    cmd::run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(nextest_args))
        .context("tests failed or did not build (nextest's summary or the compiler errors are above)")?;

    fuzz::checks(&cargo)?;

    stack(&cargo)?;

    panel::checks(&cargo)?;

    tray::checks(&cargo, quick)?;

    if with_windows {
        windows::test(&cargo, quick)?;
    } else {
        println!("==> skipping the Windows agent under Wine (--no-windows, or not a Linux x86_64 host)");
    }

    println!("==> all checks passed in {:.0?}", started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// The production stack run natively: Caddy with `deploy/Caddyfile.stack` in front of two
/// `botmox` replicas on Postgres, real agents through it. Left out of the plain nextest run
/// (it needs Caddy), so run here, alone, with its figures printed.
fn stack(cargo: &impl Fn() -> Command) -> Result<()> {
    if !cfg!(target_os = "linux") {
        println!("==> stack: the Caddy stack test runs on Linux (Debian's caddy) only");
        return Ok(());
    }
    cmd::step("stack: Debian packages");
    debian::ensure(&["caddy"], "the stack test")?;
    cmd::step("cargo nextest run -p botmox-e2e --test stack --run-ignored only (Caddy, two replicas)");
    cmd::run(&mut cmd::ignored_e2e(cargo, "stack"))
        .context("the stack test failed (Caddy in front of two replicas; its output is above)")
}

/// Installs cargo-nextest when `cargo nextest` is missing, so a fresh machine needs nothing
/// set up by hand.
fn ensure_nextest(cargo: &impl Fn() -> Command) -> Result<()> {
    if let Some(version) = nextest_version(cargo) {
        println!("{version}");
        return Ok(());
    }
    println!("cargo-nextest is missing; installing it (takes a few minutes, once)");
    cmd::run(cargo().args(["install", "--locked", "cargo-nextest"])).context("could not install cargo-nextest")?;
    let version = nextest_version(cargo).context("cargo-nextest was installed but does not run")?;
    println!("{version}");
    Ok(())
}

/// The first line of `cargo nextest --version` (the rest is build details), if it runs.
fn nextest_version(cargo: &impl Fn() -> Command) -> Option<String> {
    let output = cargo().args(["nextest", "--version"]).stdin(Stdio::null()).output().ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    output.status.success().then(|| stdout.lines().next().unwrap_or_default().to_owned())
}

/// Adds a rustup component (rustfmt, clippy) when `cargo <subcommand>` is missing and
/// rustup is there to add it; minimal toolchain profiles leave both out.
fn ensure_component(cargo: &impl Fn() -> Command, subcommand: &str, component: &str) -> Result<()> {
    if cmd::succeeds_quietly(cargo().args([subcommand, "--version"])) {
        return Ok(());
    }
    if cmd::find_on_path("rustup").is_none() {
        bail!("`cargo {subcommand}` is not available and there is no rustup to add {component}");
    }
    println!("`cargo {subcommand}` is missing; adding the {component} component");
    cmd::run(Command::new("rustup").args(["component", "add", component]))
}
