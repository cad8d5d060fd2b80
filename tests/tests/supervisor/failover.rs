//! Exactly one replica runs the supervisor, and another takes over when it dies.

use std::time::Duration;

use botmox_e2e::{
    db::{Backend, TestDb},
    server::ServerProcess,
};

#[tokio::test]
async fn the_supervisor_fails_over_between_replicas() -> anyhow::Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let url = db.url_string();
    let args = ["--database-url", url.as_str()];
    let env = [("BOTMOX_ADMIN_PASSWORD", "failover-password"), ("RUST_LOG", "botmox_control_plane=info")];
    let first = ServerProcess::start(&args, &env).await?;
    first.stderr.wait_for("running the supervisor", Duration::from_secs(10)).await?;
    let second = ServerProcess::start(&args, &env).await?;
    // The second replica is up and serving, yet does not lead while the first lives.
    let client = reqwest::Client::new();
    assert_eq!(client.get(second.url("/readyz")).send().await?.status(), 200);
    assert!(!second.stderr.snapshot().iter().any(|l| l.contains("running the supervisor")));

    first.kill().await?;
    let took_over = second.stderr.wait_for("running the supervisor", Duration::from_secs(15)).await;
    assert!(took_over.is_ok(), "no takeover: {:?}", second.stderr.snapshot());
    assert_eq!(second.terminate().await?, Some(0));
    db.cleanup().await
}
