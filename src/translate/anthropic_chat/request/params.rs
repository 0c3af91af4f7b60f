//! Top-level Chat parameters → Anthropic (`translation.md` §1.2, §1.6, §1.7): tools and
//! tool_choice, stop sequences, sampling, `user`, `response_format`.

use serde_json::{Map, Value, json};

use super::{JSON_OBJECT_INSTRUCTION, err, function_name, present};
use crate::translate::TranslateError;

/// A non-empty name read in place (`tool_choice`).
fn name_of(v: Option<&Value>, param: &str) -> Result<String, TranslateError> {
    match v.and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(err(param, "expected a non-empty string")),
    }
}

/// `tools` (or legacy `functions`) → Anthropic tools; `None` when there are none. The list is
/// taken out of the request: schemas are moved, not copied.
pub(super) fn tools(req: &mut Map<String, Value>) -> Result<Option<Vec<Value>>, TranslateError> {
    let (key, list) = match req.remove("tools").filter(|t| !t.is_null()) {
        Some(t) => ("tools", t),
        None => match req.remove("functions").filter(|f| !f.is_null()) {
            Some(f) => ("functions", f),
            None => return Ok(None),
        },
    };
    let Value::Array(list) = list else {
        return Err(err(key, "expected an array"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (k, t) in list.into_iter().enumerate() {
        let path = format!("{key}[{k}]");
        let Value::Object(mut t) = t else {
            return Err(err(path, "expected a tool object"));
        };
        // Already Anthropic-native: passed through.
        if t.contains_key("input_schema") {
            out.push(Value::Object(t));
            continue;
        }
        let (mut function, fpath) = if key == "functions" {
            (None, path.clone())
        } else {
            if let Some(ty) = t.get("type").filter(|v| !v.is_null())
                && ty != "function"
            {
                return Err(err(
                    format!("{path}.type"),
                    "only function tools are supported",
                ));
            }
            match t.remove("function") {
                Some(Value::Object(f)) => (Some(f), format!("{path}.function")),
                _ => return Err(err(format!("{path}.function"), "expected an object")),
            }
        };
        // A legacy `functions` entry is its own function object.
        let function = function.as_mut().unwrap_or(&mut t);
        let name = function_name(function.remove("name"), format!("{fpath}.name"))?;
        let description = match function.remove("description") {
            Some(d @ Value::String(_)) => Some(d),
            _ => None,
        };
        let schema = match function.remove("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                return Err(err(
                    format!("{fpath}.parameters"),
                    "expected a JSON Schema object",
                ));
            }
        };
        let mut tool = Map::with_capacity(4);
        tool.insert("name".into(), Value::String(name));
        if let Some(d) = description {
            tool.insert("description".into(), d);
        }
        tool.insert("input_schema".into(), schema);
        if let Some(cc) = t.remove("cache_control").filter(|c| !c.is_null()) {
            tool.insert("cache_control".into(), cc);
        }
        out.push(Value::Object(tool));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `tool_choice` (or legacy `function_call`) and `parallel_tool_calls` (§1.6); only called
/// when tools are present.
pub(super) fn tool_choice(req: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let (key, given) = match (present(req, "tool_choice"), present(req, "function_call")) {
        (Some(c), _) => ("tool_choice", Some(c)),
        (None, Some(f)) => ("function_call", Some(f)),
        (None, None) => ("tool_choice", None),
    };
    let mut choice = match given {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" if key == "tool_choice" => json!({"type": "any"}),
            _ => {
                return Err(err(
                    key,
                    format!("unsupported value `{s}`; expected auto, none, required or a function"),
                ));
            }
        }),
        Some(Value::Object(o)) => {
            let name = if key == "tool_choice" {
                if o.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(err(format!("{key}.type"), "expected \"function\""));
                }
                o.get("function").and_then(|f| f.get("name"))
            } else {
                o.get("name")
            };
            let param = if key == "tool_choice" {
                "tool_choice.function.name"
            } else {
                "function_call.name"
            };
            let name = name_of(name, param)?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(err(key, "expected a string or an object")),
    };
    match present(req, "parallel_tool_calls") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c.get("type").and_then(Value::as_str) != Some("none") {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        Some(_) => return Err(err("parallel_tool_calls", "expected a boolean")),
    }
    Ok(choice)
}

/// `stop` → `stop_sequences`: a string is wrapped, whitespace-only entries dropped.
pub(super) fn stop_sequences(
    req: &mut Map<String, Value>,
) -> Result<Option<Value>, TranslateError> {
    let list: Vec<Value> = match req.remove("stop").filter(|s| !s.is_null()) {
        None => return Ok(None),
        Some(s @ Value::String(_)) => vec![s],
        Some(Value::Array(items)) => {
            if let Some(k) = items.iter().position(|s| !s.is_string()) {
                return Err(err(format!("stop[{k}]"), "expected a string"));
            }
            items
        }
        Some(_) => return Err(err("stop", "expected a string or an array of strings")),
    };
    let list: Vec<Value> = list
        .into_iter()
        .filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty()))
        .collect();
    Ok((!list.is_empty()).then_some(Value::Array(list)))
}

/// `temperature` (clamped to [0, 1]), `top_p` (only without temperature), `top_k`.
pub(super) fn sampling(
    req: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let number = |key: &str| -> Result<Option<f64>, TranslateError> {
        match present(req, key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| err(key, "expected a number")),
        }
    };
    let temperature = number("temperature")?;
    let top_p = number("top_p")?;
    if let Some(t) = temperature {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    } else if let Some(p) = top_p {
        out.insert("top_p".into(), json!(p.clamp(0.0, 1.0)));
    }
    if let Some(k) = present(req, "top_k") {
        match k.as_u64() {
            Some(k) => {
                out.insert("top_k".into(), json!(k));
            }
            None => return Err(err("top_k", "expected a non-negative integer")),
        }
    }
    Ok(())
}

/// `user` → `metadata.user_id`, unless it looks like an email address or a phone number
/// (Anthropic forbids personal data there).
pub(super) fn user_id(req: &Map<String, Value>) -> Result<Option<String>, TranslateError> {
    match present(req, "user") {
        None => Ok(None),
        Some(Value::String(u)) => {
            let u = u.trim();
            Ok(
                (!u.is_empty() && !looks_like_email(u) && !looks_like_phone(u))
                    .then(|| u.to_string()),
            )
        }
        Some(_) => Err(err("user", "expected a string")),
    }
}

/// `local@domain.tld`.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let Some((host, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    !local.is_empty() && !host.is_empty() && !tld.is_empty() && !s.chars().any(char::is_whitespace)
}

/// Seven or more digits with only `+`, spaces, dashes, dots and parentheses around them.
fn looks_like_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    digits >= 7
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
}

/// `response_format` type, validated.
fn response_format_type(req: &Map<String, Value>) -> Result<Option<&str>, TranslateError> {
    match present(req, "response_format") {
        None => Ok(None),
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some(t @ ("text" | "json_object" | "json_schema")) => Ok(Some(t)),
            Some(t) => Err(err(
                "response_format.type",
                format!("unsupported value `{t}`; expected text, json_object or json_schema"),
            )),
            None => Err(err("response_format.type", "expected a string")),
        },
    }
}

/// `json_object` → an extra system text block (§1.7).
pub(super) fn response_format_system(
    req: &Map<String, Value>,
) -> Result<Option<Value>, TranslateError> {
    Ok((response_format_type(req)? == Some("json_object"))
        .then(|| json!({"type": "text", "text": JSON_OBJECT_INSTRUCTION})))
}

/// `json_schema` → the schema for `output_config.format` (§1.7), moved out of the request.
pub(super) fn json_schema(req: &mut Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    if response_format_type(req)? != Some("json_schema") {
        return Ok(None);
    }
    let schema = req
        .get_mut("response_format")
        .and_then(|f| f.get_mut("json_schema"))
        .and_then(|j| j.get_mut("schema"));
    match schema {
        Some(s @ Value::Object(_)) => Ok(Some(s.take())),
        _ => Err(err(
            "response_format.json_schema.schema",
            "expected a JSON Schema object",
        )),
    }
}
