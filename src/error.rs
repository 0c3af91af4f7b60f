//! Errors the gateway itself answers with, and their rendering in the caller's envelope.
//!
//! Inside the crate, failures are typed per module (`ConfigError`, `UpstreamError`,
//! `TranslateError`, …). At the edge each becomes one [`ApiError`], rendered exactly once by
//! [`ApiError::render`] in the envelope of the route the client called (contract §6):
//! OpenAI `{"error":{"message","type","param","code"}}` on chat/responses/models routes,
//! Anthropic `{"type":"error","error":{"type","message"}}` on messages routes. The message always
//! ends with `(request id: …)`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The envelope a route answers errors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    OpenAi,
    Anthropic,
}

/// A gateway-generated error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (OpenAI `param`).
    pub param: Option<String>,
    /// A stable machine-readable code (OpenAI `code`).
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// OpenAI `error.type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 408 | 413 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// Anthropic `error.type` for this status.
    fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 405 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            408 | 504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        }
    }

    /// The one place errors become HTTP responses.
    pub fn render(&self, envelope: Envelope, request_id: &str) -> Response {
        let message = format!("{} (request id: {request_id})", self.message);
        let body = match envelope {
            Envelope::OpenAi => json!({"error": {
                "message": message,
                "type": self.openai_type(),
                "param": self.param,
                "code": self.code,
            }}),
            Envelope::Anthropic => json!({
                "type": "error",
                "error": {"type": self.anthropic_type(), "message": message},
                "request_id": request_id,
            }),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn openai_envelope() {
        let e = ApiError::bad_request("model is required").with_param("model");
        let v = body(e.render(Envelope::OpenAi, "req-1")).await;
        assert_eq!(
            v,
            json!({"error": {"message": "model is required (request id: req-1)", "type": "invalid_request_error", "param": "model", "code": null}})
        );
    }

    #[tokio::test]
    async fn anthropic_envelope_and_retry_after() {
        let e =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "all keys cooling").with_retry_after(7);
        let resp = e.render(Envelope::Anthropic, "req-2");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let v = body(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(
            v["error"]["message"],
            "all keys cooling (request id: req-2)"
        );
    }
}
