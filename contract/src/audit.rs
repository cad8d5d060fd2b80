//! Audit entries and the actors that appear in them.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiToken,
    Agent,
    Supervisor,
    /// The server itself (bootstrap, migrations).
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiToken => "api_token",
            ActorKind::Agent => "agent",
            ActorKind::Supervisor => "supervisor",
            ActorKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::ApiToken, Self::Agent, Self::Supervisor, Self::System]
            .into_iter()
            .find(|kind| kind.as_str() == s)
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<Uuid>,
}

impl Actor {
    pub fn supervisor() -> Self {
        Self { kind: ActorKind::Supervisor, id: None }
    }

    pub fn system() -> Self {
        Self { kind: ActorKind::System, id: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor: Actor,
    /// Dotted verb, e.g. `bot.create`, `bot.start`, `auth.login`.
    pub action: String,
    /// `kind:id` of what was acted on.
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub outcome: Outcome,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// One page of `GET /audit`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for older entries; absent on the last page.
    pub next_cursor: Option<String>,
}
