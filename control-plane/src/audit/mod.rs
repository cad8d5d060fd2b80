//! `GET /audit`: the tenant's audit log, newest first, filtered, cursor-paginated. Entries are
//! written by the authorisation middleware (every state-changing request), by login, pairing
//! and refresh, and by the supervisor. There is no route that changes or deletes one.

use axum::extract::State;
use botmox_contract::audit::{ActorKind, AuditPage, Outcome};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Principal,
    http::{error::ApiResult, extract::Query, page},
    state::AppState,
    store::AuditFilter,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    actor_kind: Option<ActorKind>,
    actor_id: Option<Uuid>,
    /// The operation, e.g. `create_bot`, `login`.
    action: Option<String>,
    /// `kind:id`, e.g. `bot:0193…`.
    target: Option<String>,
    outcome: Option<Outcome>,
    cursor: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<u32>,
}

/// The audit log.
#[utoipa::path(
    get, path = "/audit", tag = "audit",
    security(("bearer" = ["audit:read"])),
    params(AuditQuery),
    responses((status = 200, description = "One page, newest first", body = AuditPage))
)]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    let limit = page::limit(query.limit, 100, 500)?;
    let before_id = page::decode_id_cursor(query.cursor.as_deref())?;
    let filter = AuditFilter {
        actor_kind: query.actor_kind,
        actor_id: query.actor_id,
        action: query.action,
        target: query.target,
        outcome: query.outcome,
        before_id,
        limit,
    };
    let (items, has_more) = state.store.list_audit(principal.tenant_id, &filter).await?;
    let next_cursor = if has_more { items.last().map(|e| page::encode_cursor(&e.id.to_string())) } else { None };
    Ok(axum::Json(AuditPage { items, next_cursor }))
}

/// Writes an audit entry for something the supervisor did.
pub async fn supervisor_action(
    state: &AppState,
    tenant_id: botmox_contract::Id,
    action: &str,
    target: String,
    data: serde_json::Value,
) {
    let entry = crate::store::NewAuditEntry {
        tenant_id,
        actor: botmox_contract::audit::Actor::supervisor(),
        action: action.into(),
        target: Some(target),
        request_id: None,
        source_ip: None,
        outcome: botmox_contract::audit::Outcome::Success,
        data,
    };
    if let Err(e) = state.store.append_audit(entry, state.clock.now()).await {
        tracing::error!(error = %e, action, "could not audit a supervisor action");
    }
    metrics::counter!("botmox_supervisor_actions_total", "action" => action.to_owned()).increment(1);
}
