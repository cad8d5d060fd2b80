//! `AppState`: what every handler may reach. Cheap to clone (pools and `Arc`s inside).

use std::sync::Arc;

use crate::{
    auth::{rate_limit::RateLimits, session::SessionKeys},
    clock::Clock,
    secrets::vault::MasterKey,
    store::Store,
};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    pub sessions: Arc<SessionKeys>,
    pub settings: Arc<Settings>,
    pub limits: Arc<RateLimits>,
    /// `None` when no master key is configured (Postgres without one): the vault is off.
    pub master_key: Option<Arc<MasterKey>>,
}

/// Server settings handlers need at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How people and agents reach this server (used in generated command lines and links).
    pub public_url: String,
    /// Believe `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_proxy_headers: bool,
    pub limits: crate::auth::rate_limit::Limits,
    /// Origins allowed to call the API from a browser; empty = CORS off.
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

impl Settings {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            trust_proxy_headers: false,
            limits: Default::default(),
            cors_origins: Vec::new(),
        }
    }
}
