//! Live events (`GET /api/v1/events`, Server-Sent Events). Payloads are compact (no bot
//! definitions, no command payloads or results): a client that needs more fetches the object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    agents::AgentStatus,
    bots::{BotState, DesiredState},
    commands::{CommandKind, CommandStatus},
    incidents::Incident,
};

/// One event; `id` (a UUIDv7, time-ordered) is the SSE event id, to resume with `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub payload: EventPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventPayload {
    BotState(BotStatus),
    BotRemoved { bot_id: Uuid },
    AgentPresence { agent_id: Uuid, name: String, status: AgentStatus },
    CommandStatus(CommandSummary),
    Incident(Incident),
}

/// What changes when a bot runs: its observed state and desired state, without its definition
/// (a changed `version` means the definition changed: fetch the bot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BotStatus {
    pub id: Uuid,
    pub name: String,
    pub agent_id: Uuid,
    pub desired_state: DesiredState,
    pub state: BotState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_exit_code: Option<i32>,
    pub last_exit_signal: Option<i32>,
    pub restart_count: u32,
    pub last_error: Option<String>,
    pub version: u64,
    pub updated_at: DateTime<Utc>,
}

/// A command's progress, without its payload or result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandSummary {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub bot_id: Option<Uuid>,
    pub kind: CommandKind,
    pub status: CommandStatus,
    pub attempt: u32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The longest error an event carries, in characters (the bot or command keeps it whole).
pub const EVENT_ERROR_CHARS: usize = 512;

/// An error as events carry it: cut to [`EVENT_ERROR_CHARS`].
pub fn event_error(error: Option<&str>) -> Option<String> {
    error.map(|e| e.chars().take(EVENT_ERROR_CHARS).collect())
}

impl BotStatus {
    /// This status as its `bot_state` event carries it: the error cut by [`event_error`].
    pub fn for_event(mut self) -> Self {
        if self.last_error.as_ref().is_some_and(|e| e.chars().nth(EVENT_ERROR_CHARS).is_some()) {
            self.last_error = event_error(self.last_error.as_deref());
        }
        self
    }
}

impl From<&crate::bots::Bot> for BotStatus {
    fn from(bot: &crate::bots::Bot) -> Self {
        Self {
            id: bot.id,
            name: bot.name.clone(),
            agent_id: bot.agent_id,
            desired_state: bot.desired_state,
            state: bot.state,
            pid: bot.pid,
            started_at: bot.started_at,
            last_exit_code: bot.last_exit_code,
            last_exit_signal: bot.last_exit_signal,
            restart_count: bot.restart_count,
            last_error: event_error(bot.last_error.as_deref()),
            version: bot.version,
            updated_at: bot.updated_at,
        }
    }
}

impl From<&crate::commands::Command> for CommandSummary {
    fn from(command: &crate::commands::Command) -> Self {
        Self {
            id: command.id,
            agent_id: command.agent_id,
            bot_id: command.bot_id,
            kind: command.kind,
            status: command.status,
            attempt: command.attempt,
            error: event_error(command.error.as_deref()),
            created_at: command.created_at,
            finished_at: command.finished_at,
        }
    }
}
