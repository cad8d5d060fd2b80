//! Commands: units of work for one agent, delivered through the durable queue.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::Actor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CommandKind {
    #[serde(rename = "bot.start")]
    BotStart,
    #[serde(rename = "bot.stop")]
    BotStop,
    #[serde(rename = "bot.restart")]
    BotRestart,
    /// Deliver a changed definition.
    #[serde(rename = "bot.sync")]
    BotSync,
    #[serde(rename = "bot.remove")]
    BotRemove,
    /// One-off program with captured output; refused unless the agent allows exec.
    #[serde(rename = "agent.exec")]
    AgentExec,
    #[serde(rename = "agent.drain")]
    AgentDrain,
}

impl CommandKind {
    pub const ALL: [CommandKind; 7] = [
        CommandKind::BotStart,
        CommandKind::BotStop,
        CommandKind::BotRestart,
        CommandKind::BotSync,
        CommandKind::BotRemove,
        CommandKind::AgentExec,
        CommandKind::AgentDrain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::BotStart => "bot.start",
            CommandKind::BotStop => "bot.stop",
            CommandKind::BotRestart => "bot.restart",
            CommandKind::BotSync => "bot.sync",
            CommandKind::BotRemove => "bot.remove",
            CommandKind::AgentExec => "agent.exec",
            CommandKind::AgentDrain => "agent.drain",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

/// Lifecycle: `queued → dispatched → running → succeeded | failed`, or `cancelled`,
/// `expired` (TTL passed before dispatch), `timed_out` (no result before the deadline),
/// `dead_lettered` (its lease expired `max_attempts` times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Queued,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
    TimedOut,
    DeadLettered,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 9] = [
        CommandStatus::Queued,
        CommandStatus::Dispatched,
        CommandStatus::Running,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Cancelled,
        CommandStatus::Expired,
        CommandStatus::TimedOut,
        CommandStatus::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "queued",
            CommandStatus::Dispatched => "dispatched",
            CommandStatus::Running => "running",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Cancelled => "cancelled",
            CommandStatus::Expired => "expired",
            CommandStatus::TimedOut => "timed_out",
            CommandStatus::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        !matches!(self, CommandStatus::Queued | CommandStatus::Dispatched | CommandStatus::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Command {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub bot_id: Option<Uuid>,
    pub kind: CommandKind,
    pub status: CommandStatus,
    /// Kind-specific arguments (never secret values: those are added at dispatch).
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub created_by: Actor,
    /// Dispatches so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Not dispatched by then → `expired`.
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The bulk action (`POST /bots/actions`) that queued it: `GET /commands?batch=<id>`.
    #[serde(default)]
    pub batch_id: Option<Uuid>,
    /// For bot commands, the bot's command sequence number: a newer control command has a
    /// higher one, and an agent never runs a command older than one it already ran for the bot.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// The answer to a control request (`POST /bots/{id}/start|stop|restart`, `POST /commands`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandAccepted {
    pub command: Command,
    /// Whether the agent is connected now; if not, the command waits for it (until its TTL).
    pub agent_online: bool,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BotAction {
    Start,
    Stop,
    Restart,
}

/// Which bots a bulk action applies to (the filters of `GET /bots`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotSelector {
    pub state: Option<crate::bots::BotState>,
    pub agent_id: Option<Uuid>,
    pub tag: Option<String>,
    pub name: Option<String>,
}

/// `POST /bots/actions`: exactly one of `ids` and `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkAction {
    pub action: BotAction,
    /// These bots (up to 10,000 ids).
    pub ids: Option<Vec<Uuid>>,
    /// Every bot matching the filter, however many.
    pub filter: Option<BotSelector>,
    /// Only count: nothing is queued or changed (a panel asks "stop 4,812 bots?" first).
    #[serde(default)]
    pub dry_run: bool,
}

/// Bots of a bulk action that got no command, grouped by why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedBots {
    /// Stable reason code: `not_found` (no such bot, or another tenant's), `agent_revoked`.
    pub reason: String,
    pub count: u64,
    /// What it means, for people.
    pub detail: String,
    /// The first few of these bots (at most 100).
    pub bot_ids: Vec<Uuid>,
}

/// The answer to `POST /bots/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkAccepted {
    /// The batch: `GET /commands?batch=<id>` lists all its commands. `None` on a dry run.
    pub batch_id: Option<Uuid>,
    pub action: BotAction,
    pub dry_run: bool,
    /// Bots the ids or the filter named.
    pub matched: u64,
    /// Commands queued (on a dry run: that would be).
    pub accepted: u64,
    pub skipped: Vec<SkippedBots>,
    /// The first commands of the batch (at most 100), oldest first.
    pub commands: Vec<Command>,
    /// Whether the batch has more commands than `commands` shows.
    pub more_commands: bool,
}

/// `POST /commands`: a command that is not a bot action (`agent.exec`, `agent.drain`, `bot.sync`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCommand {
    pub agent_id: Uuid,
    pub kind: CommandKind,
    pub bot_id: Option<Uuid>,
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// One page of `GET /commands`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandList {
    pub items: Vec<Command>,
    pub next_cursor: Option<String>,
}
