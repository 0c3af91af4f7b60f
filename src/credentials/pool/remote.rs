//! Changes made by other instances (contract §12), applied to the in-memory pool and mirrored to
//! this instance's local store only (they are already shared). A remote record carries the
//! key's shared fields; this instance keeps its own counters, health window and balance.

use std::collections::{HashMap, HashSet};

use super::{Health, Inner, KeyPool, KeyView, fingerprint};
use crate::store::records::{
    DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, KeyRecord, KeyStatus, Millis, PoolGroup, StoreOp,
};
use crate::store::redis::Counters;

/// Whether two records differ in what another instance can change.
fn shared_fields_differ(a: &KeyRecord, b: &KeyRecord) -> bool {
    a.status != b.status
        || a.status_reason != b.status_reason
        || a.status_changed_at != b.status_changed_at
        || a.disabled_by != b.disabled_by
        || a.pool_group != b.pool_group
        || a.notes != b.notes
        || a.cooldown_until != b.cooldown_until
        || a.last_test != b.last_test
}

impl Inner {
    /// Applies one remote key record; the local-store op to mirror it, if anything changed.
    fn remote_key(&mut self, mut rec: KeyRecord, now: Millis) -> Option<StoreOp> {
        if !self.groups.contains_key(&rec.pool_group) {
            rec.pool_group = DEFAULT_GROUP.into();
        }
        match self.by_id.get(&rec.id).copied() {
            Some(i) => {
                let s = self.slots[i].as_mut()?;
                if !shared_fields_differ(&s.rec, &rec) {
                    return None;
                }
                let regroup = s.rec.pool_group != rec.pool_group;
                if rec.status == KeyStatus::Active && s.rec.status != KeyStatus::Active {
                    // Enabled elsewhere: a fresh start, as a local enable gives.
                    s.health = Health::default();
                }
                if rec.cooldown_until.is_none() && s.rec.cooldown_until.is_some() {
                    s.health = Health::default();
                }
                s.rec.status = rec.status;
                s.rec.status_reason = rec.status_reason;
                s.rec.status_changed_at = rec.status_changed_at;
                s.rec.disabled_by = rec.disabled_by;
                s.rec.pool_group = rec.pool_group;
                s.rec.notes = rec.notes;
                s.rec.cooldown_until = rec.cooldown_until;
                s.rec.last_test = rec.last_test;
                let out = s.rec.clone();
                if regroup {
                    self.regroup(i, now);
                } else {
                    self.place(i, now);
                }
                Some(StoreOp::PutKey(out))
            }
            None => {
                if self
                    .by_secret
                    .contains_key(&fingerprint(rec.secret.expose()))
                {
                    // The same secret under another id (added on two instances at once): the
                    // one already here stays.
                    return None;
                }
                self.insert(rec.clone(), now);
                Some(StoreOp::PutKey(rec))
            }
        }
    }

    fn remote_group(&mut self, g: PoolGroup, now: Millis) -> Option<StoreOp> {
        if self.groups.get(&g.id) == Some(&g) {
            return None;
        }
        let rebuild = self
            .groups
            .get(&g.id)
            .is_none_or(|old| old.priority != g.priority);
        self.groups.insert(g.id.clone(), g.clone());
        if rebuild {
            self.rebuild(now);
        }
        Some(StoreOp::PutGroup(g))
    }

    fn remote_group_delete(&mut self, id: &str, move_to: &str, now: Millis) -> Option<StoreOp> {
        if id == DEFAULT_GROUP {
            return None;
        }
        self.groups.remove(id)?;
        let to = if self.groups.contains_key(move_to) {
            move_to
        } else {
            DEFAULT_GROUP
        };
        for s in self.slots.iter_mut().flatten() {
            if s.rec.pool_group == id {
                s.rec.pool_group = to.into();
            }
        }
        self.rebuild(now);
        Some(StoreOp::DeleteGroup {
            id: id.into(),
            move_keys_to: to.into(),
        })
    }
}

impl KeyPool {
    fn mirror(&self, ops: Vec<StoreOp>) {
        if !ops.is_empty()
            && let Some(p) = &self.persist
        {
            p.enqueue_local(ops);
        }
    }

    /// Another instance changed (or added) a key.
    pub fn apply_remote_key(&self, rec: KeyRecord) {
        let now = self.now();
        let op = self.lock().remote_key(rec, now);
        if let Some(op) = op {
            self.mirror(vec![op]);
            self.publish_gauges();
        }
    }

    /// Another instance deleted a key.
    pub fn apply_remote_delete(&self, id: &str) {
        let removed = self.lock().remove(id).is_some();
        if removed {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            self.mirror(vec![StoreOp::DeleteKey(id.to_string())]);
            self.publish_gauges();
        }
    }

    /// Another instance created or changed a pool group.
    pub fn apply_remote_group(&self, g: PoolGroup) {
        let now = self.now();
        let op = self.lock().remote_group(g, now);
        self.mirror(op.into_iter().collect());
    }

    /// Another instance deleted a pool group (its keys move with it).
    pub fn apply_remote_group_delete(&self, id: &str, move_keys_to: &str) {
        let now = self.now();
        let op = self.lock().remote_group_delete(id, move_keys_to, now);
        self.mirror(op.into_iter().collect());
    }

    /// Replaces the shared state with the fleet's: groups and keys not in it go, the others
    /// take its shared fields (each key keeps this instance's counters).
    pub fn replace_shared(&self, keys: Vec<KeyRecord>, groups: Vec<PoolGroup>) {
        let now = self.now();
        let mut ops = Vec::new();
        {
            let mut inner = self.lock();
            let wanted: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
            let gone: Vec<String> = inner
                .groups
                .keys()
                .filter(|id| *id != DEFAULT_GROUP && !wanted.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                ops.extend(inner.remote_group_delete(&id, DEFAULT_GROUP, now));
            }
            for g in groups {
                ops.extend(inner.remote_group(g, now));
            }
            inner
                .groups
                .entry(DEFAULT_GROUP.to_string())
                .or_insert_with(|| PoolGroup {
                    id: DEFAULT_GROUP.into(),
                    name: "Default".into(),
                    priority: DEFAULT_GROUP_PRIORITY,
                    description: String::new(),
                    created_at: now,
                });
            let keep: HashSet<String> = keys.iter().map(|r| r.id.clone()).collect();
            let drop: Vec<String> = inner
                .by_id
                .keys()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect();
            for id in drop {
                if inner.remove(&id).is_some() {
                    ops.push(StoreOp::DeleteKey(id));
                }
            }
            for rec in keys {
                ops.extend(inner.remote_key(rec, now));
            }
        }
        self.mirror(ops);
        self.publish_gauges();
    }

    /// Every key and group as this instance holds them (own counters), to seed Redis.
    pub fn shared_state(&self) -> (Vec<KeyRecord>, Vec<PoolGroup>) {
        let inner = self.lock();
        let keys = inner
            .slots
            .iter()
            .flatten()
            .map(|s| s.rec.clone())
            .collect();
        (keys, inner.groups.values().cloned().collect())
    }

    /// The other instances' counters per key, shown in the admin views on top of this one's.
    pub fn set_fleet_counters(&self, others: HashMap<String, Counters>) {
        self.lock().fleet = others;
    }
}

/// A view with the fleet's counters added to this instance's own.
pub(super) fn with_fleet(inner: &Inner, mut view: KeyView) -> KeyView {
    if let Some(c) = inner.fleet.get(&view.rec.id) {
        let r = &mut view.rec;
        r.requests = r.requests.saturating_add(c.requests);
        r.successes = r.successes.saturating_add(c.successes);
        r.failures = r.failures.saturating_add(c.failures);
        r.input_tokens = r.input_tokens.saturating_add(c.input_tokens);
        r.output_tokens = r.output_tokens.saturating_add(c.output_tokens);
        if c.last_used_at > 0 {
            r.last_used_at = Some(r.last_used_at.unwrap_or(0).max(c.last_used_at));
        }
    }
    view
}
