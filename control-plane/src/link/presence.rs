//! Presence: heartbeats are kept in memory and written in one batch per tick (never a write
//! per heartbeat per agent); agents silent for three intervals are marked offline and their
//! bots `unknown`.

use std::{collections::HashMap, sync::Mutex};

use botmox_contract::{
    agents::{AgentMetrics, AgentStatus},
    events::EventPayload,
    Id, Timestamp,
};

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

/// One presence tick: write the batched heartbeats, then mark the silent agents offline.
pub async fn tick(state: &AppState) -> anyhow::Result<()> {
    let beats = state.presence.take();
    state.store.record_heartbeats(&beats).await?;
    let now = state.clock.now();
    let silence = chrono::Duration::from_std(state.settings.heartbeat_interval * 3)?;
    for agent in state.store.mark_silent_agents_offline(now - silence, now).await? {
        tracing::info!(agent_id = %agent.id, name = %agent.name, "agent offline: missed three heartbeats");
        let tenant = state.store.agent_tenant(agent.id).await?;
        state
            .publish(
                tenant,
                EventPayload::AgentPresence {
                    agent_id: agent.id,
                    name: agent.name.clone(),
                    status: AgentStatus::Offline,
                },
            )
            .await;
        for bot in state.store.bots_of_agent(agent.id).await? {
            state.publish(tenant, EventPayload::BotState((&bot).into())).await;
        }
    }
    Ok(())
}
