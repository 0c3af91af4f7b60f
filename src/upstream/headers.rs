//! Factory's request headers (contract §4, `upstream-factory.md` §1.2). No other client header
//! is forwarded: in particular the client's `authorization`/`x-api-key` never go upstream.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::{Model, ModelKind};
use crate::secret::Secret;

/// A header name known at compile time.
const fn name(n: &'static str) -> HeaderName {
    HeaderName::from_static(n)
}

/// A header value known at compile time.
const fn value(v: &'static str) -> HeaderValue {
    HeaderValue::from_static(v)
}

/// `x-stainless-*` defaults; a client value wins.
const STAINLESS_DEFAULTS: [(HeaderName, HeaderValue); 7] = [
    (name("x-stainless-arch"), value("x64")),
    (name("x-stainless-lang"), value("js")),
    (name("x-stainless-os"), value("MacOS")),
    (name("x-stainless-runtime"), value("node")),
    (name("x-stainless-retry-count"), value("0")),
    (name("x-stainless-package-version"), value("5.23.2")),
    (name("x-stainless-runtime-version"), value("v24.3.0")),
];

/// The Anthropic SDK version Factory's CLI reports.
const ANTHROPIC_PACKAGE_VERSION: HeaderValue = value("0.57.0");
const APPLICATION_JSON: HeaderValue = value("application/json");
const SESSION_ID: HeaderName = name("x-session-id");
const MESSAGE_ID: HeaderName = name("x-assistant-message-id");
const ANTHROPIC_VERSION: HeaderName = name("anthropic-version");
const STAINLESS_TIMEOUT: HeaderName = name("x-stainless-timeout");
const H_X_FACTORY_CLIENT: HeaderName = name("x-factory-client");
const V_CLI: HeaderValue = value("cli");
const V_KEEP_ALIVE: HeaderValue = value("keep-alive");
const H_X_API_PROVIDER: HeaderName = name("x-api-provider");
const V_2023_06_01: HeaderValue = value("2023-06-01");
const H_X_API_KEY: HeaderName = name("x-api-key");
const V_PLACEHOLDER: HeaderValue = value("placeholder");
const V_600: HeaderValue = value("600");
const H_X_STAINLESS_HELPER_METHOD: HeaderName = name("x-stainless-helper-method");
const V_STREAM: HeaderValue = value("stream");
const H_ANTHROPIC_BETA: HeaderName = name("anthropic-beta");

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

fn client_value<'a>(client: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    client.get(name).filter(|v| !v.as_bytes().is_empty())
}

/// Sets a header from text that may not be a valid header value (then it is left out).
fn put(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The client's value of `name` when it sent one, else `default`.
fn client_or(h: &mut HeaderMap, c: &HeaderMap, name: &HeaderName, default: HeaderValue) {
    let v = client_value(c, name).cloned().unwrap_or(default);
    h.insert(name.clone(), v);
}

/// A fresh random UUID as a header value.
fn random_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // Always valid: hex digits and hyphens.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("0"))
}

/// Builds the header set of one LLM call.
pub fn build(input: HeaderInput<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(24);
    let c = input.client;
    h.insert(header::CONTENT_TYPE, APPLICATION_JSON);
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", input.credential.expose())) {
        v.set_sensitive(true);
        h.insert(header::AUTHORIZATION, v);
    }
    h.insert(H_X_FACTORY_CLIENT, V_CLI);
    for id in [SESSION_ID, MESSAGE_ID] {
        let v = client_value(c, &id).cloned().unwrap_or_else(random_id);
        h.insert(id, v);
    }
    put(&mut h, header::USER_AGENT, input.user_agent);
    h.insert(header::CONNECTION, V_KEEP_ALIVE);
    for (stainless, default) in STAINLESS_DEFAULTS {
        let default =
            if stainless == "x-stainless-package-version" && input.kind == ModelKind::Anthropic {
                ANTHROPIC_PACKAGE_VERSION
            } else {
                default
            };
        client_or(&mut h, c, &stainless, default);
    }
    put(&mut h, H_X_API_PROVIDER, input.model.provider());
    match input.kind {
        ModelKind::Anthropic => {
            h.insert(header::ACCEPT, APPLICATION_JSON);
            client_or(&mut h, c, &ANTHROPIC_VERSION, V_2023_06_01);
            h.insert(H_X_API_KEY, V_PLACEHOLDER);
            client_or(&mut h, c, &STAINLESS_TIMEOUT, V_600);
            if input.stream {
                h.insert(H_X_STAINLESS_HELPER_METHOD, V_STREAM);
            }
            if let Some(beta) = input.anthropic_beta {
                put(&mut h, H_ANTHROPIC_BETA, beta);
            }
        }
        ModelKind::Common => {
            h.insert(header::ACCEPT, APPLICATION_JSON);
        }
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
