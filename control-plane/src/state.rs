//! `AppState`: what every handler may reach. Cheap to clone (pools and `Arc`s inside).

use std::sync::Arc;

use crate::{auth::session::SessionKeys, clock::Clock, store::Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    pub sessions: Arc<SessionKeys>,
    pub settings: Arc<Settings>,
}

/// Server settings handlers need at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How people and agents reach this server (used in generated command lines and links).
    pub public_url: String,
}
