//! Users API (admins): list, create, change (role, email, password, disabled), delete. A change
//! that ends someone's access (password, disable) ends their sessions at once; a tenant always
//! keeps at least one enabled admin.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use botmox_contract::{
    auth::{CreateUser, UpdateUser, User},
    problem::Problem,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{password, validate_password, Principal},
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path},
    },
    state::AppState,
    store::{NewUser, StoreError, UserChanges, LAST_ADMIN},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(update_user, delete_user))
}

fn validate_username(value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field("username", "1 to 64 letters, digits or `._-@`"))
    }
}

fn validate_email(value: &str) -> ApiResult<()> {
    let ok = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field("email", "is not an email address"))
    }
}

/// The store's last-admin refusal as the API's `last_admin` conflict.
fn last_admin(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict(detail) if detail == LAST_ADMIN => ApiError::Conflict { code: "last_admin", detail },
        other => other.into(),
    }
}

/// Users of your tenant.
#[utoipa::path(
    get, path = "/users", tag = "users",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Users", body = Vec<User>))
)]
async fn list_users(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Vec<User>>> {
    let users = state.store.list_users(principal.tenant_id).await?;
    Ok(axum::Json(users.into_iter().map(|record| record.user).collect()))
}

/// Create a user.
#[utoipa::path(
    post, path = "/users", tag = "users",
    security(("bearer" = ["admin"])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 409, description = "Username unavailable (in use here or in another tenant, in any case)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateUser>,
) -> ApiResult<Response> {
    validate_username(&body.username)?;
    if let Some(email) = &body.email {
        validate_email(email)?;
    }
    validate_password("password", &body.password)?;
    let new = NewUser {
        tenant_id: principal.tenant_id,
        username: body.username,
        email: body.email,
        password_hash: password::hash(body.password).await?,
        role: body.role,
    };
    let record = state.store.create_user(new, state.clock.now()).await.map_err(|e| match e {
        StoreError::Conflict(detail) => ApiError::Conflict { code: "username_unavailable", detail },
        other => other.into(),
    })?;
    let location = format!("/api/v1/users/{}", record.user.id);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], axum::Json(record.user)).into_response())
}

/// Change a user's role, email, password or disabled flag.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users",
    security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "Updated", body = User),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would leave no admin", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<axum::Json<User>> {
    state.store.get_user(principal.tenant_id, id).await?;
    if let Some(email) = &body.email {
        validate_email(email)?;
    }
    if let Some(new_password) = &body.password {
        validate_password("password", new_password)?;
    }
    let password_hash = match body.password {
        Some(new_password) => Some(password::hash(new_password).await?),
        None => None,
    };
    let ends_sessions = password_hash.is_some() || body.disabled == Some(true);
    let changes = UserChanges { email: body.email.map(Some), role: body.role, password_hash, disabled: body.disabled };
    let now = state.clock.now();
    let record = state.store.update_user(principal.tenant_id, id, changes, now).await.map_err(last_admin)?;
    if ends_sessions {
        state.store.revoke_user_sessions(id, "changed by an admin", now).await?;
    }
    Ok(axum::Json(record.user))
}

/// Delete a user (their sessions and API tokens go with them).
#[utoipa::path(
    delete, path = "/users/{id}", tag = "users",
    security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would leave no admin", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.delete_user(principal.tenant_id, id).await.map_err(last_admin)?;
    Ok(StatusCode::NO_CONTENT)
}
