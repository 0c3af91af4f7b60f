//! Reading and parsing a client's request body: the 32 MiB cap, UTF-8 and JSON checks, and the
//! `model` field.
//!
//! The server reads the body before the pipeline (`inbound::body::read_limited`: size cap, body
//! deadline, in-flight budget) and hands it over as one chunk whose buffer owns the in-flight
//! reservation; [`read_body`] passes that chunk through without copying, so the reservation is
//! released when the pipeline drops the bytes after parsing.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use crate::config::MAX_BODY_BYTES;
use crate::error::ApiError;

/// Reads the body under the 32 MiB limit (a single chunk is returned as it is).
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
    let mut first: Option<Bytes> = None;
    let mut buf: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if chunk.is_empty() {
            continue;
        }
        len += chunk.len();
        if len > MAX_BODY_BYTES {
            return Err(too_large());
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut b = bytes::BytesMut::with_capacity(len);
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_chunk_passes_through_without_a_copy() {
        let bytes = Bytes::from(b"{\"model\": \"m\"}".to_vec());
        let ptr = bytes.as_ptr();
        let read = read_body(Body::from(bytes), &HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(read.as_ptr(), ptr, "the same buffer");
        let (_, model) = parse_body(&read).unwrap();
        assert_eq!(model, "m");
    }

    #[tokio::test]
    async fn chunks_are_joined() {
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"{\"model\"")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b": \"m\"}")),
        ];
        let read = read_body(
            Body::from_stream(futures_util::stream::iter(parts)),
            &HeaderMap::new(),
        )
        .await
        .unwrap();
        assert_eq!(&read[..], b"{\"model\": \"m\"}");
    }
}
