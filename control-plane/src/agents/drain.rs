//! Draining an agent (`POST /agents/{id}/drain|undrain`), e.g. before maintenance of its host:
//! the agent is marked drained, its running bots are stopped gracefully (each `bot.stop` waits
//! the bot's own `stop.timeout_seconds` before killing it) without touching their desired
//! state, and it takes no new starts (the command service refuses them: `agent_draining`; the
//! supervisor's reconciliation skips drained agents). Undraining queues a start for every bot
//! that should run, so the fleet comes back at once rather than at the next reconciliation.

use axum::extract::State;
use botmox_contract::{
    agents::AgentDrain,
    bots::{Bot, BotState, DesiredState},
    commands::CommandKind,
    events::EventPayload,
    problem::Problem,
};
use uuid::Uuid;

use crate::{
    auth::Principal,
    control,
    http::{
        error::{ApiError, ApiResult},
        extract::Path,
    },
    state::AppState,
    store::{Order, StoreError, Target},
};

/// Drain an agent: stop its bots gracefully (desired states kept) and refuse new starts on it
/// until it is undrained. Draining a drained agent changes nothing.
#[utoipa::path(
    post, path = "/agents/{id}/drain", tag = "agents",
    security(("bearer" = ["agents:write"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, description = "Drained; the stops queued", body = AgentDrain),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent is revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn drain_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AgentDrain>> {
    change(state, principal, id, true).await
}

/// Undrain an agent: it takes starts again, and every bot of it whose desired state is
/// `running` gets a start now.
#[utoipa::path(
    post, path = "/agents/{id}/undrain", tag = "agents",
    security(("bearer" = ["agents:write"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, description = "Undrained; the starts queued", body = AgentDrain),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent is revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn undrain_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AgentDrain>> {
    change(state, principal, id, false).await
}

/// Whether a drain stops this bot: anything that runs or may run (an offline agent's bots are
/// `unknown`; a start still queued is superseded by the stop).
fn drain_stops(bot: &Bot) -> bool {
    match bot.state {
        BotState::Starting | BotState::Running | BotState::Backoff | BotState::Crashed | BotState::Unknown => true,
        BotState::Pending => bot.desired_state == DesiredState::Running,
        BotState::Stopping | BotState::Stopped | BotState::Exited | BotState::Failed => false,
    }
}

/// Whether an undrain starts this bot: it should run, and is stopped (by the drain, most
/// likely) or has never run. Bots the agent's own restart policy gave up on stay as they are.
fn undrain_starts(bot: &Bot) -> bool {
    bot.desired_state == DesiredState::Running
        && matches!(bot.state, BotState::Stopped | BotState::Stopping | BotState::Pending | BotState::Unknown)
}

async fn change(state: AppState, principal: Principal, id: Uuid, drain: bool) -> ApiResult<axum::Json<AgentDrain>> {
    let agent = state.store.set_agent_drained(principal.tenant_id, id, drain, state.clock.now()).await.map_err(
        |e| match e {
            StoreError::Conflict(detail) => ApiError::Conflict { code: "agent_revoked", detail },
            other => other.into(),
        },
    )?;
    tracing::info!(agent_id = %id, drain, "agent drain changed");
    state
        .publish(
            principal.tenant_id,
            EventPayload::AgentPresence { agent_id: id, name: agent.name.clone(), status: agent.status },
        )
        .await;
    let (kind, wanted): (_, fn(&Bot) -> bool) =
        if drain { (CommandKind::BotStop, drain_stops) } else { (CommandKind::BotStart, undrain_starts) };
    let reason = if drain { "drain" } else { "undrain" };
    let orders: Vec<Order> = state
        .store
        .bots_of_agent(id)
        .await?
        .iter()
        .filter(|bot| wanted(bot))
        .map(|bot| Order {
            tenant_id: principal.tenant_id,
            target: Target::Bot(bot.id),
            kind,
            // The desired state is the operator's: a drain pauses it, it does not change it.
            desired: None,
            payload: serde_json::json!({ "reason": reason }),
            idempotency_key: None,
            created_by: principal.actor(),
            batch_id: None,
        })
        .collect();
    let mut commands = Vec::with_capacity(orders.len());
    for answer in control::submit_many(&state, orders).await? {
        match answer {
            Ok(submitted) => commands.push(submitted.command),
            // A bot deleted meanwhile, or a drain that came in between an undrain's two steps.
            Err(e) => tracing::info!(agent_id = %id, error = %e, "a drain order was not placed"),
        }
    }
    Ok(axum::Json(AgentDrain { agent, commands }))
}
