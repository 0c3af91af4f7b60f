//! Worst-case request cost (contract §9): the largest adversarial bodies that fit under the
//! 32 MiB cap, each taken from the raw body bytes to the upstream body bytes, exactly as the
//! proxy does it for one request:
//!
//! 1. the body checks of `proxy::body::parse_body` (UTF-8, JSON object, `model` string),
//! 2. the route's translator (`translate::*`), which validates and translates,
//! 3. `serde_json::to_vec` of the upstream body (what `proxy::run` sends),
//! 4. dropping every intermediate value.
//!
//! Translators (`<translator>/<case>`):
//! - `chat_to_anthropic`, `chat_to_responses`, `common_chat` (the common-type pass-through) on
//!   Chat Completions bodies;
//! - `messages_passthrough` on Anthropic Messages bodies;
//! - `responses_passthrough` on OpenAI Responses bodies.
//!
//! Cases, each filled up to just under 32 MiB with the smallest elements of its kind:
//! - `tool_calls`: one assistant turn with N parallel tool calls and the N matching results
//!   (the quadratic pairing of issue #8);
//! - `messages`: ~1M tiny messages with roles user, user, assistant, assistant, … (alternation
//!   and merging of runs);
//! - `content_parts`: one user message with ~1.3M tiny text parts;
//! - `deep_schemas`: tools whose parameter schemas nest as deep as serde_json allows (its
//!   recursion limit of 128 bounds every body).
//!
//! `scaling/<translator>_<case>/<MiB>`: the `tool_calls` and `messages` cases of
//! `chat_to_anthropic` and `chat_to_responses` at 4, 8, 16 and 32 MiB: linear work shows as a
//! constant throughput.
//!
//! `parse_only/<case>` is step 1 alone (and the drop), the floor every route pays before any
//! translation.
//!
//! Time is the benchmark thread's **CPU time** (`CLOCK_THREAD_CPUTIME_ID`), the contract's
//! "gateway CPU": on a shared machine, wall time also counts the time other processes hold the
//! core.
//!
//! `cargo test --all-targets` runs each benchmark once in criterion's test mode on 1 MiB
//! bodies (a smoke test that also checks every translation succeeds with the expected shape);
//! `cargo bench --bench translate_worst` measures on 32 MiB bodies. See BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use droid2api::config::{MAX_BODY_BYTES, Model, ModelKind, ReasoningBudgets, ReasoningLevel};
use droid2api::translate::{
    Context, Prepared, TranslateError, anthropic_chat, passthrough, responses_chat,
};
use serde_json::Value;

/// Criterion measurement: CPU time of the calling thread.
struct ThreadCpu;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).expect("CPU time is positive"),
        u32::try_from(t.tv_nsec).expect("nanoseconds fit"),
    )
}

/// Durations print the same way as criterion's wall time.
static DURATIONS: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        DURATIONS.formatter()
    }
}

/// A system prompt as operators configure one, so injection is part of the work.
const PROMPT: &str = "You are Droid, an AI software engineering agent built by Factory.\n\n";

/// The body size to fill: just under the cap under `cargo bench`, 1 MiB in test mode.
fn target_size() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        MAX_BODY_BYTES - 4096
    } else {
        1 << 20
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    ChatToAnthropic,
    ChatToResponses,
    CommonChat,
    MessagesPassthrough,
    ResponsesPassthrough,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::ChatToAnthropic => "chat_to_anthropic",
            Route::ChatToResponses => "chat_to_responses",
            Route::CommonChat => "common_chat",
            Route::MessagesPassthrough => "messages_passthrough",
            Route::ResponsesPassthrough => "responses_passthrough",
        }
    }

    fn model(self) -> Model {
        let (kind, reasoning) = match self {
            Route::ChatToAnthropic | Route::MessagesPassthrough => {
                (ModelKind::Anthropic, ReasoningLevel::High)
            }
            Route::ChatToResponses | Route::ResponsesPassthrough => {
                (ModelKind::OpenAi, ReasoningLevel::High)
            }
            Route::CommonChat => (ModelKind::Common, ReasoningLevel::High),
        };
        Model {
            id: "upstream-model-id".into(),
            name: "bench".into(),
            kind,
            reasoning,
            provider: None,
            default_max_tokens: 4096,
            max_output_tokens: kind.default_max_output_tokens(),
        }
    }
}

/// Step 1: what `proxy::body::parse_body` does (UTF-8, JSON, object, `model`).
fn parse(body: &[u8]) -> Value {
    std::str::from_utf8(body).expect("bench bodies are UTF-8");
    let value: Value = serde_json::from_slice(body).expect("bench bodies are JSON");
    assert!(value.is_object() && value["model"].is_string());
    value
}

fn translate(route: Route, model: &Model, value: Value) -> Result<Prepared, TranslateError> {
    let ctx = Context {
        system_prompt: PROMPT,
        budgets: ReasoningBudgets::default(),
    };
    let beta = Some("fine-grained-tool-streaming-2025-05-14");
    match route {
        Route::ChatToAnthropic => anthropic_chat::chat_to_anthropic(value, model, &ctx, beta),
        Route::ChatToResponses => responses_chat::chat_to_responses(value, model, &ctx),
        Route::CommonChat => passthrough::prepare_common_chat(value, model, &ctx),
        Route::MessagesPassthrough => {
            passthrough::prepare_messages(value, model, &ctx, beta, false)
        }
        Route::ResponsesPassthrough => passthrough::prepare_responses(value, model, &ctx),
    }
}

/// Steps 1–4: raw client bytes → upstream bytes.
fn full(route: Route, model: &Model, body: &[u8]) -> Vec<u8> {
    let prepared = translate(route, model, parse(body)).expect("bench bodies translate");
    serde_json::to_vec(&prepared.body).expect("upstream bodies serialise")
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// `{"model":"bench",<head>"<list>":[item(0),item(1),…]<tail>}` with as many items as fit in
/// `size` bytes; returns the body and the item count.
fn fill(
    size: usize,
    head: &str,
    list: &str,
    tail: &str,
    mut item: impl FnMut(usize) -> String,
) -> (Vec<u8>, usize) {
    let mut s = format!("{{\"model\":\"bench\",{head}\"{list}\":[");
    let end = format!("]{tail}}}");
    let mut n = 0;
    loop {
        let next = item(n);
        if s.len() + next.len() + 1 + end.len() > size {
            break;
        }
        if n > 0 {
            s.push(',');
        }
        s.push_str(&next);
        n += 1;
    }
    s.push_str(&end);
    (s.into_bytes(), n)
}

/// Chat: one user turn, one assistant turn with `n` tool calls, `n` tool messages.
fn chat_tool_calls(size: usize) -> (Vec<u8>, usize) {
    // Each pair costs one call plus one result; fill by pairs, then split.
    let call = |i: usize| {
        format!(r#"{{"id":"c{i}","type":"function","function":{{"name":"f","arguments":""}}}}"#)
    };
    let result = |i: usize| format!(r#"{{"role":"tool","tool_call_id":"c{i}","content":"r"}}"#);
    let (_, n) = fill(size, "", "x", "", |i| format!("{},{}", call(i), result(i)));
    let calls: Vec<String> = (0..n).map(call).collect();
    let results: Vec<String> = (0..n).map(result).collect();
    let body = format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"go"}},{{"role":"assistant","tool_calls":[{}]}},{}]}}"#,
        calls.join(","),
        results.join(",")
    );
    assert!(body.len() <= MAX_BODY_BYTES);
    (body.into_bytes(), n)
}

/// Chat: user, user, assistant, assistant, … with one-letter contents.
fn chat_messages(size: usize) -> (Vec<u8>, usize) {
    fill(size, "", "messages", "", |i| {
        let role = if i % 4 < 2 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m"}}"#)
    })
}

/// Chat: one user message with one-letter text parts.
fn chat_content_parts(size: usize) -> (Vec<u8>, usize) {
    let (body, n) = fill(
        size,
        r#""messages":[{"role":"user","#,
        "content",
        "}]",
        |_| r#"{"type":"text","text":"p"}"#.to_string(),
    );
    (body, n)
}

/// A schema of `levels` nested objects: `{"type":"object","properties":{"a":{…}}}`.
fn nested_schema(levels: usize) -> String {
    let mut s = String::new();
    for _ in 0..levels {
        s.push_str(r#"{"type":"object","properties":{"a":"#);
    }
    s.push_str(r#"{"type":"string"}"#);
    for _ in 0..levels {
        s.push_str("}}");
    }
    s
}

/// The deepest `levels` for which `wrap(nested_schema(levels))` still parses (serde_json's
/// recursion limit).
fn deepest(wrap: impl Fn(&str) -> String) -> usize {
    (1..200)
        .take_while(|&l| serde_json::from_str::<Value>(&wrap(&nested_schema(l))).is_ok())
        .last()
        .expect("some depth parses")
}

/// Tools with maximally nested parameter schemas. `tool` wraps a schema into one tool;
/// `head` comes before the `tools` list.
fn deep_schemas(size: usize, head: &str, tool: impl Fn(&str) -> String) -> (Vec<u8>, usize) {
    let levels = deepest(|schema| format!(r#"{{"model":"bench","tools":[{}]}}"#, tool(schema)));
    let one = tool(&nested_schema(levels));
    fill(size, head, "tools", "", |_| one.clone())
}

fn chat_deep_schemas(size: usize) -> (Vec<u8>, usize) {
    deep_schemas(
        size,
        r#""messages":[{"role":"user","content":"hi"}],"#,
        |schema| {
            format!(r#"{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}"#)
        },
    )
}

/// Anthropic Messages: one assistant turn with `n` tool_use blocks, one user turn with the `n`
/// tool_result blocks.
fn messages_tool_calls(size: usize) -> (Vec<u8>, usize) {
    let call = |i: usize| format!(r#"{{"type":"tool_use","id":"c{i}","name":"f","input":{{}}}}"#);
    let result =
        |i: usize| format!(r#"{{"type":"tool_result","tool_use_id":"c{i}","content":"r"}}"#);
    let (_, n) = fill(size, "", "x", "", |i| format!("{},{}", call(i), result(i)));
    let calls: Vec<String> = (0..n).map(call).collect();
    let results: Vec<String> = (0..n).map(result).collect();
    let body = format!(
        r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":"go"}},{{"role":"assistant","content":[{}]}},{{"role":"user","content":[{}]}}]}}"#,
        calls.join(","),
        results.join(",")
    );
    assert!(body.len() <= MAX_BODY_BYTES);
    (body.into_bytes(), n)
}

fn messages_messages(size: usize) -> (Vec<u8>, usize) {
    fill(size, r#""max_tokens":1024,"#, "messages", "", |i| {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m"}}"#)
    })
}

fn messages_content_parts(size: usize) -> (Vec<u8>, usize) {
    fill(
        size,
        r#""max_tokens":1024,"messages":[{"role":"user","#,
        "content",
        "}]",
        |_| r#"{"type":"text","text":"p"}"#.to_string(),
    )
}

fn messages_deep_schemas(size: usize) -> (Vec<u8>, usize) {
    deep_schemas(
        size,
        r#""max_tokens":1024,"messages":[{"role":"user","content":"hi"}],"#,
        |schema| format!(r#"{{"name":"f","input_schema":{schema}}}"#),
    )
}

/// Responses: `n` function_call items and their `n` function_call_output items.
fn responses_tool_calls(size: usize) -> (Vec<u8>, usize) {
    fill(size, "", "input", "", |i| {
        format!(
            r#"{{"type":"function_call","call_id":"c{i}","name":"f","arguments":"{{}}"}},{{"type":"function_call_output","call_id":"c{i}","output":"r"}}"#
        )
    })
}

fn responses_messages(size: usize) -> (Vec<u8>, usize) {
    fill(size, "", "input", "", |i| {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m"}}"#)
    })
}

fn responses_content_parts(size: usize) -> (Vec<u8>, usize) {
    fill(size, r#""input":[{"role":"user","#, "content", "}]", |_| {
        r#"{"type":"input_text","text":"p"}"#.to_string()
    })
}

fn responses_deep_schemas(size: usize) -> (Vec<u8>, usize) {
    deep_schemas(size, r#""input":"hi","#, |schema| {
        format!(r#"{{"type":"function","name":"f","parameters":{schema}}}"#)
    })
}

// ---------------------------------------------------------------------------------------------
// Checks (once, before timing): every body translates, to the expected shape
// ---------------------------------------------------------------------------------------------

fn upstream(route: Route, body: &[u8]) -> Value {
    serde_json::from_slice(&full(route, &route.model(), body)).expect("upstream body is JSON")
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn check(route: Route, case: &str, body: &[u8], n: usize) {
    let out = upstream(route, body);
    let ok = match (route, case) {
        (Route::ChatToAnthropic, "tool_calls") => {
            len(&out["messages"][1]["content"]) == n
                && len(&out["messages"][2]["content"]) == n
                && out["messages"][2]["content"][n - 1]["tool_use_id"] == format!("c{}", n - 1)
        }
        // Runs of one role merge: two messages per turn.
        (Route::ChatToAnthropic, "messages") => {
            len(&out["messages"]) == n.div_ceil(2)
                && len(&out["messages"][0]["content"]) == 2.min(n)
        }
        (Route::ChatToAnthropic, "content_parts") => len(&out["messages"][0]["content"]) == n,
        (Route::ChatToAnthropic, "deep_schemas") => len(&out["tools"]) == n,
        (Route::ChatToResponses, "tool_calls") => len(&out["input"]) == 2 * n + 1,
        (Route::ChatToResponses, "messages") => len(&out["input"]) == n,
        (Route::ChatToResponses, "content_parts") => len(&out["input"][0]["content"]) == n,
        (Route::ChatToResponses, "deep_schemas") => len(&out["tools"]) == n,
        (Route::CommonChat, "tool_calls") => len(&out["messages"]) == n + 3,
        (Route::CommonChat, "messages") => len(&out["messages"]) == n + 1,
        (Route::CommonChat, "content_parts") => len(&out["messages"][1]["content"]) == n,
        (Route::CommonChat, "deep_schemas") => len(&out["tools"]) == n,
        (Route::MessagesPassthrough, "tool_calls") => len(&out["messages"][2]["content"]) == n,
        (Route::MessagesPassthrough, "messages") => len(&out["messages"]) == n,
        (Route::MessagesPassthrough, "content_parts") => len(&out["messages"][0]["content"]) == n,
        (Route::MessagesPassthrough, "deep_schemas") => len(&out["tools"]) == n,
        (Route::ResponsesPassthrough, "tool_calls") => len(&out["input"]) == 2 * n,
        (Route::ResponsesPassthrough, "messages") => len(&out["input"]) == n,
        (Route::ResponsesPassthrough, "content_parts") => len(&out["input"][0]["content"]) == n,
        (Route::ResponsesPassthrough, "deep_schemas") => len(&out["tools"]) == n,
        _ => false,
    };
    assert!(
        ok && out["model"] == "upstream-model-id",
        "{}/{case}: unexpected upstream body",
        route.name()
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

type Builder = fn(usize) -> (Vec<u8>, usize);

const CHAT_CASES: [(&str, Builder); 4] = [
    ("tool_calls", chat_tool_calls),
    ("messages", chat_messages),
    ("content_parts", chat_content_parts),
    ("deep_schemas", chat_deep_schemas),
];

const MESSAGES_CASES: [(&str, Builder); 4] = [
    ("tool_calls", messages_tool_calls),
    ("messages", messages_messages),
    ("content_parts", messages_content_parts),
    ("deep_schemas", messages_deep_schemas),
];

const RESPONSES_CASES: [(&str, Builder); 4] = [
    ("tool_calls", responses_tool_calls),
    ("messages", responses_messages),
    ("content_parts", responses_content_parts),
    ("deep_schemas", responses_deep_schemas),
];

fn bench_route(c: &mut Criterion<ThreadCpu>, route: Route, cases: &[(&str, Builder)], size: usize) {
    let model = route.model();
    let mut group = c.benchmark_group(route.name());
    group.sample_size(10);
    for (case, build) in cases {
        let (body, n) = build(size);
        check(route, case, &body, n);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*case, |b| {
            b.iter(|| black_box(full(route, &model, black_box(&body))));
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion<ThreadCpu>, size: usize) {
    let mut group = c.benchmark_group("parse_only");
    group.sample_size(10);
    let cases = CHAT_CASES
        .iter()
        .map(|(case, build)| (format!("chat_{case}"), build))
        .chain(
            MESSAGES_CASES
                .iter()
                .map(|(case, build)| (format!("messages_{case}"), build)),
        )
        .chain(
            RESPONSES_CASES
                .iter()
                .map(|(case, build)| (format!("responses_{case}"), build)),
        );
    for (case, build) in cases {
        let (body, _) = build(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(case, |b| b.iter(|| black_box(parse(black_box(&body)))));
    }
    group.finish();
}

fn bench_scaling(c: &mut Criterion<ThreadCpu>, size: usize) {
    let mut group = c.benchmark_group("scaling");
    group.sample_size(10);
    for route in [Route::ChatToAnthropic, Route::ChatToResponses] {
        let model = route.model();
        for (case, build) in &CHAT_CASES[..2] {
            for parts in [8, 4, 2, 1] {
                let (body, _) = build(size / parts);
                let mib = body.len() as f64 / f64::from(1 << 20);
                group.throughput(Throughput::Bytes(body.len() as u64));
                let id =
                    BenchmarkId::new(format!("{}_{case}", route.name()), format!("{mib:.1}MiB"));
                group.bench_function(id, |b| {
                    b.iter(|| black_box(full(route, &model, black_box(&body))));
                });
            }
        }
    }
    group.finish();
}

fn worst_cases(c: &mut Criterion<ThreadCpu>) {
    let size = target_size();
    bench_scaling(c, size);
    bench_parse(c, size);
    for route in [
        Route::ChatToAnthropic,
        Route::ChatToResponses,
        Route::CommonChat,
    ] {
        bench_route(c, route, &CHAT_CASES, size);
    }
    bench_route(c, Route::MessagesPassthrough, &MESSAGES_CASES, size);
    bench_route(c, Route::ResponsesPassthrough, &RESPONSES_CASES, size);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = worst_cases
}
criterion_main!(benches);
