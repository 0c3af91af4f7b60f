//! Header checks on every LLM call: what Factory's CLI sends and the gateway must reproduce
//! (`contract.md` §4, `upstream-factory.md` §1.2). A failure names the header in a message that
//! starts with `mock:`.

use crate::state::RecordedRequest;

/// The three LLM wire formats (plus token counting, which is Anthropic-shaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LlmRoute {
    AnthropicMessages,
    AnthropicCountTokens,
    Responses,
    Chat,
}

impl LlmRoute {
    pub fn is_anthropic(self) -> bool {
        matches!(self, Self::AnthropicMessages | Self::AnthropicCountTokens)
    }
}

/// Headers that must be present (non-empty) on every LLM call.
const ALWAYS_PRESENT: &[&str] = &[
    "x-session-id",
    "x-assistant-message-id",
    "user-agent",
    "x-api-provider",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-runtime",
    "x-stainless-retry-count",
    "x-stainless-package-version",
    "x-stainless-runtime-version",
];

/// Additional headers that must be present on Anthropic calls.
const ANTHROPIC_PRESENT: &[&str] = &["anthropic-version", "x-stainless-timeout"];

/// Whether a media-type header value is `expected` (ignoring case and parameters).
fn media_type_is(value: &str, expected: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
}

fn missing(name: &str) -> String {
    format!("mock: missing required header `{name}`")
}

fn wrong(name: &str, expected: &str, got: &str) -> String {
    format!("mock: header `{name}` must be `{expected}`, got `{got}`")
}

/// Checks the headers of an LLM call; `Err` carries the 400 message.
pub(crate) fn check_llm_headers(route: LlmRoute, req: &RecordedRequest) -> Result<(), String> {
    let get = |name: &str| req.header(name).filter(|v| !v.trim().is_empty());
    let must_equal = |name: &str, expected: &str| match get(name) {
        None => Err(missing(name)),
        Some(v) if v.trim() == expected => Ok(()),
        Some(v) => Err(wrong(name, expected, v)),
    };
    let must_be_media = |name: &str, expected: &str| match get(name) {
        None => Err(missing(name)),
        Some(v) if media_type_is(v, expected) => Ok(()),
        Some(v) => Err(wrong(name, expected, v)),
    };

    must_be_media("content-type", "application/json")?;
    match get("authorization") {
        None => return Err(missing("authorization")),
        Some(v) => {
            let ok = v
                .split_once(' ')
                .is_some_and(|(s, c)| s.eq_ignore_ascii_case("bearer") && !c.trim().is_empty());
            if !ok {
                return Err(format!(
                    "mock: header `authorization` must be `Bearer <credential>`, got `{v}`"
                ));
            }
        }
    }
    must_equal("x-factory-client", "cli")?;
    for name in ALWAYS_PRESENT {
        get(name).ok_or_else(|| missing(name))?;
    }
    if route.is_anthropic() {
        must_be_media("accept", "application/json")?;
        for name in ANTHROPIC_PRESENT {
            get(name).ok_or_else(|| missing(name))?;
        }
        must_equal("x-api-key", "placeholder")?;
    }
    if route == LlmRoute::Chat {
        must_be_media("accept", "application/json")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    fn request(pairs: &[(&'static str, &'static str)]) -> RecordedRequest {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        RecordedRequest::new(
            "POST",
            "/api/llm/a/v1/messages",
            None,
            &headers,
            "{}".into(),
        )
    }

    const GOOD: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("authorization", "Bearer fk-1"),
        ("x-factory-client", "cli"),
        ("x-session-id", "s"),
        ("x-assistant-message-id", "a"),
        ("user-agent", "factory-cli/0.19.3"),
        ("x-api-provider", "anthropic"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-lang", "js"),
        ("x-stainless-os", "MacOS"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-package-version", "0.57.0"),
        ("x-stainless-runtime-version", "v24.3.0"),
        ("accept", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", "placeholder"),
        ("x-stainless-timeout", "600"),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        GOOD.iter().copied().filter(|(k, _)| *k != name).collect()
    }

    #[test]
    fn complete_headers_pass() {
        assert_eq!(
            check_llm_headers(LlmRoute::AnthropicMessages, &request(GOOD)),
            Ok(())
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        for (name, _) in GOOD {
            let err = check_llm_headers(LlmRoute::AnthropicMessages, &request(&without(name)))
                .expect_err(name);
            assert!(err.starts_with("mock:") && err.contains(name), "{err}");
        }
        // Responses needs neither `accept` nor the Anthropic extras.
        let mut openai = without("accept");
        openai.retain(|(k, _)| {
            !["anthropic-version", "x-api-key", "x-stainless-timeout"].contains(k)
        });
        assert_eq!(
            check_llm_headers(LlmRoute::Responses, &request(&openai)),
            Ok(())
        );
        assert!(
            check_llm_headers(LlmRoute::Chat, &request(&openai))
                .is_err_and(|e| e.contains("accept"))
        );
    }

    #[test]
    fn wrong_values_are_rejected() {
        let mut h = without("x-api-key");
        h.push(("x-api-key", "fk-real-key"));
        let err =
            check_llm_headers(LlmRoute::AnthropicCountTokens, &request(&h)).expect_err("x-api-key");
        assert!(err.contains("placeholder"), "{err}");
        let mut h = without("authorization");
        h.push(("authorization", "Basic abc"));
        assert!(
            check_llm_headers(LlmRoute::Chat, &request(&h))
                .is_err_and(|e| e.contains("authorization"))
        );
    }
}
