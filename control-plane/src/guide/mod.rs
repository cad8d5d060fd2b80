//! The guide (`/guide/hello|onboarding|status|recommendations`) and `/dashboard`: the fleet
//! read once ([`FleetView`]) and turned into a health verdict with its reasons, a first-run
//! checklist, and concrete next actions naming the exact API call or panel page.

use std::collections::BTreeMap;

use axum::extract::State;
use botmox_contract::{
    agents::{Agent, AgentStatus},
    bots::{Bot, BotState},
    commands::CommandStatus,
    guide::{Dashboard, FleetCounts, Health, Hello, Onboarding, OnboardingStep, Recommendation, StatusReport},
    incidents::{Incident, IncidentKind, Severity},
    Id,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{access, Principal},
    http::error::ApiResult,
    state::AppState,
    store::{BotFilter, IncidentFilter},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hello))
        .routes(routes!(onboarding))
        .routes(routes!(status))
        .routes(routes!(recommendations))
        .routes(routes!(dashboard))
}

/// How many of each problem the guide names individually.
const LISTED: u32 = 10;

/// Everything the guide looks at, read once per request.
struct FleetView {
    counts: FleetCounts,
    agents: Vec<Agent>,
    failed_bots: Vec<Bot>,
    open_incidents: Vec<Incident>,
    at: chrono::DateTime<chrono::Utc>,
}

impl FleetView {
    async fn load(state: &AppState, tenant_id: Id) -> ApiResult<Self> {
        let store = &state.store;
        let failed = BotFilter { state: Some(BotState::Failed), limit: LISTED, ..Default::default() };
        let open = IncidentFilter { open: Some(true), limit: 50, ..Default::default() };
        // Independent reads, side by side on the read pool: the page waits for the slowest one
        // only, not for their sum.
        let (agents, agents_by_status, bots_by_state, queue_by_status, open_incidents_by_severity, failed, open) = tokio::try_join!(
            store.list_agents(tenant_id),
            store.agent_counts(Some(tenant_id)),
            store.bot_counts(Some(tenant_id), None),
            store.queue_depth(Some(tenant_id)),
            store.open_incident_counts(tenant_id),
            store.list_bots(tenant_id, &failed),
            store.list_incidents(tenant_id, &open),
        )?;
        let (failed_bots, open_incidents) = (failed.items, open.0);
        Ok(Self {
            counts: FleetCounts {
                agents_total: agents_by_status.values().sum(),
                bots_total: bots_by_state.values().sum(),
                agents_by_status,
                bots_by_state,
                queue_by_status,
                open_incidents_by_severity,
            },
            agents,
            failed_bots,
            open_incidents,
            at: state.clock.now(),
        })
    }

    fn agents(&self, status: AgentStatus) -> u64 {
        self.counts.agents_by_status.get(&status).copied().unwrap_or(0)
    }

    fn bots(&self, state: BotState) -> u64 {
        self.counts.bots_by_state.get(&state).copied().unwrap_or(0)
    }

    fn status(&self) -> StatusReport {
        let mut critical = Vec::new();
        let mut degraded = Vec::new();
        let failed = self.bots(BotState::Failed);
        if failed > 0 {
            critical.push(format!("{failed} bot(s) failed: their agents gave up restarting them"));
        }
        let dead = self.counts.queue_by_status.get(&CommandStatus::DeadLettered).copied().unwrap_or(0);
        let crash_loops = self.open_incidents.iter().filter(|i| i.kind == IncidentKind::BotCrashLoop).count();
        if crash_loops > 0 {
            critical.push(format!("{crash_loops} bot(s) in a crash loop"));
        }
        let revoked_in_use =
            self.open_incidents.iter().filter(|i| i.kind == IncidentKind::TokenRevokedAgentConnected).count();
        if revoked_in_use > 0 {
            critical.push(format!("{revoked_in_use} revoked agent(s) still try to connect"));
        }
        let online = self.agents(AgentStatus::Online) + self.agents(AgentStatus::Draining);
        let offline = self.agents(AgentStatus::Offline);
        if offline > 0 && online == 0 {
            critical.push(format!("all {offline} agent(s) are offline"));
        } else if offline > 0 {
            degraded.push(format!("{offline} agent(s) offline"));
        }
        for (state, what) in [
            (BotState::Crashed, "crashed"),
            (BotState::Backoff, "waiting to restart"),
            (BotState::Unknown, "on offline agents"),
        ] {
            let n = self.bots(state);
            if n > 0 {
                degraded.push(format!("{n} bot(s) {what}"));
            }
        }
        if dead > 0 {
            degraded.push(format!("{dead} command(s) dead-lettered"));
        }
        let health = if !critical.is_empty() {
            Health::Critical
        } else if !degraded.is_empty() {
            Health::Degraded
        } else {
            Health::Healthy
        };
        let mut reasons: Vec<String> = critical.into_iter().chain(degraded).collect();
        if reasons.is_empty() {
            reasons.push(format!(
                "{online} agent(s) online, {} bot(s) running, nothing needs you",
                self.bots(BotState::Running)
            ));
        }
        StatusReport { health, reasons, counts: self.counts.clone(), at: self.at }
    }

    /// Most urgent first; only those about what `principal` may read (`auth::access::page_scope`).
    fn recommendations(&self, principal: &Principal) -> Vec<Recommendation> {
        let mut out = self.unsorted_recommendations();
        out.retain(|r| r.panel.as_deref().is_none_or(|page| principal.allows(access::page_scope(page))));
        out.sort_by_key(|r| std::cmp::Reverse(r.severity));
        out
    }

    fn unsorted_recommendations(&self) -> Vec<Recommendation> {
        let mut out = Vec::new();
        if self.counts.agents_total == 0 {
            out.push(Recommendation {
                severity: Severity::Info,
                title: "no agents paired: create a pairing code".into(),
                detail: "Create a code, then run the command it comes with on the host that should run bots.".into(),
                api: Some("POST /api/v1/agents/pairing-codes".into()),
                panel: Some("/agents".into()),
            });
        } else if self.counts.bots_total == 0 {
            out.push(Recommendation {
                severity: Severity::Info,
                title: "no bots yet: create one on an agent".into(),
                detail: "A bot is a program with its arguments, environment and restart policy, placed on one agent."
                    .into(),
                api: Some("POST /api/v1/bots".into()),
                panel: Some("/bots".into()),
            });
        }
        for bot in &self.failed_bots {
            let why = match (&bot.last_error, bot.last_exit_code, bot.last_exit_signal) {
                (Some(error), _, _) => error.clone(),
                (None, _, Some(signal)) => format!("killed by signal {signal}"),
                (None, Some(code), _) => format!("last exit code {code}"),
                _ => "no exit status".into(),
            };
            out.push(Recommendation {
                severity: Severity::Critical,
                title: format!("bot `{}` failed: {why} — read its log", bot.name),
                detail: format!(
                    "It crashed {} time(s) within its restart window and its agent gave up. Fix the cause, then start it again.",
                    bot.restart_count
                ),
                api: Some(format!("GET /api/v1/bots/{}/logs", bot.id)),
                panel: Some(format!("/bots/{}", bot.id)),
            });
        }
        for incident in
            self.open_incidents.iter().filter(|i| i.kind == IncidentKind::BotCrashLoop).take(LISTED as usize)
        {
            let bot_id = incident.subject.trim_start_matches("bot:");
            out.push(Recommendation {
                severity: Severity::Critical,
                title: incident.message.clone(),
                detail: "It keeps crashing and restarting. Read its log; stop it if it cannot recover.".into(),
                api: Some(format!("GET /api/v1/bots/{bot_id}/logs")),
                panel: Some(format!("/bots/{bot_id}")),
            });
        }
        for agent in self.agents.iter().filter(|a| a.status == AgentStatus::Offline).take(LISTED as usize) {
            let minutes = agent.last_seen_at.map(|seen| (self.at - seen).num_minutes());
            out.push(Recommendation {
                severity: Severity::Warning,
                title: match minutes {
                    Some(m) => format!("agent `{}` offline for {m} min — check the host or revoke it", agent.name),
                    None => format!("agent `{}` is offline — check the host or revoke it", agent.name),
                },
                detail: "Its bots are `unknown` until it reconnects; commands for it wait until their TTL.".into(),
                api: Some(format!("POST /api/v1/agents/{}/revoke", agent.id)),
                panel: Some(format!("/agents/{}", agent.id)),
            });
        }
        for agent in self.agents.iter().filter(|a| a.status == AgentStatus::Draining).take(LISTED as usize) {
            out.push(Recommendation {
                severity: Severity::Info,
                title: format!("agent `{}` is draining — undrain it when its host is ready", agent.name),
                detail:
                    "Its bots were stopped and it takes no new starts; undraining starts again those that should run."
                        .into(),
                api: Some(format!("POST /api/v1/agents/{}/undrain", agent.id)),
                panel: Some(format!("/agents/{}", agent.id)),
            });
        }
        for agent in self.agents.iter().filter(|a| a.status == AgentStatus::Pending).take(LISTED as usize) {
            out.push(Recommendation {
                severity: Severity::Info,
                title: format!("agent `{}` was paired but never connected — start it on its host", agent.name),
                detail: "On the host: `botmox-agent run` (or install it as a service: `botmox-agent service install`)."
                    .into(),
                api: None,
                panel: Some(format!("/agents/{}", agent.id)),
            });
        }
        for incident in self
            .open_incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::TokenRevokedAgentConnected)
            .take(LISTED as usize)
        {
            out.push(Recommendation {
                severity: Severity::Critical,
                title: format!("{} ({} attempt(s))", incident.message, incident.count),
                detail: "Its token no longer works, but something keeps using it. Stop the agent on that host \
                         (`botmox-agent unpair`), then acknowledge this incident."
                    .into(),
                api: Some(format!("POST /api/v1/incidents/{}/ack", incident.id)),
                panel: Some("/incidents".into()),
            });
        }
        let dead = self.counts.queue_by_status.get(&CommandStatus::DeadLettered).copied().unwrap_or(0);
        if dead > 0 {
            out.push(Recommendation {
                severity: Severity::Warning,
                title: format!("{dead} command(s) dead-lettered"),
                detail: "Their agents never acknowledged them. Check those agents, then repeat the actions.".into(),
                api: Some("GET /api/v1/commands?status=dead_lettered".into()),
                panel: Some("/commands".into()),
            });
        }
        out
    }

    fn onboarding(&self) -> Onboarding {
        let steps = vec![
            OnboardingStep {
                id: "pair_agent".into(),
                title: "Pair an agent".into(),
                done: self.counts.agents_total > 0,
                how: "POST /api/v1/agents/pairing-codes (panel: Agents → Pair agent), then run the command it shows on the host".into(),
            },
            OnboardingStep {
                id: "create_bot".into(),
                title: "Create a bot".into(),
                done: self.counts.bots_total > 0,
                how: "POST /api/v1/bots with a name, the agent and the program (panel: Bots → New bot)".into(),
            },
            OnboardingStep {
                id: "start_bot".into(),
                title: "Start it".into(),
                done: self.bots(BotState::Running) > 0,
                how: "POST /api/v1/bots/{id}/start (panel: the bot's Start button)".into(),
            },
        ];
        Onboarding { complete: steps.iter().all(|s| s.done), steps }
    }
}

/// Welcome: who you are, where things are.
#[utoipa::path(get, path = "/guide/hello", tag = "guide", security(("bearer" = ["bots:read"])), responses((status = 200, body = Hello)))]
async fn hello(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Hello>> {
    let you = match principal.user_id() {
        Some(user_id) => {
            let user = state.store.get_user(principal.tenant_id, user_id).await?.user;
            format!("{} ({})", user.username, user.role.as_str())
        }
        None => "an agent".into(),
    };
    let base = state.settings.public_url.trim_end_matches('/');
    let links = BTreeMap::from([
        ("panel".to_owned(), format!("{base}/")),
        ("api_docs".to_owned(), format!("{base}/docs")),
        ("openapi".to_owned(), format!("{base}/api/v1/openapi.json")),
        ("status".to_owned(), format!("{base}/api/v1/guide/status")),
    ]);
    Ok(axum::Json(Hello {
        message: "Welcome to botmox. GET /api/v1/guide/onboarding for the first steps, /api/v1/guide/recommendations for what needs you now.".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        you,
        links,
    }))
}

/// The first-run checklist, computed from the fleet.
#[utoipa::path(get, path = "/guide/onboarding", tag = "guide", security(("bearer" = ["bots:read"])), responses((status = 200, body = Onboarding)))]
async fn onboarding(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Onboarding>> {
    Ok(axum::Json(FleetView::load(&state, principal.tenant_id).await?.onboarding()))
}

/// Health (healthy / degraded / critical) with its reasons and the counts behind it.
#[utoipa::path(get, path = "/guide/status", tag = "guide", security(("bearer" = ["bots:read"])), responses((status = 200, body = StatusReport)))]
async fn status(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<StatusReport>> {
    Ok(axum::Json(FleetView::load(&state, principal.tenant_id).await?.status()))
}

/// Concrete next actions, most urgent first.
#[utoipa::path(get, path = "/guide/recommendations", tag = "guide", security(("bearer" = ["bots:read"])), responses((status = 200, body = Vec<Recommendation>)))]
async fn recommendations(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Vec<Recommendation>>> {
    Ok(axum::Json(FleetView::load(&state, principal.tenant_id).await?.recommendations(&principal)))
}

/// Everything the overview page needs in one call.
#[utoipa::path(get, path = "/dashboard", tag = "guide", security(("bearer" = ["bots:read"])), responses((status = 200, body = Dashboard)))]
async fn dashboard(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Dashboard>> {
    let view = FleetView::load(&state, principal.tenant_id).await?;
    let recent = IncidentFilter { limit: 10, ..Default::default() };
    let recent_incidents = state.store.list_incidents(principal.tenant_id, &recent).await?.0;
    Ok(axum::Json(Dashboard {
        status: view.status(),
        recommendations: view.recommendations(&principal),
        recent_incidents,
        onboarding: view.onboarding(),
    }))
}
