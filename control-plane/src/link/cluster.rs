//! Signals between replicas. Every signal is delivered to this replica directly and, on
//! Postgres, queued for the others: one task sends the queue in `NOTIFY`s packed with as many
//! signals as fit (see `store::notify`), and each replica's listener applies what the others
//! sent, in order. On SQLite there is one process and this is purely local.

use botmox_contract::{events::Event, Id};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::hub::Control;
use crate::{state::AppState, store::Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Message {
    Wake { agent: Id },
    Close { agent: Id, code: u16 },
    Cancel { agent: Id, command: Id },
    Event { tenant: Id, event: Box<Event> },
    Logs { bot: Id },
}

/// What one `NOTIFY` carries: signals of one replica, in the order it sent them.
#[derive(Debug, Deserialize)]
struct Packet {
    from: String,
    #[serde(rename = "m")]
    messages: Vec<Message>,
}

/// Signals queued for the other replicas are sent by one task, packed into as few `NOTIFY`s
/// as fit (a burst of events costs a handful of round trips, not one each), in order.
pub struct Cluster {
    replica: String,
    outbox: Option<mpsc::UnboundedSender<Message>>,
}

/// Signals sent in one pass of the sender at most (then the next pass packs the rest).
const MAX_PASS: usize = 4096;

impl Cluster {
    /// The cluster of `store`: with Postgres, starts the sender task (needs a Tokio runtime);
    /// with SQLite there are no other replicas and nothing is sent.
    pub fn start(replica: impl Into<String>, store: &Store) -> Self {
        let replica = replica.into();
        let outbox = store.is_shared().then(|| {
            let (outbox, queue) = mpsc::unbounded_channel();
            tokio::spawn(send_loop(replica.clone(), store.clone(), queue));
            outbox
        });
        Self { replica, outbox }
    }

    /// Queues a signal for the other replicas (returns at once).
    pub(crate) fn send(&self, message: Message) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(message);
        }
    }
}

async fn send_loop(replica: String, store: Store, mut queue: mpsc::UnboundedReceiver<Message>) {
    let head = format!("{{\"from\":{},\"m\":[", serde_json::to_string(&replica).unwrap_or_default());
    let limit = crate::store::MAX_NOTIFY_PAYLOAD - 2;
    while let Some(first) = queue.recv().await {
        let mut pass = vec![first];
        while pass.len() < MAX_PASS {
            match queue.try_recv() {
                Ok(message) => pass.push(message),
                Err(_) => break,
            }
        }
        let mut payload = head.clone();
        for message in pass {
            let Ok(text) = serde_json::to_string(&message) else { continue };
            if head.len() + text.len() > limit {
                tracing::warn!(bytes = text.len(), "a cluster signal is too large for NOTIFY; other replicas miss it");
                continue;
            }
            if payload.len() + text.len() + 1 > limit {
                notify(&store, payload).await;
                payload = head.clone();
            }
            if payload.len() > head.len() {
                payload.push(',');
            }
            payload.push_str(&text);
        }
        if payload.len() > head.len() {
            notify(&store, payload).await;
        }
    }
}

async fn notify(store: &Store, mut payload: String) {
    payload.push_str("]}");
    if let Err(e) = store.notify(&payload).await {
        tracing::warn!(error = %e, "could not signal the other replicas");
    }
}

/// Applies the other replicas' signals here, for as long as the server runs.
pub async fn listen(state: AppState) -> anyhow::Result<()> {
    let Some(stream) = state.store.listen().await? else { return Ok(()) };
    futures::pin_mut!(stream);
    while let Some(payload) = stream.next().await {
        let Ok(packet) = serde_json::from_str::<Packet>(&payload) else {
            tracing::warn!("ignoring an unreadable cluster signal");
            continue;
        };
        if packet.from == state.cluster.replica {
            continue;
        }
        for message in packet.messages {
            apply(&state, message);
        }
    }
    Ok(())
}

fn apply(state: &AppState, message: Message) {
    match message {
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
