//! Scrubbing secrets out of upstream messages (contract §9): an upstream error body, a 402
//! reason, a balance-sync failure or a key-test message may echo a credential back; before such
//! text reaches a client, a log line, a metric or an admin view, every live secret in it is
//! replaced by its mask (`fk-abc…wxyz`).
//!
//! The secrets: every pool key, the level-1 key (`FACTORY_API_KEY`), the level-3 refresh and
//! access tokens, a level-4 static token, plus the credentials of the request at hand (its
//! pool or client key), passed as `extra`. Pool keys and level-3 tokens change at run time, so
//! the Aho-Corasick automaton over them is rebuilt lazily, on the first scrub after the pool's
//! secrets generation or the refresh generation moved. Scrubbing runs on error paths only,
//! never on a successful request.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::pool::KeyPool;
use super::refresh::RefreshManager;
use crate::secret::Secret;

/// Secrets shorter than this are not scrubbed (masking them would garble ordinary text; every
/// valid key is at least 8 characters).
pub const MIN_SECRET_LEN: usize = 8;

/// An automaton over a set of secrets and their masks.
pub struct SecretSet {
    ac: Option<AhoCorasick>,
    masks: Vec<String>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSet")
            .field("secrets", &self.masks.len())
            .finish()
    }
}

impl SecretSet {
    /// Builds the automaton (leftmost-longest: a key that is a prefix of another never leaves
    /// the longer one's tail behind).
    pub fn build<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut patterns: Vec<&str> = secrets
            .into_iter()
            .map(Secret::expose)
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        patterns.sort_unstable();
        patterns.dedup();
        let masks = patterns.iter().map(|p| crate::secret::mask(p)).collect();
        let ac = if patterns.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        SecretSet { ac, masks }
    }

    /// `text` with every secret replaced by its mask (borrowed when there is none).
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.ac {
            Some(ac) if ac.is_match(text) => Cow::Owned(ac.replace_all(text, &self.masks)),
            _ => Cow::Borrowed(text),
        }
    }

    /// Byte form of [`SecretSet::scrub`]: `None` when nothing matched.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        match &self.ac {
            Some(ac) if ac.is_match(bytes) => Some(ac.replace_all_bytes(bytes, &self.masks)),
            _ => None,
        }
    }

    /// Number of secrets in the set.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
}

/// The automaton and the generations it was built for.
struct Built {
    pool_generation: u64,
    refresh_generation: u64,
    set: SecretSet,
}

/// Knows every live secret; cheap to share.
pub struct Scrubber {
    pool: Arc<KeyPool>,
    refresh: Option<Arc<RefreshManager>>,
    /// Secrets fixed for the process's life (level 1, level 4).
    fixed: Vec<Secret>,
    built: RwLock<Option<Arc<Built>>>,
    /// Serialises rebuilds: callers arriving meanwhile wait and reuse the result.
    building: Mutex<()>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").finish_non_exhaustive()
    }
}

impl Scrubber {
    pub fn new(
        pool: Arc<KeyPool>,
        refresh: Option<Arc<RefreshManager>>,
        fixed: Vec<Secret>,
    ) -> Self {
        Scrubber {
            pool,
            refresh,
            fixed,
            built: RwLock::new(None),
            building: Mutex::new(()),
        }
    }

    fn refresh_generation(&self) -> u64 {
        self.refresh.as_ref().map_or(0, |r| r.tokens().0)
    }

    /// The automaton for the current secrets, rebuilt when they changed. One caller rebuilds
    /// (about 80 ms at 10,000 keys, see `benches/scrub.rs`); callers arriving meanwhile go on
    /// with the previous automaton rather than wait (each request's own credentials are
    /// scrubbed separately, as `extra`, so only a key added in the last moments and echoed by a
    /// request that did not use it could pass). Only the very first build is waited for.
    fn current(&self) -> Arc<Built> {
        let wanted = (self.pool.secrets_generation(), self.refresh_generation());
        let stale = {
            let built = self.built.read().unwrap_or_else(|e| e.into_inner());
            match built.as_ref() {
                Some(b) if (b.pool_generation, b.refresh_generation) == wanted => {
                    return Arc::clone(b);
                }
                other => other.cloned(),
            }
        };
        let _building = match (self.building.try_lock(), stale) {
            (Ok(guard), _) => guard,
            (Err(std::sync::TryLockError::Poisoned(p)), _) => p.into_inner(),
            (Err(std::sync::TryLockError::WouldBlock), Some(stale)) => return stale,
            (Err(std::sync::TryLockError::WouldBlock), None) => {
                self.building.lock().unwrap_or_else(|e| e.into_inner())
            }
        };
        if let Some(b) = self
            .built
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|b| (b.pool_generation, b.refresh_generation) == wanted)
        {
            return Arc::clone(b);
        }
        let (pool_generation, mut secrets) = self.pool.secrets();
        let refresh_generation = match &self.refresh {
            Some(r) => {
                let (g, rt, at) = r.tokens();
                secrets.push(rt);
                secrets.extend(at);
                g
            }
            None => 0,
        };
        secrets.extend(self.fixed.iter().cloned());
        let started = std::time::Instant::now();
        let set = SecretSet::build(&secrets);
        tracing::debug!(
            secrets = set.len(),
            ms = started.elapsed().as_millis() as u64,
            "scrubber rebuilt"
        );
        let built = Arc::new(Built {
            pool_generation,
            refresh_generation,
            set,
        });
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&built));
        built
    }

    /// `text` with every live secret and every `extra` secret replaced by its mask.
    pub fn scrub<'t>(&self, text: &'t str, extra: &[&Secret]) -> Cow<'t, str> {
        let built = self.current();
        let mut out = built.set.scrub(text);
        for s in extra {
            let v = s.expose();
            if v.len() >= MIN_SECRET_LEN && out.contains(v) {
                out = Cow::Owned(out.replace(v, &s.masked()));
            }
        }
        out
    }

    /// [`Scrubber::scrub`] on an owned string.
    pub fn scrub_string(&self, text: String, extra: &[&Secret]) -> String {
        match self.scrub(&text, extra) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// Byte form: `None` when nothing had to be replaced.
    pub fn scrub_bytes(&self, bytes: &[u8], extra: &[&Secret]) -> Option<Vec<u8>> {
        let built = self.current();
        let mut out = built.set.scrub_bytes(bytes);
        for s in extra {
            let v = s.expose().as_bytes();
            if v.len() < MIN_SECRET_LEN {
                continue;
            }
            let cur: &[u8] = out.as_deref().unwrap_or(bytes);
            if memchr::memmem::find(cur, v).is_some() {
                let replaced = replace_bytes(cur, v, s.masked().as_bytes());
                out = Some(replaced);
            }
        }
        out
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut last = 0;
    for i in memchr::memmem::find_iter(haystack, needle) {
        if i < last {
            continue;
        }
        out.extend_from_slice(&haystack[last..i]);
        out.extend_from_slice(with);
        last = i + needle.len();
    }
    out.extend_from_slice(&haystack[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPoolSettings;
    use crate::credentials::pool::SystemClock;

    async fn pool(keys: &[&str]) -> Arc<KeyPool> {
        let p = Arc::new(KeyPool::new(
            Vec::new(),
            Vec::new(),
            KeyPoolSettings::default(),
            None,
            Arc::new(SystemClock),
        ));
        for k in keys {
            p.add_key(k, None, None).await.unwrap();
        }
        p
    }

    #[tokio::test]
    async fn every_secret_becomes_its_mask() {
        let p = pool(&["fk-first-key-0000000001", "fk-second-key-000000002"]).await;
        let s = Scrubber::new(p, None, vec![Secret::new("fk-env-level-one-0000001")]);
        let client = Secret::new("client-own-credential-1");
        let text = "bad keys fk-first-key-0000000001, fk-second-key-000000002 and \
                    fk-env-level-one-0000001 and client-own-credential-1; short abc";
        let out = s.scrub(text, &[&client]);
        assert_eq!(
            out,
            "bad keys fk-fir…0001, fk-sec…0002 and fk-env…0001 and client…al-1; short abc"
        );
        assert!(matches!(
            s.scrub("nothing here", &[&client]),
            Cow::Borrowed(_)
        ));
        let bytes = s
            .scrub_bytes(
                b"{\"m\":\"fk-first-key-0000000001 client-own-credential-1\"}",
                &[&client],
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"m\":\"fk-fir…0001 client…al-1\"}"
        );
        assert!(s.scrub_bytes(b"clean", &[]).is_none());
    }

    #[tokio::test]
    async fn a_key_added_later_is_scrubbed_too() {
        let p = pool(&["fk-first-key-0000000001"]).await;
        let s = Scrubber::new(Arc::clone(&p), None, Vec::new());
        assert_eq!(
            s.scrub("x fk-later-key-0000000009", &[]),
            "x fk-later-key-0000000009"
        );
        p.add_key("fk-later-key-0000000009", None, None)
            .await
            .unwrap();
        assert_eq!(s.scrub("x fk-later-key-0000000009", &[]), "x fk-lat…0009");
    }

    #[test]
    fn the_longest_secret_wins_and_short_ones_are_ignored() {
        let a = Secret::new("fk-prefix-00000000");
        let b = Secret::new("fk-prefix-00000000-longer");
        let short = Secret::new("abc");
        let set = SecretSet::build([&a, &b, &short]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.scrub("k=fk-prefix-00000000-longer."), "k=fk-pre…nger.");
        assert_eq!(set.scrub("k=fk-prefix-00000000."), "k=fk-pre…0000.");
        assert_eq!(set.scrub("abc"), "abc");
    }
}
