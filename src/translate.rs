//! Pure request and response transformations between the client's wire format and Factory's.
//!
//! **Invariant:** nothing here does I/O, awaits, reads a clock or a global. Every function takes
//! the request (a JSON value) plus the settings it needs and returns the upstream request, so the
//! rules are unit- and snapshot-tested without a server.
//!
//! - [`reasoning`]: the reasoning-level table (`upstream-factory.md` §3.8), the `max_tokens`
//!   rule (`translation.md` §5.3) and the `anthropic-beta` edit; shared by every route.
//! - [`passthrough`]: `/v1/messages`, `/v1/messages/count_tokens`, `/v1/responses` and
//!   `/v1/chat/completions` for common-type models: the body keeps its format, the system prompt
//!   is injected and the reasoning level applied.
//! - [`aggregate`]: a streamed Anthropic or Responses answer assembled into the non-streaming
//!   reply, for clients that asked for one (their upstream call always streams).
//! - [`encode`]: the upstream body's bytes (serde_json's compact form, strings copied in runs).

pub mod aggregate;
pub mod anthropic_chat;
pub mod chat;
mod encode;
pub mod lazy;
pub mod passthrough;
mod path;
pub mod reasoning;
pub mod responses_chat;

use serde_json::Value;

use crate::config::ReasoningBudgets;

pub use encode::{encode, encode_string};

/// Whether `s` is empty or only whitespace (what `s.trim().is_empty()` says), reading from
/// the front only: on a long text it stops at the first byte instead of also reading the end.
pub(crate) fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// Settings the transformations read.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The configured system prompt (empty = no injection).
    pub system_prompt: &'a str,
    pub budgets: ReasoningBudgets,
    /// JSON values that the JSON documents embedded in the request's strings (the tool-call
    /// `arguments` the Anthropic translator parses) may add in all, beyond the one value each
    /// such string was counted as: what `limits.max_json_values` leaves after the body's own
    /// values. Over it → 400 `too_many_values`.
    pub embedded_json_values: u64,
}

/// A request that cannot be translated: answered with 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct TranslateError {
    pub param: String,
    pub message: String,
    /// A machine-readable code for the answer (`None`: a plain invalid request).
    pub code: Option<&'static str>,
}

impl TranslateError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            param: param.into(),
            message: message.into(),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// The upstream request produced from a client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The upstream JSON body.
    pub body: Value,
    /// Whether the client's answer streams.
    pub stream: bool,
    /// The client asked for a whole answer but the upstream call streams (Anthropic and
    /// Responses upstreams, [`aggregate::stream_upstream`]): the gateway assembles the reply.
    pub aggregate: bool,
    /// The `anthropic-beta` header to send (anthropic calls only; `None` = omit).
    pub anthropic_beta: Option<String>,
    /// Common-type streams: the gateway asked upstream for a usage chunk the client did not
    /// request, so that chunk is dropped on the way back.
    pub drop_usage_chunk: bool,
}

/// The message of an upstream error body (Anthropic, OpenAI or plain text), at most 200
/// characters: used as a ban reason and in key-test reports.
pub fn error_message(body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let msg = v
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    msg.chars().take(200).collect()
}

/// An upstream error translated for an OpenAI-format client (`translation.md` §6.2).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    /// The status to answer with (the upstream's, except 529 → 503).
    pub status: u16,
    pub body: Value,
    /// 402: tell Stainless SDKs not to retry (`x-should-retry: false`).
    pub no_retry: bool,
}

/// Translates an upstream error body (Anthropic, OpenAI or plain text) into the OpenAI envelope,
/// keeping the status (529 becomes 503).
pub fn upstream_error_to_openai(status: u16, body: &[u8]) -> OpenAiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let (message, upstream_type, upstream_code, param) = match &parsed {
        Some(v) if v.get("error").is_some_and(Value::is_object) => {
            let e = &v["error"];
            (
                text(e.get("message")),
                text(e.get("type")),
                e.get("code").cloned(),
                e.get("param").cloned(),
            )
        }
        Some(v) if v.get("error").is_some_and(Value::is_string) => (
            text(v.get("message")).or_else(|| text(v.get("error"))),
            None,
            None,
            None,
        ),
        Some(v) => (
            text(v.get("message")).or_else(|| text(v.get("detail"))),
            None,
            None,
            None,
        ),
        None => {
            let t = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(2000)
                .collect::<String>();
            ((!t.is_empty()).then_some(t), None, None, None)
        }
    };
    let message = message.unwrap_or_else(|| format!("upstream answered HTTP {status}"));
    let is_openai_shaped = parsed
        .as_ref()
        .is_some_and(|v| v.get("type").is_none() && v.get("error").is_some_and(Value::is_object));
    let (ty, code): (&str, Option<&str>) = match status {
        400 if message.starts_with("prompt is too long") => {
            ("invalid_request_error", Some("context_length_exceeded"))
        }
        400 | 422 => ("invalid_request_error", None),
        401 => ("authentication_error", None),
        402 => ("insufficient_quota", Some("insufficient_quota")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        413 => ("invalid_request_error", Some("request_too_large")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        529 => ("server_error", Some("overloaded")),
        504 => ("server_error", Some("timeout")),
        _ => ("server_error", None),
    };
    let (ty, code) = if is_openai_shaped {
        (
            upstream_type.unwrap_or_else(|| ty.to_string()),
            upstream_code
                .filter(|c| !c.is_null())
                .unwrap_or_else(|| code.map(Value::from).unwrap_or(Value::Null)),
        )
    } else {
        (ty.to_string(), code.map(Value::from).unwrap_or(Value::Null))
    };
    OpenAiError {
        status: if status == 529 { 503 } else { status },
        body: serde_json::json!({"error": {
            "message": message,
            "type": ty,
            "param": param.unwrap_or(Value::Null),
            "code": code,
        }}),
        no_retry: status == 402,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anthropic_errors_become_openai_errors() {
        let e = upstream_error_to_openai(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status, 503);
        assert_eq!(
            e.body,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
        );
        let e = upstream_error_to_openai(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens"}}"#);
        assert_eq!(e.body["error"]["code"], "context_length_exceeded");
        let e = upstream_error_to_openai(
            402,
            br#"{"type":"error","error":{"type":"billing_error","message":"no credits"}}"#,
        );
        assert_eq!((e.status, e.no_retry), (402, true));
        assert_eq!(e.body["error"]["type"], "insufficient_quota");
    }

    #[test]
    fn openai_errors_keep_their_fields_and_text_is_wrapped() {
        let e = upstream_error_to_openai(429, br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded","param":null}}"#);
        assert_eq!(
            e.body,
            json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        );
        let e = upstream_error_to_openai(502, b"Bad Gateway");
        assert_eq!(e.body["error"]["message"], "Bad Gateway");
        assert_eq!(e.body["error"]["type"], "server_error");
        let e = upstream_error_to_openai(500, b"");
        assert_eq!(e.body["error"]["message"], "upstream answered HTTP 500");
    }
}

/// An upstream failure seen while translating a stream (an `error` event, `response.failed`, or
/// a stream cut short). When nothing has reached the client yet, the proxy answers with an HTTP
/// error instead: `status` is the HTTP status that matches the upstream error type, `body` the
/// upstream error JSON (fed to [`upstream_error_to_openai`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFailure {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The HTTP status of an Anthropic error type (`translation.md` §6.1).
pub fn anthropic_error_status(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}
