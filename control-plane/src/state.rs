//! `AppState`: what every handler may reach. Cheap to clone (pools and `Arc`s inside).

use std::{sync::Arc, time::Duration};

use crate::{
    auth::{rate_limit::RateLimits, session::SessionKeys},
    clock::Clock,
    events::EventBus,
    link::{cluster::Cluster, hub::Hub, logs::LogBus, presence::Presence},
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
    /// Agents connected to this replica.
    pub hub: Arc<Hub>,
    /// Live events of every tenant, with a bounded backlog for `Last-Event-ID`.
    pub events: Arc<EventBus>,
    /// Wake-ups for log followers.
    pub log_bus: Arc<LogBus>,
    /// Heartbeats waiting to be written in the next batch.
    pub presence: Arc<Presence>,
    /// Signals to the other replicas (Postgres `NOTIFY`).
    pub cluster: Arc<Cluster>,
    /// Cancelled when the server begins to shut down: long-lived responses (event streams, log
    /// follows, long polls) end so the graceful drain can finish.
    pub shutdown: tokio_util::sync::CancellationToken,
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
    /// This process among the replicas (recorded as an agent's `connected_replica`).
    pub replica_id: String,
    /// Agents heartbeat this often; three missed → offline.
    pub heartbeat_interval: Duration,
    /// A dispatched command not acked within this goes back to the queue.
    pub command_lease: Duration,
    /// A command not dispatched within this expires.
    pub command_ttl: Duration,
    /// An acked command without a result within this times out.
    pub command_run_timeout: Duration,
    /// Dispatches before a command is dead-lettered.
    pub command_max_attempts: u32,
    /// How often the supervisor ticks (presence, leases, TTLs; reconciliation every 4th tick).
    pub hygiene_interval: Duration,
    /// Log lines kept per bot.
    pub log_keep_lines: u64,
    /// How long logs, finished commands, resolved incidents and audit entries are kept.
    pub retention: crate::supervisor::Retention,
}

impl Settings {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            trust_proxy_headers: false,
            limits: Default::default(),
            cors_origins: Vec::new(),
            replica_id: format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple()),
            heartbeat_interval: Duration::from_secs(5),
            command_lease: Duration::from_secs(30),
            command_ttl: Duration::from_secs(15 * 60),
            command_run_timeout: Duration::from_secs(5 * 60),
            command_max_attempts: 5,
            hygiene_interval: Duration::from_millis(500),
            log_keep_lines: 10_000,
            retention: Default::default(),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "botmox".into())
}
