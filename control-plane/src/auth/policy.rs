//! Who may call which route. The rule of every route is declared on its OpenAPI operation
//! (`security(("bearer" = ["bots:read"]))` for users and API tokens, `security(("agent" = []))`
//! for agents) or listed in [`PUBLIC_ROUTES`]; [`Policy::from_openapi`] reads those
//! declarations back from the generated document, and [`authorize`] enforces them in one
//! place. A route with no rule makes building the app fail, so it can never be served open.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use botmox_contract::{audit::Outcome, auth::Scope};

use super::{authenticate, bearer};
use crate::{
    http::{client_ip, error::ApiError, request_id},
    state::AppState,
    store::NewAuditEntry,
};

/// Routes anyone may call: they authenticate by other means (password, pairing code, refresh
/// cookie) or reveal nothing.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/agents/pair"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    // A server-level token (not a principal of any tenant) or a tenant admin's credential:
    // `metrics` authenticates itself.
    ("GET", "/metrics"),
];

/// The OpenAPI security scheme names.
pub const USER_SCHEME: &str = "bearer";
pub const AGENT_SCHEME: &str = "agent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Only an agent token, acting as itself.
    Agent,
    /// Any user, by session or API token, acting on their own things (`bearer = []`).
    AnyUser,
    /// A user session or API token allowed `scope` (see [`super::min_role`]).
    User(Scope),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub access: Access,
    /// The OpenAPI operation id (the handler's name): the audit log's action.
    pub operation_id: String,
    /// The query parameters the operation declares: any other is refused (one rule for every
    /// route, whether or not its handler reads a query).
    pub query: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Policy {
    rules: HashMap<(Method, String), Rule>,
}

impl Policy {
    /// Reads every operation's rule; lists every route without a valid one as an error.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<Self, String> {
        let json = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let mut rules = HashMap::new();
        let mut problems = Vec::new();
        let paths = json["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for (method, operation) in item.as_object().cloned().unwrap_or_default() {
                let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else { continue };
                let operation_id = operation["operationId"].as_str().unwrap_or_default().to_owned();
                let query = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                let public = PUBLIC_ROUTES.iter().any(|(m, p)| *m == method.as_str() && *p == path);
                let declared: Vec<BTreeMap<String, Vec<String>>> =
                    serde_json::from_value(operation["security"].clone()).unwrap_or_default();
                let access = match (public, declared.as_slice()) {
                    (true, []) => Ok(Access::Public),
                    (true, _) => Err("is public but declares security".to_owned()),
                    (false, [one]) if one.len() == 1 => match one.iter().next() {
                        Some((scheme, scopes)) if scheme == AGENT_SCHEME && scopes.is_empty() => Ok(Access::Agent),
                        Some((scheme, scopes)) if scheme == USER_SCHEME && scopes.is_empty() => Ok(Access::AnyUser),
                        Some((scheme, scopes)) if scheme == USER_SCHEME && scopes.len() == 1 => {
                            Scope::parse(&scopes[0])
                                .map(Access::User)
                                .ok_or(format!("names unknown scope {}", scopes[0]))
                        }
                        _ => {
                            Err("must declare one scope (or none) of the bearer scheme, or the agent scheme".to_owned())
                        }
                    },
                    (false, _) => Err("declares no access rule".to_owned()),
                };
                match access {
                    Ok(access) => {
                        rules.insert((method, path.clone()), Rule { access, operation_id, query });
                    }
                    Err(why) => problems.push(format!("{method} {path} {why}")),
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { rules })
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn rule(&self, method: &Method, path: &str) -> Option<&Rule> {
        // HEAD is GET without the body (axum serves it from the GET route): the same rule.
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.rules.get(&(method.clone(), path.to_owned()))
    }

    /// Every route and its rule (the authorisation matrix test walks this).
    pub fn rules(&self) -> impl Iterator<Item = (&Method, &str, &Rule)> {
        self.rules.iter().map(|((method, path), rule)| (method, path.as_str(), rule))
    }
}

/// `kind:id` of what a request acts on: the last `{param}` of its route (or the id in the
/// `Location` of what it created), named after the path segment before it.
fn audit_target(matched: &str, concrete: &str, response: &Response) -> Option<String> {
    let pattern: Vec<&str> = matched.trim_start_matches('/').split('/').collect();
    let actual: Vec<&str> = concrete.trim_start_matches('/').split('/').collect();
    let param = pattern.iter().rposition(|segment| segment.starts_with('{'));
    if let Some(i) = param.filter(|i| *i > 0 && *i < actual.len()) {
        return Some(format!("{}:{}", pattern[i - 1].trim_end_matches('s'), actual[i]));
    }
    let location = response.headers().get(axum::http::header::LOCATION)?.to_str().ok()?;
    let (kind, id) = location.trim_end_matches('/').rsplit_once('/')?;
    Some(format!("{}:{id}", kind.rsplit('/').next()?.trim_end_matches('s')))
}

/// Enforces the route's rule, hands the [`Principal`] to the handler, and audits every
/// state-changing request an authenticated principal makes (refused ones included).
pub async fn authorize(State(state): State<AppState>, matched: MatchedPath, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let Some(rule) = crate::http::policy().rule(&method, matched.as_str()).cloned() else {
        // Unreachable: `http::app` refuses to build with a route the policy does not know.
        return ApiError::Internal(anyhow::anyhow!("no access rule for {method} {}", matched.as_str())).into_response();
    };
    if let Some(query) = req.uri().query() {
        let carries_token = form_urlencoded::parse(query.as_bytes())
            .any(|(key, _)| matches!(key.as_ref(), "access_token" | "token" | "api_key" | "bearer"));
        if carries_token {
            return ApiError::bad_request("token_in_query", "credentials are refused in the query string")
                .with_hint("query strings end up in logs and browser history; send `Authorization: Bearer <token>`")
                .into_response();
        }
        if let Some((unknown, _)) =
            form_urlencoded::parse(query.as_bytes()).find(|(key, _)| !rule.query.iter().any(|known| known == key))
        {
            let known = if rule.query.is_empty() { "none".to_owned() } else { rule.query.join(", ") };
            return ApiError::Request {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "invalid_query",
                detail: format!("unknown query parameter `{unknown}` (this route takes: {known})"),
                field: Some(unknown.into_owned()),
                hint: None,
            }
            .into_response();
        }
    }
    if rule.access == Access::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let principal = match bearer(&parts) {
        Ok(token) => authenticate(&state, token).await,
        Err(e) => Err(e),
    };
    let principal = match principal {
        Ok(principal) => principal,
        Err(e) => return e.into_response(),
    };
    let forbidden = |code: &'static str, detail: String| ApiError::Request {
        status: axum::http::StatusCode::FORBIDDEN,
        code,
        detail,
        field: None,
        hint: None,
    };
    let denied = match rule.access {
        Access::Agent if principal.agent_id().is_none() => {
            Some(forbidden("wrong_credential_kind", "only an agent token may call this".into()))
        }
        Access::User(_) | Access::AnyUser if principal.agent_id().is_some() => Some(forbidden(
            "wrong_credential_kind",
            "agent tokens may only call the agent endpoints (/api/v1/agent/…)".into(),
        )),
        Access::User(scope) if !principal.allows(scope) => Some(super::insufficient_scope("this", scope)),
        _ => None,
    };
    let source_ip = client_ip(&parts, &state.settings).map(|ip| ip.to_string());
    let concrete = parts.uri.path().to_owned();
    let response = match denied {
        Some(refusal) => refusal.into_response(),
        None => {
            parts.extensions.insert(principal.clone());
            next.run(Request::from_parts(parts, body)).await
        }
    };
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let status = response.status();
        let entry = NewAuditEntry {
            tenant_id: principal.tenant_id,
            actor: principal.actor(),
            action: rule.operation_id.clone(),
            target: audit_target(matched.as_str(), &concrete, &response),
            request_id: request_id::current(),
            source_ip,
            outcome: if status.is_success() { Outcome::Success } else { Outcome::Failure },
            data: serde_json::json!({ "method": method.as_str(), "path": concrete, "status": status.as_u16() }),
        };
        state.audit_log.record(entry, state.clock.now()).await;
    }
    response
}
