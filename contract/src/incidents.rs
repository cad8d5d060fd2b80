//! Incidents: what the supervisor noticed.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    BotCrashed,
    BotRestarted,
    BotCrashLoop,
    BotFailed,
    AgentOffline,
    AgentOnline,
    CommandExpired,
    CommandDeadLettered,
    TokenRevokedAgentConnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incident {
    pub id: Uuid,
    pub kind: IncidentKind,
    pub severity: Severity,
    /// `kind:id` of the bot, agent or command concerned.
    pub subject: String,
    pub message: String,
    pub data: serde_json::Value,
    /// How many times it happened while open.
    pub count: u32,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 9] = [
        IncidentKind::BotCrashed,
        IncidentKind::BotRestarted,
        IncidentKind::BotCrashLoop,
        IncidentKind::BotFailed,
        IncidentKind::AgentOffline,
        IncidentKind::AgentOnline,
        IncidentKind::CommandExpired,
        IncidentKind::CommandDeadLettered,
        IncidentKind::TokenRevokedAgentConnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::BotCrashed => "bot_crashed",
            IncidentKind::BotRestarted => "bot_restarted",
            IncidentKind::BotCrashLoop => "bot_crash_loop",
            IncidentKind::BotFailed => "bot_failed",
            IncidentKind::AgentOffline => "agent_offline",
            IncidentKind::AgentOnline => "agent_online",
            IncidentKind::CommandExpired => "command_expired",
            IncidentKind::CommandDeadLettered => "command_dead_lettered",
            IncidentKind::TokenRevokedAgentConnected => "token_revoked_agent_connected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::Critical].into_iter().find(|sev| sev.as_str() == s)
    }
}

/// One page of `GET /incidents`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentList {
    pub items: Vec<Incident>,
    pub next_cursor: Option<String>,
}
