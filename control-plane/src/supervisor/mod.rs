//! The supervisor: the control plane watching the fleet. One replica at a time runs it (a
//! Postgres advisory lock; SQLite is one process), and another takes over within seconds when
//! that one dies. Each tick: mark silent agents offline, return expired leases to the queue,
//! dead-letter and time out commands, expire stale ones, reconcile desired with observed state,
//! resolve incidents that healed; now and then, apply retention. Every action is audited with
//! the supervisor as actor and every change is published as an event.

mod reconcile;

use std::time::Duration;

use botmox_contract::{commands::CommandStatus, events::EventPayload};

use crate::state::AppState;

/// Reconciliation runs every this many ticks (it scans bots; the rest is index lookups).
const RECONCILE_EVERY: u64 = 4;
/// Retention runs every this many ticks.
const RETENTION_EVERY: u64 = 600;
/// How long a leader candidate waits between attempts to take over.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(2);

/// Retention periods.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub log_days: u32,
    pub command_days: u32,
    pub incident_days: u32,
    pub audit_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { log_days: 7, command_days: 30, incident_days: 30, audit_days: 365 }
    }
}

/// One supervisor tick (`n` counts ticks, for the less frequent work).
pub async fn tick(state: &AppState, n: u64) -> anyhow::Result<()> {
    sweep_presence(state).await?;
    sweep_commands(state).await?;
    if n.is_multiple_of(RECONCILE_EVERY) {
        reconcile::run(state).await?;
        crate::incidents::rules::resolve_healed(state).await?;
    }
    if n.is_multiple_of(RETENTION_EVERY) {
        retention(state).await?;
    }
    Ok(())
}

async fn sweep_presence(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let silence = chrono::Duration::from_std(state.settings.heartbeat_interval * 3)?;
    for agent in state.store.mark_silent_agents_offline(now - silence, now).await? {
        tracing::info!(agent_id = %agent.id, name = %agent.name, "agent offline: missed three heartbeats");
        // A connection that is still open is stale: make the agent reconnect with a snapshot.
        state.close_agent(agent.id, crate::link::hub::CLOSE_STALE, "missed heartbeats: reconnect").await;
        let tenant = state.store.agent_tenant(agent.id).await?;
        let presence =
            EventPayload::AgentPresence { agent_id: agent.id, name: agent.name.clone(), status: agent.status };
        state.publish(tenant, presence).await;
        for bot in state.store.bots_of_agent(agent.id).await? {
            state.publish(tenant, EventPayload::BotState((&bot).into())).await;
        }
        crate::audit::supervisor_action(
            state,
            tenant,
            "mark_agent_offline",
            format!("agent:{}", agent.id),
            serde_json::json!({
                "last_seen_at": agent.last_seen_at,
            }),
        )
        .await;
        crate::incidents::rules::agent_offline(state, tenant, &agent).await?;
    }
    Ok(())
}

async fn sweep_commands(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let sweep = state.store.sweep_leases(now).await?;
    let expired = state.store.expire_commands(now).await?;
    for command in sweep.requeued.iter().chain(&sweep.dead_lettered).chain(&sweep.timed_out).chain(&expired) {
        let tenant = state.store.agent_tenant(command.agent_id).await?;
        let action = match command.status {
            CommandStatus::Queued => {
                tracing::info!(command_id = %command.id, attempt = command.attempt, "lease expired: back to the queue");
                state.wake_agent(command.agent_id).await;
                "requeue_command"
            }
            CommandStatus::DeadLettered => "dead_letter_command",
            CommandStatus::TimedOut => "time_out_command",
            _ => "expire_command",
        };
        state.publish(tenant, EventPayload::CommandStatus(command.into())).await;
        crate::audit::supervisor_action(
            state,
            tenant,
            action,
            format!("command:{}", command.id),
            serde_json::json!({
                "kind": command.kind.as_str(), "agent_id": command.agent_id, "attempt": command.attempt,
            }),
        )
        .await;
        crate::incidents::rules::command_finished(state, tenant, command).await?;
    }
    Ok(())
}

async fn retention(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let days = |d: u32| now - chrono::Duration::days(i64::from(d));
    let r = state.settings.retention;
    let pruned =
        state.store.prune(days(r.log_days), days(r.command_days), days(r.incident_days), days(r.audit_days)).await?;
    if pruned != Default::default() {
        tracing::info!(?pruned, "retention");
    }
    Ok(())
}

/// Runs the supervisor whenever this replica holds the leadership, until the server stops.
pub async fn run(state: AppState) {
    loop {
        let leadership = match state.store.try_lead().await {
            Ok(Some(leadership)) => leadership,
            Ok(None) => {
                tokio::time::sleep(TAKEOVER_INTERVAL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not contend for the supervisor");
                tokio::time::sleep(TAKEOVER_INTERVAL).await;
                continue;
            }
        };
        tracing::info!(replica = %state.settings.replica_id, "running the supervisor");
        lead(&state, leadership).await;
        tracing::warn!("lost the supervisor leadership");
    }
}

async fn lead(state: &AppState, mut leadership: crate::store::Leadership) {
    let mut every = tokio::time::interval(state.settings.hygiene_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        every.tick().await;
        if n.is_multiple_of(10) && !leadership.holds().await {
            return;
        }
        if let Err(e) = tick(state, n).await {
            tracing::error!(error = %e, "supervisor tick failed");
        }
        n += 1;
    }
}
