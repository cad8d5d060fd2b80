//! API tokens: shown once, scoped, never beyond their creator's role (then or later), revoked
//! and expired at once, refused in query strings, and made from login sessions only.

use botmox_contract::auth::{Role, Scope};
use botmox_control_plane::{auth::credentials, store::NewApiToken};
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(a_token_secret_is_shown_once, scopes_limit_what_a_token_does, scopes_never_exceed_the_creators_role);
both_backends!(demoting_the_creator_demotes_their_tokens, revocation_is_effective_on_the_next_request);
both_backends!(tokens_in_the_query_string_are_refused, expired_tokens_are_refused, tokens_are_made_from_sessions_only);
both_backends!(bad_token_requests_create_nothing);

/// Creates a token with `session`; returns (status, body).
async fn create(app: &TestApp, session: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    send(app.request_as(Method::POST, "/api/v1/tokens", Some(session)).json(&body)).await
}

/// The ids of the tokens `GET path` lists for `credential`.
async fn listed_ids(app: &TestApp, path: &str, credential: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = send(app.request_as(Method::GET, path, Some(credential))).await?;
    anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    Ok(body.as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(str::to_owned)).collect())
}

async fn status_as(app: &TestApp, method: Method, path: &str, credential: &str) -> anyhow::Result<(u16, Value)> {
    let mut request = app.request_as(method.clone(), path, Some(credential));
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    send(request).await
}

async fn a_token_secret_is_shown_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let response = app
        .post("/api/v1/tokens", &json!({ "name": "ci deploy", "scopes": ["bots:read", "bots:control", "bots:read"] }))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str()?.to_owned();
    let created: Value = response.json().await?;
    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    let id = created["token"]["id"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("bmx_"), "{secret}");
    assert_eq!(secret.len(), 44);
    assert_eq!(location, format!("/api/v1/tokens/{id}"));
    assert_eq!(created["token"]["name"], "ci deploy");
    assert_eq!(created["token"]["scopes"], json!(["bots:read", "bots:control"]), "sorted, without duplicates");
    assert_eq!(created["token"]["expires_at"], Value::Null);
    assert_eq!(created["token"]["revoked_at"], Value::Null);
    assert_eq!(created["token"]["last_used_at"], Value::Null);

    let (status, _) = send(app.request_as(Method::GET, "/api/v1/bots", Some(&secret))).await?;
    assert_eq!(status, 200, "the secret works");

    let hash = credentials::hash(&secret);
    for path in ["/api/v1/tokens", "/api/v1/tokens?all=true"] {
        let (status, list) = send(app.get(path)).await?;
        assert_eq!(status, 200);
        let items = list.as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["id"], id.as_str());
        assert_eq!(items[0]["scopes"], created["token"]["scopes"]);
        assert!(items[0]["last_used_at"].is_string(), "the use was recorded: {list}");
        assert!(items[0].get("secret").is_none());
        let text = list.to_string();
        assert!(!text.contains(&secret) && !text.contains(&hash), "{path} leaks the secret");
        assert!(!text.contains(&secret["bmx_".len()..]));
    }
    app.stop().await
}

async fn scopes_limit_what_a_token_does(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let reader = app.api_token(&["bots:read"]).await?;
    let (status, list) = send(app.request_as(Method::GET, "/api/v1/bots", Some(&reader))).await?;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 0);
    let (status, body) =
        send(app.request_as(Method::POST, "/api/v1/bots", Some(&reader)).json(&crate::bots::spec("sneaky", agent.id)))
            .await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")));
    let (status, body) = send(app.request_as(Method::GET, "/api/v1/agents", Some(&reader))).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "scopes are not implied");
    let (_, list) = send(app.get("/api/v1/bots")).await?;
    assert_eq!(list["total"], 0, "the refused write created nothing");
    app.stop().await
}

async fn scopes_never_exceed_the_creators_role(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let operator = app.login_as(Role::Operator).await?;
    let viewer = app.login_as(Role::Viewer).await?;
    for scope in Scope::ALL {
        let (status, body) = create(&app, &operator, json!({ "name": "t", "scopes": [scope.as_str()] })).await?;
        let expected = if botmox_control_plane::auth::min_role(scope) <= Role::Operator { 201 } else { 403 };
        assert_eq!(status, expected, "operator asking for `{}`: {body}", scope.as_str());
    }
    let (status, body) = create(&app, &operator, json!({ "name": "t", "scopes": ["bots:read", "bots:write"] })).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "one scope too many refuses all");
    let (status, _) = create(&app, &viewer, json!({ "name": "t", "scopes": ["bots:control"] })).await?;
    assert_eq!(status, 403);
    let (status, _) = create(&app, &viewer, json!({ "name": "t", "scopes": ["bots:read"] })).await?;
    assert_eq!(status, 201);

    // Only the allowed ones exist: viewer's and operator's own lists, and the admin's view.
    assert_eq!(listed_ids(&app, "/api/v1/tokens", &viewer).await?.len(), 1);
    let operators = listed_ids(&app, "/api/v1/tokens", &operator).await?.len();
    let allowed = Scope::ALL.iter().filter(|s| botmox_control_plane::auth::min_role(**s) <= Role::Operator).count();
    assert_eq!(operators, allowed);
    assert_eq!(listed_ids(&app, "/api/v1/tokens?all=true", &app.token).await?.len(), allowed + 1);
    let (status, body) = send(app.request_as(Method::GET, "/api/v1/tokens?all=true", Some(&operator))).await?;
    assert_eq!(status, 403, "only admins list everyone's tokens: {body}");
    app.stop().await
}

async fn demoting_the_creator_demotes_their_tokens(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let body = json!({ "username": "deputy", "password": "deputy-password", "role": "admin" });
    let (status, deputy) = send(app.post("/api/v1/users", &body)).await?;
    assert_eq!(status, 201);
    let deputy_session = app.login("deputy", "deputy-password").await?;
    let (status, token) = create(&app, &deputy_session, json!({ "name": "all powers", "scopes": ["admin"] })).await?;
    assert_eq!(status, 201);
    let token = token["secret"].as_str().unwrap_or_default().to_owned();
    let (status, _) = status_as(&app, Method::GET, "/api/v1/users", &token).await?;
    assert_eq!(status, 200, "an admin's admin token manages users");

    let path = format!("/api/v1/users/{}", deputy["id"].as_str().unwrap_or_default());
    let (status, _) = send(app.patch(&path, &json!({ "role": "viewer" }))).await?;
    assert_eq!(status, 200);
    let (status, body) = status_as(&app, Method::GET, "/api/v1/users", &token).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "on the very next request");
    let (status, _) = status_as(&app, Method::GET, "/api/v1/secrets", &token).await?;
    assert_eq!(status, 403);
    let (status, _) = status_as(&app, Method::GET, "/api/v1/bots", &token).await?;
    assert_eq!(status, 200, "it keeps what a viewer may do");
    let (status, _) = status_as(&app, Method::GET, "/api/v1/users", &deputy_session).await?;
    assert_eq!(status, 403, "the session follows the new role too");
    app.stop().await
}

async fn revocation_is_effective_on_the_next_request(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let owner = app.login_as(Role::Operator).await?;
    let other = app.login_as(Role::Operator).await?;
    let (_, first) = create(&app, &owner, json!({ "name": "first", "scopes": ["bots:read"] })).await?;
    let (_, second) = create(&app, &owner, json!({ "name": "second", "scopes": ["bots:read"] })).await?;
    let secret = first["secret"].as_str().unwrap_or_default().to_owned();
    let path = format!("/api/v1/tokens/{}", first["token"]["id"].as_str().unwrap_or_default());
    assert_eq!(status_as(&app, Method::GET, "/api/v1/bots", &secret).await?.0, 200);

    // Someone else's token does not exist for a non-admin.
    let (status, body) = status_as(&app, Method::DELETE, &path, &other).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("token_not_found")));
    assert_eq!(status_as(&app, Method::GET, "/api/v1/bots", &secret).await?.0, 200, "still works");

    let (status, _) = status_as(&app, Method::DELETE, &path, &owner).await?;
    assert_eq!(status, 204);
    let (status, body) = status_as(&app, Method::GET, "/api/v1/bots", &secret).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (_, list) = send(app.request_as(Method::GET, "/api/v1/tokens", Some(&owner))).await?;
    let revoked = list.as_array().into_iter().flatten().find(|t| t["id"] == first["token"]["id"]).cloned();
    assert!(revoked.is_some_and(|t| t["revoked_at"].is_string()), "{list}");

    // An admin may revoke anyone's.
    let second_secret = second["secret"].as_str().unwrap_or_default().to_owned();
    let (status, _) =
        send(app.delete(&format!("/api/v1/tokens/{}", second["token"]["id"].as_str().unwrap_or_default()))).await?;
    assert_eq!(status, 204);
    assert_eq!(status_as(&app, Method::GET, "/api/v1/bots", &second_secret).await?.0, 401);
    app.stop().await
}

async fn tokens_in_the_query_string_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let secret = app.api_token(&["bots:read"]).await?;
    for key in ["access_token", "token", "api_key"] {
        let path = format!("/api/v1/bots?{key}={secret}");
        let (status, body) = send(app.request_as(Method::GET, &path, Some(&secret))).await?;
        assert_eq!((status, body["code"].as_str()), (400, Some("token_in_query")), "?{key}= with a valid header");
    }
    let (status, body) = send(app.client.get(app.url(&format!("/api/v1/bots?access_token={secret}")))).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("token_in_query")), "alone");
    let (status, _) = send(app.request_as(Method::GET, "/api/v1/bots", Some(&secret))).await?;
    assert_eq!(status, 200, "the header alone is fine");
    app.stop().await
}

async fn expired_tokens_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let now = app.clock.now();
    let admin_id = app.store.find_user_by_username("admin").await?.map(|r| r.user.id).unwrap_or_default();
    let mut secrets = Vec::new();
    for (name, expires_at) in
        [("expired", now - chrono::Duration::seconds(1)), ("live", now + chrono::Duration::hours(1))]
    {
        let secret = credentials::new_api_token();
        let new = NewApiToken {
            tenant_id: app.tenant_id,
            user_id: admin_id,
            name: name.into(),
            scopes: vec![Scope::BotsRead],
            expires_at: Some(expires_at),
            token_hash: credentials::hash(&secret),
        };
        app.store.create_api_token(new, now - chrono::Duration::hours(2)).await?;
        secrets.push(secret);
    }
    let (status, body) = status_as(&app, Method::GET, "/api/v1/bots", &secrets[0]).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(status_as(&app, Method::GET, "/api/v1/bots", &secrets[1]).await?.0, 200);

    // A ttl from the API becomes an expiry that far ahead.
    let (status, created) =
        send(app.post("/api/v1/tokens", &json!({ "name": "hour", "scopes": ["bots:read"], "ttl_seconds": 3600 })))
            .await?;
    assert_eq!(status, 201);
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(created["token"]["expires_at"].clone())?;
    let ahead = (expires - chrono::Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&ahead), "expires in {ahead} s");
    app.stop().await
}

async fn tokens_are_made_from_sessions_only(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin_token = app.api_token(&["admin"]).await?;
    let (status, body) = create(&app, &admin_token, json!({ "name": "child", "scopes": ["bots:read"] })).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (_, agent_token) = app.pair_agent("vm-1").await?;
    let (status, body) = create(&app, &agent_token, json!({ "name": "child", "scopes": ["bots:read"] })).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("wrong_credential_kind")));
    assert_eq!(listed_ids(&app, "/api/v1/tokens?all=true", &app.token).await?.len(), 1, "only the admin token");
    app.stop().await
}

async fn bad_token_requests_create_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let cases = [
        (json!({ "name": "t", "scopes": [] }), "validation_failed", "scopes"),
        (json!({ "name": "t", "scopes": ["bots:destroy"] }), "invalid_body", "scopes[0]"),
        (json!({ "name": "t", "scopes": ["bots:read"], "ttl_seconds": 5 }), "validation_failed", "ttl_seconds"),
        (json!({ "name": "t", "scopes": ["bots:read"], "ttl_seconds": -1 }), "invalid_body", "ttl_seconds"),
        (json!({ "name": "  ", "scopes": ["bots:read"] }), "validation_failed", "name"),
        (json!({ "name": "a\u{7}b", "scopes": ["bots:read"] }), "validation_failed", "name"),
        (json!({ "name": "x".repeat(101), "scopes": ["bots:read"] }), "validation_failed", "name"),
        (json!({ "name": "t", "scopes": ["bots:read"], "owner": "someone" }), "unknown_field", "owner"),
        (json!({ "scopes": ["bots:read"] }), "invalid_body", ""),
    ];
    for (body, code, field) in cases {
        let (status, problem) = send(app.post("/api/v1/tokens", &body)).await?;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
        if !field.is_empty() {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
    assert!(listed_ids(&app, "/api/v1/tokens?all=true", &app.token).await?.is_empty(), "nothing was created");
    app.stop().await
}
