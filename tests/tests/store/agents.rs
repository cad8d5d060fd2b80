//! The agent registry.

use botmox_contract::{
    agents::{AgentMetrics, AgentStatus},
    commands::CommandStatus,
};
use botmox_control_plane::store::{AgentHello, Heartbeat, StoreError};

use anyhow::Context as _;

use crate::{exec_order, new_agent, Ctx, TIMES};

conformance!(agents_round_trip, agents_list_by_name, agent_status_changes, heartbeats_are_written_in_one_batch);
conformance!(a_drain_outlives_presence_changes_and_yields_to_revocation, a_deleted_agent_takes_its_commands_along);

async fn agents_round_trip(t: Ctx) -> anyhow::Result<()> {
    let mut new = new_agent(t.tenant, "host-1");
    new.token_hash = Some("hash-of-token".into());
    let agent = t.store.create_agent(new, t.at(1.0)).await?;
    assert_eq!(agent.id.get_version_num(), 7);
    assert_eq!(agent.name, "host-1");
    assert_eq!(agent.hostname, "host-1.example");
    assert_eq!(agent.os, "linux");
    assert_eq!(agent.arch, "x86_64");
    assert_eq!(agent.version, "0.1.0");
    assert_eq!(agent.labels.get("zone").map(String::as_str), Some("eu"));
    assert_eq!(agent.status, AgentStatus::Pending);
    assert_eq!(agent.last_seen_at, None);
    assert_eq!(agent.connected_replica, None);
    assert_eq!(agent.metrics, None);
    assert_eq!(agent.created_at, t.at(1.0));
    assert_eq!(agent.updated_at, t.at(1.0));

    assert_eq!(t.store.get_agent(t.tenant, agent.id).await?, agent);
    assert_err!(t.store.get_agent(t.tenant, uuid::Uuid::now_v7()).await, StoreError::NotFound(_));
    Ok(())
}

async fn agents_list_by_name(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    assert!(t.store.list_agents(t.tenant).await?.is_empty());
    let c = t.agent("charlie").await?;
    let a = t.agent("alpha").await?;
    let b = t.agent("bravo").await?;
    // Two agents may share a name; the id breaks the tie (oldest first).
    let b2 = t.agent("bravo").await?;
    t.agent_in(other, "alpha-elsewhere").await?;

    let names: Vec<_> = t.store.list_agents(t.tenant).await?.into_iter().map(|a| a.id).collect();
    assert_eq!(names, vec![a.id, b.id, b2.id, c.id]);
    assert_eq!(t.store.list_agents(other).await?.len(), 1);
    Ok(())
}

async fn agent_status_changes(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let online = t.store.set_agent_status(t.tenant, agent.id, AgentStatus::Online, t.at(5.0)).await?;
    assert_eq!(online.status, AgentStatus::Online);
    assert_eq!(online.updated_at, t.at(5.0));
    assert_eq!(online.created_at, agent.created_at);

    for status in AgentStatus::ALL {
        let changed = t.store.set_agent_status(t.tenant, agent.id, status, t.at(6.0)).await?;
        assert_eq!(changed.status, status);
        assert_eq!(t.store.get_agent(t.tenant, agent.id).await?.status, status);
    }

    let before = t.store.get_agent(t.tenant, agent.id).await?;
    assert_err!(
        t.store.set_agent_status(other, agent.id, AgentStatus::Online, t.at(7.0)).await,
        StoreError::NotFound(_)
    );
    assert_err!(
        t.store.set_agent_status(t.tenant, uuid::Uuid::now_v7(), AgentStatus::Online, t.at(7.0)).await,
        StoreError::NotFound(_)
    );
    assert_eq!(t.store.get_agent(t.tenant, agent.id).await?, before, "a refused change changes nothing");
    Ok(())
}

/// A flush of coalesced heartbeats: each agent's `last_seen_at` and metrics, never moved back
/// by an older beat, and a revoked agent left alone.
async fn heartbeats_are_written_in_one_batch(t: Ctx) -> anyhow::Result<()> {
    let a = t.agent("host-a").await?;
    let b = t.agent("host-b").await?;
    let revoked = t.agent("host-revoked").await?;
    t.store.revoke_agent(t.tenant, revoked.id, t.at(1.0)).await?;
    let metrics = |bots_running: u32| AgentMetrics {
        cpu_percent: 12.5,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disk_used_bytes: 10 << 30,
        disk_total_bytes: 100 << 30,
        load1: 0.75,
        bots_running,
    };
    let beat = |agent_id, secs, bots| Heartbeat { agent_id, at: t.at(secs), metrics: metrics(bots) };
    t.store.record_heartbeats(&[beat(a.id, 10.0, 3), beat(b.id, 11.0, 4), beat(revoked.id, 12.0, 5)]).await?;
    let seen = t.store.get_agent(t.tenant, a.id).await?;
    assert_eq!((seen.last_seen_at, seen.metrics), (Some(t.at(10.0)), Some(metrics(3))));
    let seen = t.store.get_agent(t.tenant, b.id).await?;
    assert_eq!((seen.last_seen_at, seen.metrics), (Some(t.at(11.0)), Some(metrics(4))));
    let seen = t.store.get_agent(t.tenant, revoked.id).await?;
    assert_eq!((seen.last_seen_at, seen.metrics), (None, None), "a revoked agent is not seen");

    // An older beat (a flush that lost a race) never moves `last_seen_at` back.
    t.store.record_heartbeats(&[beat(a.id, 5.0, 9), beat(b.id, 20.0, 6)]).await?;
    assert_eq!(t.store.get_agent(t.tenant, a.id).await?.last_seen_at, Some(t.at(10.0)));
    let seen = t.store.get_agent(t.tenant, b.id).await?;
    assert_eq!((seen.last_seen_at, seen.metrics), (Some(t.at(20.0)), Some(metrics(6))));
    t.store.record_heartbeats(&[]).await?;
    Ok(())
}

/// A drain is kept apart from presence: it shows as `draining` whether the agent is connected
/// or silent, survives a reconnect, counts as draining, is idempotent, and a revoked agent can
/// neither be drained nor show as draining.
async fn a_drain_outlives_presence_changes_and_yields_to_revocation(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let hello = AgentHello { hostname: "h".into(), os: "linux".into(), arch: "x86_64".into(), version: "t".into() };
    t.store.agent_connected(agent.id, "r1", &hello, t.at(1.0)).await?;
    let drained = t.store.set_agent_drained(t.tenant, agent.id, true, t.at(2.0)).await?;
    assert_eq!((drained.status, drained.updated_at), (AgentStatus::Draining, t.at(2.0)));
    assert_eq!(t.store.set_agent_drained(t.tenant, agent.id, true, t.at(3.0)).await?.status, AgentStatus::Draining);
    assert!(t.store.agent_present(t.tenant, agent.id).await?);
    assert_eq!(t.store.agent_counts(Some(t.tenant)).await?[&AgentStatus::Draining], 1);

    let silent = t.store.mark_silent_agents_offline(t.at(50.0), t.at(60.0)).await?;
    assert_eq!(silent.iter().map(|a| (a.id, a.status)).collect::<Vec<_>>(), [(agent.id, AgentStatus::Draining)]);
    let away = t.store.get_agent(t.tenant, agent.id).await?;
    assert_eq!((away.status, away.connected_replica), (AgentStatus::Draining, None), "drained while away");
    assert!(!t.store.agent_present(t.tenant, agent.id).await?);
    assert_eq!(t.store.agent_connected(agent.id, "r2", &hello, t.at(70.0)).await?.status, AgentStatus::Draining);

    assert_err!(t.store.set_agent_drained(other, agent.id, false, t.at(71.0)).await, StoreError::NotFound(_));
    assert_err!(
        t.store.set_agent_drained(t.tenant, uuid::Uuid::now_v7(), true, t.at(71.0)).await,
        StoreError::NotFound(_)
    );
    assert_eq!(t.store.set_agent_drained(t.tenant, agent.id, false, t.at(72.0)).await?.status, AgentStatus::Online);
    assert_eq!(t.store.set_agent_drained(t.tenant, agent.id, false, t.at(73.0)).await?.status, AgentStatus::Online);

    t.store.set_agent_drained(t.tenant, agent.id, true, t.at(74.0)).await?;
    assert_eq!(t.store.revoke_agent(t.tenant, agent.id, t.at(75.0)).await?.status, AgentStatus::Revoked);
    assert_err!(t.store.set_agent_drained(t.tenant, agent.id, false, t.at(76.0)).await, StoreError::Conflict(_));
    assert_eq!(t.store.get_agent(t.tenant, agent.id).await?.status, AgentStatus::Revoked, "revocation wins");
    Ok(())
}

/// No foreign key deletes an agent's commands with it on Postgres (migration 0014): the
/// store does, in the deleting transaction; an agent with bots is refused and keeps them.
async fn a_deleted_agent_takes_its_commands_along(t: Ctx) -> anyhow::Result<()> {
    let gone = t.agent("host-gone").await?;
    let kept = t.agent("host-kept").await?;
    let hosting = t.agent("host-with-bot").await?;
    t.bot("b", hosting.id, &[]).await?;
    // Finished and queued commands, and one placed by an order.
    let mut commands = vec![t.command_in(gone.id, CommandStatus::Succeeded).await?.id, t.enqueue(gone.id).await?.id];
    let placed = t.store.place_orders(&[exec_order(t.tenant, gone.id)], TIMES, t.at(1.0)).await?;
    commands.push(placed.into_iter().next().context("no answer")??.command.id);
    let neighbours = [t.enqueue(kept.id).await?.id, t.enqueue(hosting.id).await?.id];

    assert_err!(t.store.delete_agent(t.tenant, hosting.id).await, StoreError::Conflict(_));
    t.store.delete_agent(t.tenant, gone.id).await?;
    assert_err!(t.store.get_agent(t.tenant, gone.id).await, StoreError::NotFound(_));
    for id in commands {
        assert_err!(t.store.get_command(t.tenant, id).await, StoreError::NotFound(_));
    }
    for id in neighbours {
        assert!(t.store.get_command(t.tenant, id).await.is_ok(), "another agent's command {id} went too");
    }
    assert_err!(t.store.delete_agent(t.tenant, gone.id).await, StoreError::NotFound(_));
    Ok(())
}
