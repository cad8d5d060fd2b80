//! The real `botmox` binary: first start, restart, both backends, and every way its
//! configuration can be wrong (one clear line, non-zero exit, never a panic).

mod admin;
mod client;
mod plans;
mod vault;

use std::time::Duration;

use botmox_contract::{agents::Agent, bots::BotSpec};
use botmox_control_plane::store::{NewAgent, NewBot, DEFAULT_TENANT};
use botmox_e2e::{
    app::send,
    db::{Backend, TestDb},
    server::{run_to_exit, ServerProcess},
};
use serde_json::{json, Value};

pub async fn login(client: &reqwest::Client, server: &ServerProcess, password: &str) -> anyhow::Result<String> {
    let (status, body) =
        send(client.post(server.url("/api/v1/auth/login")).json(&json!({"username": "admin", "password": password})))
            .await?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

/// The agent `vm-1` of a tenant, with the hash of its token if it is to connect.
fn vm_1(tenant_id: botmox_contract::Id, token_hash: Option<String>) -> NewAgent {
    NewAgent {
        tenant_id,
        name: "vm-1".into(),
        hostname: "vm-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        version: "test".into(),
        labels: Default::default(),
        token_hash,
    }
}

/// Writes an agent and a bot straight into the database the server uses.
async fn seed_bot(db: &TestDb, name: &str) -> anyhow::Result<Agent> {
    let store = db.store().await?;
    let now = chrono::Utc::now();
    let tenant_id = store.ensure_tenant(DEFAULT_TENANT, now).await?;
    let agent = store.create_agent(vm_1(tenant_id, None), now).await?;
    let spec: BotSpec =
        serde_json::from_value(json!({"name": name, "agent_id": agent.id, "exec": {"program": "python3"}}))?;
    store.create_bot(NewBot { tenant_id, spec }, now).await?;
    store.close().await;
    Ok(agent)
}

#[tokio::test]
async fn first_start_prints_the_password_and_a_restart_keeps_everything() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default().to_owned();
    let server = ServerProcess::start(&["--data-dir", &data_dir], &[]).await?;
    let line = server.stdout.wait_for("with password: ", Duration::from_secs(5)).await?;
    let password = line.rsplit("with password: ").next().unwrap_or_default().trim().to_owned();
    assert_eq!(password.len(), 20, "a generated password: {line}");

    let client = reqwest::Client::new();
    let (status, health) = send(client.get(server.url("/healthz"))).await?;
    assert_eq!((status, health["status"].clone()), (200, json!("ok")));
    let (status, ready) = send(client.get(server.url("/readyz"))).await?;
    assert_eq!((status, ready["store"].clone()), (200, json!("sqlite")));
    let token = login(&client, &server, &password).await?;
    let db = TestDb::from_url(&format!("sqlite://{data_dir}/botmox.db"))?;
    seed_bot(&db, "survivor").await?;
    let (status, list) = send(client.get(server.url("/api/v1/bots")).bearer_auth(&token)).await?;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["name"], "survivor");

    assert_eq!(server.terminate().await?, Some(0), "SIGTERM is a clean shutdown");

    let server = ServerProcess::start(&["--data-dir", &data_dir], &[]).await?;
    assert!(
        !server.stdout.snapshot().iter().any(|l| l.contains("password")),
        "no new admin on restart: {:?}",
        server.stdout.snapshot()
    );
    // The signing key survived: the old token still works, and so does the password.
    let (status, list) = send(client.get(server.url("/api/v1/bots")).bearer_auth(&token)).await?;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    login(&client, &server, &password).await?;
    assert_eq!(server.terminate().await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn two_servers_on_one_postgres_share_users_and_sessions() -> anyhow::Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let url = db.url_string();
    let env = [("BOTMOX_ADMIN_PASSWORD", "pg-admin-password")];
    let args = ["--database-url", url.as_str()];
    let (a, b) = tokio::try_join!(ServerProcess::start(&args, &env), ServerProcess::start(&args, &env))?;
    let client = reqwest::Client::new();
    for server in [&a, &b] {
        let (status, ready) = send(client.get(server.url("/readyz"))).await?;
        assert_eq!((status, ready["store"].clone()), (200, json!("postgres")));
    }
    let created: usize =
        [&a, &b].iter().filter(|s| s.stdout.snapshot().iter().any(|l| l.contains("Created the first admin"))).count();
    assert_eq!(created, 1, "exactly one replica created the admin");
    seed_bot(&db, "shared").await?;
    let token = login(&client, &a, "pg-admin-password").await?;
    let (status, list) = send(client.get(b.url("/api/v1/bots")).bearer_auth(&token)).await?;
    assert_eq!(status, 200, "a token from replica A works on replica B");
    assert_eq!(list["items"][0]["name"], "shared");
    assert_eq!(a.terminate().await?, Some(0));
    assert_eq!(b.terminate().await?, Some(0));
    db.cleanup().await
}

#[tokio::test]
async fn migrate_applies_and_is_idempotent() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default();
    let pg = TestDb::new(Backend::Postgres).await?;
    let pg_url = pg.url_string();
    for args in [vec!["migrate", "--data-dir", data_dir], vec!["migrate", "--database-url", &pg_url]] {
        for _ in 0..2 {
            let (code, stdout, stderr) = run_to_exit(&args, &[]).await?;
            assert_eq!(code, Some(0), "{args:?}: {stderr}");
            assert!(stdout.contains("migrations applied"), "{stdout}");
        }
    }
    assert!(data.path().join("botmox.db").exists());
    pg.cleanup().await
}

/// Every misconfiguration: exit code 1 and exactly one line on stderr, starting `error:`.
#[tokio::test]
async fn bad_configuration_is_one_clear_line_and_a_non_zero_exit() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"not a directory")?;
    let under_file_path = file.join("data");
    let under_file = under_file_path.to_str().unwrap_or_default();
    let data_dir_path = scratch.path().join("ok");
    let data_dir = data_dir_path.to_str().unwrap_or_default();
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let busy_addr = busy.local_addr()?.to_string();

    // (arguments, environment, what stderr must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec!["serve", "--database-url", "mysql://root@localhost/x"], vec![], "DATABASE_URL must start with"),
        (vec!["serve", "--database-url", "postgres://u@127.0.0.1:1/x"], vec![], "cannot open Postgres at"),
        (vec!["serve", "--database-url", "postgres://u:hunter2@127.0.0.1:1/x"], vec![], "u:***@127.0.0.1:1"),
        (vec!["serve"], vec![("DATABASE_URL", "postgres://[::1")], "not a valid Postgres URL"),
        (vec!["serve", "--data-dir", under_file], vec![], "cannot create the data directory"),
        (vec!["migrate", "--data-dir", under_file], vec![], "cannot create the data directory"),
        (vec!["serve", "--data-dir", data_dir, "--listen", &busy_addr], vec![], "cannot listen on"),
        (vec!["serve", "--data-dir", data_dir, "--listen", "nowhere:80"], vec![], "invalid value"),
        (vec!["serve", "--data-dir", data_dir], vec![("BOTMOX_ADMIN_PASSWORD", "short")], "must be 8 to 1024"),
    ];
    for (args, env, expected) in cases {
        let (code, _stdout, stderr) = run_to_exit(&args, &env).await?;
        assert_ne!(code, Some(0), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: expected `{expected}` in {stderr:?}");
        assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "passwords in URLs are never printed: {stderr}");
        // clap's own usage errors (bad flag values) span a few lines and exit 2; ours are one line.
        if !["invalid value", "must be 8 to"].iter().any(|clap_error| expected.contains(clap_error)) {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr:?}");
            assert!(lines[0].starts_with("error: "), "{stderr}");
            assert_eq!(code, Some(1));
        }
    }
    drop(busy);
    assert!(!data_dir_path.join("botmox.db").exists(), "a refused start touched no database");
    Ok(())
}

#[tokio::test]
async fn the_server_answers_health_checks_while_serving() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server =
        ServerProcess::start(&["--data-dir", data.path().to_str().unwrap_or_default(), "--log-format", "json"], &[])
            .await?;
    let client = reqwest::Client::new();
    let response = client.get(server.url("/healthz")).header("x-request-id", "probe-123").send().await?;
    assert_eq!(response.headers()["x-request-id"], "probe-123", "a sane incoming request id is kept");
    let body: Value = response.json().await?;
    assert_eq!(body["status"], "ok");
    // JSON log lines on stderr.
    let line = server.stderr.wait_for("\"listening\"", Duration::from_secs(5)).await?;
    let parsed: Value = serde_json::from_str(&line)?;
    assert_eq!(parsed["message"], "listening");
    assert_eq!(server.terminate().await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn a_username_cannot_forge_a_log_line() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let server = ServerProcess::start(&["--data-dir", &data_dir], &[("BOTMOX_LOG_FORMAT", "text")]).await?;
    let forged = "nobody\n2026-01-01T00:00:00Z  INFO botmox: FORGED admin logged in";
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/auth/login"))
        .json(&serde_json::json!({ "username": forged, "password": "wrong" }))
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    let line = server.stderr.wait_for("login refused", std::time::Duration::from_secs(10)).await?;
    assert!(line.contains("nobody\\n2026"), "the newline is escaped within the line: {line}");
    assert!(
        !server.stderr.snapshot().iter().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "no forged line of its own"
    );
    server.kill().await
}
