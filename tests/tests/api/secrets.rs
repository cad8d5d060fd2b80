//! The secrets vault through the API: write-only values, encrypted at rest under the master key
//! with the tenant and name bound in, names and times listed, bad input refused.

use botmox_contract::auth::Role;
use botmox_control_plane::secrets::vault;
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

both_backends!(secret_values_never_come_back, bad_secret_input_is_refused, only_admins_touch_secrets);

const VALUE: &str = "hunter2-farmer-eu-01-Zq8vT3";
const NEW_VALUE: &str = "correct-horse-battery-staple-77";

/// Every response body of a scenario, to search for leaks at the end.
#[derive(Default)]
struct Recorder {
    bodies: Vec<String>,
}

impl Recorder {
    async fn send(&mut self, request: RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await?;
        self.bodies.push(format!("{headers}\n{text}"));
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
        Ok((status, body))
    }
}

fn put(app: &TestApp, name: &str, value: &str) -> RequestBuilder {
    app.request(Method::PUT, &format!("/api/v1/secrets/{name}")).json(&json!({ "value": value }))
}

async fn secret_values_never_come_back(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let mut seen = Recorder::default();

    let (status, created) = seen.send(put(&app, "farmer-password", VALUE)).await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "farmer-password");
    let mut keys: Vec<&String> = created.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    keys.sort();
    assert_eq!(keys, ["created_at", "name", "updated_at"], "metadata only");
    let (status, replaced) = seen.send(put(&app, "farmer-password", NEW_VALUE)).await?;
    assert_eq!(status, 200, "a second PUT replaces: {replaced}");
    assert_eq!(replaced["created_at"], created["created_at"]);
    let (created_at, updated_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (
        serde_json::from_value(replaced["created_at"].clone())?,
        serde_json::from_value(replaced["updated_at"].clone())?,
    );
    assert!(updated_at >= created_at);

    let (status, list) = seen.send(app.get("/api/v1/secrets")).await?;
    assert_eq!(status, 200);
    assert_eq!(list, json!([replaced]), "names and times, nothing else");

    // A bot names the secret; its definition carries the name, never the value.
    let agent = app.create_agent("vm-1").await?;
    let mut spec = crate::bots::spec("farmer-eu-01", agent.id);
    spec["exec"]["secret_env"] = json!({ "ACCOUNT_PASSWORD": "farmer-password" });
    let (status, bot) = seen.send(app.post("/api/v1/bots", &spec)).await?;
    assert_eq!(status, 201, "{bot}");
    seen.send(app.get(&format!("/api/v1/bots/{}", bot["id"].as_str().unwrap_or_default()))).await?;
    seen.send(app.get("/api/v1/bots")).await?;
    let (status, audit) = seen.send(app.get("/api/v1/audit?action=put_secret")).await?;
    assert_eq!(status, 200);
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "both writes are audited: {audit}");
    seen.send(app.get("/api/v1/audit")).await?;
    seen.send(app.get("/api/v1/openapi.json")).await?;

    // At rest: only ciphertext, which the master key opens, for this tenant and name only.
    let sealed = app.store.all_sealed_secrets().await?;
    assert_eq!(sealed.len(), 1);
    let secret = &sealed[0];
    assert_eq!((secret.tenant_id, secret.name.as_str()), (app.tenant_id, "farmer-password"));
    assert_eq!(secret.nonce.len(), 24, "XChaCha20's 192-bit nonce");
    for value in [VALUE, NEW_VALUE] {
        assert!(!secret.ciphertext.windows(value.len()).any(|w| w == value.as_bytes()), "plaintext at rest");
    }
    let key = app.state.master_key.as_deref().ok_or_else(|| anyhow::anyhow!("the test app has a master key"))?;
    assert_eq!(vault::open(key, secret)?, NEW_VALUE);
    let mut moved = secret.clone();
    moved.name = "other-name".into();
    assert!(vault::open(key, &moved).is_err(), "the name is bound in: a ciphertext cannot be moved");
    let mut moved = secret.clone();
    moved.tenant_id = uuid::Uuid::now_v7();
    assert!(vault::open(key, &moved).is_err(), "so is the tenant");

    let (status, _) = seen.send(app.delete("/api/v1/secrets/farmer-password")).await?;
    assert_eq!(status, 204);
    let (status, body) = seen.send(app.delete("/api/v1/secrets/farmer-password")).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("secret_not_found")));
    let (_, list) = seen.send(app.get("/api/v1/secrets")).await?;
    assert_eq!(list, json!([]));
    assert!(app.store.all_sealed_secrets().await?.is_empty());

    assert_eq!(seen.bodies.len(), 12, "every response was searched");
    for body in &seen.bodies {
        for value in [VALUE, NEW_VALUE] {
            assert!(!body.contains(value), "a response leaked the secret value: {body}");
        }
    }
    app.stop().await
}

async fn bad_secret_input_is_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let too_long = "n".repeat(65);
    let cases = [
        ("-leading-dash", json!({ "value": "v" }), 422, "validation_failed", "name"),
        ("has%20space", json!({ "value": "v" }), 422, "validation_failed", "name"),
        ("semi;colon", json!({ "value": "v" }), 422, "validation_failed", "name"),
        (too_long.as_str(), json!({ "value": "v" }), 422, "validation_failed", "name"),
        ("good-name", json!({ "value": "" }), 422, "validation_failed", "value"),
        ("good-name", json!({ "value": "x".repeat(64 * 1024 + 1) }), 422, "validation_failed", "value"),
        ("good-name", json!({ "value": 42 }), 422, "invalid_body", "value"),
        ("good-name", json!({ "value": "v", "owner": "me" }), 422, "unknown_field", "owner"),
        ("good-name", json!({}), 422, "invalid_body", ""),
    ];
    for (name, body, status, code, field) in cases {
        let (got, problem) = send(app.request(Method::PUT, &format!("/api/v1/secrets/{name}")).json(&body)).await?;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{name}: {problem}");
        if !field.is_empty() {
            assert_eq!(problem["field"], field, "{name}: {problem}");
        }
    }
    // Past the server's body limit (256 KiB) the body is not even read.
    let (status, problem) = send(put(&app, "good-name", &"x".repeat(300 * 1024))).await?;
    assert_eq!((status, problem["code"].as_str()), (413, Some("body_too_large")));
    let (_, list) = send(app.get("/api/v1/secrets")).await?;
    assert_eq!(list, json!([]), "nothing was stored");

    // The largest value allowed is exactly 64 KiB.
    let (status, _) = send(put(&app, "good-name", &"x".repeat(64 * 1024))).await?;
    assert_eq!(status, 201);
    app.stop().await
}

async fn only_admins_touch_secrets(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (status, _) = send(put(&app, "kept", VALUE)).await?;
    assert_eq!(status, 201);
    let operator = app.login_as(Role::Operator).await?;
    let requests = [
        app.request_as(Method::PUT, "/api/v1/secrets/kept", Some(&operator)).json(&json!({ "value": "overwritten" })),
        app.request_as(Method::PUT, "/api/v1/secrets/new-one", Some(&operator)).json(&json!({ "value": "x" })),
        app.request_as(Method::DELETE, "/api/v1/secrets/kept", Some(&operator)),
        app.request_as(Method::GET, "/api/v1/secrets", Some(&operator)),
    ];
    for request in requests {
        let (status, body) = send(request).await?;
        assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")));
    }
    let sealed = app.store.all_sealed_secrets().await?;
    assert_eq!(sealed.len(), 1, "nothing created or deleted");
    let key = app.state.master_key.as_deref().ok_or_else(|| anyhow::anyhow!("no master key"))?;
    assert_eq!(vault::open(key, &sealed[0])?, VALUE, "nor overwritten");
    app.stop().await
}
