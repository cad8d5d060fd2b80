//! The durable command queue: enqueue (idempotent), claim with a lease, ack, complete, cancel,
//! TTL expiry, lease re-queue and dead-lettering. The lifecycle is SPEC §3's:
//!
//! ```text
//! queued ──claim──▶ dispatched ──ack──▶ running ──complete──▶ succeeded | failed
//!   │  ▲               │   │                 │
//!   │  └─lease expired─┘   └──complete──▶    └─deadline passed──▶ timed_out
//!   │     (attempt < max)   (result without ack)
//!   ├─TTL passed──▶ expired          dispatched, lease expired, attempt = max ──▶ dead_lettered
//!   └─cancel (also from dispatched, running)──▶ cancelled
//! ```
//!
//! Any other transition is refused with [`StoreError::InvalidTransition`].

use std::time::Duration;

use botmox_contract::{
    audit::Actor,
    commands::{CommandKind, CommandStatus},
    Id,
};

#[allow(unused_imports)]
use super::{Result, Store, StoreError};

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub tenant_id: Id,
    pub agent_id: Id,
    pub bot_id: Option<Id>,
    pub kind: CommandKind,
    pub payload: serde_json::Value,
    /// Unique per tenant: a repeat returns the first command.
    pub idempotency_key: Option<String>,
    pub created_by: Actor,
    /// Not dispatched within this → `expired`.
    pub ttl: Duration,
    /// Dispatched and not acked within this → back to `queued` (or dead-lettered).
    pub lease: Duration,
    /// Acked and no result within this → `timed_out`.
    pub run_timeout: Duration,
    /// Dispatches allowed before dead-lettering.
    pub max_attempts: u32,
}

/// The result of an enqueue: a new command, or the first one with the same idempotency key.
#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(botmox_contract::commands::Command),
    Existing(botmox_contract::commands::Command),
}

/// How an agent says a command ended.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub ok: bool,
    pub result: serde_json::Value,
    pub error: Option<String>,
}

/// What one pass of lease/deadline hygiene changed.
#[derive(Debug, Clone, Default)]
pub struct LeaseSweep {
    pub requeued: Vec<botmox_contract::commands::Command>,
    pub dead_lettered: Vec<botmox_contract::commands::Command>,
    pub timed_out: Vec<botmox_contract::commands::Command>,
}

/// Filters of `GET /commands`, newest first.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    pub status: Option<CommandStatus>,
    pub agent_id: Option<Id>,
    pub bot_id: Option<Id>,
    /// Only commands older than this id (the API's cursor).
    pub before_id: Option<Id>,
    pub limit: u32,
}
