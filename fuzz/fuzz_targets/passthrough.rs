//! The same-format preparers on arbitrary JSON (`prepare_messages` for /v1/messages and
//! count_tokens, `prepare_responses`, `prepare_common_chat`), for every reasoning level, with
//! and without a system prompt: never a panic; an error names a field; the prompt is injected
//! first; Anthropic thinking set by a level stays below max_tokens.
#![no_main]

use droid2api::config::ModelKind;
use droid2api::translate::passthrough::{prepare_common_chat, prepare_messages, prepare_responses};
use droid2api_fuzz::{LEVELS, check_fixed_level_thinking, check_result, contexts, model, request};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some(body) = request(data) else { return };
    for level in LEVELS {
        for ctx in contexts() {
            let prompt = ctx.system_prompt;
            let m = model(ModelKind::Anthropic, level);
            for count in [false, true] {
                for beta in [None, Some("x")] {
                    let r = prepare_messages(body.clone(), &m, &ctx, beta, count);
                    if let Some(p) = check_result(&r) {
                        if !prompt.is_empty() {
                            assert_eq!(p.body["system"][0], json!({"type": "text", "text": prompt}));
                        }
                        if !count {
                            check_fixed_level_thinking(&p.body, level);
                        }
                    }
                }
            }
            let m = model(ModelKind::OpenAi, level);
            if let Some(p) = check_result(&prepare_responses(body.clone(), &m, &ctx)) {
                if !prompt.is_empty() {
                    let i = p.body["instructions"].as_str().expect("instructions");
                    assert!(i.starts_with(prompt));
                }
            }
            let m = model(ModelKind::Common, level);
            if let Some(p) = check_result(&prepare_common_chat(body.clone(), &m, &ctx)) {
                if !prompt.is_empty() {
                    assert_eq!(p.body["messages"][0], json!({"role": "system", "content": prompt}));
                }
                if p.stream {
                    assert_eq!(p.body["stream_options"]["include_usage"], true);
                }
            }
        }
    }
});
