use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::json;

both_backends!(admins_manage_users, a_tenant_always_keeps_an_enabled_admin, racing_demotions_keep_an_admin);
both_backends!(usernames_are_one_case_blind_namespace);

async fn admins_manage_users(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let body = json!({"username": "ana", "email": "ana@example.com", "password": "ana-password", "role": "operator"});
    let response = app.post("/api/v1/users", &body).send().await?;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str()?.to_owned();
    let ana: serde_json::Value = response.json().await?;
    assert_eq!((ana["role"].as_str(), ana["disabled"].as_bool()), (Some("operator"), Some(false)));
    assert!(ana.get("password").is_none() && ana.get("password_hash").is_none());
    assert_eq!(location, format!("/api/v1/users/{}", ana["id"].as_str().unwrap_or_default()));
    let (status, problem) = send(app.post("/api/v1/users", &body)).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("username_unavailable")));
    for (bad, field) in [
        (json!({"username": "a b", "password": "long-enough", "role": "viewer"}), "username"),
        (json!({"username": "bob", "password": "short", "role": "viewer"}), "password"),
        (json!({"username": "bob", "email": "not-an-email", "password": "long-enough", "role": "viewer"}), "email"),
    ] {
        let (status, problem) = send(app.post("/api/v1/users", &bad)).await?;
        assert_eq!((status, problem["field"].as_str()), (422, Some(field)), "{problem}");
    }
    let (status, problem) =
        send(app.post("/api/v1/users", &json!({"username": "bob", "password": "long-enough", "role": "root"}))).await?;
    assert_eq!(status, 422, "{problem}");

    let (status, promoted) = send(app.patch(&location, &json!({"role": "admin", "email": null}))).await?;
    assert_eq!(status, 200);
    assert_eq!(promoted["role"], "admin");
    let (_, list) = send(app.get("/api/v1/users")).await?;
    let names: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names, ["admin", "ana"]);
    let (status, _) = send(app.delete(&location)).await?;
    assert_eq!(status, 204);
    assert!(app.login("ana", "ana-password").await.is_err(), "a deleted user cannot log in");
    app.stop().await
}

async fn a_tenant_always_keeps_an_enabled_admin(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin = app.store.find_user_by_username("admin").await?.map(|r| r.user.id).unwrap_or_default();
    let path = format!("/api/v1/users/{admin}");
    for change in [json!({"role": "operator"}), json!({"disabled": true})] {
        let (status, problem) = send(app.patch(&path, &change)).await?;
        assert_eq!((status, problem["code"].as_str()), (409, Some("last_admin")), "{change}");
    }
    let (status, problem) = send(app.delete(&path)).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("last_admin")));
    let (_, me) = send(app.get("/api/v1/auth/me")).await?;
    assert_eq!((me["role"].as_str(), me["disabled"].as_bool()), (Some("admin"), Some(false)));
    // A disabled second admin does not count.
    let (_, other) =
        send(app.post("/api/v1/users", &json!({"username": "b", "password": "b-password", "role": "admin"}))).await?;
    let other_path = format!("/api/v1/users/{}", other["id"].as_str().unwrap_or_default());
    let (status, _) = send(app.patch(&other_path, &json!({"disabled": true}))).await?;
    assert_eq!(status, 200);
    let (status, _) = send(app.patch(&path, &json!({"role": "viewer"}))).await?;
    assert_eq!(status, 409);
    app.stop().await
}

async fn racing_demotions_keep_an_admin(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let body = json!({"username": "second", "password": "second-pw", "role": "admin"});
    let (_, second) = send(app.post("/api/v1/users", &body)).await?;
    let second_token = app.login("second", "second-pw").await?;
    let first = app.store.find_user_by_username("admin").await?.map(|r| r.user.id).unwrap_or_default();
    // The two admins demote each other at the same moment.
    let demote = |id: String, token: &str| {
        app.request_as(Method::PATCH, &format!("/api/v1/users/{id}"), Some(token)).json(&json!({"role": "viewer"}))
    };
    let (a, b) = tokio::join!(
        send(demote(second["id"].as_str().unwrap_or_default().to_owned(), &app.token)),
        send(demote(first.to_string(), &second_token))
    );
    let mut statuses = [a?.0, b?.0];
    statuses.sort_unstable();
    assert_eq!(statuses[0], 200, "one demotion wins: {statuses:?}");
    // The loser is refused: as the last admin (409), or because its actor was demoted first (403).
    assert!(statuses[1] == 409 || statuses[1] == 403, "{statuses:?}");
    assert_eq!(app.store.count_active_admins(app.tenant_id).await?, 1);
    app.stop().await
}

async fn usernames_are_one_case_blind_namespace(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (_, other_admin) = app.second_tenant().await?;
    let body = |name: &str| json!({"username": name, "password": "namespace-password", "role": "viewer"});
    assert_eq!(send(app.post("/api/v1/users", &body("alice"))).await?.0, 201);

    // The other tenant cannot take it, and learns nothing about who has it: its answer is the
    // very one tenant A's admin gets for its own user.
    let create_b = |name: &str| app.request_as(Method::POST, "/api/v1/users", Some(&other_admin)).json(&body(name));
    let (status, theirs) = send(create_b("alice")).await?;
    let (_, ours) = send(app.post("/api/v1/users", &body("alice"))).await?;
    assert_eq!(status, 409);
    assert_eq!(theirs["code"], "username_unavailable");
    assert_eq!((&theirs["code"], &theirs["detail"]), (&ours["code"], &ours["detail"]));
    let detail = theirs["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("alice") && !detail.contains("taken"), "{detail}");

    // Case does not make another name, in either tenant; login ignores it.
    for name in ["Alice", "ALICE"] {
        assert_eq!(send(app.post("/api/v1/users", &body(name))).await?.1["code"], "username_unavailable");
        assert_eq!(send(create_b(name)).await?.1["code"], "username_unavailable");
    }
    app.login("ALICE", "namespace-password").await?;
    let (_, users) = send(app.get("/api/v1/users")).await?;
    let alices = users
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["username"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("alice")));
    assert_eq!(alices.count(), 1);
    app.stop().await
}
