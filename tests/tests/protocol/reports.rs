//! Bot-state reports are ordered by the agent's time: a transition sent again (a burst whose
//! confirmation was lost) or replayed from before what the server already applied changes
//! nothing — not the bot's state, not the event stream, not an incident's count.

use botmox_contract::{
    bots::BotState,
    events::EventPayload,
    protocol::{AgentFrame, BotStateReport},
};
use botmox_e2e::{
    both_backends,
    db::Backend,
    sim::{state_report, SimAgent},
};
use chrono::Utc;

use super::*;

both_backends!(a_replayed_crash_after_the_restart_changes_nothing);

async fn a_replayed_crash_after_the_restart_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-replay").await?;
    let bot_id = create_bot(&app, "replayed", agent_id).await?;
    let mut stream = events(&app).await?;
    let agent = SimAgent::connect(sim(&app, &token)).await?;
    let t1 = Utc::now();
    let crashed = BotStateReport {
        exit_code: Some(3),
        error: Some("the process ended: exit code 3".into()),
        at: t1,
        ..state_report(bot_id, BotState::Crashed, None)
    };
    let running = BotStateReport {
        restart_count: 1,
        at: t1 + chrono::Duration::seconds(1),
        ..state_report(bot_id, BotState::Running, Some(42))
    };
    agent.report_state(crashed.clone()).await?;
    agent.report_state(running.clone()).await?;
    wait_bot_state(&mut stream, bot_id, BotState::Running).await?;

    // The crash alone again, then the whole burst again in one read batch; then news, whose
    // event says every frame before it was applied (one connection applies in order).
    agent.send(AgentFrame::BotState(crashed.clone())).await?;
    agent.send_frames(vec![AgentFrame::BotState(crashed), AgentFrame::BotState(running.clone())]).await?;
    let marker = BotStateReport { pid: Some(43), at: t1 + chrono::Duration::seconds(2), ..running };
    agent.report_state(marker).await?;
    let mut seen = Vec::new();
    wait_event(&mut stream, "the report after the replays", |p| {
        let EventPayload::BotState(b) = p else { return false };
        seen.push((b.state, b.pid));
        b.id == bot_id && b.pid == Some(43)
    })
    .await?;
    assert_eq!(seen, [(BotState::Running, Some(43))], "no event of the repeats");
    let now = bot(&app, bot_id).await?;
    assert_eq!((now["state"].as_str(), now["pid"].as_u64()), (Some("running"), Some(43)), "{now}");
    assert_eq!((now["last_exit_code"].as_i64(), now["restart_count"].as_u64()), (Some(3), Some(1)), "{now}");

    let subject = format!("bot:{bot_id}");
    for kind in ["bot_crashed", "bot_restarted"] {
        let incidents = get(&app, &format!("/api/v1/incidents?kind={kind}&subject={subject}")).await?;
        let counts: Vec<u64> = incidents["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["count"].as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(counts, [1], "one {kind}, counted once: {incidents}");
    }
    drop(stream);
    app.stop().await
}
