//! The control plane watching a real fleet, once end to end with the real agent binary and
//! real bots: the onboarding checklist fills in, a bot created to run starts (once), a crash loop becomes incidents and a recommendation naming the exit code,
//! a killed agent goes offline with its incident and comes back to resolve it, and `/metrics`
//! follows all of it.

use botmox_e2e::agent::{bot_leaders, is_running};

use super::*;

/// `GET /metrics` (Prometheus text): the value of `name{label="value"}`.
async fn metric(app: &TestApp, name: &str, label: &str) -> anyhow::Result<f64> {
    let response = app.get("/metrics").send().await?;
    anyhow::ensure!(response.status() == 200, "/metrics answered {}", response.status());
    let text = response.text().await?;
    let wanted = format!("{name}{{{label}}} ");
    let line = text.lines().find(|l| l.starts_with(&wanted));
    let value = line.and_then(|l| l[wanted.len()..].trim().parse().ok());
    value.ok_or_else(|| anyhow::anyhow!("no `{wanted}` in /metrics:\n{text}"))
}

async fn step_done(app: &TestApp, step: &str) -> anyhow::Result<bool> {
    let onboarding = get(app, "/api/v1/guide/onboarding").await?;
    let steps = onboarding["steps"].as_array().cloned().unwrap_or_default();
    let found =
        steps.iter().find(|s| s["id"] == step).ok_or_else(|| anyhow::anyhow!("no step {step}: {onboarding}"))?;
    Ok(found["done"] == true)
}

/// Open incidents of `kind` on `subject`.
async fn open_incidents(app: &TestApp, kind: &str, subject: &str) -> anyhow::Result<Vec<Value>> {
    let body = get(app, &format!("/api/v1/incidents?kind={kind}&open=true&subject={subject}")).await?;
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

async fn recommendation_titles(app: &TestApp) -> anyhow::Result<Vec<String>> {
    let body = get(app, "/api/v1/guide/recommendations").await?;
    let items = body["items"].as_array().or_else(|| body.as_array()).cloned().unwrap_or_default();
    Ok(items.iter().filter_map(|r| r["title"].as_str().map(str::to_owned)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_watches_a_real_fleet() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    assert!(!step_done(&app, "pair_agent").await?, "a fresh install has no agent");

    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    assert!(step_done(&app, "pair_agent").await?);
    let agent_name =
        get(&app, &format!("/api/v1/agents/{}", host.agent_id)).await?["name"].as_str().unwrap_or_default().to_owned();
    assert_eq!(metric(&app, "botmox_agents", "status=\"online\"").await?, 1.0);

    // A bot created to run is started at once (by its creation, one command).
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let mut spec = bot_spec("steady", host.agent_id, &chatty, &[]);
    spec["desired_state"] = json!("running");
    let steady = create_bot(&app, &spec).await?;
    let pid = wait_running(&app, steady).await?;
    let commands = get(&app, &format!("/api/v1/commands?bot_id={steady}")).await?;
    let starts: Vec<&Value> = commands["items"].as_array().into_iter().flatten().collect();
    assert_eq!(starts.len(), 1, "exactly one command: {commands}");
    assert_eq!(
        (starts[0]["kind"].as_str(), starts[0]["created_by"]["kind"].as_str()),
        (Some("bot.start"), Some("user"))
    );
    assert!(step_done(&app, "create_bot").await? && step_done(&app, "start_bot").await?);

    // A crash loop: incidents, a critical status and a recommendation with the exit code.
    let boom = script(bots.path(), "boom.sh", "#!/bin/sh\necho boom\nexit 3\n")?;
    let mut spec = bot_spec("crasher", host.agent_id, &boom, &[]);
    spec["restart"]["max_restarts"] = json!(3);
    let crasher = create_bot(&app, &spec).await?;
    control(&app, crasher, "start").await?;
    wait_bot(&app, crasher, "failed", |b| b["state"] == "failed").await?;
    let subject = format!("bot:{crasher}");
    let open_loops = format!("/api/v1/incidents?kind=bot_crash_loop&open=true&subject={subject}");
    let body = wait_until(&app, &open_loops, "a crash-loop incident", |b| {
        b["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await?;
    let open = body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(open.len(), 1, "one open crash-loop incident per bot: {body}");
    let looping = &open[0];
    assert_eq!(looping["severity"], "critical", "{looping}");
    assert_eq!(open_incidents(&app, "bot_failed", &subject).await?.len(), 1);
    let status = get(&app, "/api/v1/guide/status").await?;
    assert_eq!(status["health"], "critical", "{status}");
    let titles = recommendation_titles(&app).await?;
    assert!(
        titles
            .iter()
            .any(|t| t.contains("`crasher` failed") && t.contains("exit code 3") && t.contains("read its log")),
        "{titles:?}"
    );
    assert_eq!(metric(&app, "botmox_bots", "state=\"failed\"").await?, 1.0);
    assert!(bot_leaders(&crasher.to_string()).is_empty(), "nothing of the crasher left running");

    // The agent dies: offline, its incident, its bot unknown; the bot itself keeps running.
    agent.kill().await?;
    wait_until(&app, &format!("/api/v1/agents/{}", host.agent_id), "the agent offline", |a| a["status"] == "offline")
        .await?;
    let agent_subject = format!("agent:{}", host.agent_id);
    // The supervisor marks the agent offline, then opens its incident: a moment apart.
    let offline = format!("/api/v1/incidents?kind=agent_offline&open=true&subject={agent_subject}");
    let body = wait_until(&app, &offline, "the agent-offline incident", |b| {
        b["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await?;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "one open incident per agent: {body}");
    wait_bot(&app, steady, "unknown", |b| b["state"] == "unknown").await?;
    assert!(is_running(pid), "the bot outlives its agent");
    let titles = recommendation_titles(&app).await?;
    assert!(titles.iter().any(|t| t.contains(&format!("agent `{agent_name}`")) && t.contains("offline")), "{titles:?}");
    assert_eq!(metric(&app, "botmox_agents", "status=\"offline\"").await?, 1.0);
    // Both of its bots: nobody knows what a silent host runs.
    assert_eq!(metric(&app, "botmox_bots", "state=\"unknown\"").await?, 2.0);

    // It returns: online, the incident resolved (and the outage recorded), the same process
    // re-adopted, and no second start from the supervisor's reconciliation (the agent's
    // snapshot says `running`, so there is nothing to reconcile).
    let agent = host.run(&[]).await?;
    let back = wait_bot(&app, steady, "running again", |b| b["state"] == "running").await?;
    assert_eq!(back["pid"].as_u64(), Some(u64::from(pid)), "re-adopted, not restarted: {back}");
    let open_offline = format!("/api/v1/incidents?kind=agent_offline&open=true&subject={agent_subject}");
    wait_until(&app, &open_offline, "the offline incident resolved", |b| {
        b["items"].as_array().is_some_and(Vec::is_empty)
    })
    .await?;
    let online = get(&app, "/api/v1/incidents?kind=agent_online").await?;
    assert!(
        online["items"].as_array().is_some_and(|items| items.iter().any(|i| i["subject"] == agent_subject.as_str())),
        "{online}"
    );
    let commands = get(&app, &format!("/api/v1/commands?bot_id={steady}")).await?;
    assert_eq!(commands["items"].as_array().map(Vec::len), Some(1), "still one start: {commands}");
    assert_eq!(bot_leaders(&steady.to_string()), [pid], "no duplicate");
    assert_eq!(metric(&app, "botmox_agents", "status=\"online\"").await?, 1.0);

    let stop = control(&app, steady, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    wait_local("the bot to stop", || !is_running(pid)).await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}
