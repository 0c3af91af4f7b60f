use super::*;
use crate::config::{ModelKind, ReasoningBudgets};

const PROMPT: &str = "You are Droid.\n\n";

fn model(reasoning: ReasoningLevel) -> Model {
    Model {
        id: "gpt-5-2025-08-07".into(),
        name: "GPT-5".into(),
        kind: ModelKind::OpenAi,
        reasoning,
        provider: None,
        default_max_tokens: 4096,
        max_output_tokens: 128_000,
    }
}

fn ctx(system_prompt: &str) -> Context<'_> {
    Context {
        system_prompt,
        budgets: ReasoningBudgets::default(),
        embedded_json_values: 200_000,
    }
}

fn convert(body: Value) -> Value {
    chat_to_responses(body, &model(ReasoningLevel::Auto), &ctx(PROMPT))
        .unwrap()
        .body
}

fn convert_with(body: Value, level: ReasoningLevel, prompt: &str) -> Value {
    chat_to_responses(body, &model(level), &ctx(prompt))
        .unwrap()
        .body
}

fn error(body: Value) -> TranslateError {
    chat_to_responses(body, &model(ReasoningLevel::Auto), &ctx(PROMPT)).unwrap_err()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn worked_example() {
    let prepared = chat_to_responses(
        json!({
            "model": "gpt-client-name",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 800,
            "reasoning_effort": "low",
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "auto",
            "stop": ["\n\n"],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.1,
            "logit_bias": {"50256": -100},
            "seed": 7,
            "logprobs": false,
            "top_logprobs": null,
            "n": 1
        }),
        &model(ReasoningLevel::Auto),
        &ctx(""),
    )
    .unwrap();
    assert!(prepared.stream);
    assert_eq!(prepared.anthropic_beta, None);
    assert!(!prepared.drop_usage_chunk);
    assert_eq!(
        prepared.body,
        json!({"model":"gpt-5-2025-08-07","instructions":"You are terse.",
         "input":[
          {"type":"message","role":"user","content":[{"type":"input_text","text":"Weather in Paris?"},
             {"type":"input_image","image_url":"data:image/png;base64,iVBO","detail":"low"}]},
          {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
          {"type":"function_call_output","call_id":"call_1","output":"18C sunny"}],
         // The model reasons: its reasoning comes back encrypted (§4.4).
         "store":false,"include":["reasoning.encrypted_content"],"stream":true,"max_output_tokens":800,
         "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":false}],
         "tool_choice":"auto",
         "reasoning":{"effort":"low","summary":"auto"}})
    );
}

#[test]
fn instructions_join_prompt_and_every_system_and_developer_text() {
    let body = convert(json!({"messages": [
        {"role": "system", "content": "Be brief."},
        user("hi"),
        {"role": "developer", "content": [{"type": "text", "text": "Use "}, {"type": "text", "text": "metric units."}]},
        {"role": "system", "content": "  "},
        {"role": "system", "content": null},
        {"role": "system", "content": "Answer in French."}
    ]}));
    assert_eq!(
        body["instructions"],
        "You are Droid.\n\nBe brief.\n\nUse metric units.\n\nAnswer in French."
    );
    assert_eq!(
        body["input"],
        json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}])
    );
    // Prompt only.
    let body = convert(json!({"messages": [user("hi")]}));
    assert_eq!(body["instructions"], PROMPT);
    // Client only.
    let body = convert_with(
        json!({"messages": [{"role": "developer", "content": "Dev."}, user("hi")]}),
        ReasoningLevel::Auto,
        "",
    );
    assert_eq!(body["instructions"], "Dev.");
    // Neither: omitted.
    let body = convert_with(json!({"messages": [user("hi")]}), ReasoningLevel::Auto, "");
    assert!(body.get("instructions").is_none());
    // Non-text parts in a system message are refused.
    let e = error(
        json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
    );
    assert_eq!(e.param, "messages[0].content[0].type");
}

#[test]
fn output_body_shape_and_key_order() {
    let body = convert(json!({"model": "x", "messages": [user("hi")],
        "temperature": 0.2, "top_p": 0.9, "user": "u-1", "metadata": {"k": "v"},
        "parallel_tool_calls": false, "stream": false, "stream_options": null,
        "prompt_cache_key": "pck", "safety_identifier": "sid"}));
    assert_eq!(
        body.to_string(),
        json!({"model":"gpt-5-2025-08-07","instructions":PROMPT,
            "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],
            "store":false,"stream":true,"temperature":0.2,"top_p":0.9,"parallel_tool_calls":false,
            "user":"u-1","metadata":{"k":"v"},"prompt_cache_key":"pck","safety_identifier":"sid"})
        .to_string()
    );
    // No stream flag from the client: the call streams upstream all the same and Prepared
    // says the client's answer is assembled (aggregate), not streamed.
    let p = chat_to_responses(
        json!({"messages": [user("hi")]}),
        &model(ReasoningLevel::Auto),
        &ctx(""),
    )
    .unwrap();
    assert!(!p.stream && p.aggregate);
    assert_eq!(
        p.body,
        json!({"model":"gpt-5-2025-08-07","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"store":false,"stream":true})
    );
}

#[test]
fn max_output_tokens_is_clamped() {
    // §7 row 22: below 16 is rejected upstream.
    let b = convert(json!({"messages": [user("hi")], "max_tokens": 5}));
    assert_eq!(b["max_output_tokens"], 16);
    let b = convert(json!({"messages": [user("hi")], "max_completion_tokens": 0}));
    assert_eq!(b["max_output_tokens"], 16);
    // Capped by the model.
    let b = convert(json!({"messages": [user("hi")], "max_tokens": 1_000_000}));
    assert_eq!(b["max_output_tokens"], 128_000);
    // max_completion_tokens wins; an integral float is fine.
    let b = convert(
        json!({"messages": [user("hi")], "max_completion_tokens": 2000.0, "max_tokens": 50}),
    );
    assert_eq!(b["max_output_tokens"], 2000);
    let b =
        convert(json!({"messages": [user("hi")], "max_completion_tokens": null, "max_tokens": 50}));
    assert_eq!(b["max_output_tokens"], 50);
    // Neither: omitted.
    let b = convert(json!({"messages": [user("hi")]}));
    assert!(b.get("max_output_tokens").is_none());
    for bad in [json!(-1), json!("100"), json!(1.5)] {
        let e = error(json!({"messages": [user("hi")], "max_tokens": bad}));
        assert_eq!(e.param, "max_tokens");
    }
    let e = error(json!({"messages": [user("hi")], "max_completion_tokens": "x"}));
    assert_eq!(e.param, "max_completion_tokens");
}

#[test]
fn tools_are_flattened_with_explicit_strict() {
    // §7 row 23: `strict` is always sent.
    let b = convert(json!({"messages": [user("hi")], "tools": [
        {"type": "function", "function": {"name": "a", "description": "A.", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}},
        {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}, "strict": true}},
        {"type": "function", "function": {"name": "c", "strict": null}}
    ]}));
    assert_eq!(
        b["tools"],
        json!([
            {"type":"function","name":"a","description":"A.","parameters":{"type":"object","properties":{"x":{"type":"number"}}},"strict":false},
            {"type":"function","name":"b","parameters":{"type":"object","properties":{},"additionalProperties":false},"strict":true},
            {"type":"function","name":"c","parameters":{"type":"object","properties":{}},"strict":false}
        ])
    );
    let e = error(json!({"messages": [user("hi")], "tools": [
        {"type": "function", "function": {"name": "a"}},
        {"type": "custom", "custom": {"name": "grammar"}}
    ]}));
    assert_eq!(e.param, "tools[1].type");
    assert!(e.message.contains("custom"), "{e}");
    let e = error(
        json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"description": "no name"}}]}),
    );
    assert_eq!(e.param, "tools[0].function.name");
    let e = error(
        json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": "a", "strict": "yes"}}]}),
    );
    assert_eq!(e.param, "tools[0].function.strict");
    let e = error(json!({"messages": [user("hi")], "tools": {}}));
    assert_eq!(e.param, "tools");
    // An empty list is not sent.
    let b = convert(json!({"messages": [user("hi")], "tools": []}));
    assert!(b.get("tools").is_none());
}

#[test]
fn tool_choice_forms() {
    for s in ["auto", "none", "required"] {
        let b = convert(json!({"messages": [user("hi")], "tool_choice": s}));
        assert_eq!(b["tool_choice"], s);
    }
    let b = convert(json!({"messages": [user("hi")],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}));
    assert_eq!(
        b["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );
    let b = convert(json!({"messages": [user("hi")],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
            "tools": [{"type": "function", "function": {"name": "a"}}]}}}));
    assert_eq!(
        b["tool_choice"],
        json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]})
    );
    let e = error(
        json!({"messages": [user("hi")], "tool_choice": {"type": "function", "function": {}}}),
    );
    assert_eq!(e.param, "tool_choice.function.name");
    let e = error(json!({"messages": [user("hi")], "tool_choice": {"type": "custom"}}));
    assert_eq!(e.param, "tool_choice.type");
    let e = error(json!({"messages": [user("hi")], "tool_choice": 3}));
    assert_eq!(e.param, "tool_choice");
}

#[test]
fn response_format_is_flattened_into_text_format() {
    // §7 row 24.
    let b = convert(json!({"messages": [user("hi")], "verbosity": "low",
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "weather", "description": "A report.", "strict": true,
            "schema": {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": false}}}}));
    assert_eq!(
        b["text"],
        json!({"format": {"type": "json_schema", "name": "weather",
            "schema": {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": false},
            "strict": true, "description": "A report."}, "verbosity": "low"})
    );
    let b = convert(json!({"messages": [user("hi")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}}));
    assert_eq!(
        b["text"],
        json!({"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": false}})
    );
    let b = convert(json!({"messages": [user("hi")], "response_format": {"type": "json_object"}}));
    assert_eq!(b["text"], json!({"format": {"type": "json_object"}}));
    let b = convert(json!({"messages": [user("hi")], "response_format": {"type": "text"}}));
    assert!(b.get("text").is_none());
    let b = convert(json!({"messages": [user("hi")], "verbosity": "high"}));
    assert_eq!(b["text"], json!({"verbosity": "high"}));
    let e = error(
        json!({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
    );
    assert_eq!(e.param, "response_format.json_schema.name");
    let e = error(
        json!({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"name": "w"}}}),
    );
    assert_eq!(e.param, "response_format.json_schema.schema");
    let e = error(json!({"messages": [user("hi")], "response_format": {"type": "grammar"}}));
    assert_eq!(e.param, "response_format.type");
}

#[test]
fn reasoning_levels() {
    let req = || json!({"messages": [user("hi")], "reasoning_effort": "minimal"});
    // Auto: the client's value as-is, any string.
    assert_eq!(
        convert(req())["reasoning"],
        json!({"effort": "minimal", "summary": "auto"})
    );
    let b = convert(json!({"messages": [user("hi")], "reasoning_effort": "none"}));
    assert_eq!(b["reasoning"], json!({"effort": "none", "summary": "auto"}));
    assert!(
        convert(json!({"messages": [user("hi")]}))
            .get("reasoning")
            .is_none()
    );
    assert!(
        convert(json!({"messages": [user("hi")], "reasoning_effort": null}))
            .get("reasoning")
            .is_none()
    );
    let e = error(json!({"messages": [user("hi")], "reasoning_effort": 3}));
    assert_eq!(e.param, "reasoning_effort");
    // Fixed levels win over the client.
    for (level, effort) in [
        (ReasoningLevel::Low, "low"),
        (ReasoningLevel::Medium, "medium"),
        (ReasoningLevel::High, "high"),
    ] {
        let b = convert_with(req(), level, "");
        assert_eq!(b["reasoning"], json!({"effort": effort, "summary": "auto"}));
    }
    assert!(
        convert_with(req(), ReasoningLevel::Off, "")
            .get("reasoning")
            .is_none()
    );
}

#[test]
fn unsupported_fields_are_refused() {
    let e = error(json!({"messages": [user("hi")], "n": 2}));
    assert_eq!(e.param, "n");
    let e = error(json!({"messages": [user("hi")], "audio": {"voice": "alloy", "format": "wav"}}));
    assert_eq!(e.param, "audio");
    let e = error(json!({"messages": [user("hi")], "modalities": ["text", "audio"]}));
    assert_eq!(e.param, "modalities");
    // n = 1, audio null and text-only modalities are fine (and not forwarded).
    let b =
        convert(json!({"messages": [user("hi")], "n": 1, "audio": null, "modalities": ["text"]}));
    for key in ["n", "audio", "modalities"] {
        assert!(b.get(key).is_none(), "{key}");
    }
}

#[test]
fn user_parts() {
    let b = convert(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look:"},
        {"type": "text", "text": ""},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": "https://example.com/b.png"},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "file", "file": {"file_id": "file-123"}}
    ]}]}));
    assert_eq!(
        b["input"],
        json!([{"type":"message","role":"user","content":[
            {"type":"input_text","text":"Look:"},
            {"type":"input_image","image_url":"https://example.com/a.png","detail":"auto"},
            {"type":"input_image","image_url":"https://example.com/b.png","detail":"auto"},
            {"type":"input_file","file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"},
            {"type":"input_file","file_id":"file-123"}]}])
    );
    // A user message with nothing left is dropped.
    let b = convert(json!({"messages": [{"role": "user", "content": ""}, user("hi")]}));
    assert_eq!(b["input"].as_array().unwrap().len(), 1);
    let e = error(
        json!({"messages": [user("a"), {"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]}),
    );
    assert_eq!(e.param, "messages[1].content[0].image_url.url");
    let e = error(
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
    );
    assert_eq!(e.param, "messages[0].content[0].type");
    let e = error(
        json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "x"}}]}]}),
    );
    assert_eq!(e.param, "messages[0].content[0].file");
    let e = error(json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}));
    assert_eq!(e.param, "messages[0].content[0].text");
    let e = error(json!({"messages": [{"role": "user", "content": 5}]}));
    assert_eq!(e.param, "messages[0].content");
}

#[test]
fn assistant_turns_and_tool_results() {
    let b = convert(json!({"messages": [
        user("weather in Paris and Rome?"),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "18C "}, {"type": "text", "text": "sunny"}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
        {"role": "assistant", "content": [{"type": "text", "text": "Paris: 18C."}, {"type": "refusal", "refusal": "No Rome."}]},
        {"role": "assistant", "content": "   "},
        {"role": "assistant", "content": null, "refusal": "I can't."}
    ]}));
    assert_eq!(
        b["input"],
        json!([
            {"type":"message","role":"user","content":[{"type":"input_text","text":"weather in Paris and Rome?"}]},
            {"type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call","call_id":"call_b","name":"get_time","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_a","output":"18C sunny"},
            {"type":"function_call_output","call_id":"call_b","output":"12:00"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Paris: 18C."},{"type":"refusal","refusal":"No Rome."}]},
            {"type":"message","role":"assistant","content":[{"type":"refusal","refusal":"I can't."}]}
        ])
    );
    // No invented `fc_` ids anywhere.
    assert!(!b.to_string().contains("\"id\""));
    // Assistant text comes before its calls.
    let b = convert(
        json!({"messages": [{"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]}),
    );
    assert_eq!(
        b["input"],
        json!([
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
            {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"a\":1}"}
        ])
    );
    let e = error(
        json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
    );
    assert_eq!(e.param, "messages[0].tool_calls[0].id");
    let e = error(
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]}),
    );
    assert_eq!(e.param, "messages[0].tool_calls[0].function.name");
    let e = error(
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]}),
    );
    assert_eq!(e.param, "messages[0].tool_calls[0].type");
    let e = error(json!({"messages": [user("a"), {"role": "tool", "content": "x"}]}));
    assert_eq!(e.param, "messages[1].tool_call_id");
}

#[test]
fn malformed_requests_name_the_field() {
    let e = error(json!([1]));
    assert_eq!(e.param, "body");
    let e = error(json!({}));
    assert_eq!(e.param, "messages");
    let e = error(json!({"messages": "hi"}));
    assert_eq!(e.param, "messages");
    let e = error(json!({"messages": [user("a"), 3]}));
    assert_eq!(e.param, "messages[1]");
    let e = error(json!({"messages": [user("a"), {"content": "x"}]}));
    assert_eq!(e.param, "messages[1].role");
    let e =
        error(json!({"messages": [user("a"), {"role": "function", "name": "f", "content": "x"}]}));
    assert_eq!(e.param, "messages[1].role");
    let e = error(json!({"messages": [user("a")], "stream": "yes"}));
    assert_eq!(e.param, "stream");
}

// ---------------------------------------------------------------------------------------------
// The reasoning round trip (§4.4)
// ---------------------------------------------------------------------------------------------

mod round_trip {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::translate::responses_chat::Turn;

    fn rs(id: &str) -> Value {
        json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": "Plan."}], "encrypted_content": format!("enc-{id}")})
    }

    fn fc(id: &str, call_id: &str) -> Value {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": "f", "arguments": "{}"})
    }

    /// A cache of turns built from response outputs, keyed by every call_id.
    fn cache(outputs: Vec<Vec<Value>>) -> HashMap<String, Arc<Turn>> {
        let mut map = HashMap::new();
        for output in outputs {
            let turn = Arc::new(
                Turn::from_response(&json!({"status": "completed", "output": output})).unwrap(),
            );
            for id in turn.call_ids() {
                map.insert(id.clone(), Arc::clone(&turn));
            }
        }
        map
    }

    fn call(id: &str, args: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "f", "arguments": args}})
    }

    fn run(
        body: Value,
        level: ReasoningLevel,
        turns: &HashMap<String, Arc<Turn>>,
    ) -> (Value, Vec<String>, bool) {
        let lookup = |id: &str| turns.get(id).cloned();
        let r = chat_to_responses_with(body, &model(level), &ctx(""), Some(&lookup)).unwrap();
        (r.prepared.body, r.reinserted, r.encrypted_reasoning)
    }

    fn tool_conversation(effort: Option<&str>) -> Value {
        let mut body = json!({"model": "gpt", "messages": [
            user("Weather?"),
            {"role": "assistant", "content": null, "tool_calls": [call("call_a", "{\"city\":\"Paris\"}")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"}
        ]});
        if let Some(e) = effort {
            body["reasoning_effort"] = json!(e);
        }
        body
    }

    #[test]
    fn include_is_added_when_the_model_reasons_merged_without_duplicates() {
        let none = HashMap::new();
        for (level, effort, expected) in [
            (ReasoningLevel::High, None, true),
            (ReasoningLevel::Low, None, true),
            (ReasoningLevel::Auto, Some("medium"), true),
            (ReasoningLevel::Auto, Some("none"), false),
            (ReasoningLevel::Auto, None, false),
            (ReasoningLevel::Off, Some("high"), false),
        ] {
            let (body, _, reasons) = run(tool_conversation(effort), level, &none);
            assert_eq!(reasons, expected, "{level:?} {effort:?}");
            assert_eq!(body["store"], json!(false));
            if expected {
                assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
            } else {
                assert!(body.get("include").is_none(), "{level:?} {effort:?}");
            }
        }
        // A client's include is kept, ours added once.
        let mut b = tool_conversation(Some("low"));
        b["include"] = json!([
            "message.output_text.logprobs",
            "reasoning.encrypted_content"
        ]);
        let (body, _, _) = run(b, ReasoningLevel::Auto, &none);
        assert_eq!(
            body["include"],
            json!([
                "message.output_text.logprobs",
                "reasoning.encrypted_content"
            ])
        );
        let mut b = tool_conversation(Some("low"));
        b["include"] = json!(["message.output_text.logprobs"]);
        let (body, _, _) = run(b, ReasoningLevel::Auto, &none);
        assert_eq!(
            body["include"],
            json!([
                "message.output_text.logprobs",
                "reasoning.encrypted_content"
            ])
        );
        // Without reasoning the client's include passes alone.
        let mut b = tool_conversation(None);
        b["include"] = json!(["message.output_text.logprobs"]);
        let (body, _, _) = run(b, ReasoningLevel::Off, &none);
        assert_eq!(body["include"], json!(["message.output_text.logprobs"]));
    }

    #[test]
    fn a_bad_include_is_refused_naming_it() {
        for bad in [json!("reasoning.encrypted_content"), json!([1]), json!({})] {
            let mut b = tool_conversation(None);
            b["include"] = bad;
            let e = error(b);
            assert_eq!(e.param, "include");
            assert_eq!(e.message, "expected an array of strings");
        }
    }

    #[test]
    fn one_turn_is_re_inserted_in_its_original_order() {
        let turns = cache(vec![vec![
            rs("rs_1"),
            json!({"type": "message", "id": "msg_1", "role": "assistant", "content": []}),
            fc("fc_1", "call_a"),
        ]]);
        let mut b = tool_conversation(None);
        b["messages"][1]["content"] = json!("Checking.");
        let (body, reinserted, _) = run(b, ReasoningLevel::Medium, &turns);
        assert_eq!(reinserted, ["call_a"]);
        assert_eq!(
            body["input"],
            json!([
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                rs("rs_1"),
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                // The client's arguments, the turn's item id.
                {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "f", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "18C"}
            ])
        );
    }

    #[test]
    fn several_turns_are_each_re_inserted() {
        let turns = cache(vec![
            vec![rs("rs_1"), fc("fc_1", "call_a")],
            vec![rs("rs_2"), rs("rs_3"), fc("fc_2", "call_b")],
        ]);
        let body = json!({"model": "gpt", "messages": [
            user("Go"),
            {"role": "assistant", "content": "First.", "tool_calls": [call("call_a", "{}")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "1"},
            {"role": "assistant", "tool_calls": [call("call_b", "{\"n\":2}")]},
            {"role": "tool", "tool_call_id": "call_b", "content": "2"}
        ]});
        let (body, reinserted, _) = run(body, ReasoningLevel::High, &turns);
        assert_eq!(reinserted, ["call_a", "call_b"]);
        let items: Vec<Value> = body["input"].as_array().unwrap().clone();
        let kinds: Vec<(&str, &str)> = items
            .iter()
            .map(|i| {
                (
                    i["type"].as_str().unwrap(),
                    i["id"].as_str().or(i["call_id"].as_str()).unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("message", ""),
                // The turn had no message item: the client's text comes first.
                ("message", ""),
                ("reasoning", "rs_1"),
                ("function_call", "fc_1"),
                ("function_call_output", "call_a"),
                ("reasoning", "rs_2"),
                ("reasoning", "rs_3"),
                ("function_call", "fc_2"),
                ("function_call_output", "call_b"),
            ]
        );
        assert_eq!(items[5]["encrypted_content"], "enc-rs_2");
        assert_eq!(items[7]["arguments"], "{\"n\":2}");
    }

    #[test]
    fn parallel_calls_share_one_reasoning_item_in_the_turns_order() {
        let turns = cache(vec![vec![
            rs("rs_1"),
            fc("fc_1", "call_a"),
            fc("fc_2", "call_b"),
        ]]);
        // The client lists the calls in another order: the turn's order wins.
        let body = json!({"model": "gpt", "messages": [
            user("Go"),
            {"role": "assistant", "tool_calls": [call("call_b", "{\"b\":1}"), call("call_a", "{\"a\":1}")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_b", "content": "B"}
        ]});
        let (body, reinserted, _) = run(body, ReasoningLevel::High, &turns);
        assert_eq!(reinserted, ["call_a", "call_b"]);
        assert_eq!(
            body["input"].as_array().unwrap()[1..4],
            [
                rs("rs_1"),
                json!({"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "f", "arguments": "{\"a\":1}"}),
                json!({"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "f", "arguments": "{\"b\":1}"}),
            ]
        );
    }

    #[test]
    fn a_partial_hit_inserts_nothing_for_that_turn() {
        let fresh = |id: &str, args: &str| json!({"type": "function_call", "call_id": id, "name": "f", "arguments": args});
        // The turn made two calls; the client sends back one of them.
        let turns = cache(vec![vec![
            rs("rs_1"),
            fc("fc_1", "call_a"),
            fc("fc_2", "call_b"),
        ]]);
        let body = json!({"model": "gpt", "messages": [
            user("Go"),
            {"role": "assistant", "tool_calls": [call("call_a", "{}")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"}
        ]});
        let (out, reinserted, _) = run(body, ReasoningLevel::High, &turns);
        assert!(reinserted.is_empty());
        assert_eq!(out["input"][1], fresh("call_a", "{}"));
        // One call is cached, the other is not.
        let turns = cache(vec![vec![rs("rs_1"), fc("fc_1", "call_a")]]);
        let body = json!({"model": "gpt", "messages": [
            user("Go"),
            {"role": "assistant", "tool_calls": [call("call_a", "{}"), call("call_x", "{}")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_x", "content": "X"}
        ]});
        let (out, reinserted, _) = run(body, ReasoningLevel::High, &turns);
        assert!(reinserted.is_empty());
        assert_eq!(out["input"][1], fresh("call_a", "{}"));
        assert_eq!(out["input"][2], fresh("call_x", "{}"));
        // Two calls from two different turns in one message.
        let turns = cache(vec![
            vec![rs("rs_1"), fc("fc_1", "call_a")],
            vec![rs("rs_2"), fc("fc_2", "call_b")],
        ]);
        let body = json!({"model": "gpt", "messages": [
            user("Go"),
            {"role": "assistant", "tool_calls": [call("call_a", "{}"), call("call_b", "{}")]},
        ]});
        let (out, reinserted, _) = run(body, ReasoningLevel::High, &turns);
        assert!(reinserted.is_empty());
        assert!(!out["input"].to_string().contains("\"reasoning\""));
    }

    #[test]
    fn a_model_without_reasoning_gets_no_include_and_nothing_inserted() {
        let turns = cache(vec![vec![rs("rs_1"), fc("fc_1", "call_a")]]);
        for (level, effort) in [
            (ReasoningLevel::Off, Some("high")),
            (ReasoningLevel::Auto, None),
            (ReasoningLevel::Auto, Some("none")),
        ] {
            let (body, reinserted, reasons) = run(tool_conversation(effort), level, &turns);
            assert!(!reasons && reinserted.is_empty());
            assert!(body.get("include").is_none());
            assert_eq!(
                body["input"][1],
                json!({"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{\"city\":\"Paris\"}"})
            );
        }
        // The plain translator never looks anything up.
        let b = chat_to_responses(
            tool_conversation(None),
            &model(ReasoningLevel::High),
            &ctx(""),
        )
        .unwrap()
        .body;
        assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
        assert!(b["input"][1].get("id").is_none());
    }
}
