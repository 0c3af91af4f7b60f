//! Several instances sharing one pool (contract §12): the pool's side of `store::redis`.
//!
//! [`Replicated`] is the pool's `Persist` when Redis is configured: every change goes to the
//! local SQLite store *and* to the shared engine; an admin change is refused up front while
//! Redis is unreachable and acknowledged only once both took it. [`FleetApplier`] applies what
//! other instances changed to this instance's pool, stored settings, console sessions, client
//! keys and local store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::pool::{Balance, KeyPool, Persist, PersistError};
use crate::config::Settings;
use crate::store::records::StoreOp;
use crate::store::redis::{
    ADMIN_WAIT, Apply, ClientTable, Counters, Remote, SessionTable, Shared, Snapshot,
};
use crate::store::sqlite::Store;

/// The stored admin layer of `key_pool` settings (name → JSON value).
pub type StoredSettings = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

/// Replaces the stored settings layer and applies the effective settings to the pool.
pub fn apply_stored_settings(
    settings: &Settings,
    slot: &StoredSettings,
    pool: &KeyPool,
    stored: BTreeMap<String, serde_json::Value>,
) {
    let (effective, findings) = settings.key_pool_with(&stored);
    for w in findings.warnings.iter().chain(&findings.errors) {
        tracing::warn!("stored key_pool setting ignored: {w}");
    }
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = stored;
    pool.set_settings(effective);
}

/// The local store plus the shared engine.
#[derive(Debug)]
pub struct Replicated {
    pub local: Store,
    pub shared: Arc<Shared>,
}

impl Persist for Replicated {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.shared.submit(&ops, false);
        self.local.submit(ops);
    }

    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), PersistError>> {
        let shared = self.shared.submit(&ops, true);
        // A bulk change (thousands of keys) is sent in pipelines: allow for it.
        let wait = ADMIN_WAIT + std::time::Duration::from_micros(200 * ops.len() as u64);
        let local = Persist::enqueue_acked(&self.local, ops);
        let (tx, rx) = oneshot::channel();
        let joined = async move {
            let local = local
                .await
                .unwrap_or(Err(PersistError::Shared("the store stopped".into())));
            local?;
            let Some(shared) = shared else {
                return Ok(());
            };
            match tokio::time::timeout(wait, shared).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(PersistError::Shared(format!(
                    "saved on this instance, but Redis did not take it: {e}; it is sent again when Redis answers"
                ))),
                Ok(Err(_)) => Err(PersistError::Shared("the shared writer stopped".into())),
                Err(_) => Err(PersistError::Shared(format!(
                    "saved on this instance, but Redis did not confirm it within {} ms; it is sent again when Redis answers",
                    wait.as_millis()
                ))),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tx.send(joined.await);
                });
            }
            Err(_) => {
                let _ = tx.send(Err(PersistError::Shared("no runtime".into())));
            }
        }
        rx
    }

    fn enqueue_local(&self, ops: Vec<StoreOp>) {
        self.local.submit(ops);
    }

    fn writable(&self) -> futures_util::future::BoxFuture<'static, Result<(), PersistError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            shared
                .confirm_writable()
                .await
                .map_err(|e| PersistError::Shared(e.to_string()))
        })
    }
}

/// Fleet-wide round-robin positions from the shared counter.
#[derive(Debug)]
pub struct SharedPositions(pub Arc<Shared>);

impl super::pool::Positions for SharedPositions {
    fn next(&self, tier: i64) -> Option<u64> {
        self.0.rr_next(tier)
    }
}

/// Applies other instances' changes to this one.
#[derive(Debug)]
pub struct FleetApplier {
    pub pool: Arc<KeyPool>,
    pub settings: Arc<Settings>,
    pub stored: StoredSettings,
    pub local: Store,
    /// The console's sessions (kept by the inbound layer).
    pub sessions: Arc<dyn SessionTable>,
    /// The client keys (kept by the inbound layer).
    pub clients: Arc<dyn ClientTable>,
}

impl std::fmt::Debug for dyn SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTable")
    }
}

impl std::fmt::Debug for dyn ClientTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTable")
    }
}

impl FleetApplier {
    fn stored(&self) -> BTreeMap<String, serde_json::Value> {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_balance(&self, b: &crate::store::records::BalanceRecord) {
        self.pool.set_balance(
            &b.key_id,
            Balance {
                used: b.used,
                allowance: b.allowance,
                synced_at: b.synced_at,
                trial_end: b.trial_end,
            },
        );
    }
}

impl Apply for FleetApplier {
    fn apply(&self, change: Remote) {
        match change {
            Remote::Key(r) => self.pool.apply_remote_key(r),
            Remote::DeleteKey(id) => self.pool.apply_remote_delete(&id),
            Remote::Group(g) => self.pool.apply_remote_group(g),
            Remote::DeleteGroup { id, move_keys_to } => {
                self.pool.apply_remote_group_delete(&id, &move_keys_to)
            }
            Remote::Setting { name, value } => {
                let mut stored = self.stored();
                if stored.get(&name) == Some(&value) {
                    return;
                }
                stored.insert(name.clone(), value.clone());
                self.local.submit(vec![StoreOp::PutSetting { name, value }]);
                apply_stored_settings(&self.settings, &self.stored, &self.pool, stored);
            }
            Remote::ClearSettings => {
                if self.stored().is_empty() {
                    return;
                }
                self.local.submit(vec![StoreOp::ClearSettings]);
                apply_stored_settings(&self.settings, &self.stored, &self.pool, BTreeMap::new());
            }
            Remote::Events(evs) => self.local.submit(vec![StoreOp::AddEvents(evs)]),
            Remote::Balance(b) => {
                self.set_balance(&b);
                self.local.submit(vec![StoreOp::PutBalance(b)]);
            }
            Remote::Session { digest, data } => self.sessions.apply_session(&digest, Some(&data)),
            Remote::EndSession { digest } => self.sessions.apply_session(&digest, None),
            Remote::Client(rec) => self.clients.apply_client(&rec.id.clone(), Some(rec)),
            Remote::DeleteClient(id) => self.clients.apply_client(&id, None),
        }
    }

    fn replace_all(&self, snap: Snapshot) {
        self.sessions.replace_sessions(snap.sessions);
        self.clients.replace_clients(snap.clients);
        self.pool.replace_shared(snap.keys, snap.groups);
        if snap.settings != self.stored() {
            let mut ops = vec![StoreOp::ClearSettings];
            ops.extend(snap.settings.iter().map(|(n, v)| StoreOp::PutSetting {
                name: n.clone(),
                value: v.clone(),
            }));
            self.local.submit(ops);
            apply_stored_settings(&self.settings, &self.stored, &self.pool, snap.settings);
        }
        for b in &snap.balances {
            self.set_balance(b);
        }
        if !snap.balances.is_empty() {
            self.local
                .submit(snap.balances.into_iter().map(StoreOp::PutBalance).collect());
        }
    }

    fn local(&self) -> Snapshot {
        let (keys, groups) = self.pool.shared_state();
        Snapshot {
            keys,
            groups,
            settings: self.stored(),
            balances: Vec::new(),
            sessions: self.sessions.local_sessions(),
            clients: self.clients.local_clients(),
        }
    }

    fn fleet_counters(&self, others: HashMap<String, Counters>) {
        self.pool.set_fleet_counters(others);
    }

    fn clients(&self) -> Option<&dyn ClientTable> {
        Some(self.clients.as_ref())
    }
}
