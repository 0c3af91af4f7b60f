//! The structural cap of contract §9 (`limits.max_json_values`): a request body holding more
//! JSON values than the limit (escape sequences in strings weighing one per eight) is refused
//! with 400 `too_many_values` in the route's envelope before it is parsed, on every JSON route;
//! a body exactly at the limit is served; the values of tool-call arguments the Anthropic
//! translator parses count against what the body left; the server serves normally afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use droid2api::config::{ESCAPES_PER_VALUE, Limits};
use droid2api::json_scan::count_values;
use serde_json::{Value, json};

const FACTORY_KEY: &str = "fk-request-shape-limits-0011";
const CAP: u64 = 1000;

#[derive(Debug, Clone, Copy)]
enum Route {
    /// `/v1/chat/completions` with a model of each type.
    Chat(&'static str),
    Messages,
    CountTokens,
    Responses,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Chat(_) => "/v1/chat/completions",
            Route::Messages => "/v1/messages",
            Route::CountTokens => "/v1/messages/count_tokens",
            Route::Responses => "/v1/responses",
        }
    }

    fn anthropic_envelope(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

const ROUTES: [Route; 6] = [
    Route::Chat("claude-test"),
    Route::Chat("gpt-test"),
    Route::Chat("glm-test"),
    Route::Messages,
    Route::CountTokens,
    Route::Responses,
];

/// The weight the gateway gives a body: values plus one per eight escape sequences.
fn weight(body: &[u8]) -> u64 {
    count_values(body, u64::MAX, ESCAPES_PER_VALUE)
        .unwrap()
        .weight(ESCAPES_PER_VALUE)
}

/// A request of `route` whose one user message holds `parts` small text parts and a last part
/// whose text carries `escapes` newlines (each written `\n`, one escape sequence).
fn body(route: Route, parts: usize, escapes: usize) -> Vec<u8> {
    let ty = if matches!(route, Route::Responses) {
        "input_text"
    } else {
        "text"
    };
    let mut content: Vec<Value> = (0..parts)
        .map(|_| json!({"type": ty, "text": "a"}))
        .collect();
    content.push(json!({"type": ty, "text": format!("b{}", "\n".repeat(escapes))}));
    let message = json!({"role": "user", "content": content});
    let v = match route {
        Route::Chat(model) => json!({"model": model, "messages": [message]}),
        Route::Messages | Route::CountTokens => {
            json!({"model": "claude-test", "max_tokens": 64, "messages": [message]})
        }
        Route::Responses => json!({"model": "gpt-test", "input": [message]}),
    };
    serde_json::to_vec(&v).unwrap()
}

/// A body of `route` that weighs exactly `target`.
fn body_of_weight(route: Route, target: u64) -> Vec<u8> {
    let base = weight(&body(route, 0, 0));
    let per_part = weight(&body(route, 1, 0)) - base;
    let parts = (target - base) / per_part;
    let rest = target - base - parts * per_part;
    let escapes = (rest * ESCAPES_PER_VALUE) as usize;
    let b = body(route, parts as usize, escapes);
    assert_eq!(weight(&b), target, "{route:?}");
    b
}

async fn start(mock: &MockUpstream, limits: Option<Value>) -> Gateway {
    let mut config = json!({"models": models_config("auto")["models"]});
    if let Some(l) = limits {
        config["limits"] = l;
    }
    gateway(mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .config(config)
        .start()
        .await
}

/// Checks a 400 `too_many_values` in the route's envelope, naming the limit.
fn assert_too_many(route: Route, status: u16, headers: &reqwest::header::HeaderMap, v: &Value) {
    assert_eq!(status, 400, "{route:?}: {v}");
    let rid = headers
        .get("x-request-id")
        .and_then(|h| h.to_str().ok())
        .expect("a request id");
    let message = if route.anthropic_envelope() {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        v["error"]["message"].as_str().unwrap()
    } else {
        assert_eq!(v["error"]["code"], "too_many_values", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], Value::Null, "{v}");
        v["error"]["message"].as_str().unwrap()
    };
    assert!(
        message.contains(&format!("more than {CAP} JSON values"))
            && message.contains("limits.max_json_values")
            && message.ends_with(&format!("(request id: {rid})")),
        "{route:?}: {message}"
    );
}

#[tokio::test]
async fn a_body_over_the_value_cap_gets_400_too_many_values_on_every_json_route() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock, Some(json!({"max_json_values": CAP}))).await;
    for route in ROUTES {
        // One value too many: small values …
        let over = body_of_weight(route, CAP + 1);
        let (status, headers, bytes) = post_raw(&gw.url(route.path()), over, &[]).await;
        assert_too_many(route, status, &headers, &json(&bytes));
        // … or escape sequences (here eight more `\n` than the cap allows).
        let mut escaped = body_of_weight(route, CAP);
        let at = escaped.windows(2).rposition(|w| w == b"\"b").unwrap() + 2;
        escaped.splice(at..at, b"\\n\\n\\n\\n\\n\\n\\n\\n".iter().copied());
        assert_eq!(weight(&escaped), CAP + 1);
        let (status, headers, bytes) = post_raw(&gw.url(route.path()), escaped, &[]).await;
        assert_too_many(route, status, &headers, &json(&bytes));
        assert!(
            mock.llm_requests().is_empty(),
            "{route:?}: nothing reached the upstream"
        );
    }
    // The gateway still serves, and a body exactly at the cap is served on every route.
    for route in ROUTES {
        let (status, _, bytes) =
            post_raw(&gw.url(route.path()), body_of_weight(route, CAP), &[]).await;
        assert_eq!(
            status,
            200,
            "{route:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(mock.llm_requests().len(), ROUTES.len());
}

#[tokio::test]
async fn the_cap_is_checked_before_parsing_so_an_invalid_body_over_it_is_too_many_values() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock, Some(json!({"max_json_values": CAP}))).await;
    // 5000 values, then garbage: refused for its size, not parsed.
    let mut over = format!(
        r#"{{"model":"claude-test","x":[{}]"#,
        vec!["1"; 5000].join(",")
    )
    .into_bytes();
    over.extend_from_slice(b" not json");
    let (status, headers, bytes) = post_raw(&gw.url("/v1/chat/completions"), over, &[]).await;
    assert_too_many(Route::Chat("claude-test"), status, &headers, &json(&bytes));
    // Under the cap, the same garbage is a JSON error.
    let (status, _, bytes) = post_raw(
        &gw.url("/v1/chat/completions"),
        br#"{"model":"claude-test","x":[1]} not json"#.to_vec(),
        &[],
    )
    .await;
    let v = json(&bytes);
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("invalid_json")),
        "{v}"
    );
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-test"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tool_call_arguments_count_against_what_the_body_left() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock, Some(json!({"max_json_values": CAP}))).await;
    let request = |values: usize| {
        let arguments = format!(r#"{{"list":[{}]}}"#, vec!["1"; values].join(","));
        json!({"model": "claude-test", "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"}]})
    };
    // The body itself is small: its arguments string is one value.
    let big = request(2 * CAP as usize);
    assert!(weight(&serde_json::to_vec(&big).unwrap()) < 30);
    let (status, headers, bytes) = post(&gw.url("/v1/chat/completions"), &big, &[]).await;
    let v = json(&bytes);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "too_many_values", "{v}");
    assert_eq!(
        v["error"]["param"], "messages[1].tool_calls[0].function.arguments",
        "{v}"
    );
    let rid = headers.get("x-request-id").unwrap().to_str().unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("limits.max_json_values")
            && message.ends_with(&format!("(request id: {rid})")),
        "{message}"
    );
    assert!(mock.llm_requests().is_empty());
    // Arguments within what is left are parsed and sent as the tool_use input.
    let (status, _, bytes) = post(&gw.url("/v1/chat/completions"), &request(100), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let sent = json(&mock.last_llm_request().unwrap().body);
    assert_eq!(
        sent["messages"][1]["content"][0]["input"]["list"]
            .as_array()
            .map(Vec::len),
        Some(100)
    );
}

#[tokio::test]
async fn the_default_cap_applies_without_configuration() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock, None).await;
    let cap = Limits::default().max_json_values;
    let route = Route::Chat("gpt-test");
    let (status, _, bytes) =
        post_raw(&gw.url(route.path()), body_of_weight(route, cap + 1), &[]).await;
    let v = json(&bytes);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "too_many_values", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("more than {cap} JSON values")),
        "{v}"
    );
    let (status, _, bytes) = post_raw(&gw.url(route.path()), body_of_weight(route, cap), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
}
