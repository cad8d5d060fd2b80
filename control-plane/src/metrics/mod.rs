//! `/metrics` in the Prometheus text format, through the `metrics` facade and its Prometheus
//! exporter (the de-facto standard pair in Rust). Fleet gauges (agents by status, bots by
//! state, queue by status, open connections) are read when scraped; latencies (HTTP by route,
//! command dispatch) and supervisor actions are recorded as they happen.
//!
//! Those figures are the whole server's, so they need a server-level credential: the
//! `--metrics-token` (a scraper's). A tenant admin (session or `admin`-scoped token) gets
//! the fleet gauges of their own tenant only.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use botmox_contract::{auth::Scope, problem::Problem, Id};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{self, credentials},
    http::error::ApiResult,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Latency buckets (seconds): fine at the low end, where dispatch and most requests live.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests building several apps): keep ours
        // for rendering either way.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Records every request's latency by route template and status class.
pub async fn track(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    metrics::histogram!("botmox_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics: with the server's metrics token, this replica's and the whole fleet's;
/// with a tenant admin's credential, that tenant's fleet gauges.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the metrics token nor a tenant admin", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let token = auth::bearer_of(&headers)?;
    let server_wide = state.settings.metrics_token_hash.as_deref() == Some(credentials::hash(token).as_str());
    let body = if server_wide {
        server_metrics(&state).await?
    } else {
        let principal = auth::authenticate(&state, token).await?;
        principal.require(Scope::Admin)?;
        tenant_metrics(&state, principal.tenant_id).await?
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

async fn server_metrics(state: &AppState) -> ApiResult<String> {
    for (status, n) in state.store.agent_counts(None).await? {
        metrics::gauge!("botmox_agents", "status" => status.as_str()).set(n as f64);
    }
    for (bot_state, n) in state.store.bot_counts(None, None).await? {
        metrics::gauge!("botmox_bots", "state" => bot_state.as_str()).set(n as f64);
    }
    for (status, n) in state.store.queue_depth(None).await? {
        metrics::gauge!("botmox_commands", "status" => status.as_str()).set(n as f64);
    }
    metrics::gauge!("botmox_agent_connections").set(state.hub.len() as f64);
    Ok(handle().render())
}

/// The same fleet gauges as the server's, counted over one tenant (the process-wide ones —
/// HTTP latency, connections — are the server's, not a tenant's, and are left out).
async fn tenant_metrics(state: &AppState, tenant_id: Id) -> ApiResult<String> {
    let mut out = String::new();
    let mut gauge = |name: &str, label: &str, values: Vec<(&str, u64)>| {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for (value, n) in values {
            out.push_str(&format!("{name}{{{label}=\"{value}\"}} {n}\n"));
        }
    };
    let agents = state.store.agent_counts(Some(tenant_id)).await?;
    gauge("botmox_agents", "status", agents.iter().map(|(s, n)| (s.as_str(), *n)).collect());
    let bots = state.store.bot_counts(Some(tenant_id), None).await?;
    gauge("botmox_bots", "state", bots.iter().map(|(s, n)| (s.as_str(), *n)).collect());
    let queue = state.store.queue_depth(Some(tenant_id)).await?;
    gauge("botmox_commands", "status", queue.iter().map(|(s, n)| (s.as_str(), *n)).collect());
    Ok(out)
}
