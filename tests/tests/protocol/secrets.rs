//! Secrets on the wire: a `bot.start` (and `bot.restart`) carries the values of exactly the
//! secrets its bot's `secret_env` names, nothing else does, and a start whose secret is missing
//! fails with a reason instead of reaching the agent half-formed.

use botmox_contract::{
    bots::BotState,
    commands::{CommandKind, CommandStatus},
};
use botmox_e2e::{app::send, both_backends, db::Backend, sim::SimAgent};
use reqwest::Method;
use serde_json::json;

use super::*;

both_backends!(a_start_carries_its_secret_values_and_nothing_else, a_start_with_a_missing_secret_fails_clearly);

const PASSWORD: &str = "hunter2-farmer-eu-01-Zq8vT3";
const UNRELATED: &str = "not-for-this-bot-Kp4wY7";

async fn put_secret(app: &TestApp, name: &str, value: &str) -> anyhow::Result<()> {
    let put = app.request(Method::PUT, &format!("/api/v1/secrets/{name}")).json(&json!({ "value": value }));
    let (status, body) = send(put).await?;
    anyhow::ensure!(status == 201, "PUT secret answered {status}: {body}");
    Ok(())
}

async fn a_start_carries_its_secret_values_and_nothing_else(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-secretive").await?;
    put_secret(&app, "farmer-password", PASSWORD).await?;
    put_secret(&app, "unrelated", UNRELATED).await?;
    let mut spec = bot_spec("farmer", agent_id);
    spec["exec"]["secret_env"] = json!({ "ACCOUNT_PASSWORD": "farmer-password" });
    let bot_id = create_bot_from(&app, &spec).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    let start = command_id(&control(&app, bot_id, "start").await?)?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind), (start, CommandKind::BotStart));
    assert_eq!(
        envelope.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
        [("farmer-password", PASSWORD)],
        "exactly the named secret, with its value"
    );
    let runtime = envelope.bot.as_ref().ok_or_else(|| anyhow::anyhow!("no bot in the start"))?;
    assert_eq!(runtime.exec.secret_env.get("ACCOUNT_PASSWORD").map(String::as_str), Some("farmer-password"));
    agent.ack(start).await?;
    agent.report(bot_id, BotState::Running, Some(11)).await?;
    agent.succeed(start, json!({ "pid": 11 })).await?;

    let restart = command_id(&control(&app, bot_id, "restart").await?)?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind), (restart, CommandKind::BotRestart));
    assert_eq!(envelope.secrets.get("farmer-password").map(String::as_str), Some(PASSWORD), "a restart starts too");
    agent.ack(restart).await?;
    agent.succeed(restart, json!({})).await?;

    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind), (stop, CommandKind::BotStop));
    assert!(envelope.secrets.is_empty(), "a stop needs no secrets");
    agent.ack(stop).await?;
    agent.succeed(stop, json!({})).await?;

    // Nothing a user can read carries a value: commands, their list, the event stream.
    let mut seen = Vec::new();
    events
        .wait_for(
            |event| {
                seen.push(event.data.clone());
                event.data.contains(&stop.to_string()) && event.data.contains("succeeded")
            },
            WAIT,
        )
        .await?;
    for id in [start, restart, stop] {
        seen.push(command(&app, id).await?.to_string());
    }
    seen.push(get(&app, "/api/v1/commands").await?.to_string());
    seen.push(bot(&app, bot_id).await?.to_string());
    for text in &seen {
        assert!(!text.contains(PASSWORD) && !text.contains(UNRELATED), "a secret value leaked: {text}");
    }
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn a_start_with_a_missing_secret_fails_clearly(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-forgetful").await?;
    let mut spec = bot_spec("needs-token", agent_id);
    spec["exec"]["secret_env"] = json!({ "API_TOKEN": "missing-token" });
    let bot_id = create_bot_from(&app, &spec).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    let start = command_id(&control(&app, bot_id, "start").await?)?;
    wait_command_status(&mut events, start, CommandStatus::Failed).await?;
    let failed = command(&app, start).await?;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("missing-token") && error.contains("API_TOKEN"), "the error names the secret: {error}");

    // The half-formed start never reached the agent: the next thing it gets is the stop.
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, stop);
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}
