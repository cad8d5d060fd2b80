//! Authentication: login, the session tokens, and the [`Principal`] extractor that every
//! protected handler takes. Roles are checked with [`Principal::require`].
//!
//! Seams for the identity work still to come: API tokens (`bmx_…`) and agent tokens plug into
//! [`Principal::from_request_parts`] as other kinds of bearer credential; refresh tokens add
//! routes beside `login`.

pub mod bootstrap;
pub mod password;
pub mod session;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use botmox_contract::{
    audit::{Actor, ActorKind},
    auth::{LoginRequest, LoginResponse, Role, User},
    problem::Problem,
    Id,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        error::{ApiError, ApiResult},
        extract::Json,
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(me))
}

/// Who is making a request, in which tenant, with which role.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: Id,
    pub actor: Actor,
    pub role: Role,
}

impl Principal {
    /// Refuses the request unless the principal's role includes `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this needs the {} role", role.as_str())))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("this endpoint needs an Authorization header".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        let claims = state
            .sessions
            .verify(token, &state.clock)
            .ok_or_else(|| ApiError::Unauthorized("the access token is invalid or has expired".into()))?;
        Ok(Principal {
            tenant_id: claims.tid,
            actor: Actor { kind: ActorKind::User, id: Some(claims.sub) },
            role: claims.role,
        })
    }
}

/// Exchange a username and password for an access token.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<axum::Json<LoginResponse>> {
    let refused = || ApiError::Unauthorized("wrong username or password".into());
    if body.password.len() > password::MAX_LENGTH || body.username.len() > 256 {
        return Err(refused());
    }
    let record = state.store.find_user_by_username(&body.username).await?;
    let phc = record.as_ref().map(|r| r.password_hash.clone());
    let verified = password::verify(body.password, phc).await?;
    let record = match record {
        Some(record) if verified && record.disabled_at.is_none() => record,
        _ => {
            tracing::info!(username = %body.username, "login refused");
            return Err(refused());
        }
    };
    let token = state.sessions.issue(record.user.id, record.tenant_id, record.user.role, &state.clock)?;
    tracing::info!(user_id = %record.user.id, "login");
    Ok(axum::Json(LoginResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: session::ACCESS_TTL_SECONDS,
        user: record.user,
    }))
}

/// The logged-in user.
#[utoipa::path(
    get, path = "/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The current user", body = User),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn me(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<User>> {
    let user_id = principal.actor.id.ok_or_else(|| ApiError::Forbidden("only users have a profile".into()))?;
    let record = state.store.get_user(principal.tenant_id, user_id).await?;
    Ok(axum::Json(record.user))
}
