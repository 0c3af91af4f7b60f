//! A request's conversation identity (contract §14), first found:
//!
//! 1. the header `x-session-id`;
//! 2. the header `x-claude-code-session-id`;
//! 3. the session part of Anthropic `metadata.user_id` (Claude Code sends
//!    `user_<hex>_account_<uuid>_session_<uuid>`; a `user_id` that is itself a JSON object
//!    with a `session_id` string is read too);
//! 4. OpenAI `prompt_cache_key`;
//! 5. OpenAI `user`.
//!
//! Empty (or blank) values and values of another JSON type are no identity: the next source is
//! asked. The same sources apply on every route. On the same-format routes the body's fields
//! are read from the raw top-level text (`translate::lazy::TopLevel`): only `metadata`,
//! `prompt_cache_key` or `user` is parsed, and only until one yields. Pure: no I/O; the caller
//! hashes what is found ([`crate::credentials::pool::KeyPool::conversation`]).

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::translate::lazy::TopLevel;

/// The headers that carry an identity, in precedence order.
pub(super) const HEADERS: [&str; 2] = ["x-session-id", "x-claude-code-session-id"];

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn non_empty_cow(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    match s {
        Cow::Borrowed(b) => non_empty(b).map(Cow::Borrowed),
        Cow::Owned(o) => non_empty(&o).map(|t| Cow::Owned(t.to_string())),
    }
}

/// The identity of the first identity header present and non-empty.
pub(super) fn from_headers(headers: &HeaderMap) -> Option<&str> {
    HEADERS.iter().find_map(|name| {
        headers
            .get_all(*name)
            .iter()
            .find_map(|v| std::str::from_utf8(v.as_bytes()).ok().and_then(non_empty))
    })
}

/// The session part of a `metadata.user_id`.
fn session_of(user_id: &str) -> Option<Cow<'_, str>> {
    let user_id = user_id.trim();
    if user_id.starts_with('{') {
        #[derive(Deserialize)]
        struct Ids<'a> {
            #[serde(borrow)]
            session_id: Cow<'a, str>,
        }
        let ids: Ids<'_> = serde_json::from_str(user_id).ok()?;
        return non_empty_cow(ids.session_id);
    }
    let at = if user_id.starts_with("session_") {
        0
    } else {
        user_id.rfind("_session_")? + 1
    };
    let session = &user_id[at + "session_".len()..];
    non_empty(session)?;
    // The whole `session_…` part: the same session reads the same whatever precedes it.
    Some(Cow::Borrowed(&user_id[at..]))
}

/// The identity in a parsed body.
pub(super) fn from_value(v: &Value) -> Option<Cow<'_, str>> {
    let field = |name: &str| v.get(name).and_then(Value::as_str).and_then(non_empty);
    v.get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .and_then(session_of)
        .or_else(|| field("prompt_cache_key").map(Cow::Borrowed))
        .or_else(|| field("user").map(Cow::Borrowed))
}

/// A JSON string, borrowed from the body when it holds no escape.
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The identity in a body read lazily: the raw text of `metadata`, `prompt_cache_key` and
/// `user`, each parsed only if the ones before it yield nothing.
pub(super) fn from_top<'a>(top: &TopLevel<'a>) -> Option<Cow<'a, str>> {
    #[derive(Deserialize)]
    struct Metadata<'a> {
        #[serde(borrow, default)]
        user_id: Option<Text<'a>>,
    }
    let string = |name: &str| -> Option<Cow<'a, str>> {
        let Text(s) = serde_json::from_str(top.raw(name)?).ok()?;
        non_empty_cow(s)
    };
    top.raw("metadata")
        .and_then(|raw| serde_json::from_str::<Metadata<'a>>(raw).ok())
        .and_then(|m| m.user_id)
        .and_then(|Text(id)| match id {
            Cow::Borrowed(b) => session_of(b),
            Cow::Owned(o) => session_of(&o).map(|s| Cow::Owned(s.into_owned())),
        })
        .or_else(|| string("prompt_cache_key"))
        .or_else(|| string("user"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    const CLAUDE: &str = "user_0123abcd_account_11111111-2222-3333-4444-555555555555_session_aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const SESSION: &str = "session_aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    /// Both readers of a body agree; returns the identity.
    fn body(v: Value) -> Option<String> {
        let text = v.to_string();
        let top = TopLevel::parse(&text).unwrap();
        let lazy = from_top(&top).map(Cow::into_owned);
        let parsed = from_value(&v).map(Cow::into_owned);
        assert_eq!(lazy, parsed, "lazy and parsed readers differ on {text}");
        lazy
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_come_first_in_their_order() {
        let h = headers(&[
            ("x-claude-code-session-id", b"cc-1"),
            ("x-session-id", b"s-1"),
        ]);
        assert_eq!(from_headers(&h), Some("s-1"));
        let h = headers(&[("x-claude-code-session-id", b"cc-1")]);
        assert_eq!(from_headers(&h), Some("cc-1"));
        assert_eq!(from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn empty_or_undecodable_headers_are_no_identity() {
        let h = headers(&[("x-session-id", b"  "), ("x-claude-code-session-id", b"cc")]);
        assert_eq!(from_headers(&h), Some("cc"), "blank falls through");
        let h = headers(&[("x-session-id", b""), ("x-session-id", b"second")]);
        assert_eq!(from_headers(&h), Some("second"));
        let h = headers(&[("x-session-id", b"\xff\xfe")]);
        assert_eq!(from_headers(&h), None, "not UTF-8");
        let h = headers(&[("x-session-id", " s-2 ".as_bytes())]);
        assert_eq!(from_headers(&h), Some("s-2"), "trimmed");
    }

    #[test]
    fn claude_code_metadata_gives_its_session_part() {
        assert_eq!(
            body(json!({"model": "m", "metadata": {"user_id": CLAUDE}})).as_deref(),
            Some(SESSION)
        );
        // Another user, same session: the same identity.
        let other = CLAUDE.replace("0123abcd", "ffff");
        assert_eq!(
            body(json!({"metadata": {"user_id": other}})).as_deref(),
            Some(SESSION)
        );
        assert_eq!(
            body(json!({"metadata": {"user_id": "session_x"}})).as_deref(),
            Some("session_x")
        );
        // Escaped in the body: read the same.
        let escaped = r#"{"metadata": {"user_id": "user_1_session_\u0041bc"}}"#;
        let top = TopLevel::parse(escaped).unwrap();
        assert_eq!(from_top(&top).as_deref(), Some("session_Abc"));
    }

    #[test]
    fn a_json_user_id_gives_its_session_id() {
        let id = json!({"device_id": "d", "session_id": "abc-123"}).to_string();
        assert_eq!(
            body(json!({"metadata": {"user_id": id}})).as_deref(),
            Some("abc-123")
        );
        let id = json!({"device_id": "d"}).to_string();
        assert_eq!(
            body(json!({"metadata": {"user_id": id}, "user": "u"})).as_deref(),
            Some("u")
        );
    }

    #[test]
    fn body_sources_in_precedence_order() {
        let all = json!({"metadata": {"user_id": CLAUDE}, "prompt_cache_key": "pck", "user": "u"});
        assert_eq!(body(all).as_deref(), Some(SESSION));
        let two = json!({"prompt_cache_key": "pck", "user": "u"});
        assert_eq!(body(two).as_deref(), Some("pck"));
        assert_eq!(body(json!({"user": "u"})).as_deref(), Some("u"));
        assert_eq!(body(json!({"model": "m", "messages": []})), None);
    }

    #[test]
    fn malformed_metadata_falls_through() {
        for metadata in [
            json!("user_1_session_abc"),
            json!(["x"]),
            json!(null),
            json!({"user_id": 42}),
            json!({"user_id": {"session": "x"}}),
            json!({"user_id": null}),
            json!({"user_id": ""}),
            json!({"user_id": "user_abc_account_def"}),
            json!({"user_id": "user_abc_session_"}),
            json!({"user_id": "user_abc_session_   "}),
            json!({"user_id": "{not json"}),
        ] {
            assert_eq!(
                body(json!({"metadata": metadata, "user": "fallback"})).as_deref(),
                Some("fallback"),
                "{metadata}"
            );
        }
    }

    #[test]
    fn non_strings_and_empty_strings_are_no_identity() {
        for v in [
            json!(""),
            json!("  "),
            json!(7),
            json!(true),
            json!({"a": 1}),
            json!(null),
        ] {
            assert_eq!(
                body(json!({"prompt_cache_key": v.clone(), "user": v.clone()})),
                None,
                "{v}"
            );
            assert_eq!(
                body(json!({"prompt_cache_key": v, "user": "u"})).as_deref(),
                Some("u")
            );
        }
    }
}
