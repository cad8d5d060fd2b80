use botmox_contract::bots::BotSpec;
use botmox_control_plane::store::NewBot;
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// A valid bot definition.
pub use botmox_e2e::bot_definition as spec;

both_backends!(create_get_update_delete, defaults_fill_what_is_left_out, list_filters_paginate_and_count);
both_backends!(if_match_guards_updates_and_deletes, names_are_unique_per_tenant, other_tenants_bots_do_not_exist);

async fn create_get_update_delete(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-eu-1").await?;

    let response = app.post("/api/v1/bots", &spec("farmer-eu-01", agent.id)).send().await?;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str()?.to_owned();
    let created: Value = response.json().await?;
    assert_eq!(location, format!("/api/v1/bots/{}", created["id"].as_str().unwrap_or_default()));
    assert_eq!(created["name"], "farmer-eu-01");
    assert_eq!(created["agent_id"], agent.id.to_string());
    assert_eq!(created["exec"]["args"], json!(["bot.py", "--realm", "eu"]));
    assert_eq!(created["exec"]["secret_env"]["ACCOUNT_PASSWORD"], "farmer-password");
    assert_eq!(created["state"], "pending");
    assert_eq!(created["desired_state"], "running");
    assert_eq!(created["version"], 1);
    assert_eq!(created["restart_count"], 0);
    assert_eq!(created["pid"], Value::Null);

    let (status, fetched) = send(app.get(&location)).await?;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);

    let patch = json!({ "exec": { "program": "python3", "args": ["bot.py", "--realm", "us"] }, "tags": ["us"] });
    let response = app.patch(&location, &patch).header("if-match", "\"1\"").send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let updated: Value = response.json().await?;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["exec"]["args"], json!(["bot.py", "--realm", "us"]));
    assert_eq!(updated["tags"], json!(["us"]));
    assert_eq!(updated["name"], "farmer-eu-01", "fields left out of the patch keep their value");
    assert_eq!(updated["restart"], created["restart"]);

    let (status, _) = send(app.delete(&location).header("if-match", "2")).await?;
    assert_eq!(status, 204);
    let (status, body) = send(app.get(&location)).await?;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "bot_not_found");
    let (status, _) = send(app.delete(&location)).await?;
    assert_eq!(status, 404);
    app.stop().await
}

async fn defaults_fill_what_is_left_out(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let minimal = json!({ "name": "minimal", "agent_id": agent.id, "exec": { "program": "./run.sh" } });
    let (status, bot) = send(app.post("/api/v1/bots", &minimal)).await?;
    assert_eq!(status, 201, "{bot}");
    let parsed: BotSpec = serde_json::from_value(json!({
        "name": bot["name"], "agent_id": bot["agent_id"], "exec": bot["exec"],
        "restart": bot["restart"], "stop": bot["stop"], "desired_state": bot["desired_state"], "tags": bot["tags"],
    }))?;
    assert_eq!(parsed.restart, Default::default());
    assert_eq!(parsed.stop.timeout_seconds, 10);
    assert_eq!(bot["desired_state"], "stopped");
    assert_eq!(bot["exec"]["args"], json!([]));
    assert_eq!(bot["tags"], json!([]));
    app.stop().await
}

async fn list_filters_paginate_and_count(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (eu, us) = (app.create_agent("vm-eu").await?, app.create_agent("vm-us").await?);
    for i in 0..7 {
        let mut body = spec(&format!("farmer-{i:02}"), if i < 4 { eu.id } else { us.id });
        body["tags"] = if i % 2 == 0 { json!(["even", "farm"]) } else { json!(["odd"]) };
        let (status, _) = send(app.post("/api/v1/bots", &body)).await?;
        assert_eq!(status, 201);
    }
    let (status, _) = send(app.post("/api/v1/bots", &spec("Quest_100%", us.id))).await?;
    assert_eq!(status, 422, "`%` is not allowed in names");
    let (status, _) = send(app.post("/api/v1/bots", &spec("quester", us.id))).await?;
    assert_eq!(status, 201);

    // Walk every page of 3.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/bots?limit=3&cursor={c}"),
            None => "/api/v1/bots?limit=3".to_owned(),
        };
        let (status, page) = send(app.get(&path)).await?;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 8);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 3);
        names.extend(items.iter().map(|b| b["name"].as_str().unwrap_or_default().to_owned()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("farmer-{i:02}")).chain(["quester".to_owned()]).collect();
    assert_eq!(names, expected, "every bot exactly once, ordered by name");

    let count = |page: &Value| page["items"].as_array().map_or(0, Vec::len);
    let (_, page) = send(app.get(&format!("/api/v1/bots?agent_id={}", eu.id))).await?;
    assert_eq!((count(&page), page["total"].clone()), (4, json!(4)));
    let (_, page) = send(app.get("/api/v1/bots?tag=even")).await?;
    assert_eq!(count(&page), 4);
    let (_, page) = send(app.get(&format!("/api/v1/bots?tag=odd&agent_id={}", us.id))).await?;
    assert_eq!(page["items"][0]["name"], "farmer-05");
    assert_eq!(count(&page), 1, "filters combine");
    let (_, page) = send(app.get("/api/v1/bots?name=QUEST")).await?;
    assert_eq!(page["items"][0]["name"], "quester");
    assert_eq!(count(&page), 1);
    let (_, page) = send(app.get("/api/v1/bots?name=%25")).await?;
    assert_eq!(count(&page), 0, "`%` in the name filter is a literal, not a wildcard");

    // Counts by state ignore the state filter; the total honours it.
    let (_, page) = send(app.get("/api/v1/bots?state=running")).await?;
    assert_eq!(count(&page), 0);
    assert_eq!(page["total"], 0);
    assert_eq!(page["counts"]["pending"], 8);
    assert_eq!(page["counts"]["running"], 0);
    app.stop().await
}

async fn if_match_guards_updates_and_deletes(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (_, bot) = send(app.post("/api/v1/bots", &spec("guarded", agent.id))).await?;
    let path = format!("/api/v1/bots/{}", bot["id"].as_str().unwrap_or_default());

    // Someone else changes it first (no If-Match: last writer wins).
    let (status, v2) = send(app.patch(&path, &json!({ "tags": ["changed"] }))).await?;
    assert_eq!(status, 200);
    assert_eq!(v2["version"], 2);

    // A change based on version 1 is refused and changes nothing.
    let (status, body) = send(app.patch(&path, &json!({ "tags": ["stale"] })).header("if-match", "\"1\"")).await?;
    assert_eq!(status, 412);
    assert_eq!(body["code"], "version_mismatch");
    assert!(body["hint"].as_str().unwrap_or_default().contains("If-Match"));
    let (status, body) = send(app.delete(&path).header("if-match", "\"1\"")).await?;
    assert_eq!(status, 412);
    assert_eq!(body["code"], "version_mismatch");
    let (status, body) = send(app.patch(&path, &json!({ "tags": ["x"] })).header("if-match", "three")).await?;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_if_match");
    let (_, now) = send(app.get(&path)).await?;
    assert_eq!(now, v2);

    // If-Match compares strongly (RFC 9110): a weak tag never matches, even the current one,
    // and changes nothing.
    for weak in ["W/\"2\"", "W/\"1\""] {
        let (status, body) = send(app.patch(&path, &json!({ "tags": ["weak"] })).header("if-match", weak)).await?;
        assert_eq!((status, body["code"].as_str()), (412, Some("weak_etag")), "{weak}: {body}");
        let (status, body) = send(app.delete(&path).header("if-match", weak)).await?;
        assert_eq!((status, body["code"].as_str()), (412, Some("weak_etag")), "{weak}: {body}");
    }
    let (_, now) = send(app.get(&path)).await?;
    assert_eq!(now, v2);
    let (status, v3) = send(app.patch(&path, &json!({ "tags": ["fresh"] })).header("if-match", "\"2\"")).await?;
    assert_eq!(status, 200);
    assert_eq!(v3["version"], 3);
    app.stop().await
}

async fn names_are_unique_per_tenant(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (status, _) = send(app.post("/api/v1/bots", &spec("twin", agent.id))).await?;
    assert_eq!(status, 201);
    let (status, body) = send(app.post("/api/v1/bots", &spec("twin", agent.id))).await?;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "bot_name_taken");
    let (status, other) = send(app.post("/api/v1/bots", &spec("other", agent.id))).await?;
    assert_eq!(status, 201);
    let path = format!("/api/v1/bots/{}", other["id"].as_str().unwrap_or_default());
    let (status, body) = send(app.patch(&path, &json!({ "name": "twin" }))).await?;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "bot_name_taken");
    let (_, list) = send(app.get("/api/v1/bots")).await?;
    assert_eq!(list["total"], 2);
    let (_, unchanged) = send(app.get(&path)).await?;
    assert_eq!(unchanged, other);

    // A bot must sit on an agent of this tenant.
    let (status, body) = send(app.post("/api/v1/bots", &spec("orphan", Uuid::now_v7()))).await?;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "unknown_reference");
    assert_eq!(body["field"], "agent_id");
    assert!(body.get("errors").is_none(), "a single refusal keeps the single-error shape: {body}");
    app.stop().await
}

async fn other_tenants_bots_do_not_exist(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let other_tenant = app.store.ensure_tenant("other", app.clock.now()).await?;
    let foreign_agent = app.create_agent_in(other_tenant, "their-vm").await?;
    let spec: BotSpec = serde_json::from_value(spec("theirs", foreign_agent.id))?;
    let foreign = app.store.create_bot(NewBot { tenant_id: other_tenant, spec }, app.clock.now()).await?;
    let path = format!("/api/v1/bots/{}", foreign.id);

    let (status, body) = send(app.get(&path)).await?;
    assert_eq!((status, body["code"].clone()), (404, json!("bot_not_found")));
    let (status, _) = send(app.patch(&path, &json!({ "tags": ["mine"] }))).await?;
    assert_eq!(status, 404);
    let (status, _) = send(app.delete(&path)).await?;
    assert_eq!(status, 404);
    let (_, list) = send(app.get("/api/v1/bots")).await?;
    assert_eq!(list["total"], 0);
    // Their agent cannot host our bots either.
    let (status, _) = send(app.post("/api/v1/bots", &self::spec("squatter", foreign_agent.id))).await?;
    assert_eq!(status, 422);

    let still = app.store.get_bot(other_tenant, foreign.id).await?;
    assert_eq!(still, foreign, "nothing we did touched their bot");
    app.stop().await
}
