use std::time::Duration;

use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use chrono::Duration as Span;
use serde_json::{json, Value};

use crate::{bot, frames, heartbeat, hello, incidents, poll, state_report};

both_backends!(silent_agents_go_offline_and_come_back, desired_running_is_started_exactly_once);
both_backends!(crash_loops_open_one_incident_and_resolve_when_stable, dead_letters_open_an_incident);
both_backends!(recommendations_name_what_to_do, metrics_follow_the_fleet);
both_backends!(a_drained_agent_is_not_reconciled_and_stays_drained_across_reconnects);
both_backends!(a_bot_stuck_stopping_is_repaired_after_its_stop_timeout);

fn quick(settings: &mut botmox_control_plane::state::Settings) {
    settings.heartbeat_interval = Duration::from_secs(5);
    settings.command_lease = Duration::from_secs(30);
}

async fn silent_agents_go_offline_and_come_back(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let (agent_id, token) = app.pair_agent("vm-quiet").await?;
    let bot_id = bot(&app, "quiet-bot", agent_id, "stopped").await?;
    let now = app.clock.now();
    frames(&app, &token, json!([hello(json!([])), state_report(&bot_id, "running", 0, now)])).await?;
    let agent_path = format!("/api/v1/agents/{agent_id}");
    assert_eq!(send(app.get(&agent_path)).await?.1["status"], "online");

    // Heartbeats keep it online past three intervals...
    for _ in 0..4 {
        app.clock.advance(Span::seconds(5));
        frames(
            &app,
            &token,
            json!([{"type": "heartbeat", "metrics": {"cpu_percent": 1.0, "memory_used_bytes": 1,
            "memory_total_bytes": 2, "disk_used_bytes": 1, "disk_total_bytes": 2, "load1": 0.1, "bots_running": 1}}]),
        )
        .await?;
        app.tick(1).await?;
    }
    let agent = send(app.get(&agent_path)).await?.1;
    assert_eq!(agent["status"], "online");
    assert_eq!(agent["metrics"]["bots_running"], 1, "the batched heartbeat was written");

    // ...three silent intervals: still online at exactly 15 s, offline just after.
    app.clock.advance(Span::seconds(15));
    app.tick(1).await?;
    assert_eq!(send(app.get(&agent_path)).await?.1["status"], "online", "15 s of silence is not yet 3 missed beats");
    app.clock.advance(Span::milliseconds(1));
    app.tick(1).await?;
    assert_eq!(send(app.get(&agent_path)).await?.1["status"], "offline");
    assert_eq!(send(app.get(&format!("/api/v1/bots/{bot_id}"))).await?.1["state"], "unknown");
    let open = incidents(&app, "open=true&kind=agent_offline").await?;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["subject"], format!("agent:{agent_id}"));
    assert!(open[0]["message"].as_str().unwrap_or("").contains("vm-quiet"));
    app.tick(1).await?;
    assert_eq!(incidents(&app, "open=true&kind=agent_offline").await?.len(), 1, "not opened twice");

    // It reconnects: online, the snapshot restores the bot, the incident resolves.
    app.clock.advance(Span::minutes(2));
    let snapshot = json!([{"bot_id": bot_id, "state": "running", "pid": 4242, "started_at": app.clock.now(), "definition_hash": "x"}]);
    frames(&app, &token, json!([hello(snapshot)])).await?;
    assert_eq!(send(app.get(&agent_path)).await?.1["status"], "online");
    assert_eq!(send(app.get(&format!("/api/v1/bots/{bot_id}"))).await?.1["state"], "running");
    assert!(incidents(&app, "open=true").await?.is_empty());
    let back = incidents(&app, "kind=agent_online").await?;
    assert_eq!(back.len(), 1);
    assert!(back[0]["message"].as_str().unwrap_or("").contains("offline"), "{}", back[0]);
    let (_, audit) = send(app.get("/api/v1/audit?action=mark_agent_offline&actor_kind=supervisor")).await?;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    app.stop().await
}

async fn desired_running_is_started_exactly_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let (agent_id, token) = app.pair_agent("vm-late").await?;
    let bot_id = bot(&app, "late-bot", agent_id, "running").await?;
    let starts = |app: &TestApp| {
        let path = format!("/api/v1/commands?bot_id={bot_id}");
        let request = app.get(&path);
        async move {
            let (_, list) = send(request).await?;
            Ok::<Vec<Value>, anyhow::Error>(list["items"].as_array().cloned().unwrap_or_default())
        }
    };
    assert_eq!(starts(&app).await?.len(), 1, "creating a running bot queued its start");

    // The agent never came; the start expires; the supervisor says so.
    app.clock.advance(Span::minutes(16));
    app.tick(1).await?;
    let commands = starts(&app).await?;
    assert_eq!((commands.len(), commands[0]["status"].as_str()), (1, Some("expired")));
    assert_eq!(incidents(&app, "open=true&kind=command_expired").await?.len(), 1);

    // It connects: reconciliation issues one start, and only one, however often it runs.
    frames(&app, &token, json!([hello(json!([]))])).await?;
    for n in 0..3 {
        app.tick(n * 4).await?;
    }
    let commands = starts(&app).await?;
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!((commands[0]["kind"].as_str(), commands[0]["status"].as_str()), (Some("bot.start"), Some("queued")));
    assert_eq!(commands[0]["created_by"]["kind"], "supervisor");
    let leased = poll(&app, &token).await?;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["bot"]["bot_id"], bot_id.as_str());
    app.clock.advance(Span::seconds(1));
    let id = leased[0]["id"].clone();
    frames(
        &app,
        &token,
        json!([{"type": "ack", "command_id": id}, state_report(&bot_id, "running", 0, app.clock.now()),
        {"type": "result", "command_id": id, "ok": true, "result": {}, "error": null}]),
    )
    .await?;
    app.clock.advance(Span::minutes(5));
    app.tick(0).await?;
    assert_eq!(starts(&app).await?.len(), 2, "a running bot is left alone");
    app.stop().await
}

/// An agent killed in the middle of a restart left the bot `stopping` (its next report never
/// came): once the bot's stop timeout and the margin have passed, and not before, the
/// supervisor sends the command that closes the gap.
async fn a_bot_stuck_stopping_is_repaired_after_its_stop_timeout(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let (agent_id, token) = app.pair_agent("vm-stuck").await?;
    let body = json!({"name": "stuck", "agent_id": agent_id, "exec": {"program": "true"}, "desired_state": "running",
                      "stop": {"timeout_seconds": 120}});
    let (status, bot) = send(app.post("/api/v1/bots", &body)).await?;
    anyhow::ensure!(status == 201, "{bot}");
    let bot_id = bot["id"].as_str().unwrap_or_default().to_owned();
    frames(&app, &token, json!([hello(json!([]))])).await?;
    let leased = poll(&app, &token).await?;
    assert_eq!(leased.len(), 1, "the creation's start");
    let id = leased[0]["id"].clone();
    frames(
        &app,
        &token,
        json!([{"type": "ack", "command_id": id}, state_report(&bot_id, "running", 0, app.clock.now()),
        {"type": "result", "command_id": id, "ok": true, "result": {}, "error": null},
        state_report(&bot_id, "stopping", 0, app.clock.now())]),
    )
    .await?;
    let commands = |app: &TestApp| {
        let request = app.get(&format!("/api/v1/commands?bot_id={bot_id}"));
        async move {
            let (_, list) = send(request).await?;
            Ok::<Vec<Value>, anyhow::Error>(list["items"].as_array().cloned().unwrap_or_default())
        }
    };

    // Past the quiet period but within its stop timeout (120 s + 30 s margin): left alone.
    app.clock.advance(Span::seconds(149));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.tick(0).await?;
    assert_eq!(commands(&app).await?.len(), 1, "a bot still within its stop timeout is left alone");

    // Past it: one start, by the supervisor.
    app.clock.advance(Span::seconds(2));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.tick(0).await?;
    app.tick(4).await?;
    let commands = commands(&app).await?;
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!((commands[0]["kind"].as_str(), commands[0]["status"].as_str()), (Some("bot.start"), Some("queued")));
    assert_eq!(commands[0]["created_by"]["kind"], "supervisor");
    app.stop().await
}

async fn crash_loops_open_one_incident_and_resolve_when_stable(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let (agent_id, token) = app.pair_agent("vm-crashy").await?;
    let bot_id = bot(&app, "crashy", agent_id, "stopped").await?;
    frames(&app, &token, json!([hello(json!([]))])).await?;
    for restart in 0..5u32 {
        app.clock.advance(Span::seconds(2));
        let now = app.clock.now();
        frames(
            &app,
            &token,
            json!([
                state_report(&bot_id, "running", restart, now),
                state_report(&bot_id, "crashed", restart, now),
                state_report(&bot_id, "backoff", restart, now)
            ]),
        )
        .await?;
    }
    let open = incidents(&app, &format!("open=true&subject=bot:{bot_id}")).await?;
    let mut kinds: Vec<&str> = open.iter().filter_map(|i| i["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["bot_crash_loop", "bot_crashed"], "the last crash and the loop are open: {open:?}");
    let loops = incidents(&app, "open=true&kind=bot_crash_loop").await?;
    assert_eq!(loops.len(), 1, "one open incident per bot and kind");
    assert_eq!(loops[0]["count"], 2, "crashes at restart 3 and 4 counted on the same incident");
    assert_eq!(loops[0]["severity"], "critical");
    let history = incidents(&app, &format!("kind=bot_restarted&subject=bot:{bot_id}")).await?;
    assert_eq!(history.len(), 4, "each recovery is on record");

    // Running again: the crash loop stays open until the bot has been stable for 60 s.
    app.clock.advance(Span::seconds(1));
    frames(&app, &token, json!([state_report(&bot_id, "running", 5, app.clock.now())])).await?;
    app.clock.advance(Span::seconds(10));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.clock.advance(Span::seconds(10));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.clock.advance(Span::seconds(39));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.tick(0).await?;
    assert_eq!(incidents(&app, "open=true&kind=bot_crash_loop").await?.len(), 1);
    app.clock.advance(Span::seconds(2));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.tick(0).await?;
    let still_open = incidents(&app, "open=true").await?;
    assert!(still_open.is_empty(), "stable: resolved, but {still_open:?}");
    app.stop().await
}

async fn dead_letters_open_an_incident(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, |s| {
        quick(s);
        s.command_max_attempts = 2;
    })
    .await?;
    let (agent_id, token) = app.pair_agent("vm-deaf").await?;
    let bot_id = bot(&app, "unheard", agent_id, "stopped").await?;
    frames(&app, &token, json!([hello(json!([]))])).await?;
    let (status, started) = send(app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({}))).await?;
    assert_eq!(status, 202);
    for attempt in 1..=2 {
        let leased = poll(&app, &token).await?;
        assert_eq!((leased.len(), leased[0]["attempt"].as_u64()), (1, Some(attempt)), "delivery {attempt}");
        app.clock.advance(Span::seconds(31));
        frames(
            &app,
            &token,
            json!([{"type": "heartbeat", "metrics": {"cpu_percent": 0.0, "memory_used_bytes": 0,
            "memory_total_bytes": 0, "disk_used_bytes": 0, "disk_total_bytes": 0, "load1": 0.0, "bots_running": 0}}]),
        )
        .await?;
        app.tick(1).await?;
    }
    let path = format!("/api/v1/commands/{}", started["command"]["id"].as_str().unwrap_or(""));
    assert_eq!(send(app.get(&path)).await?.1["status"], "dead_lettered");
    let open = incidents(&app, "open=true&kind=command_dead_lettered").await?;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["subject"], format!("agent:{agent_id}"));
    assert_eq!(open[0]["severity"], "critical");
    assert!(poll(&app, &token).await?.is_empty(), "a dead letter is not delivered again");
    app.stop().await
}

async fn recommendations_name_what_to_do(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let titles = |app: &TestApp| {
        let request = app.get("/api/v1/guide/recommendations");
        async move {
            let (_, list) = send(request).await?;
            Ok::<Vec<String>, anyhow::Error>(
                list.as_array().into_iter().flatten().filter_map(|r| r["title"].as_str().map(str::to_owned)).collect(),
            )
        }
    };
    let status = |app: &TestApp| {
        let request = app.get("/api/v1/guide/status");
        async move { Ok::<Value, anyhow::Error>(send(request).await?.1) }
    };
    assert_eq!(titles(&app).await?, ["no agents paired: create a pairing code"]);
    let (_, onboarding) = send(app.get("/api/v1/guide/onboarding")).await?;
    assert_eq!(onboarding["complete"], false);
    assert_eq!(status(&app).await?["health"], "healthy");

    let (agent_id, token) = app.pair_agent("vm-eu-3").await?;
    assert!(titles(&app).await?.iter().any(|t| t.contains("`vm-eu-3` was paired but never connected")));
    frames(&app, &token, json!([hello(json!([]))])).await?;
    assert_eq!(titles(&app).await?, ["no bots yet: create one on an agent"]);
    let bot_id = bot(&app, "farmer-7", agent_id, "stopped").await?;
    let now = app.clock.now();
    frames(&app, &token, json!([state_report(&bot_id, "running", 0, now)])).await?;
    let (_, onboarding) = send(app.get("/api/v1/guide/onboarding")).await?;
    assert_eq!(onboarding["complete"], true, "{onboarding}");
    assert!(titles(&app).await?.is_empty());

    // The bot fails; then its agent goes quiet for 12 minutes.
    let crashed = state_report(&bot_id, "crashed", 5, now);
    let mut failed = state_report(&bot_id, "failed", 5, now);
    failed["exit_code"] = json!(3);
    frames(&app, &token, json!([crashed, failed])).await?;
    let report = status(&app).await?;
    assert_eq!(report["health"], "critical");
    assert!(report["reasons"][0].as_str().unwrap_or("").contains("1 bot(s) failed"), "{report}");
    let titles_now = titles(&app).await?;
    assert!(titles_now.iter().any(|t| t == "bot `farmer-7` failed: last exit code 3 — read its log"), "{titles_now:?}");
    app.clock.advance(Span::minutes(12));
    app.tick(1).await?;
    let (_, list) = send(app.get("/api/v1/guide/recommendations")).await?;
    let offline =
        list.as_array().into_iter().flatten().find(|r| r["title"].as_str().is_some_and(|t| t.contains("vm-eu-3")));
    let offline = offline.cloned().unwrap_or_default();
    assert_eq!(offline["title"], "agent `vm-eu-3` offline for 12 min — check the host or revoke it");
    assert_eq!(offline["api"], format!("POST /api/v1/agents/{agent_id}/revoke"));
    assert_eq!(offline["panel"], format!("/agents/{agent_id}"));
    assert_eq!(list[0]["severity"], "critical", "most urgent first");

    let (status_code, dashboard) = send(app.get("/api/v1/dashboard")).await?;
    assert_eq!(status_code, 200);
    assert_eq!(dashboard["status"]["health"], "critical");
    assert_eq!(dashboard["status"]["counts"]["agents_by_status"]["offline"], 1);
    assert_eq!(dashboard["status"]["counts"]["bots_by_state"]["unknown"], 1);
    assert!(dashboard["recent_incidents"].as_array().is_some_and(|i| i.len() >= 2));
    assert_eq!(dashboard["recommendations"], list);
    let (_, hello_page) = send(app.get("/api/v1/guide/hello")).await?;
    assert_eq!(hello_page["you"], "admin (admin)", "an API token acts as its user");
    app.stop().await
}

/// `name{labels} value` lines of the Prometheus text format, checked strictly.
fn parse_prometheus(text: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| anyhow::anyhow!("no value in `{line}`"))?;
        let value: f64 = value.parse().map_err(|_| anyhow::anyhow!("bad value in `{line}`"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        anyhow::ensure!(
            series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in `{line}`"
        );
        anyhow::ensure!(name_end == series.len() || series.ends_with('}'), "bad labels in `{line}`");
        samples.push((series.to_owned(), value));
    }
    Ok(samples)
}

async fn metrics_follow_the_fleet(backend: Backend) -> anyhow::Result<()> {
    const METRICS_TOKEN: &str = "fleet-scraper-token-0123456789";
    let app = TestApp::spawn_manual(backend, |settings| {
        quick(settings);
        settings.metrics_token_hash = Some(botmox_control_plane::auth::credentials::hash(METRICS_TOKEN));
    })
    .await?;
    let sample = |samples: &[(String, f64)], series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    let scrape = |app: &TestApp| {
        let request = app.request_as(reqwest::Method::GET, "/metrics", Some(METRICS_TOKEN));
        async move {
            let response = request.send().await?;
            anyhow::ensure!(response.status() == 200);
            anyhow::ensure!(response.headers()["content-type"].to_str()?.starts_with("text/plain"));
            parse_prometheus(&response.text().await?)
        }
    };
    let before = scrape(&app).await?;
    assert_eq!(sample(&before, "botmox_agents{status=\"online\"}"), Some(0.0));
    let (agent_id, token) = app.pair_agent("vm-metrics").await?;
    frames(&app, &token, json!([hello(json!([]))])).await?;
    let bot_id = bot(&app, "measured", agent_id, "stopped").await?;
    frames(&app, &token, json!([state_report(&bot_id, "running", 0, app.clock.now())])).await?;
    send(app.post(&format!("/api/v1/bots/{bot_id}/stop"), &json!({}))).await?;
    poll(&app, &token).await?;
    let after = scrape(&app).await?;
    assert_eq!(sample(&after, "botmox_agents{status=\"online\"}"), Some(1.0));
    assert_eq!(sample(&after, "botmox_bots{state=\"running\"}"), Some(1.0));
    assert_eq!(sample(&after, "botmox_commands{status=\"dispatched\"}"), Some(1.0));
    assert!(sample(&after, "botmox_command_dispatch_latency_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(after.iter().any(|(s, v)| s.starts_with("botmox_http_request_duration_seconds_count{")
        && s.contains("route=\"/api/v1/bots\"")
        && *v >= 1.0));
    assert!(sample(&after, "botmox_agent_connections").is_some());
    // Only the server's operators see it (a tenant admin sees their tenant: `api::security`).
    let viewer = app.login_as(botmox_contract::auth::Role::Viewer).await?;
    let (status, _) = send(app.request_as(reqwest::Method::GET, "/metrics", Some(&viewer))).await?;
    assert_eq!(status, 403);
    app.stop().await
}

/// A drained agent: reconciliation leaves its stopped bots alone (their desired state is still
/// `running`), the drain outlives a silence (offline) and a reconnect, and the undrain queues
/// the start at once.
async fn a_drained_agent_is_not_reconciled_and_stays_drained_across_reconnects(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, quick).await?;
    let (agent_id, token) = app.pair_agent("vm-maintenance").await?;
    let bot_id = bot(&app, "paused-bot", agent_id, "running").await?;
    frames(&app, &token, json!([hello(json!([]))])).await?;
    let answer = |app: &TestApp, id: Value, state: &str| {
        let now = app.clock.now();
        json!([{"type": "ack", "command_id": id}, state_report(&bot_id, state, 0, now),
               {"type": "result", "command_id": id, "ok": true, "result": {}, "error": null}])
    };
    let leased = poll(&app, &token).await?;
    assert_eq!(leased[0]["kind"], "bot.start");
    frames(&app, &token, answer(&app, leased[0]["id"].clone(), "running")).await?;

    let (status, drained) = send(app.post(&format!("/api/v1/agents/{agent_id}/drain"), &json!({}))).await?;
    assert_eq!(status, 200, "{drained}");
    let leased = poll(&app, &token).await?;
    assert_eq!((leased.len(), leased[0]["kind"].as_str()), (1, Some("bot.stop")), "{leased:?}");
    frames(&app, &token, answer(&app, leased[0]["id"].clone(), "stopped")).await?;
    let commands = |app: &TestApp| {
        let request = app.get(&format!("/api/v1/commands?bot_id={bot_id}"));
        async move { Ok::<usize, anyhow::Error>(send(request).await?.1["items"].as_array().map_or(0, Vec::len)) }
    };
    assert_eq!(commands(&app).await?, 2);

    // Long past the quiet period, heartbeating: reconciliation does not start it.
    app.clock.advance(Span::minutes(5));
    frames(&app, &token, json!([heartbeat()])).await?;
    app.tick(0).await?;
    assert_eq!(commands(&app).await?, 2, "no start for a bot on a drained agent");
    let bot_now = send(app.get(&format!("/api/v1/bots/{bot_id}"))).await?.1;
    assert_eq!((bot_now["state"].as_str(), bot_now["desired_state"].as_str()), (Some("stopped"), Some("running")));

    // Silent, then back: still draining.
    app.clock.advance(Span::seconds(16));
    app.tick(1).await?;
    let agent = send(app.get(&format!("/api/v1/agents/{agent_id}"))).await?.1;
    assert_eq!(agent["status"], "draining", "the drain outlives the silence: {agent}");
    assert!(agent["connected_replica"].is_null(), "{agent}");
    assert_eq!(incidents(&app, "open=true&kind=agent_offline").await?.len(), 1, "its silence is still noticed");
    frames(&app, &token, json!([hello(json!([]))])).await?;
    assert_eq!(send(app.get(&format!("/api/v1/agents/{agent_id}"))).await?.1["status"], "draining");
    let (_, advice) = send(app.get("/api/v1/guide/recommendations")).await?;
    assert!(advice.to_string().contains("agent `vm-maintenance` is draining"), "{advice}");

    let (status, undrained) = send(app.post(&format!("/api/v1/agents/{agent_id}/undrain"), &json!({}))).await?;
    assert_eq!((status, undrained["agent"]["status"].as_str()), (200, Some("online")), "{undrained}");
    let leased = poll(&app, &token).await?;
    assert_eq!((leased.len(), leased[0]["kind"].as_str()), (1, Some("bot.start")), "{leased:?}");

    // Drained while away: a command for it says it waits (draining is not connected).
    app.clock.advance(Span::seconds(16));
    app.tick(1).await?;
    send(app.post(&format!("/api/v1/agents/{agent_id}/drain"), &json!({}))).await?;
    let sync = json!({"agent_id": agent_id, "kind": "bot.sync", "bot_id": bot_id});
    let (status, accepted) = send(app.post("/api/v1/commands", &sync)).await?;
    assert_eq!((status, accepted["agent_online"].as_bool()), (202, Some(false)), "{accepted}");
    assert!(accepted["message"].as_str().unwrap_or_default().contains("draining and not connected"), "{accepted}");
    app.stop().await
}
