//! What a load balancer sees of a replica asked to stop: with `--shutdown-grace`, `/readyz`
//! answers 503 at once while the replica keeps serving everything else, then it drains and
//! exits cleanly. The stack's rolling restart relies on this to fail no request; it needs no
//! Caddy, so it runs in every test run.

use std::time::Duration;

use botmox_e2e::{app::send, server::ServerProcess};
use serde_json::json;

use crate::{POLL, WAIT};

#[tokio::test]
async fn a_replica_told_to_stop_turns_unready_and_serves_through_its_grace() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default().to_owned();
    let args = ["--data-dir", data_dir.as_str(), "--shutdown-grace", "5"];
    let mut server = ServerProcess::start(&args, &[("BOTMOX_ADMIN_PASSWORD", "drain-admin-password")]).await?;
    let client = reqwest::Client::new();
    assert_eq!(send(client.get(server.url("/readyz"))).await?.0, 200);

    server.sigterm()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let unready = loop {
        let (status, body) = send(client.get(server.url("/readyz"))).await?;
        if status == 503 {
            break body;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "/readyz still {status} {WAIT:?} after SIGTERM");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(unready["status"], "shutting_down");
    // Still serving: the process, and the API (a login is a store round trip and a write).
    assert_eq!(send(client.get(server.url("/healthz"))).await?.0, 200);
    let login = json!({ "username": "admin", "password": "drain-admin-password" });
    let (status, body) = send(client.post(server.url("/api/v1/auth/login")).json(&login)).await?;
    assert_eq!(status, 200, "{body}");

    let url = server.url("/healthz");
    assert_eq!(server.wait_exit().await?, Some(0), "a clean exit after the grace");
    let closed = client.get(url).timeout(Duration::from_secs(5)).send().await;
    assert!(closed.is_err(), "the listener is closed after the exit");
    Ok(())
}
