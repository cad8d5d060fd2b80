//! Pagination shared by the list endpoints: page-size bounds and opaque cursors (the last key
//! of the previous page, base64url-wrapped so clients treat it as a token).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};

/// The page size: `given` or `default`, refused outside `1..=max`.
pub fn limit(given: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    let limit = given.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request("invalid_query", format!("`limit` must be between 1 and {max}")))
    }
}

pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> ApiResult<String> {
    URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(|| {
        ApiError::bad_request("invalid_cursor", "`cursor` is not one this server handed out")
            .with_hint("pass the `next_cursor` of the previous page unchanged")
    })
}

/// A cursor holding an id (lists ordered by id). An empty cursor is the first page.
pub fn decode_id_cursor(cursor: Option<&str>) -> ApiResult<Option<Uuid>> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else { return Ok(None) };
    let key = decode_cursor(cursor)?;
    Uuid::parse_str(&key)
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid_cursor", "`cursor` is not one this server handed out"))
}
