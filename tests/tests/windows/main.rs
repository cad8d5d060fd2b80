//! The Windows agent end to end: the real `botmox-agent.exe` (cross-built for
//! `x86_64-pc-windows-gnu`) runs under Wine against the real server on Linux, pairs with a
//! real code, and runs a real Windows bot (`cmd.exe` starting `ping.exe`: a tree of two).
//!
//! Plain `cargo nextest run --workspace` has no Windows build, so these tests are ignored
//! there; `cargo xtask test` cross-builds the agent, prepares a Wine prefix and runs them with
//! `--run-ignored only`, naming the executable in `BOTMOX_WINDOWS_AGENT` and Wine in
//! `BOTMOX_WINE` (default `wine`); `WINEPREFIX` and `WINEDEBUG` pass through.
//!
//! Wine runs every Windows process as a Linux process showing its Windows command line, so
//! the bot's processes are found from here by a marker in theirs, and "gone" is checked on
//! the real thing. Every wait is bounded and waits for the condition itself.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use botmox_e2e::{
    agent::is_running,
    app::{send, TestApp},
    db::Backend,
    server::Lines,
};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Generous: Wine starts its server and services on first use.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const AGENT_VAR: &str = "BOTMOX_WINDOWS_AGENT";

/// The bot: `cmd.exe` prints a line, then loops printing a tick and waiting a second in a
/// child `ping.exe` (a tree of two). `marker` (ping's `-w` timeout) makes its processes
/// recognisable from Linux, where Wine shows their Windows command lines.
fn bot_args(marker: u32) -> [String; 2] {
    let script = format!(
        "@echo off& echo started& for /L %i in (1,1,100000) do (echo tick %i& ping -n 2 -w {marker} 127.0.0.1 >NUL)"
    );
    ["/C".to_owned(), script]
}

fn windows_agent() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(AGENT_VAR).map(PathBuf::from).with_context(|| {
        format!(
            "{AGENT_VAR} is not set: these tests run the Windows agent under Wine; `cargo xtask test` \
             cross-builds it and runs them (or set {AGENT_VAR} to a botmox-agent.exe yourself)"
        )
    })?;
    anyhow::ensure!(path.is_file(), "{AGENT_VAR}={} is not a file", path.display());
    Ok(path)
}

/// `wine botmox-agent.exe --config-dir <dir> <args>`.
fn agent_command(dir: &str, args: &[&str]) -> anyhow::Result<Command> {
    let wine = std::env::var_os("BOTMOX_WINE").unwrap_or_else(|| "wine".into());
    let mut command = Command::new(wine);
    command.arg(windows_agent()?).args(["--config-dir", dir]).args(args);
    command.env_remove("BOTMOX_AGENT_DIR").env("BOTMOX_AGENT_STATUS_LISTEN", "127.0.0.1:0");
    command.stdin(Stdio::null()).kill_on_drop(true);
    Ok(command)
}

/// The Windows spelling of a Linux path, through Wine's `Z:` drive (the whole file system).
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// A host: its agent dir, paired through the real `pair` command of the Windows agent.
struct Host {
    dir: tempfile::TempDir,
    agent_id: Uuid,
}

impl Host {
    async fn pair(app: &TestApp) -> anyhow::Result<Self> {
        let (status, body) = send(app.post("/api/v1/agents/pairing-codes", &json!({}))).await?;
        anyhow::ensure!(status == 201, "pairing code answered {status}: {body}");
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        let dir = tempfile::tempdir()?;
        let mut pair = agent_command(&windows_path(dir.path()), &["pair", "--server", &app.base_url, "--code", &code])?;
        // Output into a file, not a pipe: Wine's own server and services, started by the
        // first Wine program, inherit it and would hold a pipe open long after pair exits.
        let output = tempfile::tempfile()?;
        pair.stdout(output.try_clone()?).stderr(output.try_clone()?);
        let status = tokio::time::timeout(WAIT, pair.status()).await.context("pair did not finish")??;
        if !status.success() {
            let mut said = String::new();
            let mut output = output;
            std::io::Seek::rewind(&mut output)?;
            std::io::Read::read_to_string(&mut output, &mut said)?;
            anyhow::bail!("pair failed ({status}): {said}");
        }
        let credentials: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.json"))?)?;
        let agent_id = credentials["agent_id"].as_str().unwrap_or_default().parse()?;
        Ok(Self { dir, agent_id })
    }

    fn credentials(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("agent.json"))?)?)
    }

    /// `botmox-agent.exe run`, connected.
    async fn run(&self) -> anyhow::Result<Agent> {
        let mut command = agent_command(&windows_path(self.dir.path()), &["run"])?;
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot start wine")?;
        let stderr = Lines::default();
        stderr.spawn_reader(child.stderr.take().context("no stderr")?);
        Lines::default().spawn_reader(child.stdout.take().context("no stdout")?);
        stderr.wait_for("connected (", WAIT).await.context("the Windows agent did not connect")?;
        Ok(Agent { child, stderr })
    }
}

struct Agent {
    child: Child,
    /// What the agent logged, for failure messages.
    stderr: Lines,
}

impl Agent {
    /// Kills the agent's Wine process: the agent crashes, as a killed process on Windows.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

async fn get(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let (status, body) = send(app.get(path)).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
    Ok(body)
}

/// Polls the bot (bounded) until `done` accepts it.
async fn wait_bot(app: &TestApp, bot_id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let bot = get(app, &format!("/api/v1/bots/{bot_id}")).await?;
        if done(&bot) {
            return Ok(bot);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}; last: {bot}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the bot's log has a line containing `needle`.
async fn wait_log(app: &TestApp, bot_id: Uuid, needle: &str) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = get(app, &format!("/api/v1/bots/{bot_id}/logs?limit=1000")).await?;
        let items = body["items"].as_array().or_else(|| body.as_array()).cloned().unwrap_or_default();
        let lines: Vec<String> = items.iter().filter_map(|l| l["text"].as_str().map(str::to_owned)).collect();
        if lines.iter().any(|l| l.contains(needle)) {
            return Ok(lines);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no log line with `{needle}` in {WAIT:?}: {lines:?}");
        tokio::time::sleep(POLL).await;
    }
}

async fn control(app: &TestApp, bot_id: Uuid, action: &str) -> anyhow::Result<()> {
    let (status, accepted) = send(app.post(&format!("/api/v1/bots/{bot_id}/{action}"), &json!({}))).await?;
    anyhow::ensure!(status == 202, "{action} answered {status}: {accepted}");
    Ok(())
}

async fn create_bot(app: &TestApp, agent_id: Uuid, marker: u32) -> anyhow::Result<Uuid> {
    let spec = json!({
        "name": "windows-bot",
        "agent_id": agent_id,
        "exec": { "program": "cmd", "args": bot_args(marker) },
        "restart": { "policy": "on-failure", "max_restarts": 3, "window_seconds": 60,
                     "backoff_initial_ms": 200, "backoff_max_ms": 1000, "stable_after_seconds": 60 },
        "stop": { "timeout_seconds": 2 },
        "desired_state": "stopped",
    });
    let (status, bot) = send(app.post("/api/v1/bots", &spec)).await?;
    anyhow::ensure!(status == 201, "creating a bot answered {status}: {bot}");
    Ok(bot["id"].as_str().unwrap_or_default().parse()?)
}

/// A marker no other test's bot uses.
fn marker() -> u32 {
    100_000 + rand_u32() % 900_000
}

fn rand_u32() -> u32 {
    // The low bits of a v7 UUID are random; no extra crate for one number.
    Uuid::now_v7().as_u128() as u32
}

/// The live Linux processes (Wine's) of the bot's Windows process tree: `cmd.exe` and its
/// `ping.exe`, whose command lines carry the marker.
fn bot_processes(marker: u32) -> Vec<u32> {
    let needle = format!("-w {marker} 127.0.0.1");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).replace('\0', " ").contains(&needle))
        })
        .filter(|pid| is_running(*pid))
        .collect()
}

async fn wait_processes(marker: u32, what: &str, done: impl Fn(&[u32]) -> bool) -> anyhow::Result<Vec<u32>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let processes = bot_processes(marker);
        if done(&processes) {
            return Ok(processes);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}; processes: {processes:?}");
        tokio::time::sleep(POLL).await;
    }
}

async fn spawn_app() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, |settings| {
        settings.heartbeat_interval = Duration::from_secs(1);
        settings.hygiene_interval = Duration::from_millis(100);
    })
    .await
}

/// Pair (the token stored DPAPI-protected), run, start a bot (running with a pid and its
/// log lines through the API, its tree alive), stop it (stopped, the whole tree gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Windows agent; cargo xtask test runs it under Wine"]
async fn pair_start_stop_a_windows_bot() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app).await?;
    let credentials = host.credentials()?;
    assert!(
        credentials["agent_token_dpapi"].is_string() && credentials.get("agent_token").is_none(),
        "the token is DPAPI-protected on Windows: {credentials}"
    );
    let agent = host.run().await?;
    let online = |a: &Value| a["status"] == "online";
    let deadline = tokio::time::Instant::now() + WAIT;
    while !online(&get(&app, &format!("/api/v1/agents/{}", host.agent_id)).await?) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent never showed online");
        tokio::time::sleep(POLL).await;
    }

    let marker = marker();
    let bot_id = create_bot(&app, host.agent_id, marker).await?;
    control(&app, bot_id, "start").await?;
    let bot = wait_bot(&app, bot_id, "running with a pid", |b| b["state"] == "running" && b["pid"].is_u64()).await?;
    assert!(bot["pid"].as_u64().is_some_and(|pid| pid > 0), "{bot}");
    let lines = wait_log(&app, bot_id, "tick 2")
        .await
        .with_context(|| format!("the agent said: {:#?}", agent.stderr.snapshot()))?;
    assert_eq!(lines[..2], ["started", "tick 1"], "line by line, CRLF cut");
    wait_processes(marker, "cmd.exe and ping.exe to run", |p| p.len() >= 2).await?;

    control(&app, bot_id, "stop").await?;
    let stopped = wait_bot(&app, bot_id, "stopped", |b| b["state"] == "stopped").await?;
    assert!(stopped["pid"].is_null(), "{stopped}");
    wait_processes(marker, "the whole tree to be gone", <[u32]>::is_empty).await?;
    agent.kill().await?;
    app.stop().await
}

/// Kill-on-close, end to end: when the agent dies its bots die with it (nothing orphaned);
/// the restarted agent starts the bot again, because its desired state is `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Windows agent; cargo xtask test runs it under Wine"]
async fn bots_die_with_a_killed_agent_and_come_back_with_the_next() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app).await?;
    let agent = host.run().await?;
    let marker = marker();
    let bot_id = create_bot(&app, host.agent_id, marker).await?;
    control(&app, bot_id, "start").await?;
    let first = wait_bot(&app, bot_id, "running", |b| b["state"] == "running" && b["pid"].is_u64()).await?;
    let before = wait_processes(marker, "the bot's tree to run", |p| p.len() >= 2).await?;

    agent.kill().await?;
    wait_processes(marker, "the bot's tree to die with its agent", <[u32]>::is_empty).await?;

    let _agent = host.run().await?;
    let again = wait_bot(&app, bot_id, "running again under the new agent", |b| {
        b["state"] == "running" && b["pid"].is_u64() && b["pid"] != first["pid"]
    })
    .await?;
    let after = wait_processes(marker, "one new tree", |p| p.len() >= 2).await?;
    assert!(after.iter().all(|pid| !before.contains(pid)), "new processes: {before:?} then {after:?}; {again}");
    app.stop().await
}
