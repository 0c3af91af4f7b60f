//! Chat Completions ⇄ OpenAI Responses (`translation.md` §4).
//!
//! - [`chat_to_responses`]: a Chat Completions request becomes a Responses request (§4.1).
//! - [`responses_to_chat_response`]: a non-streaming Responses reply becomes a
//!   `chat.completion` (§4.2).
//! - [`ResponsesToChat`]: a Responses event stream becomes `chat.completion.chunk` events
//!   (§4.3, errors per §6.3).
//! - [`turns`]: the reasoning round trip (§4.4): the [`Turn`] a reply that ended with tool calls
//!   leaves behind ([`Turn::from_response`], [`ResponsesToChat::take_turn`]) and its
//!   re-insertion by [`chat_to_responses_with`].
//!
//! Pure: no I/O, no async, no clock, no randomness (ids and `created` are passed in).

mod request;
mod response;
mod stream;
pub mod turns;

pub use request::{
    ENCRYPTED_REASONING, ResponsesRequest, chat_to_responses, chat_to_responses_with,
};
pub use response::responses_to_chat_response;
pub use stream::ResponsesToChat;
pub use turns::{Turn, TurnCollector, TurnItem, TurnLookup};

use serde_json::{Value, json};

use super::StreamFailure;

/// An upstream Responses error (`response.error` of a failed response, or an `error` event),
/// normalised for a Chat client.
#[derive(Debug, Clone, PartialEq)]
struct UpstreamError {
    status: u16,
    message: String,
    error_type: String,
    param: Value,
    code: Option<String>,
}

impl UpstreamError {
    /// Reads `{code, message, param, type?}` from `e` (a missing object gives a generic
    /// server error with `fallback_message`).
    fn from_json(e: Option<&Value>, fallback_message: &str) -> Self {
        let text = |key: &str| e.and_then(|e| e.get(key)).and_then(Value::as_str);
        let code = text("code").map(str::to_string);
        let status = status_for_code(code.as_deref());
        let error_type = text("type")
            .filter(|t| !t.is_empty() && *t != "error")
            .map_or_else(|| type_for_status(status).to_string(), str::to_string);
        UpstreamError {
            status,
            message: text("message")
                .filter(|m| !m.is_empty())
                .unwrap_or(fallback_message)
                .to_string(),
            error_type,
            param: e
                .and_then(|e| e.get("param"))
                .filter(|p| p.is_string())
                .cloned()
                .unwrap_or(Value::Null),
            code,
        }
    }

    /// The OpenAI envelope `{"error":{message,type,param,code}}`.
    fn envelope(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }})
    }

    fn failure(&self) -> StreamFailure {
        StreamFailure {
            status: self.status,
            body: self.envelope().to_string().into_bytes(),
        }
    }
}

/// The HTTP status an upstream Responses error code suggests (500 when it suggests nothing).
fn status_for_code(code: Option<&str>) -> u16 {
    match code {
        Some("rate_limit_exceeded" | "insufficient_quota") => 429,
        Some("server_error") | None => 500,
        Some(
            "invalid_prompt"
            | "invalid_request"
            | "invalid_request_error"
            | "context_length_exceeded"
            | "empty_image_file"
            | "failed_to_download_image"
            | "unsupported_image_media_type",
        ) => 400,
        Some(c) if c.starts_with("invalid_") || c.starts_with("image_") => 400,
        Some(_) => 500,
    }
}

/// The OpenAI `error.type` for a status (`translation.md` §6.2).
fn type_for_status(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_statuses() {
        for (code, status) in [
            (Some("rate_limit_exceeded"), 429),
            (Some("server_error"), 500),
            (Some("invalid_prompt"), 400),
            (Some("invalid_request"), 400),
            (Some("invalid_image_url"), 400),
            (Some("image_too_large"), 400),
            (Some("vector_store_timeout"), 500),
            (Some("something_new"), 500),
            (None, 500),
        ] {
            assert_eq!(status_for_code(code), status, "{code:?}");
        }
    }

    #[test]
    fn upstream_error_envelope() {
        let e = UpstreamError::from_json(
            Some(&json!({"code": "invalid_prompt", "message": "flagged", "param": "input"})),
            "x",
        );
        assert_eq!(e.status, 400);
        assert_eq!(
            e.envelope(),
            json!({"error": {"message": "flagged", "type": "invalid_request_error", "param": "input", "code": "invalid_prompt"}})
        );
        let e = UpstreamError::from_json(None, "the upstream response failed");
        assert_eq!(
            e.envelope(),
            json!({"error": {"message": "the upstream response failed", "type": "server_error", "param": null, "code": null}})
        );
        // An explicit error type is kept; the event's own `type: "error"` is not an error type.
        let e = UpstreamError::from_json(
            Some(&json!({"type": "tokens", "code": "rate_limit_exceeded", "message": "slow"})),
            "x",
        );
        assert_eq!((e.status, e.error_type.as_str()), (429, "tokens"));
        let e = UpstreamError::from_json(
            Some(&json!({"type": "error", "code": "server_error", "message": "boom"})),
            "x",
        );
        assert_eq!(e.error_type, "server_error");
    }
}
