//! Issue 12's holes, each closed at its mechanism: tokens acting within their scope, `/metrics`
//! by server or tenant credential, a command that never names another agent's bot, a guide
//! that tells a token only what it may read, and a revoked agent that cannot make the server
//! work. (Usernames: `users.rs`; repeated JSON keys: `errors.rs`; weak `If-Match`: `bots.rs`; streams and command
//! kinds: `matrix.rs`.)

use botmox_contract::{auth::Role, incidents::IncidentKind};
use botmox_control_plane::{auth::credentials, clock::Clock, store::IncidentFilter};
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::json;

both_backends!(an_admins_narrow_token_is_no_admin_on_tokens);
both_backends!(metrics_are_the_servers_with_its_token_and_a_tenants_with_its_admin);
both_backends!(a_command_names_only_a_bot_of_its_agent);
both_backends!(
    a_revoked_agent_token_costs_one_incident_write_per_minute,
    the_guide_tells_a_token_only_what_it_may_read
);

async fn an_admins_narrow_token_is_no_admin_on_tokens(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let narrow = app.api_token(&["bots:read"]).await?;
    let broad = app.api_token(&["admin"]).await?;
    // Another user's token (a viewer's, made from their session).
    let viewer = app.login_as(Role::Viewer).await?;
    let made = app
        .request_as(Method::POST, "/api/v1/tokens", Some(&viewer))
        .json(&json!({"name": "v", "scopes": ["bots:read"]}));
    let (status, theirs) = send(made).await?;
    assert_eq!(status, 201, "{theirs}");
    let theirs = theirs["token"]["id"].as_str().unwrap_or_default().to_owned();

    let all = |token: &str| send(app.request_as(Method::GET, "/api/v1/tokens?all=true", Some(token)));
    let (status, body) = all(&narrow).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "{body}");
    let revoke = |token: &str| send(app.request_as(Method::DELETE, &format!("/api/v1/tokens/{theirs}"), Some(token)));
    assert_eq!(revoke(&narrow).await?.0, 404, "someone else's token does not exist for a narrow token");
    let (_, listed) = send(app.get("/api/v1/tokens?all=true")).await?;
    assert!(listed.as_array().into_iter().flatten().any(|t| t["id"] == theirs.as_str() && t["revoked_at"].is_null()));
    // Its own tokens it may still see; an `admin` token (or session) may do it all.
    let (status, own) = send(app.request_as(Method::GET, "/api/v1/tokens", Some(&narrow))).await?;
    assert_eq!(status, 200, "{own}");
    assert_eq!(all(&broad).await?.0, 200);
    assert_eq!(revoke(&broad).await?.0, 204);
    app.stop().await
}

const METRICS_TOKEN: &str = "scraper-token-0123456789abcdef";

fn gauge(text: &str, line_start: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
}

async fn text(
    sent: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> anyhow::Result<(u16, String)> {
    let response = sent.await?;
    Ok((response.status().as_u16(), response.text().await?))
}

async fn metrics_are_the_servers_with_its_token_and_a_tenants_with_its_admin(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_with(backend, |s| s.metrics_token_hash = Some(credentials::hash(METRICS_TOKEN))).await?;
    let (tenant_b, other_admin) = app.second_tenant().await?;
    app.create_agent("ours").await?;
    for name in ["theirs-1", "theirs-2"] {
        app.create_agent_in(tenant_b, name).await?;
    }
    let (_, agent_token) = app.pair_agent("paired").await?;
    let scrape = |token: Option<&str>| app.request_as(Method::GET, "/metrics", token).send();
    // The server's token: every tenant, and the process' own figures.
    let (status, server) = text(scrape(Some(METRICS_TOKEN))).await?;
    assert_eq!(status, 200, "{server}");
    assert_eq!(gauge(&server, "botmox_agents{status=\"pending\"}"), Some(4), "{server}");
    assert!(server.contains("botmox_agent_connections"));
    // A tenant admin: that tenant only.
    let (status, ours) = text(scrape(Some(&app.token))).await?;
    assert_eq!(status, 200, "{ours}");
    assert_eq!(gauge(&ours, "botmox_agents{status=\"pending\"}"), Some(2), "{ours}");
    assert!(!ours.contains("botmox_agent_connections") && !ours.contains("http_request"), "{ours}");
    let (_, theirs) = text(scrape(Some(&other_admin))).await?;
    assert_eq!(gauge(&theirs, "botmox_agents{status=\"pending\"}"), Some(2), "{theirs}");
    let admin_token = app.api_token(&["admin"]).await?;
    assert_eq!(text(scrape(Some(&admin_token))).await?.0, 200);
    // Nobody else.
    let narrow = app.api_token(&["agents:read"]).await?;
    let viewer = app.login_as(Role::Viewer).await?;
    for (who, token, expected) in [
        ("no credential", None, 401),
        ("garbage", Some("garbage"), 401),
        ("a near miss of the token", Some("scraper-token-0123456789abcdeX"), 401),
        ("a viewer", Some(viewer.as_str()), 403),
        ("an `agents:read` token", Some(narrow.as_str()), 403),
        ("an agent", Some(agent_token.as_str()), 403),
    ] {
        let (status, body) = text(scrape(token)).await?;
        assert_eq!(status, expected, "{who}: {body}");
        assert!(!body.contains("botmox_agents"), "{who}");
    }
    app.stop().await
}

async fn a_command_names_only_a_bot_of_its_agent(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (here, there) = (app.create_agent("here").await?, app.create_agent("there").await?);
    let (_, bot) =
        send(app.post("/api/v1/bots", &json!({"name": "b", "agent_id": there.id, "exec": {"program": "true"}})))
            .await?;
    let bot_id = bot["id"].as_str().unwrap_or_default();
    for body in [
        json!({"agent_id": here.id, "kind": "agent.exec", "bot_id": bot_id, "payload": {"program": "env"}}),
        json!({"agent_id": here.id, "kind": "agent.drain", "bot_id": bot_id}),
        json!({"agent_id": here.id, "kind": "bot.sync", "bot_id": bot_id}),
    ] {
        let (status, answer) = send(app.post("/api/v1/commands", &body)).await?;
        assert_eq!((status, answer["field"].as_str()), (422, Some("bot_id")), "{body}: {answer}");
    }
    // An agent-level kind names no bot, even one of its own agent.
    let own = json!({"agent_id": there.id, "kind": "agent.drain", "bot_id": bot_id});
    assert_eq!(send(app.post("/api/v1/commands", &own)).await?.1["field"], "bot_id");
    let (_, commands) = send(app.get("/api/v1/commands")).await?;
    assert_eq!(commands["items"].as_array().map(Vec::len), Some(0), "nothing was queued: {commands}");
    app.stop().await
}

async fn a_revoked_agent_token_costs_one_incident_write_per_minute(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, |_| {}).await?;
    let (agent_id, token) = app.pair_agent("revoked-vm").await?;
    assert_eq!(send(app.post(&format!("/api/v1/agents/{agent_id}/revoke"), &json!({}))).await?.0, 200);
    let attempt = || send(app.request_as(Method::GET, "/api/v1/agent/self", Some(&token)));
    let count = || async {
        let filter = IncidentFilter { limit: 10, ..Default::default() };
        let (incidents, _) = app.store.list_incidents(app.tenant_id, &filter).await?;
        let found = incidents.into_iter().find(|i| i.kind == IncidentKind::TokenRevokedAgentConnected);
        anyhow::Ok(found.map_or(0, |i| i.count))
    };
    let counted = |n: u32| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = count().await?;
            if now >= n || tokio::time::Instant::now() > deadline {
                return anyhow::Ok(now);
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    for _ in 0..30 {
        assert_eq!(attempt().await?.0, 401);
    }
    // One minute later, one more attempt is recorded: the count reaches 2, never 31.
    Clock::advance(&app.clock, botmox_control_plane::auth::Cooldown::PERIOD);
    assert_eq!(attempt().await?.0, 401);
    assert_eq!(counted(2).await?, 2, "30 attempts within a minute were recorded once");
    app.stop().await
}

async fn the_guide_tells_a_token_only_what_it_may_read(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    app.create_agent("never-connected").await?;
    let about_agents = |list: &serde_json::Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["panel"].as_str().is_some_and(|p| p.starts_with("/agents")))
            .count()
    };
    let (_, admins) = send(app.get("/api/v1/guide/recommendations")).await?;
    assert_eq!(about_agents(&admins), 1, "{admins}");
    let narrow = app.api_token(&["bots:read"]).await?;
    let (status, theirs) = send(app.request_as(Method::GET, "/api/v1/guide/recommendations", Some(&narrow))).await?;
    assert_eq!(status, 200);
    assert_eq!(about_agents(&theirs), 0, "a `bots:read` token is told nothing about agents: {theirs}");
    let (_, dashboard) = send(app.request_as(Method::GET, "/api/v1/dashboard", Some(&narrow))).await?;
    assert_eq!(about_agents(&dashboard["recommendations"]), 0, "{dashboard}");
    app.stop().await
}
