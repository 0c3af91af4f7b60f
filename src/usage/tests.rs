use super::*;
use crate::sse::encode;
use serde_json::json;

/// Anthropic Messages stream in the shape of translation.md §3.4 (thinking, text, tool use),
/// with prompt-cache counts, a `ping` and the cumulative `message_delta` usage.
const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":1024,\"cache_read_input_tokens\":1800,\"cache_creation\":{\"ephemeral_5m_input_tokens\":1024,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":2,\"service_tier\":\"standard\"}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n",
    "\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"User wants the weather in Paris; 先查一下。\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCkgIARABGAIiQL2Q\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking 🌍 \"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"你好.\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"get_weather\",\"input\":{}}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n",
    "\n",
);

/// OpenAI Responses stream in the order of translation.md §4.3: reasoning summary, message
/// text, a function call, then `response.completed` carrying the only usage.
const RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_68af3c1e\",\"object\":\"response\",\"created_at\":1756315678,\"status\":\"in_progress\",\"model\":\"gpt-5-2025-08-07\",\"output\":[],\"usage\":null}}\n",
    "\n",
    "event: response.in_progress\n",
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_68af3c1e\",\"object\":\"response\",\"created_at\":1756315678,\"status\":\"in_progress\",\"model\":\"gpt-5-2025-08-07\",\"output\":[],\"usage\":null}}\n",
    "\n",
    "event: response.output_item.added\n",
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"rs_68af3c1f\",\"type\":\"reasoning\",\"summary\":[]}}\n",
    "\n",
    "event: response.reasoning_summary_part.added\n",
    "data: {\"type\":\"response.reasoning_summary_part.added\",\"sequence_number\":3,\"item_id\":\"rs_68af3c1f\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n",
    "\n",
    "event: response.reasoning_summary_text.delta\n",
    "data: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":4,\"item_id\":\"rs_68af3c1f\",\"output_index\":0,\"summary_index\":0,\"delta\":\"**Checking the weather**\"}\n",
    "\n",
    "event: response.reasoning_summary_text.done\n",
    "data: {\"type\":\"response.reasoning_summary_text.done\",\"sequence_number\":5,\"item_id\":\"rs_68af3c1f\",\"output_index\":0,\"summary_index\":0,\"text\":\"**Checking the weather**\"}\n",
    "\n",
    "event: response.output_item.done\n",
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":0,\"item\":{\"id\":\"rs_68af3c1f\",\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"**Checking the weather**\"}]}}\n",
    "\n",
    "event: response.output_item.added\n",
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":7,\"output_index\":1,\"item\":{\"id\":\"msg_68af3c20\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n",
    "\n",
    "event: response.content_part.added\n",
    "data: {\"type\":\"response.content_part.added\",\"sequence_number\":8,\"item_id\":\"msg_68af3c20\",\"output_index\":1,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"\"}}\n",
    "\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":9,\"item_id\":\"msg_68af3c20\",\"output_index\":1,\"content_index\":0,\"delta\":\"Let me check \",\"logprobs\":[]}\n",
    "\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":10,\"item_id\":\"msg_68af3c20\",\"output_index\":1,\"content_index\":0,\"delta\":\"巴黎 🌦.\",\"logprobs\":[]}\n",
    "\n",
    "event: response.output_text.done\n",
    "data: {\"type\":\"response.output_text.done\",\"sequence_number\":11,\"item_id\":\"msg_68af3c20\",\"output_index\":1,\"content_index\":0,\"text\":\"Let me check 巴黎 🌦.\",\"logprobs\":[]}\n",
    "\n",
    "event: response.content_part.done\n",
    "data: {\"type\":\"response.content_part.done\",\"sequence_number\":12,\"item_id\":\"msg_68af3c20\",\"output_index\":1,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"Let me check 巴黎 🌦.\"}}\n",
    "\n",
    "event: response.output_item.done\n",
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":13,\"output_index\":1,\"item\":{\"id\":\"msg_68af3c20\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"text\":\"Let me check 巴黎 🌦.\"}],\"role\":\"assistant\"}}\n",
    "\n",
    "event: response.output_item.added\n",
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":14,\"output_index\":2,\"item\":{\"id\":\"fc_68af3c21\",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_Qx7bN2\",\"name\":\"get_weather\"}}\n",
    "\n",
    "event: response.function_call_arguments.delta\n",
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":15,\"item_id\":\"fc_68af3c21\",\"output_index\":2,\"delta\":\"{\\\"city\\\":\"}\n",
    "\n",
    "event: response.function_call_arguments.delta\n",
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":16,\"item_id\":\"fc_68af3c21\",\"output_index\":2,\"delta\":\"\\\"Paris\\\"}\"}\n",
    "\n",
    "event: response.function_call_arguments.done\n",
    "data: {\"type\":\"response.function_call_arguments.done\",\"sequence_number\":17,\"item_id\":\"fc_68af3c21\",\"output_index\":2,\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}\n",
    "\n",
    "event: response.output_item.done\n",
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":18,\"output_index\":2,\"item\":{\"id\":\"fc_68af3c21\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\",\"call_id\":\"call_Qx7bN2\",\"name\":\"get_weather\"}}\n",
    "\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"sequence_number\":19,\"response\":{\"id\":\"resp_68af3c1e\",\"object\":\"response\",\"created_at\":1756315678,\"status\":\"completed\",\"model\":\"gpt-5-2025-08-07\",\"output\":[],\"usage\":{\"input_tokens\":2006,\"input_tokens_details\":{\"cached_tokens\":1920},\"output_tokens\":312,\"output_tokens_details\":{\"reasoning_tokens\":256},\"total_tokens\":2318}}}\n",
    "\n",
);

/// OpenAI Chat stream with `stream_options.include_usage` (translation.md §3.3): `usage:null`
/// on ordinary chunks, a finish chunk, the `choices:[]` usage chunk, then `[DONE]`.
const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"你好\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"🌍! Checking.\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_Qx7bN2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-C9x2\",\"object\":\"chat.completion.chunk\",\"created\":1756315700,\"model\":\"gpt-4.1-2025-04-14\",\"system_fingerprint\":\"fp_b3f1157249\",\"choices\":[],\"usage\":{\"prompt_tokens\":1450,\"completion_tokens\":96,\"total_tokens\":1546,\"prompt_tokens_details\":{\"cached_tokens\":1280,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":64,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n",
    "\n",
    "data: [DONE]\n",
    "\n",
);

fn tap_pieces<'a>(format: WireFormat, pieces: impl IntoIterator<Item = &'a [u8]>) -> SseTap {
    let mut tap = SseTap::new(format);
    for piece in pieces {
        tap.feed(piece);
    }
    tap.finish();
    tap
}

fn tap(format: WireFormat, text: &str) -> UsageSniffer {
    tap_pieces(format, [text.as_bytes()]).into_sniffer()
}

/// A stream cut right before the first line that contains `marker`.
fn cut_before<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text.find(marker).unwrap();
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    &text[..line_start]
}

/// The observable state of a sniffer, for comparisons and snapshots.
fn state(s: &UsageSniffer) -> Value {
    json!({
        "usage": s.usage(),
        "saw_usage": s.saw_usage(),
        "saw_output_usage": s.saw_output_usage(),
        "completed": s.completed(),
        "errored": s.errored(),
        "finish_reason": s.finish_reason(),
        "streamed_text_chars": s.streamed_text_chars(),
    })
}

fn usage(input: u64, cache_read: u64, cache_write: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        output_tokens: output,
        reasoning_tokens: reasoning,
    }
}

fn sniff(format: WireFormat, events: &[(Option<&str>, Value)]) -> UsageSniffer {
    let mut text = String::new();
    for (name, data) in events {
        text.push_str(&encode(*name, &data.to_string()));
    }
    tap(format, &text)
}

#[test]
fn total_tokens_and_serialized_shape() {
    let u = usage(10, 20, 30, 40, 5);
    assert_eq!(u.total_tokens(), 100);
    assert_eq!(
        serde_json::to_string(&u).unwrap(),
        r#"{"input_tokens":10,"cache_read_tokens":20,"cache_write_tokens":30,"output_tokens":40,"reasoning_tokens":5,"total_tokens":100}"#
    );
    assert_eq!(usage(u64::MAX, 1, 0, 0, 0).total_tokens(), u64::MAX);
}

#[test]
fn anthropic_stream() {
    let s = tap(WireFormat::Anthropic, ANTHROPIC_STREAM);
    assert_eq!(s.usage(), usage(472, 1800, 1024, 89, 0));
    assert!(s.saw_usage() && s.saw_output_usage() && s.completed() && !s.errored());
    assert_eq!(s.finish_reason(), Some("tool_use"));
    let text = "User wants the weather in Paris; 先查一下。Checking 🌍 你好.{\"city\":\"Paris\"}";
    assert_eq!(s.streamed_text_chars(), text.chars().count() as u64);
}

#[test]
fn anthropic_stream_cut_short_keeps_what_was_seen() {
    let s = tap(
        WireFormat::Anthropic,
        cut_before(ANTHROPIC_STREAM, "\"message_delta\""),
    );
    // message_start's counts are kept, including its placeholder output count.
    assert_eq!(s.usage(), usage(472, 1800, 1024, 2, 0));
    assert!(s.saw_usage());
    assert!(
        !s.saw_output_usage(),
        "message_start's output is a placeholder"
    );
    assert!(!s.completed() && !s.errored());
    assert!(s.streamed_text_chars() > 0);

    let s = tap(
        WireFormat::Anthropic,
        cut_before(ANTHROPIC_STREAM, "\"message_stop\""),
    );
    assert_eq!(s.usage().output_tokens, 89);
    assert!(s.saw_output_usage() && !s.completed());
}

#[test]
fn anthropic_message_delta_is_cumulative_and_replaces() {
    let s = sniff(
        WireFormat::Anthropic,
        &[
            (
                Some("message_start"),
                json!({"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}),
            ),
            (
                Some("message_delta"),
                json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":89}}),
            ),
        ],
    );
    assert_eq!(s.usage(), usage(25, 0, 0, 89, 0), "89, not 90");

    // Input/cache fields present in message_delta replace too; absent ones are kept.
    let s = sniff(
        WireFormat::Anthropic,
        &[
            (
                None,
                json!({"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":7,"cache_creation_input_tokens":3,"output_tokens":1}}}),
            ),
            (
                None,
                json!({"type":"message_delta","usage":{"input_tokens":30,"cache_read_input_tokens":9,"output_tokens":12}}),
            ),
            (
                None,
                json!({"type":"message_delta","usage":{"output_tokens":40,"cache_creation_input_tokens":null}}),
            ),
            (None, json!({"type":"message_stop"})),
        ],
    );
    assert_eq!(s.usage(), usage(30, 9, 3, 40, 0));
    assert!(s.completed());
}

#[test]
fn anthropic_dispatch_falls_back_to_event_name() {
    let s = sniff(
        WireFormat::Anthropic,
        &[
            (
                Some("message_start"),
                json!({"message":{"usage":{"input_tokens":5}}}),
            ),
            (Some("message_delta"), json!({"usage":{"output_tokens":6}})),
            (Some("message_stop"), json!({})),
        ],
    );
    assert_eq!(s.usage(), usage(5, 0, 0, 6, 0));
    assert!(s.completed());
    // The JSON `type` wins over the SSE event name.
    let s = sniff(
        WireFormat::Anthropic,
        &[(Some("message_stop"), json!({"type":"ping"}))],
    );
    assert!(!s.completed());
}

#[test]
fn anthropic_error_event() {
    let text = format!(
        "{}{}",
        cut_before(ANTHROPIC_STREAM, "\"message_delta\""),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    );
    let s = tap(WireFormat::Anthropic, &text);
    assert!(s.errored() && !s.completed());
    assert_eq!(s.usage().input_tokens, 472);
    // An `error` event whose data is not JSON still counts as an error.
    let s = tap(
        WireFormat::Anthropic,
        "event: error\ndata: upstream timed out\n\n",
    );
    assert!(s.errored());
}

#[test]
fn anthropic_body() {
    let body = json!({"id":"msg_01X","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
        "stop_reason":"tool_use","content":[{"type":"text","text":"Checking."}],
        "usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":95}});
    let u = from_json(WireFormat::Anthropic, &body).unwrap();
    assert_eq!(u, usage(20, 1800, 0, 95, 0));
    assert_eq!(u.total_tokens(), 1915);
    assert_eq!(
        from_json(WireFormat::Anthropic, &json!({"type":"message"})),
        None
    );
    assert_eq!(
        from_json(WireFormat::Anthropic, &json!({"usage":null})),
        None
    );
    assert_eq!(
        from_json(WireFormat::Anthropic, &json!({"usage":{}})),
        Some(Usage::default())
    );
}

#[test]
fn responses_stream() {
    let s = tap(WireFormat::Responses, RESPONSES_STREAM);
    assert_eq!(s.usage(), usage(86, 1920, 0, 312, 256));
    assert_eq!(s.usage().total_tokens(), 2318);
    assert!(s.saw_usage() && s.saw_output_usage() && s.completed() && !s.errored());
    assert_eq!(s.finish_reason(), Some("completed"));
    let text = "**Checking the weather**Let me check 巴黎 🌦.{\"city\":\"Paris\"}";
    assert_eq!(s.streamed_text_chars(), text.chars().count() as u64);
}

#[test]
fn responses_stream_cut_short() {
    let s = tap(
        WireFormat::Responses,
        cut_before(RESPONSES_STREAM, "\"response.completed\""),
    );
    assert_eq!(s.usage(), Usage::default());
    assert!(!s.saw_usage() && !s.saw_output_usage() && !s.completed() && !s.errored());
    assert!(s.streamed_text_chars() > 0);
    assert_eq!(s.finish_reason(), None);
}

#[test]
fn responses_incomplete_and_failed_are_terminal() {
    let s = sniff(
        WireFormat::Responses,
        &[(
            Some("response.incomplete"),
            json!({"type":"response.incomplete","response":{"status":"incomplete",
                "incomplete_details":{"reason":"max_output_tokens"},
                "usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":0},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":16}}}}),
        )],
    );
    assert_eq!(s.usage(), usage(100, 0, 0, 16, 16));
    assert!(s.completed() && !s.errored());
    assert_eq!(s.finish_reason(), Some("incomplete"));

    let s = sniff(
        WireFormat::Responses,
        &[(
            Some("response.failed"),
            json!({"type":"response.failed","response":{"status":"failed",
                "error":{"code":"server_error","message":"boom"},"usage":null}}),
        )],
    );
    assert!(s.completed() && s.errored() && !s.saw_usage());

    let s = sniff(
        WireFormat::Responses,
        &[(
            Some("error"),
            json!({"type":"error","code":"rate_limit_exceeded","message":"slow down","sequence_number":3}),
        )],
    );
    assert!(s.errored() && !s.completed());
}

#[test]
fn responses_cached_tokens_are_subtracted() {
    let body = json!({"id":"resp_1","object":"response","status":"completed","output":[],
        "usage":{"input_tokens":5000,"input_tokens_details":{"cached_tokens":4096},
                 "output_tokens":700,"output_tokens_details":{"reasoning_tokens":512},"total_tokens":5700}});
    let u = from_json(WireFormat::Responses, &body).unwrap();
    assert_eq!(u, usage(904, 4096, 0, 700, 512));
    assert_eq!(u.total_tokens(), 5700);
    // Saturating: a broken upstream reporting more cached than input does not wrap.
    let body = json!({"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":64},"output_tokens":1}});
    assert_eq!(
        from_json(WireFormat::Responses, &body).unwrap(),
        usage(0, 64, 0, 1, 0)
    );
    // Missing details.
    let body = json!({"usage":{"input_tokens":10,"output_tokens":2}});
    assert_eq!(
        from_json(WireFormat::Responses, &body).unwrap(),
        usage(10, 0, 0, 2, 0)
    );
}

#[test]
fn chat_stream() {
    let s = tap(WireFormat::Chat, CHAT_STREAM);
    assert_eq!(s.usage(), usage(170, 1280, 0, 96, 64));
    assert_eq!(s.usage().total_tokens(), 1546);
    assert!(s.saw_usage() && s.saw_output_usage() && s.completed() && !s.errored());
    assert_eq!(s.finish_reason(), Some("tool_calls"));
    let text = "你好🌍! Checking.{\"city\":\"Paris\"}";
    assert_eq!(s.streamed_text_chars(), text.chars().count() as u64);
}

#[test]
fn chat_finish_reason_is_not_terminal_done_is() {
    let s = tap(
        WireFormat::Chat,
        cut_before(CHAT_STREAM, "\"choices\":[],\"usage\""),
    );
    assert_eq!(s.finish_reason(), Some("tool_calls"));
    assert!(!s.completed() && !s.saw_usage() && !s.saw_output_usage());
    assert_eq!(s.usage(), Usage::default());

    let s = tap(WireFormat::Chat, cut_before(CHAT_STREAM, "[DONE]"));
    assert!(!s.completed());
    assert_eq!(s.usage().output_tokens, 96, "what was seen is kept");
}

#[test]
fn chat_last_usage_wins_and_cache_write_extension() {
    let s = sniff(
        WireFormat::Chat,
        &[
            (
                None,
                json!({"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":10,"completion_tokens":1}}),
            ),
            (
                None,
                json!({"choices":[{"index":0,"delta":{"reasoning_content":"abc","reasoning":"abc"}}],"usage":null}),
            ),
            (
                None,
                json!({"choices":[{"index":0,"delta":{"reasoning":"de"},"finish_reason":"stop"}]}),
            ),
            (
                None,
                json!({"choices":[],"usage":{"prompt_tokens":2100,"completion_tokens":30,
                "prompt_tokens_details":{"cached_tokens":1500},"cache_creation_input_tokens":400,
                "completion_tokens_details":null}}),
            ),
        ],
    );
    assert_eq!(s.usage(), usage(200, 1500, 400, 30, 0));
    assert_eq!(s.streamed_text_chars(), 1 + 3 + 2);
    assert!(!s.completed());
}

#[test]
fn chat_error_chunk() {
    let s = tap(
        WireFormat::Chat,
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n",
    );
    assert!(s.errored() && !s.completed());
    let s = tap(
        WireFormat::Chat,
        "data: {\"choices\":[],\"error\":null}\n\n",
    );
    assert!(!s.errored());
}

#[test]
fn chat_body() {
    let body = json!({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4.1",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1820,"completion_tokens":95,"total_tokens":1915,
                 "prompt_tokens_details":{"cached_tokens":1800},
                 "completion_tokens_details":{"reasoning_tokens":40}}});
    let u = from_json(WireFormat::Chat, &body).unwrap();
    assert_eq!(u, usage(20, 1800, 0, 95, 40));
    assert_eq!(u.total_tokens(), 1915);
    let litellm = json!({"usage":{"prompt_tokens":1000,"completion_tokens":5,
        "prompt_tokens_details":{"cached_tokens":600},"cache_creation_input_tokens":300}});
    assert_eq!(
        from_json(WireFormat::Chat, &litellm).unwrap(),
        usage(100, 600, 300, 5, 0)
    );
}

#[test]
fn malformed_and_odd_input_is_ignored() {
    for format in [
        WireFormat::Anthropic,
        WireFormat::Responses,
        WireFormat::Chat,
    ] {
        let text = concat!(
            "data: {not json\n\n",
            "data: [1,2,3]\n\n",
            "data: \"string\"\n\n",
            "data: 42\n\n",
            "data: \n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":\"lots\"}\n\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":-5,\"output_tokens\":\"7\"}}}\n\n",
            "data: {\"type\":\"response.completed\",\"response\":[]}\n\n",
            "data: {\"choices\":{\"0\":1},\"usage\":[]}\n\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":5}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":null}],\"content\":null}}]}\n\n",
        );
        let s = tap(format, text);
        assert_eq!(s.usage(), Usage::default(), "{format:?}");
        assert!(!s.saw_output_usage() && !s.errored(), "{format:?}");
        assert_eq!(s.streamed_text_chars(), 0, "{format:?}");
    }
    // `[DONE]` is terminal for Chat only.
    assert!(!tap(WireFormat::Anthropic, "data: [DONE]\n\n").completed());
    assert!(tap(WireFormat::Chat, "data: [DONE]\n\n").completed());
}

#[test]
fn absurd_counts_are_clamped_and_sums_saturate() {
    let body = json!({"usage": {
        "input_tokens": u64::MAX,
        "cache_read_input_tokens": 1e30,
        "cache_creation_input_tokens": -5,
        "output_tokens": 2.5e12
    }});
    let u = from_json(WireFormat::Anthropic, &body).unwrap();
    assert_eq!(u, usage(MAX_TOKENS, MAX_TOKENS, 0, MAX_TOKENS, 0));
    assert_eq!(u.total_tokens(), 3 * MAX_TOKENS);
    // Streams too: a cumulative Anthropic delta and a Responses terminal event.
    let s = sniff(
        WireFormat::Anthropic,
        &[(
            None,
            json!({"type": "message_delta", "usage": {"output_tokens": 18446744073709551615u64}}),
        )],
    );
    assert_eq!(s.usage().output_tokens, MAX_TOKENS);
    let body = json!({"usage": {"input_tokens": 1e300, "output_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3e15}}});
    let u = from_json(WireFormat::Responses, &body).unwrap();
    assert_eq!((u.input_tokens, u.cache_read_tokens), (0, MAX_TOKENS));

    let max = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
    assert_eq!(max.saturating_add(&max), max);
    assert_eq!(max.input_side_tokens(), u64::MAX);
    assert_eq!(
        max.clamped(),
        usage(MAX_TOKENS, MAX_TOKENS, MAX_TOKENS, MAX_TOKENS, MAX_TOKENS)
    );
    assert_eq!(
        usage(1, 2, 3, 4, 5).saturating_add(&usage(10, 20, 30, 40, 50)),
        usage(11, 22, 33, 44, 55)
    );
}

#[test]
fn float_counts_are_accepted() {
    let body = json!({"usage":{"input_tokens":12.0,"output_tokens":3}});
    assert_eq!(
        from_json(WireFormat::Anthropic, &body).unwrap(),
        usage(12, 0, 0, 3, 0)
    );
}

#[test]
fn tap_gives_the_same_result_for_any_split() {
    for (format, text) in [
        (WireFormat::Anthropic, ANTHROPIC_STREAM),
        (WireFormat::Responses, RESPONSES_STREAM),
        (WireFormat::Chat, CHAT_STREAM),
    ] {
        let bytes = text.as_bytes();
        let whole = tap_pieces(format, [bytes]);
        let reference = state(whole.sniffer());
        assert_eq!(whole.ended_cleanly(), Some(true));

        // One byte at a time: every multi-byte character is split.
        assert_eq!(
            state(tap_pieces(format, bytes.chunks(1)).sniffer()),
            reference
        );
        // Odd sizes.
        for size in [2, 3, 5, 7, 64, 333] {
            assert_eq!(
                state(tap_pieces(format, bytes.chunks(size)).sniffer()),
                reference,
                "{format:?} chunks of {size}"
            );
        }
        // Two pieces, cut at every offset (inside 你/🌍/巴 too).
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                state(tap_pieces(format, [a, b]).sniffer()),
                reference,
                "{format:?} cut {cut}"
            );
        }
    }
    // Explicitly: a cut inside the 4-byte 🌍 of the Anthropic text delta.
    let bytes = ANTHROPIC_STREAM.as_bytes();
    let globe = ANTHROPIC_STREAM.find('🌍').unwrap();
    let pieces = [
        &bytes[..globe + 1],
        &bytes[globe + 1..globe + 3],
        &bytes[globe + 3..],
    ];
    assert_eq!(
        state(tap_pieces(WireFormat::Anthropic, pieces).sniffer()),
        state(&tap(WireFormat::Anthropic, ANTHROPIC_STREAM))
    );
}

#[test]
fn tap_counts_a_final_event_without_blank_line() {
    let text = CHAT_STREAM.trim_end_matches('\n');
    let t = tap_pieces(WireFormat::Chat, [text.as_bytes()]);
    assert_eq!(t.ended_cleanly(), Some(false));
    assert!(t.sniffer().completed());
    // Cut in the middle of the usage chunk: the partial JSON is ignored.
    let at = CHAT_STREAM.find("\"completion_tokens\"").unwrap();
    let t = tap_pieces(WireFormat::Chat, [&CHAT_STREAM.as_bytes()[..at]]);
    assert_eq!(t.ended_cleanly(), Some(false));
    assert!(!t.sniffer().saw_usage() && !t.sniffer().completed());
    // finish() is idempotent and the state before it is None.
    let mut t = SseTap::new(WireFormat::Chat);
    assert_eq!(t.ended_cleanly(), None);
    t.feed(b"data: [DONE]\n\n");
    t.finish();
    t.finish();
    assert_eq!(t.ended_cleanly(), Some(true));
}

#[test]
fn sniffer_fed_events_directly() {
    let mut s = UsageSniffer::new(WireFormat::Anthropic);
    s.on_event(&Event {
        event: Some("message_start".into()),
        data:
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#
                .into(),
        ..Event::default()
    });
    assert_eq!(s.usage(), usage(3, 0, 0, 1, 0));
    assert!(s.saw_usage() && !s.saw_output_usage());
}

fn snapshot(name: &str, format: WireFormat, text: &str) {
    let value = state(&tap(format, text));
    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!(name, value);
    });
}

#[test]
fn snapshot_anthropic_transcript() {
    snapshot(
        "usage_anthropic_transcript",
        WireFormat::Anthropic,
        ANTHROPIC_STREAM,
    );
}

#[test]
fn snapshot_responses_transcript() {
    snapshot(
        "usage_responses_transcript",
        WireFormat::Responses,
        RESPONSES_STREAM,
    );
}

#[test]
fn snapshot_chat_transcript() {
    snapshot("usage_chat_transcript", WireFormat::Chat, CHAT_STREAM);
}

#[test]
fn usage_from_reply_bytes_matches_the_parsed_reply() {
    let bodies = [
        r#"{"id":"m","content":[{"type":"text","text":"hi \"there\""}],"usage":{"input_tokens":33,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":12}}"#,
        r#"{"usage":{"input_tokens":1,"output_tokens":2},"x":[1,2,{"usage":{"input_tokens":99}}]}"#,
        // The last member of a name wins, as in a parsed object; escaped names are names.
        r#"{"usage":{"input_tokens":1},"us\u0061ge":{"input_tokens":7,"output_tokens":3}}"#,
        r#"{"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#,
        r#"{"usage":{"input_tokens":5,"output_tokens":6,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}"#,
        r#"{"usage":null}"#,
        r#"{"usage":[1]}"#,
        r#"{"no":"usage"}"#,
        r#"[{"usage":{"input_tokens":1}}]"#,
        r#"{"usage":{"input_tokens":1}} trailing"#,
        r#"not json"#,
        "",
    ];
    for body in bodies {
        for format in [
            WireFormat::Anthropic,
            WireFormat::Responses,
            WireFormat::Chat,
        ] {
            let parsed = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| from_json(format, &v));
            assert_eq!(
                from_reply_bytes(format, body.as_bytes()),
                parsed,
                "{format:?} {body}"
            );
        }
    }
}

/// The text-delta fast path of `on_event` counts exactly what the general path (a `Value`
/// parse, `on_parsed`) counts, for well-formed deltas and for every odd shape that makes it
/// fall back: escapes, nulls, non-string fields, a `type` that disagrees with the event name,
/// arrays, duplicate keys, broken JSON.
#[test]
fn text_delta_fast_path_counts_what_the_general_path_counts() {
    let cases: &[(WireFormat, &str, &str)] = &[
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo 🌍"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a\"b\\c\u00e9\n"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"thinking":"hmm","text":"x","partial_json":"{\"a\":1}"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"delta":{"text":"no type field"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":null}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"text":null}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"text":42}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":"a string"}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":7,"delta":{"text":"abc"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"["content_block_delta",{"text":"abc"}]"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"text":"a"},"delta":{"text":"bcd"}}"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            r#"{"type":"content_block_delta","delta":{"text":"trunc"#,
        ),
        (
            WireFormat::Anthropic,
            "content_block_delta",
            "  {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"lead\"}}",
        ),
        (
            WireFormat::Responses,
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi ü"}"#,
        ),
        (
            WireFormat::Responses,
            "response.function_call_arguments.delta",
            r#"{"type":"response.function_call_arguments.delta","delta":"{\"city\":"}"#,
        ),
        (
            WireFormat::Responses,
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","delta":{"text":"object"}}"#,
        ),
        (
            WireFormat::Responses,
            "response.output_text.delta",
            r#"{"type":"response.completed","response":{"status":"completed","usage":{"input_tokens":3,"output_tokens":4}}}"#,
        ),
        (
            WireFormat::Responses,
            "response.reasoning_text.delta",
            r#"{"delta":"no type"}"#,
        ),
        (
            WireFormat::Responses,
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","delta":null}"#,
        ),
    ];
    for (format, name, data) in cases {
        let ev = Event {
            event: Some((*name).to_string()),
            data: (*data).to_string(),
            id: None,
            retry: None,
        };
        let mut fast = UsageSniffer::new(*format);
        fast.on_event(&ev);
        let mut general = UsageSniffer::new(*format);
        general.on_parsed(&ev, parse_object(&ev.data).as_ref());
        assert_eq!(
            format!("{fast:?}"),
            format!("{general:?}"),
            "{format:?} {name} {data}"
        );
    }
    // And the fast path did count: the 7 characters of "héllo 🌍".
    let mut s = UsageSniffer::new(WireFormat::Anthropic);
    s.on_event(&Event {
        event: Some("content_block_delta".into()),
        data: cases[0].2.into(),
        id: None,
        retry: None,
    });
    assert_eq!(s.streamed_text_chars(), 7);
}
