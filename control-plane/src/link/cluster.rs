//! Signals between replicas. Every signal is delivered to this replica directly and, on
//! Postgres, queued for the others: one task sends the queue in `NOTIFY`s packed with as many
//! signals as fit (see `store::notify`), and each replica's listener applies what the others
//! sent, in order. On SQLite there is one process and this is purely local.
//!
//! Only while another replica is there: each replica says `hello` once it listens, again every
//! [`ANNOUNCE_EVERY`], and at once to a replica it has not heard before (so two replicas
//! know of each other within a round trip of the second one starting, before it serves).
//! A replica that heard no other for [`PEER_TTL`] sends nothing but its hellos: a single
//! server on Postgres would otherwise send a `NOTIFY` for every few events — 10,386 of them in
//! one `api-queue` run, each delivered back to its own listener — for nobody.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use botmox_contract::{events::Event, Id};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

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
    Logs {
        bot: Id,
    },
    /// "I am here and listening" (see the module's doc).
    Hello,
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
    /// The other replicas heard from, and when last.
    peers: Mutex<HashMap<String, Instant>>,
}

/// A replica says `hello` this often.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);
/// A replica not heard from for this long is taken to be gone (three hellos missed).
pub const PEER_TTL: Duration = Duration::from_secs(35);

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
        Self { replica, outbox, peers: Mutex::default() }
    }

    /// Queues a signal for the other replicas (returns at once), if there are any.
    pub(crate) fn send(&self, message: Message) {
        if let Some(outbox) = &self.outbox {
            if matches!(message, Message::Hello) || self.has_peers() {
                let _ = outbox.send(message);
            }
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether another replica was heard from within [`PEER_TTL`].
    pub fn has_peers(&self) -> bool {
        self.peers().values().any(|heard| heard.elapsed() < PEER_TTL)
    }

    /// Notes a signal from `replica`; true if it was not known (or had been taken for gone).
    fn heard(&self, replica: &str) -> bool {
        let mut peers = self.peers();
        peers.retain(|_, heard| heard.elapsed() < PEER_TTL);
        peers.insert(replica.to_owned(), Instant::now()).is_none()
    }
}

async fn send_loop(replica: String, store: Store, mut queue: mpsc::UnboundedReceiver<Message>) {
    let head = head(&replica);
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

/// How every packet of `replica` begins.
fn head(replica: &str) -> String {
    format!("{{\"from\":{},\"m\":[", serde_json::to_string(replica).unwrap_or_default())
}

async fn notify(store: &Store, mut payload: String) {
    payload.push_str("]}");
    if let Err(e) = store.notify(&payload).await {
        tracing::warn!(error = %e, "could not signal the other replicas");
    }
}

/// Applies the other replicas' signals here, for as long as the server runs; says `hello`
/// once listening, then every [`ANNOUNCE_EVERY`].
pub async fn listen(state: AppState) -> anyhow::Result<()> {
    let Some(stream) = state.store.listen().await? else { return Ok(()) };
    let announcer = state.clone();
    let announcing = tokio::spawn(async move {
        let mut every = tokio::time::interval(ANNOUNCE_EVERY);
        loop {
            every.tick().await;
            announcer.cluster.send(Message::Hello);
        }
    });
    let own = head(&state.cluster.replica);
    futures::pin_mut!(stream);
    while let Some(payload) = stream.next().await {
        // Our own packets come back too: skip them before parsing them.
        if payload.starts_with(&own) {
            continue;
        }
        let Ok(packet) = serde_json::from_str::<Packet>(&payload) else {
            tracing::warn!("ignoring an unreadable cluster signal");
            continue;
        };
        if packet.from == state.cluster.replica {
            continue;
        }
        if state.cluster.heard(&packet.from) {
            tracing::info!(replica = %packet.from, "another replica is here");
            state.cluster.send(Message::Hello);
        }
        for message in packet.messages {
            apply(&state, message);
        }
    }
    announcing.abort();
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
        Message::Hello => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (Cluster, mpsc::UnboundedReceiver<Message>) {
        let (outbox, queue) = mpsc::unbounded_channel();
        (Cluster { replica: "a".into(), outbox: Some(outbox), peers: Mutex::default() }, queue)
    }

    fn sent(queue: &mut mpsc::UnboundedReceiver<Message>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.try_recv().ok())
            .map(|message| match message {
                Message::Hello => "hello",
                Message::Wake { .. } => "wake",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_lone_replica_sends_only_its_hellos_until_another_is_heard() {
        let (cluster, mut queue) = cluster();
        let agent = uuid::Uuid::now_v7();
        cluster.send(Message::Wake { agent });
        cluster.send(Message::Hello);
        assert_eq!(sent(&mut queue), ["hello"], "nobody to wake: nothing sent but the hello");
        assert!(!cluster.has_peers());

        assert!(cluster.heard("b"), "b is new");
        assert!(!cluster.heard("b"), "b is known now");
        assert!(cluster.has_peers());
        cluster.send(Message::Wake { agent });
        assert_eq!(sent(&mut queue), ["wake"]);
    }

    #[test]
    fn a_replica_not_heard_for_the_ttl_is_taken_for_gone() {
        let (cluster, mut queue) = cluster();
        let long_ago = Instant::now().checked_sub(PEER_TTL + Duration::from_secs(1));
        let Some(long_ago) = long_ago else { return };
        cluster.peers().insert("b".into(), long_ago);
        assert!(!cluster.has_peers());
        cluster.send(Message::Wake { agent: uuid::Uuid::now_v7() });
        assert!(sent(&mut queue).is_empty());
        assert!(cluster.heard("b"), "heard again after the TTL: new again, so it gets a hello back");
    }
}
