//! Query plans that depend on what the database knows about the data. Postgres plans from the
//! statistics autovacuum gathers; a plan fine on an empty table can turn into a scan of every
//! row once the table is analyzed, so these scenarios fill a registry the way a real one looks,
//! analyze it, and read the plan of the server's own statement.

use std::collections::BTreeSet;

use botmox_contract::Id;
use botmox_control_plane::store::DRIFTING_BOTS;
use botmox_e2e::db::Backend;
use sqlx::Connection as _;

use crate::{bot_spec, Ctx};

/// The supervisor's reconciliation (every 4 ticks) looks for the few bots whose state and
/// desired state disagree. No index covers the states (migration 0013): the counts name the
/// agents with a drifting bot, and only those agents' bots are read, through `bots_agent` —
/// never every bot (a scan with an anti-join over every command took 210–330 ms a pass at
/// 100,000 bots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reads_drifting_bots_through_the_index_on_an_analyzed_registry() -> anyhow::Result<()> {
    crate::run(Backend::Postgres, drifting_bots_through_the_index).await
}

async fn drifting_bots_through_the_index(t: Ctx) -> anyhow::Result<()> {
    // The drifting bots are on one agent of forty, each with a hundred bots.
    let mut specs = Vec::new();
    for a in 0..40 {
        let agent = t.agent(&format!("host-{a:02}")).await?;
        specs.extend((0..100).map(|n| bot_spec(&format!("bot-{:04}", a * 100 + n), agent.id, &[])));
    }
    let bots = t.store.create_bots(t.tenant, &specs, t.t0).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let drifting: BTreeSet<Id> = bots.iter().take(3).map(|b| b.id).collect();
    let list = |ids: &BTreeSet<Id>| ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");

    let mut db = sqlx::PgConnection::connect(&t.url).await?;
    for sql in [
        "UPDATE agents SET status = 'online'".into(),
        // Half running and meaning to, half stopped and meaning to; three meant to run, stopped.
        "UPDATE bots SET desired_state = 'running', state = 'running' WHERE name >= 'bot-2000'".into(),
        "UPDATE bots SET desired_state = 'stopped', state = 'stopped' WHERE name < 'bot-2000'".into(),
        format!("UPDATE bots SET desired_state = 'running' WHERE id IN ({})", list(&drifting)),
        "ANALYZE bots".into(),
        "ANALYZE bot_counts".into(),
    ] {
        sqlx::query(&sql).execute(&mut db).await?;
    }

    let quiet_since = t.at(-60.0);
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {DRIFTING_BOTS}"))
        .bind(quiet_since.timestamp_millis())
        .bind(500_i64)
        .fetch_all(&mut db)
        .await?;
    let plan = plan.join("\n");
    assert!(plan.contains("bots_agent"), "the reconciliation should read the drifting agents' bots:\n{plan}");
    assert!(!plan.contains("Seq Scan on bots"), "the reconciliation should not read every bot:\n{plan}");

    let found: BTreeSet<Id> = t.store.drifting_bots(quiet_since, 500).await?.iter().map(|d| d.bot_id).collect();
    assert_eq!(found, drifting, "exactly the drifting bots");
    Ok(())
}
