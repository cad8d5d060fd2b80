//! The HTTP surface: [`app`] assembles every domain router under `/api/v1`, the OpenAPI
//! document generated from those same routes, the embedded API docs at `/docs`, and the
//! cross-cutting layers (request ids, body limit, security headers, problem+json fallbacks).
//! [`serve`] runs it on a listener until a shutdown signal.

pub mod client;
pub mod error;
pub mod extract;
pub mod page;
pub mod panel;
pub mod request_id;

use std::{future::Future, net::SocketAddr, sync::OnceLock};

use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderValue, StatusCode},
    middleware,
    serve::ListenerExt as _,
    Router,
};

pub use self::client::{client_ip, TrustedProxies};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use self::error::ApiError;
use crate::{
    agents, audit,
    auth::{self, policy::Policy},
    bots, commands, events, guide, health, incidents, link, metrics, secrets,
    state::AppState,
    tokens, users,
};

/// Largest request body accepted anywhere (a bot definition is a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "botmox API",
        description = "Control plane for fleets of bot processes. Authenticate with `POST /api/v1/auth/login` and send `Authorization: Bearer <access_token>`. Errors are `application/problem+json` with a stable `code`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login, sessions and the current user"),
        (name = "users", description = "Users and their roles (admins)"),
        (name = "tokens", description = "API tokens for scripts"),
        (name = "agents", description = "Hosts: registry, pairing, revocation"),
        (name = "agent", description = "What an agent calls with its agent token"),
        (name = "bots", description = "Bot definitions, their observed state, control and logs"),
        (name = "commands", description = "The command queue"),
        (name = "events", description = "Live events (Server-Sent Events)"),
        (name = "secrets", description = "The secrets vault (values go in, never out)"),
        (name = "audit", description = "The append-only audit log"),
        (name = "incidents", description = "What the supervisor noticed"),
        (name = "guide", description = "Health, recommendations, onboarding, the dashboard"),
        (name = "health", description = "Liveness and readiness probes, Prometheus metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            auth::policy::USER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session access token (from /auth/login) or an API token (`bmx_…`). The scope listed on \
                         an operation is what an API token needs; a session needs the role that scope implies.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            auth::policy::AGENT_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An agent token (`bmxa_…`), from pairing."))
                    .build(),
            ),
        );
    }
}

/// Every route with its OpenAPI description; the matrix and docs are derived from this.
pub fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(agents::router())
        .merge(bots::router())
        .merge(commands::router())
        .merge(events::router())
        .merge(guide::router())
        .merge(incidents::router())
        .merge(link::router())
        .merge(secrets::router())
        .merge(audit::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1).merge(health::router()).merge(metrics::router())
}

/// The OpenAPI 3.1 document of this server.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    document_common_statuses(&mut doc);
    doc
}

/// Adds the answers every route of a kind can give, in one place, so that no operation's
/// documented statuses miss them: a bad query (400) and a store that cannot take the request
/// (503) anywhere under `/api/v1`; no or a wrong credential (401, 403) on every route that
/// needs one; a body too large, not JSON, or not acceptable (413, 415, 422) wherever there is
/// a body. Statuses an operation documents itself keep its own description.
fn document_common_statuses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{path::Operation, ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                botmox_contract::problem::CONTENT_TYPE,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build()
    };
    let add = |operation: &mut Operation, status: &str, description: &str| {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description).into());
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        for operation in
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
        {
            if api {
                add(operation, "400", "A malformed request (unknown or bad query parameter, bad path, bad header)");
                add(operation, "503", "The store could not take the request just now: nothing changed, retry");
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(operation, "401", "No valid credential");
                add(operation, "403", "The credential may not do this");
            }
            if operation.request_body.is_some() {
                add(operation, "413", "The body is larger than the route accepts");
                add(operation, "415", "The body is not JSON");
                add(operation, "422", "The body is not acceptable (the field is named)");
            }
        }
    }
}

/// The access rules of every route, read from the OpenAPI document (see `auth::policy`).
/// Panics if a route lacks a rule: that is a programming error caught by every test.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| match Policy::from_openapi(&openapi()) {
        Ok(policy) => policy,
        Err(problems) => panic!("routes without a valid access rule: {problems}"),
    })
}

pub fn app(state: AppState) -> Router {
    let (router, mut openapi) = api_router().split_for_parts();
    document_common_statuses(&mut openapi);
    policy();
    metrics::handle();
    let cors = state.settings.cors_origins.clone();
    let router = router
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::policy::authorize))
        .route_layer(middleware::from_fn(metrics::track))
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        // The panel at `/`; anything else (and any unknown `/api/…`) stays the JSON 404.
        .fallback(panel::fallback)
        .method_not_allowed_fallback(|| async {
            ApiError::Request {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                detail: "this route does not accept that method".into(),
                field: None,
                hint: Some("see /docs for the methods each route takes".into()),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(middleware::from_fn(html_security_headers))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state);
    if cors.is_empty() {
        // CORS stays off: the panel is served from this origin and needs none.
        router
    } else {
        router.layer(cors_layer(&cors))
    }
}

/// Pages (the panel and the API docs) may load nothing from anywhere but this server,
/// and may not be framed.
async fn html_security_headers(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    let mut response = next.run(req).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Cross-origin access for the configured origins only (`--cors-origin`).
fn cors_layer(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins.to_vec())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH, request_id::HEADER.clone()])
        .expose_headers([header::ETAG, header::LOCATION, request_id::HEADER.clone()])
        .allow_credentials(true)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY on every connection: the agent protocol and the event streams are small
    // frames written one after another, and with Nagle's algorithm each one behind another
    // waits for the peer's delayed ACK (40 ms on Linux) — measured as a 40 ms click-to-running.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
