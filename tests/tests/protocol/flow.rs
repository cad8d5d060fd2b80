//! The main road: a paired agent connects, an operator starts a bot, the command is pushed at
//! once, the agent acks, reports and answers, and everyone sees the bot running. Also the same
//! over long-poll, a start while the agent is away, `Idempotency-Key`, and bulk actions.

use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    commands::{CommandKind, CommandStatus},
    events::EventPayload,
};
use botmox_e2e::{
    app::send,
    both_backends,
    db::Backend,
    sim::{AutoMode, SimAgent, Transport},
};
use serde_json::json;
use uuid::Uuid;

use super::*;

both_backends!(start_reaches_the_agent_and_running_shows_everywhere, a_start_while_offline_waits_for_the_agent);
both_backends!(long_poll_runs_the_same_flow, idempotency_key_repeats_return_the_first_command, bulk_actions);

async fn start_reaches_the_agent_and_running_shows_everywhere(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-eu-1").await?;
    let bot_id = create_bot(&app, "farmer-eu-01", agent_id).await?;
    let mut events = events(&app).await?;

    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let settings = agent.settings(WAIT).await?;
    assert_eq!(settings.heartbeat_interval_s, 1, "the server's interval, not a default");
    assert_eq!(settings.max_frame_bytes, 1 << 20);
    wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    let registered = get_agent(&app, agent_id).await?;
    assert_eq!(registered["status"], "online");
    assert_eq!(registered["hostname"], "sim.test", "hello refreshes the host facts");
    assert_eq!(registered["version"], "sim");
    assert!(registered["connected_replica"].is_string(), "{registered}");

    let accepted = control(&app, bot_id, "start").await?;
    assert_eq!(accepted["agent_online"], true, "{accepted}");
    assert_eq!(accepted["command"]["kind"], "bot.start");
    assert_eq!(accepted["command"]["bot_id"], bot_id.to_string());
    // The agent is connected to this server: the command skips the queue, placed dispatched
    // (its lease running) and handed to the connection once committed; no claim, and no
    // `queued` event before the `dispatched` one.
    let placed = &accepted["command"];
    assert_eq!((placed["status"].as_str(), placed["attempt"].as_u64()), (Some("dispatched"), Some(1)), "{accepted}");
    assert!(placed["lease_expires_at"].is_string() && placed["dispatched_at"].is_string(), "{accepted}");
    let id = command_id(&accepted)?;
    let first = wait_event(
        &mut events,
        "the start's first event",
        |p| matches!(p, EventPayload::CommandStatus(c) if c.id == id),
    )
    .await?;
    assert!(
        matches!(&first.payload, EventPayload::CommandStatus(c) if c.status == CommandStatus::Dispatched && c.attempt == 1),
        "{:?}",
        first.payload
    );

    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind, envelope.attempt), (id, CommandKind::BotStart, 1));
    let runtime = envelope.bot.as_ref().ok_or_else(|| anyhow::anyhow!("a start carries the bot"))?;
    assert_eq!((runtime.bot_id, runtime.name.as_str()), (bot_id, "farmer-eu-01"));
    assert_eq!(runtime.exec.program, "python3");
    assert_eq!(runtime.exec.args, vec!["bot.py".to_owned()]);
    assert_eq!(runtime.exec.env.get("MODE").map(String::as_str), Some("farm"));
    assert!(!runtime.definition_hash.is_empty());
    assert!(envelope.secrets.is_empty(), "no secret_env, no secrets");
    assert_eq!(command(&app, id).await?["status"], "dispatched");

    agent.ack(id).await?;
    wait_command_status(&mut events, id, CommandStatus::Running).await?;
    assert!(command(&app, id).await?["acked_at"].is_string());
    agent.report(bot_id, BotState::Running, Some(4242)).await?;
    let event = wait_bot_state(&mut events, bot_id, BotState::Running).await?;
    let botmox_contract::events::EventPayload::BotState(status) = event.payload else { unreachable!() };
    assert_eq!((status.pid, status.agent_id, status.name.as_str()), (Some(4242), agent_id, "farmer-eu-01"));
    agent.succeed(id, json!({ "pid": 4242 })).await?;
    wait_command_status(&mut events, id, CommandStatus::Succeeded).await?;

    let done = command(&app, id).await?;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({ "pid": 4242 }));
    assert_eq!(done["attempt"], 1);
    assert!(done["finished_at"].is_string() && done["error"].is_null(), "{done}");
    let running = bot(&app, bot_id).await?;
    assert_eq!((running["state"].as_str(), running["pid"].as_u64()), (Some("running"), Some(4242)));
    assert_eq!(running["desired_state"], "running", "start records what the operator wants");

    // And back: stop.
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind), (stop, CommandKind::BotStop));
    agent.ack(stop).await?;
    agent.report(bot_id, BotState::Stopped, None).await?;
    agent.succeed(stop, json!({})).await?;
    wait_command_status(&mut events, stop, CommandStatus::Succeeded).await?;
    let stopped = bot(&app, bot_id).await?;
    assert_eq!((stopped["state"].as_str(), stopped["desired_state"].as_str()), (Some("stopped"), Some("stopped")));
    assert!(stopped["pid"].is_null());
    assert!(agent.try_next_error().is_none(), "no frame was refused");
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn a_start_while_offline_waits_for_the_agent(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-away").await?;
    let bot_id = create_bot(&app, "patient", agent_id).await?;

    let accepted = control(&app, bot_id, "start").await?;
    assert_eq!(accepted["agent_online"], false, "{accepted}");
    assert!(accepted["message"].as_str().unwrap_or_default().contains("waits"), "{accepted}");
    let id = command_id(&accepted)?;
    let queued = command(&app, id).await?;
    assert_eq!((queued["status"].as_str(), queued["attempt"].as_u64()), (Some("queued"), Some(0)));

    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind, envelope.attempt), (id, CommandKind::BotStart, 1));
    wait_command_status(&mut events, id, CommandStatus::Dispatched).await?;
    assert_eq!(command(&app, id).await?["agent_id"], agent_id.to_string());
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn long_poll_runs_the_same_flow(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-behind-proxy").await?;
    let bot_id = create_bot(&app, "polled", agent_id).await?;
    let mut events = events(&app).await?;

    let mut agent = SimAgent::connect(sim(&app, &token).transport(Transport::LONG_POLL)).await?;
    wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    let accepted = control(&app, bot_id, "start").await?;
    assert_eq!(accepted["agent_online"], true);
    let id = command_id(&accepted)?;
    // The poll in flight returns as soon as the command exists (not after its 5 s wait).
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind, envelope.attempt), (id, CommandKind::BotStart, 1));
    assert_eq!(envelope.bot.as_ref().map(|b| b.bot_id), Some(bot_id));

    agent.ack(id).await?;
    assert_eq!(command(&app, id).await?["status"], "running", "a POSTed frame is applied before the answer");
    agent.report(bot_id, BotState::Running, Some(777)).await?;
    agent.succeed(id, json!({ "pid": 777 })).await?;
    let done = command(&app, id).await?;
    assert_eq!((done["status"].as_str(), done["result"]["pid"].as_u64()), (Some("succeeded"), Some(777)));
    let running = bot(&app, bot_id).await?;
    assert_eq!((running["state"].as_str(), running["pid"].as_u64()), (Some("running"), Some(777)));
    wait_bot_state(&mut events, bot_id, BotState::Running).await?;

    // A cancel reaches a long-polling agent with its next poll.
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, stop);
    agent.ack(stop).await?;
    let (status, cancelled) = send(app.post(&format!("/api/v1/commands/{stop}/cancel"), &json!({}))).await?;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");
    assert_eq!(agent.next_cancel(WAIT).await?, stop);
    assert!(agent.try_next_error().is_none());
    // Open event streams and polls would hold the graceful shutdown.
    drop((events, agent));
    app.stop().await
}

async fn idempotency_key_repeats_return_the_first_command(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-1").await?;
    let bot_id = create_bot(&app, "once", agent_id).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    let start = |key: &'static str| {
        app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({})).header("Idempotency-Key", key)
    };
    let (status, first) = send(start("click-1")).await?;
    assert_eq!(status, 202, "{first}");
    let (status, repeat) = send(start("click-1")).await?;
    assert_eq!(status, 202, "{repeat}");
    assert_eq!(repeat["command"]["id"], first["command"]["id"], "the repeat is the first command");
    assert!(repeat["message"].as_str().unwrap_or_default().contains("Idempotency-Key"), "{repeat}");
    let (status, _) =
        send(app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({})).header("Idempotency-Key", "")).await?;
    assert_eq!(status, 400, "an empty key is refused");

    // The agent gets the start once: the next command after it is the stop sent afterwards.
    let id = command_id(&first)?;
    assert_eq!(agent.next_command(WAIT).await?.id, id);
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, stop, "no second start reached the agent");
    let listed = get(&app, &format!("/api/v1/commands?bot_id={bot_id}")).await?;
    let ids: Vec<String> =
        listed["items"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids, vec![stop.to_string(), id.to_string()], "newest first, and only two");
    app.stop().await
}

async fn bulk_actions(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (a, a_token) = app.pair_agent("vm-a").await?;
    let (b, b_token) = app.pair_agent("vm-b").await?;
    let a1 = create_bot(&app, "a1", a).await?;
    let a2 = create_bot(&app, "a2", a).await?;
    let b1 = create_bot(&app, "b1", b).await?;
    let mut events = events(&app).await?;
    let _agent_a = SimAgent::connect(sim(&app, &a_token).auto(AutoMode::Run)).await?;
    let _agent_b = SimAgent::connect(sim(&app, &b_token).auto(AutoMode::Run)).await?;

    let ghost = Uuid::now_v7();
    let (status, accepted) =
        send(app.post("/api/v1/bots/actions", &json!({ "action": "start", "ids": [a1, a2, b1, ghost] }))).await?;
    assert_eq!(status, 202, "{accepted}");
    let commands = accepted["commands"].as_array().cloned().unwrap_or_default();
    assert_eq!(commands.len(), 3, "{accepted}");
    assert!(commands.iter().all(|c| c["kind"] == "bot.start"));
    assert_eq!(accepted["skipped"][0]["reason"], "not_found", "{accepted}");
    assert_eq!(accepted["skipped"][0]["count"], 1);
    assert_eq!(accepted["skipped"][0]["bot_ids"], json!([ghost]));
    assert_eq!((accepted["matched"].as_u64(), accepted["accepted"].as_u64()), (Some(4), Some(3)));
    let ids: Vec<Uuid> = commands.iter().filter_map(|c| c["id"].as_str()?.parse().ok()).collect();
    wait_commands_status(&mut events, &ids, CommandStatus::Succeeded).await?;
    for bot_id in [a1, a2, b1] {
        assert_eq!(bot(&app, bot_id).await?["state"], "running", "reported before the result");
    }

    let (status, accepted) =
        send(app.post("/api/v1/bots/actions", &json!({ "action": "stop", "filter": { "agent_id": a } }))).await?;
    assert_eq!(status, 202, "{accepted}");
    let mut stopped: Vec<String> = accepted["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["bot_id"].as_str().map(str::to_owned))
        .collect();
    stopped.sort();
    let mut expected = vec![a1.to_string(), a2.to_string()];
    expected.sort();
    assert_eq!(stopped, expected, "the filter picks agent A's bots only");
    wait_bots_state(&mut events, &[a1, a2], BotState::Stopped).await?;
    assert_eq!(bot(&app, b1).await?["state"], "running", "agent B's bot was not touched");
    let (status, problem) =
        send(app.post("/api/v1/bots/actions", &json!({ "action": "stop", "ids": [a1], "filter": {} }))).await?;
    assert_eq!(status, 422, "ids and filter together: {problem}");
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}
