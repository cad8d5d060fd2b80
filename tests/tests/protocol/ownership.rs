//! A bot belongs to one agent at a time, and only its agent *now* may learn its definition
//! and secrets or write its log: moving a bot cancels what was queued for the old agent,
//! dispatch re-checks ownership for every kind at claim time, and log writes are checked
//! in the store statement (nothing is remembered per connection). Deleting an agent closes
//! its connection.

use botmox_contract::{
    audit::{Actor, ActorKind},
    commands::{CommandKind, CommandStatus},
};
use botmox_control_plane::{
    control::queue_times,
    store::{Order, Target},
};
use botmox_e2e::{
    app::send,
    both_backends,
    db::Backend,
    sim::{log_line, Disconnect, SimAgent},
};
use reqwest::Method;
use serde_json::json;

use super::*;

both_backends!(a_moved_bot_never_reaches_its_old_agent, an_agent_cannot_write_the_log_of_a_bot_moved_away);
both_backends!(deleting_an_agent_closes_its_connection);

const PASSWORD: &str = "moved-bot-secret-Hq7Zt2";

async fn a_moved_bot_never_reaches_its_old_agent(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (old_id, old_token) = app.pair_agent("old-host").await?;
    let (new_id, _) = app.pair_agent("new-host").await?;
    let put = app.request(Method::PUT, "/api/v1/secrets/moving").json(&json!({ "value": PASSWORD }));
    assert_eq!(send(put).await?.0, 201);
    let mut spec = bot_spec("mover", old_id);
    spec["exec"]["secret_env"] = json!({ "PASSWORD": "moving" });
    let bot_id = create_bot_from(&app, &spec).await?;

    // A start waits for the (disconnected) old agent; the bot moves.
    let start = command_id(&control(&app, bot_id, "start").await?)?;
    let (status, moved) = send(app.patch(&format!("/api/v1/bots/{bot_id}"), &json!({ "agent_id": new_id }))).await?;
    assert_eq!(status, 200, "{moved}");
    let cancelled = command(&app, start).await?;
    assert_eq!(cancelled["status"], "cancelled", "moving the bot cancels the old agent's start: {cancelled}");

    // Even a command that slipped past the move (queued for the old agent afterwards) is
    // refused at claim time, whatever its kind.
    let mut slipped = Vec::new();
    for kind in [CommandKind::BotStart, CommandKind::BotSync, CommandKind::BotRestart] {
        let order = Order {
            tenant_id: app.tenant_id,
            target: Target::Agent { agent_id: old_id, bot_id: Some(bot_id) },
            kind,
            desired: None,
            payload: json!({ "bot_id": bot_id }),
            idempotency_key: None,
            created_by: Actor { kind: ActorKind::Supervisor, id: None },
            batch_id: None,
        };
        let times = queue_times(&app.state.settings);
        let placed = app.store.place_orders(&[order], times, app.clock.now()).await?;
        let placed = placed.into_iter().next().ok_or_else(|| anyhow::anyhow!("no placement"))??;
        slipped.push(placed.command.id);
    }
    let mut events = events(&app).await?;
    let mut old = SimAgent::connect(sim(&app, &old_token)).await?;
    wait_commands_status(&mut events, &slipped, CommandStatus::Failed).await?;
    for id in &slipped {
        let failed = command(&app, *id).await?;
        assert!(failed["error"].as_str().unwrap_or_default().contains("moved"), "{failed}");
    }
    // What the old agent got: the removal (by id, no definition), nothing else.
    let removal = old.next_command(WAIT).await?;
    assert_eq!(removal.kind, CommandKind::BotRemove);
    assert!(removal.bot.is_none() && removal.secrets.is_empty(), "{removal:?}");
    if let Some(envelope) = old.try_next_command() {
        panic!("the old agent got {:?} for the moved bot", envelope.kind);
    }
    app.stop().await
}

async fn an_agent_cannot_write_the_log_of_a_bot_moved_away(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (old_id, old_token) = app.pair_agent("old-logger").await?;
    let (new_id, _) = app.pair_agent("new-logger").await?;
    let bot_id = create_bot(&app, "logger", old_id).await?;
    let mut old = SimAgent::connect(sim(&app, &old_token)).await?;
    let logs = format!("/api/v1/bots/{bot_id}/logs");
    let mut follow = SseStream::open(app.get(&format!("{logs}?follow=true"))).await?;
    old.send_logs(bot_id, vec![log_line(1, "mine")]).await?;
    assert_eq!(follow.next_event(WAIT).await?.id.as_deref(), Some("1"), "its own bot's line is taken");

    let (status, _) = send(app.patch(&format!("/api/v1/bots/{bot_id}"), &json!({ "agent_id": new_id }))).await?;
    assert_eq!(status, 200);
    old.send_logs(bot_id, vec![log_line(2, "not mine any more")]).await?;
    let refused = old.next_error(WAIT).await?;
    assert_eq!(refused.code, "not_found", "{refused:?}");
    let lines = get(&app, &logs).await?;
    assert_eq!(lines.as_array().map(Vec::len), Some(1), "{lines}");
    app.stop().await
}

async fn deleting_an_agent_closes_its_connection(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("to-delete").await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    assert_eq!(send(app.delete(&format!("/api/v1/agents/{agent_id}"))).await?.0, 204);
    match agent.closed(WAIT).await? {
        Disconnect::Closed { code, .. } => assert_eq!(code, botmox_control_plane::link::hub::CLOSE_REVOKED),
        other => panic!("expected a close frame, got {other:?}"),
    }
    app.stop().await
}
