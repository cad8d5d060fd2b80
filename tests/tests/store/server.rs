//! Store-wide functions: migrations, readiness, backend name, server values.

use botmox_control_plane::store::{PoolOptions, Store};
use botmox_e2e::db::TestDb;

use crate::Ctx;

conformance!(migrate_twice_is_a_noop, readiness_follows_migrations, server_values_keep_the_first_write);

async fn migrate_twice_is_a_noop(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    t.store.migrate().await?;
    t.store.migrate().await?;
    assert!(t.store.is_ready().await?);
    // Data written before the repeat is still there, and nothing new appeared.
    assert_eq!(t.store.ensure_tenant("default", t.at(5.0)).await?, t.tenant);
    assert_eq!(t.store.list_agents(t.tenant).await?, vec![agent]);
    Ok(())
}

async fn readiness_follows_migrations(t: Ctx) -> anyhow::Result<()> {
    assert_eq!(t.store.backend_name(), t.backend.to_string());
    assert!(t.store.is_ready().await?);

    let db = TestDb::new(t.backend).await?;
    let bare = Store::connect(&db.url, &PoolOptions::default()).await?;
    // A database that answers but has no schema is not ready (an error also says "not ready").
    let before = bare.is_ready().await;
    assert!(!matches!(before, Ok(true)), "unmigrated store reported ready: {before:?}");
    bare.migrate().await?;
    assert!(bare.is_ready().await?);
    bare.close().await;
    db.cleanup().await
}

async fn server_values_keep_the_first_write(t: Ctx) -> anyhow::Result<()> {
    assert_eq!(t.store.get_server_value("session_key").await?, None);
    assert_eq!(t.store.init_server_value("session_key", "first").await?, "first");
    assert_eq!(t.store.init_server_value("session_key", "second").await?, "first");
    assert_eq!(t.store.get_server_value("session_key").await?.as_deref(), Some("first"));
    // Keys are independent.
    assert_eq!(t.store.init_server_value("other", "x").await?, "x");
    assert_eq!(t.store.get_server_value("session_key").await?.as_deref(), Some("first"));
    Ok(())
}

/// SQLite: the writer never checkpoints (a commit that did would wait for the copy and its
/// fsync); a background connection copies the WAL into the database file while the store is
/// open, so the file takes the data and the WAL does not grow without end.
#[tokio::test]
async fn sqlite_checkpoints_run_in_the_background() -> anyhow::Result<()> {
    let db = TestDb::new(botmox_e2e::db::Backend::Sqlite).await?;
    let botmox_control_plane::store::DatabaseUrl::Sqlite(path) = db.url.clone() else {
        anyhow::bail!("not a SQLite database");
    };
    let store = db.store().await?;
    let t0 = chrono::DateTime::from_timestamp_millis(1_900_000_000_000).unwrap_or_default();
    let tenant = store.ensure_tenant("default", t0).await?;
    let agent = store.create_agent(crate::new_agent(tenant, "host-1"), t0).await?;
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    // About 2 MB of bots, in 20 commits.
    for chunk in 0..20 {
        let specs: Vec<_> =
            (0..200).map(|n| crate::bot_spec(&format!("bot-{chunk}-{n}"), agent.id, &["a-tag"])).collect();
        store.create_bots(tenant, &specs, t0).await?.map_err(|refusals| anyhow::anyhow!("{refusals:?}"))?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 1_000_000 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (from {before}): nothing checkpointed it",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.close().await;
    db.cleanup().await
}
