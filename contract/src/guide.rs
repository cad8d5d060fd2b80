//! The guide and the dashboard: what the fleet looks like and what to do next.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{agents::AgentStatus, bots::BotState, commands::CommandStatus, incidents::Incident, incidents::Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Critical,
}

/// `GET /guide/hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hello {
    pub message: String,
    pub version: String,
    pub you: String,
    pub links: BTreeMap<String, String>,
}

/// One step of the first-run checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OnboardingStep {
    pub id: String,
    pub title: String,
    pub done: bool,
    /// How to do it: the API call, the panel page, the command line.
    pub how: String,
}

/// `GET /guide/onboarding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Onboarding {
    pub complete: bool,
    pub steps: Vec<OnboardingStep>,
}

/// The counts behind a health verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetCounts {
    pub agents_total: u64,
    pub agents_by_status: BTreeMap<AgentStatus, u64>,
    pub bots_total: u64,
    pub bots_by_state: BTreeMap<BotState, u64>,
    pub queue_by_status: BTreeMap<CommandStatus, u64>,
    pub open_incidents_by_severity: BTreeMap<Severity, u64>,
}

/// `GET /guide/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusReport {
    pub health: Health,
    /// Why the verdict is what it is, one sentence each.
    pub reasons: Vec<String>,
    pub counts: FleetCounts,
    pub at: DateTime<Utc>,
}

/// A concrete next action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recommendation {
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    /// The API call that acts on it, e.g. `POST /api/v1/agents/{id}/revoke`.
    pub api: Option<String>,
    /// The panel page, e.g. `/agents/{id}`.
    pub panel: Option<String>,
}

/// `GET /dashboard`: everything the overview page needs, in one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dashboard {
    pub status: StatusReport,
    pub recommendations: Vec<Recommendation>,
    pub recent_incidents: Vec<Incident>,
    pub onboarding: Onboarding,
}
