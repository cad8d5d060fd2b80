//! End-to-end tests of the agent: the real server (in-process on a real socket, or the real
//! `botmox` binary where it must stop and come back), the real `botmox-agent` binary paired
//! with a real code, and real bot processes (small sh and python scripts in a temp dir).
//! Every wait is bounded and waits for the thing itself (an API state, an SSE event, a
//! process gone), polling the API with a short interval where no event exists.

mod convergence;
mod drain;
mod pairing;
mod resilience;
mod running;
mod supervision;

use std::{path::Path, time::Duration};

use botmox_contract::events::{Event, EventPayload};
pub use botmox_e2e::agent::script;
use botmox_e2e::{
    agent::{pair, AgentProcess},
    app::{send, TestApp},
    db::Backend,
    sse::SseStream,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// The bound of every wait for something that should happen within a few seconds.
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// The server with a 1 s heartbeat (presence reacts within seconds).
pub async fn spawn_app() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, |settings| {
        settings.heartbeat_interval = Duration::from_secs(1);
        settings.hygiene_interval = Duration::from_millis(100);
    })
    .await
}

/// A fresh pairing code from the API.
pub async fn pairing_code(app: &TestApp) -> anyhow::Result<String> {
    let (status, body) = send(app.post("/api/v1/agents/pairing-codes", &json!({}))).await?;
    anyhow::ensure!(status == 201, "pairing code answered {status}: {body}");
    Ok(body["code"].as_str().unwrap_or_default().to_owned())
}

/// A host: its agent dir, paired with `server` through the real `pair` command. Dropping it
/// kills whatever bots its agent left running.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub agent_id: Uuid,
}

impl Drop for Host {
    fn drop(&mut self) {
        botmox_e2e::agent::reap_bots(self.dir.path());
    }
}

impl Host {
    pub async fn pair(app: &TestApp, server: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        pair(dir.path(), server, &pairing_code(app).await?).await?;
        let credentials: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.json"))?)?;
        let agent_id = credentials["agent_id"].as_str().unwrap_or_default().parse()?;
        Ok(Self { dir, agent_id })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `botmox-agent run <args>`, connected.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<AgentProcess> {
        AgentProcess::start(self.path(), args).await
    }
}

/// A shell bot that prints a line every 200 ms, forever.
pub const CHATTY: &str =
    "#!/bin/sh\necho \"started $$\"\ni=0\nwhile :; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done\n";

/// A bot definition on `agent_id` running `program args`, stopped until started.
pub fn bot_spec(name: &str, agent_id: Uuid, program: &Path, args: &[&str]) -> Value {
    json!({
        "name": name,
        "agent_id": agent_id,
        "exec": { "program": program, "args": args },
        "restart": { "policy": "on-failure", "max_restarts": 3, "window_seconds": 60,
                     "backoff_initial_ms": 200, "backoff_max_ms": 1000, "stable_after_seconds": 60 },
        "stop": { "timeout_seconds": 2 },
        "desired_state": "stopped",
    })
}

pub async fn create_bot(app: &TestApp, spec: &Value) -> anyhow::Result<Uuid> {
    let (status, bot) = send(app.post("/api/v1/bots", spec)).await?;
    anyhow::ensure!(status == 201, "creating a bot answered {status}: {bot}");
    Ok(bot["id"].as_str().unwrap_or_default().parse()?)
}

/// `POST /bots/{id}/{action}` → the command id.
pub async fn control(app: &TestApp, bot_id: Uuid, action: &str) -> anyhow::Result<Uuid> {
    let (status, accepted) = send(app.post(&format!("/api/v1/bots/{bot_id}/{action}"), &json!({}))).await?;
    anyhow::ensure!(status == 202, "{action} answered {status}: {accepted}");
    Ok(accepted["command"]["id"].as_str().unwrap_or_default().parse()?)
}

pub async fn get(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let (status, body) = send(app.get(path)).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
    Ok(body)
}

/// Polls `GET path` (bounded) until `done` accepts the body; returns it.
pub async fn wait_until(app: &TestApp, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = get(app, path).await?;
        if done(&body) {
            return Ok(body);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}; last: {body}");
        tokio::time::sleep(POLL).await;
    }
}

pub async fn wait_bot(app: &TestApp, bot_id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    wait_until(app, &format!("/api/v1/bots/{bot_id}"), what, done).await
}

/// Waits for the bot to be `running` with a pid; returns the pid.
pub async fn wait_running(app: &TestApp, bot_id: Uuid) -> anyhow::Result<u32> {
    let bot = wait_bot(app, bot_id, "running with a pid", |b| b["state"] == "running" && b["pid"].is_u64()).await?;
    Ok(bot["pid"].as_u64().unwrap_or_default() as u32)
}

pub async fn wait_command(app: &TestApp, id: Uuid, status: &str) -> anyhow::Result<Value> {
    wait_until(app, &format!("/api/v1/commands/{id}"), &format!("command {status}"), |c| c["status"] == status).await
}

/// The bot's log lines (text), oldest first.
pub async fn log_lines(app: &TestApp, bot_id: Uuid) -> anyhow::Result<Vec<String>> {
    let body = get(app, &format!("/api/v1/bots/{bot_id}/logs?limit=1000")).await?;
    let items = body["items"].as_array().or_else(|| body.as_array()).cloned().unwrap_or_default();
    Ok(items.iter().filter_map(|l| l["text"].as_str().map(str::to_owned)).collect())
}

/// Waits until the bot's log has a line containing `needle`.
pub async fn wait_log(app: &TestApp, bot_id: Uuid, needle: &str) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = log_lines(app, bot_id).await?;
        if lines.iter().any(|l| l.contains(needle)) {
            return Ok(lines);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no log line with `{needle}` in {WAIT:?}: {lines:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded) until `check` holds for the local processes.
pub async fn wait_local(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The admin's live event stream, opened before the test acts.
pub async fn events(app: &TestApp) -> anyhow::Result<SseStream> {
    SseStream::open(app.get("/api/v1/events")).await
}

/// Collects the bot's observed states from the event stream until `last` (bounded).
pub async fn states_until(events: &mut SseStream, bot_id: Uuid, last: &str) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = events.next_event(left).await.map_err(|e| e.context(format!("states so far: {seen:?}")))?;
        let Ok(event) = event.json::<Event>() else { continue };
        if let EventPayload::BotState(bot) = event.payload {
            if bot.id == bot_id {
                let state = bot.state.as_str().to_owned();
                // The server publishes desired-state changes too: keep state changes only.
                if seen.last() != Some(&state) {
                    seen.push(state.clone());
                }
                if state == last {
                    return Ok(seen);
                }
            }
        }
    }
}
