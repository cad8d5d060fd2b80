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
        parse_json(&json_body(req, state).await?).map(Json)
    }
}

/// A JSON body an agent sent ([`parse_json_replacing_nul`]: NULs in its text are replaced,
/// not refused); otherwise the same checks as [`Json`].
pub struct AgentJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AgentJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_json_replacing_nul(&json_body(req, state).await?).map(AgentJson)
    }
}

/// The bytes of a JSON body: the content type and the size checked.
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::Request {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            detail: "the body must be JSON".into(),
            field: None,
            hint: Some("send `Content-Type: application/json`".into()),
        });
    }
    Bytes::from_request(req, state).await.map_err(body_error)
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

/// The JSON document of a body: 400 `malformed_json` if it is not JSON, 422 `duplicate_key`
/// (naming the key's path) if an object repeats a key. serde_json would keep the last one
/// silently, so two readers of one body (a proxy, a WAF, this server) could disagree on
/// what it says; a body that says two things is refused instead.
fn document(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed =
        serde::de::DeserializeSeed::deserialize(unique::Unique(""), &mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match unique::duplicate(&e) {
        Some(path) => ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "duplicate_key",
            detail: format!("`{path}` appears more than once; a key may appear once per object"),
            field: Some(path),
            hint: None,
        },
        None => ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")),
    })
}

/// A JSON reader that refuses repeated object keys (a `DeserializeSeed` carrying the path, so
/// the refusal names where).
mod unique {
    use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    const MARK: &str = "duplicate key `";

    pub struct Unique<'p>(pub &'p str);

    /// The path of the repeated key, if that is why `err` refused the document.
    pub fn duplicate(err: &serde_json::Error) -> Option<String> {
        let message = err.to_string();
        message.strip_prefix(MARK).and_then(|rest| rest.rsplit_once('`')).map(|(path, _)| path.to_owned())
    }

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = Value;

        fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Unique(&format!("{}[{}]", self.0, items.len())))? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
            let mut map = Map::new();
            while let Some(key) = access.next_key::<String>()? {
                let path = if self.0.is_empty() { key.clone() } else { format!("{}.{key}", self.0) };
                if map.contains_key(&key) {
                    return Err(A::Error::custom(format!("{MARK}{path}`")));
                }
                let value = access.next_value_seed(Unique(&path))?;
                map.insert(key, value);
            }
            Ok(Value::Object(map))
        }
    }
}

/// Parses a JSON document into `T`: first the syntax (400 `malformed_json`), then NUL
/// characters in text (422 `nul_character`: PostgreSQL cannot store them, so neither backend
/// takes them), then the shape (422, naming the offending field). Bodies are small, so the
/// intermediate `Value` is cheap.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let document = document(bytes)?;
    if may_hold_nul(bytes) {
        if let Some(field) = nul_field(&document, "") {
            let at = if field.is_empty() { "the body".to_owned() } else { format!("`{field}`") };
            return Err(ApiError::Request {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "nul_character",
                detail: format!("{at} contains a NUL character (\\u0000), which text here may not hold"),
                field: (!field.is_empty()).then_some(field),
                hint: None,
            });
        }
    }
    from_value(document)
}

/// Like [`parse_json`], but NUL characters in text are replaced by U+FFFD instead of refused:
/// for what an agent reports (a bot's log line, an error message), where refusing the frame
/// would only make the agent send it again forever.
pub fn parse_json_replacing_nul<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut document = document(bytes)?;
    if may_hold_nul(bytes) {
        replace_nul(&mut document);
    }
    from_value(document)
}

/// Whether JSON text may contain an escaped NUL (a raw one is not valid JSON): the cheap test
/// before the exact walk.
pub fn may_hold_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w[0] == b'\\' && w[1] == b'u' && &w[2..] == b"0000")
}

/// The path of the first text (a string or an object key) holding a NUL.
fn nul_field(value: &serde_json::Value, path: &str) -> Option<String> {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_field(item, &format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "\\u0000")))
            } else {
                nul_field(item, &join(key))
            }
        }),
        _ => None,
    }
}

/// Replaces every NUL in the document's text by U+FFFD.
pub fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    replace_nul(&mut item);
                    map.insert(key.replace('\0', "\u{FFFD}"), item);
                }
            } else {
                map.values_mut().for_each(replace_nul);
            }
        }
        _ => {}
    }
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
        if let Some((name, _)) =
            form_urlencoded::parse(query.as_bytes()).find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            let name = name.replace('\0', "%00");
            return Err(ApiError::Request {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_query",
                detail: format!("query parameter `{name}` contains a NUL character (%00)"),
                field: Some(name),
                hint: None,
            });
        }
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
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(ApiError::bad_request("invalid_path", "the path contains a NUL character (%00)"));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// `If-Match: "<version>"` (or a bare number). Absent → `None`. If-Match compares strongly
/// (RFC 9110 §13.1.1): a weak tag `W/"…"` never matches, so it is refused with 412.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or("").trim();
        if text.starts_with("W/") {
            return Err(ApiError::Request {
                status: StatusCode::PRECONDITION_FAILED,
                code: "weak_etag",
                detail: format!("If-Match compares strongly: the weak tag `{text}` never matches"),
                field: None,
                hint: Some("send the ETag as the server gave it, e.g. \"3\"".into()),
            });
        }
        let bare = text.trim_matches('"');
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
