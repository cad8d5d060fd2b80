//! Draining an agent (`POST /agents/{id}/drain|undrain`) with a simulated agent that runs what
//! it is told: the running bots are stopped and keep their desired state, starts on the agent
//! are refused (single and bulk, counted under `skipped`), the status is in the API and the
//! events, and undraining starts the bots again.

use botmox_e2e::{
    both_backends,
    db::Backend,
    sim::{AutoMode, SimAgent},
};

use super::*;

both_backends!(drain_stops_the_bots_refuses_starts_and_undrain_brings_them_back);

async fn drain_stops_the_bots_refuses_starts_and_undrain_brings_them_back(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-drain").await?;
    let bots = [create_bot(&app, "drained-1", agent_id).await?, create_bot(&app, "drained-2", agent_id).await?];
    let mut events = events(&app).await?;
    let _agent = SimAgent::connect(sim(&app, &token).auto(AutoMode::Run)).await?;
    for bot_id in bots {
        control(&app, bot_id, "start").await?;
    }
    wait_bots_state(&mut events, &bots, BotState::Running).await?;

    let drain_path = format!("/api/v1/agents/{agent_id}/drain");
    let (status, drained) = send(app.post(&drain_path, &json!({}))).await?;
    assert_eq!(status, 200, "{drained}");
    assert_eq!(drained["agent"]["status"], "draining");
    let kinds: Vec<&str> =
        drained["commands"].as_array().into_iter().flatten().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(kinds, ["bot.stop", "bot.stop"], "{drained}");
    wait_agent_status(&mut events, agent_id, AgentStatus::Draining).await?;
    wait_bots_state(&mut events, &bots, BotState::Stopped).await?;
    for bot_id in bots {
        assert_eq!(bot(&app, bot_id).await?["desired_state"], "running", "a drain keeps the desired state");
    }
    let listed = get(&app, "/api/v1/agents").await?;
    assert_eq!(listed[0]["status"], "draining", "{listed}");

    // Starts are refused, naming the agent and what to do.
    for action in ["start", "restart"] {
        let (status, problem) = send(app.post(&format!("/api/v1/bots/{}/{action}", bots[0]), &json!({}))).await?;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["code"], "agent_draining");
        assert!(problem["detail"].as_str().unwrap_or_default().contains("vm-drain"), "{problem}");
        assert!(problem["hint"].as_str().unwrap_or_default().contains("undrain"), "{problem}");
    }
    for dry_run in [true, false] {
        let body = json!({ "action": "start", "filter": { "agent_id": agent_id }, "dry_run": dry_run });
        let (status, batch) = send(app.post("/api/v1/bots/actions", &body)).await?;
        assert_eq!(status, if dry_run { 200 } else { 202 }, "{batch}");
        assert_eq!((batch["matched"].as_u64(), batch["accepted"].as_u64()), (Some(2), Some(0)), "{batch}");
        assert_eq!(batch["skipped"][0]["reason"], "agent_draining", "{batch}");
        assert_eq!(batch["skipped"][0]["count"], 2, "{batch}");
    }

    // Draining again changes nothing: the bots are stopped already.
    let (status, again) = send(app.post(&drain_path, &json!({}))).await?;
    assert_eq!((status, again["commands"].as_array().map(Vec::len)), (200, Some(0)), "{again}");

    let (status, undrained) = send(app.post(&format!("/api/v1/agents/{agent_id}/undrain"), &json!({}))).await?;
    assert_eq!(status, 200, "{undrained}");
    assert_eq!(undrained["agent"]["status"], "online");
    assert_eq!(undrained["commands"].as_array().map(Vec::len), Some(2), "{undrained}");
    wait_agent_status(&mut events, agent_id, AgentStatus::Online).await?;
    wait_bots_state(&mut events, &bots, BotState::Running).await?;
    for bot_id in bots {
        assert_eq!(bot(&app, bot_id).await?["desired_state"], "running");
    }

    // Unknown agents are 404, revoked ones 409.
    let (status, problem) = send(app.post(&format!("/api/v1/agents/{}/drain", Uuid::now_v7()), &json!({}))).await?;
    assert_eq!((status, problem["code"].as_str()), (404, Some("agent_not_found")), "{problem}");
    send(app.post(&format!("/api/v1/agents/{agent_id}/revoke"), &json!({}))).await?;
    for path in [drain_path, format!("/api/v1/agents/{agent_id}/undrain")] {
        let (status, problem) = send(app.post(&path, &json!({}))).await?;
        assert_eq!((status, problem["code"].as_str()), (409, Some("agent_revoked")), "{problem}");
    }
    drop(events);
    app.stop().await
}
