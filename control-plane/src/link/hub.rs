//! The agents connected to this replica. Each connection gets a wake-up (`Notify`: "there may
//! be commands for you") and a control channel (close it, cancel a command). A new connection
//! of an agent replaces the old one, which is told to close: no "session already exists".

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use botmox_contract::{protocol::CommandEnvelope, Id};
use tokio::sync::{mpsc, Notify};

/// Close codes the agent can act on.
pub const CLOSE_REPLACED: u16 = 4000;
pub const CLOSE_REVOKED: u16 = 4001;
pub const CLOSE_SHUTDOWN: u16 = 4002;
/// The supervisor marked the agent offline (missed heartbeats): reconnect and say hello, so
/// the snapshot restores the truth.
pub const CLOSE_STALE: u16 = 4003;
/// The store could not apply a frame just now: nothing after the refused frame was confirmed;
/// reconnect with backoff and send it again (the agent also sees the `unavailable` error frame).
pub const CLOSE_RETRY: u16 = 4004;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Close { code: u16, reason: &'static str },
    Cancel(Id),
}

struct Entry {
    conn_id: u64,
    wake: Arc<Notify>,
    control: mpsc::UnboundedSender<Control>,
    /// Commands placed already dispatched to this connection (see [`Hub::deliver`]); set once
    /// its dispatcher runs (WebSocket connections only, after the agent's hello).
    deliveries: Option<mpsc::UnboundedSender<Vec<CommandEnvelope>>>,
}

/// What a connection holds while it is registered.
pub struct Registration {
    pub conn_id: u64,
    pub wake: Arc<Notify>,
    pub control: mpsc::UnboundedReceiver<Control>,
}

#[derive(Default)]
pub struct Hub {
    entries: Mutex<HashMap<Id, Entry>>,
    next_id: AtomicU64,
    /// Cancels for long-polling agents between two polls, delivered with the next one.
    pending_cancels: Mutex<HashMap<Id, Vec<Id>>>,
}

impl Hub {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a connection of `agent_id`, closing the one it replaces.
    pub fn register(&self, agent_id: Id) -> Registration {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let previous =
            self.entries().insert(agent_id, Entry { conn_id, wake: wake.clone(), control: tx, deliveries: None });
        if let Some(old) = previous {
            let _ = old.control.send(Control::Close { code: CLOSE_REPLACED, reason: "replaced by a newer connection" });
        }
        Registration { conn_id, wake, control: rx }
    }

    /// Removes the connection, unless a newer one already replaced it. Returns whether it was
    /// still the agent's current connection here (if not, the newer one owns the agent's state).
    pub fn unregister(&self, agent_id: Id, conn_id: u64) -> bool {
        let mut entries = self.entries();
        if entries.get(&agent_id).is_some_and(|e| e.conn_id == conn_id) {
            entries.remove(&agent_id);
            true
        } else {
            false
        }
    }

    /// "There may be commands for you." A wake-up sent while the dispatcher is busy is kept
    /// (a `Notify` permit), so none is lost between a claim and the next wait.
    pub fn wake(&self, agent_id: Id) {
        if let Some(entry) = self.entries().get(&agent_id) {
            entry.wake.notify_one();
        }
    }

    /// Opens the connection's delivery channel (its dispatcher reads it): from now on commands
    /// for the agent may be placed already dispatched to it. `None` if the connection has been
    /// replaced meanwhile.
    pub fn open_deliveries(&self, agent_id: Id, conn_id: u64) -> Option<mpsc::UnboundedReceiver<Vec<CommandEnvelope>>> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&agent_id).filter(|e| e.conn_id == conn_id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        entry.deliveries = Some(tx);
        Some(rx)
    }

    /// Whether the agent has a connection here whose dispatcher takes deliveries: a command
    /// for it may skip the queue (placed `dispatched`, handed to [`Hub::deliver`] after the commit).
    pub fn takes_deliveries(&self, agent_id: Id) -> bool {
        self.entries().get(&agent_id).and_then(|e| e.deliveries.as_ref()).is_some_and(|d| !d.is_closed())
    }

    /// Hands commands placed already dispatched to the agent's connection here. They come back
    /// if it has none (any more): the caller returns them to the queue.
    pub fn deliver(&self, agent_id: Id, envelopes: Vec<CommandEnvelope>) -> Result<(), Vec<CommandEnvelope>> {
        let entries = self.entries();
        match entries.get(&agent_id).and_then(|e| e.deliveries.as_ref()) {
            Some(deliveries) => deliveries.send(envelopes).map_err(|e| e.0),
            None => Err(envelopes),
        }
    }

    /// Sends a control message to the agent's connection here, if it has one. A cancel for an
    /// agent without one is kept for its next poll.
    pub fn control(&self, agent_id: Id, control: Control) -> bool {
        let sent = self.entries().get(&agent_id).is_some_and(|entry| entry.control.send(control.clone()).is_ok());
        if let (false, Control::Cancel(command_id)) = (sent, control) {
            let mut pending = self.pending_cancels.lock().unwrap_or_else(|p| p.into_inner());
            let list = pending.entry(agent_id).or_default();
            if list.len() < 1000 {
                list.push(command_id);
            }
        }
        sent
    }

    pub fn take_pending_cancels(&self, agent_id: Id) -> Vec<Id> {
        self.pending_cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&agent_id).unwrap_or_default()
    }

    pub fn is_connected(&self, agent_id: Id) -> bool {
        self.entries().contains_key(&agent_id)
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every connection to close (graceful shutdown: agents reconnect elsewhere).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for entry in self.entries().values() {
            let _ = entry.control.send(Control::Close { code, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_replaces_the_old_one() {
        let hub = Hub::default();
        let agent = uuid::Uuid::now_v7();
        let mut first = hub.register(agent);
        let second = hub.register(agent);
        assert_eq!(
            first.control.try_recv(),
            Ok(Control::Close { code: CLOSE_REPLACED, reason: "replaced by a newer connection" })
        );
        hub.unregister(agent, first.conn_id);
        assert!(hub.is_connected(agent), "the old connection leaving does not unregister the new one");
        hub.unregister(agent, second.conn_id);
        assert!(!hub.is_connected(agent));
    }

    #[test]
    fn a_wake_before_the_wait_is_not_lost() {
        let hub = Hub::default();
        let agent = uuid::Uuid::now_v7();
        let registration = hub.register(agent);
        hub.wake(agent);
        let notified = registration.wake.notified();
        futures::pin_mut!(notified);
        assert!(futures::FutureExt::now_or_never(notified).is_some());
    }

    fn envelope() -> CommandEnvelope {
        CommandEnvelope {
            id: uuid::Uuid::now_v7(),
            kind: botmox_contract::commands::CommandKind::BotStop,
            attempt: 1,
            payload: serde_json::json!({}),
            seq: Some(1),
            bot: None,
            secrets: Default::default(),
        }
    }

    #[test]
    fn deliveries_reach_only_the_connection_that_opened_them() {
        let hub = Hub::default();
        let agent = uuid::Uuid::now_v7();
        let first = hub.register(agent);
        assert!(!hub.takes_deliveries(agent), "a connection takes deliveries only once its dispatcher runs");
        assert!(hub.deliver(agent, vec![envelope()]).is_err());
        let mut deliveries = hub.open_deliveries(agent, first.conn_id).expect("the current connection");
        assert!(hub.takes_deliveries(agent));
        let sent = envelope();
        assert!(hub.deliver(agent, vec![sent.clone()]).is_ok());
        assert_eq!(deliveries.try_recv().map(|e| e[0].id), Ok(sent.id));

        // Replaced: the old connection cannot open deliveries, and the new one has none yet.
        let second = hub.register(agent);
        assert!(hub.open_deliveries(agent, first.conn_id).is_none());
        assert!(!hub.takes_deliveries(agent));
        let returned = hub.deliver(agent, vec![sent.clone()]).expect_err("nobody takes it");
        assert_eq!(returned[0].id, sent.id);

        // A dispatcher that ended (its receiver dropped) takes nothing either.
        let deliveries = hub.open_deliveries(agent, second.conn_id).expect("the current connection");
        drop(deliveries);
        assert!(!hub.takes_deliveries(agent));
        assert!(hub.deliver(agent, vec![envelope()]).is_err());
    }
}
