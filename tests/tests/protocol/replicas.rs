//! Two real `botmox serve` replicas on one Postgres: an agent connected to replica B receives at
//! once a command enqueued through replica A (the enqueuer wakes the socket holder with
//! `NOTIFY`; no poll interval is involved), and A's event stream shows what the agent reported
//! through B.

use std::time::{Duration, Instant};

use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    commands::{CommandKind, CommandStatus},
    events::EventPayload,
};
use botmox_control_plane::secrets::vault::MasterKey;
use botmox_e2e::{
    app::send,
    db::{Backend, TestDb},
    server::ServerProcess,
    sim::{SimAgent, SimConfig},
    sse::SseStream,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{bot_spec, wait_agent_status, wait_bot_state, wait_command_status, wait_event, WAIT};

/// How soon a command must reach the agent: far below the dispatcher's 10 s safety re-check,
/// so only the cross-replica wake-up can deliver it in time.
const PUSHED_WITHIN: Duration = Duration::from_secs(5);
const PASSWORD: &str = "replica-admin-password";

struct Api<'a> {
    client: &'a reqwest::Client,
    server: &'a ServerProcess,
    token: String,
}

impl Api<'_> {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.server.url(path)).bearer_auth(&self.token)
    }

    async fn call(&self, method: Method, path: &str, body: Value, expected: u16) -> anyhow::Result<Value> {
        let (status, answer) = send(self.request(method, path).json(&body)).await?;
        anyhow::ensure!(status == expected, "{path} answered {status}, not {expected}: {answer}");
        Ok(answer)
    }
}

async fn login(client: &reqwest::Client, server: &ServerProcess) -> anyhow::Result<String> {
    let login = json!({ "username": "admin", "password": PASSWORD });
    let (status, body) = send(client.post(server.url("/api/v1/auth/login")).json(&login)).await?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_through_one_replica_reaches_an_agent_on_the_other() -> anyhow::Result<()> {
    botmox_e2e::init_test_logging();
    let db = TestDb::new(Backend::Postgres).await?;
    let url = db.url_string();
    let keys = tempfile::tempdir()?;
    let key_file = keys.path().join("master.key");
    MasterKey::generate().write_new_file(&key_file)?;
    let key_arg = key_file.to_str().unwrap_or_default();
    let args = ["--database-url", url.as_str(), "--master-key-file", key_arg];
    let env = [("BOTMOX_ADMIN_PASSWORD", PASSWORD)];
    let (a, b) = tokio::try_join!(ServerProcess::start(&args, &env), ServerProcess::start(&args, &env))?;
    let client = reqwest::Client::new();
    let api = Api { client: &client, server: &a, token: login(&client, &a).await? };

    // Pair, store a secret and define a bot, all through A.
    let code = api.call(Method::POST, "/api/v1/agents/pairing-codes", json!({ "name": "vm-b" }), 201).await?;
    let pair =
        json!({ "code": code["code"], "hostname": "vm-b.test", "os": "linux", "arch": "x86_64", "version": "t" });
    let (status, paired) = send(client.post(a.url("/api/v1/agents/pair")).json(&pair)).await?;
    anyhow::ensure!(status == 201, "pairing answered {status}: {paired}");
    let agent_id: Uuid = paired["agent_id"].as_str().unwrap_or_default().parse()?;
    let agent_token = paired["agent_token"].as_str().unwrap_or_default().to_owned();
    api.call(Method::PUT, "/api/v1/secrets/shared-password", json!({ "value": "sealed-on-a" }), 201).await?;
    let mut spec = bot_spec("cross", agent_id);
    spec["exec"]["secret_env"] = json!({ "PASSWORD": "shared-password" });
    let bot_id: Uuid =
        api.call(Method::POST, "/api/v1/bots", spec, 201).await?["id"].as_str().unwrap_or_default().parse()?;

    let mut events = SseStream::open(api.request(Method::GET, "/api/v1/events")).await?;
    let config = SimConfig::new(b.base_url.clone(), agent_token).heartbeat(Duration::from_secs(1));
    let mut agent = SimAgent::connect(config).await?;
    wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    let registered = api.call(Method::GET, &format!("/api/v1/agents/{agent_id}"), Value::Null, 200).await?;
    assert!(registered["connected_replica"].is_string(), "B holds the connection: {registered}");

    // Start through A: it reaches the agent on B at once, secrets opened by B with the shared key.
    let sent = Instant::now();
    let accepted = api.call(Method::POST, &format!("/api/v1/bots/{bot_id}/start"), json!({}), 202).await?;
    assert_eq!(accepted["agent_online"], true, "{accepted}");
    let envelope = agent.next_command(PUSHED_WITHIN).await?;
    let latency = sent.elapsed();
    assert_eq!(envelope.id.to_string(), accepted["command"]["id"].as_str().unwrap_or_default());
    assert_eq!(envelope.kind, CommandKind::BotStart);
    assert_eq!(envelope.secrets.get("shared-password").map(String::as_str), Some("sealed-on-a"));
    eprintln!("API start on A → command at the agent on B: {latency:?}");

    // What the agent reports through B shows on A's event stream and API.
    agent.ack(envelope.id).await?;
    agent.report(bot_id, BotState::Running, Some(2024)).await?;
    agent.succeed(envelope.id, json!({ "pid": 2024 })).await?;
    let event = wait_bot_state(&mut events, bot_id, BotState::Running).await?;
    let EventPayload::BotState(status) = event.payload else { unreachable!("matched a bot state") };
    assert_eq!(status.pid, Some(2024));
    wait_command_status(&mut events, envelope.id, CommandStatus::Succeeded).await?;
    let running = api.call(Method::GET, &format!("/api/v1/bots/{bot_id}"), Value::Null, 200).await?;
    assert_eq!((running["state"].as_str(), running["pid"].as_u64()), (Some("running"), Some(2024)));

    // Every command, not a lucky one: a 10 s re-check cannot deliver three in a row in time.
    for action in ["restart", "stop", "start"] {
        let sent = Instant::now();
        let accepted = api.call(Method::POST, &format!("/api/v1/bots/{bot_id}/{action}"), json!({}), 202).await?;
        let envelope = agent.next_command(PUSHED_WITHIN).await?;
        eprintln!("{action} on A → agent on B: {:?}", sent.elapsed());
        assert_eq!(envelope.id.to_string(), accepted["command"]["id"].as_str().unwrap_or_default());
        agent.ack(envelope.id).await?;
        agent.succeed(envelope.id, json!({})).await?;
    }

    // A cancel through A reaches the agent on B too.
    let accepted = api.call(Method::POST, &format!("/api/v1/bots/{bot_id}/stop"), json!({}), 202).await?;
    let envelope = agent.next_command(PUSHED_WITHIN).await?;
    agent.ack(envelope.id).await?;
    wait_event(
        &mut events,
        "the stop running",
        |p| matches!(p, EventPayload::CommandStatus(c) if c.id == envelope.id && c.status == CommandStatus::Running),
    )
    .await?;
    let id = accepted["command"]["id"].as_str().unwrap_or_default();
    api.call(Method::POST, &format!("/api/v1/commands/{id}/cancel"), json!({}), 200).await?;
    assert_eq!(agent.next_cancel(WAIT).await?, envelope.id);

    // An open event stream would hold the graceful shutdown.
    drop((agent, events));
    assert_eq!(a.terminate().await?, Some(0));
    assert_eq!(b.terminate().await?, Some(0));
    db.cleanup().await
}
