//! Stream failure semantics on every stream route (contract §10): after the first byte, an
//! upstream that ends without its terminal event, breaks, or stays silent past the idle-read
//! timeout gets an error in the route's stream format (naming the request id), then a clean end;
//! the usage record is incomplete. An error the upstream sends itself is relayed unchanged with
//! nothing added. Keep-alive comments fill upstream silence, never inside an event.
//!
//! Routes: `/v1/messages`, `/v1/responses`, and `/v1/chat/completions` over Anthropic, over
//! Responses and over a common (Chat) upstream.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::streams::*;
use common::*;
use droid2api_mock::{SseEventSpec, encode_events};
use serde_json::{Value, json};

async fn gw(mock: &MockUpstream, idle_read_timeout_s: u64, keepalive_s: u64) -> Gateway {
    gateway(mock)
        .env("FACTORY_API_KEY", "fk-stream-failures-env-key-0001")
        .config(config(idle_read_timeout_s, keepalive_s))
        .start()
        .await
}

/// Checks the gateway's error frame ending `s`: route format, code, kind named in the message,
/// the request id, a clean end, no `[DONE]`.
fn assert_gateway_error(case: &RouteCase, s: &Streamed, code: &str, kind: &str) {
    assert_eq!(s.status, 200, "{}", case.name);
    assert!(
        s.clean,
        "{}: the stream must end cleanly: {}",
        case.name,
        s.text()
    );
    let (got_code, message) = gateway_error(case.client_fmt, &s.last());
    let want_code = if case.client_fmt == Fmt::Anthropic {
        "api_error"
    } else {
        code
    };
    assert_eq!(got_code, want_code, "{}: {}", case.name, s.text());
    assert!(
        message.contains(&format!("({kind})")),
        "{}: the message names the failure: {message}",
        case.name
    );
    assert!(
        message.ends_with(&format!("(request id: {})", s.request_id)),
        "{}: {message}",
        case.name
    );
    assert!(!s.text().contains("[DONE]"), "{}: {}", case.name, s.text());
    let errors = s
        .events()
        .iter()
        .filter(|e| e.data.contains("(request id: "))
        .count();
    assert_eq!(errors, 1, "{}: one error frame: {}", case.name, s.text());
}

/// Waits for the `n`-th usage record and checks it is this route's, status 200, incomplete.
async fn assert_incomplete_record(gw: &Gateway, case: &RouteCase, n: usize) {
    let rows = wait_usage_rows(&gw.data_dir, n).await;
    let (route, status, complete) = &rows[n - 1];
    assert_eq!(
        (route.as_str(), *status, *complete),
        (case.path, 200, false),
        "{}: {rows:?}",
        case.name
    );
}

async fn still_serving(gw: &Gateway) {
    for case in route_cases() {
        let s = stream(gw, case.path, &case.body, &[]).await;
        assert!(s.clean && s.status == 200, "{}: {}", case.name, s.text());
        assert!(
            !s.text().contains("(request id: "),
            "{}: {}",
            case.name,
            s.text()
        );
    }
}

#[tokio::test]
async fn an_upstream_that_ends_without_its_terminal_event_is_an_error_on_every_route() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 15).await;
    let mut n = 0;
    let mut cases = route_cases();
    // Common chat without a usage chunk asked for: events are re-emitted, same ending.
    let mut no_usage = cases[4].clone();
    no_usage.name = "chat over common, usage chunk dropped";
    no_usage
        .body
        .as_object_mut()
        .unwrap()
        .remove("stream_options");
    cases.push(no_usage);
    for case in &cases {
        let cut = case.events[..case.events.len() - case.terminal].to_vec();
        mock.push_rule(Rule::new(Reply::sse(cut)).path(case.upstream).once());
        let s = stream(&gw, case.path, &case.body, &[]).await;
        assert_gateway_error(case, &s, "stream_truncated", "truncated");
        n += 1;
        assert_incomplete_record(&gw, case, n).await;
    }
    still_serving(&gw).await;
}

#[tokio::test]
async fn a_connection_reset_mid_stream_is_an_error_on_every_route() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 15).await;
    for (n, case) in route_cases().iter().enumerate() {
        let half = case.events[..case.events.len() / 2].to_vec();
        mock.push_rule(
            Rule::new(Reply::sse(half).aborting())
                .path(case.upstream)
                .once(),
        );
        let s = stream(&gw, case.path, &case.body, &[]).await;
        assert_gateway_error(case, &s, "upstream_error", "reset");
        assert_incomplete_record(&gw, case, n + 1).await;
    }
    still_serving(&gw).await;
}

#[tokio::test]
async fn a_break_inside_an_event_is_closed_before_the_error_event() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 15).await;
    for (n, case) in route_cases().iter().enumerate() {
        let half = case.events[..case.events.len() / 2 + 1].to_vec();
        // The last event is cut in its middle, then the connection breaks.
        mock.push_rule(
            Rule::new(Reply::sse(half).sse_options(0, true, false).aborting())
                .path(case.upstream)
                .once(),
        );
        let s = stream(&gw, case.path, &case.body, &[]).await;
        assert_gateway_error(case, &s, "upstream_error", "reset");
        if case.passthrough {
            // The partial event was forwarded as it came; the error event follows it intact.
            assert!(s.text().ends_with("}\n\n"), "{}: {:?}", case.name, s.text());
        }
        assert_incomplete_record(&gw, case, n + 1).await;
    }
    still_serving(&gw).await;
}

#[tokio::test]
async fn an_upstream_silent_past_the_idle_read_timeout_is_an_error_on_every_route() {
    let mock = MockUpstream::start().await;
    // Idle-read timeout 2 s; keep-alives every second meanwhile.
    let gw = gw(&mock, 2, 1).await;
    let cases = route_cases();
    for case in &cases {
        let half = case.events[..case.events.len() / 2].to_vec();
        mock.push_rule(
            Rule::new(Reply::sse(half).hanging_after())
                .path(case.upstream)
                .once(),
        );
    }
    // Routes sharing an upstream get identical replies, so they may run at once.
    let streams = futures_util::future::join_all(
        cases
            .iter()
            .map(|case| stream(&gw, case.path, &case.body, &[])),
    )
    .await;
    for (case, s) in cases.iter().zip(&streams) {
        assert_gateway_error(case, s, "upstream_error", "timeout");
        assert!(
            s.text().contains(": keep-alive\n\n"),
            "{}: keep-alives during the silence: {:?}",
            case.name,
            s.text()
        );
    }
    assert!(
        mock.wait_idle(Duration::from_secs(10)).await,
        "the stalled upstream streams are dropped"
    );
    let rows = wait_usage_rows(&gw.data_dir, cases.len()).await;
    assert!(
        rows.iter()
            .all(|(_, status, complete)| *status == 200 && !complete),
        "{rows:?}"
    );
    still_serving(&gw).await;
}

/// The error event each pass-through upstream sends itself.
fn upstream_error_event(case: &RouteCase) -> SseEventSpec {
    match case.upstream {
        ANTHROPIC_UP => SseEventSpec::named(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        RESPONSES_UP => SseEventSpec::named(
            "response.failed",
            &json!({"type": "response.failed", "sequence_number": 99, "response": {
                "id": "resp_s1", "object": "response", "status": "failed", "model": "gpt-test",
                "output": [], "error": {"code": "server_error", "message": "boom"}}}),
        ),
        _ => SseEventSpec::data_json(
            &json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}),
        ),
    }
}

#[tokio::test]
async fn an_error_the_upstream_sends_is_relayed_unchanged_and_nothing_is_added() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 15).await;
    let cases: Vec<RouteCase> = route_cases()
        .into_iter()
        .filter(|c| c.passthrough)
        .collect();
    for (n, case) in cases.iter().enumerate() {
        let mut events = case.events[..case.events.len() / 2].to_vec();
        events.push(upstream_error_event(case));
        let expected = encode_events(&events, false);
        mock.push_rule(Rule::new(Reply::sse(events)).path(case.upstream).once());
        let s = stream(&gw, case.path, &case.body, &[]).await;
        assert_eq!(s.status, 200);
        assert!(s.clean, "{}", case.name);
        assert_eq!(
            s.text(),
            String::from_utf8(expected).unwrap(),
            "{}: relayed byte for byte, nothing added",
            case.name
        );
        assert_incomplete_record(&gw, case, n + 1).await;
    }
    still_serving(&gw).await;
}

/// Upstream bytes in three pieces: the first events, then (after a pause on an event
/// boundary) the first half of the next event, then (after a pause inside that event) the rest.
fn paused_pieces(case: &RouteCase) -> (Vec<String>, Vec<u8>) {
    let all = encode_events(&case.events, false);
    let head = encode_events(&case.events[..2], false).len();
    let third = encode_events(&case.events[2..3], false);
    // Cut the third event inside its data, on an ASCII byte.
    let inside = head
        + third
            .windows(7)
            .position(|w| w == b"data: {")
            .expect("a JSON event")
        + 9;
    let s = |r: std::ops::Range<usize>| String::from_utf8(all[r].to_vec()).unwrap();
    (vec![s(0..head), s(head..inside), s(inside..all.len())], all)
}

#[tokio::test]
async fn keep_alives_fill_upstream_silence_on_every_route_but_never_inside_an_event() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 1).await;
    let cases = route_cases();
    let mut upstream_bytes = Vec::new();
    for case in &cases {
        let (pieces, all) = paused_pieces(case);
        upstream_bytes.push(all);
        // ~2.5 s of silence before the second and before the third piece.
        mock.push_rule(
            Rule::new(Reply::raw(pieces, 2500))
                .path(case.upstream)
                .once(),
        );
    }
    let streams = futures_util::future::join_all(
        cases
            .iter()
            .map(|case| stream(&gw, case.path, &case.body, &[])),
    )
    .await;
    for ((case, s), all) in cases.iter().zip(&streams).zip(&upstream_bytes) {
        assert!(s.clean && s.status == 200, "{}", case.name);
        let text = s.text();
        const KA: &str = ": keep-alive\n\n";
        let at: Vec<usize> = text.match_indices(KA).map(|(i, _)| i).collect();
        assert!(!at.is_empty(), "{}: keep-alives: {text:?}", case.name);
        for i in &at {
            assert!(
                *i == 0 || text[..*i].ends_with("\n\n"),
                "{}: a keep-alive inside an event at {i}: {text:?}",
                case.name
            );
        }
        if case.passthrough {
            assert_eq!(
                text.replace(KA, ""),
                String::from_utf8(all.clone()).unwrap(),
                "{}: the upstream bytes, unchanged, around the keep-alives",
                case.name
            );
        } else {
            let last = s.events().last().cloned().unwrap();
            assert_eq!(last.data, "[DONE]", "{}", case.name);
        }
    }
    let rows = wait_usage_rows(&gw.data_dir, cases.len()).await;
    assert!(rows.iter().all(|(_, _, complete)| *complete), "{rows:?}");
}

#[tokio::test]
async fn a_responses_error_frame_continues_the_sequence_numbers() {
    let mock = MockUpstream::start().await;
    let gw = gw(&mock, 30, 15).await;
    let case = route_cases().remove(1);
    let half = case.events[..case.events.len() / 2].to_vec();
    let last_seq = half
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["sequence_number"].as_u64())
        .max()
        .expect("numbered events");
    mock.push_rule(Rule::new(Reply::sse(half)).path(RESPONSES_UP).once());
    let s = stream(&gw, case.path, &case.body, &[]).await;
    let (_, v) = s.last();
    assert_eq!(v["sequence_number"], last_seq + 1, "{v}");
    assert_eq!(v["param"], Value::Null);
}
