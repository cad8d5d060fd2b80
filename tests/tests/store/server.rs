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
