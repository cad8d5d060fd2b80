//! API tokens (`bmx_…`) for scripts: created from a login session (never from another token),
//! scoped, optionally expiring, shown once, revocable. A token never grants more than its
//! creator's role — neither when it is made nor later, if the creator is demoted.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use botmox_contract::{
    auth::{ApiToken, CreateApiToken, CreatedApiToken, Role, Scope},
    problem::Problem,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{credentials, min_role, Credential, Principal},
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path, Query},
    },
    state::AppState,
    store::NewApiToken,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}

const MAX_TTL_SECONDS: u64 = 10 * 365 * 86_400;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Admins: every token of the tenant, not only their own.
    all: Option<bool>,
}

/// Your API tokens (admins, by session or an `admin`-scoped token: `?all=true` for the tenant's). Secrets are never shown again.
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Tokens", body = Vec<ApiToken>))
)]
async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<Vec<ApiToken>>> {
    let owner = if query.all == Some(true) {
        principal.require(Scope::Admin)?;
        None
    } else {
        principal.user_id()
    };
    Ok(axum::Json(state.store.list_api_tokens(principal.tenant_id, owner).await?))
}

/// Create an API token. The response holds its secret: the only time it is shown.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    security(("bearer" = [])),
    request_body = CreateApiToken,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = CreatedApiToken),
        (status = 403, description = "A scope beyond your role, or not a login session", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateApiToken>,
) -> ApiResult<Response> {
    let Credential::Session { user_id, .. } = principal.credential else {
        return Err(ApiError::Forbidden("API tokens are created from a login session, not with another token".into()));
    };
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "1 to 100 printable characters"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid_field("scopes", "at least one scope"));
    }
    let role = principal.role.unwrap_or(Role::Viewer);
    if let Some(scope) = body.scopes.iter().find(|scope| min_role(**scope) > role) {
        return Err(ApiError::Forbidden(format!(
            "`{}` needs the {} role; a token never grants more than its creator has",
            scope.as_str(),
            min_role(*scope).as_str()
        )));
    }
    if let Some(ttl) = body.ttl_seconds {
        if !(60..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(ApiError::invalid_field("ttl_seconds", format!("must be between 60 and {MAX_TTL_SECONDS}")));
        }
    }
    let now = state.clock.now();
    let mut scopes = body.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let secret = credentials::new_api_token();
    let token = state
        .store
        .create_api_token(
            NewApiToken {
                tenant_id: principal.tenant_id,
                user_id,
                name: name.to_owned(),
                scopes,
                expires_at: body.ttl_seconds.map(|ttl| now + chrono::Duration::seconds(ttl as i64)),
                token_hash: credentials::hash(&secret),
            },
            now,
        )
        .await?;
    let location = format!("/api/v1/tokens/{}", token.id);
    let created = CreatedApiToken { token, secret };
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], axum::Json(created)).into_response())
}

/// Revoke an API token (yours; admins, by session or an `admin`-scoped token: any of the tenant's). Effective on the next request.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let token = state.store.get_api_token(principal.tenant_id, id).await?;
    if Some(token.user_id) != principal.user_id() && !principal.allows(Scope::Admin) {
        // Someone else's token does not exist for you.
        return Err(ApiError::NotFound("token"));
    }
    state.store.revoke_api_token(principal.tenant_id, id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
