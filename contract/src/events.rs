//! Live events (`GET /api/v1/events`, Server-Sent Events).

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{agents::AgentStatus, bots::Bot, commands::Command, incidents::Incident};

/// One event; `id` is the SSE event id, to resume with `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub id: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub payload: EventPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventPayload {
    BotState(Bot),
    BotRemoved { bot_id: Uuid },
    AgentPresence { agent_id: Uuid, status: AgentStatus },
    CommandStatus(Command),
    Incident(Incident),
}
