//! Wire types of botmox: what crosses the network between the control plane, the agent, the
//! panel and API clients. Serde DTOs only — no business logic, no database or HTTP types.
//!
//! Every type that appears in the REST API derives `utoipa::ToSchema` when the `openapi`
//! feature is on (the control plane turns it on; the agent does not compile utoipa).

pub mod agents;
pub mod audit;
pub mod auth;
pub mod bots;
pub mod commands;
pub mod events;
pub mod guide;
pub mod incidents;
pub mod logs;
pub mod problem;
pub mod protocol;
pub mod secrets;

/// Every id is a UUIDv7, rendered as its canonical string.
pub type Id = uuid::Uuid;
/// Every time is UTC, rendered as RFC 3339.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
/// Free-form `key=value` labels of agents and pairing codes.
pub type Labels = std::collections::BTreeMap<String, String>;
