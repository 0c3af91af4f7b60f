//! The worst accepted request bodies: each holds as many JSON values as `limits.max_json_values`
//! allows (escape sequences weighing one per `ESCAPES_PER_VALUE`) in the costliest shape of
//! its kind, packed to just under the 32 MiB body cap with string padding; plus bodies made of
//! a few huge strings and the over-cap bodies the pre-scan refuses.

use std::sync::OnceLock;

use droid2api::config::ESCAPES_PER_VALUE;
use droid2api::json_scan::count_values;

/// The body builders of one wire format: `build(n, pad)` is a body with `n` repeated elements,
/// each carrying `pad` bytes of padding.
pub type Build = fn(usize, usize) -> String;

/// The scanner's weight of a body (values + escapes / 8).
pub fn weight(body: &str) -> u64 {
    count_values(body.as_bytes(), u64::MAX, ESCAPES_PER_VALUE)
        .map(|c| c.weight(ESCAPES_PER_VALUE))
        .expect("no cap")
}

/// The largest `n` whose body weighs at most `cap` and fits in `size`, then the largest padding
/// that still fits: the worst accepted body of that shape. Returns the body and `n`.
pub fn pack(cap: u64, size: usize, build: Build) -> (Vec<u8>, usize) {
    let fits = |n: usize, pad: usize| {
        let b = build(n, pad);
        b.len() <= size && weight(&b) <= cap
    };
    // Weight and length grow (almost) linearly with n: estimate, then step down.
    let (w1, w2) = (weight(&build(1, 0)), weight(&build(2, 0)));
    let per = (w2 - w1).max(1);
    let base = w1 - per;
    let mut n = usize::try_from(cap.saturating_sub(base) / per).expect("fits");
    let (l1, l2) = (build(1, 0).len(), build(2, 0).len());
    n = n.min(size.saturating_sub(l1) / (l2 - l1).max(1) + 1).max(1);
    while n > 1 && !fits(n, 0) {
        let len = build(n, 0).len();
        n = if len > size {
            (n as u128 * size as u128 / len as u128) as usize
        } else {
            n - n / 1000 - 1
        };
    }
    assert!(fits(n, 0), "one element must fit");
    let (a, b) = (build(n, 0).len(), build(n, 1).len());
    let mut pad = (size - a) / (b - a).max(1);
    while pad > 0 && !fits(n, pad) {
        pad -= 1;
    }
    let body = build(n, pad);
    assert!(body.len() <= size && weight(&body) <= cap);
    (body.into_bytes(), n)
}

/// `n` items of `item(i)` joined by commas.
fn list(n: usize, item: impl Fn(usize) -> String) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&item(i));
    }
    s
}

fn pad(n: usize) -> String {
    "x".repeat(n)
}

/// A schema of `levels` nested objects: `{"type":"object","properties":{"a":{…}}}`.
pub fn nested_schema(levels: usize) -> String {
    let mut s = String::new();
    for _ in 0..levels {
        s.push_str(r#"{"type":"object","properties":{"a":"#);
    }
    s.push_str(r#"{"type":"string"}"#);
    for _ in 0..levels {
        s.push_str("}}");
    }
    s
}

/// The deepest `levels` for which `wrap(nested_schema(levels))` still parses (serde_json's
/// recursion limit).
fn deepest(wrap: impl Fn(&str) -> String) -> usize {
    (1..200)
        .take_while(|&l| {
            serde_json::from_str::<serde_json::Value>(&wrap(&nested_schema(l))).is_ok()
        })
        .last()
        .expect("some depth parses")
}

/// The deepest schema a tool can hold, for a tool written by `tool` around it.
fn deepest_schema(cell: &OnceLock<String>, tool: impl Fn(&str) -> String) -> &str {
    cell.get_or_init(|| {
        let levels = deepest(|schema| format!(r#"{{"model":"bench","tools":[{}]}}"#, tool(schema)));
        nested_schema(levels)
    })
}

/// A long float: 150 digits (the gateway forwards it, shortest round-trip form).
fn long_float(i: usize) -> String {
    format!("{i}.{}e5", "3".repeat(150))
}

/// Text of `bytes` length of the given kind: base64 (an image), plain ASCII, escape-dense
/// (`\n`, `\"`, `\u00e9`; at most `max_escapes` escapes, plain text after), 3-byte UTF-8.
pub fn text(kind: &str, bytes: usize, max_escapes: usize) -> String {
    match kind {
        "base64" => "QUJD".repeat(bytes / 4),
        "plain" => "lorem ipsum ".repeat(bytes / 12),
        "escaped" => {
            let unit = "\\n\\\"\\u00e9";
            let units = (max_escapes / 3).min(bytes / unit.len());
            let mut s = unit.repeat(units);
            s.push_str(&"x".repeat(bytes.saturating_sub(s.len())));
            s
        }
        "non_ascii" => "日本語".repeat(bytes / 9),
        other => unreachable!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Chat Completions
// ---------------------------------------------------------------------------------------------

/// One user turn, one assistant turn with `n` tool calls, `n` tool results.
pub fn chat_tool_calls(n: usize, p: usize) -> String {
    let calls = list(n, |i| {
        format!(r#"{{"id":"c{i}","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}"#)
    });
    let results = list(n, |i| {
        format!(
            r#"{{"role":"tool","tool_call_id":"c{i}","content":"r{}"}}"#,
            pad(p)
        )
    });
    format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"go"}},{{"role":"assistant","tool_calls":[{calls}]}},{results}]}}"#
    )
}

/// user, user, assistant, assistant, … (runs of one role merge on the Anthropic route).
pub fn chat_messages(n: usize, p: usize) -> String {
    let m = list(n, |i| {
        let role = if i % 4 < 2 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m{}"}}"#, pad(p))
    });
    format!(r#"{{"model":"bench","messages":[{m}]}}"#)
}

/// One user message with `n` text parts.
pub fn chat_content_parts(n: usize, p: usize) -> String {
    let parts = list(n, |_| format!(r#"{{"type":"text","text":"p{}"}}"#, pad(p)));
    format!(r#"{{"model":"bench","messages":[{{"role":"user","content":[{parts}]}}]}}"#)
}

/// One user message with `n` image parts (http URLs: the Anthropic route builds a source object
/// for each, the Responses route an input_image).
pub fn chat_image_parts(n: usize, p: usize) -> String {
    let parts = list(n, |_| {
        format!(
            r#"{{"type":"image_url","image_url":{{"url":"https://x.example/{}"}}}}"#,
            pad(p)
        )
    });
    format!(r#"{{"model":"bench","messages":[{{"role":"user","content":[{parts}]}}]}}"#)
}

/// `n` tools with parameter schemas as deep as a body allows.
pub fn chat_deep_schemas(n: usize, p: usize) -> String {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    let schema = deepest_schema(&SCHEMA, |schema| {
        format!(r#"{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}"#)
    });
    let tools = list(n, |i| {
        format!(
            r#"{{"type":"function","function":{{"name":"f{i}","description":"{}","parameters":{schema}}}}}"#,
            pad(p)
        )
    });
    format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"hi"}}],"tools":[{tools}]}}"#
    )
}

/// One tool whose parameter schema holds `n` long floats (forwarded by every route).
pub fn chat_numbers(n: usize, _p: usize) -> String {
    let numbers = list(n, long_float);
    format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","enum":[{numbers}]}}}}}}]}}"#
    )
}

/// `body` with the rest of `size` spread as indentation after each of its commas (its strings
/// hold none): whitespace costs both the scan and the parser.
pub fn whitespace(body: &str, size: usize) -> String {
    let commas = body.matches(',').count().max(1);
    let per = size.saturating_sub(body.len()) / commas;
    if per == 0 {
        return body.to_string();
    }
    let indent = format!("\n{}", " ".repeat(per.saturating_sub(1)));
    let out = body.replace(',', &format!(",{indent}"));
    assert!(out.len() <= size);
    out
}

/// A chat body around one huge string of `kind`: an image data URL in a user message, or the
/// content of a tool result.
pub fn chat_huge(kind: &str, size: usize, max_escapes: usize) -> String {
    let room = size - 512;
    if kind == "base64" {
        let data = text(kind, room, 0);
        format!(
            r#"{{"model":"bench","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}}]}}]}}"#
        )
    } else {
        let content = text(kind, room, max_escapes);
        format!(
            r#"{{"model":"bench","messages":[{{"role":"user","content":"go"}},{{"role":"assistant","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"c","content":"{content}"}}]}}"#
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages
// ---------------------------------------------------------------------------------------------

pub fn messages_tool_calls(n: usize, p: usize) -> String {
    let calls = list(n, |i| {
        format!(r#"{{"type":"tool_use","id":"c{i}","name":"f","input":{{}}}}"#)
    });
    let results = list(n, |i| {
        format!(
            r#"{{"type":"tool_result","tool_use_id":"c{i}","content":"r{}"}}"#,
            pad(p)
        )
    });
    format!(
        r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":"go"}},{{"role":"assistant","content":[{calls}]}},{{"role":"user","content":[{results}]}}]}}"#
    )
}

pub fn messages_messages(n: usize, p: usize) -> String {
    let m = list(n, |i| {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m{}"}}"#, pad(p))
    });
    format!(r#"{{"model":"bench","max_tokens":1024,"messages":[{m}]}}"#)
}

pub fn messages_content_parts(n: usize, p: usize) -> String {
    let parts = list(n, |_| format!(r#"{{"type":"text","text":"p{}"}}"#, pad(p)));
    format!(
        r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":[{parts}]}}]}}"#
    )
}

pub fn messages_deep_schemas(n: usize, p: usize) -> String {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    let schema = deepest_schema(&SCHEMA, |schema| {
        format!(r#"{{"name":"f","input_schema":{schema}}}"#)
    });
    let tools = list(n, |i| {
        format!(
            r#"{{"name":"f{i}","description":"{}","input_schema":{schema}}}"#,
            pad(p)
        )
    });
    format!(
        r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":"hi"}}],"tools":[{tools}]}}"#
    )
}

pub fn messages_numbers(n: usize, _p: usize) -> String {
    let numbers = list(n, long_float);
    format!(
        r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":"hi"}}],"tools":[{{"name":"f","input_schema":{{"type":"object","enum":[{numbers}]}}}}]}}"#
    )
}

pub fn messages_huge(kind: &str, size: usize, max_escapes: usize) -> String {
    let room = size - 512;
    if kind == "base64" {
        let data = text(kind, room, 0);
        format!(
            r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{data}"}}}}]}}]}}"#
        )
    } else {
        let content = text(kind, room, max_escapes);
        format!(
            r#"{{"model":"bench","max_tokens":1024,"messages":[{{"role":"user","content":"go"}},{{"role":"assistant","content":[{{"type":"tool_use","id":"c","name":"f","input":{{}}}}]}},{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"c","content":"{content}"}}]}}]}}"#
        )
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses
// ---------------------------------------------------------------------------------------------

pub fn responses_tool_calls(n: usize, p: usize) -> String {
    let items = list(n, |i| {
        format!(
            r#"{{"type":"function_call","call_id":"c{i}","name":"f","arguments":"{{}}"}},{{"type":"function_call_output","call_id":"c{i}","output":"r{}"}}"#,
            pad(p)
        )
    });
    format!(r#"{{"model":"bench","input":[{items}]}}"#)
}

pub fn responses_messages(n: usize, p: usize) -> String {
    let items = list(n, |i| {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        format!(r#"{{"role":"{role}","content":"m{}"}}"#, pad(p))
    });
    format!(r#"{{"model":"bench","input":[{items}]}}"#)
}

pub fn responses_content_parts(n: usize, p: usize) -> String {
    let parts = list(n, |_| {
        format!(r#"{{"type":"input_text","text":"p{}"}}"#, pad(p))
    });
    format!(r#"{{"model":"bench","input":[{{"role":"user","content":[{parts}]}}]}}"#)
}

pub fn responses_deep_schemas(n: usize, p: usize) -> String {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    let schema = deepest_schema(&SCHEMA, |schema| {
        format!(r#"{{"type":"function","name":"f","parameters":{schema}}}"#)
    });
    let tools = list(n, |i| {
        format!(
            r#"{{"type":"function","name":"f{i}","description":"{}","parameters":{schema}}}"#,
            pad(p)
        )
    });
    format!(r#"{{"model":"bench","input":"hi","tools":[{tools}]}}"#)
}

pub fn responses_numbers(n: usize, _p: usize) -> String {
    let numbers = list(n, long_float);
    format!(
        r#"{{"model":"bench","input":"hi","tools":[{{"type":"function","name":"f","parameters":{{"type":"object","enum":[{numbers}]}}}}]}}"#
    )
}

pub fn responses_huge(kind: &str, size: usize, max_escapes: usize) -> String {
    let room = size - 512;
    if kind == "base64" {
        let data = text(kind, room, 0);
        format!(
            r#"{{"model":"bench","input":[{{"role":"user","content":[{{"type":"input_image","image_url":"data:image/png;base64,{data}"}}]}}]}}"#
        )
    } else {
        let content = text(kind, room, max_escapes);
        format!(
            r#"{{"model":"bench","input":[{{"type":"function_call","call_id":"c","name":"f","arguments":"{{}}"}},{{"type":"function_call_output","call_id":"c","output":"{content}"}}]}}"#
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Refused by the pre-scan
// ---------------------------------------------------------------------------------------------

/// 32 MiB of `1,1,1,…`: the scan stops at the cap.
pub fn over_cap_values(size: usize) -> String {
    let mut s = String::from(r#"{"model":"bench","x":["#);
    while s.len() + 4 < size {
        s.push_str("1,");
    }
    s.push_str("1]}");
    s
}

/// One 32 MiB string of `\n`: the scan stops after `cap × 8` escapes.
pub fn over_cap_escapes(size: usize) -> String {
    format!(
        r#"{{"model":"bench","x":"{}"}}"#,
        "\\n".repeat((size - 64) / 2)
    )
}
