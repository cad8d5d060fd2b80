//! Authentication and authorisation.
//!
//! Three kinds of bearer credential reach the API: session access tokens (JWTs from login),
//! API tokens (`bmx_…`) and agent tokens (`bmxa_…`). [`authenticate`] turns any of them into a
//! [`Principal`], checking the store on every request so that a revoked token, a disabled user
//! or a revoked agent is refused on the very next request. *Which* principal may call a route
//! is declared once, on the route's OpenAPI operation, and enforced by [`policy::authorize`].

pub mod access;
pub mod bootstrap;
pub mod credentials;
pub mod password;
pub mod policy;
pub mod rate_limit;
mod routes;
pub mod session;
pub mod watch;

use axum::{extract::FromRequestParts, http::request::Parts};
use botmox_contract::{
    agents::AgentStatus,
    audit::{Actor, ActorKind},
    auth::{Role, Scope},
    Id,
};

pub use routes::{router, validate_password};

use crate::{
    http::error::{ApiError, ApiResult},
    state::AppState,
};

/// The credential a request was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session { user_id: Id, session_id: Id },
    ApiToken { token_id: Id, user_id: Id, scopes: Vec<Scope> },
    Agent { agent_id: Id },
}

/// Who is making a request, in which tenant, with what rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Id,
    /// The user's current role (for API tokens: their creator's); `None` for agents.
    pub role: Option<Role>,
    pub credential: Credential,
}

/// The least role that may hold a scope; a token never grants more than its creator's role.
pub fn min_role(scope: Scope) -> Role {
    match scope {
        Scope::BotsRead | Scope::AgentsRead | Scope::CommandsRead => Role::Viewer,
        Scope::BotsControl | Scope::CommandsWrite => Role::Operator,
        Scope::BotsWrite | Scope::AgentsWrite | Scope::SecretsWrite | Scope::AuditRead | Scope::Admin => Role::Admin,
    }
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::Session { user_id, .. } => Actor { kind: ActorKind::User, id: Some(*user_id) },
            Credential::ApiToken { token_id, .. } => Actor { kind: ActorKind::ApiToken, id: Some(*token_id) },
            Credential::Agent { agent_id } => Actor { kind: ActorKind::Agent, id: Some(*agent_id) },
        }
    }

    /// The user acting (directly or through one of their API tokens).
    pub fn user_id(&self) -> Option<Id> {
        match &self.credential {
            Credential::Session { user_id, .. } | Credential::ApiToken { user_id, .. } => Some(*user_id),
            Credential::Agent { .. } => None,
        }
    }

    pub fn agent_id(&self) -> Option<Id> {
        match &self.credential {
            Credential::Agent { agent_id } => Some(*agent_id),
            _ => None,
        }
    }

    /// Whether this principal may use something that needs `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        let role_ok = self.role.is_some_and(|role| role >= min_role(scope));
        match &self.credential {
            Credential::Session { .. } => role_ok,
            Credential::ApiToken { scopes, .. } => {
                role_ok && (scopes.contains(&scope) || scopes.contains(&Scope::Admin))
            }
            Credential::Agent { .. } => false,
        }
    }

    /// Refuses unless the principal may use `scope` (its role, and for an API token its
    /// scopes too: an admin's `bots:read` token is no admin).
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(insufficient_scope("this", scope))
        }
    }
}

/// The 403 of a principal without `scope`; `what` names what needed it.
pub fn insufficient_scope(what: &str, scope: Scope) -> ApiError {
    ApiError::Request {
        status: axum::http::StatusCode::FORBIDDEN,
        code: "insufficient_scope",
        detail: format!("{what} needs `{}` (a {} or higher)", scope.as_str(), min_role(scope).as_str()),
        field: None,
        hint: None,
    }
}

/// Set by [`policy::authorize`] (as a request extension) for every route that is not public.
impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("this endpoint needs an Authorization header".into()))
    }
}

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(parts: &Parts) -> ApiResult<&str> {
    bearer_of(&parts.headers)
}

/// The bearer token in `headers`, if there is a well-formed one.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> ApiResult<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("this endpoint needs an Authorization header".into()))?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))
}

/// Checks a bearer credential against the store: signature or hash, expiry, revocation, the
/// user being enabled, the agent not revoked. Every failure is the same 401 to the caller.
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<Principal> {
    let now = state.clock.now();
    let refused = |why: &str| {
        tracing::info!(reason = why, "credential refused");
        ApiError::Unauthorized("the token is invalid, expired or revoked".into())
    };
    if token.starts_with(credentials::AGENT_TOKEN_PREFIX) {
        let agent =
            state.store.find_agent_by_token(&credentials::hash(token)).await?.ok_or_else(|| refused("agent"))?;
        if agent.status == AgentStatus::Revoked {
            // Recorded off the request's path (the refusal never waits for the incident), and
            // at most once per agent per cooldown: repeating the attempt costs the server nothing.
            if !state.revoked_attempts.admit(agent.agent_id, now) {
                return Err(refused("agent revoked"));
            }
            let (state, tenant_id, agent_id) = (state.clone(), agent.tenant_id, agent.agent_id);
            tokio::spawn(async move {
                if let Err(e) = crate::incidents::rules::revoked_agent_connected(&state, tenant_id, agent_id).await {
                    tracing::warn!(error = %e, %agent_id, "could not record the revoked agent's attempt");
                }
            });
            return Err(refused("agent revoked"));
        }
        return Ok(Principal {
            tenant_id: agent.tenant_id,
            role: None,
            credential: Credential::Agent { agent_id: agent.agent_id },
        });
    }
    if token.starts_with(credentials::API_TOKEN_PREFIX) {
        let found = state.store.find_api_token(&credentials::hash(token)).await?.ok_or_else(|| refused("api token"))?;
        if found.token.revoked_at.is_some() || found.user_disabled || found.token.expires_at.is_some_and(|e| e <= now) {
            return Err(refused("api token revoked, expired or its user disabled"));
        }
        // `last_used_at` moves at most once a minute, so most requests need no write at all
        // (on SQLite even a write that changes nothing waits for the one writer).
        if found.token.last_used_at.is_none_or(|used| now - used >= chrono::Duration::seconds(60)) {
            state.store.touch_api_token(found.token.id, now).await?;
        }
        return Ok(Principal {
            tenant_id: found.tenant_id,
            role: Some(found.user_role),
            credential: Credential::ApiToken {
                token_id: found.token.id,
                user_id: found.token.user_id,
                scopes: found.token.scopes,
            },
        });
    }
    let claims = state.sessions.verify(token, &state.clock).ok_or_else(|| refused("session token"))?;
    let live = state.session_checks.submit((claims.sub, claims.sid)).await?.ok_or_else(|| refused("session"))?;
    Ok(Principal {
        tenant_id: live.tenant_id,
        role: Some(live.role),
        credential: Credential::Session { user_id: claims.sub, session_id: claims.sid },
    })
}

/// Admits one occurrence per key per [`Cooldown::PERIOD`]: what bounds the work a repeated
/// refused request can cause (a revoked agent token spawns one incident write per minute, not
/// one per request). Keys are only ever real revoked agents, and expired entries are dropped
/// as the map grows, so it stays small.
#[derive(Debug, Default)]
pub struct Cooldown {
    last: std::sync::Mutex<std::collections::HashMap<Id, botmox_contract::Timestamp>>,
}

impl Cooldown {
    pub const PERIOD: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

    pub fn admit(&self, key: Id, now: botmox_contract::Timestamp) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.get(&key).is_some_and(|at| now - *at < Self::PERIOD) {
            return false;
        }
        if last.len() >= 1024 {
            last.retain(|_, at| now - *at < Self::PERIOD);
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cooldown_admits_once_per_period_and_key() {
        let cooldown = Cooldown::default();
        let (a, b, now) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), chrono::Utc::now());
        assert!(cooldown.admit(a, now));
        assert!(!cooldown.admit(a, now + chrono::TimeDelta::seconds(59)));
        assert!(cooldown.admit(b, now), "another key has its own period");
        assert!(cooldown.admit(a, now + Cooldown::PERIOD));
    }
}
