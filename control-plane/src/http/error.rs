//! `ApiError`: the one error type of every handler, rendered as `application/problem+json`
//! (RFC 9457) with a stable `code`. 500 bodies are opaque; their cause is logged once, here.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use botmox_contract::problem::{ItemError, Problem, CONTENT_TYPE};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (4xx): bad body, bad query, failed validation, …
    #[error("{detail}")]
    Request { status: StatusCode, code: &'static str, detail: String, field: Option<String>, hint: Option<String> },
    /// Also used for other tenants' rows: they do not exist for the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 422 for a request made of many items (`POST /bots/import`): every refused item, by
    /// index and field, in the problem's `errors`.
    #[error("{detail}")]
    Items { detail: String, errors: Vec<ItemError> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("the resource changed: current version is {current}")]
    VersionMismatch { current: u64 },
    #[error("too many attempts; retry in {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
    /// A transient failure (the database could not commit): nothing changed, send it again.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Request { status: StatusCode::BAD_REQUEST, code, detail: detail.into(), field: None, hint: None }
    }

    /// 422: well-formed but not acceptable; `field` is a JSON path such as `exec.program`.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            detail: detail.into(),
            field: Some(field.into()),
            hint: None,
        }
    }

    /// This error as one refused item of a many-item request: its field, code and detail.
    pub fn into_item(self, index: usize) -> ItemError {
        let problem = self.problem();
        ItemError { index, field: problem.field, code: problem.code, detail: problem.detail }
    }

    /// 422 `unknown_reference`: the request names something the tenant does not have (an agent).
    pub fn unknown_reference(detail: String, field: Option<&str>) -> Self {
        Self::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "unknown_reference",
            detail,
            field: field.map(str::to_owned),
            hint: None,
        }
    }

    /// 409 `agent_draining`: a start for a bot whose agent is draining.
    pub fn agent_draining(detail: String) -> Self {
        Self::Request { status: StatusCode::CONFLICT, code: "agent_draining", detail, field: None, hint: None }
            .with_hint("undrain the agent (POST /api/v1/agents/{id}/undrain) or move the bot to another agent")
    }

    pub fn with_hint(mut self, text: impl Into<String>) -> Self {
        if let Self::Request { hint, .. } = &mut self {
            *hint = Some(text.into());
        }
        self
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Request { status, .. } => *status,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Items { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let (code, detail, field, hint): (String, String, Option<String>, Option<String>) = match self {
            Self::Request { code, detail, field, hint, .. } => {
                ((*code).into(), detail.clone(), field.clone(), hint.clone())
            }
            Self::NotFound(what) => {
                (format!("{}_not_found", what.replace(' ', "_")), format!("{what} not found"), None, None)
            }
            Self::Items { detail, .. } => (
                "validation_failed".into(),
                detail.clone(),
                None,
                Some("`errors` lists every refused item by index and field; nothing was changed".into()),
            ),
            Self::Unauthorized(detail) => (
                "unauthorized".into(),
                detail.clone(),
                None,
                Some("log in with POST /api/v1/auth/login and send `Authorization: Bearer <access_token>`".into()),
            ),
            Self::Forbidden(detail) => ("forbidden".into(), detail.clone(), None, None),
            Self::Conflict { code, detail } => ((*code).into(), detail.clone(), None, None),
            Self::VersionMismatch { current } => (
                "version_mismatch".into(),
                format!("the resource was changed by someone else: its version is now {current}"),
                None,
                Some("GET it again, re-apply your change and send If-Match with the new version".into()),
            ),
            Self::TooManyRequests { retry_after_seconds } => (
                "rate_limited".into(),
                format!("too many attempts from here; retry in {retry_after_seconds} s"),
                None,
                Some("wait for the time in the Retry-After header".into()),
            ),
            Self::Unavailable(_) => (
                "unavailable".into(),
                "the server could not store this request just now; nothing changed".into(),
                None,
                Some("send the same request again in a moment (with the same Idempotency-Key, if any)".into()),
            ),
            Self::Internal(_) => (
                "internal".into(),
                "the server failed to handle this request; the request id leads to its log".into(),
                None,
                None,
            ),
        };
        let status = self.status();
        Problem {
            type_uri: format!("urn:botmox:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code,
            detail,
            hint,
            field,
            instance: crate::http::request_id::current(),
            errors: match self {
                Self::Items { errors, .. } => errors.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(detail) => Self::Conflict { code: "conflict", detail },
            StoreError::VersionMismatch { current } => Self::VersionMismatch { current },
            StoreError::InvalidTransition { .. } => {
                Self::Conflict { code: "invalid_transition", detail: err.to_string() }
            }
            StoreError::Reference(detail) => Self::unknown_reference(detail, None),
            StoreError::AgentDraining(detail) => Self::agent_draining(detail),
            StoreError::Unavailable(detail) => Self::Unavailable(detail),
            // A database error rolled the request's transaction back: nothing changed, and
            // a retry may well succeed (a restart, a lost connection, a full pool). Logged at
            // the boundary like any failure, answered as retryable.
            StoreError::Db(e) => {
                tracing::error!(error = %e, "the database refused a request's writes");
                Self::Unavailable(e.to_string())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<crate::control::ControlError> for ApiError {
    fn from(err: crate::control::ControlError) -> Self {
        use crate::control::ControlError;
        match err {
            ControlError::NotFound(what) => Self::NotFound(what),
            ControlError::AgentRevoked(detail) => Self::Conflict { code: "agent_revoked", detail },
            ControlError::AgentDraining(detail) => Self::agent_draining(detail),
            ControlError::NoSuchAgent(detail) => Self::unknown_reference(detail, Some("agent_id")),
            ControlError::Busy(detail) => Self::Conflict { code: "idempotency_key_in_use", detail },
            ControlError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            // The one place a failed request is logged; the span carries the request id.
            tracing::error!(error = ?cause, "request failed");
        }
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests { retry_after_seconds } = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
        }
        if let Self::Unavailable(cause) = &self {
            tracing::warn!(%cause, "request refused: the store is unavailable");
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
