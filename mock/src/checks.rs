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
