//! Pairing and agent tokens: single-use expiring codes, the identity a code hands out, the
//! agent token's narrow powers, staged rotation, revocation, rate limits and bad requests.

use botmox_control_plane::{auth::credentials, store::NewPairingCode};
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::{header, Method};
use serde_json::{json, Value};

use crate::sessions::client_from;

both_backends!(a_code_pairs_one_agent_once, unknown_malformed_and_expired_codes_are_refused);
both_backends!(pairing_is_rate_limited, agent_token_rotation_is_staged, revoking_an_agent_is_immediate);
both_backends!(bad_pair_requests_create_no_agent, racing_pairs_with_one_code_make_one_agent);

/// A well-formed pair request for `code`.
fn pair_body(code: &str, hostname: &str) -> Value {
    json!({ "code": code, "hostname": hostname, "os": "windows", "arch": "x86_64", "version": "0.1.0" })
}

async fn pair(client: &reqwest::Client, app: &TestApp, body: &Value) -> anyhow::Result<(u16, Value)> {
    send(client.post(app.url("/api/v1/agents/pair")).json(body)).await
}

/// Creates a pairing code as the admin; returns the response body.
async fn new_code(app: &TestApp, body: Value) -> anyhow::Result<Value> {
    let (status, code) = send(app.post("/api/v1/agents/pairing-codes", &body)).await?;
    anyhow::ensure!(status == 201, "pairing code answered {status}: {code}");
    Ok(code)
}

async fn agent_count(app: &TestApp) -> anyhow::Result<usize> {
    let (_, agents) = send(app.get("/api/v1/agents")).await?;
    Ok(agents.as_array().map_or(0, Vec::len))
}

async fn as_agent(app: &TestApp, method: Method, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    send(app.request_as(method, path, Some(token))).await
}

async fn a_code_pairs_one_agent_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let created = new_code(&app, json!({ "name": "vm-eu-1", "labels": { "region": "eu", "tier": "gold" } })).await?;
    let code = created["code"].as_str().unwrap_or_default().to_owned();
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 3, "{code}");
    assert!(
        groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| b"ABCDEFGHJKMNPQRSTVWXYZ23456789".contains(&b))),
        "{code} is made of unambiguous capitals and digits"
    );
    assert_eq!(created["command_line"], format!("botmox-agent pair --server {} --code {code}", app.base_url));
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(created["expires_at"].clone())?;
    let ahead = (expires - chrono::Utc::now()).num_seconds();
    assert!((890..=900).contains(&ahead), "a code lives 15 minutes by default, this one {ahead} s");

    // Typed sloppily: lower case, spaces for dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let mut body = pair_body(&typed, "WIN-FARM-01");
    body["labels"] = json!({ "region": "us", "gpu": "none" });
    let (status, paired) = pair(&app.client, &app, &body).await?;
    assert_eq!(status, 201, "{paired}");
    let token = paired["agent_token"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("bmxa_"), "{token}");
    assert_eq!(paired["server_settings"]["heartbeat_interval_s"], 5);

    let (status, me) = as_agent(&app, Method::GET, "/api/v1/agent/self", &token).await?;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], paired["agent_id"]);
    assert_eq!(me["name"], "vm-eu-1", "the code's name wins over the hostname");
    assert_eq!(me["hostname"], "WIN-FARM-01");
    assert_eq!(me["os"], "windows");
    assert_eq!(me["version"], "0.1.0");
    assert_eq!(me["labels"], json!({ "region": "eu", "tier": "gold", "gpu": "none" }), "the code's labels win");
    assert_eq!(me["status"], "pending");

    // The agent token is good for agent things only.
    for (method, path) in
        [(Method::GET, "/api/v1/bots"), (Method::GET, "/api/v1/agents"), (Method::GET, "/api/v1/auth/me")]
    {
        let (status, body) = as_agent(&app, method, path, &token).await?;
        assert_eq!((status, body["code"].as_str()), (403, Some("wrong_credential_kind")), "{path}");
    }

    let (status, body) = pair(&app.client, &app, &pair_body(&code, "thief")).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("pairing_code_used")));
    assert_eq!(body["field"], "code");
    assert!(body["hint"].as_str().is_some_and(|h| h.contains("pairing-codes")), "{body}");
    assert_eq!(agent_count(&app).await?, 1);
    app.stop().await
}

async fn unknown_malformed_and_expired_codes_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let now = app.clock.now();
    let expired = credentials::new_pairing_code();
    let canonical = credentials::normalize_pairing_code(&expired).unwrap_or_default();
    app.store
        .create_pairing_code(
            NewPairingCode {
                tenant_id: app.tenant_id,
                code_hash: credentials::hash(&canonical),
                name: None,
                labels: Default::default(),
                created_by: None,
                expires_at: now - chrono::Duration::seconds(1),
            },
            now - chrono::Duration::minutes(16),
        )
        .await?;
    let cases = [
        (credentials::new_pairing_code(), 400, "pairing_code_invalid"),
        ("hello".to_owned(), 400, "pairing_code_invalid"),
        ("K7QX-M2PD-9HF".to_owned(), 400, "pairing_code_invalid"),
        ("K7QX-M2PD-9HF0".to_owned(), 400, "pairing_code_invalid"),
        (String::new(), 400, "pairing_code_invalid"),
        (expired.clone(), 410, "pairing_code_expired"),
    ];
    for (code, status, problem) in cases {
        let (got, body) = pair(&app.client, &app, &pair_body(&code, "host-1")).await?;
        assert_eq!((got, body["code"].as_str()), (status, Some(problem)), "code `{code}`: {body}");
    }
    assert_eq!(agent_count(&app).await?, 0);
    app.stop().await
}

async fn pairing_is_rate_limited(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let code = new_code(&app, json!({})).await?["code"].as_str().unwrap_or_default().to_owned();
    let guesser = client_from(4)?;
    let guesses: Vec<Value> = (0..10).map(|_| pair_body(&credentials::new_pairing_code(), "guesser")).collect();
    for result in futures::future::join_all(guesses.iter().map(|body| pair(&guesser, &app, body))).await {
        let (status, body) = result?;
        assert_eq!((status, body["code"].as_str()), (400, Some("pairing_code_invalid")));
    }
    let response = guesser.post(app.url("/api/v1/agents/pair")).json(&pair_body(&code, "guesser")).send().await?;
    assert_eq!(response.status(), 429, "the eleventh attempt is refused, even with a good code");
    let retry_after: u64 =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(response.json::<Value>().await?["code"], "rate_limited");

    // The refused attempt did not burn the code; another address pairs with it.
    let (status, body) = pair(&client_from(5)?, &app, &pair_body(&code, "real-host")).await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(agent_count(&app).await?, 1);
    app.stop().await
}

async fn agent_token_rotation_is_staged(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (agent_id, old) = app.pair_agent("vm-rotate").await?;
    let (status, rotated) = as_agent(&app, Method::POST, "/api/v1/agent/token/rotate", &old).await?;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["agent_token"].as_str().unwrap_or_default().to_owned();
    assert!(new.starts_with("bmxa_") && new != old);

    // Until the new token is used, the old one keeps working (the agent may not have saved it).
    for _ in 0..2 {
        assert_eq!(as_agent(&app, Method::GET, "/api/v1/agent/self", &old).await?.0, 200);
    }
    let (status, me) = as_agent(&app, Method::GET, "/api/v1/agent/self", &new).await?;
    assert_eq!(status, 200);
    assert_eq!(me["id"], agent_id.to_string());
    let (status, body) = as_agent(&app, Method::GET, "/api/v1/agent/self", &old).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "the first use of the new one retires the old"
    );
    assert_eq!(as_agent(&app, Method::GET, "/api/v1/agent/self", &new).await?.0, 200);
    app.stop().await
}

async fn revoking_an_agent_is_immediate(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-doomed").await?;
    let (_, staged) = as_agent(&app, Method::POST, "/api/v1/agent/token/rotate", &token).await?;
    let staged = staged["agent_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(as_agent(&app, Method::GET, "/api/v1/agent/self", &token).await?.0, 200);

    let (status, revoked) = send(app.post(&format!("/api/v1/agents/{agent_id}/revoke"), &json!({}))).await?;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    for credential in [&token, &staged] {
        let (status, body) = as_agent(&app, Method::GET, "/api/v1/agent/self", credential).await?;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "current and staged tokens die");
        let (status, _) = as_agent(&app, Method::POST, "/api/v1/agent/token/rotate", credential).await?;
        assert_eq!(status, 401, "a revoked agent cannot mint itself a new token");
    }
    let (status, agent) = send(app.get(&format!("/api/v1/agents/{agent_id}"))).await?;
    assert_eq!(status, 200);
    assert_eq!(agent["status"], "revoked");
    app.stop().await
}

async fn bad_pair_requests_create_no_agent(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let code = new_code(&app, json!({ "name": "vm-1" })).await?["code"].as_str().unwrap_or_default().to_owned();
    let good = pair_body(&code, "host-1");
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases = [
        (with("hostname", json!("")), "validation_failed", "hostname"),
        (with("hostname", json!("   ")), "validation_failed", "hostname"),
        (with("hostname", json!("host\n1")), "validation_failed", "hostname"),
        (with("os", json!("win\u{1b}[31m")), "validation_failed", "os"),
        (with("version", json!("v".repeat(65))), "validation_failed", "version"),
        (with("labels", json!({ "bad key": "x" })), "validation_failed", "labels.bad key"),
        (with("shell", json!("/bin/sh")), "unknown_field", "shell"),
    ];
    for (body, problem, field) in cases {
        let (status, answer) = pair(&app.client, &app, &body).await?;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["code"], problem, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    assert_eq!(agent_count(&app).await?, 0, "no agent was created");
    let (status, paired) = pair(&app.client, &app, &good).await?;
    assert_eq!(status, 201, "the code is still unused: {paired}");
    assert_eq!(agent_count(&app).await?, 1);
    app.stop().await
}

async fn racing_pairs_with_one_code_make_one_agent(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let code = new_code(&app, json!({})).await?["code"].as_str().unwrap_or_default().to_owned();
    let bodies: Vec<Value> = (0..8).map(|i| pair_body(&code, &format!("host-{i}"))).collect();
    let mut statuses = Vec::new();
    for result in futures::future::join_all(bodies.iter().map(|body| pair(&app.client, &app, body))).await {
        let (status, body) = result?;
        if status != 201 {
            assert_eq!(body["code"], "pairing_code_used", "{body}");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409], "a code pairs exactly one host");
    assert_eq!(agent_count(&app).await?, 1, "the losers left no half-made agent behind");
    app.stop().await
}
