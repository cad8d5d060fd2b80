//! The periodic upkeep behind the protocol: write batched heartbeats and mark silent agents
//! offline, return unacked leases to the queue (waking their agents), dead-letter commands out
//! of attempts, time out commands without a result, expire commands nobody picked up.
//! Every step is an idempotent statement, so replicas running it at once do no harm.

use botmox_contract::events::EventPayload;

use super::presence;
use crate::state::AppState;

pub async fn tick(state: &AppState) -> anyhow::Result<()> {
    presence::tick(state).await?;
    let now = state.clock.now();
    let sweep = state.store.sweep_leases(now).await?;
    for command in &sweep.requeued {
        tracing::info!(command_id = %command.id, attempt = command.attempt, "lease expired: back to the queue");
        state.wake_agent(command.agent_id).await;
    }
    let expired = state.store.expire_commands(now).await?;
    for command in sweep.requeued.iter().chain(&sweep.dead_lettered).chain(&sweep.timed_out).chain(&expired) {
        let tenant = state.store.agent_tenant(command.agent_id).await?;
        state.publish(tenant, EventPayload::CommandStatus(command.into())).await;
    }
    Ok(())
}

/// Runs [`tick`] every `hygiene_interval` until the server stops.
pub async fn run(state: AppState) {
    let mut every = tokio::time::interval(state.settings.hygiene_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = tick(&state).await {
            tracing::error!(error = %e, "hygiene tick failed");
        }
    }
}
