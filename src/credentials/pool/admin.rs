//! The admin operations: applied in memory and queued to the store under the lock, acknowledged
//! after (outside it). A single-key change and a bulk change alike take the lock once, move each
//! key it touches in O(log n) (no rebuild; only group changes and the algorithm rebuild the
//! tiers) and queue one batch, so the store commits the whole set in one transaction.

use tokio::sync::oneshot;

use super::{
    BatchResult, BulkAction, Health, Inner, KeyFilter, KeyPool, Outcome, PersistError, PoolError,
    fingerprint, health, transition_label, valid_group_id, valid_key,
};
use crate::secret::Secret;
use crate::store::records::{
    DEFAULT_GROUP, DisabledBy, EventSource, KeyEvent, KeyRecord, KeyStatus, LastTest, Millis,
    PoolGroup, StoreOp,
};
use crate::telemetry::metrics as m;

type Ack = Option<oneshot::Receiver<Result<(), PersistError>>>;

fn not_found(id: &str) -> PoolError {
    PoolError::NotFound(format!("key {id} not found"))
}

fn no_group(group: &str) -> PoolError {
    PoolError::NotFound(format!("pool group {group} does not exist"))
}

const INVALID_KEY: &str = "expected 8 to 512 printable ASCII characters without spaces";

fn admin_event(
    rec: &KeyRecord,
    now: Millis,
    from: Option<&str>,
    to: &str,
    reason: &str,
) -> KeyEvent {
    KeyEvent {
        key_id: rec.id.clone(),
        at: now,
        from: from.map(str::to_string),
        to: to.to_string(),
        reason: reason.to_string(),
        source: EventSource::Admin,
    }
}

fn new_key_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
}

fn new_record(key: &str, notes: &str, group: &str, now: Millis) -> KeyRecord {
    KeyRecord {
        id: new_key_id(),
        secret: Secret::new(key),
        status: KeyStatus::Active,
        status_reason: None,
        status_changed_at: Some(now),
        disabled_by: None,
        pool_group: group.to_string(),
        notes: notes.to_string(),
        created_at: now,
        last_used_at: None,
        cooldown_until: None,
        requests: 0,
        successes: 0,
        failures: 0,
        input_tokens: 0,
        output_tokens: 0,
        last_test: None,
    }
}

/// The group a new key goes to (`default` when none is named).
fn group_or_default(group: Option<&str>) -> &str {
    group
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .unwrap_or(DEFAULT_GROUP)
}

// Single-key changes on the locked state; each appends its store ops to `ops`.
impl Inner {
    fn slot_index(&self, id: &str) -> Result<usize, PoolError> {
        self.by_id.get(id).copied().ok_or_else(|| not_found(id))
    }

    fn toggle_key(
        &mut self,
        id: &str,
        status: KeyStatus,
        now: Millis,
        ops: &mut Vec<StoreOp>,
    ) -> Result<KeyRecord, PoolError> {
        let i = self.slot_index(id)?;
        let s = self.slots[i].as_mut().ok_or_else(|| not_found(id))?;
        let from = health::state_name(&s.rec, now);
        s.rec.status = status;
        s.rec.status_changed_at = Some(now);
        s.rec.cooldown_until = None;
        s.health = Health::default();
        let reason = if status == KeyStatus::Active {
            s.rec.disabled_by = None;
            "enabled by an admin"
        } else {
            s.rec.disabled_by = Some(DisabledBy::Admin);
            "disabled by an admin"
        };
        s.rec.status_reason = Some(reason.into());
        let rec = s.rec.clone();
        self.place(i, now);
        ops.push(StoreOp::PutKey(rec.clone()));
        ops.push(StoreOp::AddEvents(vec![admin_event(
            &rec,
            now,
            Some(from),
            status.as_str(),
            reason,
        )]));
        Ok(rec)
    }

    fn move_key(
        &mut self,
        id: &str,
        group: &str,
        now: Millis,
        ops: &mut Vec<StoreOp>,
    ) -> Result<KeyRecord, PoolError> {
        if !self.groups.contains_key(group) {
            return Err(no_group(group));
        }
        let i = self.slot_index(id)?;
        let s = self.slots[i].as_mut().ok_or_else(|| not_found(id))?;
        s.rec.pool_group = group.to_string();
        let rec = s.rec.clone();
        self.regroup(i, now);
        ops.push(StoreOp::PutKey(rec.clone()));
        Ok(rec)
    }

    fn reset_key(
        &mut self,
        id: &str,
        now: Millis,
        ops: &mut Vec<StoreOp>,
    ) -> Result<KeyRecord, PoolError> {
        let i = self.slot_index(id)?;
        let s = self.slots[i].as_mut().ok_or_else(|| not_found(id))?;
        let was = health::state_name(&s.rec, now);
        s.rec.cooldown_until = None;
        s.health = Health::default();
        let rec = s.rec.clone();
        self.place(i, now);
        ops.push(StoreOp::PutKeyState(rec.clone()));
        if was == "cooling" {
            ops.push(StoreOp::AddEvents(vec![admin_event(
                &rec,
                now,
                Some("cooling"),
                "active",
                "cooldown reset by an admin",
            )]));
        }
        Ok(rec)
    }

    fn delete_key(
        &mut self,
        id: &str,
        now: Millis,
        ops: &mut Vec<StoreOp>,
    ) -> Result<KeyRecord, PoolError> {
        let rec = self.remove(id).ok_or_else(|| not_found(id))?;
        let from = health::state_name(&rec, now);
        let ev = admin_event(&rec, now, Some(from), "deleted", "deleted by an admin");
        ops.push(StoreOp::DeleteKey(rec.id.clone()));
        ops.push(StoreOp::AddEvents(vec![ev]));
        Ok(rec)
    }
}

impl KeyPool {
    async fn acked(&self, rx: Ack) -> Result<(), PoolError> {
        match rx {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(PersistError::Shared(m))) => Err(PoolError::Shared(m)),
                Ok(Err(PersistError::Store(e))) if e.is_unavailable() => {
                    Err(PoolError::Unavailable(e.to_string()))
                }
                Ok(Err(e)) => Err(PoolError::Persist(e.to_string())),
                Err(_) => Err(PoolError::Persist("the store stopped".into())),
            },
        }
    }

    /// Refuses an admin change up front while the shared state is unreachable (it would
    /// diverge from the other instances).
    pub async fn writable(&self) -> Result<(), PoolError> {
        match &self.persist {
            Some(p) => p
                .writable()
                .await
                .map_err(|e| PoolError::Shared(e.to_string())),
            None => Ok(()),
        }
    }

    /// Queues one batch (one transaction in the store); nothing when there is nothing to write.
    fn queue(&self, ops: Vec<StoreOp>) -> Ack {
        if ops.is_empty() {
            return None;
        }
        self.persist.as_ref().map(|p| p.enqueue_acked(ops))
    }

    /// Applies `change` under the lock, queues its ops as one batch, then waits (outside the
    /// lock) for the store's acknowledgement.
    async fn commit<T>(
        &self,
        change: impl FnOnce(&mut Inner, Millis, &mut Vec<StoreOp>) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        self.writable().await?;
        let now = self.now();
        let (value, rx) = {
            let mut inner = self.lock();
            let mut ops = Vec::new();
            let value = change(&mut inner, now, &mut ops)?;
            (value, self.queue(ops))
        };
        self.acked(rx).await?;
        Ok(value)
    }

    /// Adds one key; usable at once.
    pub async fn add_key(
        &self,
        key: &str,
        notes: Option<&str>,
        group: Option<&str>,
    ) -> Result<KeyRecord, PoolError> {
        let key = key.trim();
        if !valid_key(key) {
            return Err(PoolError::BadRequest(format!("key: {INVALID_KEY}")));
        }
        let rec = self
            .commit(|inner, now, ops| {
                if inner.by_secret.contains_key(&fingerprint(key)) {
                    return Err(PoolError::Conflict(
                        "this key is already in the pool".into(),
                    ));
                }
                let group = group_or_default(group);
                if !inner.groups.contains_key(group) {
                    return Err(no_group(group));
                }
                let rec = new_record(key, notes.unwrap_or(""), group, now);
                inner.insert(rec.clone(), now);
                let ev = admin_event(&rec, now, None, "active", "added");
                ops.push(StoreOp::PutKey(rec.clone()));
                ops.push(StoreOp::AddEvents(vec![ev]));
                Ok(rec)
            })
            .await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Adds many keys (one per entry); blank or invalid entries and duplicates are reported.
    /// One lock, one store commit.
    pub async fn add_batch(
        &self,
        entries: &[String],
        group: Option<&str>,
    ) -> Result<BatchResult, PoolError> {
        let result = self
            .commit(|inner, now, ops| {
                let group = group_or_default(group);
                if !inner.groups.contains_key(group) {
                    return Err(no_group(group));
                }
                let mut result = BatchResult::default();
                let mut events = Vec::new();
                for (i, raw) in entries.iter().enumerate() {
                    let k = raw.trim();
                    if k.is_empty() {
                        result.invalid += 1;
                        result.errors.push((i + 1, "blank line".into()));
                    } else if !valid_key(k) {
                        result.invalid += 1;
                        result
                            .errors
                            .push((i + 1, format!("not a valid key: {INVALID_KEY}")));
                    } else if inner.by_secret.contains_key(&fingerprint(k)) {
                        result.duplicate += 1;
                        result
                            .errors
                            .push((i + 1, "duplicate: already in the pool".into()));
                    } else {
                        let rec = new_record(k, "", group, now);
                        inner.insert(rec.clone(), now);
                        events.push(admin_event(&rec, now, None, "active", "added (batch)"));
                        result.ids.push(rec.id.clone());
                        result.added += 1;
                        ops.push(StoreOp::PutKey(rec));
                    }
                }
                if !events.is_empty() {
                    ops.push(StoreOp::AddEvents(events));
                }
                Ok(result)
            })
            .await?;
        self.publish_gauges();
        Ok(result)
    }

    /// Changes a key's secret and/or notes.
    pub async fn update(
        &self,
        id: &str,
        key: Option<&str>,
        notes: Option<&str>,
    ) -> Result<KeyRecord, PoolError> {
        let key = key.map(str::trim);
        self.commit(|inner, now, ops| {
            let i = inner.slot_index(id)?;
            if let Some(k) = key {
                if !valid_key(k) {
                    return Err(PoolError::BadRequest(format!("key: {INVALID_KEY}")));
                }
                let new = fingerprint(k);
                if inner.by_secret.get(&new).is_some_and(|s| *s != i) {
                    return Err(PoolError::Conflict(
                        "another key in the pool has this value".into(),
                    ));
                }
                let old = inner.slots[i]
                    .as_ref()
                    .map(|s| fingerprint(s.rec.secret.expose()));
                if let Some(old) = old {
                    inner.by_secret.remove(&old);
                }
                inner.by_secret.insert(new, i);
                inner.secrets_generation += 1;
                if let Some(s) = inner.slots[i].as_mut() {
                    s.rec.secret = Secret::new(k);
                    s.health = Health::default();
                }
            }
            let s = inner.slots[i].as_mut().ok_or_else(|| not_found(id))?;
            if let Some(n) = notes {
                s.rec.notes = n.to_string();
            }
            let rec = s.rec.clone();
            inner.place(i, now);
            ops.push(StoreOp::PutKey(rec.clone()));
            if key.is_some() {
                let state = health::state_name(&rec, now);
                ops.push(StoreOp::AddEvents(vec![admin_event(
                    &rec,
                    now,
                    Some(state),
                    state,
                    "key value replaced",
                )]));
            }
            Ok(rec)
        })
        .await
    }

    /// Sets a key active or disabled (by an admin). Activating clears a ban and a cooldown.
    pub async fn toggle(&self, id: &str, status: KeyStatus) -> Result<KeyRecord, PoolError> {
        if status == KeyStatus::Banned {
            return Err(PoolError::BadRequest(
                "status: expected active or disabled".into(),
            ));
        }
        let rec = self
            .commit(|inner, now, ops| inner.toggle_key(id, status, now, ops))
            .await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Flips a key (the Node version's toggle without a status): active → disabled, disabled or
    /// banned → active. The status is read and changed under one lock, so two flips at once
    /// always take the key through both states.
    pub async fn flip(&self, id: &str) -> Result<KeyRecord, PoolError> {
        let rec = self
            .commit(|inner, now, ops| {
                let i = inner.slot_index(id)?;
                let current = inner.slots[i]
                    .as_ref()
                    .map(|s| s.rec.status)
                    .ok_or_else(|| not_found(id))?;
                let to = match current {
                    KeyStatus::Active => KeyStatus::Disabled,
                    KeyStatus::Disabled | KeyStatus::Banned => KeyStatus::Active,
                };
                inner.toggle_key(id, to, now, ops)
            })
            .await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Moves a key to another group.
    pub async fn move_key(&self, id: &str, group: &str) -> Result<KeyRecord, PoolError> {
        self.commit(|inner, now, ops| inner.move_key(id, group, now, ops))
            .await
    }

    /// Clears a key's cooldown and failure counts.
    pub async fn reset(&self, id: &str) -> Result<KeyRecord, PoolError> {
        let rec = self
            .commit(|inner, now, ops| inner.reset_key(id, now, ops))
            .await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Deletes one key.
    pub async fn delete(&self, id: &str) -> Result<KeyRecord, PoolError> {
        let rec = self
            .commit(|inner, now, ops| inner.delete_key(id, now, ops))
            .await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Deletes every key with a status (one lock, one store commit); returns how many.
    pub async fn delete_status(&self, status: KeyStatus) -> Result<u64, PoolError> {
        let filter = KeyFilter {
            status: Some(status.as_str().into()),
            pool: None,
            q: None,
        };
        let n = self
            .commit(|inner, now, ops| {
                let mut ids: Vec<(Millis, String)> = inner
                    .slots
                    .iter()
                    .flatten()
                    .filter(|s| inner.matches(s, &filter, now))
                    .map(|s| (s.rec.created_at, s.rec.id.clone()))
                    .collect();
                ids.sort();
                let mut n = 0;
                for (_, id) in ids {
                    if inner.delete_key(&id, now, ops).is_ok() {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await?;
        self.publish_gauges();
        Ok(n)
    }

    /// Applies an action to many keys under one lock, with one store commit; returns (count
    /// done, errors per id). When the store refuses the commit, the whole call fails like a
    /// single-key change would (the changes stay applied in memory).
    pub async fn bulk(
        &self,
        ids: &[String],
        action: BulkAction,
        group: Option<&str>,
    ) -> Result<(u64, Vec<(String, String)>), PoolError> {
        let done = self
            .commit(|inner, now, ops| {
                let mut count = 0;
                let mut errors = Vec::new();
                for id in ids {
                    let r = match action {
                        BulkAction::Enable => inner.toggle_key(id, KeyStatus::Active, now, ops),
                        BulkAction::Disable => inner.toggle_key(id, KeyStatus::Disabled, now, ops),
                        BulkAction::Delete => inner.delete_key(id, now, ops),
                        BulkAction::Reset => inner.reset_key(id, now, ops),
                        BulkAction::Move => match group {
                            Some(g) => inner.move_key(id, g, now, ops),
                            None => Err(PoolError::BadRequest(
                                "poolGroup is required for move".into(),
                            )),
                        },
                    };
                    match r {
                        Ok(_) => count += 1,
                        Err(e) => errors.push((id.clone(), e.to_string())),
                    }
                }
                Ok((count, errors))
            })
            .await;
        self.publish_gauges();
        done
    }

    /// Records a key test and applies its outcome (source `test`).
    pub async fn record_test(
        &self,
        id: &str,
        outcome: &Outcome,
        test: LastTest,
    ) -> Result<KeyRecord, PoolError> {
        let (rec, event) = self
            .commit(|inner, now, ops| {
                let i = inner.slot_index(id)?;
                let Inner {
                    slots, settings, ..
                } = &mut *inner;
                let s = slots[i].as_mut().ok_or_else(|| not_found(id))?;
                let event = health::apply(
                    &mut s.rec,
                    &mut s.health,
                    outcome,
                    EventSource::Test,
                    now,
                    settings,
                );
                s.rec.last_test = Some(test);
                let rec = s.rec.clone();
                inner.place(i, now);
                inner.update_rank(i, now);
                ops.push(StoreOp::PutKeyState(rec.clone()));
                if let Some(e) = &event {
                    ops.push(StoreOp::AddEvents(vec![e.clone()]));
                }
                Ok((rec, event))
            })
            .await?;
        if let Some(e) = &event {
            metrics::counter!(m::POOL_TRANSITIONS, "reason" => transition_label(e)).increment(1);
        }
        self.publish_gauges();
        Ok(rec)
    }

    /// Creates a group.
    pub async fn create_group(
        &self,
        id: &str,
        name: &str,
        priority: i64,
        description: &str,
    ) -> Result<PoolGroup, PoolError> {
        if !valid_group_id(id) {
            return Err(PoolError::BadRequest(
                "id: expected 1 to 32 characters of a-z, 0-9, _ or -".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(PoolError::BadRequest("name: must not be empty".into()));
        }
        self.commit(|inner, now, ops| {
            if inner.groups.contains_key(id) {
                return Err(PoolError::Conflict(format!(
                    "pool group {id} already exists"
                )));
            }
            let g = PoolGroup {
                id: id.into(),
                name: name.trim().into(),
                priority,
                description: description.into(),
                created_at: now,
            };
            inner.groups.insert(id.into(), g.clone());
            // Keys may already name the group (imported ones): they change tier.
            inner.rebuild(now);
            ops.push(StoreOp::PutGroup(g.clone()));
            Ok(g)
        })
        .await
    }

    /// Changes a group's name, priority or description.
    pub async fn update_group(
        &self,
        id: &str,
        name: Option<&str>,
        priority: Option<i64>,
        description: Option<&str>,
    ) -> Result<PoolGroup, PoolError> {
        self.commit(|inner, now, ops| {
            let Some(g) = inner.groups.get_mut(id) else {
                return Err(no_group(id));
            };
            if let Some(n) = name {
                if n.trim().is_empty() {
                    return Err(PoolError::BadRequest("name: must not be empty".into()));
                }
                g.name = n.trim().into();
            }
            let moved = priority.is_some_and(|p| p != g.priority);
            if let Some(p) = priority {
                g.priority = p;
            }
            if let Some(d) = description {
                g.description = d.into();
            }
            let g = g.clone();
            if moved {
                inner.rebuild(now);
            }
            ops.push(StoreOp::PutGroup(g.clone()));
            Ok(g)
        })
        .await
    }

    /// Deletes a group; its keys move to `default`, which itself cannot be deleted.
    pub async fn delete_group(&self, id: &str) -> Result<(PoolGroup, u64), PoolError> {
        if id == DEFAULT_GROUP {
            return Err(PoolError::BadRequest(
                "the default pool group cannot be deleted".into(),
            ));
        }
        self.commit(|inner, now, ops| {
            let Some(g) = inner.groups.remove(id) else {
                return Err(no_group(id));
            };
            let mut moved = 0;
            for s in inner.slots.iter_mut().flatten() {
                if s.rec.pool_group == id {
                    s.rec.pool_group = DEFAULT_GROUP.into();
                    moved += 1;
                }
            }
            inner.rebuild(now);
            ops.push(StoreOp::DeleteGroup {
                id: id.into(),
                move_keys_to: DEFAULT_GROUP.into(),
            });
            Ok((g, moved))
        })
        .await
    }

    /// Waits until everything queued so far is durable (admin settings changes use this).
    pub async fn persist_ops(&self, ops: Vec<StoreOp>) -> Result<(), PoolError> {
        self.writable().await?;
        let rx = self.persist.as_ref().map(|p| p.enqueue_acked(ops));
        self.acked(rx).await
    }
}
