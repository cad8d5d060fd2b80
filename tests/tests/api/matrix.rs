//! The authorisation matrix, generated from the server's own route table: every route × every
//! kind of credential → the expected answer. A route without a declared rule cannot be served
//! (the app refuses to build) and is missing from the table, so the `known_routes` check fails.

use botmox_contract::{
    auth::{Role, Scope},
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
                assert!(
                    status != 403 && code != "unauthorized" || path.ends_with("/refresh"),
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
