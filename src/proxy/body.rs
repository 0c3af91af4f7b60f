//! Reading and parsing a client's request body: the 32 MiB cap, UTF-8 and JSON checks, and the
//! `model` field.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use crate::config::MAX_BODY_BYTES;
use crate::error::ApiError;

/// Reads the body under the 32 MiB limit.
pub(super) async fn read_body(body: Body, headers: &HeaderMap) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        )
        .with_code("request_too_large")
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > MAX_BODY_BYTES as u64
    {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Parses a JSON object body and its `model`.
pub(super) fn parse_body(bytes: &[u8]) -> Result<(Value, String), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(
            ApiError::bad_request("request body is empty; expected a JSON object")
                .with_code("invalid_json"),
        );
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(format!(
            "request body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
        .with_code("invalid_utf8"));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    if !value.is_object() {
        return Err(
            ApiError::bad_request("request body must be a JSON object").with_code("invalid_json")
        );
    }
    let model = match value.get("model") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request("model is required").with_param("model"));
        }
        Some(_) => {
            return Err(ApiError::bad_request("model: expected a string").with_param("model"));
        }
    };
    Ok((value, model))
}
