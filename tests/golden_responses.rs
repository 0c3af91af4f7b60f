//! Golden transcripts: OpenAI Responses SSE (`tests/fixtures/responses/*.sse`) → the exact Chat
//! Completions SSE a client receives (`translation.md` §4.3, §6.3), snapshotted with insta
//! (`tests/snapshots/golden_responses__<case>.snap`).
//!
//! The bytes go through `sse::Decoder` exactly as the proxy feeds them, and the output must not
//! depend on how the transport cut them: every two-piece split, byte-by-byte, and random
//! multi-piece splits give byte-identical text.
//!
//! `round_trip`: the reasoning round trip (`translation.md` §4.4) end to end through the running
//! gateway and the mock: a two-turn tool conversation on a reasoning GPT model, streamed and not;
//! the upstream request bodies of both turns are snapshotted
//! (`golden_responses__round_trip__<case>.snap`).
//!
//! Non-streaming clients are served from the same streams, assembled by
//! `translate::aggregate`: the assembled body must be byte for byte the response object of the
//! terminal event (what the non-streaming API answers, and what the gateway relayed unchanged
//! before), also when that event's `output` is empty (`empty_terminal_output`: rebuilt from
//! the `output_item.done` events); the chat reply built from it must be the chat reply built
//! from that object (`golden_responses__<case>_whole_chat.snap`), usage included.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use droid2api::sse::Decoder;
use droid2api::translate::aggregate::{
    AggregateError, Aggregated, Assembler, DEFAULT_CAP, StreamFormat,
};
use droid2api::translate::chat::ChatChunks;
use droid2api::translate::responses_chat::{ResponsesToChat, responses_to_chat_response};
use droid2api::usage::{self, WireFormat};
use proptest::prelude::*;
use serde_json::Value;

/// One golden case: a fixture, whether the client asked for `include_usage`, and the failure
/// status the translator must report (`None` = a clean end).
struct Case {
    name: &'static str,
    sse: &'static str,
    include_usage: bool,
    failure: Option<u16>,
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/responses/", $name, ".sse"))
    };
}

const CASES: &[Case] = &[
    Case {
        name: "plain_text",
        sse: fixture!("plain_text"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "chinese_emoji",
        sse: fixture!("chinese_emoji"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "parallel_tool_calls",
        sse: fixture!("parallel_tool_calls"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "tool_call_no_arguments",
        sse: fixture!("tool_call_no_arguments"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "tool_call_empty_arguments",
        sse: fixture!("tool_call_empty_arguments"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "reasoning_then_tool_call",
        sse: fixture!("reasoning_then_tool_call"),
        include_usage: true,
        failure: None,
    },
    Case {
        name: "usage_cached",
        sse: fixture!("usage_cached"),
        include_usage: true,
        failure: None,
    },
    Case {
        name: "error_event",
        sse: fixture!("error_event"),
        include_usage: true,
        failure: Some(500),
    },
    Case {
        name: "response_failed",
        sse: fixture!("response_failed"),
        include_usage: false,
        failure: Some(500),
    },
    Case {
        name: "truncated",
        sse: fixture!("truncated"),
        include_usage: false,
        failure: Some(502),
    },
    Case {
        name: "max_output_tokens",
        sse: fixture!("max_output_tokens"),
        include_usage: true,
        failure: None,
    },
    Case {
        name: "arguments_delta_and_done",
        sse: fixture!("arguments_delta_and_done"),
        include_usage: false,
        failure: None,
    },
    Case {
        name: "empty_terminal_output",
        sse: fixture!("empty_terminal_output"),
        include_usage: true,
        failure: None,
    },
];

fn case(name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Decodes the pieces in order and translates every event; returns the client text and the
/// translator.
fn translate<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    include_usage: bool,
) -> (String, ResponsesToChat) {
    let mut decoder = Decoder::new();
    let mut t = ResponsesToChat::new(ChatChunks {
        id: "chatcmpl-test".into(),
        created: 1_764_158_400,
        model: "gpt-client-name".into(),
        include_usage,
    });
    let mut events = Vec::new();
    let mut out = String::new();
    for piece in pieces {
        decoder.feed(piece, &mut events);
        for ev in events.drain(..) {
            t.on_event(&ev, &mut out);
        }
    }
    decoder.finish(&mut events);
    for ev in events.drain(..) {
        t.on_event(&ev, &mut out);
    }
    t.finish(&mut out);
    (out, t)
}

fn whole(c: &Case) -> String {
    translate([c.sse.as_bytes()], c.include_usage).0
}

/// Checks the stream invariants (G4) that hold for every case, then snapshots the text.
fn golden(name: &str) {
    let c = case(name);
    let (out, t) = translate([c.sse.as_bytes()], c.include_usage);
    assert!(t.is_closed(), "{name}: not closed");
    assert_eq!(t.failure().map(|f| f.status), c.failure, "{name}: failure");
    let frames: Vec<&str> = out.split_terminator("\n\n").collect();
    assert!(!frames.is_empty());
    for (i, frame) in frames.iter().enumerate() {
        let data = frame
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("{name}: frame {i} is not one data line: {frame:?}"));
        assert!(!data.contains('\n'), "{name}: frame {i} spans lines");
        if data == "[DONE]" {
            assert_eq!(i, frames.len() - 1, "{name}: [DONE] is last");
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("every frame is JSON");
        if v.get("error").is_some() {
            assert_eq!(i, frames.len() - 1, "{name}: the error chunk is last");
            continue;
        }
        assert_eq!(v["id"], "chatcmpl-test");
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["created"], 1_764_158_400);
        assert_eq!(v["model"], "gpt-client-name");
        for choice in v["choices"].as_array().expect("choices") {
            assert_eq!(choice["index"], 0);
        }
    }
    match c.failure {
        None => assert!(out.ends_with("data: [DONE]\n\n"), "{name}"),
        Some(_) => assert!(
            !out.contains("[DONE]") && !out.contains("finish_reason\":\""),
            "{name}"
        ),
    }
    insta::assert_snapshot!(name, out);
}

#[test]
fn plain_text() {
    golden("plain_text");
}

#[test]
fn chinese_emoji() {
    golden("chinese_emoji");
    let out = whole(case("chinese_emoji"));
    assert!(out.contains("散步 🚶‍♀️") && out.contains("愉快 🌍🎉"));
    assert!(!out.contains('\u{FFFD}'));
}

#[test]
fn parallel_tool_calls() {
    golden("parallel_tool_calls");
}

#[test]
fn tool_call_no_arguments() {
    golden("tool_call_no_arguments");
}

#[test]
fn tool_call_empty_arguments() {
    golden("tool_call_empty_arguments");
    // The client can always `json.loads` the accumulated arguments.
    assert!(whole(case("tool_call_empty_arguments")).contains(r#"{"arguments":"{}"}"#));
}

#[test]
fn reasoning_then_tool_call() {
    golden("reasoning_then_tool_call");
}

#[test]
fn usage_cached() {
    golden("usage_cached");
}

#[test]
fn error_event() {
    golden("error_event");
}

#[test]
fn response_failed() {
    golden("response_failed");
}

#[test]
fn truncated() {
    golden("truncated");
}

#[test]
fn max_output_tokens() {
    golden("max_output_tokens");
}

#[test]
fn arguments_delta_and_done() {
    golden("arguments_delta_and_done");
    // The arguments reach the client exactly once.
    let out = whole(case("arguments_delta_and_done"));
    let mut args = String::new();
    for frame in out.split_terminator("\n\n") {
        let Ok(v) = serde_json::from_str::<Value>(&frame["data: ".len()..]) else {
            continue;
        };
        if let Some(a) = v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            args.push_str(a);
        }
    }
    assert_eq!(args, r#"{"path":"src/main.rs","start_line":42}"#);
}

#[test]
fn every_fixture_has_a_case() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/responses");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".sse").map(str::to_string))
        .collect();
    names.sort();
    let mut cases: Vec<String> = CASES.iter().map(|c| c.name.to_string()).collect();
    cases.sort();
    assert_eq!(names, cases);
}

/// Every two-piece split (at each byte offset, inside multi-byte characters too) and a
/// byte-by-byte feed give the bytes of the one-piece run.
fn every_split_matches(name: &str) {
    let c = case(name);
    let bytes = c.sse.as_bytes();
    let reference = whole(c);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let (out, _) = translate([a, b], c.include_usage);
        assert!(out == reference, "{name}: cut at {cut} differs");
    }
    let (out, _) = translate(bytes.chunks(1), c.include_usage);
    assert!(out == reference, "{name}: byte by byte differs");
}

/// One test per fixture, so that the harness runs them in parallel.
macro_rules! every_split {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                every_split_matches($name);
            }
        )*
    };
}

every_split! {
    splits_plain_text => "plain_text",
    splits_chinese_emoji => "chinese_emoji",
    splits_parallel_tool_calls => "parallel_tool_calls",
    splits_tool_call_no_arguments => "tool_call_no_arguments",
    splits_tool_call_empty_arguments => "tool_call_empty_arguments",
    splits_reasoning_then_tool_call => "reasoning_then_tool_call",
    splits_usage_cached => "usage_cached",
    splits_error_event => "error_event",
    splits_response_failed => "response_failed",
    splits_truncated => "truncated",
    splits_max_output_tokens => "max_output_tokens",
    splits_arguments_delta_and_done => "arguments_delta_and_done",
    splits_empty_terminal_output => "empty_terminal_output",
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_multi_piece_splits_give_the_same_bytes(
        which in 0..CASES.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..24),
    ) {
        let c = &CASES[which];
        let bytes = c.sse.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::with_capacity(at.len() + 1);
        let mut start = 0;
        for end in at {
            pieces.push(&bytes[start..end]);
            start = end;
        }
        pieces.push(&bytes[start..]);
        let (out, _) = translate(pieces, c.include_usage);
        prop_assert_eq!(out, whole(c));
    }
}

mod round_trip {
    use droid2api_mock::SseEventSpec;
    use serde_json::{Value, json};

    use super::common::*;

    const KEY: &str = "fk-reasoning-round-trip-0001";
    const CHAT: &str = "/v1/chat/completions";
    const O_PATH: &str = "/o/v1/responses";
    const ENCRYPTED: &str = "gAAAAABo-opaque-encrypted-reasoning==";

    async fn start(mock: &MockUpstream) -> Gateway {
        gateway(mock)
            .env("FACTORY_API_KEY", KEY)
            .config(json!({"system_prompt": "", "models": [
                {"id": "gpt-think", "type": "openai", "reasoning": "high"},
                {"id": "gpt-plain", "type": "openai", "reasoning": "off"}
            ]}))
            .start()
            .await
    }

    fn reasoning_item() -> Value {
        json!({"id": "rs_turn1", "type": "reasoning", "encrypted_content": ENCRYPTED,
               "summary": [{"type": "summary_text", "text": "**Reading the file**"}]})
    }

    fn call_item(status: &str, arguments: &str) -> Value {
        json!({"id": "fc_turn1", "type": "function_call", "status": status, "arguments": arguments,
               "call_id": "call_R1", "name": "read_file"})
    }

    fn usage() -> Value {
        json!({"input_tokens": 40, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 30,
               "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 70})
    }

    /// Turn 1 streamed: a reasoning item (with its encrypted content) and a function call.
    fn turn1_events() -> Vec<SseEventSpec> {
        let response = |status: &str, output: Value, usage: Value| {
            json!({"id": "resp_turn1", "object": "response", "created_at": 1_764_158_400,
                   "status": status, "model": "gpt-think", "output": output, "usage": usage})
        };
        let mut seq = 0;
        let mut ev = |ty: &str, mut data: Value| {
            data["type"] = json!(ty);
            data["sequence_number"] = json!(seq);
            seq += 1;
            SseEventSpec::named(ty, &data)
        };
        let rs_added = json!({"id": "rs_turn1", "type": "reasoning", "summary": []});
        vec![
            ev(
                "response.created",
                json!({"response": response("in_progress", json!([]), Value::Null)}),
            ),
            ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": rs_added}),
            ),
            ev(
                "response.reasoning_summary_text.delta",
                json!({"item_id": "rs_turn1", "output_index": 0, "summary_index": 0, "delta": "**Reading the file**"}),
            ),
            ev(
                "response.output_item.done",
                json!({"output_index": 0, "item": reasoning_item()}),
            ),
            ev(
                "response.output_item.added",
                json!({"output_index": 1, "item": call_item("in_progress", "")}),
            ),
            ev(
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_turn1", "output_index": 1, "delta": "{\"path\":\"a.txt\"}"}),
            ),
            ev(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_turn1", "output_index": 1, "arguments": "{\"path\":\"a.txt\"}"}),
            ),
            ev(
                "response.output_item.done",
                json!({"output_index": 1, "item": call_item("completed", "{\"path\":\"a.txt\"}")}),
            ),
            ev(
                "response.completed",
                json!({"response": response("completed", json!([reasoning_item(), call_item("completed", "{\"path\":\"a.txt\"}")]), usage())}),
            ),
        ]
    }

    fn conversation(model: &str, stream: bool, turn2: bool) -> Value {
        let mut messages = vec![json!({"role": "user", "content": "What is in a.txt?"})];
        if turn2 {
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_R1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": "call_R1", "content": "hello"}));
        }
        json!({"model": model, "stream": stream, "messages": messages})
    }

    fn pretty(v: &Value) -> String {
        serde_json::to_string_pretty(v).unwrap()
    }

    /// The upstream bodies of every Responses call so far.
    fn upstream_bodies(mock: &MockUpstream) -> Vec<Value> {
        mock.requests_to(O_PATH)
            .into_iter()
            .map(|r| r.json.expect("a JSON body"))
            .collect()
    }

    /// Runs turn 1 (scripted) and turn 2 (the mock's default text reply) and returns the client
    /// text of turn 1 and both upstream bodies.
    async fn two_turns(gw: &Gateway, mock: &MockUpstream, stream: bool) -> (String, Vec<Value>) {
        // The upstream call streams whether or not the client does (a whole answer is
        // assembled by the gateway).
        mock.push_rule(Rule::new(Reply::sse(turn1_events())).path(O_PATH).once());
        let (status, _, body) = post(
            &gw.url(CHAT),
            &conversation("gpt-think", stream, false),
            &[],
        )
        .await;
        assert_eq!(status, 200);
        let turn1 = String::from_utf8(body.to_vec()).unwrap();
        let (status, _, body) =
            post(&gw.url(CHAT), &conversation("gpt-think", stream, true), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let bodies = upstream_bodies(mock);
        assert_eq!(bodies.len(), 2);
        (turn1, bodies)
    }

    /// Turn 2's input holds the reasoning item (encrypted content as received) and the call
    /// with its `fc_` id, in order, before the call's output.
    fn assert_round_trip(bodies: &[Value]) {
        assert_eq!(bodies[0]["include"], json!(["reasoning.encrypted_content"]));
        assert_eq!(bodies[0]["store"], json!(false));
        let input = bodies[1]["input"].as_array().unwrap();
        let kinds: Vec<&str> = input.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "reasoning",
                "function_call",
                "function_call_output"
            ]
        );
        assert_eq!(input[1]["id"], "rs_turn1");
        assert_eq!(input[1]["encrypted_content"], ENCRYPTED);
        assert_eq!(input[2]["id"], "fc_turn1");
        assert_eq!(input[2]["call_id"], "call_R1");
    }

    /// Nothing of the round trip reaches the client.
    fn assert_client_unchanged(turn1: &str) {
        assert!(turn1.contains("call_R1"));
        assert!(
            !turn1.contains(ENCRYPTED)
                && !turn1.contains("fc_turn1")
                && !turn1.contains("rs_turn1")
        );
    }

    #[tokio::test]
    async fn streamed_two_turn_tool_conversation() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        let (turn1, bodies) = two_turns(&gw, &mock, true).await;
        assert_client_unchanged(&turn1);
        assert!(
            turn1.ends_with("data: [DONE]\n\n")
                && turn1.contains("\"finish_reason\":\"tool_calls\"")
        );
        assert_round_trip(&bodies);
        insta::assert_snapshot!("streamed_turn1_request", pretty(&bodies[0]));
        insta::assert_snapshot!("streamed_turn2_request", pretty(&bodies[1]));
    }

    #[tokio::test]
    async fn non_streamed_two_turn_tool_conversation() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        let (turn1, bodies) = two_turns(&gw, &mock, false).await;
        assert_client_unchanged(&turn1);
        let v = json(turn1.as_bytes());
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"],
            "**Reading the file**"
        );
        assert_round_trip(&bodies);
        insta::assert_snapshot!("non_streamed_turn1_request", pretty(&bodies[0]));
        insta::assert_snapshot!("non_streamed_turn2_request", pretty(&bodies[1]));
    }

    #[tokio::test]
    async fn refused_reasoning_items_are_dropped_so_the_retry_works() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        mock.push_rule(Rule::new(Reply::sse(turn1_events())).path(O_PATH).once());
        let (status, _, _) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, false), &[]).await;
        assert_eq!(status, 200);
        // The upstream cannot read the encrypted content (another organisation, say).
        mock.push_rule(
            Rule::new(Reply::openai_error(
                400,
                "invalid_request_error",
                "The encrypted content for item rs_turn1 could not be verified.",
            ))
            .path(O_PATH)
            .once(),
        );
        let (status, _, body) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, true), &[]).await;
        assert_eq!(status, 400);
        assert!(
            json(&body)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("encrypted content")
        );
        assert_eq!(upstream_bodies(&mock)[1]["input"][1]["type"], "reasoning");
        // The client's retry goes without the cached items: fresh call, no id.
        let (status, _, body) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, true), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let retry = &upstream_bodies(&mock)[2];
        assert_eq!(
            retry["input"][1],
            json!({"type": "function_call", "call_id": "call_R1", "name": "read_file", "arguments": "{\"path\":\"a.txt\"}"})
        );
        assert_eq!(retry["input"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn other_upstream_errors_keep_the_cached_items() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        mock.push_rule(Rule::new(Reply::sse(turn1_events())).path(O_PATH).once());
        post(&gw.url(CHAT), &conversation("gpt-think", false, false), &[]).await;
        mock.push_rule(
            Rule::new(Reply::openai_error(
                400,
                "invalid_request_error",
                "Invalid 'tools[0].name'.",
            ))
            .path(O_PATH)
            .once(),
        );
        let (status, _, _) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, true), &[]).await;
        assert_eq!(status, 400);
        let (status, _, _) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, true), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(upstream_bodies(&mock)[2]["input"][1]["type"], "reasoning");
    }

    #[tokio::test]
    async fn a_model_without_reasoning_asks_for_nothing_and_gets_nothing_back() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        // Turn 1 on the reasoning model fills the cache; turn 2 goes to a model that does not reason.
        mock.push_rule(Rule::new(Reply::sse(turn1_events())).path(O_PATH).once());
        post(&gw.url(CHAT), &conversation("gpt-think", false, false), &[]).await;
        let (status, _, _) =
            post(&gw.url(CHAT), &conversation("gpt-plain", false, true), &[]).await;
        assert_eq!(status, 200);
        let body = &upstream_bodies(&mock)[1];
        assert!(body.get("include").is_none());
        assert_eq!(body["input"].as_array().unwrap().len(), 3);
        assert!(body["input"][1].get("id").is_none());
    }

    #[tokio::test]
    async fn a_bad_include_is_refused_and_the_server_still_serves() {
        let mock = MockUpstream::start().await;
        let gw = start(&mock).await;
        let mut body = conversation("gpt-think", false, false);
        body["include"] = json!("reasoning.encrypted_content");
        let (status, _, resp) = post(&gw.url(CHAT), &body, &[]).await;
        assert_eq!(status, 400);
        let e = json(&resp);
        assert_eq!(e["error"]["param"], "include");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("include: expected an array of strings")
        );
        assert!(upstream_bodies(&mock).is_empty());
        let (status, _, _) =
            post(&gw.url(CHAT), &conversation("gpt-think", false, false), &[]).await;
        assert_eq!(status, 200);
    }
}

// ---- Non-streaming clients: the stream assembled into the whole reply ----------------------

/// Cases that end with `response.completed` or `response.incomplete`, each with the fixture
/// whose terminal event holds the non-streaming body.
const WHOLE_CASES: [(&str, &str); 10] = [
    ("plain_text", "plain_text"),
    ("chinese_emoji", "chinese_emoji"),
    ("parallel_tool_calls", "parallel_tool_calls"),
    ("tool_call_no_arguments", "tool_call_no_arguments"),
    ("tool_call_empty_arguments", "tool_call_empty_arguments"),
    ("reasoning_then_tool_call", "reasoning_then_tool_call"),
    ("usage_cached", "usage_cached"),
    ("max_output_tokens", "max_output_tokens"),
    ("arguments_delta_and_done", "arguments_delta_and_done"),
    ("empty_terminal_output", "reasoning_then_tool_call"),
];

/// The raw text of the terminal event's `response` object: what the non-streaming API
/// answers for the same response.
fn non_stream_body(name: &str) -> &'static str {
    let c = case(name);
    let data = c
        .sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .find(|d| {
            d.starts_with(r#"{"type":"response.completed""#)
                || d.starts_with(r#"{"type":"response.incomplete""#)
        })
        .unwrap_or_else(|| panic!("{name}: no terminal event"));
    let start = data.find(r#","response":"#).expect("response member") + r#","response":"#.len();
    assert!(data.ends_with("}}"), "{name}: response is the last member");
    &data[start..data.len() - 1]
}

fn assemble<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Aggregated, AggregateError> {
    let mut asm = Assembler::new(StreamFormat::Responses, DEFAULT_CAP);
    for piece in pieces {
        asm.feed(piece)?;
    }
    asm.finish()
}

fn assembled_bytes<'a>(name: &str, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    match assemble(pieces) {
        Ok(Aggregated::Reply(v)) => serde_json::to_vec(&v).unwrap(),
        other => panic!("{name}: not a reply: {other:?}"),
    }
}

/// The pass-through answer: the assembled body is the non-streaming body, byte for byte.
#[test]
fn whole_reply_is_the_non_streaming_body() {
    for (name, body_of) in WHOLE_CASES {
        let got = assembled_bytes(name, [case(name).sse.as_bytes()]);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            non_stream_body(body_of),
            "{name}"
        );
    }
}

/// The chat answer and the usage: the same from the assembled body as from the non-streaming
/// body (cached and reasoning tokens included).
#[test]
fn whole_chat_reply_and_usage_match_the_non_streaming_ones() {
    for (name, body_of) in WHOLE_CASES {
        let assembled = assembled_bytes(name, [case(name).sse.as_bytes()]);
        let body = non_stream_body(body_of).as_bytes();
        let chat = |b: &[u8]| {
            let v: Value = serde_json::from_slice(b).unwrap();
            serde_json::to_string(
                &responses_to_chat_response(&v, "gpt-client-name", 1_764_158_400).unwrap(),
            )
            .unwrap()
        };
        let chat_reply = chat(&assembled);
        assert_eq!(chat_reply, chat(body), "{name}");
        insta::assert_snapshot!(format!("{name}_whole_chat"), chat_reply);
        assert_eq!(
            usage::from_reply_bytes(WireFormat::Responses, &assembled),
            usage::from_reply_bytes(WireFormat::Responses, body),
            "{name}"
        );
    }
    let u = usage::from_reply_bytes(
        WireFormat::Responses,
        &assembled_bytes("usage_cached", [case("usage_cached").sse.as_bytes()]),
    )
    .unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_tokens,
            u.output_tokens,
            u.reasoning_tokens
        ),
        (86, 1920, 71, 64)
    );
}

/// `response.failed` and an `error` event are answered as the chat route answers a failed
/// response (status from the code, the OpenAI envelope); a stream cut short is no answer.
#[test]
fn whole_reply_of_failed_streams() {
    for name in ["response_failed", "error_event"] {
        match assemble([case(name).sse.as_bytes()]) {
            Ok(Aggregated::Failed { failure, .. }) => {
                assert_eq!(failure.status, 500, "{name}");
                let body: Value = serde_json::from_slice(&failure.body).unwrap();
                assert_eq!(body["error"]["type"], "server_error", "{name}");
                assert_eq!(body["error"]["code"], "server_error", "{name}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty())
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        assemble([case("truncated").sse.as_bytes()]),
        Err(AggregateError::Truncated)
    );
}

/// Every two-piece split assembles the same body (two of the smaller streams: every case is
/// covered by the random splits below; assembling re-parses the large terminal objects, so
/// every offset of every case would take minutes in a debug build).
#[test]
fn whole_reply_split_at_every_offset_is_identical() {
    for name in ["tool_call_empty_arguments", "usage_cached"] {
        let bytes = case(name).sse.as_bytes();
        let expected = assembled_bytes(name, [bytes]);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert!(
                assembled_bytes(name, [a, b]) == expected,
                "{name} split at {cut}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random multi-piece splits assemble the same body.
    #[test]
    fn whole_reply_random_splits_are_identical(
        which in 0..WHOLE_CASES.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..24),
    ) {
        let name = WHOLE_CASES[which].0;
        let bytes = case(name).sse.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::with_capacity(at.len() + 1);
        let mut start = 0;
        for end in at {
            pieces.push(&bytes[start..end]);
            start = end;
        }
        pieces.push(&bytes[start..]);
        prop_assert_eq!(assembled_bytes(name, pieces), assembled_bytes(name, [bytes]));
    }
}
