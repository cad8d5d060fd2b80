//! Every statement the server runs on the way of a day's work — an agent connecting, single
//! and bulk starts, acks, results, state reports, supervisor ticks — finds its rows through an
//! index on the tables that grow without bound (commands, bots, audit entries, incidents,
//! log lines): SQLite's own query plan, read for each statement the server logged. A statement
//! that scans one of them costs more with every command ever kept (the lease sweep once read
//! every command at every tick, an agent's hello every bot of every tenant).

use std::{collections::BTreeSet, time::Duration};

use botmox_contract::bots::BotSpec;
use botmox_control_plane::{
    auth::credentials,
    store::{NewBot, DEFAULT_TENANT},
};
use botmox_e2e::{
    app::send,
    db::TestDb,
    server::ServerProcess,
    sim::{AutoMode, SimAgent, SimConfig},
};
use serde_json::{json, Value};
use sqlx::Connection as _;

/// Tables whose size has no bound but retention.
const GROWING: [&str; 7] = ["commands", "bots", "bot_tags", "audit_log", "incidents", "log_lines", "command_batches"];
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_statements_use_indexes_on_growing_tables() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let path = data.path().join("botmox.db");
    let db = TestDb::from_url(&format!("sqlite://{}", path.display()))?;
    let store = db.store().await?;
    let now = chrono::Utc::now();
    let tenant_id = store.ensure_tenant(DEFAULT_TENANT, now).await?;
    let token = credentials::new_agent_token();
    let agent = store.create_agent(crate::vm_1(tenant_id, Some(credentials::hash(&token))), now).await?;
    let mut bots = Vec::new();
    for n in 0..20 {
        let spec: BotSpec = serde_json::from_value(
            json!({"name": format!("bot-{n}"), "agent_id": agent.id, "exec": {"program": "true"}, "tags": ["eu"]}),
        )?;
        bots.push(store.create_bot(NewBot { tenant_id, spec }, now).await?.id);
    }
    store.close().await;

    let env = [("BOTMOX_ADMIN_PASSWORD", "plans-password-1"), ("RUST_LOG", "warn,sqlx::query=debug")];
    let server =
        ServerProcess::start(&["--data-dir", data.path().to_str().unwrap_or_default(), "--log-format", "json"], &env)
            .await?;
    let sim = SimAgent::connect(SimConfig::new(server.base_url.clone(), token).auto(AutoMode::Run))
        .await
        .map_err(|e| anyhow::anyhow!("the agent could not connect: {e:?}"))?;
    let client = reqwest::Client::new();
    let (status, login) = send(
        client
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": "plans-password-1"})),
    )
    .await?;
    anyhow::ensure!(status == 200, "login: {login}");
    let session = login["access_token"].as_str().unwrap_or_default().to_owned();
    let api = |request: reqwest::RequestBuilder| send(request.bearer_auth(&session));

    // Single starts, then a bulk stop by filter, each to its end.
    let mut commands = Vec::new();
    for bot in &bots[..5] {
        let (status, body) = api(client.post(server.url(&format!("/api/v1/bots/{bot}/start")))).await?;
        anyhow::ensure!(status == 202, "start: {body}");
        commands.push(body["command"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let (status, bulk) =
        api(client.post(server.url("/api/v1/bots/actions")).json(&json!({"action": "stop", "filter": {"tag": "eu"}})))
            .await?;
    anyhow::ensure!(status == 202, "bulk stop: {bulk}");
    for command in bulk["commands"].as_array().into_iter().flatten() {
        commands.push(command["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in &commands {
        wait_status(&client, &server, &session, id).await?;
    }
    // Reads a panel makes.
    for path in ["/api/v1/bots?limit=10", "/api/v1/commands?limit=10", "/api/v1/dashboard", "/api/v1/incidents"] {
        let (status, body) = api(client.get(server.url(path))).await?;
        anyhow::ensure!(status == 200, "{path}: {body}");
    }
    // Two supervisor ticks after all that (the first tick also reconciles). The log is stderr.
    let ticks = server.stderr.count("UPDATE commands SET status = 'queued'");
    server.stderr.wait_for_nth("UPDATE commands SET status = 'queued'", ticks + 2, WAIT).await?;
    drop(sim);
    let mut lines = server.stdout.snapshot();
    lines.extend(server.stderr.snapshot());
    server.kill().await?;

    let statements: BTreeSet<String> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| entry["db.statement"].as_str().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")))
        .filter(|s| !s.is_empty() && !s.starts_with("PRAGMA") && !s.contains("_sqlx_migrations"))
        .collect();
    anyhow::ensure!(
        statements.len() > 30,
        "too few statements logged to judge: {statements:?}; log: {:?}",
        lines.iter().rev().take(3).collect::<Vec<_>>()
    );
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let mut scans = Vec::new();
    for statement in &statements {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {statement}")).fetch_all(&mut conn).await?;
        let growing = growing_names(statement);
        for (.., detail) in plan {
            // `SCAN t` reads every row of t; `SEARCH` (and a scan of a covering index
            // ordered for the query) does not.
            let scanned = detail.strip_prefix("SCAN ").map(|rest| rest.split_whitespace().next().unwrap_or(""));
            if scanned.is_some_and(|name| growing.contains(name)) && !detail.contains("USING") {
                scans.push(format!("{detail}  ←  {statement}"));
            }
        }
    }
    conn.close().await?;
    assert!(scans.is_empty(), "statements that read a whole growing table:\n{}", scans.join("\n"));
    db.cleanup().await
}

async fn wait_status(client: &reqwest::Client, server: &ServerProcess, session: &str, id: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, command) = send(client.get(server.url(&format!("/api/v1/commands/{id}"))).bearer_auth(session)).await?;
        if command["status"] == "succeeded" {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "command {id} did not succeed: {command}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The growing tables a statement reads, by the names its plan calls them (the table's own
/// name, or its alias: `FROM bots b` shows as `SCAN b`).
fn growing_names(statement: &str) -> BTreeSet<String> {
    let words: Vec<&str> = statement.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')').collect();
    let mut names = BTreeSet::new();
    for (i, word) in words.iter().enumerate() {
        if GROWING.contains(word) {
            names.insert((*word).to_owned());
            let after = words.get(i + 1).copied().unwrap_or("");
            let alias = if after.eq_ignore_ascii_case("AS") { words.get(i + 2).copied().unwrap_or("") } else { after };
            let keyword = ["WHERE", "SET", "ON", "JOIN", "LEFT", "INNER", "ORDER", "GROUP", "LIMIT", "USING", "VALUES"]
                .iter()
                .any(|k| alias.eq_ignore_ascii_case(k));
            if !alias.is_empty() && !keyword && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(alias.to_owned());
            }
        }
    }
    names
}
