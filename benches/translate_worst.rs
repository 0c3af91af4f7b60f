//! Worst-case request cost (contract §9): the costliest bodies the gateway ACCEPTS (at most
//! `limits.max_json_values` JSON values, escape sequences weighing one per eight, under the
//! 32 MiB cap), each taken from the raw body bytes to the upstream body bytes exactly as the
//! proxy does it for one request:
//!
//! 1. `proxy::parse_body`, the proxy's own body checks: UTF-8 (simdutf8), the value pre-scan
//!    (`json_scan::count_values`), whitespace stripping when there is much of it, serde_json's
//!    parse, JSON object, `model` string;
//! 2. the route's translator (`translate::*`), which validates and translates;
//! 3. the encoding of the upstream body (`translate::encode`, what `proxy::plan` sends);
//! 4. dropping every intermediate value.
//!
//! Translators (`<translator>/<case>`): `chat_to_anthropic`, `chat_to_responses`, `common_chat`
//! (the common-type pass-through) on Chat Completions bodies; `messages_passthrough` on
//! Anthropic Messages bodies; `responses_passthrough` on OpenAI Responses bodies.
//!
//! Cases at the value cap, padded with ASCII text in their strings up to just under 32 MiB:
//! - `tool_calls`: one assistant turn with N parallel tool calls and the N matching results;
//! - `messages`: tiny messages with roles user, user, assistant, assistant, … (alternation and
//!   merging of runs);
//! - `content_parts`: one user message with tiny text parts; `image_parts` (chat only): http
//!   image parts, which both chat translators expand into bigger objects;
//! - `deep_schemas`: tools whose parameter schemas nest as deep as serde_json's recursion limit
//!   of 128 lets a body go;
//! - `numbers`: one tool schema holding 150-digit floats (parsed and re-printed);
//! - `whitespace`: the tool_calls body at the cap with the rest of the 32 MiB as indentation.
//!
//! Cases made of one huge string (~32 MiB): `image_data` (a base64 image: a data URL on chat
//! and Responses bodies, a base64 source on Messages bodies), `huge_tool_result` (ASCII text),
//! `escaped_tool_result` (as many `\n`, `\"`, `\u00e9` escapes as the cap allows, then ASCII),
//! `non_ascii_tool_result` (3-byte UTF-8 text).
//!
//! `rejected/<case>`: step 1 on 32 MiB bodies over the cap (`values`: `1,1,1,…`; `escapes`: one
//! string of `\n`), refused by the pre-scan.
//!
//! `parse_only/<case>`: step 1 (and the drop) of the chat cases: the floor every route pays.
//!
//! `scaling/<translator>_<case>/<values>`: `tool_calls` and `messages` of the two chat
//! translators at 1/8, 1/4, 1/2 and all of the cap (and of 32 MiB): linear work shows as a
//! constant cost per value.
//!
//! Time is the benchmark thread's **CPU time** (`CLOCK_THREAD_CPUTIME_ID`), the contract's
//! "gateway CPU": on a shared machine, wall time also counts the time other processes hold the
//! core. The allocator is the binary's (mimalloc with the default feature `mimalloc`).
//!
//! `cargo test --all-targets` runs each benchmark once in criterion's test mode on 1 MiB
//! bodies (a smoke test that also checks every translation succeeds with the expected shape);
//! `cargo bench --bench translate_worst` measures on 32 MiB bodies. The cap is
//! `limits.max_json_values`' default; `TRANSLATE_WORST_CAP=<n>` measures another. See
//! BENCHMARKS.md.

#[path = "translate_worst/bodies.rs"]
mod bodies;

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use droid2api::config::{
    ESCAPES_PER_VALUE, Limits, MAX_BODY_BYTES, Model, ModelKind, ReasoningBudgets, ReasoningLevel,
};
use droid2api::error::ApiError;
use droid2api::proxy::parse_body;
use droid2api::translate::{
    self, Context, Prepared, TranslateError, anthropic_chat, passthrough, responses_chat,
};
use serde_json::Value;

use bodies::{Build, pack};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The body size to fill: just under the cap under `cargo bench`, 1 MiB in test mode.
fn target_size() -> usize {
    if measuring() {
        MAX_BODY_BYTES - 4096
    } else {
        1 << 20
    }
}

/// The value cap: the default of `limits.max_json_values`, or `TRANSLATE_WORST_CAP`; scaled
/// down with the body in test mode.
fn cap() -> u64 {
    let cap = std::env::var("TRANSLATE_WORST_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Limits::default().max_json_values);
    if measuring() { cap } else { cap / 32 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    ChatToAnthropic,
    ChatToResponses,
    CommonChat,
    MessagesPassthrough,
    ResponsesPassthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Chat,
    Messages,
    Responses,
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

    fn format(self) -> Format {
        match self {
            Route::ChatToAnthropic | Route::ChatToResponses | Route::CommonChat => Format::Chat,
            Route::MessagesPassthrough => Format::Messages,
            Route::ResponsesPassthrough => Format::Responses,
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

/// Step 1: `proxy::parse_body` (UTF-8, the pre-scan, whitespace stripping, JSON, object,
/// `model`). Returns the body and its weight.
fn parse(body: &[u8], cap: u64) -> Result<(Value, u64), ApiError> {
    let (value, _model, weight) = parse_body(body, cap)?;
    Ok((value, weight))
}

fn translate(
    route: Route,
    model: &Model,
    value: Value,
    embedded: u64,
) -> Result<Prepared, TranslateError> {
    let ctx = Context {
        system_prompt: PROMPT,
        budgets: ReasoningBudgets::default(),
        embedded_json_values: embedded,
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
fn full(route: Route, model: &Model, body: &[u8], cap: u64) -> Vec<u8> {
    let (value, weight) = parse(body, cap).expect("bench bodies are under the cap");
    let prepared = translate(route, model, value, cap - weight).expect("bench bodies translate");
    translate::encode(&prepared.body)
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    body: Vec<u8>,
    /// Elements of the repeated kind (1 for the huge-string cases).
    n: usize,
}

fn shaped(format: Format) -> Vec<(&'static str, Build)> {
    use bodies::*;
    match format {
        Format::Chat => vec![
            ("tool_calls", chat_tool_calls as Build),
            ("messages", chat_messages),
            ("content_parts", chat_content_parts),
            ("image_parts", chat_image_parts),
            ("deep_schemas", chat_deep_schemas),
            ("numbers", chat_numbers),
        ],
        Format::Messages => vec![
            ("tool_calls", messages_tool_calls as Build),
            ("messages", messages_messages),
            ("content_parts", messages_content_parts),
            ("deep_schemas", messages_deep_schemas),
            ("numbers", messages_numbers),
        ],
        Format::Responses => vec![
            ("tool_calls", responses_tool_calls as Build),
            ("messages", responses_messages),
            ("content_parts", responses_content_parts),
            ("deep_schemas", responses_deep_schemas),
            ("numbers", responses_numbers),
        ],
    }
}

fn cases(format: Format, cap: u64, size: usize) -> Vec<Case> {
    let mut out = Vec::new();
    for (name, build) in shaped(format) {
        let (body, n) = pack(cap, size, build);
        out.push(Case { name, body, n });
    }
    // The tool-calls body at the cap, unpadded, then indented up to the size.
    let tool_calls = shaped(format)[0].1;
    let (compact, n) = pack(cap, size / 8, tool_calls);
    let text = String::from_utf8(compact).expect("UTF-8");
    out.push(Case {
        name: "whitespace",
        body: bodies::whitespace(&text, size).into_bytes(),
        n,
    });
    let huge = match format {
        Format::Chat => bodies::chat_huge,
        Format::Messages => bodies::messages_huge,
        Format::Responses => bodies::responses_huge,
    };
    // Escapes the cap leaves to the string (the rest of the body weighs a few values).
    let max_escapes = usize::try_from(cap.saturating_sub(64) * ESCAPES_PER_VALUE).expect("fits");
    for (name, kind) in [
        ("image_data", "base64"),
        ("huge_tool_result", "plain"),
        ("escaped_tool_result", "escaped"),
        ("non_ascii_tool_result", "non_ascii"),
    ] {
        let body = huge(kind, size, max_escapes).into_bytes();
        assert!(body.len() <= size);
        out.push(Case { name, body, n: 1 });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checks (once, before timing): every body translates, to the expected shape
// ---------------------------------------------------------------------------------------------

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn check(route: Route, case: &Case, cap: u64) {
    let bytes = full(route, &route.model(), &case.body, cap);
    let out: Value = serde_json::from_slice(&bytes).expect("upstream body is JSON");
    let n = case.n;
    let tool_calls = |out: &Value| match route {
        Route::ChatToAnthropic => {
            len(&out["messages"][1]["content"]) == n
                && len(&out["messages"][2]["content"]) == n
                && out["messages"][2]["content"][n - 1]["tool_use_id"] == format!("c{}", n - 1)
        }
        Route::ChatToResponses => len(&out["input"]) == 2 * n + 1,
        Route::CommonChat => len(&out["messages"]) == n + 3,
        Route::MessagesPassthrough => len(&out["messages"][2]["content"]) == n,
        Route::ResponsesPassthrough => len(&out["input"]) == 2 * n,
    };
    let schema_tools = || match route {
        Route::ChatToAnthropic | Route::MessagesPassthrough => &out["tools"][0]["input_schema"],
        Route::ChatToResponses | Route::ResponsesPassthrough => &out["tools"][0]["parameters"],
        Route::CommonChat => &out["tools"][0]["function"]["parameters"],
    };
    let ok = match (route, case.name) {
        (_, "tool_calls" | "whitespace") => tool_calls(&out),
        // Runs of one role merge: two messages per turn.
        (Route::ChatToAnthropic, "messages") => {
            len(&out["messages"]) == n.div_ceil(2)
                && len(&out["messages"][0]["content"]) == 2.min(n)
        }
        (Route::ChatToResponses | Route::ResponsesPassthrough, "messages") => {
            len(&out["input"]) == n
        }
        (Route::CommonChat, "messages") => len(&out["messages"]) == n + 1,
        (Route::MessagesPassthrough, "messages") => len(&out["messages"]) == n,
        (Route::ChatToAnthropic | Route::MessagesPassthrough, "content_parts" | "image_parts") => {
            len(&out["messages"][0]["content"]) == n
        }
        (Route::ChatToResponses | Route::ResponsesPassthrough, "content_parts" | "image_parts") => {
            len(&out["input"][0]["content"]) == n
        }
        (Route::CommonChat, "content_parts" | "image_parts") => {
            len(&out["messages"][1]["content"]) == n
        }
        (_, "deep_schemas") => len(&out["tools"]) == n,
        (_, "numbers") => len(&schema_tools()["enum"]) == n,
        // Escapes decode to fewer bytes; the rest keeps (nearly) every byte.
        (_, "escaped_tool_result") => bytes.len() * 2 >= case.body.len(),
        (_, "image_data" | "huge_tool_result" | "non_ascii_tool_result") => {
            bytes.len() * 10 >= case.body.len() * 9
        }
        _ => false,
    };
    assert!(
        ok && out["model"] == "upstream-model-id",
        "{}/{}: unexpected upstream body",
        route.name(),
        case.name
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn bench_route(c: &mut Criterion<ThreadCpu>, route: Route, cap: u64, size: usize) {
    let model = route.model();
    let mut group = c.benchmark_group(route.name());
    for case in cases(route.format(), cap, size) {
        check(route, &case, cap);
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(full(route, &model, black_box(&case.body), cap)));
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion<ThreadCpu>, cap: u64, size: usize) {
    let mut group = c.benchmark_group("parse_only");
    for case in cases(Format::Chat, cap, size) {
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(parse(black_box(&case.body), cap).expect("under the cap")))
        });
    }
    group.finish();
}

fn bench_rejected(c: &mut Criterion<ThreadCpu>, cap: u64, size: usize) {
    let mut group = c.benchmark_group("rejected");
    for (name, body) in [
        ("values", bodies::over_cap_values(size)),
        ("escapes", bodies::over_cap_escapes(size)),
    ] {
        let body = body.into_bytes();
        let refused = parse(&body, cap).expect_err("over the cap");
        assert_eq!(refused.code, Some("too_many_values"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(parse(black_box(&body), cap).err()))
        });
    }
    group.finish();
}

fn bench_scaling(c: &mut Criterion<ThreadCpu>, cap: u64, size: usize) {
    let mut group = c.benchmark_group("scaling");
    for route in [Route::ChatToAnthropic, Route::ChatToResponses] {
        let model = route.model();
        for (case, build) in &shaped(Format::Chat)[..2] {
            for parts in [8, 4, 2, 1] {
                let (body, _) = pack(cap / parts, size / parts as usize, *build);
                group.throughput(Throughput::Bytes(body.len() as u64));
                let id = BenchmarkId::new(format!("{}_{case}", route.name()), cap / parts);
                group.bench_function(id, |b| {
                    b.iter(|| black_box(full(route, &model, black_box(&body), cap)));
                });
            }
        }
    }
    group.finish();
}

fn worst_cases(c: &mut Criterion<ThreadCpu>) {
    let (cap, size) = (cap(), target_size());
    bench_rejected(c, cap, size);
    for route in [
        Route::ChatToAnthropic,
        Route::ChatToResponses,
        Route::CommonChat,
        Route::MessagesPassthrough,
        Route::ResponsesPassthrough,
    ] {
        bench_route(c, route, cap, size);
    }
    bench_parse(c, cap, size);
    bench_scaling(c, cap, size);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpu)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = worst_cases
}
criterion_main!(benches);
