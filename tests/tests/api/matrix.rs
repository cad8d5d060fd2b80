//! The authorisation matrix, generated from the server's own route table: every route × every
//! kind of credential → the expected answer. A route without a declared rule cannot be served
//! (the app refuses to build) and is missing from the table, so the `known_routes` check fails.

use botmox_contract::{
    auth::{Role, Scope},
    events::EventPayload,
    incidents::{IncidentKind, Severity},
};
use botmox_control_plane::{
    auth::{credentials, min_role, policy::Access},
    clock::Clock,
    http,
    store::{NewApiToken, NewIncident},
};
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
    sse::SseStream,
};
use reqwest::Method;
use serde_json::json;

both_backends!(every_route_enforces_its_rule);

/// `path` with each `{param}` replaced: by tenant A's real fixture (`real`) or a random id.
fn concrete(path: &str, real: Option<&Fixtures>) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        if segment.starts_with('{') {
            let resource = segments[i - 1];
            let value = match (real, resource) {
                (Some(f), "bots") => f.bot.clone(),
                (Some(f), "agents") => f.agent.clone(),
                (Some(f), "users") => f.user.clone(),
                (Some(f), "tokens") => f.token.clone(),
                (Some(f), "secrets") => f.secret.clone(),
                (Some(f), "commands") => f.command.clone(),
                (Some(f), "incidents") => f.incident.clone(),
                (Some(_), other) => panic!("add a fixture for `{other}` so the matrix covers {path}"),
                (None, "secrets") => "no-such-secret".to_owned(),
                (None, _) => uuid::Uuid::now_v7().to_string(),
            };
            out.push(value);
        } else {
            out.push((*segment).to_owned());
        }
    }
    out.join("/")
}

/// Tenant A's real resources, for the other tenant to try.
struct Fixtures {
    bot: String,
    agent: String,
    user: String,
    token: String,
    secret: String,
    command: String,
    incident: String,
}

async fn call(app: &TestApp, method: &Method, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut request = app.request_as(method.clone(), path, token);
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        request = request.json(&json!({}));
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let streaming =
        response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // A live stream (events, log follow) never ends: its status is the answer.
        return Ok((status, String::new()));
    }
    let bytes = response.bytes().await?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok((status, body["code"].as_str().unwrap_or_default().to_owned()))
}

async fn every_route_enforces_its_rule(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let now = app.clock.now();

    // Every kind of credential.
    let viewer = app.login_as(Role::Viewer).await?;
    let operator = app.login_as(Role::Operator).await?;
    let admin = app.token.clone();
    let (agent_id, agent_token) = app.pair_agent("matrix-vm").await?;
    let (_, other_tenant_admin) = app.second_tenant().await?;
    let admin_id = app.store.find_user_by_username("admin").await?.map(|r| r.user.id).unwrap_or_default();
    let past = Clock::manual(now - chrono::Duration::hours(1));
    let expired_session =
        app.state.sessions.issue(admin_id, app.tenant_id, uuid::Uuid::now_v7(), Role::Admin, &past)?;
    let (_, revoked) = send(app.post("/api/v1/tokens", &json!({"name": "revoked", "scopes": ["admin"]}))).await?;
    let (status, _) =
        send(app.delete(&format!("/api/v1/tokens/{}", revoked["token"]["id"].as_str().unwrap_or("")))).await?;
    assert_eq!(status, 204);
    let expired_api = credentials::new_api_token();
    app.store
        .create_api_token(
            NewApiToken {
                tenant_id: app.tenant_id,
                user_id: admin_id,
                name: "expired".into(),
                scopes: vec![Scope::Admin],
                expires_at: Some(now - chrono::Duration::seconds(1)),
                token_hash: credentials::hash(&expired_api),
            },
            now,
        )
        .await?;
    let mut scoped = Vec::new();
    for scope in Scope::ALL {
        scoped.push((scope, app.api_token(&[scope.as_str()]).await?));
    }

    // Tenant A's real resources.
    let (_, bot) = send(
        app.post("/api/v1/bots", &json!({"name": "matrix-bot", "agent_id": agent_id, "exec": {"program": "true"}})),
    )
    .await?;
    let (_, token) = send(app.post("/api/v1/tokens", &json!({"name": "fixture", "scopes": ["bots:read"]}))).await?;
    let (status, _) =
        send(app.request(Method::PUT, "/api/v1/secrets/matrix-secret").json(&json!({"value": "v"}))).await?;
    assert_eq!(status, 201);
    let (status, started) =
        send(app.post(&format!("/api/v1/bots/{}/start", bot["id"].as_str().unwrap_or("")), &json!({}))).await?;
    assert_eq!(status, 202, "{started}");
    let (incident, _) = app
        .store
        .open_incident(
            NewIncident {
                tenant_id: app.tenant_id,
                kind: IncidentKind::AgentOffline,
                severity: Severity::Warning,
                subject: format!("agent:{agent_id}"),
                message: "matrix fixture".into(),
                data: json!({}),
            },
            now,
        )
        .await?;
    let viewer_id = app.store.list_users(app.tenant_id).await?.into_iter().find(|u| u.user.role == Role::Viewer);
    let fixtures = Fixtures {
        bot: bot["id"].as_str().unwrap_or_default().to_owned(),
        agent: agent_id.to_string(),
        user: viewer_id.map(|u| u.user.id.to_string()).unwrap_or_default(),
        token: token["token"]["id"].as_str().unwrap_or_default().to_owned(),
        secret: "matrix-secret".into(),
        command: started["command"]["id"].as_str().unwrap_or_default().to_owned(),
        incident: incident.id.to_string(),
    };

    let mut rules: Vec<_> = http::policy().rules().map(|(m, p, r)| (m.clone(), p.to_owned(), r.clone())).collect();
    rules.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    let openapi = serde_json::to_value(http::openapi())?;
    let documented: usize =
        openapi["paths"].as_object().map_or(0, |p| p.values().map(|i| i.as_object().map_or(0, |o| o.len())).sum());
    assert_eq!(rules.len(), documented, "every documented operation has a rule");
    assert!(rules.len() >= 25, "the matrix sees the whole API ({} routes)", rules.len());

    let passed = |(status, code): &(u16, String)| !(*status == 401 || (*status == 403 && code != "forbidden"));
    let mut checked = 0;
    for (method, path, rule) in &rules {
        let random = concrete(path, None);
        let label = format!("{method} {path}");
        if rule.access == Access::Public {
            for token in [None, Some("garbage")] {
                let (status, code) = call(&app, method, &random, token).await?;
                // `/metrics` authenticates itself (the server's metrics token or a tenant admin):
                // `security.rs` walks it with every credential.
                assert!(
                    status != 403 && code != "unauthorized" || path.ends_with("/refresh") || path == "/metrics",
                    "{label} is public: {status} {code}"
                );
            }
            continue;
        }
        // No, malformed, forged-expired, revoked and expired credentials: 401.
        for (what, token) in [
            ("none", None),
            ("garbage", Some("garbage")),
            ("expired session", Some(expired_session.as_str())),
            ("revoked api token", Some(revoked["secret"].as_str().unwrap_or_default())),
            ("expired api token", Some(expired_api.as_str())),
        ] {
            let (status, code) = call(&app, method, &random, token).await?;
            assert_eq!((status, code.as_str()), (401, "unauthorized"), "{label} with {what}");
            checked += 1;
        }
        // The agent token: only agent routes.
        let answer = call(&app, method, &random, Some(&agent_token)).await?;
        match rule.access {
            Access::Agent => assert!(passed(&answer), "{label}: the agent must pass, got {answer:?}"),
            _ => assert_eq!(answer, (403, "wrong_credential_kind".to_owned()), "{label} with the agent token"),
        }
        // Sessions of each role.
        for (role, token) in [(Role::Viewer, &viewer), (Role::Operator, &operator), (Role::Admin, &admin)] {
            let answer = call(&app, method, &random, Some(token)).await?;
            let allowed = match rule.access {
                Access::User(scope) => role >= min_role(scope),
                Access::AnyUser => true,
                Access::Agent => false,
                Access::Public => unreachable!(),
            };
            if allowed {
                assert!(passed(&answer), "{label}: a {} must pass, got {answer:?}", role.as_str());
            } else if rule.access == Access::Agent {
                assert_eq!(answer, (403, "wrong_credential_kind".to_owned()), "{label} as {}", role.as_str());
            } else {
                assert_eq!(answer, (403, "insufficient_scope".to_owned()), "{label} as {}", role.as_str());
            }
            checked += 1;
        }
        // API tokens of each scope (made by the admin, so the role never limits them).
        for (scope, token) in &scoped {
            let answer = call(&app, method, &random, Some(token)).await?;
            let allowed = match rule.access {
                Access::User(needed) => *scope == needed || *scope == Scope::Admin,
                Access::AnyUser => true,
                _ => false,
            };
            if allowed {
                assert!(passed(&answer), "{label}: a `{}` token must pass, got {answer:?}", scope.as_str());
            } else {
                assert_eq!(answer.0, 403, "{label} with a `{}` token: {answer:?}", scope.as_str());
            }
            checked += 1;
        }
        // Another tenant's admin, on this tenant's real resources: they do not exist (404).
        if path.contains('{') && !matches!(rule.access, Access::Agent) {
            let real = concrete(path, Some(&fixtures));
            if method == Method::PUT && path.contains("/secrets/") {
                // PUT creates the other tenant's *own* secret of that name: a separate namespace.
                let request =
                    app.request_as(Method::PUT, &real, Some(&other_tenant_admin)).json(&json!({"value": "theirs"}));
                let (status, body) = send(request).await?;
                assert_eq!(status, 201, "{label}: {body}");
            } else {
                let (status, code) = call(&app, method, &real, Some(&other_tenant_admin)).await?;
                assert_eq!(status, 404, "{label} from another tenant: {code}");
            }
            checked += 1;
        }
    }
    assert!(checked > 400, "{checked} checks");

    // Nothing the other tenant did touched tenant A.
    let (_, secrets) = send(app.get("/api/v1/secrets")).await?;
    assert_eq!(secrets.as_array().map(Vec::len), Some(1));
    let (status, _) = send(app.get(&format!("/api/v1/bots/{}", fixtures.bot))).await?;
    assert_eq!(status, 200);
    let (_, agent) = send(app.get(&format!("/api/v1/agents/{}", fixtures.agent))).await?;
    assert_eq!(agent["status"], "pending", "the other tenant could not revoke it");
    app.stop().await
}

// Inside the routes: which command kinds each credential may submit and read, and what each
// sees on the streams (events, log follow) — including a credential that lapses while its
// stream is open.

both_backends!(every_command_kind_is_submitted_and_read_only_by_whom_it_may);
both_backends!(streams_show_each_credential_only_what_it_may_read, streams_end_when_their_credential_lapses);

/// Every kind of user credential, labelled, with the session roles first.
async fn user_credentials(app: &TestApp) -> anyhow::Result<Vec<(String, String)>> {
    let mut all = vec![
        ("viewer".to_owned(), app.login_as(Role::Viewer).await?),
        ("operator".to_owned(), app.login_as(Role::Operator).await?),
        ("admin".to_owned(), app.token.clone()),
    ];
    for scope in Scope::ALL {
        all.push((format!("`{}` token", scope.as_str()), app.api_token(&[scope.as_str()]).await?));
    }
    Ok(all)
}

async fn every_command_kind_is_submitted_and_read_only_by_whom_it_may(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (agent_id, agent_token) = app.pair_agent("kinds-vm").await?;
    let (_, bot) = send(
        app.post("/api/v1/bots", &json!({"name": "kinds-bot", "agent_id": agent_id, "exec": {"program": "true"}})),
    )
    .await?;
    let bot_id = bot["id"].as_str().unwrap_or_default().to_owned();
    let bodies = [
        (
            "agent.exec",
            json!({"agent_id": agent_id, "kind": "agent.exec", "payload": {"program": "cat", "args": ["/proc/1/environ"]}}),
        ),
        ("agent.drain", json!({"agent_id": agent_id, "kind": "agent.drain"})),
        ("bot.sync", json!({"agent_id": agent_id, "kind": "bot.sync", "bot_id": bot_id})),
    ];
    let mut credentials = user_credentials(&app).await?;
    credentials.push(("agent token".to_owned(), agent_token));
    // Who may submit what: exec and drain are the admin's (session or `admin` token) alone.
    let admin_like = |who: &str| who == "admin" || who == "`admin` token";
    let writer = |who: &str| admin_like(who) || who == "operator" || who == "`commands:write` token";
    let mut ids: Vec<(&str, String)> = Vec::new();
    for (who, token) in &credentials {
        for (kind, body) in &bodies {
            let request = app.request_as(Method::POST, "/api/v1/commands", Some(token)).json(body);
            let (status, answer) = send(request).await?;
            let allowed = if kind.starts_with("agent.") { admin_like(who) } else { writer(who) };
            if allowed {
                assert_eq!(status, 202, "{who} submitting {kind}: {answer}");
                ids.push((kind, answer["command"]["id"].as_str().unwrap_or_default().to_owned()));
            } else {
                assert_eq!(status, 403, "{who} submitting {kind}: {answer}");
            }
        }
    }
    // Nothing the refused ones tried was queued: exactly the allowed ones exist.
    let (_, all) = send(app.get("/api/v1/commands?limit=500")).await?;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(ids.len()), "{all}");

    // Who may read which: exec and drain rows (their results) only the admin's.
    let readers = credentials.iter().filter(|(who, _)| {
        ["viewer", "operator", "admin", "`commands:read` token", "`admin` token"].contains(&who.as_str())
    });
    for (who, token) in readers {
        let (status, page) = send(app.request_as(Method::GET, "/api/v1/commands?limit=500", Some(token))).await?;
        assert_eq!(status, 200, "{who}: {page}");
        let mut kinds: Vec<&str> =
            page["items"].as_array().into_iter().flatten().filter_map(|c| c["kind"].as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let expected: &[&str] =
            if admin_like(who) { &["agent.drain", "agent.exec", "bot.sync"] } else { &["bot.sync"] };
        assert_eq!(kinds, expected, "{who} lists");
        for (kind, id) in &ids {
            let (status, _) = send(app.request_as(Method::GET, &format!("/api/v1/commands/{id}"), Some(token))).await?;
            let visible = !kind.starts_with("agent.") || admin_like(who);
            assert_eq!(status, if visible { 200 } else { 404 }, "{who} reading a {kind}");
        }
    }
    // An operator cannot cancel (nor learn of) an exec.
    let operator = &credentials[1].1;
    let exec = ids.iter().find(|(kind, _)| *kind == "agent.exec").map(|(_, id)| id.clone()).unwrap_or_default();
    let cancel = app.request_as(Method::POST, &format!("/api/v1/commands/{exec}/cancel"), Some(operator));
    assert_eq!(send(cancel).await?.0, 404);
    let (_, still) = send(app.get(&format!("/api/v1/commands/{exec}"))).await?;
    assert_eq!(still["status"], "queued");
    app.stop().await
}

/// The labels of the events on `stream` up to the marker (`bot_removed` of `marker`): the
/// event name, with the kind for command events.
async fn labels_until(stream: &mut SseStream, marker: &str) -> anyhow::Result<Vec<String>> {
    let mut labels = Vec::new();
    loop {
        let event = stream.next_event(WAIT).await?;
        let data: serde_json::Value = event.json()?;
        let name = event.event.unwrap_or_default();
        if name == "bot_removed" && data["data"]["bot_id"] == marker {
            labels.sort();
            labels.dedup();
            return Ok(labels);
        }
        labels.push(match data["data"]["kind"].as_str() {
            Some(kind) if name == "command_status" => format!("{name} {kind}"),
            _ => name,
        });
    }
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn streams_show_each_credential_only_what_it_may_read(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (agent_id, agent_token) = app.pair_agent("streams-vm").await?;
    let spare = app.create_agent("spare-vm").await?;
    let mut credentials = user_credentials(&app).await?;
    credentials.push(("agent token".to_owned(), agent_token));

    // Open every stream first; only `bots:read` holders may.
    let mut streams = Vec::new();
    for (who, token) in &credentials {
        let opened = SseStream::open(app.request_as(Method::GET, "/api/v1/events", Some(token))).await;
        let may = ["viewer", "operator", "admin", "`bots:read` token", "`admin` token"].contains(&who.as_str());
        match opened {
            Ok(stream) if may => streams.push((who.clone(), stream)),
            Ok(_) => panic!("{who} opened the event stream"),
            Err(e) if may => return Err(e.context(format!("{who} could not open the event stream"))),
            Err(e) => assert!(e.to_string().contains("403"), "{who}: {e}"),
        }
    }

    // One event of every kind, then a marker every stream gets.
    let spec = |name: &str| json!({"name": name, "agent_id": agent_id, "exec": {"program": "true"}});
    let (_, bot) = send(app.post("/api/v1/bots", &spec("seen"))).await?;
    let bot_id = bot["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(send(app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({}))).await?.0, 202);
    assert_eq!(send(app.post(&format!("/api/v1/agents/{}/revoke", spare.id), &json!({}))).await?.0, 200);
    let exec = json!({"agent_id": agent_id, "kind": "agent.exec", "payload": {"program": "env"}});
    assert_eq!(send(app.post("/api/v1/commands", &exec)).await?.0, 202);
    let (incident, _) = app
        .store
        .open_incident(
            NewIncident {
                tenant_id: app.tenant_id,
                kind: IncidentKind::BotCrashed,
                severity: Severity::Warning,
                subject: format!("bot:{bot_id}"),
                message: "streams fixture".into(),
                data: json!({}),
            },
            app.clock.now(),
        )
        .await?;
    app.state.publish(app.tenant_id, EventPayload::Incident(incident)).await;
    let (_, marker) = send(app.post("/api/v1/bots", &spec("marker"))).await?;
    let marker = marker["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(send(app.delete(&format!("/api/v1/bots/{marker}"))).await?.0, 204);

    // (The marker, a `bot_removed`, ends each list.)
    let everything =
        ["agent_presence", "bot_state", "command_status agent.exec", "command_status bot.start", "incident"];
    for (who, mut stream) in streams {
        let seen = labels_until(&mut stream, &marker).await?;
        let expected: Vec<&str> = match who.as_str() {
            "admin" | "`admin` token" => everything.to_vec(),
            // Users see commands and agents, but never an exec.
            "viewer" | "operator" => everything.iter().copied().filter(|l| !l.contains("agent.exec")).collect(),
            // `bots:read` only: bots and incidents, no commands, no agents.
            _ => vec!["bot_state", "incident"],
        };
        assert_eq!(seen, expected, "{who} on /events");
    }

    // The log follow: `bots:read` holders only; the lines as they come.
    for (who, token) in &credentials {
        let path = format!("/api/v1/bots/{bot_id}/logs?follow=true");
        let opened = SseStream::open(app.request_as(Method::GET, &path, Some(token))).await;
        let may = ["viewer", "operator", "admin", "`bots:read` token", "`admin` token"].contains(&who.as_str());
        assert_eq!(opened.is_ok(), may, "{who} following a log");
    }
    app.stop().await
}

/// Waits (bounded) until `stream` ends, skipping the events it still delivers.
async fn ends(stream: &mut SseStream, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match stream.next_event(left).await {
            Ok(_) => continue,
            Err(e) if format!("{e:#}").contains("ended") || format!("{e:#}").contains("failed") => return Ok(()),
            Err(e) => return Err(e.context(format!("{what}: the stream is still open"))),
        }
    }
}

/// A user made through the API: (id, access token).
async fn user(app: &TestApp, name: &str, role: &str) -> anyhow::Result<(String, String)> {
    let body = json!({"username": name, "password": "stream-user-password", "role": role});
    let (status, made) = send(app.post("/api/v1/users", &body)).await?;
    anyhow::ensure!(status == 201, "creating {name}: {status} {made}");
    Ok((made["id"].as_str().unwrap_or_default().to_owned(), app.login(name, "stream-user-password").await?))
}

async fn streams_end_when_their_credential_lapses(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_manual(backend, |s| s.stream_recheck = std::time::Duration::from_millis(100)).await?;
    let agent = app.create_agent("lapse-vm").await?;
    let (_, bot) =
        send(app.post("/api/v1/bots", &json!({"name": "lapse", "agent_id": agent.id, "exec": {"program": "true"}})))
            .await?;
    let bot_id = bot["id"].as_str().unwrap_or_default().to_owned();
    let events = |token: &str| SseStream::open(app.request_as(Method::GET, "/api/v1/events", Some(token)));
    let mut admin = events(&app.token).await?;

    // A user disabled while their event stream is open.
    let (disabled_id, disabled) = user(&app, "to-disable", "viewer").await?;
    let mut stream = events(&disabled).await?;
    assert_eq!(send(app.patch(&format!("/api/v1/users/{disabled_id}"), &json!({"disabled": true}))).await?.0, 200);
    ends(&mut stream, "a disabled user's events").await?;

    // A user whose role changes: the stream ends, the next one gets the new rights.
    let (demoted_id, demoted) = user(&app, "to-demote", "operator").await?;
    let mut stream = events(&demoted).await?;
    assert_eq!(send(app.patch(&format!("/api/v1/users/{demoted_id}"), &json!({"role": "viewer"}))).await?.0, 200);
    ends(&mut stream, "a demoted user's events").await?;

    // An API token revoked while it follows a log.
    // (Tokens are made from a login session; the manual app's admin acts by token.)
    let session = app.login("admin", botmox_e2e::app::ADMIN_PASSWORD).await?;
    let made = app.request_as(Method::POST, "/api/v1/tokens", Some(&session));
    let (status, token) = send(made.json(&json!({"name": "follower", "scopes": ["bots:read"]}))).await?;
    assert_eq!(status, 201, "{token}");
    let follow = format!("/api/v1/bots/{bot_id}/logs?follow=true");
    let mut stream = SseStream::open(app.request_as(Method::GET, &follow, token["secret"].as_str())).await?;
    let token_id = token["token"]["id"].as_str().unwrap_or_default();
    assert_eq!(send(app.delete(&format!("/api/v1/tokens/{token_id}"))).await?.0, 204);
    ends(&mut stream, "a revoked token's log follow").await?;

    // An access token that expires while its streams are open (the admin acts by API token).
    let (_, expiring) = user(&app, "to-expire", "viewer").await?;
    let mut stream = events(&expiring).await?;
    let mut follow_stream = SseStream::open(app.request_as(Method::GET, &follow, Some(&expiring))).await?;
    app.clock.advance(chrono::Duration::minutes(16));
    ends(&mut stream, "an expired access token's events").await?;
    ends(&mut follow_stream, "an expired access token's log follow").await?;

    // A credential that still stands keeps its stream.
    assert_eq!(send(app.delete(&format!("/api/v1/bots/{bot_id}"))).await?.0, 204);
    let removed = admin.wait_for(|e| e.event.as_deref() == Some("bot_removed"), WAIT).await?;
    assert!(removed.data.contains(&bot_id));
    app.stop().await
}
