//! The agent protocol (SPEC §4): JSON frames over the agent's WebSocket, the same frames as
//! bodies of the long-poll fallback. Every frame carries a `type`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    agents::{AgentMetrics, ServerSettings},
    bots::{BotState, ExecSpec, RestartSpec, StopSpec},
    commands::CommandKind,
    logs::LogLine,
};

/// Bumped on any incompatible change; the agent sends it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentFrame {
    /// First frame of every connection: who I am and the full truth about my bots.
    Hello {
        protocol: u32,
        agent_version: String,
        hostname: String,
        os: String,
        arch: String,
        bots: Vec<BotSnapshot>,
    },
    Heartbeat {
        metrics: AgentMetrics,
    },
    /// The command was received and will be executed.
    Ack {
        command_id: Uuid,
    },
    Result(CommandOutcome),
    BotState(BotStateReport),
    Logs {
        bot_id: Uuid,
        lines: Vec<LogLine>,
    },
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Command(Box<CommandEnvelope>),
    /// Stop executing a command that is running.
    Cancel {
        command_id: Uuid,
    },
    Settings(ServerSettings),
    Ping {
        nonce: u64,
    },
    /// The agent's previous frame was refused; nothing changed.
    Error {
        code: String,
        detail: String,
    },
}

/// What an agent knows about one of its bots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotSnapshot {
    pub bot_id: Uuid,
    pub state: BotState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    /// Hash of the definition it runs, to detect drift.
    pub definition_hash: String,
}

/// A state transition of one bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BotStateReport {
    pub bot_id: Uuid,
    pub state: BotState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub restart_count: u32,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandOutcome {
    pub command_id: Uuid,
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    pub error: Option<String>,
    /// The agent did not run the command because it had already run a newer one for the same
    /// bot (its `seq` was lower): the server records it as `cancelled`, superseded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

/// A bot definition as the agent needs it to run the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BotRuntimeSpec {
    pub bot_id: Uuid,
    pub name: String,
    pub exec: ExecSpec,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub definition_hash: String,
}

/// A command as delivered to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandEnvelope {
    pub id: Uuid,
    pub kind: CommandKind,
    pub attempt: u32,
    pub payload: serde_json::Value,
    /// The bot's command sequence number (bot commands): the agent refuses to run a command
    /// whose `seq` is lower than one it already ran for the bot, answering it as superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The bot's definition, for bot commands.
    pub bot: Option<BotRuntimeSpec>,
    /// Values of the secrets the bot's `secret_env` names (only in `bot.start`/`bot.restart`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// `GET /api/v1/agent/commands/next?wait=<seconds>` (the long-poll transport): the commands
/// leased to the agent, empty when `wait` passed with nothing to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolledCommands {
    pub commands: Vec<CommandEnvelope>,
    /// Commands the agent must stop executing.
    #[serde(default)]
    pub cancel: Vec<Uuid>,
}

/// `POST /api/v1/agent/frames` (the long-poll transport): agent frames in order; the answer
/// lists the refused ones (by index) with why. Refused frames change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FramesOutcome {
    pub accepted: u32,
    pub refused: Vec<RefusedFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedFrame {
    pub index: u32,
    pub code: String,
    pub detail: String,
}
