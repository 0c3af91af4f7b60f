//! Helpers for the stream-failure, upstream-connection and scrubbing tests: the five stream
//! routes, reading a whole client stream (noting how it ended), decoding it, the usage records
//! as stored, and a gateway whose upstream client speaks HTTP/2 without TLS (h2c) to the mock.

use std::path::Path;
use std::time::Duration;

use droid2api::server::Running;
use droid2api::sse::{Decoder, Event};
use droid2api_mock::{SseEventSpec, anthropic, openai};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Builder, Gateway, client};

/// The client format of a stream route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    Anthropic,
    Responses,
    Chat,
}

/// One stream route: what the client calls and what the upstream streams back.
#[derive(Debug, Clone)]
pub struct RouteCase {
    pub name: &'static str,
    /// Client path.
    pub path: &'static str,
    /// The mock rule's path filter (the upstream endpoint).
    pub upstream: &'static str,
    pub body: Value,
    /// A complete upstream stream (terminal event last).
    pub events: Vec<SseEventSpec>,
    /// How many of `events` make the terminal part (dropped for an early end).
    pub terminal: usize,
    pub client_fmt: Fmt,
    /// The upstream relays bytes unchanged (pass-through) rather than translating.
    pub passthrough: bool,
}

pub const ANTHROPIC_UP: &str = "/a/v1/messages";
pub const RESPONSES_UP: &str = "/o/v1/responses";
pub const CHAT_UP: &str = "/o/v1/chat/completions";
pub const TEXT: &str = "Streams end cleanly, 你好 🌍, even when upstream does not.";

/// Config with one model of each type (no reasoning) and short timings.
pub fn config(idle_read_timeout_s: u64, sse_keepalive_s: u64) -> Value {
    json!({
        "models": [
            {"id": "claude-test", "type": "anthropic", "reasoning": "off"},
            {"id": "gpt-test", "type": "openai", "reasoning": "off"},
            {"id": "glm-test", "type": "common", "reasoning": "off", "provider": "fireworks"}
        ],
        "timing": {"idle_read_timeout_s": idle_read_timeout_s, "sse_keepalive_s": sse_keepalive_s}
    })
}

/// The five stream routes.
pub fn route_cases() -> Vec<RouteCase> {
    let user = json!([{"role": "user", "content": "Hello"}]);
    let a_events = anthropic::text_stream_events("msg_s1", "claude-test", TEXT, 10, 7, None);
    let r_events = openai::responses_text_stream_events("resp_s1", "gpt-test", TEXT, 10, 7, None);
    let c_events = openai::chat_text_stream_events("chatcmpl-s1", "glm-test", TEXT, Some((10, 7)));
    vec![
        RouteCase {
            name: "messages",
            path: "/v1/messages",
            upstream: ANTHROPIC_UP,
            body: json!({"model": "claude-test", "max_tokens": 64, "stream": true, "messages": user}),
            events: a_events.clone(),
            terminal: 1,
            client_fmt: Fmt::Anthropic,
            passthrough: true,
        },
        RouteCase {
            name: "responses",
            path: "/v1/responses",
            upstream: RESPONSES_UP,
            body: json!({"model": "gpt-test", "stream": true, "input": "Hello"}),
            events: r_events.clone(),
            terminal: 1,
            client_fmt: Fmt::Responses,
            passthrough: true,
        },
        RouteCase {
            name: "chat over anthropic",
            path: "/v1/chat/completions",
            upstream: ANTHROPIC_UP,
            body: json!({"model": "claude-test", "stream": true, "messages": user}),
            events: a_events,
            terminal: 1,
            client_fmt: Fmt::Chat,
            passthrough: false,
        },
        RouteCase {
            name: "chat over responses",
            path: "/v1/chat/completions",
            upstream: RESPONSES_UP,
            body: json!({"model": "gpt-test", "stream": true, "messages": user}),
            events: r_events,
            terminal: 1,
            client_fmt: Fmt::Chat,
            passthrough: false,
        },
        RouteCase {
            name: "chat over common",
            path: "/v1/chat/completions",
            upstream: CHAT_UP,
            body: json!({"model": "glm-test", "stream": true,
                         "stream_options": {"include_usage": true}, "messages": user}),
            events: c_events,
            terminal: 1,
            client_fmt: Fmt::Chat,
            passthrough: true,
        },
    ]
}

/// A client stream read to its end.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub request_id: String,
    pub bytes: Vec<u8>,
    /// The body ended normally (no reset, no incomplete chunked encoding).
    pub clean: bool,
}

impl Streamed {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn events(&self) -> Vec<Event> {
        events(&self.bytes)
    }

    /// The last event, as JSON data.
    pub fn last(&self) -> (Option<String>, Value) {
        let evs = self.events();
        let ev = evs.last().expect("at least one event");
        let data = serde_json::from_str(&ev.data)
            .unwrap_or_else(|e| panic!("last event is not JSON ({e}): {:?}", ev.data));
        (ev.event.clone(), data)
    }
}

/// Decodes SSE bytes as a client would.
pub fn events(bytes: &[u8]) -> Vec<Event> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    d.feed(bytes, &mut out);
    d.finish(&mut out);
    out
}

/// POSTs `body` to `path` and reads the answer to its end (at most 60 s).
pub async fn stream(gw: &Gateway, path: &str, body: &Value, headers: &[(&str, &str)]) -> Streamed {
    let mut req = client().post(gw.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut s = resp.bytes_stream();
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let clean = loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => panic!("the stream did not end within 60 s"),
            Ok(None) => break true,
            Ok(Some(Ok(c))) => bytes.extend_from_slice(&c),
            Ok(Some(Err(_))) => break false,
        }
    };
    Streamed {
        status,
        request_id,
        bytes,
        clean,
    }
}

/// The error object of a gateway error frame in `fmt`, with its (code, message).
pub fn gateway_error(fmt: Fmt, last: &(Option<String>, Value)) -> (String, String) {
    let (event, v) = last;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match fmt {
        Fmt::Anthropic => {
            assert_eq!(event.as_deref(), Some("error"), "{v}");
            assert_eq!(v["type"], "error", "{v}");
            (s(&v["error"]["type"]), s(&v["error"]["message"]))
        }
        Fmt::Responses => {
            assert_eq!(event.as_deref(), Some("error"), "{v}");
            assert_eq!(v["type"], "error", "{v}");
            (s(&v["code"]), s(&v["message"]))
        }
        Fmt::Chat => {
            assert_eq!(event, &None, "{v}");
            assert_eq!(v["error"]["type"], "server_error", "{v}");
            (s(&v["error"]["code"]), s(&v["error"]["message"]))
        }
    }
}

/// One usage record as stored: (route, status, complete).
pub type UsageRow = (String, i64, bool);

pub fn usage_rows(data_dir: &Path) -> Vec<UsageRow> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        data_dir.join("droid2api.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut st) = conn.prepare("SELECT route, status, complete FROM usage_records ORDER BY seq")
    else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

/// Waits (up to 10 s) until at least `n` usage records are stored.
pub async fn wait_usage_rows(data_dir: &Path, n: usize) -> Vec<UsageRow> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = usage_rows(data_dir);
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} usage records after 10 s: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a gateway whose upstream client speaks HTTP/2 with prior knowledge (h2c) to the
/// mock, as it negotiates HTTP/2 through ALPN with Factory's TLS front.
pub async fn start_h2(builder: Builder) -> Gateway {
    let (mut settings, temp, data, home) = builder.settings();
    settings.upstream_http2_prior_knowledge = true;
    let running = Running::start(settings).await.expect("gateway starts");
    Gateway {
        addr: running.addr,
        running: Some(running),
        data_dir: data,
        home_dir: home,
        _temp: temp,
    }
}
