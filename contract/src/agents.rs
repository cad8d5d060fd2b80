//! Agents (hosts) and pairing.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Paired, never connected.
    Pending,
    Online,
    Offline,
    /// Drained by an operator (`POST /agents/{id}/drain`): its bots were stopped (their desired
    /// state kept) and it takes no new starts until undrained, connected or not
    /// (`connected_replica` says whether it is connected).
    Draining,
    /// Its token is revoked; it can do nothing any more.
    Revoked,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 5] =
        [AgentStatus::Pending, AgentStatus::Online, AgentStatus::Offline, AgentStatus::Draining, AgentStatus::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Draining => "draining",
            AgentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// Host metrics an agent sends with its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentMetrics {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub load1: f32,
    pub bots_running: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub labels: Labels,
    pub status: AgentStatus,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The server replica that holds its connection, while it is connected.
    pub connected_replica: Option<String>,
    pub metrics: Option<AgentMetrics>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /agents/{id}/drain` and `/undrain`: the agent as it is now, and the commands this
/// queued — a drain stops the bots that run (their desired state is kept), an undrain starts
/// the bots whose desired state is `running` again. Empty when there was nothing to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentDrain {
    pub agent: Agent,
    pub commands: Vec<crate::commands::Command>,
}

/// `POST /agents/pairing-codes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePairingCode {
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Seconds the code stays valid (60 to 604800; default 3600).
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 604_800))]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingCode {
    /// Human-typable, single use, e.g. `K7QX-M2PD-9HFA`.
    pub code: String,
    pub expires_at: DateTime<Utc>,
    /// Ready to paste on the host.
    pub command_line: String,
}

/// `POST /agents/pair`, sent by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub code: String,
    /// 1 to 253 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    #[serde(default)]
    pub labels: Labels,
}

/// Settings the server hands to its agents (at pairing and in `settings` frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerSettings {
    pub heartbeat_interval_s: u64,
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u64,
    /// Largest number of log lines in one `logs` frame.
    pub max_log_batch: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { heartbeat_interval_s: 5, max_frame_bytes: 1 << 20, max_log_batch: 500 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairResponse {
    pub agent_id: Uuid,
    /// The agent's credential; shown once.
    pub agent_token: String,
    pub server_settings: ServerSettings,
}

/// `PATCH /agents/{id}`: absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    pub name: Option<String>,
    pub labels: Option<Labels>,
}

/// `POST /agent/token/rotate`: the agent's new token. The old one keeps working until the new
/// one is first used, so a lost response cannot lock the agent out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedAgentToken {
    pub agent_token: String,
}
