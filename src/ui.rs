//! The admin console's files (contract §11), embedded at build time from `ui/` (`build.rs`).
//!
//! `GET /` is the shell (`ui/index.html`, with `{{BUILD}}` replaced by the build id),
//! `Cache-Control: no-cache` and an `ETag`, so a browser always revalidates it (a 304 when
//! nothing changed). Every other file is served at `/assets/<build>/<path>` with
//! `Cache-Control: public, max-age=31536000, immutable`: the build id is the first 12 hex digits of
//! a SHA-256 over every file's path and bytes, so any change gives new URLs and a browser never
//! keeps a stale script. Relative imports inside the scripts inherit the versioned prefix. An
//! unknown build id or path is a 404. Nothing is read from disk at run time; the CSP and
//! `nosniff` headers come from the edge (`server::edge`).

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

pub use embedded::FILES;

/// The build id: 12 hex digits of SHA-256 over every file's path, length and bytes.
pub static BUILD: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for (path, bytes) in FILES {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())[..12].to_string()
});

/// The shell with the build id filled in.
static INDEX: LazyLock<Bytes> = LazyLock::new(|| {
    let raw = file("index.html").unwrap_or_default();
    Bytes::from(String::from_utf8_lossy(raw).replace("{{BUILD}}", &BUILD))
});

/// The `ETag` of every response of this build.
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&format!("\"{}\"", *BUILD)).unwrap_or(HeaderValue::from_static("\"\""))
});

fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

/// The media type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The console routes, merged into the main router.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/assets/{build}/{*path}", get(asset))
}

fn not_modified(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == ETAG.to_str().unwrap_or_default()
        })
}

fn respond(
    headers: &HeaderMap,
    body: Bytes,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let mut resp = if not_modified(headers) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, ETAG.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

async fn index(headers: HeaderMap) -> Response {
    respond(
        &headers,
        INDEX.clone(),
        "text/html; charset=utf-8",
        "no-cache",
    )
}

async fn asset(Path((build, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    // `index.html` is only served as `/`, where its build id is filled in.
    let found = (build == *BUILD && path != "index.html")
        .then(|| file(&path))
        .flatten();
    match found {
        Some(bytes) => respond(
            &headers,
            Bytes::from_static(bytes),
            content_type(&path),
            "public, max-age=31536000, immutable",
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    }
}
