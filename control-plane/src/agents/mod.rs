//! Agents API: the registry of hosts (list, get, rename/relabel, delete, revoke, drain), pairing codes,
//! pairing itself, and the agent-token endpoints an agent uses about itself.

mod drain;
mod pairing;

use axum::{extract::State, http::StatusCode};
use botmox_contract::{
    agents::{Agent, RotatedAgentToken, UpdateAgent},
    problem::Problem,
    Labels,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{credentials, Principal},
    bots::validate,
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(revoke_agent))
        .routes(routes!(drain::drain_agent))
        .routes(routes!(drain::undrain_agent))
        .routes(routes!(pairing::create_pairing_code))
        .routes(routes!(pairing::pair))
        .routes(routes!(agent_self))
        .routes(routes!(rotate_agent_token))
}

/// Label keys like Kubernetes' (`region`, `gpu.vendor`), values short and printable.
pub fn validate_labels(field: &str, labels: &Labels) -> ApiResult<()> {
    if labels.len() > 32 {
        return Err(ApiError::invalid_field(field, "at most 32 labels"));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return Err(ApiError::invalid_field(format!("{field}.{key}"), "label keys are 1 to 63 of `a-z0-9._-/`"));
        }
        if value.len() > 128 || value.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                format!("{field}.{key}"),
                "label values are at most 128 printable bytes",
            ));
        }
    }
    Ok(())
}

/// Agents of your tenant.
#[utoipa::path(
    get, path = "/agents", tag = "agents",
    security(("bearer" = ["agents:read"])),
    responses((status = 200, description = "Agents", body = Vec<Agent>))
)]
async fn list_agents(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Vec<Agent>>> {
    Ok(axum::Json(state.store.list_agents(principal.tenant_id).await?))
}

/// One agent.
#[utoipa::path(
    get, path = "/agents/{id}", tag = "agents",
    security(("bearer" = ["agents:read"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Agent>> {
    Ok(axum::Json(state.store.get_agent(principal.tenant_id, id).await?))
}

/// Rename an agent or replace its labels.
#[utoipa::path(
    patch, path = "/agents/{id}", tag = "agents",
    security(("bearer" = ["agents:write"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = UpdateAgent,
    responses(
        (status = 200, description = "Updated", body = Agent),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateAgent>,
) -> ApiResult<axum::Json<Agent>> {
    if let Some(name) = &body.name {
        validate::name("name", name)?;
    }
    if let Some(labels) = &body.labels {
        validate_labels("labels", labels)?;
    }
    let agent = state
        .store
        .update_agent(principal.tenant_id, id, body.name.as_deref(), body.labels.as_ref(), state.clock.now())
        .await?;
    Ok(axum::Json(agent))
}

/// Delete an agent that hosts no bots. To cut a host off, revoke it instead.
#[utoipa::path(
    delete, path = "/agents/{id}", tag = "agents",
    security(("bearer" = ["agents:write"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It still hosts bots", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.delete_agent(principal.tenant_id, id).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(detail) => ApiError::Conflict { code: "agent_has_bots", detail },
        other => other.into(),
    })?;
    // Its token no longer exists: a connection it still holds (here or on another replica)
    // is closed, not left running until its next frame.
    state.close_agent(id, crate::link::hub::CLOSE_REVOKED, "deleted").await;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke an agent: its token stops working on its next request, for good.
#[utoipa::path(
    post, path = "/agents/{id}/revoke", tag = "agents",
    security(("bearer" = ["agents:write"])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, description = "Revoked", body = Agent),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Agent>> {
    let agent = state.store.revoke_agent(principal.tenant_id, id, state.clock.now()).await?;
    tracing::info!(agent_id = %id, "agent revoked");
    state.close_agent(id, crate::link::hub::CLOSE_REVOKED, "revoked").await;
    state
        .publish(
            principal.tenant_id,
            botmox_contract::events::EventPayload::AgentPresence {
                agent_id: id,
                name: agent.name.clone(),
                status: agent.status,
            },
        )
        .await;
    Ok(axum::Json(agent))
}

/// The calling agent's own record.
#[utoipa::path(
    get, path = "/agent/self", tag = "agent",
    security(("agent" = [])),
    responses((status = 200, description = "This agent", body = Agent))
)]
async fn agent_self(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Agent>> {
    let agent_id = principal.agent_id().ok_or_else(|| ApiError::Forbidden("only agents have a self".into()))?;
    Ok(axum::Json(state.store.get_agent(principal.tenant_id, agent_id).await?))
}

/// Rotate the calling agent's token. The old token keeps working until the new one is used.
#[utoipa::path(
    post, path = "/agent/token/rotate", tag = "agent",
    security(("agent" = [])),
    responses((status = 200, description = "The new token", body = RotatedAgentToken))
)]
async fn rotate_agent_token(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<RotatedAgentToken>> {
    let agent_id = principal.agent_id().ok_or_else(|| ApiError::Forbidden("only agents have a token".into()))?;
    let token = credentials::new_agent_token();
    state.store.stage_agent_token(agent_id, &credentials::hash(&token), state.clock.now()).await?;
    Ok(axum::Json(RotatedAgentToken { agent_token: token }))
}
