//! Bots: the supervised process definitions placed on agents, and their observed state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Program to start; looked up on the agent's `PATH` when not absolute.
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory on the agent's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variable → name of a secret in the vault. Values never leave the server
    /// except towards the agent that runs this bot.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// Restarts allowed within `window_seconds` before the bot is `failed`.
    pub max_restarts: u32,
    pub window_seconds: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Running this long resets the backoff.
    pub stable_after_seconds: u64,
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            window_seconds: 300,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            stable_after_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct StopSpec {
    /// Grace period between the polite signal and killing the process tree.
    pub timeout_seconds: u64,
}

impl Default for StopSpec {
    fn default() -> Self {
        Self { timeout_seconds: 10 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    #[default]
    Stopped,
}

/// Observed state of a bot, as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BotState {
    /// Never ran.
    Pending,
    Starting,
    Running,
    Stopping,
    /// Stopped by request.
    Stopped,
    /// Exited with code 0 and not restarted.
    Exited,
    /// Non-zero exit or killed by a signal.
    Crashed,
    /// Waiting to restart.
    Backoff,
    /// Gave up after `max_restarts` within `window_seconds`.
    Failed,
    /// Its agent is offline.
    Unknown,
}

impl BotState {
    pub const ALL: [BotState; 10] = [
        BotState::Pending,
        BotState::Starting,
        BotState::Running,
        BotState::Stopping,
        BotState::Stopped,
        BotState::Exited,
        BotState::Crashed,
        BotState::Backoff,
        BotState::Failed,
        BotState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BotState::Pending => "pending",
            BotState::Starting => "starting",
            BotState::Running => "running",
            BotState::Stopping => "stopping",
            BotState::Stopped => "stopped",
            BotState::Exited => "exited",
            BotState::Crashed => "crashed",
            BotState::Backoff => "backoff",
            BotState::Failed => "failed",
            BotState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// A bot definition as created through the API (`POST /bots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotSpec {
    pub name: String,
    pub agent_id: Uuid,
    pub exec: ExecSpec,
    #[serde(default)]
    pub restart: RestartSpec,
    #[serde(default)]
    pub stop: StopSpec,
    #[serde(default)]
    pub desired_state: DesiredState,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A partial update (`PATCH /bots/{id}`): absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotPatch {
    pub name: Option<String>,
    pub agent_id: Option<Uuid>,
    pub exec: Option<ExecSpec>,
    pub restart: Option<RestartSpec>,
    pub stop: Option<StopSpec>,
    pub tags: Option<Vec<String>>,
}

/// A bot: its definition plus what its agent last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bot {
    pub id: Uuid,
    pub name: String,
    pub agent_id: Uuid,
    pub exec: ExecSpec,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub desired_state: DesiredState,
    pub tags: Vec<String>,
    pub state: BotState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_exit_code: Option<i32>,
    pub last_exit_signal: Option<i32>,
    pub restart_count: u32,
    pub last_error: Option<String>,
    /// Optimistic-concurrency version; send it back as `If-Match` to update.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One page of `GET /bots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BotList {
    pub items: Vec<Bot>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Bots matching the filter (ignoring `state`), by observed state.
    pub counts: BTreeMap<BotState, u64>,
    /// Bots matching the whole filter.
    pub total: u64,
}

/// `POST /bots/import`: many definitions, created all together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotImport {
    /// 1 to 10,000 definitions, each checked like the body of `POST /bots`.
    pub bots: Vec<BotSpec>,
}

/// What an import created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BotsImported {
    /// How many bots were created: all of the request's.
    pub created: u64,
    /// The new bots' ids, in the order of the request's definitions (`GET /bots/{id}` reads one).
    pub bots: Vec<Uuid>,
    /// `bot.start` commands queued for the bots whose `desired_state` is `running`.
    pub starts_queued: u64,
}
