//! Signals between replicas. Every signal is delivered to this replica directly and, on
//! Postgres, sent to the others with `NOTIFY` (see `store::notify`); each replica's listener
//! applies what the others sent. On SQLite there is one process and this is purely local.

use botmox_contract::{events::Event, Id};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::hub::Control;
use crate::{events::EventBus, state::AppState};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Message {
    Wake { agent: Id },
    Close { agent: Id, code: u16 },
    Cancel { agent: Id, command: Id },
    Event { tenant: Id, event: Box<Event> },
    Logs { bot: Id },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    message: Message,
}

pub struct Cluster {
    replica: String,
}

impl Cluster {
    pub fn new(replica: impl Into<String>) -> Self {
        Self { replica: replica.into() }
    }
}

impl AppState {
    async fn broadcast(&self, message: Message) {
        if !self.store.is_shared() {
            return;
        }
        let envelope = Envelope { from: self.cluster.replica.clone(), message };
        let payload = match serde_json::to_string(&envelope) {
            Ok(payload) if payload.len() <= crate::store::MAX_NOTIFY_PAYLOAD => payload,
            Ok(payload) => {
                tracing::warn!(
                    bytes = payload.len(),
                    "a cluster signal is too large for NOTIFY; other replicas miss it"
                );
                return;
            }
            Err(_) => return,
        };
        if let Err(e) = self.store.notify(&payload).await {
            tracing::warn!(error = %e, "could not signal the other replicas");
        }
    }

    /// Tells the agent's dispatcher, wherever it runs, that commands may be waiting.
    pub async fn wake_agent(&self, agent_id: Id) {
        self.hub.wake(agent_id);
        self.broadcast(Message::Wake { agent: agent_id }).await;
    }

    /// Closes the agent's connection wherever it is (revocation).
    pub async fn close_agent(&self, agent_id: Id, code: u16, reason: &'static str) {
        self.hub.control(agent_id, Control::Close { code, reason });
        self.broadcast(Message::Close { agent: agent_id, code }).await;
    }

    /// Tells the agent, wherever it is connected, to stop executing a command.
    pub async fn cancel_on_agent(&self, agent_id: Id, command_id: Id) {
        self.hub.control(agent_id, Control::Cancel(command_id));
        self.broadcast(Message::Cancel { agent: agent_id, command: command_id }).await;
    }

    /// Publishes an event to the tenant's event streams on every replica.
    pub async fn publish(&self, tenant_id: Id, payload: botmox_contract::events::EventPayload) {
        let event = EventBus::event(payload, self.clock.now());
        self.events.publish(tenant_id, event.clone());
        self.broadcast(Message::Event { tenant: tenant_id, event: Box::new(event) }).await;
    }

    /// Wakes the followers of a bot's log on every replica.
    pub async fn logs_arrived(&self, bot_id: Id) {
        self.log_bus.notify(bot_id);
        self.broadcast(Message::Logs { bot: bot_id }).await;
    }
}

/// Applies the other replicas' signals here, for as long as the server runs.
pub async fn listen(state: AppState) -> anyhow::Result<()> {
    let Some(stream) = state.store.listen().await? else { return Ok(()) };
    futures::pin_mut!(stream);
    while let Some(payload) = stream.next().await {
        let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
            tracing::warn!("ignoring an unreadable cluster signal");
            continue;
        };
        if envelope.from == state.cluster.replica {
            continue;
        }
        match envelope.message {
            Message::Wake { agent } => state.hub.wake(agent),
            Message::Close { agent, code } => {
                state.hub.control(agent, Control::Close { code, reason: "closed by another replica" });
            }
            Message::Cancel { agent, command } => {
                state.hub.control(agent, Control::Cancel(command));
            }
            Message::Event { tenant, event } => state.events.publish(tenant, *event),
            Message::Logs { bot } => state.log_bus.notify(bot),
        }
    }
    Ok(())
}
