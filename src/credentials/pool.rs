//! Level 2: the key pool's place in the cascade.
//!
//! This holds the rule the cascade depends on (eligible key → serve; every active key cooling →
//! 429 with the soonest `Retry-After`; no active key → fall through to levels 3–4). Keys are
//! added through the admin API and persisted by the store once the key-pool issue lands; until
//! then the pool starts empty and so is not configured.

use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::secret::Secret;

/// A key's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Disabled,
    Banned,
}

/// One pool key as the cascade sees it.
#[derive(Debug, Clone)]
pub struct PoolKey {
    pub id: String,
    pub secret: Secret,
    pub status: KeyStatus,
    /// An active key cooling until this instant is not eligible.
    pub cooldown_until: Option<Instant>,
}

/// The outcome of a pick.
#[derive(Debug)]
pub enum PoolPick {
    Key { id: String, secret: Secret },
    AllCooling { retry_after_s: u64 },
    NoActiveKey,
}

/// The pool.
#[derive(Debug, Default)]
pub struct KeyPool {
    keys: RwLock<Vec<PoolKey>>,
    cursor: AtomicUsize,
}

impl KeyPool {
    pub fn new(keys: Vec<PoolKey>) -> Self {
        KeyPool {
            keys: RwLock::new(keys),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Configured = holds any key in any state (contract §5).
    pub fn is_configured(&self) -> bool {
        !self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Round-robin over eligible keys not in `exclude`.
    pub fn pick(&self, exclude: &[String]) -> PoolPick {
        let now = Instant::now();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let active: Vec<&PoolKey> = keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        if active.is_empty() {
            return PoolPick::NoActiveKey;
        }
        let eligible: Vec<&&PoolKey> = active
            .iter()
            .filter(|k| k.cooldown_until.is_none_or(|t| t <= now) && !exclude.contains(&k.id))
            .collect();
        if eligible.is_empty() {
            let soonest = active
                .iter()
                .filter_map(|k| k.cooldown_until)
                .filter(|t| *t > now)
                .min()
                .map(|t| t.duration_since(now))
                .unwrap_or(Duration::from_secs(1));
            return PoolPick::AllCooling {
                retry_after_s: soonest.as_secs_f64().ceil().max(1.0) as u64,
            };
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % eligible.len();
        let k = eligible[i];
        PoolPick::Key {
            id: k.id.clone(),
            secret: k.secret.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, status: KeyStatus, cool_s: Option<u64>) -> PoolKey {
        PoolKey {
            id: id.into(),
            secret: Secret::new(format!("fk-{id}-0123456789")),
            status,
            cooldown_until: cool_s.map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    #[test]
    fn empty_pool_is_not_configured() {
        assert!(!KeyPool::default().is_configured());
        assert!(matches!(
            KeyPool::default().pick(&[]),
            PoolPick::NoActiveKey
        ));
    }

    #[test]
    fn rules() {
        let p = KeyPool::new(vec![
            key("a", KeyStatus::Disabled, None),
            key("b", KeyStatus::Banned, None),
        ]);
        assert!(p.is_configured());
        assert!(matches!(p.pick(&[]), PoolPick::NoActiveKey));
        let p = KeyPool::new(vec![
            key("a", KeyStatus::Active, Some(30)),
            key("b", KeyStatus::Active, Some(5)),
        ]);
        match p.pick(&[]) {
            PoolPick::AllCooling { retry_after_s } => assert!((4..=5).contains(&retry_after_s)),
            other => panic!("{other:?}"),
        }
        let p = KeyPool::new(vec![
            key("a", KeyStatus::Active, None),
            key("b", KeyStatus::Active, None),
        ]);
        let ids: Vec<String> = (0..4)
            .map(|_| match p.pick(&[]) {
                PoolPick::Key { id, .. } => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["a", "b", "a", "b"]);
        match p.pick(&["a".to_string()]) {
            PoolPick::Key { id, .. } => assert_eq!(id, "b"),
            other => panic!("{other:?}"),
        }
    }
}
