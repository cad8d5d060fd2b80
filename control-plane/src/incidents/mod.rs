//! Incidents API: list (filters, cursor) and acknowledge; `rules.rs`: when incidents open and
//! resolve (called by the agents' connections as reports arrive, and by the supervisor's tick).

pub mod rules;

use axum::extract::State;
use botmox_contract::{
    events::EventPayload,
    incidents::{Incident, IncidentKind, IncidentList, Severity},
    problem::Problem,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiResult},
        extract::{Path, Query},
        page,
    },
    state::AppState,
    store::IncidentFilter,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_incidents)).routes(routes!(ack_incident))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `true`: open only; `false`: resolved only.
    open: Option<bool>,
    kind: Option<IncidentKind>,
    severity: Option<Severity>,
    /// `bot:<id>` or `agent:<id>`.
    subject: Option<String>,
    cursor: Option<String>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
}

/// Incidents, newest first.
#[utoipa::path(
    get, path = "/incidents", tag = "incidents",
    security(("bearer" = ["bots:read"])),
    params(ListQuery),
    responses((status = 200, description = "One page", body = IncidentList))
)]
async fn list_incidents(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<IncidentList>> {
    let filter = IncidentFilter {
        open: query.open,
        kind: query.kind,
        severity: query.severity,
        subject: query.subject,
        before_id: page::decode_id_cursor(query.cursor.as_deref())?,
        limit: page::limit(query.limit, 50, 500)?,
    };
    let (items, has_more) = state.store.list_incidents(principal.tenant_id, &filter).await?;
    let next_cursor = if has_more { items.last().map(|i| page::encode_cursor(&i.id.to_string())) } else { None };
    Ok(axum::Json(IncidentList { items, next_cursor }))
}

/// Acknowledge an incident: someone is on it.
#[utoipa::path(
    post, path = "/incidents/{id}/ack", tag = "incidents",
    security(("bearer" = ["bots:control"])),
    params(("id" = Uuid, Path, description = "Incident id")),
    responses(
        (status = 200, description = "Acknowledged (the first acknowledgement stands)", body = Incident),
        (status = 404, description = "No such incident", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ack_incident(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Incident>> {
    let by = principal.user_id().ok_or_else(|| ApiError::Forbidden("only users acknowledge incidents".into()))?;
    let incident = state.store.ack_incident(principal.tenant_id, id, by, state.clock.now()).await?;
    state.publish(principal.tenant_id, EventPayload::Incident(incident.clone())).await;
    Ok(axum::Json(incident))
}
