//! `POST /bots/import`: many definitions, all created or none, every refusal by index and field.

use std::{collections::HashSet, time::Duration};

use botmox_contract::{
    auth::Role,
    events::{Event, EventPayload},
};
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
    sse::SseStream,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::bots::spec;

both_backends!(
    import_creates_every_bot_with_tags_and_starts_the_running_ones,
    import_refuses_every_bad_definition_by_index_and_creates_nothing,
    import_refuses_repeated_and_taken_names_and_unknown_agents,
    import_bounds_its_list_and_its_body,
    import_needs_bots_write,
    import_events_arrive,
);

/// `n` definitions on `agent`: every third desired running, tags by parity.
fn definitions(prefix: &str, n: usize, agent: Uuid) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut body = spec(&format!("{prefix}-{i:05}"), agent);
            body["desired_state"] = json!(if i % 3 == 0 { "running" } else { "stopped" });
            body["tags"] = if i % 2 == 0 { json!(["even", "farm"]) } else { json!(["odd"]) };
            body
        })
        .collect()
}

async fn import(app: &TestApp, bots: Vec<Value>) -> anyhow::Result<(u16, Value)> {
    send(app.post("/api/v1/bots/import", &json!({ "bots": bots }))).await
}

/// A POST of a JSON-typed body of `length` bytes: the status and problem the server answers.
async fn oversized_post(app: &TestApp, path: &str, length: usize) -> anyhow::Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = app.base_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await?;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        app.token
    );
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&vec![b' '; length]).await?;
        std::io::Result::Ok(writer)
    });
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), reader.read_to_end(&mut response)).await??;
    // The body was all written, or the server stopped reading it once it had seen too much.
    let _ = writing.await?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

async fn total_bots(app: &TestApp) -> anyhow::Result<Value> {
    let (status, list) = send(app.get("/api/v1/bots?limit=1")).await?;
    anyhow::ensure!(status == 200, "GET /bots answered {status}: {list}");
    Ok(list["total"].clone())
}

/// Expected errors as [`errors`] gives them.
fn expect(list: &[(u64, &str, &str)]) -> Vec<(u64, String, String)> {
    list.iter().map(|(i, f, c)| (*i, (*f).to_owned(), (*c).to_owned())).collect()
}

/// The problem's errors as (index, field, code).
fn errors(problem: &Value) -> Vec<(u64, String, String)> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                    (e["index"].as_u64().unwrap_or(u64::MAX), text("field"), text("code"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn import_creates_every_bot_with_tags_and_starts_the_running_ones(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let (agent_a, agent_b) = (app.create_agent("vm-a").await?, app.create_agent("vm-b").await?);
    let mut bots = definitions("farmer", 1000, agent_a.id);
    for body in bots.iter_mut().skip(500) {
        body["agent_id"] = json!(agent_b.id);
    }
    let running = bots.iter().filter(|b| b["desired_state"] == "running").count();

    let (status, created) = import(&app, bots.clone()).await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created"], 1000);
    assert_eq!(created["starts_queued"], running);
    let ids: Vec<Uuid> = serde_json::from_value(created["bots"].clone())?;
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "distinct ids");

    assert_eq!(total_bots(&app).await?, 1000);
    let (_, even) = send(app.get("/api/v1/bots?tag=even&limit=1")).await?;
    assert_eq!(even["total"], 500, "every bot has its tags");
    let (_, odd) = send(app.get(&format!("/api/v1/bots?tag=odd&agent_id={}&limit=1", agent_b.id))).await?;
    assert_eq!(odd["total"], 250);
    let (_, on_b) = send(app.get(&format!("/api/v1/bots?agent_id={}&limit=1", agent_b.id))).await?;
    assert_eq!(on_b["counts"]["pending"], 500, "the kept counts follow");

    // The ids come in the order of the definitions, and each bot is its definition.
    for i in [0, 1, 499, 500, 999] {
        let (status, bot) = send(app.get(&format!("/api/v1/bots/{}", ids[i]))).await?;
        assert_eq!(status, 200);
        assert_eq!(bot["name"], bots[i]["name"]);
        assert_eq!(bot["agent_id"], bots[i]["agent_id"]);
        assert_eq!(bot["exec"], bots[i]["exec"]);
        assert_eq!(bot["restart"], bots[i]["restart"]);
        assert_eq!(bot["tags"], bots[i]["tags"]);
        assert_eq!(bot["desired_state"], bots[i]["desired_state"]);
        assert_eq!((bot["state"].as_str(), bot["version"].as_u64()), (Some("pending"), Some(1)));
    }

    // One `bot.start` per bot desired running, none for the others.
    let mut started = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/commands?limit=500&cursor={c}"),
            None => "/api/v1/commands?limit=500".to_owned(),
        };
        let (status, page) = send(app.get(&path)).await?;
        assert_eq!(status, 200, "{page}");
        for command in page["items"].as_array().cloned().unwrap_or_default() {
            assert_eq!(command["kind"], "bot.start", "{command}");
            assert!(started.insert(command["bot_id"].as_str().unwrap_or_default().to_owned()), "one start per bot");
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let expected: HashSet<String> = ids.iter().step_by(3).map(Uuid::to_string).collect();
    assert_eq!(started, expected, "starts for exactly the bots desired running");
    app.stop().await
}

async fn import_refuses_every_bad_definition_by_index_and_creates_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let mut bots = definitions("farmer", 50, agent.id);
    bots[3]["exec"]["program"] = json!("");
    bots[7]["colour"] = json!("blue");
    bots[12]["restart"]["window_seconds"] = json!(0);
    bots[20]["name"] = json!("has space");
    bots[41]["exec"]["args"] = json!("not a list");

    let (status, problem) = import(&app, bots).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "validation_failed");
    let expected = [
        (3, "exec.program", "validation_failed"),
        (7, "colour", "unknown_field"),
        (12, "restart.window_seconds", "validation_failed"),
        (20, "name", "validation_failed"),
        (41, "exec.args", "invalid_body"),
    ];
    assert_eq!(errors(&problem), expect(&expected), "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("5 of 50"), "{problem}");
    assert_eq!(total_bots(&app).await?, 0, "nothing created");
    let (_, commands) = send(app.get("/api/v1/commands")).await?;
    assert_eq!(commands["items"], json!([]), "nothing queued");
    app.stop().await
}

async fn import_refuses_repeated_and_taken_names_and_unknown_agents(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (status, _) = send(app.post("/api/v1/bots", &spec("taken", agent.id))).await?;
    assert_eq!(status, 201);
    let foreign = {
        let other = app.store.ensure_tenant("other", app.clock.now()).await?;
        app.create_agent_in(other, "their-vm").await?
    };

    let bots = vec![
        spec("fresh-0", agent.id),
        spec("taken", agent.id),
        spec("fresh-0", agent.id),
        spec("fresh-3", Uuid::now_v7()),
        spec("fresh-4", foreign.id),
        spec("fresh-5", agent.id),
    ];
    let (status, problem) = import(&app, bots.clone()).await?;
    assert_eq!(status, 422, "{problem}");
    let expected = [
        (1, "name", "bot_name_taken"),
        (2, "name", "bot_name_repeated"),
        (3, "agent_id", "unknown_reference"),
        (4, "agent_id", "unknown_reference"),
    ];
    assert_eq!(errors(&problem), expect(&expected), "{problem}");
    assert_eq!(total_bots(&app).await?, 1, "nothing created");

    // A repeat of a successful import is refused by its names, and changes nothing.
    let good = vec![spec("fresh-0", agent.id), spec("fresh-1", agent.id)];
    let (status, _) = import(&app, good.clone()).await?;
    assert_eq!(status, 201);
    let (status, problem) = import(&app, good).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(errors(&problem), expect(&[(0, "name", "bot_name_taken"), (1, "name", "bot_name_taken")]));
    assert_eq!(total_bots(&app).await?, 3);
    app.stop().await
}

async fn import_bounds_its_list_and_its_body(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let (status, problem) = import(&app, Vec::new()).await?;
    assert_eq!((status, problem["field"].as_str()), (422, Some("bots")), "{problem}");

    let minimal = |i: usize| json!({ "name": format!("b{i}"), "agent_id": agent.id, "exec": { "program": "x" } });
    let (status, problem) = import(&app, (0..10_001).map(minimal).collect()).await?;
    assert_eq!((status, problem["field"].as_str()), (422, Some("bots")), "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("10001"), "{problem}");

    // Beyond the route's own limit (16 MiB): 413, with what to do. Sent by hand, one byte
    // over: the server reads it all before answering, so the answer is never lost to a
    // connection reset (a client still writing a far larger body when the server answers and
    // closes may see only the broken pipe).
    let (status, problem) = oversized_post(&app, "/api/v1/bots/import", 16 * 1024 * 1024 + 1).await?;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "body_too_large");
    assert!(problem["hint"].as_str().unwrap_or_default().contains("split"), "{problem}");

    // …while a body far above the server's default 256 KiB is fine here.
    let bots = definitions("big", 2000, agent.id);
    assert!(serde_json::to_vec(&bots)?.len() > 3 * 256 * 1024, "well above the default limit");
    let (status, created) = import(&app, bots).await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created"], 2000);

    let response = app.request(Method::POST, "/api/v1/bots/import").body("bots=1").send().await?;
    assert_eq!(response.status(), 415);
    let (status, problem) = send(app.post("/api/v1/bots/import", &json!([spec("bare", agent.id)]))).await?;
    assert_eq!(status, 422, "a bare list is not the body: {problem}");
    assert_eq!(total_bots(&app).await?, 2000);
    app.stop().await
}

async fn import_needs_bots_write(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let body = json!({ "bots": [spec("farmer", agent.id)] });
    let read_token = app.api_token(&["bots:read", "bots:control"]).await?;
    for token in [app.login_as(Role::Viewer).await?, app.login_as(Role::Operator).await?, read_token] {
        let (status, problem) =
            send(app.request_as(Method::POST, "/api/v1/bots/import", Some(&token)).json(&body)).await?;
        assert_eq!(status, 403, "{problem}");
    }
    let (status, _) = send(app.request_as(Method::POST, "/api/v1/bots/import", None).json(&body)).await?;
    assert_eq!(status, 401);
    assert_eq!(total_bots(&app).await?, 0);
    let writer = app.api_token(&["bots:write"]).await?;
    let (status, created) =
        send(app.request_as(Method::POST, "/api/v1/bots/import", Some(&writer)).json(&body)).await?;
    assert_eq!(status, 201, "{created}");
    app.stop().await
}

async fn import_events_arrive(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let agent = app.create_agent("vm-1").await?;
    let mut events = SseStream::open(app.get("/api/v1/events")).await?;
    let bots = definitions("watched", 30, agent.id);
    let (status, created) = import(&app, bots).await?;
    assert_eq!(status, 201, "{created}");
    let ids: Vec<Uuid> = serde_json::from_value(created["bots"].clone())?;

    // Every bot's state event, and a queued start for each one desired running.
    let mut states: HashSet<Uuid> = HashSet::new();
    let mut starts: HashSet<Uuid> = HashSet::new();
    let wanted: HashSet<Uuid> = ids.iter().copied().collect();
    let wanted_starts: HashSet<Uuid> = ids.iter().step_by(3).copied().collect();
    while states != wanted || starts != wanted_starts {
        let event: Event = events
            .wait_for_json(
                |e: &Event| matches!(e.payload, EventPayload::BotState(_) | EventPayload::CommandStatus(_)),
                Duration::from_secs(10),
            )
            .await?;
        match event.payload {
            EventPayload::BotState(bot) => {
                assert_eq!(bot.state, botmox_contract::bots::BotState::Pending);
                states.insert(bot.id);
            }
            EventPayload::CommandStatus(command) => {
                if let Some(bot) = command.bot_id {
                    starts.insert(bot);
                }
            }
            _ => {}
        }
    }
    drop(events);
    app.stop().await
}
