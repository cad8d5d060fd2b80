//! Bad input anywhere gets problem+json with a stable code (and the field, where there is one),
//! and changes nothing.

use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::bots::spec;

both_backends!(bad_bot_definitions_are_refused_and_change_nothing, bad_requests_get_problem_json);
both_backends!(head_works_wherever_get_does, nul_characters_are_refused_the_same_on_both_backends);
both_backends!(unknown_query_parameters_are_refused_everywhere);

/// `body` with the member at `pointer` (a JSON pointer to an object member) set to `value`.
fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let target = if parent.is_empty() { Some(&mut body) } else { body.pointer_mut(parent) };
    if let Some(Value::Object(object)) = target {
        object.insert(key.to_owned(), value);
    }
    body
}

async fn bad_bot_definitions_are_refused_and_change_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (status, existing) = send(app.post("/api/v1/bots", &spec("existing", agent.id))).await?;
    assert_eq!(status, 201);
    let good = spec("new-bot", agent.id);
    let mut unknown_top = good.clone();
    unknown_top["colour"] = json!("blue");
    let mut missing_exec = good.clone();
    missing_exec.as_object_mut().map(|o| o.remove("exec"));

    // (body, status, code, field)
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (unknown_top, 422, "unknown_field", Some("colour")),
        (with(good.clone(), "/exec/shell", json!(true)), 422, "unknown_field", Some("exec.shell")),
        (missing_exec, 422, "invalid_body", None),
        (with(good.clone(), "/name", json!(42)), 422, "invalid_body", Some("name")),
        (with(good.clone(), "/exec/args", json!("bot.py")), 422, "invalid_body", Some("exec.args")),
        (with(good.clone(), "/exec/program", json!("")), 422, "validation_failed", Some("exec.program")),
        (with(good.clone(), "/exec/program", json!("   ")), 422, "validation_failed", Some("exec.program")),
        (with(good.clone(), "/stop/timeout_seconds", json!(-5)), 422, "invalid_body", Some("stop.timeout_seconds")),
        (with(good.clone(), "/stop/timeout_seconds", json!(1e12)), 422, "invalid_body", Some("stop.timeout_seconds")),
        (
            with(good.clone(), "/stop/timeout_seconds", json!(86_400)),
            422,
            "validation_failed",
            Some("stop.timeout_seconds"),
        ),
        (
            with(good.clone(), "/restart/backoff_max_ms", json!(10)),
            422,
            "validation_failed",
            Some("restart.backoff_max_ms"),
        ),
        (with(good.clone(), "/restart/policy", json!("sometimes")), 422, "invalid_body", Some("restart.policy")),
        (with(good.clone(), "/name", json!("x".repeat(65))), 422, "validation_failed", Some("name")),
        (with(good.clone(), "/name", json!("bad\u{7}name")), 422, "validation_failed", Some("name")),
        (with(good.clone(), "/name", json!("line\nbreak")), 422, "validation_failed", Some("name")),
        (with(good.clone(), "/name", json!("existing")), 409, "bot_name_taken", None),
        (with(good.clone(), "/exec/env", json!({"BAD-KEY": "1"})), 422, "validation_failed", Some("exec.env.BAD-KEY")),
        (with(good.clone(), "/tags", json!(["a", "a"])), 422, "validation_failed", Some("tags[1]")),
        (with(good.clone(), "/agent_id", json!("not-a-uuid")), 422, "invalid_body", Some("agent_id")),
        (with(good.clone(), "/desired_state", json!("flying")), 422, "invalid_body", Some("desired_state")),
    ];
    for (body, status, code, field) in cases {
        let (got, problem) = send(app.post("/api/v1/bots", &body)).await?;
        assert_eq!(got, status, "{body} → {problem}");
        assert_eq!(problem["code"], code, "{body} → {problem}");
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{body} → {problem}");
        }
    }
    let (_, list) = send(app.get("/api/v1/bots")).await?;
    assert_eq!(list["total"], 1, "no refused definition was stored");
    assert_eq!(list["items"][0], existing);

    // The same rules guard PATCH.
    let path = format!("/api/v1/bots/{}", existing["id"].as_str().unwrap_or_default());
    for patch in [json!({"exec": {"program": ""}}), json!({"name": "a b"}), json!({"version": 7}), json!([])] {
        let (status, problem) = send(app.patch(&path, &patch)).await?;
        assert_eq!(status, 422, "{patch} → {problem}");
    }
    let (_, after) = send(app.get(&path)).await?;
    assert_eq!(after, existing, "refused patches changed nothing");
    app.stop().await
}

async fn bad_requests_get_problem_json(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let bots = "/api/v1/bots";
    let raw = |method: Method, path: &str, body: &'static str| {
        app.request(method, path).header("content-type", "application/json").body(body)
    };
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024));
    let unknown_bot = format!("/api/v1/bots/{}", uuid::Uuid::now_v7());

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (raw(Method::POST, bots, "{\"name\": "), 400, "malformed_json"),
        (raw(Method::POST, bots, "not json"), 400, "malformed_json"),
        (raw(Method::POST, bots, "{} {}"), 400, "malformed_json"),
        (raw(Method::POST, bots, ""), 400, "malformed_json"),
        (
            app.request(Method::POST, bots).header("content-type", "text/plain").body("{}"),
            415,
            "unsupported_media_type",
        ),
        (app.request(Method::POST, bots).header("content-type", "application/json").body(huge), 413, "body_too_large"),
        (app.request(Method::PUT, bots), 405, "method_not_allowed"),
        (app.request(Method::DELETE, bots), 405, "method_not_allowed"),
        (app.get("/api/v1/nothing-here"), 404, "route_not_found"),
        (app.get("/api/v2/bots"), 404, "route_not_found"),
        (app.get(&unknown_bot), 404, "bot_not_found"),
        (app.get("/api/v1/bots/not-a-uuid"), 400, "invalid_path"),
        (app.get("/api/v1/bots?limit=0"), 400, "invalid_query"),
        (app.get("/api/v1/bots?limit=100000"), 400, "invalid_query"),
        (app.get("/api/v1/bots?limit=-1"), 400, "invalid_query"),
        (app.get("/api/v1/bots?state=sleepy"), 400, "invalid_query"),
        (app.get("/api/v1/bots?agent_id=nope"), 400, "invalid_query"),
        (app.get("/api/v1/bots?sort=name"), 400, "invalid_query"),
        (app.get("/api/v1/bots?cursor=%%%"), 400, "invalid_cursor"),
        (app.get("/api/v1/bots?cursor=____"), 400, "invalid_cursor"),
    ];
    for (request, status, code) in cases {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{code}");
        let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
        let problem: Value = response.json().await?;
        assert_eq!(problem["code"], code);
        assert_eq!(problem["status"], status);
        assert_eq!(problem["type"], format!("urn:botmox:problem:{code}"));
        assert_eq!(problem["instance"], request_id, "the problem names its request");
    }
    let (_, list) = send(app.get(bots)).await?;
    assert_eq!(list["total"], 0, "nothing was created");
    // An empty cursor is no cursor: the first page, on every list.
    for path in
        ["/api/v1/bots?cursor=", "/api/v1/commands?cursor=", "/api/v1/incidents?cursor=", "/api/v1/audit?cursor="]
    {
        let (status, page) = send(app.get(path)).await?;
        assert_eq!(status, 200, "{path}: {page}");
    }

    // Query parameter errors name the parameter.
    let (_, problem) = send(app.get("/api/v1/bots?sort=name")).await?;
    assert_eq!(problem["field"], "sort");
    let (_, problem) = send(app.get(&format!("/api/v1/bots?agent_id={}&state=sleepy", agent.id))).await?;
    assert_eq!(problem["field"], "state");
    app.stop().await
}

async fn head_works_wherever_get_does(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    for (path, token) in [("/healthz", None), ("/readyz", None), ("/api/v1/bots", Some(app.token.as_str()))] {
        let response = app.request_as(Method::HEAD, path, token).send().await?;
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(response.text().await?.is_empty(), "HEAD {path} has no body");
    }
    let refused = app.request_as(Method::HEAD, "/api/v1/bots", None).send().await?;
    assert_eq!(refused.status(), 401, "HEAD needs what GET needs");
    app.stop().await
}

async fn nul_characters_are_refused_the_same_on_both_backends(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let login =
        app.client.post(app.url("/api/v1/auth/login")).json(&json!({ "username": "ad\u{0}min", "password": "x" }));
    let (status, problem) = send(login).await?;
    assert_eq!((status, problem["code"].as_str()), (422, Some("nul_character")), "{problem}");
    let (status, problem) =
        send(app.post("/api/v1/bots", &with(spec("nul", agent.id), "/name", json!("a\u{0}b")))).await?;
    assert_eq!((status, problem["field"].as_str()), (422, Some("name")), "{problem}");
    let tagged = with(spec("nul", agent.id), "/tags", json!(["ok", "b\u{0}d"]));
    let (status, problem) = send(app.post("/api/v1/bots", &tagged)).await?;
    assert_eq!((status, problem["field"].as_str()), (422, Some("tags[1]")), "{problem}");
    let (status, problem) = send(app.get("/api/v1/bots?name=a%00b")).await?;
    assert_eq!((status, problem["field"].as_str()), (400, Some("name")), "{problem}");
    let (status, problem) =
        send(app.request(Method::PUT, "/api/v1/secrets/a%00b").json(&json!({ "value": "v" }))).await?;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_path")), "{problem}");
    let (_, bots) = send(app.get("/api/v1/bots")).await?;
    assert_eq!(bots["total"], 0, "nothing was created: {bots}");
    app.stop().await
}

async fn unknown_query_parameters_are_refused_everywhere(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    for path in ["/api/v1/agents", "/api/v1/dashboard", "/api/v1/secrets", "/api/v1/bots", "/api/v1/commands"] {
        let (status, problem) = send(app.get(&format!("{path}?colour=blue"))).await?;
        assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_query")), "{path}: {problem}");
        assert_eq!(problem["field"], "colour", "{path}: the parameter is named");
    }
    let (status, _) = send(app.get("/api/v1/bots?limit=5")).await?;
    assert_eq!(status, 200, "declared parameters still work");
    app.stop().await
}
