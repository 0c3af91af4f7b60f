//! Non-streaming clients of the Anthropic and Responses upstreams are served by a streamed
//! upstream call that the gateway assembles (`translate::aggregate`, `proxy::aggregated`):
//! the configured thinking budget is sent in full, long answers survive the idle-read timeout
//! as long as events keep coming, and the client's reply is byte for byte the one a
//! non-streaming upstream answer gave, usage included.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use droid2api_mock::{ReplyBody, SseEventSpec, anthropic, openai};
use serde_json::{Value, json};

const KEY: &str = "fk-aggregate-key-0001";

async fn gw(mock: &MockUpstream, config: Value) -> Gateway {
    gateway(mock)
        .env("FACTORY_API_KEY", KEY)
        .config(config)
        .start()
        .await
}

fn upstream_json(mock: &MockUpstream) -> Value {
    mock.last_llm_request().unwrap().json.unwrap()
}

fn fixture(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fixture's SSE text as the mock's exact pieces (cut at every event boundary).
fn raw_stream(text: &str) -> Reply {
    let chunks: Vec<String> = text.split_inclusive("\n\n").map(str::to_string).collect();
    Reply::raw(chunks, 0)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Token counts of the stored usage records, in order: (route, status, input, cache_read,
/// cache_write, output, reasoning, complete).
type Tokens = (String, i64, i64, i64, i64, i64, i64, bool);

fn usage_tokens(data_dir: &Path) -> Vec<Tokens> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        data_dir.join("droid2api.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut st) = conn.prepare(
        "SELECT route, status, input_tokens, cache_read_tokens, cache_write_tokens, \
         output_tokens, reasoning_tokens, complete FROM usage_records ORDER BY seq",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get::<_, i64>(7)? != 0,
        ))
    })
    .and_then(|rows| rows.collect())
    .unwrap_or_default()
}

async fn wait_usage(data_dir: &Path, n: usize) -> Vec<Tokens> {
    for _ in 0..200 {
        let rows = usage_tokens(data_dir);
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} usage records: {:?}", usage_tokens(data_dir));
}

/// The point of the change: "high" on a non-streaming request sends the whole streaming budget
/// (before: max_tokens cut to 21,333 and the budget to 20,309), and the client still gets one
/// JSON message with the thinking block.
#[tokio::test]
async fn high_reasoning_without_a_client_stream_sends_the_whole_budget() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, models_config("high")).await;

    let (s, h, b) = post(
        &gw.url("/v1/messages"),
        &json!({"model": "claude-test", "max_tokens": 3000, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = upstream_json(&mock);
    assert_eq!(up["stream"], true);
    assert_eq!(up["max_tokens"], 27_576);
    assert_eq!(
        up["thinking"],
        json!({"type": "enabled", "budget_tokens": 24_576})
    );
    assert_eq!(header(&h, "content-type"), "application/json");
    let v = json(&b);
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        json!([
            {"type": "thinking", "thinking": anthropic::MOCK_THINKING, "signature": anthropic::MOCK_SIGNATURE},
            {"type": "text", "text": droid2api_mock::MOCK_TEXT}
        ])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "role",
            "model",
            "content",
            "stop_reason",
            "stop_sequence",
            "usage"
        ]
    );

    // The chat route for the same model: the same upstream request shape, a chat.completion.
    let (s, h, b) = post(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "claude-test", "max_tokens": 3000, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = upstream_json(&mock);
    assert_eq!(
        (
            &up["stream"],
            &up["max_tokens"],
            &up["thinking"]["budget_tokens"]
        ),
        (&json!(true), &json!(27_576), &json!(24_576))
    );
    assert_eq!(header(&h, "content-type"), "application/json");
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        anthropic::MOCK_THINKING
    );
    assert_eq!(
        v["choices"][0]["message"]["content"],
        droid2api_mock::MOCK_TEXT
    );

    // Responses, both routes: the upstream call streams, the client gets the response object.
    let (s, _, b) = post(&gw.url("/v1/responses"), &responses_body("gpt-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(upstream_json(&mock)["stream"], true);
    let v = json(&b);
    assert_eq!(
        (&v["object"], &v["status"]),
        (&json!("response"), &json!("completed"))
    );
    let (s, _, b) = post(&gw.url("/v1/chat/completions"), &chat_body("gpt-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(upstream_json(&mock)["stream"], true);
    assert_eq!(
        json(&b)["choices"][0]["message"]["content"],
        droid2api_mock::MOCK_TEXT
    );

    // A streaming client is unchanged: the stream is relayed.
    let (s, h, _) = post(
        &gw.url("/v1/messages"),
        &json!({"model": "claude-test", "max_tokens": 3000, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert!(header(&h, "content-type").starts_with("text/event-stream"));
}

/// One request answered by a non-streaming upstream body (as before: the mock ignores the
/// `stream` flag when a JSON rule answers), then the same content answered as a stream: the
/// client gets the same status, content type and bytes, and the same usage is recorded once
/// per request.
async fn same_reply_both_ways(
    gw: &Gateway,
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    whole: Value,
    stream: &str,
) -> (Vec<u8>, Vec<u8>) {
    mock.push_rule(Rule::new(Reply::json(200, whole)).once());
    let (s1, h1, b1) = post(&gw.url(path), body, &[]).await;
    mock.push_rule(Rule::new(raw_stream(stream)).once());
    let (s2, h2, b2) = post(&gw.url(path), body, &[]).await;
    assert_eq!(upstream_json(mock)["stream"], true, "{path}");
    assert_eq!(
        (s1, s2),
        (200, 200),
        "{path}: {}",
        String::from_utf8_lossy(&b2)
    );
    assert_eq!(header(&h1, "content-type"), header(&h2, "content-type"));
    assert_eq!(header(&h2, "content-type"), "application/json");
    assert!(!header(&h2, "x-request-id").is_empty());
    (b1.to_vec(), b2.to_vec())
}

#[tokio::test]
async fn streamed_answers_are_the_non_streaming_replies_byte_for_byte_with_the_same_usage() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, models_config("auto")).await;
    let mut requests = 0;

    for name in [
        "thinking_tool",
        "cache_usage",
        "text_parallel_tools",
        "stop_sequence",
    ] {
        let whole: Value =
            serde_json::from_str(&fixture(&format!("anthropic/{name}.json"))).unwrap();
        let stream = fixture(&format!("anthropic/{name}.sse"));
        // Pass-through: the relayed body, byte for byte.
        let (a, b) = same_reply_both_ways(
            &gw,
            &mock,
            "/v1/messages",
            &anthropic_body("claude-test"),
            whole.clone(),
            &stream,
        )
        .await;
        assert_eq!(
            String::from_utf8(a).unwrap(),
            String::from_utf8(b).unwrap(),
            "{name}"
        );
        // Chat: the translated reply, byte for byte but for `created` (the clock).
        let (a, b) = same_reply_both_ways(
            &gw,
            &mock,
            "/v1/chat/completions",
            &chat_body("claude-test"),
            whole,
            &stream,
        )
        .await;
        let (mut a, mut b) = (json(&a), json(&b));
        a["created"] = json!(0);
        b["created"] = json!(0);
        assert_eq!(a.to_string(), b.to_string(), "{name}");
        requests += 4;
    }

    for name in [
        "reasoning_then_tool_call",
        "usage_cached",
        "max_output_tokens",
    ] {
        let stream = fixture(&format!("responses/{name}.sse"));
        let terminal = stream
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .find(|d| {
                d.contains(r#""type":"response.completed""#)
                    || d.contains(r#""type":"response.incomplete""#)
            })
            .unwrap();
        let whole = serde_json::from_str::<Value>(terminal).unwrap()["response"].clone();
        let (a, b) = same_reply_both_ways(
            &gw,
            &mock,
            "/v1/responses",
            &responses_body("gpt-test"),
            whole.clone(),
            &stream,
        )
        .await;
        assert_eq!(
            String::from_utf8(a).unwrap(),
            String::from_utf8(b).unwrap(),
            "{name}"
        );
        let (a, b) = same_reply_both_ways(
            &gw,
            &mock,
            "/v1/chat/completions",
            &chat_body("gpt-test"),
            whole,
            &stream,
        )
        .await;
        assert_eq!(
            String::from_utf8(a).unwrap(),
            String::from_utf8(b).unwrap(),
            "{name}"
        );
        requests += 4;
    }

    // Usage: one record per request, each streamed one equal to its non-streaming twin
    // (cache and reasoning tokens included), complete.
    let rows = wait_usage(&gw.data_dir, requests).await;
    assert_eq!(rows.len(), requests);
    for pair in rows.chunks(2) {
        assert_eq!(pair[0], pair[1]);
        assert!(pair[1].7, "{:?}", pair[1]);
    }
    assert!(rows.contains(&("/v1/messages".into(), 200, 20, 1800, 248, 95, 0, true)));
    assert!(rows.contains(&("/v1/responses".into(), 200, 86, 1920, 0, 71, 64, true)));
}

fn anthropic_error_stream(error_type: &str) -> Reply {
    Reply::sse(vec![
        SseEventSpec::named(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_e", "type": "message", "role": "assistant",
                "model": "claude-test", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        SseEventSpec::named(
            "error",
            &json!({"type": "error", "error": {"type": error_type, "message": format!("upstream says {error_type} for {KEY}")}}),
        ),
    ])
}

fn truncated(events: Vec<SseEventSpec>) -> Reply {
    let mut r = Reply::sse(events);
    if let ReplyBody::Sse { truncate, .. } = &mut r.body {
        *truncate = true;
    }
    r
}

/// Errors in the stream are answered as the non-streaming API would have answered them; a
/// stream that ends early is a 502 in the route's envelope; the gateway serves on.
#[tokio::test]
async fn stream_errors_become_whole_error_answers() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, models_config("auto")).await;
    let messages = gw.url("/v1/messages");
    let chat = gw.url("/v1/chat/completions");
    let responses = gw.url("/v1/responses");

    // Anthropic error event: its status and body, the key scrubbed.
    for (ty, status) in [
        ("overloaded_error", 529),
        ("api_error", 500),
        ("rate_limit_error", 429),
    ] {
        mock.push_rule(Rule::new(anthropic_error_stream(ty)).once());
        let (s, h, b) = post(&messages, &anthropic_body("claude-test"), &[]).await;
        assert_eq!(s, status, "{ty}");
        assert_eq!(header(&h, "content-type"), "application/json");
        let v = json(&b);
        assert_eq!(
            (&v["type"], &v["error"]["type"]),
            (&json!("error"), &json!(ty))
        );
        assert!(!String::from_utf8_lossy(&b).contains(KEY), "{v}");
    }
    // The chat route: the OpenAI envelope, 529 as 503.
    mock.push_rule(Rule::new(anthropic_error_stream("overloaded_error")).once());
    let (s, _, b) = post(&chat, &chat_body("claude-test"), &[]).await;
    assert_eq!(s, 503);
    let v = json(&b);
    assert_eq!(
        (&v["error"]["type"], &v["error"]["code"]),
        (&json!("server_error"), &json!("overloaded"))
    );

    // Responses: response.failed is mapped as a failed non-streaming response.
    let failed = || {
        Reply::sse(vec![SseEventSpec::named(
            "response.failed",
            &json!({"type": "response.failed", "sequence_number": 0, "response": {"id": "resp_f", "object": "response",
                "created_at": 1, "status": "failed", "model": "gpt-test", "output": [],
                "error": {"code": "rate_limit_exceeded", "message": "slow down"}, "usage": null}}),
        )])
    };
    mock.push_rule(Rule::new(failed()).once());
    let (s, _, b) = post(&responses, &responses_body("gpt-test"), &[]).await;
    assert_eq!(s, 429);
    assert_eq!(
        json(&b),
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
    );
    mock.push_rule(Rule::new(failed()).once());
    let (s, _, b) = post(&chat, &chat_body("gpt-test"), &[]).await;
    assert_eq!(s, 429);
    assert_eq!(json(&b)["error"]["code"], "rate_limit_exceeded");

    // Cut short: 502 in the route's envelope, naming the failure and the request id.
    let anthropic_events =
        anthropic::text_stream_events("msg_t", "claude-test", "Hello there", 5, 7, None);
    for (url, body, anthropic_envelope) in [
        (&messages, anthropic_body("claude-test"), true),
        (&chat, chat_body("claude-test"), false),
    ] {
        mock.push_rule(Rule::new(truncated(anthropic_events.clone())).once());
        let (s, h, b) = post(url, &body, &[]).await;
        assert_eq!(s, 502, "{url}");
        let v = json(&b);
        let message = if anthropic_envelope {
            assert_eq!(v["type"], "error");
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert_eq!(v["error"]["code"], "stream_truncated");
            v["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains("truncated"), "{message}");
        assert!(message.contains(header(&h, "x-request-id")), "{message}");
    }
    let responses_events =
        openai::responses_text_stream_events("r_t", "gpt-test", "Hello there", 5, 7, None);
    mock.push_rule(Rule::new(truncated(responses_events)).once());
    let (s, _, b) = post(&responses, &responses_body("gpt-test"), &[]).await;
    assert_eq!(s, 502);
    assert_eq!(json(&b)["error"]["code"], "stream_truncated");

    // Still serving.
    let (s, _, _) = post(&messages, &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200);
    let (s, _, _) = post(&responses, &responses_body("gpt-test"), &[]).await;
    assert_eq!(s, 200);
}

/// A long answer whose events keep coming: the idle-read timer moves with every chunk, so a
/// total far longer than the timeout still gives the whole answer; an upstream that stops
/// sending is cut at the timeout (504).
#[tokio::test]
async fn a_slow_stream_longer_than_the_idle_timeout_is_answered_whole() {
    let mock = MockUpstream::start().await;
    let mut config = models_config("auto");
    config["timing"] = json!({"idle_read_timeout_s": 1});
    let gw = gw(&mock, config).await;

    let text = "one two three four five six seven eight nine ten eleven twelve";
    let mut slow = Reply::sse(anthropic::text_stream_events(
        "msg_slow",
        "claude-test",
        text,
        5,
        30,
        None,
    ));
    if let ReplyBody::Sse {
        delay_ms_between, ..
    } = &mut slow.body
    {
        // 10 events, 400 ms apart: 3.6 s in all against a 1 s idle timeout.
        *delay_ms_between = 400;
    }
    mock.push_rule(Rule::new(slow).once());
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["content"], json!([{"type": "text", "text": text}]));
    assert_eq!(v["usage"]["output_tokens"], 30);

    // The same on the chat route over Responses.
    let mut slow = Reply::sse(openai::responses_text_stream_events(
        "r_slow", "gpt-test", text, 5, 30, None,
    ));
    if let ReplyBody::Sse {
        delay_ms_between, ..
    } = &mut slow.body
    {
        *delay_ms_between = 300;
    }
    mock.push_rule(Rule::new(slow).once());
    let (s, _, b) = post(&gw.url("/v1/chat/completions"), &chat_body("gpt-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], text);

    // Silence past the timeout: 504.
    let mut stalled = Reply::sse(anthropic::text_stream_events(
        "msg_stall",
        "claude-test",
        text,
        5,
        30,
        None,
    ));
    if let ReplyBody::Sse {
        truncate,
        hang_after,
        ..
    } = &mut stalled.body
    {
        *truncate = true;
        *hang_after = true;
    }
    mock.push_rule(Rule::new(stalled).once());
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 504, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("timeout"));
}
