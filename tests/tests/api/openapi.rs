//! The OpenAPI document is generated from the router, and the docs page is served from
//! embedded assets only.

use botmox_e2e::{
    app::{send, TestApp},
    db::Backend,
};

#[tokio::test]
async fn openapi_lists_every_route_and_docs_need_no_internet() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let (status, doc) = send(app.client.get(app.url("/api/v1/openapi.json"))).await?;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, method) in [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/me", "get"),
        ("/api/v1/bots", "get"),
        ("/api/v1/bots", "post"),
        ("/api/v1/bots/{id}", "get"),
        ("/api/v1/bots/{id}", "patch"),
        ("/api/v1/bots/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from OpenAPI");
    }
    for schema in ["Bot", "BotSpec", "BotList", "Problem", "LoginRequest"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // Every documented route exists, and every one but login and the probes refuses a request
    // without a token: the API is never open.
    let public = botmox_control_plane::auth::policy::PUBLIC_ROUTES;
    for (path, item) in &paths {
        let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        for method in item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let (status, body) = send(app.client.request(method.clone(), app.url(&concrete))).await?;
            assert_ne!(body["code"], "route_not_found", "{method} {path}");
            if !public.iter().any(|(m, p)| *m == method.as_str() && p == path) {
                assert_eq!(status, 401, "{method} {path} must need a token");
            }
        }
    }

    let response = app.client.get(app.url("/docs/")).send().await?;
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let html = response.text().await?;
    assert!(html.contains("swagger"), "the docs page is Swagger UI");
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        let response = app.client.get(app.url(&format!("/docs/{asset}"))).send().await?;
        assert_eq!(response.status(), 200, "{asset} is embedded");
        let text = response.text().await?;
        assert!(!text.contains("cdn.jsdelivr") && !text.contains("unpkg.com"), "{asset} loads nothing from a CDN");
    }
    let initializer = app.client.get(app.url("/docs/swagger-initializer.js")).send().await?.text().await?;
    assert!(initializer.contains("/api/v1/openapi.json"));
    app.stop().await
}
