//! The API fuzzing step of `cargo xtask test` (also `cargo xtask fuzz-api`): schemathesis
//! (from PyPI, pinned, in a virtualenv under `target/`) generates requests from the server's
//! own OpenAPI document — valid ones and deliberately broken ones — and checks every answer:
//! never a 5xx, only documented statuses, bodies and content types as the document says.
//!
//! It runs against a real `botmox serve` on a fresh SQLite file, authenticated with an API
//! token holding every scope (so the routes are reached, not just their 401s). The seed is
//! fixed so that CI is repeatable; `BOTMOX_FUZZ_SEED` picks another, `BOTMOX_FUZZ_EXAMPLES`
//! the examples per operation.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use crate::{cmd, demo};

/// Pinned: a new schemathesis may add checks; upgrading is a deliberate change.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const DEFAULT_EXAMPLES: &str = "30";
const DEFAULT_SEED: &str = "20261202";

pub fn checks(cargo: &impl Fn() -> Command) -> Result<()> {
    cmd::step("API fuzzing: schemathesis against the OpenAPI document");
    let started = Instant::now();
    let schemathesis = ensure_schemathesis()?;
    // The same build as the end-to-end tests' (tests/src/server.rs): same features, no rebuild.
    cmd::run(cargo().args([
        "build",
        "-p",
        "botmox-control-plane",
        "--bin",
        "botmox",
        "-p",
        "botmox-agent",
        "--bin",
        "botmox-agent",
    ]))?;
    let botmox = cmd::target_dir().join("debug").join(format!("botmox{}", std::env::consts::EXE_SUFFIX));

    let data = cmd::target_dir().join("fuzz-api");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("cannot clear {}", data.display()))?;
    }
    std::fs::create_dir_all(&data)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let password = "fuzz-admin-password-1";
    let mut server = Command::new(&botmox)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("BOTMOX_ADMIN_USERNAME", "admin")
        .env("BOTMOX_ADMIN_PASSWORD", password)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("server.log"))?)
        .spawn()
        .context("cannot start botmox serve")?;
    let outcome = fuzz(&schemathesis, &url, password, &data);
    let _ = server.kill();
    let _ = server.wait();
    outcome?;
    println!("==> API fuzzing passed in {:.0?}", started.elapsed());
    Ok(())
}

fn fuzz(schemathesis: &Path, url: &str, password: &str, data: &Path) -> Result<()> {
    demo::wait_ready(url)?;
    let api = demo::Api::login(url, "admin", password)?;
    let scopes = [
        "bots:read",
        "bots:write",
        "bots:control",
        "agents:read",
        "agents:write",
        "commands:read",
        "commands:write",
        "secrets:write",
        "audit:read",
        "admin",
    ];
    let created = api.post("/api/v1/tokens", json!({ "name": "schemathesis", "scopes": scopes }))?;
    let token = created["secret"].as_str().context("the token answer has no `secret`")?;
    let env = |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
    let (examples, seed) = (env("BOTMOX_FUZZ_EXAMPLES", DEFAULT_EXAMPLES), env("BOTMOX_FUZZ_SEED", DEFAULT_SEED));
    println!("==> schemathesis: {examples} examples per operation, seed {seed}");
    let report = data.join("report");
    let status = cmd::status(
        Command::new(schemathesis)
            .args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["--checks", "all"])
            // Would need two users' resources (object-level authorization is the matrix tests'
            // job), or an unauthenticated variant of every call (so are the 401s). And the
            // server's rules are stricter than JSON Schema can say (printable characters,
            // lengths in bytes, cursors it handed out), so schema-valid input may rightly get
            // a 4xx: what matters is that it is a clear 4xx, never a 5xx.
            .args(["--exclude-checks", "ignored_auth,object_level_authorization,positive_data_acceptance"])
            .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // The fuzzer would end its own credential (revoke its token, disable or delete its
            // user: the API tests cover those); the WebSocket needs an upgrade; the event stream
            // and a bot's log follow never end (their tests are the protocol and panel ones).
            .args(["--exclude-operation-id", "revoke_token", "--exclude-operation-id", "update_user"])
            .args(["--exclude-operation-id", "delete_user"])
            .args(["--exclude-path", "/api/v1/auth/logout", "--exclude-path", "/api/v1/agent/connect"])
            .args(["--exclude-path", "/api/v1/events", "--exclude-path", "/api/v1/bots/{id}/logs"])
            .args(["--request-timeout", "30"])
            // No example database: every run generates from the seed alone.
            .args(["--generation-database", "none"])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report)
            .current_dir(data)
            .env("NO_COLOR", "1"),
    )?;
    if !status.success() {
        bail!(
            "schemathesis found failures (above; server log in {}, JUnit report in {})",
            data.join("server.log").display(),
            report.display()
        );
    }
    Ok(())
}

/// The schemathesis executable, installed into `target/schemathesis-venv` when missing.
fn ensure_schemathesis() -> Result<std::path::PathBuf> {
    let venv = cmd::target_dir().join("schemathesis-venv");
    let bin = venv.join(if cfg!(windows) { "Scripts" } else { "bin" });
    let exe = bin.join(format!("schemathesis{}", std::env::consts::EXE_SUFFIX));
    let pinned = venv.join("pinned.txt");
    if exe.exists() && std::fs::read_to_string(&pinned).is_ok_and(|p| p == SCHEMATHESIS) {
        return Ok(exe);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| cmd::find_on_path(p).is_some())
        .context("python3 is needed for the API fuzzing step (schemathesis)")?;
    cmd::run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    cmd::run(Command::new(bin.join("python")).args(["-m", "pip", "install", "--quiet", SCHEMATHESIS]))
        .context("installing schemathesis from PyPI failed")?;
    std::fs::write(&pinned, SCHEMATHESIS)?;
    Ok(exe)
}
