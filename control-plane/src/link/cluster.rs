//! Signals between replicas. Every signal is delivered to this replica directly and, on
//! Postgres, sent to the others with `NOTIFY` (see `store::notify`); each replica's listener
//! applies what the others sent. On SQLite there is one process and this is purely local.

use botmox_contract::{events::Event, Id};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::hub::Control;
use crate::{state::AppState, store::Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Message {
    Wake {
        agent: Id,
    },
    Close {
        agent: Id,
        code: u16,
    },
    Cancel {
        agent: Id,
        command: Id,
    },
    Event {
        tenant: Id,
        event: Box<Event>,
    },
    /// Several events in one signal (a bulk action's), fewer round trips than one each.
    Events {
        tenant: Id,
        events: Vec<Event>,
    },
    Logs {
        bot: Id,
    },
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

    /// Sends a signal to the other replicas (nothing on SQLite: there are none).
    pub(crate) async fn send(&self, store: &Store, message: Message) {
        if !store.is_shared() {
            return;
        }
        let envelope = Envelope { from: self.replica.clone(), message };
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
        if let Err(e) = store.notify(&payload).await {
            tracing::warn!(error = %e, "could not signal the other replicas");
        }
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
            Message::Events { tenant, events } => {
                for event in events {
                    state.events.publish(tenant, event);
                }
            }
            Message::Logs { bot } => state.log_bus.notify(bot),
        }
    }
    Ok(())
}
