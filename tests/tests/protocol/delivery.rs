//! At-least-once delivery with a lease, made effectively-once by the agent's journal; cancel
//! before and during execution; TTL expiry of a command nobody picked up.

use std::time::Duration;

use botmox_contract::{
    bots::BotState,
    commands::{CommandKind, CommandStatus},
    events::EventPayload,
};
use botmox_e2e::{app::send, both_backends, db::Backend, sim::SimAgent};
use serde_json::json;

use super::*;

both_backends!(an_unacked_command_is_redelivered_and_its_repeated_result_counts_once);
both_backends!(a_queued_command_cancelled_never_reaches_the_agent, a_running_command_cancelled_is_stopped_on_the_agent);
both_backends!(a_command_nobody_picks_up_expires);

async fn an_unacked_command_is_redelivered_and_its_repeated_result_counts_once(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-flaky").await?;
    let bot_id = create_bot(&app, "flaky", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    let id = command_id(&control(&app, bot_id, "start").await?)?;
    let first = agent.next_command(WAIT).await?;
    assert_eq!((first.id, first.attempt), (id, 1));
    // The agent starts the bot, then loses the connection before it could ack or answer.
    agent.drop_connection().await?;

    // The lease (1 s) passes: the command goes back to the queue, same id, same attempt count.
    wait_event(&mut events, "the command back in the queue", |p| {
        matches!(p, EventPayload::CommandStatus(c) if c.id == id && c.status == CommandStatus::Queued && c.attempt == 1)
    })
    .await?;
    let requeued = command(&app, id).await?;
    assert_eq!((requeued["status"].as_str(), requeued["attempt"].as_u64()), (Some("queued"), Some(1)));
    assert!(requeued["lease_expires_at"].is_null(), "{requeued}");

    // Reconnected, it gets the same command again with attempt 2 and answers from its journal.
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let again = agent.next_command(WAIT).await?;
    assert_eq!((again.id, again.kind, again.attempt), (id, CommandKind::BotStart, 2));
    agent.ack(id).await?;
    agent.succeed(id, json!({ "pid": 31337 })).await?;
    wait_command_status(&mut events, id, CommandStatus::Succeeded).await?;
    let done = command(&app, id).await?;
    assert_eq!((done["status"].as_str(), done["attempt"].as_u64()), (Some("succeeded"), Some(2)));

    // The same answer once more (the agent re-sent it after a hiccup) is harmless: no error,
    // nothing changes. The bot report after it proves the server has read it.
    agent.succeed(id, json!({ "pid": 31337 })).await?;
    agent.report(bot_id, BotState::Running, Some(31337)).await?;
    wait_bot_state(&mut events, bot_id, BotState::Running).await?;
    assert_eq!(agent.try_next_error(), None, "a repeated identical result is accepted");
    assert_eq!(command(&app, id).await?, done, "the repeat changed nothing");
    // A different answer to a finished command is refused, and changes nothing either.
    agent.fail(id, "changed my mind").await?;
    let refusal = agent.next_error(WAIT).await?;
    assert_eq!(refusal.code, "invalid_transition", "{refusal:?}");
    assert_eq!(command(&app, id).await?, done);
    let listed = get(&app, &format!("/api/v1/commands?bot_id={bot_id}")).await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "one command, never duplicated: {listed}");
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn a_queued_command_cancelled_never_reaches_the_agent(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-later").await?;
    let bot_id = create_bot(&app, "never", agent_id).await?;
    let start = command_id(&control(&app, bot_id, "start").await?)?;

    let (status, cancelled) = send(app.post(&format!("/api/v1/commands/{start}/cancel"), &json!({}))).await?;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!((cancelled["status"].as_str(), cancelled["attempt"].as_u64()), (Some("cancelled"), Some(0)));
    assert!(cancelled["finished_at"].is_string());
    let (status, problem) = send(app.post(&format!("/api/v1/commands/{start}/cancel"), &json!({}))).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("command_finished")), "{problem}");

    // When the agent connects, the first command it gets is the stop queued after the cancel.
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.kind), (stop, CommandKind::BotStop), "the cancelled start never arrived");
    assert_eq!(command(&app, start).await?["status"], "cancelled");
    app.stop().await
}

async fn a_running_command_cancelled_is_stopped_on_the_agent(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-busy").await?;
    let bot_id = create_bot(&app, "slow-starter", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    let id = command_id(&control(&app, bot_id, "start").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, id);
    agent.ack(id).await?;
    wait_command_status(&mut events, id, CommandStatus::Running).await?;

    let (status, cancelled) = send(app.post(&format!("/api/v1/commands/{id}/cancel"), &json!({}))).await?;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");
    assert_eq!(agent.next_cancel(WAIT).await?, id, "the agent is told to stop it");
    wait_command_status(&mut events, id, CommandStatus::Cancelled).await?;

    // The agent's late answer does not resurrect it.
    agent.fail(id, "cancelled").await?;
    let refusal = agent.next_error(WAIT).await?;
    assert_eq!(refusal.code, "invalid_transition", "{refusal:?}");
    let after = command(&app, id).await?;
    assert_eq!((after["status"].as_str(), after["error"].as_str()), (Some("cancelled"), None));
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn a_command_nobody_picks_up_expires(backend: Backend) -> anyhow::Result<()> {
    let app = botmox_e2e::app::TestApp::spawn_with(backend, |settings| {
        settings.heartbeat_interval = Duration::from_secs(1);
        settings.command_ttl = Duration::from_secs(1);
        settings.hygiene_interval = Duration::from_millis(100);
    })
    .await?;
    let (agent_id, token) = app.pair_agent("vm-never").await?;
    let bot_id = create_bot(&app, "stale", agent_id).await?;
    let mut events = events(&app).await?;
    let id = command_id(&control(&app, bot_id, "start").await?)?;
    wait_command_status(&mut events, id, CommandStatus::Expired).await?;
    let expired = command(&app, id).await?;
    assert_eq!((expired["status"].as_str(), expired["attempt"].as_u64()), (Some("expired"), Some(0)));
    assert!(expired["dispatched_at"].is_null() && expired["finished_at"].is_string(), "{expired}");

    // The agent that finally connects is not handed the stale start.
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, stop);
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}
