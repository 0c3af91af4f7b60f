//! Same-format bodies without a DOM. A pass-through preparer (`/v1/messages`,
//! `/v1/messages/count_tokens`, `/v1/responses`) reads and writes only a few top-level fields
//! (`model`, `system`, `stream`, the reasoning fields…); the rest of the body (the conversation:
//! almost all of its bytes) goes upstream as the client wrote it. [`TopLevel`] keeps each
//! top-level value as its raw text, [`prepare`] parses only the fields a preparer touches, runs
//! the same preparer on them and writes the body: untouched fields verbatim, in their order,
//! then the prepared ones.
//!
//! Whatever this path cannot decide exactly as the general one (parse into a `Value`, prepare,
//! encode) would, it declines (`None`) and the caller takes the general path: a body that is
//! not an object, repeats a top-level key, or holds a touched field the preparer would reject
//! — so every error message and every accepted body mean the same as before. One difference is
//! deliberate: nested values are forwarded as sent (their whitespace, escapes and number
//! spelling included) rather than re-encoded.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Prepared, TranslateError};

/// The top-level fields of a JSON object body, values unparsed.
#[derive(Debug)]
pub struct TopLevel<'a> {
    fields: Vec<(String, &'a RawValue)>,
}

impl<'a> TopLevel<'a> {
    /// `None` when `text` is not exactly one JSON object with distinct top-level keys.
    pub fn parse(text: &'a str) -> Option<Self> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Vec<(String, &'de RawValue)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(fields)
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(Fields).ok()?;
        de.end().ok()?;
        let mut seen = HashSet::with_capacity(fields.len());
        if !fields.iter().all(|(k, _)| seen.insert(k.as_str())) {
            return None;
        }
        Some(TopLevel { fields })
    }

    /// The raw text of a top-level field.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.get())
    }
}

/// The top-level fields each pass-through preparer reads or writes.
pub const MESSAGES_FIELDS: [&str; 8] = [
    "model",
    "system",
    "stream",
    "max_tokens",
    "thinking",
    "temperature",
    "top_k",
    "top_p",
];
pub const RESPONSES_FIELDS: [&str; 4] = ["model", "instructions", "stream", "reasoning"];

/// Room reserved for the fields a preparer adds or grows.
const ADDED: usize = 2048;

/// Runs `prepare` on the `touched` fields of `top` and writes the whole body. `None` when a
/// touched field's text does not parse as a `Value` (the general path decides then); otherwise
/// the preparer's result, with `body` left `Null` and the encoded body beside it.
pub fn prepare(
    top: &TopLevel<'_>,
    touched: &[&str],
    prepare: impl FnOnce(Value) -> Result<Prepared, TranslateError>,
) -> Option<Result<(Prepared, Vec<u8>), TranslateError>> {
    let mut small = Map::new();
    // Every field as written, plus room for what the preparer adds (a system prompt, a
    // thinking block), so the output is allocated once.
    let mut size = 2 + ADDED;
    for (k, raw) in &top.fields {
        size += k.len() + 4 + raw.get().len();
        if touched.contains(&k.as_str()) {
            small.insert(k.clone(), serde_json::from_str(raw.get()).ok()?);
        }
    }
    let mut prepared = match prepare(Value::Object(small)) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let Value::Object(small) = std::mem::take(&mut prepared.body) else {
        // Not reached: the preparers return the object they were given.
        return None;
    };
    let mut out = String::with_capacity(size);
    out.push('{');
    let mut first = true;
    let mut key = |out: &mut String, k: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        super::encode::write_str(out, k);
        out.push(':');
    };
    for (k, raw) in &top.fields {
        if !touched.contains(&k.as_str()) {
            key(&mut out, k);
            out.push_str(raw.get());
        }
    }
    for (k, v) in &small {
        key(&mut out, k);
        super::encode::write_value(&mut out, v);
    }
    out.push('}');
    Some(Ok((prepared, out.into_bytes())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
