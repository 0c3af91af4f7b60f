//! `translate::responses_chat::chat_to_responses` on arbitrary JSON, for every reasoning level,
//! with and without a system prompt: never a panic; an error names a field; a translation has
//! an `input` list, `store: false` and a `max_output_tokens` within [16, model cap].
#![no_main]

use droid2api::config::ModelKind;
use droid2api::translate::responses_chat::chat_to_responses;
use droid2api_fuzz::{LEVELS, check_result, contexts, model, request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(body) = request(data) else { return };
    for level in LEVELS {
        let m = model(ModelKind::OpenAi, level);
        for ctx in contexts() {
            let result = chat_to_responses(body.clone(), &m, &ctx);
            if let Some(p) = check_result(&result) {
                assert!(p.body["input"].is_array(), "input list");
                assert_eq!(p.body["store"], Value::Bool(false));
                if let Some(n) = p.body.get("max_output_tokens") {
                    let n = n.as_u64().expect("integer max_output_tokens");
                    assert!((16..=u64::from(m.max_output_tokens)).contains(&n));
                }
                if !ctx.system_prompt.is_empty() {
                    let i = p.body["instructions"].as_str().expect("instructions");
                    assert!(i.starts_with(ctx.system_prompt));
                }
            }
        }
    }
});
