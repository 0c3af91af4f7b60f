//! Secret values (Factory keys, refresh and access tokens, access keys).
//!
//! A [`Secret`] never prints itself: `Debug` and `Display` show only a mask. The raw value is
//! reachable through [`Secret::expose`], which is called only where a secret is sent upstream,
//! compared in constant time, stored, or exported.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A secret string. Cloning is cheap enough (keys are short) and keeps the value wrapped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value. Callers trim user input before wrapping.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The raw value. Only for the upstream call, constant-time comparison, storage and export.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The masked form used everywhere a key is shown: first 6 + `…` + last 4 characters.
    pub fn masked(&self) -> String {
        mask(self.expose())
    }

    /// Constant-time equality against a candidate (timing reveals only the length).
    pub fn ct_eq(&self, candidate: &str) -> bool {
        self.expose().as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// Length in characters (used by start-up checks such as the admin key length warning).
    pub fn char_len(&self) -> usize {
        self.expose().chars().count()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks a secret as first 6 + `…` + last 4 characters. Values of 12 characters or fewer are
/// masked completely, so that a short secret is never mostly revealed.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 12 {
        return "…".to_string() + &"*".repeat(chars.len().min(8));
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Masks the userinfo of every URL in `text` (`http://user:pass@host` → `http://***@host`), so
/// proxy credentials never reach a log line or a message.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("fk-abcdefghijklmnopqrstuvwxyz");
        assert_eq!(format!("{s:?}"), "Secret(fk-abc…wxyz)");
        assert_eq!(format!("{s}"), "fk-abc…wxyz");
        assert!(!format!("{s:?}").contains("mnop"));
    }

    #[test]
    fn short_secrets_are_masked_completely() {
        assert_eq!(mask("abc"), "…***");
        assert!(!mask("123456789012").contains('1'));
    }

    #[test]
    fn constant_time_compare() {
        let s = Secret::new("client-key-123");
        assert!(s.ct_eq("client-key-123"));
        assert!(!s.ct_eq("client-key-124"));
        assert!(!s.ct_eq(""));
    }
}
