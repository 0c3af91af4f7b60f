//! Factory's request headers (contract §4, `upstream-factory.md` §1.2). No other client header
//! is forwarded: in particular the client's `authorization`/`x-api-key` never go upstream.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Model, ModelKind};
use crate::secret::Secret;

/// `x-stainless-*` defaults; a client value wins.
const STAINLESS_DEFAULTS: [(&str, &str); 7] = [
    ("x-stainless-arch", "x64"),
    ("x-stainless-lang", "js"),
    ("x-stainless-os", "MacOS"),
    ("x-stainless-runtime", "node"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-package-version", "5.23.2"),
    ("x-stainless-runtime-version", "v24.3.0"),
];

/// The Anthropic SDK version Factory's CLI reports.
const ANTHROPIC_PACKAGE_VERSION: &str = "0.57.0";

/// What the headers depend on.
#[derive(Debug, Clone, Copy)]
pub struct HeaderInput<'a> {
    /// The upstream format: decides the per-type additions.
    pub kind: ModelKind,
    pub model: &'a Model,
    pub client: &'a HeaderMap,
    pub credential: &'a Secret,
    pub stream: bool,
    pub anthropic_beta: Option<&'a str>,
    pub user_agent: &'a str,
}

fn client_value<'a>(client: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    client.get(name).filter(|v| !v.as_bytes().is_empty())
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// Builds the header set of one LLM call.
pub fn build(input: HeaderInput<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(24);
    let c = input.client;
    put(&mut h, "content-type", "application/json");
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", input.credential.expose())) {
        v.set_sensitive(true);
        h.insert(HeaderName::from_static("authorization"), v);
    }
    put(&mut h, "x-factory-client", "cli");
    for name in ["x-session-id", "x-assistant-message-id"] {
        match client_value(c, name) {
            Some(v) => {
                h.insert(HeaderName::from_static(name), v.clone());
            }
            None => put(&mut h, name, &uuid::Uuid::new_v4().to_string()),
        }
    }
    put(&mut h, "user-agent", input.user_agent);
    put(&mut h, "connection", "keep-alive");
    for (name, default) in STAINLESS_DEFAULTS {
        let default = if name == "x-stainless-package-version" && input.kind == ModelKind::Anthropic
        {
            ANTHROPIC_PACKAGE_VERSION
        } else {
            default
        };
        match client_value(c, name) {
            Some(v) => {
                h.insert(HeaderName::from_static(name), v.clone());
            }
            None => put(&mut h, name, default),
        }
    }
    put(&mut h, "x-api-provider", input.model.provider());
    match input.kind {
        ModelKind::Anthropic => {
            put(&mut h, "accept", "application/json");
            match client_value(c, "anthropic-version") {
                Some(v) => {
                    h.insert(HeaderName::from_static("anthropic-version"), v.clone());
                }
                None => put(&mut h, "anthropic-version", "2023-06-01"),
            }
            put(&mut h, "x-api-key", "placeholder");
            match client_value(c, "x-stainless-timeout") {
                Some(v) => {
                    h.insert(HeaderName::from_static("x-stainless-timeout"), v.clone());
                }
                None => put(&mut h, "x-stainless-timeout", "600"),
            }
            if input.stream {
                put(&mut h, "x-stainless-helper-method", "stream");
            }
            if let Some(beta) = input.anthropic_beta {
                put(&mut h, "anthropic-beta", beta);
            }
        }
        ModelKind::Common => put(&mut h, "accept", "application/json"),
        ModelKind::OpenAi => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReasoningLevel;

    fn model(kind: ModelKind, provider: Option<&str>) -> Model {
        Model {
            id: "m".into(),
            name: "m".into(),
            kind,
            reasoning: ReasoningLevel::Auto,
            provider: provider.map(str::to_string),
            default_max_tokens: 4096,
            max_output_tokens: 64_000,
        }
    }

    fn headers(
        kind: ModelKind,
        client: &HeaderMap,
        stream: bool,
        provider: Option<&str>,
    ) -> HeaderMap {
        build(HeaderInput {
            kind,
            model: &model(kind, provider),
            client,
            credential: &Secret::new("fk-test-credential-0001"),
            stream,
            anthropic_beta: Some("a, b"),
            user_agent: "factory-cli/0.85.0",
        })
    }

    #[test]
    fn anthropic_stream_headers() {
        let mut client = HeaderMap::new();
        client.insert("x-session-id", HeaderValue::from_static("sess-1"));
        client.insert("x-stainless-os", HeaderValue::from_static("Linux"));
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer client-secret"),
        );
        client.insert("x-api-key", HeaderValue::from_static("client-secret"));
        let h = headers(ModelKind::Anthropic, &client, true, None);
        assert_eq!(h["authorization"], "Bearer fk-test-credential-0001");
        assert_eq!(h["x-api-key"], "placeholder");
        assert_eq!(h["x-session-id"], "sess-1");
        assert_eq!(h["x-assistant-message-id"].len(), 36);
        assert_eq!(h["x-stainless-os"], "Linux");
        assert_eq!(h["x-stainless-package-version"], "0.57.0");
        assert_eq!(h["x-stainless-helper-method"], "stream");
        assert_eq!(h["x-stainless-timeout"], "600");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["anthropic-beta"], "a, b");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["x-api-provider"], "anthropic");
        assert_eq!(h["x-factory-client"], "cli");
        assert_eq!(h["user-agent"], "factory-cli/0.85.0");
        assert_eq!(h["connection"], "keep-alive");
    }

    #[test]
    fn openai_and_common_headers() {
        let client = HeaderMap::new();
        let h = headers(ModelKind::OpenAi, &client, false, None);
        assert_eq!(h["x-api-provider"], "azure_openai");
        assert!(h.get("accept").is_none());
        assert!(h.get("anthropic-beta").is_none());
        assert!(h.get("x-api-key").is_none());
        assert_eq!(h["x-stainless-package-version"], "5.23.2");
        let h = headers(ModelKind::Common, &client, false, Some("fireworks"));
        assert_eq!(h["x-api-provider"], "fireworks");
        assert_eq!(h["accept"], "application/json");
        assert!(h.get("x-stainless-helper-method").is_none());
    }
}
