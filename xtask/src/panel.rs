//! The web panel's steps: `build` (`npm ci` when the lockfile changed, then `npm run build`
//! when a source is newer than `frontend/dist`) runs before anything builds `botmox`, which
//! embeds `frontend/dist`; `checks` (vitest, Debian's Chromium, then the real-browser test
//! `tests/tests/panel`) runs in `cargo xtask test`; `openapi` rewrites the API snapshot the
//! panel's types come from, and regenerates those types.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{bail, Context as _, Result};

use crate::{cmd, debian};

fn frontend() -> PathBuf {
    cmd::repo_root().join("frontend")
}

fn npm() -> Result<Command> {
    let npm = cmd::find_on_path("npm").or_else(|| cmd::find_on_path("npm.cmd"));
    let Some(npm) = npm else {
        bail!("the web panel needs Node.js 20+ and npm on PATH (Debian: apt-get install nodejs npm)");
    };
    let mut command = Command::new(npm);
    command.current_dir(frontend()).stdin(Stdio::null());
    Ok(command)
}

/// `npm ci` if `node_modules` is older than the lockfile, then `vite build` if needed.
pub fn build() -> Result<()> {
    let dir = frontend();
    let installed = dir.join("node_modules/.package-lock.json");
    if newest(&[dir.join("package-lock.json")]) > modified(&installed) {
        cmd::step("panel: npm ci");
        cmd::run(npm()?.args(["ci", "--no-audit", "--no-fund"])).context("npm ci failed in frontend/")?;
    }
    let sources =
        ["src", "public", "index.html", "package-lock.json", "vite.config.ts", "tsconfig.json", "openapi.json"]
            .map(|p| dir.join(p));
    let built = dir.join("dist/index.html");
    if newest(&sources) > modified(&built) {
        cmd::step("panel: npm run build (tsc, vite build, brotli/gzip)");
        cmd::run(npm()?.args(["run", "build"])).context("the panel's build failed (frontend/, see above)")?;
    } else {
        println!("==> panel: frontend/dist is up to date");
    }
    Ok(())
}

/// vitest, Chromium, then the real-browser end-to-end test (`tests/tests/panel`).
pub fn checks(cargo: &impl Fn() -> Command) -> Result<()> {
    cmd::step("panel: vitest");
    cmd::run(npm()?.args(["test"])).context("the panel's unit tests failed")?;
    if !cfg!(target_os = "linux") {
        println!("==> panel: the browser test runs on Linux (Debian's Chromium) only");
        return Ok(());
    }
    cmd::step("panel: Debian packages");
    // Fonts are only recommended by chromium; without one, pages render as boxes.
    debian::ensure(&["chromium", "fonts-liberation"], "the panel's browser test")?;
    cmd::step("cargo nextest run -p botmox-e2e --test panel --run-ignored only (Chromium)");
    cmd::run(&mut cmd::ignored_e2e(cargo, "panel")).with_context(|| {
        format!(
            "the panel's browser test failed (screenshots in {})",
            cmd::target_dir().join("artifacts/panel").display()
        )
    })
}

/// `cargo xtask test-panel`: the panel's steps of `cargo xtask test` alone.
pub fn test_only() -> Result<std::process::ExitCode> {
    build()?;
    checks(&cmd::cargo)?;
    println!("==> panel checks passed");
    Ok(std::process::ExitCode::SUCCESS)
}

/// `cargo xtask openapi`: the snapshot `frontend/openapi.json` from the server's code, then
/// the TypeScript types generated from it (`frontend/src/lib/api/schema.d.ts`).
pub fn openapi() -> Result<std::process::ExitCode> {
    cmd::step("frontend/openapi.json from botmox_control_plane::http::openapi()");
    cmd::run(
        cmd::cargo()
            .args(["test", "--quiet", "-p", "botmox-control-plane", "--lib", "frontend_openapi_snapshot"])
            .env("BOTMOX_UPDATE_OPENAPI", "1"),
    )?;
    if !frontend().join("node_modules/.package-lock.json").exists() {
        cmd::step("panel: npm ci");
        cmd::run(npm()?.args(["ci", "--no-audit", "--no-fund"]))?;
    }
    cmd::step("openapi-typescript → frontend/src/lib/api/schema.d.ts");
    cmd::run(npm()?.args(["run", "gen:api"]))?;
    println!("==> done: commit frontend/openapi.json and frontend/src/lib/api/schema.d.ts");
    Ok(std::process::ExitCode::SUCCESS)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time under `paths` (files, or folders walked recursively).
fn newest(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        } else {
            newest = newest.max(meta.modified().ok());
        }
    }
    newest
}
