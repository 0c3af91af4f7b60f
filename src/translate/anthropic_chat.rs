//! Chat Completions ⇄ Anthropic Messages (`translation.md` §1–§3, §5, errors per §6).
//!
//! - [`chat_to_anthropic`]: a Chat Completions request becomes an Anthropic Messages request
//!   (§1, thinking per §5).
//! - [`anthropic_to_chat_response`]: a non-streaming Anthropic reply becomes a
//!   `chat.completion` (§2).
//! - [`AnthropicToChat`]: an Anthropic event stream becomes `chat.completion.chunk` events
//!   (§3, mid-stream errors per §6.3).
//!
//! Pure: no I/O, no async, no clock, no randomness (ids and `created` are passed in).

mod request;
mod response;
mod stream;

pub use request::{JSON_OBJECT_INSTRUCTION, chat_to_anthropic};
pub use response::anthropic_to_chat_response;
pub use stream::AnthropicToChat;

/// The Chat `finish_reason` of an Anthropic `stop_reason` (§2 table). Never passes an
/// Anthropic value through; unknown and missing reasons are `stop`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, null and anything new.
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::finish_reason;

    /// translation.md §7 row 15: the total mapping table, default `stop`.
    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "stop"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("something_new"), "stop"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }
}
