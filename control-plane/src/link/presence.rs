//! Presence: heartbeats are kept in memory and written in one batch per tick (never a write
//! per heartbeat per agent). The supervisor marks agents silent for three intervals offline.

use std::{collections::HashMap, sync::Mutex};

use botmox_contract::{agents::AgentMetrics, Id, Timestamp};

use crate::{state::AppState, store::Heartbeat};

#[derive(Default)]
pub struct Presence {
    pending: Mutex<HashMap<Id, Heartbeat>>,
}

impl Presence {
    /// Records a heartbeat; a newer one of the same agent replaces an unwritten older one.
    pub fn beat(&self, agent_id: Id, metrics: AgentMetrics, at: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(agent_id, Heartbeat { agent_id, at, metrics });
    }

    fn take(&self) -> Vec<Heartbeat> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().map(|(_, beat)| beat).collect()
    }
}

/// Writes the heartbeats batched since the last call (every replica does this for its own
/// agents; deciding who is offline is the supervisor's).
pub async fn flush(state: &AppState) -> anyhow::Result<()> {
    let beats = state.presence.take();
    state.store.record_heartbeats(&beats).await?;
    Ok(())
}

/// Flushes every half `hygiene_interval` until the server stops.
pub async fn run(state: AppState) {
    let mut every = tokio::time::interval(state.settings.hygiene_interval / 2);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = flush(&state).await {
            tracing::error!(error = %e, "could not write heartbeats");
        }
    }
}
