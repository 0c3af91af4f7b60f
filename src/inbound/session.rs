//! Console sessions (contract §11): what `POST /admin/session` hands out and every admin route
//! accepts instead of `x-admin-key`.
//!
//! A session is 32 random bytes from the operating system, given to the browser once as the
//! `droid2api_session` cookie and kept here only as its SHA-256 digest, with its CSRF token
//! (32 more random bytes), its expiry (12 h) and the digest of the admin key it was opened
//! with: a session opened under another `ADMIN_ACCESS_KEY` is never accepted. Sessions live in
//! this process's memory, so a restart ends them all (the console asks for the key again).
//! The table is bounded: past [`MAX_SESSIONS`] the session closest to its end is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::store::records::Millis;

/// The session cookie's name.
pub const COOKIE: &str = "droid2api_session";
/// How long a session lasts.
pub const LIFETIME_MS: Millis = 12 * 3600 * 1000;
/// Sessions kept at most (logins past it push out the one closest to its end).
pub const MAX_SESSIONS: usize = 1024;

type Digest32 = [u8; 32];

#[derive(Debug)]
struct Session {
    csrf: String,
    expires_at: Millis,
    admin_key: Digest32,
}

/// A session just opened: the cookie value and the CSRF token go to the browser once.
#[derive(Debug)]
pub struct Opened {
    pub token: String,
    pub csrf: String,
    pub expires_at: Millis,
}

/// A session presented by a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Open; the CSRF token a state-changing call must carry.
    Valid { csrf: String },
    /// Unknown, ended, expired, or opened under another admin key.
    Invalid,
}

/// Failures opening a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// The open sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<Digest32, Session>>,
}

fn digest(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

fn random_hex() -> Result<String, SessionError> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| SessionError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

impl Sessions {
    /// Opens a session for a browser that proved it knows `admin_key`.
    pub fn open(&self, admin_key: &Secret, now: Millis) -> Result<Opened, SessionError> {
        let token = random_hex()?;
        let csrf = random_hex()?;
        let expires_at = now + LIFETIME_MS;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.expires_at > now);
        while open.len() >= MAX_SESSIONS {
            let Some(first) = open
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            open.remove(&first);
        }
        open.insert(
            digest(&token),
            Session {
                csrf: csrf.clone(),
                expires_at,
                admin_key: digest(admin_key.expose()),
            },
        );
        Ok(Opened {
            token,
            csrf,
            expires_at,
        })
    }

    /// Whether `token` names an open session under `admin_key`.
    pub fn check(&self, token: &str, admin_key: &Secret, now: Millis) -> Check {
        let id = digest(token);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = open.get(&id) else {
            return Check::Invalid;
        };
        let same_key: bool = s.admin_key.ct_eq(&digest(admin_key.expose())).into();
        if s.expires_at <= now || !same_key {
            open.remove(&id);
            return Check::Invalid;
        }
        Check::Valid {
            csrf: s.csrf.clone(),
        }
    }

    /// Ends a session; whether it was open.
    pub fn end(&self, token: &str) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&digest(token)).is_some()
    }

    /// Sessions currently held (expired ones included until the next login prunes them).
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a CSRF token sent by the browser is the session's (constant time).
pub fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(expected.as_bytes().ct_eq(g.trim().as_bytes())))
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value opening a session (`Secure` when the browser came over https).
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        LIFETIME_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value removing the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn key(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn a_session_is_valid_until_it_ends_expires_or_the_admin_key_changes() {
        let s = Sessions::default();
        let k = key("admin-key-0123456789abcdef");
        let o = s.open(&k, 1_000).unwrap();
        assert_eq!(o.token.len(), 64);
        assert_ne!(o.token, o.csrf);
        assert_eq!(o.expires_at, 1_000 + LIFETIME_MS);
        assert_eq!(
            s.check(&o.token, &k, 2_000),
            Check::Valid {
                csrf: o.csrf.clone()
            }
        );
        assert_eq!(s.check("not-a-session", &k, 2_000), Check::Invalid);
        // Another admin key: refused, and forgotten.
        assert_eq!(
            s.check(&o.token, &key("another-admin-key-0123456"), 2_000),
            Check::Invalid
        );
        assert_eq!(s.check(&o.token, &k, 2_000), Check::Invalid);
        // Expiry.
        let o = s.open(&k, 1_000).unwrap();
        assert_eq!(s.check(&o.token, &k, 1_000 + LIFETIME_MS), Check::Invalid);
        // Logout.
        let o = s.open(&k, 1_000).unwrap();
        assert!(s.end(&o.token));
        assert!(!s.end(&o.token));
        assert_eq!(s.check(&o.token, &k, 2_000), Check::Invalid);
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let k = key("admin-key-0123456789abcdef");
        let first = s.open(&k, 0).unwrap();
        for i in 0..MAX_SESSIONS {
            s.open(&k, 1 + i as Millis).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        // The oldest (closest to its end) made room.
        assert_eq!(s.check(&first.token, &k, 10), Check::Invalid);
    }

    #[test]
    fn cookies_and_csrf_tokens_are_read_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie_value(&h), None);
        h.append(
            "cookie",
            HeaderValue::from_static("a=1; droid2api_session_x=no"),
        );
        h.append(
            "cookie",
            HeaderValue::from_static("lang=en; droid2api_session=abc123 ; z=2"),
        );
        assert_eq!(cookie_value(&h), Some("abc123"));
        assert!(csrf_matches("tok", Some("tok")));
        assert!(!csrf_matches("tok", Some("tok2")));
        assert!(!csrf_matches("tok", None));
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(
            set_cookie("t", false).contains("HttpOnly; SameSite=Strict; Path=/; Max-Age=43200")
        );
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
