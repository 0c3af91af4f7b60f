//! The lazy path agrees with the general one (parse into a `Value`, prepare, encode) on every
//! body it accepts, and declines what it cannot decide the same way.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::config::{Model, ModelKind, ReasoningBudgets, ReasoningLevel};
use crate::translate::Context;
use crate::translate::passthrough::{prepare_messages, prepare_responses};

const LEVELS: [ReasoningLevel; 5] = [
    ReasoningLevel::Auto,
    ReasoningLevel::Off,
    ReasoningLevel::Low,
    ReasoningLevel::Medium,
    ReasoningLevel::High,
];

fn model(kind: ModelKind, reasoning: ReasoningLevel) -> Model {
    Model {
        id: "upstream-model-id".into(),
        name: "m".into(),
        kind,
        reasoning,
        provider: None,
        default_max_tokens: 4096,
        max_output_tokens: kind.default_max_output_tokens(),
    }
}

fn contexts() -> [Context<'static>; 2] {
    [
        Context {
            system_prompt: "",
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 1000,
        },
        Context {
            system_prompt: "You are Droid.\n\n",
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 1000,
        },
    ]
}

/// What a preparation came to, comparable across both paths: the flags or the error, and the
/// body as a `Value` (whose equality ignores key order).
fn outcome(r: Result<(Prepared, Value), TranslateError>) -> (String, Value) {
    match r {
        Ok((p, body)) => (
            format!(
                "ok stream={} beta={:?} drop={}",
                p.stream, p.anthropic_beta, p.drop_usage_chunk
            ),
            body,
        ),
        Err(e) => (format!("err {e:?}"), Value::Null),
    }
}

/// Checks one body on every preparer, level and context. Returns whether the lazy path took it.
fn agree(text: &str) -> bool {
    let general: Value = serde_json::from_str(text).unwrap();
    let Some(top) = TopLevel::parse(text) else {
        return false;
    };
    let mut took = true;
    for level in LEVELS {
        for ctx in contexts() {
            let m = model(ModelKind::Anthropic, level);
            for count in [false, true] {
                for beta in [None, Some("b1")] {
                    let full =
                        prepare_messages(general.clone(), &m, &ctx, beta, count).map(|mut p| {
                            let body = std::mem::take(&mut p.body);
                            (p, body)
                        });
                    let lazy = prepare(&top, &MESSAGES_FIELDS, |v| {
                        prepare_messages(v, &m, &ctx, beta, count)
                    });
                    match lazy {
                        None => took = false,
                        Some(lazy) => {
                            let lazy = lazy.map(|(p, bytes)| {
                                (p, serde_json::from_slice::<Value>(&bytes).unwrap())
                            });
                            assert_eq!(outcome(lazy), outcome(full), "messages {text}");
                        }
                    }
                }
            }
            let m = model(ModelKind::OpenAi, level);
            let full = prepare_responses(general.clone(), &m, &ctx).map(|mut p| {
                let body = std::mem::take(&mut p.body);
                (p, body)
            });
            match prepare(&top, &RESPONSES_FIELDS, |v| prepare_responses(v, &m, &ctx)) {
                None => took = false,
                Some(lazy) => {
                    let lazy = lazy
                        .map(|(p, bytes)| (p, serde_json::from_slice::<Value>(&bytes).unwrap()));
                    assert_eq!(outcome(lazy), outcome(full), "responses {text}");
                }
            }
        }
    }
    took
}

#[test]
fn common_bodies_take_the_lazy_path_and_agree() {
    let bodies = [
        json!({"model": "claude", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "claude", "stream": true, "system": "Be brief.", "messages": [{"role": "user", "content": [{"type": "text", "text": "é \"q\" \n"}]}]}),
        json!({"model": "claude", "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}], "messages": [], "temperature": 0.2, "top_k": 5, "top_p": 0.5}),
        json!({"model": "claude", "thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 100, "messages": []}),
        json!({"model": "claude", "system": "   ", "stream": "yes", "messages": []}),
        json!({"model": "claude", "system": 5, "messages": []}),
        json!({"model": "claude", "instructions": "Do.", "reasoning": {"effort": "high"}, "input": "x"}),
        json!({"model": "claude", "instructions": 7, "input": [1, 2.5, -0.0, 1e300]}),
        json!({"model": "claude", "system": null, "instructions": null, "max_tokens": null}),
    ];
    for b in bodies {
        assert!(agree(&b.to_string()), "{b}");
        assert!(agree(&serde_json::to_string_pretty(&b).unwrap()), "{b}");
    }
}

#[test]
fn untouched_fields_are_forwarded_as_sent() {
    let text = r#"{ "messages" : [ {"role":"user","content":"caf\u00e9 1.50"} ], "n": 1.50e0, "model":"m" }"#;
    let top = TopLevel::parse(text).unwrap();
    let m = model(ModelKind::Anthropic, ReasoningLevel::Auto);
    let ctx = &contexts()[0];
    let (_, body) = prepare(&top, &MESSAGES_FIELDS, |v| {
        prepare_messages(v, &m, ctx, None, false)
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"messages":[ {"role":"user","content":"caf\u00e9 1.50"} ],"n":1.50e0,"model":"upstream-model-id","stream":true,"max_tokens":4096}"#
    );
}

#[test]
fn what_it_cannot_decide_the_same_way_is_declined() {
    // Not one object, repeated keys, trailing text.
    for text in [
        "[1]",
        "\"s\"",
        r#"{"model":"a","model":"b"}"#,
        r#"{"model":"a"} x"#,
        r#"{"model":"a""#,
        "",
    ] {
        assert!(TopLevel::parse(text).is_none(), "{text}");
    }
    // A touched field whose text a Value parse refuses (out of range): the general path decides.
    let top = TopLevel::parse(r#"{"model":"a","max_tokens":1e400,"messages":[]}"#).unwrap();
    let m = model(ModelKind::Anthropic, ReasoningLevel::Auto);
    let ctx = &contexts()[0];
    assert!(
        prepare(&top, &MESSAGES_FIELDS, |v| prepare_messages(
            v, &m, ctx, None, false
        ))
        .is_none()
    );
    // The same number in an untouched field is forwarded as sent.
    let top = TopLevel::parse(r#"{"model":"a","metadata":1e400}"#).unwrap();
    let (_, body) = prepare(&top, &MESSAGES_FIELDS, |v| {
        prepare_messages(v, &m, ctx, None, false)
    })
    .unwrap()
    .unwrap();
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains(r#""metadata":1e400"#)
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z \"\\\\é\n]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Every field a preparer touches (so a new one is covered as soon as it is listed), and a few
/// it does not.
fn keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = MESSAGES_FIELDS
        .iter()
        .chain(&RESPONSES_FIELDS)
        .copied()
        .collect();
    keys.extend(["messages", "input", "metadata", "tools"]);
    keys.sort_unstable();
    keys.dedup();
    keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any object over the fields the preparers care about: both paths agree.
    #[test]
    fn both_paths_agree(fields in prop::collection::vec((0..14usize, any_json()), 0..10)) {
        let keys = keys();
        let body: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (keys[k % keys.len()].to_string(), v))
            .collect();
        let text = Value::Object(body).to_string();
        prop_assert!(agree(&text));
    }
}
