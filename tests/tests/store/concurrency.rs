//! Races, on both backends: claimers never share a command and never leave one behind,
//! repeats of one idempotency key make one command, and racing transitions have one winner.

use std::collections::BTreeSet;

use botmox_contract::commands::CommandStatus;
use botmox_control_plane::store::{Enqueued, StoreError};
use futures::future::try_join_all;

use crate::{exec_order, outcome, Ctx, LEASE_SECS, TIMES};

conformance!(
    eight_claimers_take_every_command_exactly_once,
    enqueue_races_on_one_key_make_one_command,
    cancel_and_complete_race_has_one_winner,
    ack_and_sweep_race_stays_consistent,
    tenant_and_server_value_races_agree,
    commands_placed_while_their_agent_is_deleted_go_with_it,
);

const COMMANDS: usize = 500;
const CLAIMERS: usize = 8;

async fn eight_claimers_take_every_command_exactly_once(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let neighbour = t.agent("host-2").await?;
    let mut enqueued = BTreeSet::new();
    for i in 0..COMMANDS {
        enqueued.insert(t.enqueue(agent.id).await?.id);
        if i % 50 == 0 {
            t.enqueue(neighbour.id).await?; // must not be claimed for `agent`
        }
    }

    let claimers = (0..CLAIMERS).map(|i| {
        let store = t.store.clone();
        let now = t.at(1.0);
        // Mixed batch sizes: single claims and small batches compete for the same rows.
        let batch = 1 + (i % 3) as u32;
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_commands(agent.id, batch, now).await?;
                if claimed.is_empty() {
                    return Ok::<_, StoreError>(mine);
                }
                assert!(claimed.len() <= batch as usize);
                assert!(claimed.windows(2).all(|w| w[0].id < w[1].id), "a batch comes oldest first");
                for command in claimed {
                    assert_eq!(
                        (command.agent_id, command.status, command.attempt),
                        (agent.id, CommandStatus::Dispatched, 1)
                    );
                    mine.push(command.id);
                }
            }
        })
    });
    let per_claimer = try_join_all(claimers).await?.into_iter().collect::<Result<Vec<_>, _>>()?;

    let total: usize = per_claimer.iter().map(Vec::len).sum();
    let claimed: BTreeSet<_> = per_claimer.iter().flatten().copied().collect();
    assert_eq!(total, COMMANDS, "claims per claimer: {:?}", per_claimer.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(claimed, enqueued, "every command claimed exactly once");
    let depth = t.store.queue_depth(Some(t.tenant)).await?;
    assert_eq!(depth[&CommandStatus::Dispatched], COMMANDS as u64);
    assert_eq!(depth[&CommandStatus::Queued], 10, "only the neighbour's commands remain");
    Ok(())
}

async fn enqueue_races_on_one_key_make_one_command(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    for round in 0..5 {
        let racers = (0..16).map(|i| {
            let store = t.store.clone();
            let mut new = t.command(agent.id);
            new.idempotency_key = Some(format!("start-{round}"));
            new.payload = serde_json::json!({ "racer": i });
            let now = t.at(f64::from(round));
            tokio::spawn(async move { store.enqueue_command(new, now).await })
        });
        let results = try_join_all(racers).await?.into_iter().collect::<Result<Vec<_>, _>>()?;
        let created: Vec<_> = results.iter().filter(|e| matches!(e, Enqueued::Created(_))).collect();
        assert_eq!(created.len(), 1, "round {round}: exactly one racer creates");
        let winner = created[0].command().clone();
        for result in &results {
            assert_eq!(result.command(), &winner, "round {round}: every racer gets the first command");
        }
    }
    assert_eq!(t.store.queue_depth(Some(t.tenant)).await?[&CommandStatus::Queued], 5);
    Ok(())
}

async fn cancel_and_complete_race_has_one_winner(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    for _ in 0..20 {
        t.enqueue(agent.id).await?;
    }
    let running = t.store.claim_commands(agent.id, 20, t.at(1.0)).await?;
    for command in &running {
        t.store.ack_command(agent.id, command.id, t.at(2.0)).await?;
    }
    let mut wins = (0, 0);
    for command in running {
        let (store_a, store_b) = (t.store.clone(), t.store.clone());
        let (tenant, id, now) = (t.tenant, command.id, t.at(3.0));
        let cancel = tokio::spawn(async move { store_a.cancel_command(tenant, id, now).await });
        let complete = tokio::spawn(async move { store_b.complete_command(agent.id, id, outcome(true), now).await });
        let (cancelled, completed) = (cancel.await?, complete.await?);
        let final_state = t.store.get_command(t.tenant, id).await?;
        match (cancelled, completed) {
            (Ok(c), Err(StoreError::InvalidTransition { from: "cancelled", .. })) => {
                wins.0 += 1;
                assert_eq!((c.status, &final_state), (CommandStatus::Cancelled, &c));
            }
            (Err(StoreError::InvalidTransition { from: "succeeded", .. }), Ok(c)) => {
                wins.1 += 1;
                assert_eq!((c.status, &final_state), (CommandStatus::Succeeded, &c));
            }
            other => panic!("exactly one of cancel/complete must win: {other:?}"),
        }
    }
    assert_eq!(wins.0 + wins.1, 20);
    Ok(())
}

async fn ack_and_sweep_race_stays_consistent(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    for _ in 0..20 {
        t.enqueue(agent.id).await?;
    }
    let dispatched = t.store.claim_commands(agent.id, 20, t.at(0.0)).await?;
    let now = t.at(LEASE_SECS + 1.0);
    let sweeper = {
        let store = t.store.clone();
        tokio::spawn(async move { store.sweep_leases(now).await })
    };
    let ackers = dispatched.iter().map(|command| {
        let store = t.store.clone();
        let id = command.id;
        tokio::spawn(async move { (id, store.ack_command(agent.id, id, now).await) })
    });
    let acks = try_join_all(ackers).await?;
    let sweep = sweeper.await??;
    let requeued: BTreeSet<_> = sweep.requeued.iter().map(|c| c.id).collect();
    for (id, ack) in acks {
        let final_state = t.store.get_command(t.tenant, id).await?;
        match ack {
            Ok(c) => {
                assert!(!requeued.contains(&id), "{id} was acked and re-queued");
                assert_eq!((c.status, &final_state), (CommandStatus::Running, &c));
            }
            Err(StoreError::InvalidTransition { from: "queued", .. }) => {
                assert!(requeued.contains(&id));
                assert_eq!((final_state.status, final_state.attempt), (CommandStatus::Queued, 1));
            }
            Err(e) => panic!("unexpected ack error: {e}"),
        }
    }
    Ok(())
}

async fn tenant_and_server_value_races_agree(t: Ctx) -> anyhow::Result<()> {
    let tenants = (0..8).map(|_| {
        let store = t.store.clone();
        let now = t.at(1.0);
        tokio::spawn(async move { store.ensure_tenant("raced", now).await })
    });
    let ids: BTreeSet<_> = try_join_all(tenants).await?.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 1, "one tenant: {ids:?}");

    let values = (0..8).map(|i| {
        let store = t.store.clone();
        tokio::spawn(async move { store.init_server_value("signing_key", &format!("value-{i}")).await })
    });
    let values: BTreeSet<_> = try_join_all(values).await?.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(values.len(), 1, "one value wins: {values:?}");
    assert_eq!(t.store.get_server_value("signing_key").await?, values.into_iter().next());
    Ok(())
}

/// Agent-wide orders racing the agent's deletion: each order either finds no agent or is
/// placed, and whatever was placed is deleted with the agent — no command outlives its agent
/// (the store's lock does what a foreign key did: migration 0014).
async fn commands_placed_while_their_agent_is_deleted_go_with_it(t: Ctx) -> anyhow::Result<()> {
    const ROUNDS: usize = 20;
    const ORDERS: usize = 6;
    let (mut placed, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let agent = t.agent(&format!("host-{round}")).await?;
        let orders = (0..ORDERS).map(|_| {
            let (store, order, now) = (t.store.clone(), exec_order(t.tenant, agent.id), t.at(1.0));
            tokio::spawn(async move { store.place_orders(&[order], TIMES, now).await })
        });
        let delete = {
            let store = t.store.clone();
            let tenant = t.tenant;
            tokio::spawn(async move { store.delete_agent(tenant, agent.id).await })
        };
        let answers = try_join_all(orders).await?;
        delete.await??;
        for answer in answers {
            match answer?.into_iter().next() {
                Some(Ok(command)) => {
                    placed += 1;
                    let left = t.store.get_command(t.tenant, command.command.id).await;
                    assert!(
                        matches!(left, Err(StoreError::NotFound(_))),
                        "command {} outlived its deleted agent: {left:?}",
                        command.command.id
                    );
                }
                Some(Err(StoreError::Reference(_))) => refused += 1,
                other => anyhow::bail!("an order answered {other:?}"),
            }
        }
    }
    assert_eq!(placed + refused, ROUNDS * ORDERS);
    assert!(placed > 0, "no order was placed before its agent's deletion: the race was never run");
    Ok(())
}
