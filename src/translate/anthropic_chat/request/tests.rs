use serde_json::{Value, json};

use super::*;
use crate::config::{ModelKind, ReasoningBudgets};

const MODEL_ID: &str = "claude-sonnet-4-5-20250929";

fn model(level: ReasoningLevel) -> Model {
    Model {
        id: MODEL_ID.into(),
        name: "claude-sonnet".into(),
        kind: ModelKind::Anthropic,
        reasoning: level,
        provider: None,
        default_max_tokens: 4096,
        max_output_tokens: 64_000,
    }
}

fn ctx(prompt: &'static str) -> Context<'static> {
    Context {
        system_prompt: prompt,
        budgets: ReasoningBudgets::default(),
        embedded_json_values: 200_000,
    }
}

fn prepare(body: Value, level: ReasoningLevel, beta: Option<&str>) -> Prepared {
    chat_to_anthropic(body, &model(level), &ctx(""), beta).unwrap()
}

/// Level auto, no prompt, no beta: the upstream body.
fn translate(body: Value) -> Value {
    prepare(body, ReasoningLevel::Auto, None).body
}

fn fail(body: Value) -> TranslateError {
    chat_to_anthropic(body, &model(ReasoningLevel::Auto), &ctx(""), None).unwrap_err()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn call(id: &str, name: &str, args: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

/// translation.md §1.8, byte for byte (plus the default max_tokens rule).
#[test]
fn worked_example() {
    let body = json!({"model": "claude-sonnet", "max_completion_tokens": 1024, "stream": true,
        "stream_options": {"include_usage": true}, "parallel_tool_calls": false, "tool_choice": "auto",
        "tools": [weather_tool()],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": "", "tool_calls": [
                call("call_1", "get_weather", "{\"city\":\"Paris\"}"),
                call("call_2", "get_weather", "{\"city\":\"Rome\"}")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
            {"role": "user", "content": "Which is warmer?"}]});
    let p = prepare(body, ReasoningLevel::Auto, None);
    let expected = json!({"model": MODEL_ID, "max_tokens": 1024,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"}]}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "stream": true});
    assert_eq!(p.body, expected);
    // The serialized key order is stable too.
    assert_eq!(p.body.to_string(), expected.to_string());
    assert!(p.stream);
    assert_eq!(p.anthropic_beta, None);
    assert!(!p.drop_usage_chunk);
}

#[test]
fn not_an_object_or_no_messages() {
    let e =
        chat_to_anthropic(json!([1]), &model(ReasoningLevel::Auto), &ctx(""), None).unwrap_err();
    assert_eq!(e, TranslateError::new("body", "expected a JSON object"));
    assert_eq!(fail(json!({})).param, "messages");
    assert_eq!(fail(json!({"messages": []})).param, "messages");
    assert_eq!(fail(json!({"messages": "hi"})).param, "messages");
    assert_eq!(
        fail(json!({"messages": [{"role": "robot", "content": "x"}]})),
        TranslateError::new("messages[0].role", "unsupported role `robot`")
    );
    assert_eq!(
        fail(json!({"messages": [user("a"), 3]})).param,
        "messages[1]"
    );
}

/// §1.3: the prompt first without cache_control, then the client's system/developer texts in
/// order (later ones hoisted), empty ones skipped, part cache_control kept.
#[test]
fn system_and_developer_messages() {
    let body = json!({"messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."},
            {"type": "text", "text": "  "},
            {"type": "text", "text": "Cached rules.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": ""},
        user("hi"),
        {"role": "system", "content": "Late rule."},
        {"role": "assistant", "content": "Salut."},
        user("again")]});
    let p = chat_to_anthropic(
        body,
        &model(ReasoningLevel::Auto),
        &ctx("You are Droid."),
        None,
    )
    .unwrap();
    assert_eq!(
        p.body["system"],
        json!([{"type": "text", "text": "You are Droid."},
            {"type": "text", "text": "Be terse."},
            {"type": "text", "text": "Answer in French."},
            {"type": "text", "text": "Cached rules.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Late rule."}])
    );
    assert_eq!(
        p.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Salut."}]},
            {"role": "user", "content": [{"type": "text", "text": "again"}]}])
    );
    // No prompt and no client system: no field at all.
    assert!(
        translate(json!({"messages": [user("hi")]}))
            .get("system")
            .is_none()
    );
    // Only non-text parts are refused in system messages.
    let e = fail(
        json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, user("hi")]}),
    );
    assert_eq!(e.param, "messages[0].content[0].type");
}

/// §7 row 1: empty text never becomes a text block (messages, system, tool results).
#[test]
fn row1_empty_text_is_skipped_everywhere() {
    let body = json!({"tools": [weather_tool()], "messages": [
        {"role": "system", "content": "   "},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": "", "tool_calls": [call("call_1", "get_weather", "{\"city\":\"Oslo\"}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
        {"role": "assistant", "content": null, "tool_calls": [call("call_2", "get_weather", "{\"city\":\"Rome\"}")]},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "24C"}]}]});
    let out = translate(body);
    assert!(out.get("system").is_none());
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "24C"}]}]}])
    );
}

/// §7 row 2: a message left empty is dropped and its neighbours re-merged.
#[test]
fn row2_empty_messages_are_dropped_then_merged() {
    let out = translate(json!({"messages": [
        user("first"),
        {"role": "assistant", "content": "  "},
        {"role": "user", "content": [{"type": "text", "text": "second"}], "name": "bob"},
        {"role": "assistant", "content": "Hi."},
        {"role": "assistant", "content": [{"type": "text", "text": "More."}]},
        user("third")]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}, {"type": "text", "text": "More."}]},
            {"role": "user", "content": [{"type": "text", "text": "third"}]}])
    );
}

/// §7 row 3: consecutive tool messages land in one user message.
#[test]
fn row3_parallel_tool_results_share_one_user_message() {
    let out = translate(json!({"tools": [weather_tool()], "messages": [
        user("Paris, Rome, Oslo?"),
        {"role": "assistant", "tool_calls": [call("a", "get_weather", "{\"city\":\"Paris\"}"),
            call("b", "get_weather", "{\"city\":\"Rome\"}"), call("c", "get_weather", "{\"city\":\"Oslo\"}")]},
        {"role": "tool", "tool_call_id": "a", "content": "18C"},
        {"role": "tool", "tool_call_id": "b", "content": "24C"},
        {"role": "tool", "tool_call_id": "c", "content": "3C"}]}));
    assert_eq!(
        out["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "b", "content": "24C"},
            {"type": "tool_result", "tool_use_id": "c", "content": "3C"}]})
    );
    assert_eq!(out["messages"].as_array().unwrap().len(), 3);
}

/// §7 row 4: tool results first, text after, even when the client put the text first.
#[test]
fn row4_tool_results_come_before_text() {
    let out = translate(json!({"tools": [weather_tool()], "messages": [
        user("Weather?"),
        {"role": "assistant", "content": "Looking.", "tool_calls": [call("a", "get_weather", "{}"), call("b", "get_weather", "{}")]},
        user("Also, hurry."),
        {"role": "tool", "tool_call_id": "a", "content": "18C"},
        {"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/map.png"}]},
        {"role": "tool", "tool_call_id": "b", "content": "24C"}]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "a", "name": "get_weather", "input": {}},
                {"type": "tool_use", "id": "b", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "b", "content": "24C"},
                {"type": "text", "text": "Also, hurry."},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}}]}])
    );
}

/// §7 row 5: unanswered calls and stray results are a clear 400 naming the id.
#[test]
fn row5_tool_pairing_is_validated() {
    let e = fail(json!({"messages": [
        user("go"),
        {"role": "assistant", "tool_calls": [call("call_1", "f", "{}"), call("call_2", "f", "{}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        user("next")]}));
    assert_eq!(
        e,
        TranslateError::new(
            "messages[1].tool_calls[1].id",
            "tool call `call_2` has no tool result in the message right after it"
        )
    );
    let e = fail(json!({"messages": [
        user("go"),
        {"role": "assistant", "tool_calls": [call("call_1", "f", "{}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_9", "content": "??"}]}));
    assert_eq!(
        e,
        TranslateError::new(
            "messages[3].tool_call_id",
            "no tool call with id `call_9` in the assistant message right before this tool result"
        )
    );
    // A call left at the very end is unanswered too.
    let e = fail(
        json!({"messages": [user("go"), {"role": "assistant", "tool_calls": [call("x", "f", "{}")]}]}),
    );
    assert_eq!(e.param, "messages[1].tool_calls[0].id");
    // A result two turns later does not count.
    let e = fail(json!({"messages": [
        user("go"),
        {"role": "assistant", "tool_calls": [call("x", "f", "{}")]},
        user("wait"),
        {"role": "assistant", "content": "ok"},
        {"role": "tool", "tool_call_id": "x", "content": "late"}]}));
    assert_eq!(e.param, "messages[1].tool_calls[0].id");
    // Duplicates.
    let e = fail(json!({"messages": [user("go"),
        {"role": "assistant", "tool_calls": [call("x", "f", "{}"), call("x", "f", "{}")]},
        {"role": "tool", "tool_call_id": "x", "content": "1"}]}));
    assert_eq!(
        e,
        TranslateError::new("messages[1].tool_calls[1].id", "duplicate tool call id `x`")
    );
    let e = fail(json!({"messages": [user("go"),
        {"role": "assistant", "tool_calls": [call("x", "f", "{}")]},
        {"role": "tool", "tool_call_id": "x", "content": "1"},
        {"role": "tool", "tool_call_id": "x", "content": "2"}]}));
    assert_eq!(
        e,
        TranslateError::new(
            "messages[3].tool_call_id",
            "tool call `x` has more than one tool result"
        )
    );
    assert_eq!(
        fail(json!({"messages": [user("go"), {"role": "tool", "content": "1"}]})).param,
        "messages[1].tool_call_id"
    );
}

/// §7 row 6: foreign ids are sanitised the same way on both sides.
#[test]
fn row6_foreign_tool_ids_are_sanitised_consistently() {
    let out = translate(json!({"messages": [
        user("search"),
        {"role": "assistant", "tool_calls": [call("functions.WebSearch:3", "WebSearch", "{\"q\":\"rust\"}"),
            call("call é/1", "WebSearch", "{}")]},
        {"role": "tool", "tool_call_id": "functions.WebSearch:3", "content": "results"},
        {"role": "tool", "tool_call_id": "call é/1", "content": "more"}]}));
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "tool_use", "id": "functions_WebSearch_3", "name": "WebSearch", "input": {"q": "rust"}},
            {"type": "tool_use", "id": "call___1", "name": "WebSearch", "input": {}}])
    );
    assert_eq!(
        out["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "functions_WebSearch_3", "content": "results"},
            {"type": "tool_result", "tool_use_id": "call___1", "content": "more"}])
    );
    let e = fail(
        json!({"messages": [user("x"), {"role": "assistant", "tool_calls": [call("", "f", "{}")]}]}),
    );
    assert_eq!(
        e,
        TranslateError::new("messages[1].tool_calls[0].id", "must not be empty")
    );
}

/// §7 row 9 (request side): `""` arguments become `{}`; bad JSON is a 400 naming the field.
#[test]
fn row9_tool_arguments() {
    let out = translate(json!({"messages": [user("x"),
        {"role": "assistant", "tool_calls": [call("a", "now", ""), call("b", "now", "  \n"),
            {"id": "c", "type": "function", "function": {"name": "now"}},
            {"id": "d", "type": "function", "function": {"name": "now", "arguments": {"tz": "UTC"}}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"}, {"role": "tool", "tool_call_id": "b", "content": "2"},
        {"role": "tool", "tool_call_id": "c", "content": "3"}, {"role": "tool", "tool_call_id": "d", "content": "4"}]}));
    let inputs: Vec<&Value> = out["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["input"])
        .collect();
    assert_eq!(
        inputs,
        [&json!({}), &json!({}), &json!({}), &json!({"tz": "UTC"})]
    );

    let e = fail(
        json!({"messages": [user("x"), user("y"), {"role": "assistant", "tool_calls": [call("a", "f", "{}"), call("b", "f", "{\"city\":")]}]}),
    );
    assert_eq!(e.param, "messages[2].tool_calls[1].function.arguments");
    assert!(e.message.starts_with("is not valid JSON"), "{e}");
    let e = fail(
        json!({"messages": [user("x"), {"role": "assistant", "tool_calls": [call("a", "f", "[1,2]")]}]}),
    );
    assert_eq!(
        e,
        TranslateError::new(
            "messages[1].tool_calls[0].function.arguments",
            "must be a JSON object"
        )
    );
    let e = fail(
        json!({"messages": [user("x"), {"role": "assistant", "tool_calls": [call("a", "", "{}")]}]}),
    );
    assert_eq!(e.param, "messages[1].tool_calls[0].function.name");
}

/// §7 row 16: temperature and top_p are never both sent; temperature is clamped to [0, 1].
#[test]
fn row16_temperature_and_top_p() {
    let out =
        translate(json!({"messages": [user("x")], "temperature": 1.5, "top_p": 0.9, "top_k": 40}));
    assert_eq!(out["temperature"], json!(1.0));
    assert!(out.get("top_p").is_none());
    assert_eq!(out["top_k"], 40);
    let out = translate(json!({"messages": [user("x")], "top_p": 0.9}));
    assert_eq!(out["top_p"], json!(0.9));
    assert!(out.get("temperature").is_none());
    let out = translate(json!({"messages": [user("x")], "temperature": -0.5}));
    assert_eq!(out["temperature"], json!(0.0));
    assert_eq!(
        fail(json!({"messages": [user("x")], "temperature": "hot"})).param,
        "temperature"
    );
}

/// §1.2 max_tokens: max_completion_tokens first, then max_tokens, then the model default;
/// capped by the model; the upstream call always streams, so Anthropic's non-streaming limit
/// of 21,333 never applies.
#[test]
fn max_tokens_rules() {
    let m = |extra: Value| {
        let mut body = json!({"messages": [user("x")]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        translate(body)["max_tokens"].clone()
    };
    assert_eq!(m(json!({})), 4096);
    assert_eq!(m(json!({"max_tokens": 300})), 300);
    assert_eq!(
        m(json!({"max_tokens": 300, "max_completion_tokens": 700})),
        700
    );
    assert_eq!(
        m(json!({"max_completion_tokens": null, "max_tokens": 300})),
        300
    );
    assert_eq!(m(json!({"max_tokens": 50_000})), 50_000);
    assert_eq!(m(json!({"max_tokens": 90_000})), 64_000);
    assert_eq!(m(json!({"max_tokens": 50_000, "stream": true})), 50_000);
    assert_eq!(m(json!({"max_tokens": 90_000, "stream": true})), 64_000);
    assert_eq!(m(json!({"max_tokens": 100.0})), 100);
    assert_eq!(
        fail(json!({"messages": [user("x")], "max_tokens": 0})).param,
        "max_tokens"
    );
    assert_eq!(
        fail(json!({"messages": [user("x")], "max_completion_tokens": -3})).param,
        "max_completion_tokens"
    );
}

/// Fixed levels: the budget from the config through `reasoning::apply_anthropic`, the
/// interleaved beta, sampling dropped, forced tool choice reduced to auto.
#[test]
fn fixed_level_thinking() {
    let body = json!({"messages": [user("x")], "temperature": 0.3, "top_k": 5,
        "tools": [weather_tool()], "tool_choice": "required", "parallel_tool_calls": false,
        "reasoning_effort": "bogus-ignored", "thinking": {"type": "disabled"}});
    let p = prepare(body, ReasoningLevel::Low, Some("a-beta"));
    assert_eq!(p.body["max_tokens"], 8192);
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096})
    );
    assert!(p.body.get("temperature").is_none() && p.body.get("top_k").is_none());
    assert_eq!(
        p.body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        p.anthropic_beta.as_deref(),
        Some("a-beta, interleaved-thinking-2025-05-14")
    );

    // High without a client stream: the call streams upstream and is aggregated, so the
    // whole budget is kept (it used to be cut to 20,309 under a 21,333 cap).
    let p = prepare(
        json!({"messages": [user("x")], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "tools": [weather_tool()]}),
        ReasoningLevel::High,
        None,
    );
    assert_eq!(p.body["max_tokens"], 28_672);
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 24_576})
    );
    assert_eq!(p.body["stream"], true);
    assert!(!p.stream && p.aggregate);
    assert_eq!(p.body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(p.anthropic_beta.as_deref(), Some(INTERLEAVED_THINKING_BETA));

    // Streaming, medium, client asked for plenty.
    let p = prepare(
        json!({"messages": [user("x")], "stream": true, "max_completion_tokens": 30_000, "temperature": 1}),
        ReasoningLevel::Medium,
        None,
    );
    assert_eq!(p.body["max_tokens"], 30_000);
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 12_288})
    );
    assert_eq!(p.body["temperature"], json!(1.0));
}

/// §7 row 19: budget ≥ max_tokens or < 1024 never reaches Anthropic.
#[test]
fn row19_budget_always_below_max_tokens() {
    let mut small = model(ReasoningLevel::High);
    small.max_output_tokens = 2000;
    let p = chat_to_anthropic(
        json!({"messages": [user("x")], "temperature": 0.2}),
        &small,
        &ctx(""),
        None,
    )
    .unwrap();
    // 24576 cannot fit under 2000 with 1024 to spare: thinking is dropped, max_tokens capped.
    assert!(p.body.get("thinking").is_none());
    assert_eq!(p.body["max_tokens"], 2000);
    assert_eq!(p.body["temperature"], json!(0.2));
    assert_eq!(p.anthropic_beta, None);

    small.max_output_tokens = 8000;
    let p = chat_to_anthropic(
        json!({"messages": [user("x")], "max_tokens": 100}),
        &small,
        &ctx(""),
        None,
    )
    .unwrap();
    assert_eq!(p.body["max_tokens"], 8000);
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 6976})
    );

    let p = prepare(
        json!({"messages": [user("x")], "max_tokens": 1000, "reasoning_effort": "low"}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(p.body["max_tokens"], 5096);
    assert_eq!(p.body["thinking"]["budget_tokens"], 4096);
}

#[test]
fn off_level_removes_thinking_and_its_beta() {
    let p = prepare(
        json!({"messages": [user("x")], "thinking": {"type": "enabled", "budget_tokens": 2000}, "reasoning_effort": "high", "temperature": 0.4}),
        ReasoningLevel::Off,
        Some("interleaved-thinking-2025-05-14, other"),
    );
    assert_eq!(
        p.body,
        json!({"model": MODEL_ID, "max_tokens": 4096, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "temperature": 0.4, "stream": true})
    );
    assert_eq!(p.anthropic_beta.as_deref(), Some("other"));
}

/// Level auto follows `reasoning_effort`.
#[test]
fn auto_level_reasoning_effort() {
    let think = |effort: &str, stream: bool| {
        let p = prepare(
            json!({"messages": [user("x")], "reasoning_effort": effort, "stream": stream, "top_p": 0.5}),
            ReasoningLevel::Auto,
            None,
        );
        (
            p.body["max_tokens"].clone(),
            p.body.get("thinking").cloned(),
            p.body.get("top_p").cloned(),
        )
    };
    assert_eq!(think("none", false), (json!(4096), None, Some(json!(0.5))));
    assert_eq!(
        think("minimal", false),
        (
            json!(4096),
            Some(json!({"type": "enabled", "budget_tokens": 1024})),
            None
        )
    );
    assert_eq!(
        think("low", false),
        (
            json!(8192),
            Some(json!({"type": "enabled", "budget_tokens": 4096})),
            None
        )
    );
    assert_eq!(
        think("medium", true),
        (
            json!(16_384),
            Some(json!({"type": "enabled", "budget_tokens": 12_288})),
            None
        )
    );
    assert_eq!(
        think("high", true),
        (
            json!(28_672),
            Some(json!({"type": "enabled", "budget_tokens": 24_576})),
            None
        )
    );
    assert_eq!(
        think("xhigh", true),
        (
            json!(53_248),
            Some(json!({"type": "enabled", "budget_tokens": 49_152})),
            None
        )
    );
    assert_eq!(think("xhigh", false), think("xhigh", true));
    let e = fail(json!({"messages": [user("x")], "reasoning_effort": "max"}));
    assert_eq!(e.param, "reasoning_effort");

    // The client's beta passes through; the interleaved beta is added only with tools.
    let p = prepare(
        json!({"messages": [user("x")], "reasoning_effort": "low"}),
        ReasoningLevel::Auto,
        Some("x-beta"),
    );
    assert_eq!(p.anthropic_beta.as_deref(), Some("x-beta"));
    let p = prepare(
        json!({"messages": [user("x")], "reasoning_effort": "low", "tools": [weather_tool()], "tool_choice": "required"}),
        ReasoningLevel::Auto,
        Some("x-beta"),
    );
    assert_eq!(
        p.anthropic_beta.as_deref(),
        Some("x-beta, interleaved-thinking-2025-05-14")
    );
    assert_eq!(p.body["tool_choice"], json!({"type": "auto"}));
    let p = prepare(
        json!({"messages": [user("x")], "reasoning_effort": "none", "tools": [weather_tool()]}),
        ReasoningLevel::Auto,
        Some("x-beta"),
    );
    assert_eq!(p.anthropic_beta.as_deref(), Some("x-beta"));
    let p = prepare(
        json!({"messages": [user("x")], "tools": [weather_tool()]}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(p.anthropic_beta, None);
}

/// Level auto without `reasoning_effort`: a client `thinking` object is copied as-is.
#[test]
fn auto_level_copies_client_thinking() {
    let p = prepare(
        json!({"messages": [user("x")], "max_tokens": 9000, "thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 0.1, "tools": [weather_tool()]}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(p.body["max_tokens"], 9000);
    assert!(p.body.get("temperature").is_none());
    assert_eq!(p.anthropic_beta.as_deref(), Some(INTERLEAVED_THINKING_BETA));
    let p = prepare(
        json!({"messages": [user("x")], "thinking": {"type": "adaptive"}}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(
        (&p.body["thinking"], &p.body["max_tokens"]),
        (&json!({"type": "adaptive"}), &json!(4096))
    );
    let p = prepare(
        json!({"messages": [user("x")], "max_tokens": 90_000, "thinking": {"type": "enabled", "budget_tokens": 2048}}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(p.body["max_tokens"], 64_000);
    let p = prepare(
        json!({"messages": [user("x")], "thinking": {"type": "disabled"}, "temperature": 0.1}),
        ReasoningLevel::Auto,
        None,
    );
    assert_eq!(p.body["thinking"], json!({"type": "disabled"}));
    assert_eq!(p.body["temperature"], json!(0.1));
    // reasoning_effort wins over a thinking object.
    let p = prepare(
        json!({"messages": [user("x")], "reasoning_effort": "none", "thinking": {"type": "enabled", "budget_tokens": 2048}}),
        ReasoningLevel::Auto,
        None,
    );
    assert!(p.body.get("thinking").is_none());
}

/// §7 row 17 / §5.5: thinking blocks are replayed unchanged and first; without them on the
/// last tool-using assistant turn, thinking is dropped for the request.
#[test]
fn row17_thinking_blocks_replay() {
    let blocks = json!([{"type": "thinking", "thinking": "Need weather.", "signature": "EqQBsig"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"}]);
    let history = |with_blocks: bool| {
        let mut assistant = json!({"role": "assistant", "content": "Checking.", "tool_calls": [call("toolu_1", "get_weather", "{\"city\":\"Paris\"}")]});
        if with_blocks {
            assistant["thinking_blocks"] = blocks.clone();
        }
        json!({"stream": true, "tools": [weather_tool()], "temperature": 0.5, "messages": [user("Weather?"), assistant,
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}]})
    };
    let p = prepare(history(true), ReasoningLevel::Medium, None);
    assert_eq!(
        p.body["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need weather.", "signature": "EqQBsig"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]})
    );
    assert_eq!(
        p.body["thinking"],
        json!({"type": "enabled", "budget_tokens": 12_288})
    );
    assert_eq!(p.anthropic_beta.as_deref(), Some(INTERLEAVED_THINKING_BETA));

    // Missing blocks: thinking off, its beta not added, max_tokens and sampling as without it.
    let p = prepare(history(false), ReasoningLevel::Medium, Some("other"));
    assert!(p.body.get("thinking").is_none());
    assert_eq!(p.body["max_tokens"], 4096);
    assert_eq!(p.body["temperature"], json!(0.5));
    assert_eq!(p.anthropic_beta.as_deref(), Some("other"));
    let mut auto = history(false);
    auto["reasoning_effort"] = json!("high");
    let p = prepare(auto, ReasoningLevel::Auto, None);
    assert!(p.body.get("thinking").is_none());
    assert_eq!(p.anthropic_beta, None);
    let mut copied = history(false);
    copied["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    assert!(
        prepare(copied, ReasoningLevel::Auto, None)
            .body
            .get("thinking")
            .is_none()
    );

    // Only the last tool-using assistant turn matters.
    let mut later = history(true);
    later["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "Paris is 18C."}),
        user("And Rome?"),
    ]);
    assert!(
        prepare(later.clone(), ReasoningLevel::Low, None)
            .body
            .get("thinking")
            .is_some()
    );
    later["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "tool_calls": [call("toolu_2", "get_weather", "{\"city\":\"Rome\"}")]}),
        json!({"role": "tool", "tool_call_id": "toolu_2", "content": "24C"}),
    ]);
    assert!(
        prepare(later, ReasoningLevel::Low, None)
            .body
            .get("thinking")
            .is_none()
    );

    let e = fail(
        json!({"messages": [user("x"), {"role": "assistant", "content": "a", "thinking_blocks": [{"type": "text", "text": "no"}]}]}),
    );
    assert_eq!(e.param, "messages[1].thinking_blocks[0]");
}

/// §7 row 18: a final assistant prefill loses its trailing whitespace (and thinking, §5.2).
#[test]
fn row18_prefill_trailing_whitespace() {
    let out = translate(
        json!({"messages": [user("Write JSON."), {"role": "assistant", "content": [{"type": "text", "text": "  {\"a\": "}, {"type": "text", "text": "\n\n"}]}]}),
    );
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "content": [{"type": "text", "text": "  {\"a\":"}]})
    );
    let out = translate(
        json!({"messages": [user("Go."), {"role": "assistant", "content": "Sure thing \n"}]}),
    );
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "text", "text": "Sure thing"}])
    );
    // Earlier assistant turns keep their whitespace.
    let out = translate(
        json!({"messages": [user("a"), {"role": "assistant", "content": "b \n"}, user("c")]}),
    );
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "text", "text": "b \n"}])
    );
    // A prefill cannot go with thinking: thinking is dropped.
    let p = prepare(
        json!({"messages": [user("Go."), {"role": "assistant", "content": "Sure"}]}),
        ReasoningLevel::High,
        None,
    );
    assert!(p.body.get("thinking").is_none());
    assert_eq!(p.anthropic_beta, None);
}

#[test]
fn first_message_must_be_user() {
    for messages in [
        json!([{"role": "assistant", "content": "hi"}, user("x")]),
        json!([{"role": "system", "content": "s"}]),
        json!([{"role": "user", "content": ""}, {"role": "assistant", "content": "hi"}]),
    ] {
        let e = fail(json!({"messages": messages}));
        assert_eq!(
            e.to_string(),
            "messages: the first non-system message must be from the user"
        );
    }
}

#[test]
fn image_file_and_audio_parts() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}, "cache_control": {"type": "ephemeral"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}, "cache_control": {"type": "ephemeral"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}])
    );
    let part = |p: Value| {
        fail(
            json!({"messages": [user("a"), {"role": "assistant", "content": "b"}, {"role": "user", "content": [{"type": "text", "text": "look"}, p]}]}),
        )
    };
    let e = part(json!({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}));
    assert_eq!(e.param, "messages[2].content[1].image_url");
    assert!(e.message.contains("image/bmp"), "{e}");
    assert_eq!(
        part(json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}})).param,
        "messages[2].content[1].image_url"
    );
    assert_eq!(
        part(json!({"type": "image_url", "image_url": {"url": "data:image/png,rawdata"}})).param,
        "messages[2].content[1].image_url"
    );
    assert_eq!(
        part(json!({"type": "image_url", "image_url": {}})).param,
        "messages[2].content[1].image_url.url"
    );
    assert_eq!(
        part(json!({"type": "file", "file": {"file_id": "file-abc"}})).param,
        "messages[2].content[1].file.file_id"
    );
    assert_eq!(
        part(json!({"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}})).param,
        "messages[2].content[1].file.file_data"
    );
    let e = part(json!({"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}));
    assert_eq!(
        e,
        TranslateError::new(
            "messages[2].content[1]",
            "audio input is not supported for Claude models"
        )
    );
    assert_eq!(
        part(json!({"type": "video"})).param,
        "messages[2].content[1].type"
    );

    // Images inside tool results (LiteLLM converts them too); refusal parts become text.
    let out = translate(json!({"messages": [user("x"),
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}], "tool_calls": [call("a", "shot", "{}")]},
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "screen:"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}]}));
    assert_eq!(
        out["messages"][1]["content"][0],
        json!({"type": "text", "text": "I can't."})
    );
    assert_eq!(
        out["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "screen:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}])
    );
}

#[test]
fn unsupported_request_fields() {
    assert_eq!(fail(json!({"messages": [user("x")], "n": 2})).param, "n");
    assert_eq!(
        translate(json!({"messages": [user("x")], "n": 1}))["messages"][0]["role"],
        "user"
    );
    assert_eq!(
        fail(json!({"messages": [user("x")], "audio": {"voice": "alloy", "format": "mp3"}})).param,
        "audio"
    );
    assert_eq!(
        fail(json!({"messages": [user("x")], "modalities": ["text", "audio"]})).param,
        "modalities"
    );
    assert!(
        translate(json!({"messages": [user("x")], "modalities": ["text"]}))
            .get("modalities")
            .is_none()
    );
}

/// §1.2 drops: OpenAI-only fields never reach Anthropic; the upstream call always streams
/// (`aggregate` says whether the client's answer is assembled), stream_options is dropped.
#[test]
fn dropped_fields_and_stream_flag() {
    let out = translate(
        json!({"model": "alias", "messages": [user("x")], "stream": false,
        "stream_options": {"include_usage": true}, "metadata": {"tag": "a"}, "presence_penalty": 1,
        "frequency_penalty": 1, "logit_bias": {"1": 2}, "logprobs": true, "top_logprobs": 2, "seed": 7,
        "store": true, "service_tier": "auto", "prediction": {}, "web_search_options": {}}),
    );
    assert_eq!(
        out,
        json!({"model": MODEL_ID, "max_tokens": 4096, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "stream": true})
    );
    assert_eq!(translate(json!({"messages": [user("x")]}))["stream"], true);
    let p = prepare(json!({"messages": [user("x")]}), ReasoningLevel::Auto, None);
    assert!(!p.stream && p.aggregate);
    let p = prepare(
        json!({"messages": [user("x")], "stream": true}),
        ReasoningLevel::Auto,
        None,
    );
    assert!(p.stream && !p.aggregate);
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([
        {"type": "function", "function": {"name": "now", "description": "Current time", "strict": true}},
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}, "cache_control": {"type": "ephemeral"}},
        {"name": "native", "description": "already Anthropic", "input_schema": {"type": "object"}}]);
    let out = translate(json!({"messages": [user("x")], "tools": tools}));
    assert_eq!(
        out["tools"],
        json!([{"name": "now", "description": "Current time", "input_schema": {"type": "object", "properties": {}}},
            {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}, "cache_control": {"type": "ephemeral"}},
            {"name": "native", "description": "already Anthropic", "input_schema": {"type": "object"}}])
    );
    assert!(out.get("tool_choice").is_none());

    let choice = |c: Value, parallel: Value| {
        let mut body = json!({"messages": [user("x")], "tools": [weather_tool()]});
        if !c.is_null() {
            body["tool_choice"] = c;
        }
        if !parallel.is_null() {
            body["parallel_tool_calls"] = parallel;
        }
        translate(body).get("tool_choice").cloned()
    };
    assert_eq!(
        choice(json!("auto"), Value::Null),
        Some(json!({"type": "auto"}))
    );
    assert_eq!(
        choice(json!("none"), Value::Null),
        Some(json!({"type": "none"}))
    );
    assert_eq!(
        choice(json!("required"), Value::Null),
        Some(json!({"type": "any"}))
    );
    assert_eq!(
        choice(
            json!({"type": "function", "function": {"name": "get_weather"}}),
            Value::Null
        ),
        Some(json!({"type": "tool", "name": "get_weather"}))
    );
    assert_eq!(
        choice(Value::Null, json!(false)),
        Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
    );
    assert_eq!(
        choice(json!("required"), json!(false)),
        Some(json!({"type": "any", "disable_parallel_tool_use": true}))
    );
    assert_eq!(
        choice(json!("none"), json!(false)),
        Some(json!({"type": "none"}))
    );
    assert_eq!(choice(Value::Null, json!(true)), None);
    assert_eq!(choice(Value::Null, Value::Null), None);

    // No tools: tool_choice and parallel_tool_calls are not sent.
    let out = translate(
        json!({"messages": [user("x")], "tools": [], "tool_choice": "required", "parallel_tool_calls": false}),
    );
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());

    assert_eq!(
        fail(
            json!({"messages": [user("x")], "tools": [weather_tool()], "tool_choice": "sometimes"})
        )
        .param,
        "tool_choice"
    );
    assert_eq!(fail(json!({"messages": [user("x")], "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {}}})).param, "tool_choice.function.name");
    assert_eq!(fail(json!({"messages": [user("x")], "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]})).param, "tools[0].function.parameters");
    assert_eq!(
        fail(json!({"messages": [user("x")], "tools": [{"type": "code_interpreter"}]})).param,
        "tools[0].type"
    );
}

/// Legacy `functions`, `function_call` and `role: "function"`.
#[test]
fn legacy_functions() {
    let out = translate(
        json!({"functions": [{"name": "now", "parameters": {"type": "object", "properties": {}}}],
        "function_call": {"name": "now"},
        "messages": [user("time?"),
            {"role": "assistant", "content": null, "function_call": {"name": "now", "arguments": ""}},
            {"role": "function", "name": "now", "content": "12:00"}]}),
    );
    assert_eq!(
        out["tools"],
        json!([{"name": "now", "input_schema": {"type": "object", "properties": {}}}])
    );
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "now"}));
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "time?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "function_call_1", "name": "now", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "function_call_1", "content": "12:00"}]}])
    );
    let e =
        fail(json!({"messages": [user("x"), {"role": "function", "name": "now", "content": "1"}]}));
    assert_eq!(e.param, "messages[1]");
}

#[test]
fn stop_sequences() {
    let s = |stop: Value| {
        translate(json!({"messages": [user("x")], "stop": stop}))
            .get("stop_sequences")
            .cloned()
    };
    assert_eq!(s(json!("END")), Some(json!(["END"])));
    assert_eq!(
        s(json!(["END", " ", "\n", "###"])),
        Some(json!(["END", "###"]))
    );
    assert_eq!(s(json!(["  "])), None);
    assert_eq!(s(json!(null)), None);
    assert_eq!(
        fail(json!({"messages": [user("x")], "stop": ["a", 3]})).param,
        "stop[1]"
    );
}

#[test]
fn user_becomes_metadata_unless_personal() {
    let m = |u: &str| {
        translate(json!({"messages": [user("x")], "user": u}))
            .get("metadata")
            .cloned()
    };
    assert_eq!(m("user-8f2c41"), Some(json!({"user_id": "user-8f2c41"})));
    assert_eq!(
        m("4c7f1e2a-9b3d-4e5f-8a6b-1c2d3e4f5a6b"),
        Some(json!({"user_id": "4c7f1e2a-9b3d-4e5f-8a6b-1c2d3e4f5a6b"}))
    );
    assert_eq!(m("jane.doe@example.com"), None);
    assert_eq!(m("+1 (555) 123-4567"), None);
    assert_eq!(m("0612345678"), None);
    assert_eq!(m(""), None);
}

#[test]
fn response_format() {
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let out = translate(
        json!({"messages": [user("x")], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": true}}}),
    );
    assert_eq!(
        out["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    assert!(out.get("system").is_none());

    let p = chat_to_anthropic(
        json!({"messages": [{"role": "system", "content": "Be terse."}, user("x")], "response_format": {"type": "json_object"}}),
        &model(ReasoningLevel::Auto),
        &ctx("P"),
        None,
    )
    .unwrap();
    assert_eq!(
        p.body["system"],
        json!([{"type": "text", "text": "P"}, {"type": "text", "text": "Be terse."}, {"type": "text", "text": JSON_OBJECT_INSTRUCTION}])
    );
    assert!(p.body.get("output_config").is_none());

    let out = translate(json!({"messages": [user("x")], "response_format": {"type": "text"}}));
    assert!(out.get("output_config").is_none() && out.get("system").is_none());
    assert_eq!(
        fail(json!({"messages": [user("x")], "response_format": {"type": "yaml"}})).param,
        "response_format.type"
    );
    assert_eq!(fail(json!({"messages": [user("x")], "response_format": {"type": "json_schema", "json_schema": {"name": "r"}}})).param, "response_format.json_schema.schema");
}

/// Everything at once: the serialized key order.
#[test]
fn body_key_order() {
    let p = prepare(
        json!({"stream": true, "user": "u1", "stop": "X", "top_k": 3, "temperature": 0.5, "tool_choice": "auto",
            "tools": [weather_tool()], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
            "messages": [{"role": "system", "content": "S"}, user("x")], "max_tokens": 100}),
        ReasoningLevel::Auto,
        None,
    );
    let keys: Vec<&String> = p.body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "model",
            "max_tokens",
            "system",
            "messages",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "top_k",
            "metadata",
            "output_config",
            "stream"
        ]
    );
}

/// A large adversarial conversation: 100,000 parallel tool calls in one assistant message and
/// their 100,000 results, in reverse order. Pairing is checked with hash sets; were it
/// quadratic (10^10 id comparisons), this test would take more than five minutes instead of
/// seconds (measured with the old pairing code).
#[test]
fn a_hundred_thousand_tool_calls_pair_up_in_linear_time() {
    const N: usize = 100_000;
    let calls: Vec<Value> = (0..N)
        .map(|i| call(&format!("call.{i}"), "f", ""))
        .collect();
    let mut messages = vec![
        user("go"),
        json!({"role": "assistant", "tool_calls": calls}),
    ];
    messages.extend((0..N).rev().map(|i| {
        json!({"role": "tool", "tool_call_id": format!("call.{i}"), "content": format!("r{i}")})
    }));
    let out = translate(json!({"messages": messages.clone()}));
    let turns = out["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    let uses = turns[1]["content"].as_array().unwrap();
    let results = turns[2]["content"].as_array().unwrap();
    assert_eq!((uses.len(), results.len()), (N, N));
    assert_eq!(
        uses[N - 1],
        json!({"type": "tool_use", "id": format!("call_{}", N - 1), "name": "f", "input": {}})
    );
    assert_eq!(
        results[0],
        json!({"type": "tool_result", "tool_use_id": format!("call_{}", N - 1), "content": format!("r{}", N - 1)})
    );
    assert_eq!(
        results[N - 1],
        json!({"type": "tool_result", "tool_use_id": "call_0", "content": "r0"})
    );

    // The same size with one duplicate result at the very end is still found and named.
    let mut dup = messages.clone();
    dup.push(json!({"role": "tool", "tool_call_id": "call.7", "content": "again"}));
    assert_eq!(
        fail(json!({"messages": dup})),
        TranslateError::new(
            format!("messages[{}].tool_call_id", N + 2),
            "tool call `call_7` has more than one tool result"
        )
    );
    // And a duplicate call id at the very end of the calls.
    let mut calls: Vec<Value> = (0..N).map(|i| call(&format!("c{i}"), "f", "{}")).collect();
    calls.push(call("c0", "f", "{}"));
    assert_eq!(
        fail(json!({"messages": [user("go"), {"role": "assistant", "tool_calls": calls}]})),
        TranslateError::new(
            format!("messages[1].tool_calls[{N}].id"),
            "duplicate tool call id `c0`"
        )
    );
}

/// Tool-call arguments parsed into `input` spend the values `limits.max_json_values` left
/// after the body, less the one value each arguments string was counted as.
#[test]
fn argument_values_count_against_the_embedded_budget() {
    let body = |args: [&str; 2]| {
        json!({"model": "claude-sonnet", "messages": [user("go"),
            {"role": "assistant", "tool_calls": [call("a", "f", args[0]), call("b", "f", args[1])]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}]})
    };
    let with_budget = |budget: u64, args: [&str; 2]| {
        let c = Context {
            embedded_json_values: budget,
            ..ctx("")
        };
        chat_to_anthropic(body(args), &model(ReasoningLevel::Auto), &c, None)
    };
    // `{}` replaces its string: nothing left is needed.
    let p = with_budget(0, ["{}", " {} "]).unwrap();
    assert_eq!(p.body["messages"][1]["content"][1]["input"], json!({}));
    // `{"x":[1,2]}` is four values: three more than its string.
    assert!(with_budget(3, [r#"{"x":[1,2]}"#, "{}"]).is_ok());
    assert!(with_budget(6, [r#"{"x":[1,2]}"#, r#"{"y":[3,4]}"#]).is_ok());
    let e = with_budget(5, [r#"{"x":[1,2]}"#, r#"{"y":[3,4]}"#]).unwrap_err();
    assert_eq!(
        (e.param.as_str(), e.code),
        (
            "messages[1].tool_calls[1].function.arguments",
            Some("too_many_values")
        )
    );
    assert!(
        e.message.contains("limits.max_json_values"),
        "{}",
        e.message
    );
    // Checked before parsing: over the budget and invalid is still too many values.
    let e = with_budget(1, ["[1,2,3", "{}"]).unwrap_err();
    assert_eq!(e.code, Some("too_many_values"));
}
