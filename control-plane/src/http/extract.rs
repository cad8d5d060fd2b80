//! Extractors whose rejections are [`ApiError`]s, so that a bad body, query or path gets the
//! API's problem+json with the offending field named, never axum's plain-text defaults.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body. Checks the content type, the size (axum's `DefaultBodyLimit`), the syntax, and
/// the shape (types, missing and unknown fields, via `serde_path_to_error` for the field path).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::Request {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                detail: "the body must be JSON".into(),
                field: None,
                hint: Some("send `Content-Type: application/json`".into()),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Json)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::Request {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            detail: "the request body is larger than the server accepts".into(),
            field: None,
            hint: None,
        }
    } else {
        ApiError::bad_request("unreadable_body", format!("the request body could not be read: {rejection}"))
    }
}

/// Parses a JSON document into `T`: first the syntax (400 `malformed_json`), then the shape
/// (422, naming the offending field). Bodies are small, so the intermediate `Value` is cheap.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    from_value(document)
}

/// Reads a JSON value into `T`, refusing a wrong shape with a 422 naming the field (as the
/// body extractor does; `POST /bots/import` reads each definition of its list with this).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        data_error(&path, err.inner())
    })
}

fn data_error(path: &str, err: &serde_json::Error) -> ApiError {
    let message = err.to_string();
    // serde_path_to_error usually ends the path with the unknown key already; make sure it does.
    let path = if path == "." { "" } else { path };
    let field = match message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
        Some(unknown) if path.is_empty() => unknown.to_owned(),
        Some(unknown) if !path.ends_with(unknown) => format!("{path}.{unknown}"),
        _ => path.to_owned(),
    };
    let code = if message.starts_with("unknown field") { "unknown_field" } else { "invalid_body" };
    let detail = if field.is_empty() { message } else { format!("{field}: {message}") };
    ApiError::Request {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code,
        detail,
        field: (!field.is_empty()).then_some(field),
        hint: None,
    }
}

/// Query parameters; unknown or malformed ones are refused with their name.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            let field = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
                .or_else(|| (path != ".").then_some(path));
            ApiError::Request {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_query",
                detail: match &field {
                    Some(field) => format!("query parameter `{field}`: {message}"),
                    None => format!("invalid query string: {message}"),
                },
                field,
                hint: None,
            }
        })
    }
}

/// A path parameter; a malformed one (e.g. not a UUID) is a 400 naming the value.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// `If-Match: "<version>"` (also `W/"<version>"` or a bare number). Absent → `None`.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or("").trim();
        let bare = text.trim_start_matches("W/").trim_matches('"');
        bare.parse::<u64>().map(|v| IfMatch(Some(v))).map_err(|_| {
            ApiError::bad_request(
                "invalid_if_match",
                format!("If-Match must be a version such as \"3\" (got `{text}`)"),
            )
            .with_hint("use the ETag of the resource, or its `version` field")
        })
    }
}

/// The `ETag` value for a resource version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}
