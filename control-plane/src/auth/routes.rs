//! `/auth/*`: login, refresh, logout, the current user, password change.
//!
//! A login creates a session: a short-lived access token (JWT, returned in the body, kept in
//! memory by the panel) and a refresh token in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/api/v1/auth`, so no long-lived credential is readable by page scripts. Each refresh rotates
//! the cookie; presenting a rotated-away refresh token revokes the whole session.

use axum::{extract::State, http::StatusCode};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use botmox_contract::{
    audit::{Actor, ActorKind, Outcome},
    auth::{ChangePassword, LoginRequest, LoginResponse, User},
    problem::Problem,
    Id,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{credentials, password, session, Credential, Principal};
use crate::{
    http::{
        client::ClientInfo,
        error::{ApiError, ApiResult},
        extract::Json,
        request_id,
    },
    state::AppState,
    store::{NewAuditEntry, NewSession, Refresh, UserChanges, UserRecord},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

pub const REFRESH_COOKIE: &str = "botmox_refresh";
/// A session (refresh family) lasts at most this long, however often it is refreshed.
pub const SESSION_DAYS: i64 = 7;

fn refresh_cookie(state: &AppState, value: String, max_age_seconds: i64) -> Cookie<'static> {
    Cookie::build((REFRESH_COOKIE, value))
        .path("/api/v1/auth")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.settings.public_url.starts_with("https://"))
        .max_age(time::Duration::seconds(max_age_seconds))
        .build()
}

fn cleared_cookie(state: &AppState) -> Cookie<'static> {
    refresh_cookie(state, String::new(), 0)
}

async fn audit_auth(state: &AppState, tenant_id: Id, user_id: Id, action: &str, outcome: Outcome, client: &ClientInfo) {
    let entry = NewAuditEntry {
        tenant_id,
        actor: Actor { kind: ActorKind::User, id: Some(user_id) },
        action: action.into(),
        target: Some(format!("user:{user_id}")),
        request_id: request_id::current(),
        source_ip: client.ip.map(|ip| ip.to_string()),
        outcome,
        data: serde_json::json!({ "user_agent": client.user_agent }),
    };
    if let Err(e) = state.store.append_audit(entry, state.clock.now()).await {
        tracing::error!(error = %e, "could not write the audit entry");
    }
}

/// Issues an access token for a new or refreshed session.
fn access_response(state: &AppState, record: UserRecord, session_id: Id) -> ApiResult<LoginResponse> {
    let token = state.sessions.issue(record.user.id, record.tenant_id, session_id, record.user.role, &state.clock)?;
    Ok(LoginResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: session::ACCESS_TTL_SECONDS,
        user: record.user,
    })
}

/// Exchange a username and password for an access token (and a refresh cookie).
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; sets the refresh cookie", body = LoginResponse),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    Json(body): Json<LoginRequest>,
) -> ApiResult<(CookieJar, axum::Json<LoginResponse>)> {
    state.limits.login(client.ip, &body.username)?;
    let refused = || ApiError::Unauthorized("wrong username or password".into());
    if body.password.len() > password::MAX_LENGTH || body.username.len() > 256 {
        return Err(refused());
    }
    let record = state.store.find_user_by_username(&body.username).await?;
    let phc = record.as_ref().map(|r| r.password_hash.clone());
    let verified = password::verify(body.password, phc).await?;
    let record = match record {
        Some(record) if verified && record.disabled_at.is_none() => record,
        Some(record) => {
            audit_auth(&state, record.tenant_id, record.user.id, "login", Outcome::Failure, &client).await;
            return Err(refused());
        }
        None => {
            tracing::info!(username = %body.username, "login refused: no such user");
            return Err(refused());
        }
    };
    let now = state.clock.now();
    let refresh = credentials::new_refresh_token();
    let session_id = state
        .store
        .create_session(
            NewSession {
                tenant_id: record.tenant_id,
                user_id: record.user.id,
                expires_at: now + chrono::Duration::days(SESSION_DAYS),
                refresh_hash: credentials::hash(&refresh),
                source_ip: client.ip.map(|ip| ip.to_string()),
                user_agent: client.user_agent.clone(),
            },
            now,
        )
        .await?;
    audit_auth(&state, record.tenant_id, record.user.id, "login", Outcome::Success, &client).await;
    let jar = jar.add(refresh_cookie(&state, refresh, SESSION_DAYS * 86_400));
    Ok((jar, axum::Json(access_response(&state, record, session_id)?)))
}

/// Exchange the refresh cookie for a new access token; the cookie is rotated.
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    responses(
        (status = 200, description = "A new access token; the refresh cookie is replaced", body = LoginResponse),
        (status = 401, description = "No valid refresh cookie (a reused one also ends its session)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
) -> Result<(CookieJar, axum::Json<LoginResponse>), (CookieJar, ApiError)> {
    let expired = |jar: CookieJar, detail: &str| {
        (jar.add(cleared_cookie(&state)), ApiError::Unauthorized(format!("{detail}; log in again")))
    };
    let Some(presented) = jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned()).filter(|v| !v.is_empty()) else {
        return Err(expired(jar, "no refresh cookie"));
    };
    let now = state.clock.now();
    let next = credentials::new_refresh_token();
    let outcome =
        state.store.rotate_refresh_token(&credentials::hash(&presented), &credentials::hash(&next), now).await;
    match outcome.map_err(|e| (jar.clone(), e.into()))? {
        Refresh::Rotated { session_id, tenant_id, user_id } => {
            let record = state.store.get_user(tenant_id, user_id).await.map_err(|e| (jar.clone(), e.into()))?;
            let expires = state.store.session_expiry(session_id).await.map_err(|e| (jar.clone(), e.into()))?;
            let response = access_response(&state, record, session_id).map_err(|e| (jar.clone(), e))?;
            let jar = jar.add(refresh_cookie(&state, next, (expires - now).num_seconds().max(1)));
            Ok((jar, axum::Json(response)))
        }
        Refresh::Reused { session_id } => {
            tracing::warn!(%session_id, "refresh token reused: session revoked");
            if let Ok(Some(owner)) = state.store.session_owner(session_id).await {
                audit_auth(&state, owner.0, owner.1, "session_revoked_refresh_reuse", Outcome::Failure, &client).await;
            }
            Err(expired(jar, "this refresh token was already used, so the session was ended"))
        }
        Refresh::Invalid => Err(expired(jar, "the session has ended")),
    }
}

/// End the session of the refresh cookie (and of the bearer token, if one is sent).
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    responses((status = 204, description = "Logged out; the refresh cookie is cleared"))
)]
async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    headers: axum::http::HeaderMap,
) -> ApiResult<(CookieJar, StatusCode)> {
    let now = state.clock.now();
    let mut sessions = Vec::new();
    if let Some(cookie) = jar.get(REFRESH_COOKIE).filter(|c| !c.value().is_empty()) {
        sessions.extend(state.store.session_of_refresh_token(&credentials::hash(cookie.value())).await?);
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    if let Some(claims) = bearer.and_then(|token| state.sessions.verify(token.trim(), &state.clock)) {
        sessions.push(claims.sid);
    }
    // Ending a session changes state, so it is audited like every other change (SPEC §3).
    for session_id in sessions {
        if state.store.revoke_session(session_id, "logout", now).await? {
            if let Some((tenant_id, user_id)) = state.store.session_owner(session_id).await? {
                audit_auth(&state, tenant_id, user_id, "logout", Outcome::Success, &client).await;
            }
        }
    }
    Ok((jar.add(cleared_cookie(&state)), StatusCode::NO_CONTENT))
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
async fn me(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<User>> {
    let user_id = principal.user_id().ok_or_else(|| ApiError::Forbidden("only users have a profile".into()))?;
    Ok(axum::Json(state.store.get_user(principal.tenant_id, user_id).await?.user))
}

/// Change your own password; every session of yours ends (log in again).
#[utoipa::path(
    post, path = "/auth/password", tag = "auth",
    security(("bearer" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Changed; all sessions ended"),
        (status = 403, description = "Wrong current password, or not a login session", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "New password too short or long", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    let Credential::Session { user_id, .. } = principal.credential else {
        return Err(ApiError::Forbidden("passwords are changed from a login session, not with an API token".into()));
    };
    validate_password("new_password", &body.new_password)?;
    let record = state.store.get_user(principal.tenant_id, user_id).await?;
    if !password::verify(body.current_password, Some(record.password_hash)).await? {
        return Err(ApiError::Forbidden("the current password is wrong".into()));
    }
    let hash = password::hash(body.new_password).await?;
    let now = state.clock.now();
    let changes = UserChanges { password_hash: Some(hash), ..UserChanges::default() };
    state.store.update_user(principal.tenant_id, user_id, changes, now).await?;
    state.store.revoke_user_sessions(user_id, "password changed", now).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The password rules, naming `field` in the error.
pub fn validate_password(field: &str, value: &str) -> ApiResult<()> {
    if !(password::MIN_LENGTH..=password::MAX_LENGTH).contains(&value.chars().count()) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be {} to {} characters long", password::MIN_LENGTH, password::MAX_LENGTH),
        ));
    }
    Ok(())
}
