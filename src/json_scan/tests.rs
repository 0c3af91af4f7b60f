use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// The real number of values in a parsed document.
fn serde_count(v: &Value) -> u64 {
    1 + match v {
        Value::Array(items) => items.iter().map(serde_count).sum(),
        Value::Object(map) => map.values().map(serde_count).sum(),
        _ => 0,
    }
}

/// The escape sequences serde_json writes for a document: one per `"`, `\` and control
/// character in its strings and keys.
fn serde_escapes(v: &Value) -> u64 {
    let text = |s: &str| {
        s.chars()
            .filter(|c| matches!(c, '"' | '\\' | '\0'..='\x1f'))
            .count() as u64
    };
    match v {
        Value::String(s) => text(s),
        Value::Array(items) => items.iter().map(serde_escapes).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| text(k) + serde_escapes(v)).sum(),
        _ => 0,
    }
}

fn scan(text: &str) -> u64 {
    count_values(text.as_bytes(), u64::MAX, 8).unwrap().values
}

fn check(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(scan(text), serde_count(&v), "{text}");
}

#[test]
fn counts_match_serde_on_varied_documents() {
    for text in [
        "{}",
        "[]",
        "0",
        "-0.5e+10",
        "true",
        "null",
        r#""""#,
        r#"{"model":"m"}"#,
        r#"{"a":[1,2,{"b":null}],"c":"d"}"#,
        r#"{ "a" : "x" , "b" :[ true ,false, null ] }"#,
        "{\n\t\"a\"\r\n:\n\"b\"\n}",
        // Quotes, backslashes, colons and brackets inside strings count for nothing.
        r#"{"k:\"{[":"v\\","e":"\\\"","u":"\u00e9\"\\u","x":":"}"#,
        r#"["\\\\\\\\", "\"\"", "a\\", ":", "]"]"#,
        // A string value followed by a colon-looking string.
        r#"[":", ":"]"#,
        r#"{"a":{"b":{"c":[[[[]]]]}}}"#,
        // Long strings take the memchr path; dense escapes the inline one.
        &format!(
            r#"{{"long":"{}","esc":"{}"}}"#,
            "x".repeat(10_000),
            "\\n".repeat(5_000)
        ),
        &format!(r#"["{}", 1]"#, "a\\\"".repeat(3_000)),
        "[1e5,-2E-3,0.25,123456789012345678901234567890]",
        // Runs longer than a block: digits and whitespace skipped 32 bytes at a time.
        &format!(
            "[{0}1,{0}-{1}.{1}e+10,\n{0}\t{0}{1}]",
            " ".repeat(100),
            "7".repeat(100)
        ),
        "{\"é\":\"ü\",\"😀\":[\"日本\"]}",
    ] {
        check(text);
    }
}

#[test]
fn stops_as_soon_as_the_cap_is_exceeded() {
    let body = format!("[{}]", vec!["1"; 1000].join(","));
    let values = |cap| count_values(body.as_bytes(), cap, 8).map(|c| c.values);
    assert_eq!(values(1001), Ok(1001));
    assert_eq!(values(1000), Err(TooManyValues { cap: 1000 }));
    assert_eq!(values(10), Err(TooManyValues { cap: 10 }));
    assert_eq!(count_values(b"{}", 0, 8), Err(TooManyValues { cap: 0 }));
    assert_eq!(
        count_values(b"  ", 0, 8),
        Ok(Counted {
            whitespace: 2,
            ..Counted::default()
        })
    );
}

#[test]
fn escapes_weigh_one_value_per_eight() {
    // 1 value (the string) + 80 escapes = weight 11.
    let body = format!(r#""{}""#, "\\n".repeat(80));
    assert_eq!(
        count_values(body.as_bytes(), 11, 8),
        Ok(Counted {
            values: 1,
            escapes: 80,
            whitespace: 0,
            max_depth: 0,
        })
    );
    assert_eq!(
        Counted {
            values: 1,
            escapes: 80,
            whitespace: 0,
            max_depth: 0,
        }
        .weight(8),
        11
    );
    assert_eq!(
        count_values(body.as_bytes(), 10, 8),
        Err(TooManyValues { cap: 10 })
    );
    // 79 escapes = weight 10 (escapes round down); the 80th crosses the cap.
    let body = format!(r#""{}""#, "\\n".repeat(79));
    assert!(count_values(body.as_bytes(), 10, 8).is_ok());
    // Escapes in keys count too; every escape kind counts once.
    let body = r#"{"a\"b":"\u00e9\ud83d\ude00\\\/\b\f\n\r\t"}"#;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        count_values(body.as_bytes(), u64::MAX, 8),
        Ok(Counted {
            values: 2,
            escapes: 11,
            whitespace: 0,
            max_depth: 1,
        })
    );
    assert_eq!(serde_count(&v), 2);
}

#[test]
fn a_long_escaped_string_stops_the_scan_early() {
    // 1M escapes against a cap of 1000 values (8000 escapes): stopped inside the string.
    let body = format!(r#"{{"model":"m","x":"{}"}}"#, "\\n".repeat(1_000_000));
    assert_eq!(
        count_values(body.as_bytes(), 1000, 8),
        Err(TooManyValues { cap: 1000 })
    );
    // The same on the memchr path: escapes far apart.
    let sparse = format!("{}\\n", "x".repeat(40));
    let body = format!(r#"["{}"]"#, sparse.repeat(100_000));
    assert_eq!(
        count_values(body.as_bytes(), 1000, 8),
        Err(TooManyValues { cap: 1000 })
    );
    assert_eq!(
        count_values(body.as_bytes(), 12_502, 8).map(|c| (c.values, c.escapes)),
        Ok((2, 100_000))
    );
}

#[test]
fn invalid_documents_are_counted_without_panicking() {
    for text in [
        &b"\"unterminated"[..],
        b"\"ends in a backslash\\",
        b"{\"a\"",
        b"{\"a\":",
        b"]]]}}}",
        b"truefalse",
        b"xyz",
        b"\xff\xfe",
    ] {
        let _ = count_values(text, u64::MAX, 8);
    }
    assert_eq!(scan("\"unterminated"), 1);
    // A key never followed by its value is still not a value; a scalar run is one value.
    assert_eq!(scan("{\"a\":"), 1);
    assert_eq!(scan("[truefalse]"), 2);
}

#[test]
fn a_value_hidden_behind_a_colon_is_not_missed_on_valid_input() {
    // Every value of a valid document is counted, whatever whitespace surrounds the colons.
    let v = json!({"a": "b", "c": ["d", {"e": "f"}], "g": {"h": ":"}});
    for text in [
        serde_json::to_string(&v).unwrap(),
        serde_json::to_string_pretty(&v).unwrap(),
    ] {
        assert_eq!(scan(&text), serde_count(&v));
    }
}

/// Any JSON value (strings with escapes, control characters and non-ASCII text).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\"\\\\:{}\\[\\], a-z]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(("[\"\\\\:a-z ]{0,6}", inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// The nesting depth of objects and arrays in `v`.
fn serde_depth(v: &Value) -> u32 {
    match v {
        Value::Array(items) => 1 + items.iter().map(serde_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(serde_depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    /// For any valid JSON the scanner's count equals the real number of values (and of
    /// escape sequences), compact or pretty-printed.
    #[test]
    fn scanner_counts_every_value(v in any_json()) {
        let expected = Counted {
            values: serde_count(&v),
            escapes: serde_escapes(&v),
            whitespace: 0,
            max_depth: serde_depth(&v),
        };
        let compact = serde_json::to_string(&v).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        prop_assert_eq!(count_values(compact.as_bytes(), u64::MAX, 8), Ok(expected));
        // Pretty-printing adds whitespace outside strings only; stripping it gives it back.
        let whitespace = (pretty.len() - compact.len()) as u64;
        prop_assert_eq!(
            count_values(pretty.as_bytes(), u64::MAX, 8),
            Ok(Counted { whitespace, ..expected })
        );
        prop_assert_eq!(strip_whitespace(pretty.as_bytes()), compact.as_bytes());
        // With the cap at the document's weight it passes; one less and it stops.
        let weight = expected.weight(8);
        prop_assert!(count_values(compact.as_bytes(), weight, 8).is_ok());
        if weight > 0 {
            prop_assert_eq!(
                count_values(compact.as_bytes(), weight - 1, 8),
                Err(TooManyValues { cap: weight - 1 })
            );
        }
    }

    /// Stripping whitespace never changes what serde_json makes of a text, valid or not.
    #[test]
    fn stripping_keeps_what_serde_reads(text in "[\\[\\]{}:,\" \n\t0-9.eE+\\-truefalsn\\\\]{0,40}") {
        let stripped = strip_whitespace(text.as_bytes());
        prop_assert_eq!(
            serde_json::from_str::<Value>(&text).ok(),
            serde_json::from_slice::<Value>(&stripped).ok()
        );
    }

    /// Arbitrary bytes never panic, and never count more values or escapes than there are
    /// bytes.
    #[test]
    fn arbitrary_bytes_are_safe(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let c = count_values(&bytes, u64::MAX, 8).unwrap();
        prop_assert!(c.values + c.escapes <= bytes.len() as u64);
    }
}

#[test]
fn whitespace_outside_strings_is_counted_and_stripped() {
    let text = " {\n\t\"a b\" :  [ 1 ,\r\n \"x \\\" y\" , true ] ,\"c\":\"\\\\\" } ";
    let c = count_values(text.as_bytes(), u64::MAX, 8).unwrap();
    let stripped = strip_whitespace(text.as_bytes());
    assert_eq!(
        String::from_utf8(stripped.clone()).unwrap(),
        r#"{"a b":[1,"x \" y",true],"c":"\\"}"#
    );
    assert_eq!(c.whitespace, (text.len() - stripped.len()) as u64);
    let (a, b): (Value, Value) = (
        serde_json::from_str(text).unwrap(),
        serde_json::from_slice(&stripped).unwrap(),
    );
    assert_eq!(a, b);
    // Runs longer than a block.
    let text = format!("[{0}1,{0}2{0}]", " \n".repeat(100));
    assert_eq!(strip_whitespace(text.as_bytes()), b"[1,2]");
}

#[test]
fn stripping_never_merges_tokens() {
    for (text, stripped) in [
        ("[1 2]", "[1 2]"),
        ("[1 \n\t 2]", "[1 2]"),
        ("[tru e]", "[tru e]"),
        ("[- 1]", "[- 1]"),
        ("[1 ,2]", "[1,2]"),
        ("[\"a\" \"b\"]", "[\"a\"\"b\"]"),
        ("{\"a\":1 }x", "{\"a\":1}x"),
        // An unterminated string is copied to the end, whitespace included.
        ("[\"a  b", "[\"a  b"),
    ] {
        assert_eq!(
            strip_whitespace(text.as_bytes()),
            stripped.as_bytes(),
            "{text}"
        );
        let before = serde_json::from_str::<Value>(text).ok();
        let after = serde_json::from_slice::<Value>(stripped.as_bytes()).ok();
        assert_eq!(before, after, "{text}");
    }
}

#[test]
fn stripped_positions_map_back_to_the_original() {
    let text = "{ \"a\" :\n   [1,  2 ,\n 3]}";
    let stripped = strip_whitespace(text.as_bytes());
    assert_eq!(stripped, br#"{"a":[1,2,3]}"#);
    for (k, &b) in stripped.iter().enumerate() {
        let i = unstripped_index(text.as_bytes(), k);
        // Index k of the stripped text is the first byte after the k bytes before it.
        let next = text.as_bytes()[i..]
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .map(|p| text.as_bytes()[i + p]);
        assert_eq!(next, Some(b), "{k}");
    }
    assert_eq!(unstripped_index(text.as_bytes(), 0), 0);
    assert_eq!(unstripped_index(text.as_bytes(), usize::MAX), text.len());
}
