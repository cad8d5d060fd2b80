//! Benchmarks of the real release `botmox-agent` with real bot processes, against the real
//! release server (SPEC §9):
//!
//! - `agent`: release binary size (target ≤ 15 MB), idle RSS (≤ 12 MB) and CPU (≤ 0.2 %), RSS
//!   with 20 supervised bots (≤ 25 MB), click-to-running (API start → process running → state
//!   visible to API clients, p99 ≤ 50 ms) and crash → running again with a 1 s backoff
//!   (≤ 1.5 s);
//! - `offline`: agents killed with SIGKILL → marked offline by the server
//!   (≤ 3 × heartbeat interval + 1 s).
//!
//! "Visible to API clients" is the bot's `running` event on `GET /events`: the server publishes
//! it after the state is stored, so a `GET /bots/{id}` at that moment says `running` too.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    events::{Event, EventPayload},
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    fleet::{clock_ticks_per_second, process_usage, Prepared, Served},
    Report, Samples,
};
use crate::{
    agent::{agent_bin, pair, script, AgentProcess},
    db::Backend,
    sse::SseStream,
};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentOptions {
    /// Starts timed for click-to-running.
    #[arg(long = "agent-starts", default_value_t = 100)]
    pub starts: usize,
    /// Crashes timed for crash → running.
    #[arg(long = "agent-crashes", default_value_t = 10)]
    pub crashes: usize,
    /// How long idle and busy CPU are measured.
    #[arg(long = "agent-seconds", default_value_t = 20)]
    pub seconds: u64,
    /// Agents killed at once for the offline measurement.
    #[arg(long = "offline-agents", default_value_t = 5)]
    pub offline_agents: usize,
}

/// The bound of every wait for an event (the offline wait is 3 × the 5 s heartbeat).
const WAIT: Duration = Duration::from_secs(30);
/// The release server runs with its default heartbeat interval.
const SERVER_HEARTBEAT: Duration = Duration::from_secs(5);
/// A bot that runs until stopped and writes nothing.
const QUIET_BOT: &str = "#!/bin/sh\nexec sleep 100000\n";

/// One paired host: its agent dir and agent id.
type Host = crate::agent::PairedHost;

impl Served {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.client.request(method.clone(), self.server.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path} answered {status}: {body}");
        Ok(body)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn host(&self) -> anyhow::Result<Host> {
        let code = self.post("/api/v1/agents/pairing-codes", json!({})).await?;
        let code = code["code"].as_str().context("no pairing code")?;
        let dir = tempfile::tempdir()?;
        pair(dir.path(), &self.server.url(""), code).await?;
        Host::from_dir(dir)
    }

    async fn bot(&self, name: &str, agent_id: Uuid, program: &Path, backoff_ms: u64) -> anyhow::Result<Uuid> {
        let spec = json!({
            "name": name, "agent_id": agent_id, "exec": { "program": program },
            "restart": { "policy": "always", "max_restarts": 1000, "window_seconds": 60,
                         "backoff_initial_ms": backoff_ms, "backoff_max_ms": backoff_ms, "stable_after_seconds": 60 },
            "stop": { "timeout_seconds": 2 },
        });
        let bot = self.post("/api/v1/bots", spec).await?;
        Ok(bot["id"].as_str().unwrap_or_default().parse()?)
    }

    async fn events(&self) -> anyhow::Result<SseStream> {
        SseStream::open(self.client.get(self.server.url("/api/v1/events")).bearer_auth(&self.token)).await
    }
}

/// Reads events until `found` accepts one (bounded by [`WAIT`]); returns what it returned.
async fn next_matching<T>(
    events: &mut SseStream,
    what: &str,
    mut found: impl FnMut(EventPayload) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = events.next_event(left).await.with_context(|| format!("waiting for {what}"))?;
        if let Some(hit) = event.json::<Event>().ok().and_then(|e| found(e.payload)) {
            return Ok(hit);
        }
    }
}

/// The next `BotState` event of `bot_id` in `state`; returns its pid.
async fn bot_state(events: &mut SseStream, bot_id: Uuid, state: BotState) -> anyhow::Result<Option<u32>> {
    next_matching(events, &format!("bot {bot_id} {state:?}"), |payload| match payload {
        EventPayload::BotState(bot) if bot.id == bot_id && bot.state == state => Some(bot.pid),
        _ => None,
    })
    .await
}

/// CPU (% of one core) and RSS (MB) of `pid` over `seconds`.
async fn usage_over(pid: u32, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let (ticks_before, _, _) = process_usage(pid)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (ticks_after, rss_kib, _) = process_usage(pid)?;
    let cpu = (ticks_after - ticks_before) as f64 / clock_ticks_per_second() / started.elapsed().as_secs_f64() * 100.0;
    Ok((cpu, rss_kib as f64 / 1024.0))
}

pub async fn agent(options: &AgentOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let served = Prepared::new(backend).await?.serve().await?;
    let size = std::fs::metadata(agent_bin()?)?.len() as f64 / 1_048_576.0;
    let host = served.host().await?;
    let agent = AgentProcess::start(host.dir.path(), &[]).await?;
    let agent_pid = agent.pid().context("the agent has no pid")?;
    let (idle_cpu, idle_rss) = usage_over(agent_pid, options.seconds).await?;

    let bots_dir = tempfile::tempdir()?;
    let quiet = script(bots_dir.path(), "quiet.sh", QUIET_BOT)?;
    let mut events = served.events().await?;

    // Click-to-running, one bot started and stopped again and again.
    let clicked = served.bot("click", host.agent_id, &quiet, 1000).await?;
    let mut click = Samples::default();
    for _ in 0..options.starts {
        let started = Instant::now();
        served.post(&format!("/api/v1/bots/{clicked}/start"), json!({})).await?;
        bot_state(&mut events, clicked, BotState::Running).await?;
        click.record(started.elapsed());
        served.post(&format!("/api/v1/bots/{clicked}/stop"), json!({})).await?;
        bot_state(&mut events, clicked, BotState::Stopped).await?;
    }

    // Crash → running again: the bench kills the bot's process (SIGKILL) and waits for the
    // agent to report it running again after its 1 s backoff.
    let crashing = served.bot("crash", host.agent_id, &quiet, 1000).await?;
    served.post(&format!("/api/v1/bots/{crashing}/start"), json!({})).await?;
    let mut pid = bot_state(&mut events, crashing, BotState::Running).await?.context("running without a pid")?;
    let mut crash = Samples::default();
    for _ in 0..options.crashes {
        let killed = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)?;
        let again = loop {
            let seen = bot_state(&mut events, crashing, BotState::Running).await?;
            if let Some(new_pid) = seen.filter(|p| *p != pid) {
                break new_pid;
            }
        };
        crash.record(killed.elapsed());
        pid = again;
    }
    served.post(&format!("/api/v1/bots/{crashing}/stop"), json!({})).await?;
    bot_state(&mut events, crashing, BotState::Stopped).await?;

    // 20 supervised bots, each writing a line a second.
    let ticking = script(bots_dir.path(), "tick.sh", "#!/bin/sh\nwhile :; do echo tick; sleep 1; done\n")?;
    let mut busy = Vec::new();
    for i in 0..20 {
        let bot = served.bot(&format!("busy-{i:02}"), host.agent_id, &ticking, 1000).await?;
        served.post(&format!("/api/v1/bots/{bot}/start"), json!({})).await?;
        busy.push(bot);
    }
    // They start in any order: wait until each has been seen running.
    while !busy.is_empty() {
        let running = next_matching(&mut events, &format!("{} bots to run", busy.len()), |payload| match payload {
            EventPayload::BotState(bot) if bot.state == BotState::Running => Some(bot.id),
            _ => None,
        })
        .await?;
        busy.retain(|id| *id != running);
    }
    let (busy_cpu, busy_rss) = usage_over(agent_pid, options.seconds).await?;
    drop(events);
    agent.terminate().await?;
    drop(host);
    served.stop().await?;

    Ok(vec![Report {
        bench: "agent",
        backend,
        about: "the release botmox-agent with real bot processes (sh scripts), against the release server".into(),
        figures: vec![
            ("binary size".into(), format!("{size:.1} MB (target ≤ 15 MB)")),
            (
                "idle".into(),
                format!(
                    "{idle_rss:.1} MB RSS, {idle_cpu:.2} % CPU over {} s (targets ≤ 12 MB, ≤ 0.2 %)",
                    options.seconds
                ),
            ),
            (
                "20 bots".into(),
                format!("{busy_rss:.1} MB RSS, {busy_cpu:.2} % CPU over {} s (target ≤ 25 MB)", options.seconds),
            ),
            ("targets".into(), "click-to-running p99 ≤ 50 ms; crash → running (1 s backoff) ≤ 1.5 s".into()),
        ],
        latencies: vec![("click-to-running".into(), click), ("crash → running".into(), crash)],
    }])
}

pub async fn offline(options: &AgentOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let served = Prepared::new(backend).await?.serve().await?;
    let mut hosts = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..options.offline_agents {
        let host = served.host().await?;
        agents.push(AgentProcess::start(host.dir.path(), &[]).await?);
        hosts.push(host);
    }
    let heartbeat_s = SERVER_HEARTBEAT.as_secs_f64();
    let mut events = served.events().await?;
    // Kill them all at once: their last heartbeats are spread over the interval, as in life.
    let killed = Instant::now();
    for agent in agents {
        agent.kill().await?;
    }
    let mut waiting: Vec<Uuid> = hosts.iter().map(|h| h.agent_id).collect();
    let mut samples = Samples::default();
    while !waiting.is_empty() {
        let offline = next_matching(&mut events, "the agents to be marked offline", |payload| match payload {
            EventPayload::AgentPresence { agent_id, status: AgentStatus::Offline, .. } => Some(agent_id),
            _ => None,
        })
        .await?;
        if waiting.contains(&offline) {
            samples.record(killed.elapsed());
            waiting.retain(|id| *id != offline);
        }
    }
    drop(events);
    drop(hosts);
    served.stop().await?;
    Ok(vec![Report {
        bench: "offline",
        backend,
        about: format!(
            "{} real agents killed with SIGKILL at once → marked offline by the server",
            options.offline_agents
        ),
        figures: vec![
            ("heartbeat interval".into(), format!("{heartbeat_s} s")),
            ("target".into(), format!("≤ 3 × heartbeat + 1 s = {} s", 3.0 * heartbeat_s + 1.0)),
        ],
        latencies: vec![("killed → offline".into(), samples)],
    }])
}
