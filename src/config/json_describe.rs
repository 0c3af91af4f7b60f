//! How a JSON value is named in an error message: its kind (`a string`, `an object`, …) and a
//! short rendering. One helper for every file reader and the admin API, so their messages read
//! alike.

use serde_json::Value;

/// The kind of a JSON value, with its article: `null`, `a boolean`, `a number`, `a string`,
/// `an array`, `an object`.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a bad value: an array or object by its kind, anything else as JSON cut
/// to 60 characters.
pub(crate) fn show(v: &Value) -> String {
    show_at_most(v, 60)
}

/// [`show`], cut to `max` characters (an ellipsis marks the cut).
pub(crate) fn show_at_most(v: &Value, max: usize) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind_of(v).to_string(),
        other => {
            let s = other.to_string();
            if s.chars().count() > max {
                format!("{}…", s.chars().take(max).collect::<String>())
            } else {
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_and_short_renderings() {
        assert_eq!(kind_of(&json!(null)), "null");
        assert_eq!(kind_of(&json!([1])), "an array");
        assert_eq!(show(&json!({"a": 1})), "an object");
        assert_eq!(show(&json!("hi")), "\"hi\"");
        assert_eq!(show(&json!(12)), "12");
        let long = json!("x".repeat(100));
        assert_eq!(show(&long).chars().count(), 61);
        assert_eq!(show_at_most(&long, 40), format!("\"{}…", "x".repeat(39)));
    }
}
