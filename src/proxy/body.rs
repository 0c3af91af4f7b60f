//! Reading and parsing a client's request body: the 32 MiB cap, UTF-8 and JSON checks, the
//! structural cap (`limits.max_json_values`, checked by a pre-scan before any DOM is built) and
//! the `model` field.
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

use crate::config::{ESCAPES_PER_VALUE, MAX_BODY_BYTES};
use crate::error::ApiError;
use crate::json_scan::{TooManyValues, count_values, strip_whitespace, unstripped_index};
use crate::translate::lazy::TopLevel;

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

/// Parses a JSON object body and its `model`, and returns its weight (values, plus escape
/// sequences at one per [`ESCAPES_PER_VALUE`]). A body that weighs more than `max_values` is
/// refused before it is parsed.
pub fn parse_body(bytes: &[u8], max_values: u64) -> Result<(Value, String, u64), ApiError> {
    // A block at a time: a body of 32 MiB of spaces is read at memory speed.
    if bytes
        .chunks(64)
        .all(|c| c.iter().fold(true, |all, b| all & b.is_ascii_whitespace()))
    {
        return Err(
            ApiError::bad_request("request body is empty; expected a JSON object")
                .with_code("invalid_json"),
        );
    }
    let text = match simdutf8::compat::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ))
            .with_code("invalid_utf8"));
        }
    };
    let counted = match count_values(bytes, max_values, ESCAPES_PER_VALUE) {
        Ok(counted) => counted,
        Err(TooManyValues { cap }) => {
            return Err(ApiError::bad_request(format!(
                "request body has more than {cap} JSON values (limits.max_json_values; every \
                 {ESCAPES_PER_VALUE} escape sequences in strings count as one value)"
            ))
            .with_code("too_many_values"));
        }
    };
    let weight = counted.weight(ESCAPES_PER_VALUE);
    // From validated text: serde_json does not check each string's UTF-8 again. Much
    // whitespace is stripped first (serde_json reads it a byte at a time); a parse error then
    // names its place in the body as sent.
    let parsed = if counted.whitespace >= STRIP_WHITESPACE_FROM {
        let stripped = strip_whitespace(bytes);
        let parsed = match simdutf8::basic::from_utf8(&stripped) {
            Ok(text) => serde_json::from_str(text),
            // Not reached: only ASCII bytes between tokens are removed.
            Err(_) => serde_json::from_slice(&stripped),
        };
        parsed.map_err(|e| json_error(&e, Some((bytes, &stripped))))
    } else {
        serde_json::from_str(text).map_err(|e| json_error(&e, None))
    };
    let value: Value = parsed?;
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
    Ok((value, model, weight))
}

/// The fast path of [`parse_body`] for the same-format routes: the body's top-level fields with
/// their values unparsed ([`TopLevel`]), its `model` and its weight. `None` whenever
/// [`parse_body`] might answer otherwise (an error of any kind, much whitespace, deep nesting,
/// a repeated key): the caller then runs it, so every refusal reads as before.
pub fn parse_top_level(bytes: &[u8], max_values: u64) -> Option<(TopLevel<'_>, String, u64)> {
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let counted = count_values(bytes, max_values, ESCAPES_PER_VALUE).ok()?;
    if counted.whitespace >= STRIP_WHITESPACE_FROM || counted.max_depth > LAZY_MAX_DEPTH {
        return None;
    }
    let top = TopLevel::parse(text)?;
    let model = match serde_json::from_str::<Value>(top.raw("model")?).ok()? {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return None,
    };
    Some((top, model, counted.weight(ESCAPES_PER_VALUE)))
}

/// Nesting past which [`parse_top_level`] leaves a body to [`parse_body`] (serde_json refuses
/// documents nested deeper than 127; raw values are not depth-checked).
const LAZY_MAX_DEPTH: u32 = 100;

/// Whitespace outside strings (bytes) from which a body is stripped of it before parsing
/// (stripping costs a copy of the body; serde_json spends ~3 ns on each whitespace byte).
const STRIP_WHITESPACE_FROM: u64 = 1 << 20;

/// 400 `invalid_json`. For a stripped body (`(body, stripped)`), serde_json's line and column
/// are moved to the same place in the body as sent.
fn json_error(e: &serde_json::Error, stripped: Option<(&[u8], &[u8])>) -> ApiError {
    let mut message = e.to_string();
    if let Some((body, stripped)) = stripped
        && e.line() > 0
    {
        // serde_json's position: line = 1 + newlines before the line, column = bytes since.
        let at = |text: &[u8], index: usize| {
            let start = memchr::memrchr(b'\n', &text[..index]).map_or(0, |p| p + 1);
            (
                1 + memchr::memchr_iter(b'\n', &text[..start]).count(),
                index - start,
            )
        };
        let line_start = (e.line().checked_sub(2))
            .and_then(|k| memchr::memchr_iter(b'\n', stripped).nth(k))
            .map_or(0, |p| p + 1);
        let index = (line_start + e.column()).min(stripped.len());
        // At the end of the text (EOF errors) is at the end of the body, whitespace included.
        let original = if index == stripped.len() {
            body.len()
        } else {
            unstripped_index(body, index)
        };
        let (line, column) = at(body, original);
        let serde_at = format!(" at line {} column {}", e.line(), e.column());
        if let Some(head) = message.strip_suffix(&serde_at) {
            message = format!("{head} at line {line} column {column}");
        }
    }
    ApiError::bad_request(format!("request body is not valid JSON: {message}"))
        .with_code("invalid_json")
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
        let (_, model, weight) = parse_body(&read, 1000).unwrap();
        assert_eq!(weight, 2);
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

    #[test]
    fn the_value_cap_is_checked_before_parsing() {
        // 1 object + model + list + 998 numbers = 1001 values.
        let body = format!(r#"{{"model":"m","x":[{}]}}"#, vec!["1"; 998].join(","));
        let (value, _, weight) = parse_body(body.as_bytes(), 1001).unwrap();
        assert_eq!(value["x"].as_array().map(Vec::len), Some(998));
        assert_eq!(weight, 1001);
        let e = parse_body(body.as_bytes(), 1000).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, Some("too_many_values"));
        assert_eq!(e.param, None);
        assert!(
            e.message.contains("more than 1000 JSON values")
                && e.message.contains("limits.max_json_values"),
            "{}",
            e.message
        );
        // Over the cap AND invalid: the cap is checked first, without parsing.
        let e = parse_body(format!("{body}garbage").as_bytes(), 1000).unwrap_err();
        assert_eq!(e.code, Some("too_many_values"));
        // Escapes weigh one value per eight.
        let body = format!(r#"{{"model":"m","x":"{}"}}"#, "\\n".repeat(8 * 1000));
        assert_eq!(
            parse_body(body.as_bytes(), 1000).unwrap_err().code,
            Some("too_many_values")
        );
        assert!(parse_body(body.as_bytes(), 1003).is_ok());
    }

    #[test]
    fn much_whitespace_is_stripped_before_parsing_and_errors_keep_their_place() {
        let indent = format!("\n{}", " ".repeat(1000));
        let pretty = |tail: &str| {
            let mut body = String::from("{\"model\": \"m\",");
            for k in 0..1100 {
                body.push_str(&format!("{indent}\"k{k}\" :  [ 1 , \"a  b\" ] ,"));
            }
            body.push_str(&indent);
            body.push_str(tail);
            body
        };
        let body = pretty("\"last\": true }\n");
        assert!(
            count_values(body.as_bytes(), u64::MAX, 8)
                .unwrap()
                .whitespace
                >= STRIP_WHITESPACE_FROM
        );
        let (v, model, weight) = parse_body(body.as_bytes(), 1_000_000).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(&body).unwrap());
        assert_eq!((model.as_str(), weight), ("m", 2 + 1100 * 3 + 1));
        // An error is placed where serde_json places it in the body as sent.
        for tail in [
            "\"last\": [1,,2] }",
            "\"last\":\n  tru e }",
            "\"last\": 1 ",
            "\"x\": \"\u{1}\" }",
        ] {
            let body = pretty(tail);
            let e = parse_body(body.as_bytes(), 1_000_000).unwrap_err();
            let serde = serde_json::from_str::<Value>(&body).unwrap_err();
            assert_eq!(e.code, Some("invalid_json"));
            assert_eq!(
                e.message,
                format!("request body is not valid JSON: {serde}"),
                "{tail}"
            );
        }
    }

    #[test]
    fn client_floats_are_forwarded_exactly() {
        // serde_json's float_roundtrip: without it 1.33e45 lost its last bit (found by fuzzing).
        let body = br#"{"model":"m","t":[1.33e45,0.1,2.2250738585072011e-308,5e-324,1.7976931348623157e308]}"#;
        let (v, _, _) = parse_body(body, 1000).unwrap();
        assert_eq!(
            String::from_utf8(crate::translate::encode(&v)).unwrap(),
            r#"{"model":"m","t":[1.33e+45,0.1,2.225073858507201e-308,5e-324,1.7976931348623157e+308]}"#
        );
    }

    #[test]
    fn utf8_and_json_errors_keep_their_codes() {
        let e = parse_body(b"{\"model\":\"m\xff\"}", 1000).unwrap_err();
        assert_eq!(e.code, Some("invalid_utf8"));
        assert!(e.message.contains("offset 11"), "{}", e.message);
        let e = parse_body(b"{\"model\":", 1000).unwrap_err();
        assert_eq!(e.code, Some("invalid_json"));
        let e = parse_body(b" \n ", 1000).unwrap_err();
        assert_eq!(e.code, Some("invalid_json"));
        let e = parse_body(b"[1]", 1000).unwrap_err();
        assert_eq!(e.message, "request body must be a JSON object");
        // Non-ASCII text parses from the validated string unchanged.
        let (v, m, _) =
            parse_body("{\"model\":\" é \",\"t\":\"日本\\u00e9\"}".as_bytes(), 1000).unwrap();
        assert_eq!((m.as_str(), v["t"].as_str()), ("é", Some("日本é")));
    }
}
