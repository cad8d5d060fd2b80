//! Pairing through the real `botmox-agent pair`: credentials stored owner-only, `run`
//! connects with them, `status` tells, `unpair` forgets; and every way pairing can go wrong is
//! one clear line and exit code 1.

use botmox_control_plane::{auth::credentials, store::NewPairingCode};
use botmox_e2e::{
    agent::{agent_cli, pair},
    app::TestApp,
    db::Backend,
};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_stores_private_credentials_run_connects_status_tells_unpair_forgets() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let credentials = host.path().join("agent.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&credentials)?.permissions().mode() & 0o777, 0o600, "owner-only");
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&credentials)?)?;
    assert_eq!(stored["server"], app.base_url.as_str());
    assert!(stored["agent_token"].as_str().is_some_and(|t| t.len() > 20), "{stored}");

    let (code, _, stderr) = agent_cli(host.path(), &["status"]).await?;
    assert_eq!(code, Some(0), "{stderr}");

    let agent = host.run(&[]).await?;
    let registered = wait_until(&app, &format!("/api/v1/agents/{}", host.agent_id), "the agent online", |a| {
        a["status"] == "online" && a["metrics"]["memory_total_bytes"].as_u64().is_some_and(|m| m > 0)
    })
    .await?;
    assert_eq!(registered["version"], env!("CARGO_PKG_VERSION"), "hello tells the agent's version");
    assert_eq!(registered["os"], std::env::consts::OS);

    let (code, stdout, stderr) = agent_cli(host.path(), &["status"]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("connected (websocket)"), "{stdout}");
    assert!(stdout.contains(&app.base_url) && stdout.contains(&host.agent_id.to_string()), "{stdout}");

    let (code, _, stderr) = agent_cli(host.path(), &["unpair"]).await?;
    assert_eq!(code, Some(1), "unpair is refused while the agent runs");
    assert!(stderr.contains("stop it first"), "{stderr}");

    assert_eq!(agent.terminate().await?, Some(0), "SIGTERM is a clean exit");
    let (_, stdout, _) = agent_cli(host.path(), &["status"]).await?;
    assert!(stdout.contains("not running"), "{stdout}");

    let (code, stdout, stderr) = agent_cli(host.path(), &["unpair"]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("unpaired"), "{stdout}");
    assert!(!credentials.exists());
    let (_, stdout, _) = agent_cli(host.path(), &["status"]).await?;
    assert_eq!(stdout.trim(), "not paired");
    let (code, _, stderr) = agent_cli(host.path(), &["run"]).await?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not paired"), "{stderr}");
    app.stop().await
}

/// Asserts a failed pairing: exit code 1, exactly one line on stderr, containing `needle`.
async fn pair_fails(dir: &std::path::Path, server: &str, code: &str, needle: &str) -> anyhow::Result<()> {
    let (status, stdout, stderr) = agent_cli(dir, &["pair", "--server", server, "--code", code]).await?;
    assert_eq!(status, Some(1), "pairing should fail: {stdout} {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pairing_failure_is_one_clear_line() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let dir = tempfile::tempdir()?;
    pair_fails(dir.path(), &app.base_url, "AAAA-BBBB-CCCC", "not recognised").await?;

    let code = pairing_code(&app).await?;
    let first = tempfile::tempdir()?;
    pair(first.path(), &app.base_url, &code).await?;
    pair_fails(dir.path(), &app.base_url, &code, "already used").await?;
    pair_fails(first.path(), &app.base_url, &pairing_code(&app).await?, "already paired").await?;

    let expired = credentials::new_pairing_code();
    let canonical = credentials::normalize_pairing_code(&expired).unwrap_or_default();
    let now = app.clock.now();
    let row = NewPairingCode {
        tenant_id: app.tenant_id,
        code_hash: credentials::hash(&canonical),
        name: None,
        labels: Default::default(),
        created_by: None,
        expires_at: now - chrono::Duration::seconds(1),
    };
    app.store.create_pairing_code(row, now - chrono::Duration::seconds(120)).await?;
    pair_fails(dir.path(), &app.base_url, &expired, "expired").await?;

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    pair_fails(dir.path(), &format!("http://127.0.0.1:{port}"), "AAAA-BBBB-CCCC", "cannot reach").await?;

    // A web server that is not botmox.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let other_url = format!("http://{}", other.local_addr()?);
    let web = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = other.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let page = "<html>it works</html>";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    pair_fails(dir.path(), &other_url, "AAAA-BBBB-CCCC", "does not look like a botmox server").await?;
    web.abort();
    assert!(!dir.path().join("agent.json").exists(), "no failure stores anything");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_attempts_are_rate_limited() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Backend::Sqlite, |settings| settings.limits.pair_per_minute = 2).await?;
    let dir = tempfile::tempdir()?;
    for _ in 0..2 {
        pair_fails(dir.path(), &app.base_url, "AAAA-BBBB-CCCC", "not recognised").await?;
    }
    pair_fails(dir.path(), &app.base_url, "AAAA-BBBB-CCCC", "too many pairing attempts").await?;
    app.stop().await
}
