//! The web control panel: the static files of `frontend/dist` (a Vite build), embedded in the
//! binary and served at `/`.
//!
//! `rust-embed` embeds the files (with `debug-embed`, debug builds embed too, so tests run what a
//! release ships) and gives each one's SHA-256 for the ETag and its MIME type. We do not use
//! `memory-serve`: it compresses at compile time with its own rules and has one cache policy for
//! all non-HTML files, where we need `immutable` only for Vite's content-hashed `assets/` and the
//! SPA fallback only outside `/api`. Compression happens once, at `npm run build`
//! (`frontend/scripts/compress.mjs` writes `.br` and `.gz` beside every text asset), so the
//! server picks a precompressed variant and never compresses per request.
//!
//! Without a built panel (`cargo build` on a machine without Node) `frontend/dist` is empty
//! (`build.rs` creates it) and `/` answers a short page saying how to build the panel.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use rust_embed::Embed;

use super::error::ApiError;

#[derive(Embed)]
#[folder = "../frontend/dist"]
#[allow_missing = true]
struct Dist;

const INDEX: &str = "index.html";
/// Vite puts every content-hashed file here: their names change when their bytes do.
const HASHED_DIR: &str = "assets/";

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>botmox</title></head>\
<body><h1>botmox</h1><p>The web control panel is not built into this binary.</p>\
<p>Build it with <code>cargo xtask run</code>, or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code> \
and then rebuild <code>botmox</code>. The API is at <a href=\"/docs\">/docs</a>.</p></body></html>";

/// The fallback of the whole app: a panel file, the panel's `index.html` for a client route,
/// or the API's JSON 404 for anything under `/api` and for missing files.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") || !(method == Method::GET || method == Method::HEAD) {
        return ApiError::NotFound("route").into_response();
    }
    let file = path.trim_start_matches('/');
    let file = if file.is_empty() { INDEX } else { file };
    if Dist::get(file).is_some() {
        return asset(file, &headers);
    }
    // A client route (`/bots/…`) gets the app; a missing file (`/assets/old.js`) a 404.
    let last_segment = file.rsplit('/').next().unwrap_or_default();
    if last_segment.contains('.') {
        return ApiError::NotFound("file").into_response();
    }
    if Dist::get(INDEX).is_some() {
        asset(INDEX, &headers)
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT).into_response()
    }
}

/// One embedded file, precompressed when the client takes it, with an ETag and the cache rule
/// for its kind. `index.html` gets `no-store` from the HTML security layer in `http::app`.
fn asset(file: &str, headers: &HeaderMap) -> Response {
    let accepted = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (encoding, embedded) = [("br", ".br"), ("gzip", ".gz")]
        .into_iter()
        .filter(|(name, _)| accepts(accepted, name))
        .find_map(|(name, suffix)| Dist::get(&format!("{file}{suffix}")).map(|e| (Some(name), e)))
        .or_else(|| Dist::get(file).map(|e| (None, e)))
        .expect("the caller checked that the file exists");
    let original = Dist::get(file).map(|e| e.metadata.sha256_hash()).unwrap_or_default();
    let tag = format!("\"{}{}\"", hex::encode(&original[..12]), encoding.map(|e| format!("-{e}")).unwrap_or_default());
    let mime = mime_of(file);
    let cache = if file.starts_with(HASHED_DIR) { "public, max-age=31536000, immutable" } else { "no-cache" };

    let mut response = if if_none_match(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(embedded.data.into_owned()))
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, tag);
    }
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

fn mime_of(file: &str) -> String {
    let mime = Dist::get(file).map(|e| e.metadata.mimetype().to_owned()).unwrap_or_default();
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "text/javascript" {
        format!("{mime}; charset=utf-8")
    } else if mime.is_empty() {
        "application/octet-stream".into()
    } else {
        mime
    }
}

/// Whether an `Accept-Encoding` value takes `coding` (a plain token list; `;q=0` refuses it).
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        parts.next().is_some_and(|name| name.eq_ignore_ascii_case(coding))
            && !parts.any(|p| p.replace(' ', "").starts_with("q=0") && !p.contains(|c: char| ('1'..='9').contains(&c)))
    })
}

fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
}

#[cfg(test)]
mod tests {
    use super::accepts;

    /// The panel's API types are generated from `frontend/openapi.json` (so `npm run build` needs
    /// no cargo); this keeps that snapshot equal to the document the server generates.
    /// `BOTMOX_UPDATE_OPENAPI=1` rewrites it instead (what `cargo xtask openapi` does).
    #[test]
    fn frontend_openapi_snapshot_matches_the_server() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/openapi.json");
        let current = serde_json::to_string_pretty(&crate::http::openapi()).expect("the document serialises") + "\n";
        if std::env::var_os("BOTMOX_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &current).expect("frontend/openapi.json is writable");
            return;
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            snapshot == current,
            "frontend/openapi.json differs from the server's OpenAPI document: the panel's API types are stale. \
             Regenerate both with `cargo xtask openapi` (writes the snapshot and runs openapi-typescript), \
             then commit frontend/openapi.json and frontend/src/lib/api/schema.d.ts."
        );
    }

    #[test]
    fn accept_encoding_is_read_per_coding() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("gzip;q=0", "gzip"));
        assert!(!accepts("identity", "br"));
        assert!(!accepts("", "gzip"));
    }
}
