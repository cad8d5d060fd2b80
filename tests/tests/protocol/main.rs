//! Agent protocol tests: the real server (in-process on a real socket, SQLite and Postgres; two
//! real `botmox serve` replicas for the cluster case) and simulated agents that speak the real
//! protocol over the real transports (`botmox_e2e::sim`). Every wait is for an event (a frame,
//! an SSE event, a closed socket), bounded; protocol timings are shortened so that leases and
//! presence take about a second.

mod delivery;
mod drain;
mod events;
mod fleet;
mod flow;
mod frames;
mod fuzz;
mod logs;
mod ordering;
mod ownership;
mod presence;
mod replicas;
mod reports;
mod secrets;
mod shutdown;

use std::time::Duration;

use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    commands::CommandStatus,
    events::{Event, EventPayload},
};
use botmox_e2e::{
    app::{send, TestApp},
    db::Backend,
    sim::SimConfig,
    sse::SseStream,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// The bound of every wait for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server with protocol timings short enough that leases and presence take ~1 s.
pub async fn spawn(backend: Backend) -> anyhow::Result<TestApp> {
    TestApp::spawn_with(backend, |settings| {
        settings.heartbeat_interval = Duration::from_secs(1);
        settings.command_lease = Duration::from_secs(1);
        settings.hygiene_interval = Duration::from_millis(100);
    })
    .await
}

/// A bot definition that does not start by itself (creating a `running` bot queues a start).
pub fn bot_spec(name: &str, agent_id: Uuid) -> Value {
    json!({
        "name": name,
        "agent_id": agent_id,
        "exec": { "program": "python3", "args": ["bot.py"], "env": { "MODE": "farm" } },
        "desired_state": "stopped",
        "tags": ["sim"]
    })
}

pub async fn create_bot_from(app: &TestApp, spec: &Value) -> anyhow::Result<Uuid> {
    let (status, bot) = send(app.post("/api/v1/bots", spec)).await?;
    anyhow::ensure!(status == 201, "creating a bot answered {status}: {bot}");
    Ok(bot["id"].as_str().unwrap_or_default().parse()?)
}

pub async fn create_bot(app: &TestApp, name: &str, agent_id: Uuid) -> anyhow::Result<Uuid> {
    create_bot_from(app, &bot_spec(name, agent_id)).await
}

/// `POST /bots/{id}/{action}`: must be 202; returns the body (`{command, agent_online, message}`).
pub async fn control(app: &TestApp, bot_id: Uuid, action: &str) -> anyhow::Result<Value> {
    let (status, accepted) = send(app.post(&format!("/api/v1/bots/{bot_id}/{action}"), &json!({}))).await?;
    anyhow::ensure!(status == 202, "{action} answered {status}: {accepted}");
    Ok(accepted)
}

pub fn command_id(accepted: &Value) -> anyhow::Result<Uuid> {
    Ok(accepted["command"]["id"].as_str().unwrap_or_default().parse()?)
}

pub async fn get(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let (status, body) = send(app.get(path)).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
    Ok(body)
}

/// Every command of a batch, through `GET /commands?batch=`.
pub async fn batch_commands(app: &TestApp, batch: Uuid) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(app, &format!("/api/v1/commands?batch={batch}&limit=500{cursor}")).await?;
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return Ok(all),
        }
    }
}

pub async fn command(app: &TestApp, id: Uuid) -> anyhow::Result<Value> {
    get(app, &format!("/api/v1/commands/{id}")).await
}

pub async fn bot(app: &TestApp, id: Uuid) -> anyhow::Result<Value> {
    get(app, &format!("/api/v1/bots/{id}")).await
}

pub async fn get_agent(app: &TestApp, id: Uuid) -> anyhow::Result<Value> {
    get(app, &format!("/api/v1/agents/{id}")).await
}

/// A manual WebSocket agent of `app` that heartbeats well within the 1 s interval.
pub fn sim(app: &TestApp, token: &str) -> SimConfig {
    SimConfig::new(app.base_url.clone(), token).heartbeat(HEARTBEAT)
}

/// How often simulated agents heartbeat (the server expects one every second).
pub const HEARTBEAT: Duration = Duration::from_millis(300);

/// The admin's live event stream, open before the test acts so it sees what follows.
pub async fn events(app: &TestApp) -> anyhow::Result<SseStream> {
    SseStream::open(app.get("/api/v1/events")).await
}

/// Waits for the event `matches` accepts, as the typed `Event`.
pub async fn wait_event(
    events: &mut SseStream,
    what: &str,
    mut matches: impl FnMut(&EventPayload) -> bool,
) -> anyhow::Result<Event> {
    let found = events.wait_for_json::<Event>(|event| matches(&event.payload), WAIT).await;
    found.map_err(|e| e.context(format!("waiting for {what}")))
}

pub async fn wait_bot_state(events: &mut SseStream, bot_id: Uuid, state: BotState) -> anyhow::Result<Event> {
    wait_event(
        events,
        &format!("bot {bot_id} {state:?}"),
        |p| matches!(p, EventPayload::BotState(b) if b.id == bot_id && b.state == state),
    )
    .await
}

/// Waits until an event has matched each of `ids`, in whatever order: `matched` says which id
/// an event matches, if any.
pub async fn wait_all(
    events: &mut SseStream,
    ids: &[Uuid],
    what: &str,
    matched: impl Fn(&EventPayload) -> Option<Uuid>,
) -> anyhow::Result<()> {
    let mut missing: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
    while !missing.is_empty() {
        let waiting = format!("{what} of {missing:?}");
        let event = wait_event(events, &waiting, |p| matched(p).is_some_and(|id| missing.contains(&id))).await?;
        if let Some(id) = matched(&event.payload) {
            missing.remove(&id);
        }
    }
    Ok(())
}

pub async fn wait_bots_state(events: &mut SseStream, bot_ids: &[Uuid], state: BotState) -> anyhow::Result<()> {
    wait_all(events, bot_ids, &format!("{state:?}"), |p| match p {
        EventPayload::BotState(b) if b.state == state => Some(b.id),
        _ => None,
    })
    .await
}

pub async fn wait_commands_status(
    events: &mut SseStream,
    command_ids: &[Uuid],
    status: CommandStatus,
) -> anyhow::Result<()> {
    wait_all(events, command_ids, &format!("{status:?}"), |p| match p {
        EventPayload::CommandStatus(c) if c.status == status => Some(c.id),
        _ => None,
    })
    .await
}

pub async fn wait_command_status(
    events: &mut SseStream,
    command_id: Uuid,
    status: CommandStatus,
) -> anyhow::Result<Event> {
    wait_event(
        events,
        &format!("command {command_id} {status:?}"),
        |p| matches!(p, EventPayload::CommandStatus(c) if c.id == command_id && c.status == status),
    )
    .await
}

pub async fn wait_agent_status(events: &mut SseStream, agent_id: Uuid, status: AgentStatus) -> anyhow::Result<Event> {
    wait_event(
        events,
        &format!("agent {agent_id} {status:?}"),
        |p| matches!(p, EventPayload::AgentPresence { agent_id: id, status: s, .. } if *id == agent_id && *s == status),
    )
    .await
}
