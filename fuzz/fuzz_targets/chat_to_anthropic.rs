//! `translate::anthropic_chat::chat_to_anthropic` on arbitrary JSON, for every reasoning level,
//! with and without a system prompt and a client beta: never a panic; an error names a field;
//! a translation is a valid Anthropic conversation (user first, roles alternating, no empty
//! turn, every tool_use answered by exactly one tool_result in the next turn, sanitised ids)
//! whose thinking budget stays below max_tokens.
#![no_main]

use std::collections::HashSet;

use droid2api::config::ModelKind;
use droid2api::translate::anthropic_chat::chat_to_anthropic;
use droid2api_fuzz::{LEVELS, check_fixed_level_thinking, check_result, contexts, model, request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn ids<'a>(turn: &'a Value, ty: &str, key: &str) -> Vec<&'a str> {
    turn["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == ty)
        .map(|b| b[key].as_str().expect("tool id is a string"))
        .collect()
}

fn check_conversation(body: &Value) {
    let turns = body["messages"].as_array().expect("messages");
    assert_eq!(turns.first().map(|t| &t["role"]), Some(&Value::from("user")));
    for (k, turn) in turns.iter().enumerate() {
        assert!(
            turn["content"].as_array().is_some_and(|c| !c.is_empty()),
            "empty turn"
        );
        if k > 0 {
            assert_ne!(turn["role"], turns[k - 1]["role"], "roles alternate");
        }
        let uses = ids(turn, "tool_use", "id");
        for id in &uses {
            assert!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "unsanitised id {id:?}"
            );
        }
        if !uses.is_empty() {
            let next = turns.get(k + 1).expect("tool calls are answered");
            let results = ids(next, "tool_result", "tool_use_id");
            let want: HashSet<&str> = uses.iter().copied().collect();
            assert_eq!(want.len(), uses.len(), "duplicate tool_use id");
            let got: HashSet<&str> = results.iter().copied().collect();
            assert_eq!(got.len(), results.len(), "duplicate tool_result");
            assert_eq!(want, got, "results answer exactly the calls");
        }
        if turn["role"] == "user" {
            let results = ids(turn, "tool_result", "tool_use_id");
            if !results.is_empty() {
                assert!(k > 0 && !ids(&turns[k - 1], "tool_use", "id").is_empty());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(body) = request(data) else { return };
    for level in LEVELS {
        let m = model(ModelKind::Anthropic, level);
        for ctx in contexts() {
            for beta in [None, Some("a, interleaved-thinking-2025-05-14")] {
                let result = chat_to_anthropic(body.clone(), &m, &ctx, beta);
                if let Some(p) = check_result(&result) {
                    check_conversation(&p.body);
                    // The translator always sets a positive max_tokens (Anthropic requires one).
                    assert!(p.body["max_tokens"].as_u64().is_some_and(|m| m >= 1));
                    check_fixed_level_thinking(&p.body, level);
                }
            }
        }
    }
});
