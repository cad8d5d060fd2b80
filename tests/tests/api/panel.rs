//! The web panel as the server serves it (`http::panel`): the app at `/` and at client routes,
//! hashed assets cached for good and precompressed, `index.html` never cached, and nothing of
//! it in the way of the API's JSON 404 or the other routes. Without a built panel (`cargo build`
//! without Node) `/` says how to build it; `cargo xtask test` builds it first, so CI checks the
//! assets.

use botmox_e2e::{app::TestApp, db::Backend};
use reqwest::header;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_is_served_at_the_root_without_shadowing_the_api() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let get = |path: &str| app.client.get(app.url(path));

    let index = get("/").send().await?;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()[header::CACHE_CONTROL], "no-store");
    let csp = index.headers()[header::CONTENT_SECURITY_POLICY].to_str()?.to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = index.text().await?;

    // A client route gets the same page (the SPA routes it); a missing file does not.
    let route = get("/bots/0190b2a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b?state=running").send().await?;
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await?, html);
    for (path, status) in [("/api/v1/nope", 404), ("/api/nope", 404), ("/assets/gone-1234.js", 404)] {
        let response = get(path).send().await?;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json", "{path}");
    }
    assert_eq!(app.client.post(app.url("/bots")).send().await?.status(), 404, "only GET and HEAD reach the panel");
    assert_eq!(get("/healthz").send().await?.status(), 200);
    assert_eq!(get("/docs/").send().await?.status(), 200);
    assert_eq!(get("/api/v1/openapi.json").send().await?.status(), 200);

    let Some(entry) = html.split("src=\"/").nth(1).and_then(|rest| rest.split('"').next()) else {
        assert!(html.contains("not built"), "an unbuilt panel says how to build it: {html}");
        return app.stop().await;
    };
    let asset =
        app.client.get(app.url(&format!("/{entry}"))).header(header::ACCEPT_ENCODING, "gzip, br").send().await?;
    assert_eq!(asset.status(), 200, "{entry}");
    assert_eq!(asset.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert_eq!(asset.headers()[header::CONTENT_ENCODING], "br");
    assert!(asset.headers()[header::CONTENT_TYPE].to_str()?.contains("javascript"));
    let etag = asset.headers()[header::ETAG].clone();
    let again = app
        .client
        .get(app.url(&format!("/{entry}")))
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    let plain =
        app.client.get(app.url(&format!("/{entry}"))).header(header::ACCEPT_ENCODING, "identity").send().await?;
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    assert!(plain.bytes().await?.len() > 1000);
    app.stop().await
}
