//! Tenant isolation in the list endpoints: two tenants, each with bots, agents, users, tokens,
//! secrets and audit entries, and neither sees a single row of the other.

use std::collections::BTreeSet;

use botmox_contract::auth::Role;
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(list_endpoints_show_only_your_tenant);

/// What one tenant made, by list endpoint.
#[derive(Debug, Default)]
struct Made {
    bots: BTreeSet<String>,
    agents: BTreeSet<String>,
    users: BTreeSet<String>,
    tokens: BTreeSet<String>,
    secrets: BTreeSet<String>,
    audit: BTreeSet<String>,
}

async fn call(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut request = app.request_as(method.clone(), path, Some(token));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, answer) = send(request).await?;
    anyhow::ensure!((200..300).contains(&status), "{method} {path} answered {status}: {answer}");
    Ok(answer)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

/// Fills a tenant through its admin's session `admin`: an agent paired with a code, two bots,
/// a user, a token, a secret.
async fn populate(app: &TestApp, admin: &str, prefix: &str) -> anyhow::Result<Made> {
    let mut made = Made::default();
    let code = call(app, admin, Method::POST, "/api/v1/agents/pairing-codes", Some(json!({ "name": prefix }))).await?;
    let paired = send(app.client.post(app.url("/api/v1/agents/pair")).json(&json!({
        "code": code["code"], "hostname": format!("{prefix}.test"), "os": "linux", "arch": "x86_64", "version": "t",
    })))
    .await?
    .1;
    let agent_id = paired["agent_id"].as_str().unwrap_or_default().to_owned();
    made.agents.insert(agent_id.clone());
    for n in 1..=2 {
        let spec = json!({ "name": format!("{prefix}-bot-{n}"), "agent_id": agent_id, "exec": { "program": "true" } });
        made.bots.insert(id_of(&call(app, admin, Method::POST, "/api/v1/bots", Some(spec)).await?));
    }
    let user = json!({ "username": format!("{prefix}-viewer"), "password": "viewer-password", "role": "viewer" });
    made.users.insert(id_of(&call(app, admin, Method::POST, "/api/v1/users", Some(user)).await?));
    made.users.insert(id_of(&call(app, admin, Method::GET, "/api/v1/auth/me", None).await?));
    let token = json!({ "name": format!("{prefix} token"), "scopes": ["bots:read"] });
    made.tokens.insert(id_of(&call(app, admin, Method::POST, "/api/v1/tokens", Some(token)).await?["token"]));
    let secret = format!("/api/v1/secrets/{prefix}-password");
    call(app, admin, Method::PUT, &secret, Some(json!({ "value": format!("{prefix}-value") }))).await?;
    made.secrets.insert(format!("{prefix}-password"));
    // Same-named secrets are separate: each tenant has its own namespace.
    call(app, admin, Method::PUT, "/api/v1/secrets/shared-name", Some(json!({ "value": format!("{prefix}-v") })))
        .await?;
    made.secrets.insert("shared-name".into());
    Ok(made)
}

/// What `admin` sees in every list endpoint.
async fn seen_by(app: &TestApp, admin: &str) -> anyhow::Result<Made> {
    let ids = |list: &Value| -> BTreeSet<String> { list.as_array().into_iter().flatten().map(id_of).collect() };
    let bots = call(app, admin, Method::GET, "/api/v1/bots", None).await?;
    let secrets = call(app, admin, Method::GET, "/api/v1/secrets", None).await?;
    let audit = call(app, admin, Method::GET, "/api/v1/audit?limit=500", None).await?;
    Ok(Made {
        bots: ids(&bots["items"]),
        agents: ids(&call(app, admin, Method::GET, "/api/v1/agents", None).await?),
        users: ids(&call(app, admin, Method::GET, "/api/v1/users", None).await?),
        tokens: ids(&call(app, admin, Method::GET, "/api/v1/tokens?all=true", None).await?),
        secrets: secrets
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect(),
        audit: ids(&audit["items"]),
    })
}

async fn list_endpoints_show_only_your_tenant(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (_, second) = app.second_tenant().await?;
    let first_made = populate(&app, &app.token, "first").await?;
    let second_made = populate(&app, &second, "second").await?;
    // The viewer of the first tenant exists there (store-made users count too).
    app.login_as(Role::Viewer).await?;

    let first = seen_by(&app, &app.token).await?;
    let theirs = seen_by(&app, &second).await?;

    assert_eq!(first.bots, first_made.bots);
    assert_eq!(first.agents, first_made.agents);
    assert!(first.users.is_superset(&first_made.users));
    assert_eq!(first.users.len(), first_made.users.len() + 1, "and the store-made viewer: {first:?}");
    assert_eq!(first.tokens, first_made.tokens);
    assert_eq!(first.secrets, first_made.secrets);
    assert_eq!(theirs.bots, second_made.bots);
    assert_eq!(theirs.agents, second_made.agents);
    assert_eq!(theirs.users, second_made.users);
    assert_eq!(theirs.tokens, second_made.tokens);
    assert_eq!(theirs.secrets, second_made.secrets);

    // Nothing in common, in any list (secret names excepted: `shared-name` is each tenant's own).
    for (what, a, b) in [
        ("bots", &first.bots, &theirs.bots),
        ("agents", &first.agents, &theirs.agents),
        ("users", &first.users, &theirs.users),
        ("tokens", &first.tokens, &theirs.tokens),
        ("audit entries", &first.audit, &theirs.audit),
    ] {
        assert!(!a.is_empty() && !b.is_empty(), "{what}: both tenants have some");
        assert!(a.is_disjoint(b), "{what} are shared between tenants");
    }

    // Each tenant's audit log names only its own actors and targets.
    for (admin, own) in [(&app.token, &first), (&second, &theirs)] {
        let audit = call(&app, admin, Method::GET, "/api/v1/audit?limit=500", None).await?;
        let items = audit["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() >= 8, "logins, pairing, bots, user, token, secrets: {audit}");
        let things: BTreeSet<&String> =
            own.bots.iter().chain(&own.agents).chain(&own.users).chain(&own.tokens).chain(&own.secrets).collect();
        for entry in &items {
            let actor = entry["actor"]["id"].as_str().unwrap_or_default().to_owned();
            assert!(things.contains(&actor), "an actor from elsewhere: {entry}");
            if let Some((_, id)) = entry["target"].as_str().and_then(|t| t.split_once(':')) {
                assert!(things.contains(&id.to_owned()), "a target from elsewhere: {entry}");
            }
        }
    }
    app.stop().await
}
