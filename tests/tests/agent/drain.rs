//! Draining a real agent with real bots: both bots stop (their processes end), their desired
//! state stays `running`, a start is refused, and the undrain brings both back as new processes.

use botmox_e2e::agent::is_running;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_real_bots_and_undrain_brings_them_back() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let scripts = tempfile::tempdir()?;
    let program = script(scripts.path(), "chatty.sh", CHATTY)?;
    let mut bots = Vec::new();
    for name in ["drained-a", "drained-b"] {
        let bot_id = create_bot(&app, &bot_spec(name, host.agent_id, &program, &[])).await?;
        control(&app, bot_id, "start").await?;
        bots.push(bot_id);
    }
    let mut pids = Vec::new();
    for bot_id in &bots {
        pids.push(wait_running(&app, *bot_id).await?);
    }

    let (status, drained) = send(app.post(&format!("/api/v1/agents/{}/drain", host.agent_id), &json!({}))).await?;
    assert_eq!((status, drained["agent"]["status"].as_str()), (200, Some("draining")), "{drained}");
    for (bot_id, pid) in bots.iter().zip(&pids) {
        let stopped = wait_bot(&app, *bot_id, "stopped", |b| b["state"] == "stopped").await?;
        assert_eq!(stopped["desired_state"], "running", "{stopped}");
        wait_local("the bot process to end", || !is_running(*pid)).await?;
    }
    let (status, refused) = send(app.post(&format!("/api/v1/bots/{}/start", bots[0]), &json!({}))).await?;
    assert_eq!((status, refused["code"].as_str()), (409, Some("agent_draining")), "{refused}");

    let (status, undrained) = send(app.post(&format!("/api/v1/agents/{}/undrain", host.agent_id), &json!({}))).await?;
    assert_eq!((status, undrained["agent"]["status"].as_str()), (200, Some("online")), "{undrained}");
    for (bot_id, old) in bots.iter().zip(&pids) {
        let pid = wait_running(&app, *bot_id).await?;
        assert_ne!(pid, *old, "a new process");
        assert!(is_running(pid));
    }
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}
