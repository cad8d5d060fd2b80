//! The audit log: who did what, to what, with which request id and outcome; refused writes,
//! logins and pairing included; filters and cursor pagination; readable by admins only and
//! changeable by nobody.

use std::collections::HashSet;

use botmox_contract::{
    audit::{Actor, ActorKind, Outcome},
    auth::Role,
};
use botmox_control_plane::{http, store::NewAuditEntry};
use botmox_e2e::{
    app::{send, TestApp, ADMIN_PASSWORD},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(state_changes_are_audited_with_actor_target_and_request_id, logins_and_pairing_are_audited);
both_backends!(filters_and_cursor_pagination_return_every_entry_once, the_audit_log_is_admin_read_only);
both_backends!(every_answered_request_is_in_the_log_read_right_after);

/// The entries `GET /audit?{query}` returns on its first page.
async fn entries(app: &TestApp, query: &str) -> anyhow::Result<Vec<Value>> {
    let (status, page) = send(app.get(&format!("/api/v1/audit?{query}"))).await?;
    anyhow::ensure!(status == 200, "audit answered {status}: {page}");
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}

/// Follows `next_cursor` through every page of `query` at `limit` entries per page.
async fn walk(app: &TestApp, query: &str, limit: usize) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/audit?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = send(app.get(&path)).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_some() {
            assert_eq!(items.len(), limit, "only the last page is short");
        }
        assert!(items.len() <= limit);
        all.extend(items);
        if cursor.is_none() {
            return Ok(all);
        }
        assert!(all.len() < 10_000, "the cursor must move on");
    }
}

/// What the pagination test wrote, to compute each filter's expected answer.
struct Written {
    i: usize,
    id: String,
    action: &'static str,
    outcome: Outcome,
    kind: ActorKind,
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()).collect()
}

async fn user_id(app: &TestApp, token: &str) -> anyhow::Result<String> {
    let (_, me) = send(app.request_as(Method::GET, "/api/v1/auth/me", Some(token))).await?;
    Ok(me["id"].as_str().unwrap_or_default().to_owned())
}

async fn state_changes_are_audited_with_actor_target_and_request_id(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin_id = user_id(&app, &app.token).await?;
    let agent = app.create_agent("vm-1").await?;

    let response = app.post("/api/v1/bots", &crate::bots::spec("audited", agent.id)).send().await?;
    assert_eq!(response.status(), 201);
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    let bot: Value = response.json().await?;
    let found = entries(&app, "action=create_bot").await?;
    assert_eq!(found.len(), 1, "{found:?}");
    let entry = &found[0];
    assert_eq!(entry["actor"], json!({ "kind": "user", "id": admin_id }));
    assert_eq!(entry["action"], "create_bot");
    assert_eq!(entry["target"], format!("bot:{}", bot["id"].as_str().unwrap_or_default()));
    assert_eq!(entry["outcome"], "success");
    assert_eq!(entry["request_id"], request_id.as_str());
    assert_eq!(entry["source_ip"], "127.0.0.1");
    assert_eq!(entry["data"], json!({ "method": "POST", "path": "/api/v1/bots", "status": 201 }));

    // A refused write is on record as a failure, with the one who tried.
    let viewer = app.login_as(Role::Viewer).await?;
    let viewer_id = user_id(&app, &viewer).await?;
    let response = app
        .request_as(Method::POST, "/api/v1/bots", Some(&viewer))
        .json(&crate::bots::spec("sneaky", agent.id))
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    let refused_request = response.headers()["x-request-id"].to_str()?.to_owned();
    let found = entries(&app, "action=create_bot&outcome=failure").await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["actor"], json!({ "kind": "user", "id": viewer_id }));
    assert_eq!(found[0]["request_id"], refused_request.as_str());
    assert_eq!(found[0]["data"]["status"], 403);
    assert_ne!(refused_request, request_id);

    // Through an API token, the token is the actor; a delete names its target.
    let (_, created) = send(app.post("/api/v1/tokens", &json!({ "name": "ci", "scopes": ["bots:write"] }))).await?;
    let secret = created["secret"].as_str().unwrap_or_default();
    let path = format!("/api/v1/bots/{}", bot["id"].as_str().unwrap_or_default());
    let (status, _) = send(app.request_as(Method::DELETE, &path, Some(secret))).await?;
    assert_eq!(status, 204);
    let found = entries(&app, "action=delete_bot").await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["actor"], json!({ "kind": "api_token", "id": created["token"]["id"] }));
    assert_eq!(found[0]["target"], entry["target"]);
    assert_eq!(found[0]["outcome"], "success");

    // Reads are not audited.
    let all = entries(&app, "").await?;
    assert!(all.iter().all(|e| e["data"]["method"] != "GET"), "{all:?}");
    app.stop().await
}

/// Entries are committed just after their responses (`audit::AuditLog`), in groups; a read of
/// the log waits for them, so whoever was answered finds the entry at once — here for a burst
/// of concurrent requests, each read issued the moment its answer came.
async fn every_answered_request_is_in_the_log_read_right_after(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let answered = futures::future::try_join_all((0..64).map(|i| {
        let app = &app;
        async move {
            let response =
                app.post("/api/v1/agents/pairing-codes", &json!({ "name": format!("vm-{i}") })).send().await?;
            anyhow::ensure!(response.status() == 201, "pairing code {i} answered {}", response.status());
            let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
            let found = entries(app, "action=create_pairing_code&limit=500").await?;
            anyhow::ensure!(
                found.iter().any(|e| e["request_id"] == request_id.as_str()),
                "request {request_id} was answered, and its entry is not in the log read right after"
            );
            Ok(request_id)
        }
    }))
    .await?;
    let found = entries(&app, "action=create_pairing_code&limit=500").await?;
    let logged: HashSet<&str> = found.iter().filter_map(|e| e["request_id"].as_str()).collect();
    assert_eq!(found.len(), 64, "one entry per request");
    assert!(answered.iter().all(|id| logged.contains(id.as_str())));
    app.stop().await
}

async fn logins_and_pairing_are_audited(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin_id = user_id(&app, &app.token).await?;
    assert!(app.login("admin", "not-the-password").await.is_err());
    app.login("admin", ADMIN_PASSWORD).await?;
    assert!(app.login("nobody", "whatever-password").await.is_err());

    let logins = entries(&app, "action=login").await?;
    let outcomes: Vec<&str> = logins.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["success", "failure", "success"], "newest first; an unknown user has no tenant to log to");
    for entry in &logins {
        assert_eq!(entry["actor"], json!({ "kind": "user", "id": admin_id }));
        assert_eq!(entry["target"], format!("user:{admin_id}"));
        assert_eq!(entry["source_ip"], "127.0.0.1");
        assert!(entry["request_id"].is_string());
    }

    let (agent_id, _) = app.pair_agent("vm-paired").await?;
    let paired = entries(&app, "action=pair").await?;
    assert_eq!(paired.len(), 1);
    assert_eq!(paired[0]["actor"], json!({ "kind": "agent", "id": agent_id }));
    assert_eq!(paired[0]["target"], format!("agent:{agent_id}"));
    assert_eq!(paired[0]["outcome"], "success");
    assert_eq!(paired[0]["data"]["hostname"], "vm-paired.test");
    let by_agents = entries(&app, "actor_kind=agent").await?;
    assert_eq!(ids(&by_agents), ids(&paired), "the actor filter");
    let codes = entries(&app, "action=create_pairing_code").await?;
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0]["actor"], json!({ "kind": "user", "id": admin_id }));
    app.stop().await
}

async fn filters_and_cursor_pagination_return_every_entry_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let before = walk(&app, "", 100).await?;
    assert_eq!(before.len(), 1, "the admin's login: {before:?}");

    // 120 entries, oldest first.
    let mut written = Vec::new();
    for i in 0..120 {
        let action = ["alpha", "beta", "gamma"][i % 3];
        let outcome = if i % 4 == 0 { Outcome::Failure } else { Outcome::Success };
        let actor = if i % 5 == 0 { Actor::supervisor() } else { Actor::system() };
        let entry = NewAuditEntry {
            tenant_id: app.tenant_id,
            actor: actor.clone(),
            action: action.into(),
            target: Some(format!("bot:{i}")),
            request_id: None,
            source_ip: None,
            outcome,
            data: json!({ "i": i }),
        };
        let id = app.store.append_audit(entry, app.clock.now()).await?;
        written.push(Written { i, id: id.to_string(), action, outcome, kind: actor.kind });
    }

    let everything = walk(&app, "", 7).await?;
    let walked = ids(&everything);
    assert_eq!(walked.len(), 121);
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 121, "no entry twice");
    assert!(walked.windows(2).all(|w| w[0] > w[1]), "newest first, strictly");
    let newest_first: Vec<String> = written.iter().rev().map(|w| w.id.clone()).collect();
    assert_eq!(walked[..120], newest_first[..], "every written entry, in order");
    assert_eq!(walked[120], ids(&before)[0]);
    assert_eq!(everything[0]["data"], json!({ "i": 119 }));

    let expect = |keep: fn(&Written) -> bool| -> Vec<String> {
        written.iter().rev().filter(|w| keep(w)).map(|w| w.id.clone()).collect()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("action=beta", expect(|w| w.action == "beta")),
        ("outcome=failure", expect(|w| w.outcome == Outcome::Failure)),
        ("actor_kind=supervisor", expect(|w| w.kind == ActorKind::Supervisor)),
        ("action=alpha&outcome=failure", expect(|w| w.action == "alpha" && w.outcome == Outcome::Failure)),
        (
            "action=gamma&actor_kind=supervisor&outcome=success",
            expect(|w| w.action == "gamma" && w.kind == ActorKind::Supervisor && w.outcome == Outcome::Success),
        ),
        ("target=bot:7", expect(|w| w.i == 7)),
        ("action=nothing-like-this", Vec::new()),
    ];
    for (query, expected) in cases {
        assert_eq!(ids(&walk(&app, query, 7).await?), expected, "{query}");
    }
    let successes = walk(&app, "outcome=success", 7).await?;
    assert_eq!(successes.len(), 90 + 1, "the admin's login succeeded too");

    // Bad paging parameters are refused, not guessed at.
    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=501", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("outcome=maybe", "invalid_query"),
        ("colour=blue", "invalid_query"),
    ] {
        let (status, body) = send(app.get(&format!("/api/v1/audit?{query}"))).await?;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
    app.stop().await
}

async fn the_audit_log_is_admin_read_only(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    for role in [Role::Viewer, Role::Operator] {
        let token = app.login_as(role).await?;
        let (status, body) = send(app.request_as(Method::GET, "/api/v1/audit", Some(&token))).await?;
        assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "{}", role.as_str());
    }
    let reader = app.api_token(&["audit:read"]).await?;
    let (status, _) = send(app.request_as(Method::GET, "/api/v1/audit", Some(&reader))).await?;
    assert_eq!(status, 200);

    // No route changes or deletes an entry: the route table has reads only under /audit.
    let audit_routes: Vec<(String, String)> = http::policy()
        .rules()
        .filter(|(_, path, _)| path.starts_with("/api/v1/audit"))
        .map(|(method, path, _)| (method.to_string(), path.to_owned()))
        .collect();
    assert_eq!(audit_routes, [("GET".to_owned(), "/api/v1/audit".to_owned())]);
    let before = entries(&app, "").await?;
    let id = before[0]["id"].as_str().unwrap_or_default();
    for (method, path) in [
        (Method::DELETE, "/api/v1/audit".to_owned()),
        (Method::POST, "/api/v1/audit".to_owned()),
        (Method::DELETE, format!("/api/v1/audit/{id}")),
        (Method::PATCH, format!("/api/v1/audit/{id}")),
    ] {
        let (status, body) = send(app.request(method.clone(), &path).json(&json!({}))).await?;
        assert!(matches!(status, 404 | 405), "{method} {path}: {status} {body}");
    }
    assert_eq!(ids(&entries(&app, "").await?), ids(&before), "the log is unchanged");
    app.stop().await
}
