//! The server's notion of "now". Production reads the system clock; tests use a manual clock
//! they advance explicitly, so leases, TTLs and presence are tested without sleeping.

use std::sync::{Arc, Mutex};

use botmox_contract::Timestamp;

#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<Mutex<Timestamp>>),
}

impl Clock {
    pub fn manual(start: Timestamp) -> Self {
        Clock::Manual(Arc::new(Mutex::new(start)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => chrono::Utc::now(),
            Clock::Manual(now) => *now.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance(&self, by: chrono::Duration) {
        if let Clock::Manual(now) = self {
            let mut now = now.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *now += by;
        }
    }
}
