use botmox_contract::auth::Role;
use botmox_e2e::{
    app::{send, TestApp, ADMIN_PASSWORD},
    both_backends,
    db::Backend,
};
use serde_json::json;

both_backends!(login_gives_a_token_for_the_api, wrong_credentials_are_refused, routes_need_a_valid_bearer_token);
both_backends!(viewers_read_but_cannot_change_bots);

async fn login_gives_a_token_for_the_api(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (status, body) = send(
        app.client.post(app.url("/api/v1/auth/login")).json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["username"], "admin");
    assert_eq!(body["user"]["role"], "admin");
    let token = body["access_token"].as_str().unwrap_or_default();
    let (status, me) = send(app.client.get(app.url("/api/v1/auth/me")).bearer_auth(token)).await?;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "admin");
    app.stop().await
}

async fn wrong_credentials_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    for (username, password) in [("admin", "wrong-password"), ("nobody", ADMIN_PASSWORD), ("", "")] {
        let (status, body) = send(
            app.client.post(app.url("/api/v1/auth/login")).json(&json!({"username": username, "password": password})),
        )
        .await?;
        assert_eq!(status, 401, "{username}");
        assert_eq!(body["code"], "unauthorized");
        assert_eq!(body["detail"], "wrong username or password");
    }
    app.stop().await
}

async fn routes_need_a_valid_bearer_token(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let forged = format!("{}x", app.token);
    let cases = [
        app.client.get(app.url("/api/v1/bots")),
        app.client.get(app.url("/api/v1/bots")).header("authorization", "Basic YWRtaW46eA=="),
        app.client.get(app.url("/api/v1/bots")).bearer_auth("not-a-token"),
        app.client.get(app.url("/api/v1/bots")).bearer_auth(forged),
        app.client.get(app.url("/api/v1/auth/me")),
    ];
    for request in cases {
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["code"], "unauthorized");
    }
    app.stop().await
}

async fn viewers_read_but_cannot_change_bots(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (status, bot) = send(app.post("/api/v1/bots", &crate::bots::spec("reader-test", agent.id))).await?;
    assert_eq!(status, 201);
    let viewer = app.login_as(Role::Viewer).await?;
    let (status, _) = send(app.client.get(app.url("/api/v1/bots")).bearer_auth(&viewer)).await?;
    assert_eq!(status, 200);
    let (status, body) = send(
        app.client.post(app.url("/api/v1/bots")).bearer_auth(&viewer).json(&crate::bots::spec("new-one", agent.id)),
    )
    .await?;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "insufficient_scope");
    let path = format!("/api/v1/bots/{}", bot["id"].as_str().unwrap_or_default());
    let (status, _) = send(app.client.delete(app.url(&path)).bearer_auth(&viewer)).await?;
    assert_eq!(status, 403);
    let (status, _) = send(app.get(&path)).await?;
    assert_eq!(status, 200, "the viewer's refused delete changed nothing");
    app.stop().await
}
