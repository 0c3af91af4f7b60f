//! The upstream body's bytes: compact JSON, byte for byte what `serde_json::to_vec` writes for
//! the same value, but faster on long strings.
//!
//! serde_json's serializer looks every byte of a string up in its escape table: on a request
//! that carries a 32 MiB image or tool result that alone costs ~20 ms. Here strings are checked
//! 64 bytes at a time (a loop the compiler vectorises) and copied in runs between the bytes
//! that need escaping (`"`, `\`, control characters); the output is sized before writing, so
//! it is not copied again as it grows.

use std::fmt::Write;

use serde_json::Value;

/// `value` as compact JSON (what `serde_json::to_vec` returns for it).
pub fn encode(value: &Value) -> Vec<u8> {
    encode_string(value).into_bytes()
}

/// `value` as compact JSON text (what `serde_json::to_string` returns for it).
pub fn encode_string(value: &Value) -> String {
    let size = estimate(value);
    // Escapes make strings longer than their text: leave some room for them.
    let mut out = String::with_capacity(size + size / 16);
    write_value(&mut out, value);
    out
}

/// The encoded size of `value` when no string needs escaping (numbers counted at most 24).
fn estimate(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(|v| estimate(v) + 1).sum::<usize>() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| k.len() + 4 + estimate(v))
                .sum::<usize>()
                + 2
        }
    }
}

pub(super) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // `Number`'s Display is its JSON form (integers through itoa, floats, always finite,
        // through ryu), as serde_json writes it. Writing to a String cannot fail.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Bytes checked at once for anything to escape.
const BLOCK: usize = 64;

/// A byte JSON requires escaped inside a string.
fn special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether no byte of `block` needs escaping. Written without early exit so that it compiles
/// to vector compares.
fn plain(block: &[u8]) -> bool {
    let mut found = 0u8;
    for &b in block {
        found |= u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\');
    }
    found == 0
}

/// A JSON string: runs copied whole, escapes as serde_json writes them (`\u00XX` with lower-case
/// hex for control characters without a short form).
pub(super) fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push('"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let end = bytes.len().min(i + BLOCK);
        if plain(&bytes[i..end]) {
            i = end;
            continue;
        }
        for (k, &b) in bytes[i..end].iter().enumerate() {
            if !special(b) {
                continue;
            }
            let at = i + k;
            // `at` holds an ASCII byte: a character boundary.
            out.push_str(&s[run..at]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                0x08 => out.push_str("\\b"),
                b'\t' => out.push_str("\\t"),
                b'\n' => out.push_str("\\n"),
                0x0C => out.push_str("\\f"),
                b'\r' => out.push_str("\\r"),
                _ => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xF)]));
                }
            }
            run = at + 1;
        }
        i = end;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::encode;

    fn same_as_serde(v: &Value) {
        assert_eq!(
            String::from_utf8(encode(v)).unwrap(),
            serde_json::to_string(v).unwrap()
        );
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let all_bytes: String = (0u8..0x80).map(char::from).collect();
        for v in [
            json!(null),
            json!(true),
            json!([
                false,
                0,
                -1,
                u64::MAX,
                i64::MIN,
                1.5,
                1.33e45,
                -0.0,
                1e-7,
                0.1
            ]),
            json!({"a": {"b": [1, {"c": "d"}], "": ""}, "z": null}),
            json!(all_bytes),
            json!({ all_bytes.clone(): all_bytes.repeat(3) }),
            json!("日本語 😀 é \u{7f} \u{2028}"),
            json!(format!("{}\"{}\\", "x".repeat(100), "y".repeat(7))),
            json!("\"\"\"\"\"\"\"\"\"\\\\\\\\\\\\\\\\\n\n\n\n\n\n\n\n\n\u{1}\u{1f}"),
        ] {
            same_as_serde(&v);
        }
        // A quote or control byte at every offset of an 8-byte word, after non-ASCII bytes.
        for k in 0..24 {
            for special in ["\"", "\\", "\n", "\u{0}", "\u{1f}", "é", "\u{7f}"] {
                let s = format!("{}{special}{}", "a".repeat(k), "b".repeat(24 - k));
                same_as_serde(&json!(s));
                same_as_serde(&json!(format!("é{s}")));
            }
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\"\\\\\\x00-\\x1f a-zé]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(("[\"\\\\\\x00-\\x1f a-z]{0,10}", inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Byte for byte what serde_json writes, for any value.
        #[test]
        fn any_value_encodes_like_serde(v in any_json()) {
            prop_assert_eq!(encode(&v), serde_json::to_vec(&v).unwrap());
        }
    }
}
