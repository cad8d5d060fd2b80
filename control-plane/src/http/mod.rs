//! The HTTP surface: [`app`] assembles every domain router under `/api/v1`, the OpenAPI
//! document generated from those same routes, the embedded API docs at `/docs`, and the
//! cross-cutting layers (request ids, body limit, security headers, problem+json fallbacks).
//! [`serve`] runs it on a listener until a shutdown signal.

pub mod error;
pub mod extract;
pub mod request_id;

use std::{future::Future, net::SocketAddr};

use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderValue, StatusCode},
    middleware, Router,
};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use self::error::ApiError;
use crate::{auth, bots, health, state::AppState};

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
        (name = "auth", description = "Login and the current user"),
        (name = "bots", description = "Bot definitions and their observed state"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Every route with its OpenAPI description; the matrix and docs are derived from this.
pub fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new().merge(auth::router()).merge(bots::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1).merge(health::router())
}

/// The OpenAPI 3.1 document of this server.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

pub fn app(state: AppState) -> Router {
    let (router, openapi) = api_router().split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        .fallback(|| async { ApiError::NotFound("route") })
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
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
