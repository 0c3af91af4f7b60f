//! Console sessions (contract §11): what `POST /admin/session` hands out and every admin route
//! accepts instead of `x-admin-key`.
//!
//! A session is 32 random bytes from the operating system, given to the browser once as the
//! `droid2api_session` cookie and kept here only as its SHA-256 digest, with its CSRF token
//! (32 more random bytes), its expiry (12 h) and the digest of the admin key it was opened
//! with: a session opened under another `ADMIN_ACCESS_KEY` is never accepted. Sessions live in
//! this process's memory, so a restart ends them all (the console asks for the key again) —
//! unless instances share state through Redis (contract §12): then every session opened or
//! ended is shared (digest, CSRF token, expiry, admin-key digest; never the cookie itself), so
//! a login on one instance behind a load balancer is valid on all of them, a logout ends it
//! everywhere, and a restarted instance gets the open sessions back from Redis.
//! The table is bounded: past [`MAX_SESSIONS`] the session closest to its end is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// Several instances: where opened and ended sessions are shared.
    shared: OnceLock<Arc<crate::store::redis::Shared>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SessionWire {
    csrf: String,
    expires_at: Millis,
    admin_key: String,
}

fn wire(s: &Session) -> String {
    serde_json::to_string(&SessionWire {
        csrf: s.csrf.clone(),
        expires_at: s.expires_at,
        admin_key: hex::encode(s.admin_key),
    })
    .unwrap_or_default()
}

fn unwire(digest_hex: &str, data: &str) -> Option<(Digest32, Session)> {
    let w: SessionWire = serde_json::from_str(data).ok()?;
    let id: Digest32 = hex::decode(digest_hex).ok()?.try_into().ok()?;
    let admin_key: Digest32 = hex::decode(&w.admin_key).ok()?.try_into().ok()?;
    Some((
        id,
        Session {
            csrf: w.csrf,
            expires_at: w.expires_at,
            admin_key,
        },
    ))
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
        let session = Session {
            csrf: csrf.clone(),
            expires_at,
            admin_key: digest(admin_key.expose()),
        };
        let id = digest(&token);
        let shared = wire(&session);
        let mut gone = Vec::new();
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|k, s| {
                let keep = s.expires_at > now;
                if !keep {
                    gone.push(*k);
                }
                keep
            });
            while open.len() >= MAX_SESSIONS {
                let Some(first) = open
                    .iter()
                    .min_by_key(|(_, s)| s.expires_at)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                open.remove(&first);
                gone.push(first);
            }
            open.insert(id, session);
        }
        if let Some(sh) = self.shared.get() {
            for g in gone {
                sh.share_session(&hex::encode(g), None);
            }
            sh.share_session(&hex::encode(id), Some(shared));
        }
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
        let id = digest(token);
        let ended = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .is_some();
        if ended && let Some(sh) = self.shared.get() {
            sh.share_session(&hex::encode(id), None);
        }
        ended
    }

    /// Shares every session opened or ended from now on (several instances).
    pub fn share_through(&self, shared: Arc<crate::store::redis::Shared>) {
        let _ = self.shared.set(shared);
    }

    /// A session opened (`Some`) or ended (`None`) on another instance.
    pub fn apply_remote(&self, digest_hex: &str, data: Option<&str>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match data.and_then(|d| unwire(digest_hex, d)) {
            Some((id, s)) => {
                if open.len() < MAX_SESSIONS || open.contains_key(&id) {
                    open.insert(id, s);
                }
            }
            None => {
                if let Some(id) = hex::decode(digest_hex)
                    .ok()
                    .and_then(|v| Digest32::try_from(v).ok())
                {
                    open.remove(&id);
                }
            }
        }
    }

    /// Replaces the table with the fleet's sessions (expired ones are left out).
    pub fn replace_remote(&self, all: Vec<(String, String)>, now: Millis) {
        let mut fresh: Vec<(Digest32, Session)> = all
            .iter()
            .filter_map(|(d, data)| unwire(d, data))
            .filter(|(_, s)| s.expires_at > now)
            .collect();
        fresh.sort_by_key(|(_, s)| std::cmp::Reverse(s.expires_at));
        fresh.truncate(MAX_SESSIONS);
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = fresh.into_iter().collect();
    }

    /// Every open session as shared records (digest, record).
    pub fn records(&self) -> Vec<(String, String)> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| (hex::encode(id), wire(s)))
            .collect()
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
    fn a_session_shared_by_another_instance_is_valid_here_until_it_ends_there() {
        let (a, b) = (Sessions::default(), Sessions::default());
        let k = key("admin-key-0123456789");
        let opened = a.open(&k, 1_000).unwrap();
        // What instance A shares, instance B applies.
        for (d, data) in a.records() {
            b.apply_remote(&d, Some(&data));
        }
        assert_eq!(
            b.check(&opened.token, &k, 2_000),
            Check::Valid {
                csrf: opened.csrf.clone()
            }
        );
        assert_eq!(
            b.check(&opened.token, &key("another-admin-key-987"), 2_000),
            Check::Invalid
        );
        let d = hex::encode(digest(&opened.token));
        b.apply_remote(&d, None);
        assert_eq!(b.check(&opened.token, &k, 2_000), Check::Invalid);
        // A resync keeps only what the fleet holds, unexpired; garbage is skipped.
        b.replace_remote(
            vec![
                (d.clone(), a.records()[0].1.clone()),
                ("zz".into(), "{}".into()),
            ],
            2_000,
        );
        assert!(matches!(
            b.check(&opened.token, &k, 2_000),
            Check::Valid { .. }
        ));
        b.replace_remote(a.records(), opened.expires_at + 1);
        assert!(b.is_empty());
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
