//! Building blocks of OpenAI Chat Completions output shared by every translator: stream chunks
//! (`translation.md` §3.3, G4) and the usage object (§2).

use serde_json::{Value, json};

use crate::sse;
use crate::usage::Usage;

/// OpenAI `usage` from a gateway [`Usage`]: `prompt_tokens` includes cached input (reads and
/// writes), `completion_tokens` includes reasoning.
pub fn openai_usage(u: &Usage) -> Value {
    let prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
    let mut v = json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    });
    if u.cache_write_tokens > 0 {
        v["cache_creation_input_tokens"] = json!(u.cache_write_tokens);
    }
    v
}

/// Writes the `chat.completion.chunk` events of one stream: one `id`, `created` and `model` for
/// the whole stream, `choices[0].index` always 0, `usage: null` on every chunk when the client
/// asked for a usage chunk.
#[derive(Debug, Clone)]
pub struct ChatChunks {
    pub id: String,
    pub created: u64,
    /// The model name the client asked for.
    pub model: String,
    pub include_usage: bool,
}

impl ChatChunks {
    fn frame(&self, choices: Value, usage: Option<Value>) -> String {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        sse::encode(None, &v.to_string())
    }

    /// A chunk carrying `delta` (an object such as `{"content": "…"}`).
    pub fn delta(&self, delta: Value) -> String {
        self.frame(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            None,
        )
    }

    /// The first chunk: `{"role":"assistant","content":""}`.
    pub fn role(&self) -> String {
        self.delta(json!({"role": "assistant", "content": ""}))
    }

    /// The finish chunk: empty delta and the finish reason.
    pub fn finish(&self, reason: &str) -> String {
        self.frame(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]),
            None,
        )
    }

    /// The usage chunk (`choices: []`), sent only when the client asked for it.
    pub fn usage(&self, u: &Usage) -> String {
        self.frame(json!([]), Some(openai_usage(u)))
    }

    /// `data: [DONE]`.
    pub fn done(&self) -> String {
        sse::encode(None, "[DONE]")
    }

    /// A mid-stream error (`translation.md` §6.3): the stream closes after it, without a finish
    /// chunk or `[DONE]`.
    pub fn error(&self, message: &str, error_type: &str, code: Option<&str>) -> String {
        let v =
            json!({"error": {"message": message, "type": error_type, "param": null, "code": code}});
        sse::encode(None, &v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_mapping() {
        let u = Usage {
            input_tokens: 20,
            cache_read_tokens: 1800,
            cache_write_tokens: 0,
            output_tokens: 95,
            reasoning_tokens: 0,
        };
        assert_eq!(
            openai_usage(&u),
            json!({"prompt_tokens": 1820, "completion_tokens": 95, "total_tokens": 1915,
                   "prompt_tokens_details": {"cached_tokens": 1800}, "completion_tokens_details": {"reasoning_tokens": 0}})
        );
    }

    #[test]
    fn chunks_keep_id_created_model() {
        let c = ChatChunks {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
            include_usage: true,
        };
        let a = c.role();
        assert!(a.starts_with("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\""), "{a}");
        assert!(a.ends_with("\"usage\":null}\n\n"), "{a}");
        assert!(c.usage(&Usage::default()).contains("\"choices\":[]"));
        assert_eq!(c.done(), "data: [DONE]\n\n");
    }
}
