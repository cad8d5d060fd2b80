//! Bad frames: each gets an `error` frame (or, on long-poll, a refusal naming its index), changes
//! nothing, and leaves the connection open.

use anyhow::Context as _;
use botmox_contract::{
    bots::BotState,
    protocol::{AgentFrame, CommandOutcome, PROTOCOL_VERSION},
};
use botmox_e2e::{
    app::send,
    both_backends,
    db::Backend,
    sim::{log_line, state_report, SimAgent, Transport},
};
use reqwest::Method;
use serde_json::json;

use super::*;

both_backends!(frames_before_hello_are_refused, malformed_frames_change_nothing);
both_backends!(out_of_range_numbers_are_refused_and_nul_characters_replaced);
both_backends!(an_agent_cannot_touch_another_agents_commands_or_bots, long_poll_refusals_name_the_frame);
both_backends!(an_ack_sent_with_its_result_is_written_with_it);

async fn frames_before_hello_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-rude").await?;
    let mut agent = SimAgent::connect(sim(&app, &token).without_hello()).await?;

    agent.heartbeat().await?;
    let refusal = agent.next_error(WAIT).await?;
    assert_eq!(refusal.code, "hello_first", "{refusal:?}");
    agent.send_raw(json!({ "type": "ack", "command_id": uuid::Uuid::now_v7() }).to_string()).await?;
    assert_eq!(agent.next_error(WAIT).await?.code, "hello_first");
    let still = get_agent(&app, agent_id).await?;
    assert_eq!((still["status"].as_str(), still["last_seen_at"].as_str()), (Some("pending"), None), "{still}");

    // The connection is still open, and hello now works.
    agent.hello().await?;
    assert_eq!(agent.settings(WAIT).await?.heartbeat_interval_s, 1);
    assert_eq!(get_agent(&app, agent_id).await?["status"], "online");

    // A hello of another protocol version is refused with the reason.
    let mut old = SimAgent::connect(sim(&app, &token).without_hello()).await?;
    let hello = json!({ "type": "hello", "protocol": PROTOCOL_VERSION + 1, "agent_version": "9", "hostname": "h",
                        "os": "linux", "arch": "x86_64", "bots": [] });
    old.send_raw(hello.to_string()).await?;
    let refusal = old.next_error(WAIT).await?;
    assert_eq!(refusal.code, "unsupported_protocol", "{refusal:?}");
    app.stop().await
}

async fn malformed_frames_change_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-garbled").await?;
    let bot_id = create_bot(&app, "garbled", agent_id).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let before = bot(&app, bot_id).await?;

    let bad = [
        ("not JSON", "{this is not json".to_owned(), "malformed_frame"),
        ("unknown type", json!({ "type": "launch", "bot_id": bot_id }).to_string(), "malformed_frame"),
        ("no type", json!({ "command_id": bot_id }).to_string(), "malformed_frame"),
        (
            "unknown field",
            json!({ "type": "bot_state", "bot_id": bot_id, "state": "running", "pid": 1, "started_at": null,
                    "exit_code": null, "exit_signal": null, "restart_count": 0, "error": null,
                    "at": "2024-01-01T00:00:00Z", "surprise": true })
            .to_string(),
            "malformed_frame",
        ),
        (
            "bad state",
            json!({ "type": "bot_state", "bot_id": bot_id, "state": "dancing", "pid": 1, "started_at": null,
                    "exit_code": null, "exit_signal": null, "restart_count": 0, "error": null,
                    "at": "2024-01-01T00:00:00Z" })
            .to_string(),
            "malformed_frame",
        ),
    ];
    for (what, text, code) in bad {
        agent.send_raw(text).await?;
        let refusal = agent.next_error(WAIT).await?;
        assert_eq!(refusal.code, code, "{what}: {refusal:?}");
        assert!(!refusal.detail.is_empty(), "{what}: the detail says why");
    }

    // Larger than the 1 MiB frame limit: refused, and the connection survives.
    let huge = AgentFrame::Logs { bot_id, lines: vec![log_line(1, "x".repeat((1 << 20) + 1))] };
    agent.send_raw(serde_json::to_string(&huge)?).await?;
    let refusal = agent.next_error(WAIT).await?;
    assert_eq!(refusal.code, "frame_too_large", "{refusal:?}");

    assert_eq!(bot(&app, bot_id).await?, before, "no bad frame changed the bot");
    let lines = get(&app, &format!("/api/v1/bots/{bot_id}/logs")).await?;
    assert_eq!(lines, json!([]), "the oversized batch was not stored");
    // Still connected and serving: a start arrives.
    let id = command_id(&control(&app, bot_id, "start").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, id);
    assert!(agent.disconnect().is_none());
    app.stop().await
}

async fn an_agent_cannot_touch_another_agents_commands_or_bots(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (mine_id, mine_token) = app.pair_agent("vm-mine").await?;
    let (theirs_id, theirs_token) = app.pair_agent("vm-theirs").await?;
    let their_bot = create_bot(&app, "theirs", theirs_id).await?;
    let my_bot = create_bot(&app, "mine", mine_id).await?;
    let mut mine = SimAgent::connect(sim(&app, &mine_token)).await?;
    let mut theirs = SimAgent::connect(sim(&app, &theirs_token)).await?;
    let their_command = command_id(&control(&app, their_bot, "start").await?)?;
    assert_eq!(theirs.next_command(WAIT).await?.id, their_command);
    let bot_before = bot(&app, their_bot).await?;

    mine.ack(their_command).await?;
    assert_eq!(mine.next_error(WAIT).await?.code, "not_found");
    mine.succeed(their_command, json!({})).await?;
    assert_eq!(mine.next_error(WAIT).await?.code, "not_found");
    mine.report_state(state_report(their_bot, BotState::Crashed, None)).await?;
    assert_eq!(mine.next_error(WAIT).await?.code, "not_found");
    mine.send_logs(their_bot, vec![log_line(1, "not yours")]).await?;
    assert_eq!(mine.next_error(WAIT).await?.code, "not_found");
    mine.ack(uuid::Uuid::now_v7()).await?;
    assert_eq!(mine.next_error(WAIT).await?.code, "not_found", "an unknown command");

    assert_eq!(command(&app, their_command).await?["status"], "dispatched", "still theirs to ack");
    assert_eq!(bot(&app, their_bot).await?, bot_before);
    assert_eq!(get(&app, &format!("/api/v1/bots/{their_bot}/logs")).await?, json!([]));
    // The rightful agent still can, and mine still works for its own bot.
    theirs.ack(their_command).await?;
    let mut events = events(&app).await?;
    mine.report(my_bot, BotState::Running, Some(5)).await?;
    wait_bot_state(&mut events, my_bot, BotState::Running).await?;
    assert_eq!(command(&app, their_command).await?["status"], "running");
    assert!(theirs.try_next_error().is_none());
    // Open event streams would hold the graceful shutdown.
    drop(events);
    app.stop().await
}

async fn long_poll_refusals_name_the_frame(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-polling").await?;
    let bot_id = create_bot(&app, "polled", agent_id).await?;
    let mut agent = SimAgent::connect(sim(&app, &token).transport(Transport::LONG_POLL).without_hello()).await?;

    // Before hello: frames are refused as a whole (nothing applied; the agent keeps them for
    // after its hello), and so is polling.
    let stray = AgentFrame::BotState(state_report(bot_id, BotState::Running, Some(7)));
    let refused = agent.send_frames(vec![stray]).await.expect_err("refused before hello");
    assert!(refused.to_string().contains("409") && refused.to_string().contains("hello_first"), "{refused:#}");
    assert_eq!(agent.next_error(WAIT).await?.code, "hello_first", "the simulator reports refusals too");
    assert_eq!(bot(&app, bot_id).await?["state"], "pending", "nothing applied");
    let poll = app.request_as(Method::GET, "/api/v1/agent/commands/next?wait=0", Some(&token));
    let (status, problem) = send(poll).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("hello_first")), "{problem}");

    // One batch, applied in order: the good frames are taken, the bad ones named.
    let batch = json!([
        agent.hello_frame(),
        AgentFrame::Heartbeat { metrics: Default::default() },
        { "type": "bogus" },
        AgentFrame::Ack { command_id: uuid::Uuid::now_v7() },
        AgentFrame::BotState(state_report(bot_id, BotState::Running, Some(9))),
    ]);
    let outcome = agent.send_raw(batch.to_string()).await?.context("long-poll answers with an outcome")?;
    assert_eq!(outcome.accepted, 3, "{outcome:?}");
    let refused: Vec<(u32, &str)> = outcome.refused.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(refused, [(2, "malformed_frame"), (3, "not_found")]);
    let running = bot(&app, bot_id).await?;
    assert_eq!((running["state"].as_str(), running["pid"].as_u64()), (Some("running"), Some(9)));
    assert_eq!(get_agent(&app, agent_id).await?["status"], "online");

    // Bodies that are not a list of frames, and waits out of range, are plain 4xx problems.
    let post = app.request_as(Method::POST, "/api/v1/agent/frames", Some(&token));
    let (status, problem) = send(post.header("content-type", "application/json").body("{\"type\":\"ack\"}")).await?;
    assert!((400..500).contains(&status) && problem["code"].is_string(), "{status} {problem}");
    let poll = app.request_as(Method::GET, "/api/v1/agent/commands/next?wait=31", Some(&token));
    let (status, problem) = send(poll).await?;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_query")), "{problem}");
    assert_eq!(bot(&app, bot_id).await?, running, "nothing changed");
    app.stop().await
}

async fn out_of_range_numbers_are_refused_and_nul_characters_replaced(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-odd").await?;
    let bot_id = create_bot(&app, "odd", agent_id).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let metrics = |cpu: serde_json::Value, load: serde_json::Value| {
        json!({ "type": "heartbeat", "metrics": { "cpu_percent": cpu, "memory_used_bytes": 1, "memory_total_bytes": 2,
                "disk_used_bytes": 3, "disk_total_bytes": 4, "load1": load, "bots_running": 0 } })
        .to_string()
    };
    for (cpu, load, field) in [
        (json!(1e39), json!(0.5), "cpu_percent"),
        (json!(-1.0), json!(0.5), "cpu_percent"),
        (json!(12.5), json!(1e300), "load1"),
    ] {
        agent.send_raw(metrics(cpu, load)).await?;
        let refusal = agent.next_error(WAIT).await?;
        assert_eq!(refusal.code, "invalid_frame", "{refusal:?}");
        assert!(refusal.detail.contains(field), "{refusal:?}");
    }
    // A sane one is taken, and the fleet view keeps working.
    agent.send_raw(metrics(json!(12.5), json!(0.5))).await?;
    for path in ["/api/v1/agents", "/api/v1/dashboard", "/api/v1/guide/status"] {
        let (status, body) = send(app.get(path)).await?;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // A log line with a NUL is kept, the NUL replaced (refusing it would lose the batch).
    let logs = format!("/api/v1/bots/{bot_id}/logs");
    let mut follow = botmox_e2e::sse::SseStream::open(app.get(&format!("{logs}?follow=true"))).await?;
    agent
        .send_raw(
            json!({ "type": "logs", "bot_id": bot_id,
                    "lines": [{ "seq": 1, "stream": "stdout", "time": "2026-01-01T00:00:00Z", "text": "a\u{0}b" }] })
            .to_string(),
        )
        .await?;
    let line = follow.next_event(WAIT).await?.json::<serde_json::Value>()?;
    assert_eq!(line["text"], "a\u{FFFD}b", "{line}");
    assert_eq!(get(&app, &logs).await?[0]["text"], "a\u{FFFD}b");
    drop(follow);
    assert!(agent.try_next_error().is_none());
    app.stop().await
}

/// An agent that acks and answers a command in one batch (a healthy agent's usual burst): the
/// ack is accepted and written by the result's statement, so the command ends `succeeded` with
/// `acked_at` stamped; an ack and result for a command the agent never had are both refused,
/// as each alone would be.
async fn an_ack_sent_with_its_result_is_written_with_it(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-burst").await?;
    let bot_id = create_bot(&app, "bursty", agent_id).await?;
    let other_bot = create_bot(&app, "queued-only", agent_id).await?;
    let mut agent = SimAgent::connect(sim(&app, &token).transport(Transport::LONG_POLL)).await?;

    let id = command_id(&control(&app, bot_id, "start").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, id);
    let outcome = |command_id| CommandOutcome {
        command_id,
        ok: true,
        result: json!({ "pid": 77 }),
        error: None,
        superseded: false,
    };
    let burst = vec![
        AgentFrame::Ack { command_id: id },
        AgentFrame::BotState(state_report(bot_id, BotState::Running, Some(77))),
        AgentFrame::Result(outcome(id)),
    ];
    let answer = agent.send_frames(burst).await?.context("long-poll answers with an outcome")?;
    assert_eq!((answer.accepted, answer.refused.len()), (3, 0), "{answer:?}");
    let done = command(&app, id).await?;
    assert_eq!((done["status"].as_str(), &done["result"]), (Some("succeeded"), &json!({ "pid": 77 })), "{done}");
    assert!(done["acked_at"].is_string(), "the folded ack is recorded: {done}");
    assert_eq!(done["acked_at"], done["finished_at"], "written by one statement: {done}");
    assert_eq!(bot(&app, bot_id).await?["state"], "running");

    // An ack and a result for a command this agent never had: each refused as it would be alone.
    let unknown = uuid::Uuid::now_v7();
    let burst = vec![AgentFrame::Ack { command_id: unknown }, AgentFrame::Result(outcome(unknown))];
    let answer = agent.send_frames(burst).await?.context("long-poll answers with an outcome")?;
    let refused: Vec<(u32, &str)> = answer.refused.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(refused, [(0, "not_found"), (1, "not_found")], "{answer:?}");
    // A command queued later still reaches the agent and takes the usual path.
    let next = command_id(&control(&app, other_bot, "start").await?)?;
    assert_eq!(agent.next_command(WAIT).await?.id, next);
    agent.ack(next).await?;
    assert_eq!(command(&app, next).await?["status"], "running");
    app.stop().await
}
