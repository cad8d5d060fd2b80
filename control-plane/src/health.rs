//! `/healthz` (the process answers) and `/readyz` (the store answers and is migrated): what a
//! load balancer or an orchestrator probes.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// A probe's answer (named apart from the guide's `Health`).
#[derive(Serialize, ToSchema)]
#[schema(as = Probe)]
struct Health {
    status: &'static str,
    /// `sqlite` or `postgres` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
    version: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", store: None, version: env!("CARGO_PKG_VERSION") })
}

/// The store is reachable and every migration is applied.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let backend = state.store.backend_name();
    if state.draining.is_cancelled() {
        let health = Health { status: "shutting_down", store: Some(backend), version: env!("CARGO_PKG_VERSION") };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(health));
    }
    let (code, status) = match state.store.is_ready().await {
        Ok(true) => (StatusCode::OK, "ready"),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations_pending"),
        Err(err) => {
            tracing::warn!(error = %err, "readiness probe: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store_unreachable")
        }
    };
    (code, Json(Health { status, store: Some(backend), version: env!("CARGO_PKG_VERSION") }))
}
