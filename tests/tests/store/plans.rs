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

/// A bulk action updates every bot it selects in one transaction, and each old version stays
/// until the commit, so a page of `bots` needs room for a new version of every row on it at
/// once (`fillfactor` 50, migration 0015). Then every update is heap-only: the new version on
/// its row's page, no index entry. At 80, three quarters moved to other pages, each with an
/// entry in every index of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_rewrites_every_bot_on_its_own_page() -> anyhow::Result<()> {
    crate::run(Backend::Postgres, bulk_updates_stay_on_their_pages).await
}

async fn bulk_updates_stay_on_their_pages(t: Ctx) -> anyhow::Result<()> {
    use botmox_contract::{
        audit::Actor,
        bots::DesiredState,
        commands::{BotAction, CommandKind},
    };
    use botmox_control_plane::store::{BatchPlaced, NewBatch, Order, Target};

    let agent = t.agent("host").await?;
    let specs: Vec<_> = (0..1000).map(|n| bot_spec(&format!("bot-{n:04}"), agent.id, &["eu", "farm"])).collect();
    let bots = t.store.create_bots(t.tenant, &specs, t.t0).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut db = sqlx::PgConnection::connect(&t.url).await?;
    // Each bot's page: the first number of its `ctid` (page, item).
    let pages = |rows: Vec<(String, String)>| -> Vec<(String, String)> {
        rows.into_iter()
            .map(|(id, ctid)| (id, ctid.trim_matches(|c| c == '(' || c == ')').split(',').next().unwrap_or("").into()))
            .collect()
    };
    let read = "SELECT id, ctid::text FROM bots ORDER BY id";
    let before = pages(sqlx::query_as(read).fetch_all(&mut db).await?);

    let batch = NewBatch {
        id: uuid::Uuid::now_v7(),
        tenant_id: t.tenant,
        idempotency_key: None,
        action: BotAction::Start,
        matched: bots.len() as u64,
        created_by: Actor::supervisor(),
    };
    let orders: Vec<Order> = bots
        .iter()
        .map(|bot| Order {
            tenant_id: t.tenant,
            target: Target::Bot(bot.id),
            kind: CommandKind::BotStart,
            desired: Some(DesiredState::Running),
            payload: serde_json::json!({}),
            idempotency_key: None,
            created_by: Actor::supervisor(),
            batch_id: Some(batch.id),
        })
        .collect();
    let BatchPlaced::Created(record, _) = t.store.place_batch(&batch, &orders, crate::TIMES, t.at(1.0)).await? else {
        anyhow::bail!("a new batch expected")
    };
    assert_eq!(record.accepted, 1000);
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bots WHERE desired_state = 'running'").fetch_one(&mut db).await?;
    assert_eq!(running, 1000, "every bot's desired state was written");

    let after = pages(sqlx::query_as(read).fetch_all(&mut db).await?);
    assert_eq!(before.len(), after.len());
    let moved: Vec<&String> = before.iter().zip(&after).filter(|(b, a)| b != a).map(|(b, _)| &b.0).collect();
    assert!(
        moved.is_empty(),
        "{} of 1000 bots moved to another page (not heap-only): {:?}",
        moved.len(),
        &moved[..moved.len().min(5)]
    );
    Ok(())
}
