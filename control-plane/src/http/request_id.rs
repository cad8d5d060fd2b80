//! Request ids: taken from `X-Request-Id` when a proxy set one (and it is sane), generated
//! otherwise; echoed in the response, attached to the request's tracing span, and readable by
//! error rendering through a task-local so problem bodies can name it.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(HEADER.clone(), header.clone());
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID.scope(id, next.run(req).instrument(span.clone())).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| {
        tracing::debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "handled");
    });
    response.headers_mut().insert(HEADER.clone(), header);
    response
}
