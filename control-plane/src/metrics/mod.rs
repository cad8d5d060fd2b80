//! `/metrics` in the Prometheus text format, through the `metrics` facade and its Prometheus
//! exporter (the de-facto standard pair in Rust). Fleet gauges (agents by status, bots by
//! state, queue by status, open connections) are read when scraped; latencies (HTTP by route,
//! command dispatch) and supervisor actions are recorded as they happen.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{http::error::ApiResult, state::AppState};

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

/// Prometheus metrics of this replica and its fleet (all tenants: for the server's operators).
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
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
    let body = handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
