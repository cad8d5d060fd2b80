//! Presence and connection ownership: a silent agent goes offline and its bots `unknown`, the
//! hello snapshot restores the truth; a newer connection replaces an older one; a revoked agent
//! is cut off at once and cannot come back; its token used again opens an incident.

use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    events::EventPayload,
    incidents::IncidentKind,
    protocol::{AgentFrame, CommandOutcome},
};
use botmox_e2e::{
    app::send,
    both_backends,
    db::Backend,
    sim::{AutoMode, ConnectError, Disconnect, SimAgent, Transport},
};
use serde_json::json;

use super::*;

both_backends!(a_silent_agent_goes_offline_and_its_snapshot_restores_its_bots);
both_backends!(heartbeats_resuming_on_the_same_connection_bring_the_agent_back);
both_backends!(a_long_polling_agent_marked_offline_keeps_its_frames_until_its_next_hello);
both_backends!(a_second_connection_replaces_the_first, a_revoked_agent_is_cut_off);

async fn a_silent_agent_goes_offline_and_its_snapshot_restores_its_bots(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-unplugged").await?;
    let runs = create_bot(&app, "runs", agent_id).await?;
    let rests = create_bot(&app, "rests", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token).auto(AutoMode::Run)).await?;
    control(&app, runs, "start").await?;
    wait_bot_state(&mut events, runs, BotState::Running).await?;
    control(&app, rests, "start").await?;
    wait_bot_state(&mut events, rests, BotState::Running).await?;
    control(&app, rests, "stop").await?;
    wait_bot_state(&mut events, rests, BotState::Stopped).await?;
    let pid = bot(&app, runs).await?["pid"].as_u64();
    assert!(pid.is_some());

    // The host vanishes without a word; three missed heartbeats later it is offline.
    agent.drop_connection().await?;
    wait_agent_status(&mut events, agent_id, AgentStatus::Offline).await?;
    let offline = get_agent(&app, agent_id).await?;
    assert_eq!(offline["status"], "offline");
    assert!(offline["connected_replica"].is_null(), "{offline}");
    for bot_id in [runs, rests] {
        assert_eq!(bot(&app, bot_id).await?["state"], "unknown", "its agent is offline");
    }

    // It comes back and says what it runs: the server believes it.
    let snapshot = agent.snapshot();
    assert_eq!(snapshot.len(), 2);
    let _agent = SimAgent::connect(sim(&app, &token).auto(AutoMode::Run).bots(snapshot)).await?;
    wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    let restored = bot(&app, runs).await?;
    assert_eq!((restored["state"].as_str(), restored["pid"].as_u64()), (Some("running"), pid), "{restored}");
    assert_eq!(bot(&app, rests).await?["state"], "stopped");
    assert_eq!(get_agent(&app, agent_id).await?["status"], "online");
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn heartbeats_resuming_on_the_same_connection_bring_the_agent_back(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-stalled").await?;
    let bot_id = create_bot(&app, "stalled", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token).auto(AutoMode::Run)).await?;
    control(&app, bot_id, "start").await?;
    wait_bot_state(&mut events, bot_id, BotState::Running).await?;

    // The agent stalls (the socket stays open) long enough to be declared offline…
    agent.set_heartbeats(false);
    wait_agent_status(&mut events, agent_id, AgentStatus::Offline).await?;
    assert_eq!(bot(&app, bot_id).await?["state"], "unknown");
    // …then recovers. Either its heartbeats bring it back online on the same connection, or
    // the server hung up on it so that it reconnects with a fresh snapshot; it must not stay
    // `offline` while it heartbeats on an open connection.
    agent.set_heartbeats(true);
    let back_online = wait_agent_status(&mut events, agent_id, AgentStatus::Online);
    let hung_up = agent.closed(WAIT);
    let reconnect = tokio::select! {
        online = back_online => online.map(|_| false),
        closed = hung_up => closed.map(|_| true),
    };
    if reconnect.map_err(|_| {
        anyhow::anyhow!(
            "the agent heartbeats again on an open connection, yet after {WAIT:?} it is \
        still offline and its connection open: it will stay offline until it happens to reconnect"
        )
    })? {
        let _again = SimAgent::connect(sim(&app, &token).bots(agent.snapshot())).await?;
        wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    }
    assert_eq!(get_agent(&app, agent_id).await?["status"], "online");
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

/// A long-polling agent's network stalls long enough for it to be marked offline; what it
/// sends next (here its command's result) is refused as a whole, not frame by frame, so it
/// keeps it, says `hello` again and sends it then (the chaos test lost a result this way: the
/// agent took a per-frame refusal as final).
async fn a_long_polling_agent_marked_offline_keeps_its_frames_until_its_next_hello(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-polling-stalled").await?;
    let bot_id = create_bot(&app, "polled", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token).transport(Transport::LONG_POLL)).await?;
    let command_id = command_id(&control(&app, bot_id, "start").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, command_id);
    agent.ack(command_id).await?;
    agent.set_heartbeats(false);
    wait_agent_status(&mut events, agent_id, AgentStatus::Offline).await?;

    let post = |frames: serde_json::Value| {
        let request = app.request_as(reqwest::Method::POST, "/api/v1/agent/frames", Some(&token));
        send(request.json(&frames))
    };
    let result = AgentFrame::Result(CommandOutcome {
        command_id,
        ok: true,
        result: json!({ "pid": 41 }),
        error: None,
        superseded: false,
    });
    let (status, problem) = post(json!([result])).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("hello_first")), "{problem}");
    assert_eq!(command(&app, command_id).await?["status"], "running", "nothing applied");

    let (status, outcome) = post(json!([agent.hello_frame(), result])).await?;
    assert_eq!((status, &outcome["refused"]), (200, &json!([])), "{outcome}");
    assert_eq!(command(&app, command_id).await?["status"], "succeeded");
    assert_eq!(get_agent(&app, agent_id).await?["status"], "online");
    drop(events);
    app.stop().await
}

async fn a_second_connection_replaces_the_first(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-twice").await?;
    let bot_id = create_bot(&app, "twice", agent_id).await?;
    let mut current = SimAgent::connect(sim(&app, &token)).await?;
    // Several rounds: the old connection's end races the new one's hello, and must lose.
    for round in 1..=5 {
        let newer = SimAgent::connect(sim(&app, &token)).await?;
        match current.closed(WAIT).await? {
            Disconnect::Closed { code, reason } => {
                assert_eq!(code, 4000, "round {round}: {reason}");
                assert!(reason.contains("replaced"), "round {round}: {reason}");
            }
            other => anyhow::bail!("round {round}: the older connection should be closed with 4000, got {other:?}"),
        }
        // The older connection is gone (the server has dropped it); the newer one owns the agent.
        let registered = get_agent(&app, agent_id).await?;
        assert_eq!(registered["status"], "online");
        assert!(
            registered["connected_replica"].is_string(),
            "round {round}: the replaced connection's end erased the new one's replica: {registered}"
        );
        current = newer;
    }
    let id = command_id(&control(&app, bot_id, "start").await?)?;
    assert_eq!(current.next_command(WAIT).await?.id, id, "the newest connection gets the work");
    assert!(current.disconnect().is_none(), "and stays open");
    app.stop().await
}

async fn a_revoked_agent_is_cut_off(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-stolen").await?;
    let (poller_id, poller_token) = app.pair_agent("vm-stolen-too").await?;
    let bot_id = create_bot(&app, "stolen", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let mut poller = SimAgent::connect(sim(&app, &poller_token).transport(Transport::LONG_POLL)).await?;

    let (status, revoked) = send(app.post(&format!("/api/v1/agents/{agent_id}/revoke"), &json!({}))).await?;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("revoked")), "{revoked}");
    match agent.closed(WAIT).await? {
        Disconnect::Closed { code, .. } => assert_eq!(code, 4001),
        other => anyhow::bail!("the socket should be closed with 4001, got {other:?}"),
    }
    wait_agent_status(&mut events, agent_id, AgentStatus::Revoked).await?;
    match SimAgent::connect(sim(&app, &token)).await {
        Err(ConnectError::Refused { status, .. }) => assert_eq!(status, 401),
        Err(other) => anyhow::bail!("reconnecting should fail the upgrade with 401, got {other}"),
        Ok(_) => anyhow::bail!("a revoked agent reconnected"),
    }
    match SimAgent::connect(sim(&app, &token).transport(Transport::LONG_POLL)).await {
        Err(ConnectError::Refused { status, .. }) => assert_eq!(status, 401),
        Err(other) => anyhow::bail!("long-poll should be refused with 401, got {other}"),
        Ok(_) => anyhow::bail!("a revoked agent long-polled"),
    }
    // Both attempts are one critical incident on the agent, written once: a revoked token's
    // attempts cost at most one incident write per agent per minute (issue 12, row 12).
    wait_event(&mut events, "the revoked agent's incident", |p| {
        matches!(p, EventPayload::Incident(i) if i.kind == IncidentKind::TokenRevokedAgentConnected && i.count == 1)
    })
    .await?;
    let (status, incidents) = send(app.get("/api/v1/incidents?kind=token_revoked_agent_connected")).await?;
    assert_eq!(status, 200, "{incidents}");
    let items = incidents["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one open incident per agent: {incidents}");
    assert_eq!(items[0]["subject"], format!("agent:{agent_id}"));
    assert_eq!((items[0]["severity"].as_str(), items[0]["count"].as_u64()), (Some("critical"), Some(1)));
    assert!(items[0]["message"].as_str().is_some_and(|m| m.contains("vm-stolen")), "{incidents}");
    let (status, problem) = send(app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({}))).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("agent_revoked")), "{problem}");
    assert_eq!(get_agent(&app, agent_id).await?["status"], "revoked");

    // A long-polling agent's poll in flight ends at once, and its next one is refused.
    let (status, _) = send(app.post(&format!("/api/v1/agents/{poller_id}/revoke"), &json!({}))).await?;
    assert_eq!(status, 200);
    assert_eq!(poller.closed(WAIT).await?, Disconnect::Refused(401));
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}
