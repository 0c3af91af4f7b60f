//! The same-format fast path (`translate::lazy`: top-level fields raw, only the touched ones
//! parsed) against the general path (the whole body as a `Value`) on arbitrary bytes: whenever
//! the lazy path takes a body that a `Value` parse also accepts, both prepare the same request
//! (same flags, or the same error; bodies equal as JSON), for `/v1/messages`, count_tokens and
//! `/v1/responses`, every reasoning level, with and without a system prompt. Bodies a `Value`
//! parse refuses but raw values carry (a nested 1e400, a lone surrogate) are the documented
//! difference and are skipped.
#![no_main]

use droid2api::config::ModelKind;
use droid2api::translate::lazy::{self, TopLevel};
use droid2api::translate::passthrough::{prepare_messages, prepare_responses};
use droid2api::translate::{Prepared, TranslateError};
use droid2api_fuzz::{LEVELS, contexts, model};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn general(r: Result<Prepared, TranslateError>) -> (String, Value) {
    match r {
        Ok(mut p) => {
            let body = std::mem::take(&mut p.body);
            (flags(&p), body)
        }
        Err(e) => (format!("{e:?}"), Value::Null),
    }
}

fn lazy_outcome(r: Result<(Prepared, Vec<u8>), TranslateError>) -> (String, Value) {
    match r {
        Ok((p, bytes)) => {
            let body = serde_json::from_slice(&bytes).expect("the lazy body is JSON");
            (flags(&p), body)
        }
        Err(e) => (format!("{e:?}"), Value::Null),
    }
}

fn flags(p: &Prepared) -> String {
    format!(
        "stream={} aggregate={} beta={:?} drop={}",
        p.stream, p.aggregate, p.anthropic_beta, p.drop_usage_chunk
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(top) = TopLevel::parse(text) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    for level in LEVELS {
        for ctx in contexts() {
            let m = model(ModelKind::Anthropic, level);
            for count in [false, true] {
                for beta in [None, Some("x")] {
                    let Some(l) = lazy::prepare(&top, &lazy::MESSAGES_FIELDS, |v| {
                        prepare_messages(v, &m, &ctx, beta, count)
                    }) else {
                        continue;
                    };
                    let g = prepare_messages(value.clone(), &m, &ctx, beta, count);
                    assert_eq!(lazy_outcome(l), general(g), "messages count={count}");
                }
            }
            let m = model(ModelKind::OpenAi, level);
            if let Some(l) = lazy::prepare(&top, &lazy::RESPONSES_FIELDS, |v| {
                prepare_responses(v, &m, &ctx)
            }) {
                let g = prepare_responses(value.clone(), &m, &ctx);
                assert_eq!(lazy_outcome(l), general(g), "responses");
            }
        }
    }
});
