//! Wake-ups for log followers: "bot X has new lines". Followers read the lines from the store,
//! so a wake-up carries no data and a missed one only delays (the follower also re-reads on
//! its keep-alive tick).

use botmox_contract::Id;
use tokio::sync::broadcast;

pub struct LogBus {
    tx: broadcast::Sender<Id>,
}

impl Default for LogBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(4096).0 }
    }
}

impl LogBus {
    pub fn notify(&self, bot_id: Id) {
        let _ = self.tx.send(bot_id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Id> {
        self.tx.subscribe()
    }
}
