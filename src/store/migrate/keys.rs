//! The keys, groups and algorithm of a Node.js `key_pool.json` against what the pool already
//! holds: a key whose secret the pool has (compared by SHA-256 fingerprint) is a duplicate, an
//! id the pool already uses for another secret gets a fresh one, a group the pool has is kept as
//! it is, and the algorithm is stored only when no algorithm is stored yet.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::store::import::NodeImport;
use crate::store::records::{KeyEvent, KeyRecord, StoreOp};
use crate::store::sqlite::ALGORITHM_SETTING;
use crate::store::sqlite::offline::PoolSnapshot;

/// What importing the key pool will write.
#[derive(Debug, Default)]
pub struct KeyPlan {
    /// Groups, then keys, then their events, then the algorithm (in that order).
    pub ops: Vec<StoreOp>,
    /// The keys to add, as (id, secret) (to attribute usage).
    pub new_keys: Vec<(String, String)>,
    pub imported: usize,
    pub duplicates: usize,
    pub renamed: usize,
    pub groups_imported: usize,
    pub groups_existing: usize,
    /// The algorithm stored now.
    pub algorithm: Option<String>,
    pub warnings: Vec<String>,
}

fn fingerprint(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn plan(parsed: NodeImport, pool: &PoolSnapshot) -> KeyPlan {
    let mut out = KeyPlan::default();
    let existing: HashMap<String, &str> = pool
        .keys
        .iter()
        .map(|k| (fingerprint(k.secret.expose()), k.id.as_str()))
        .collect();
    let mut ids: HashSet<String> = pool.keys.iter().map(|k| k.id.clone()).collect();

    for g in parsed.groups {
        match pool.groups.iter().find(|e| e.id == g.id) {
            Some(e) => {
                out.groups_existing += 1;
                if e.priority != g.priority || e.name != g.name {
                    out.warnings.push(format!(
                        "group {:?}: the data folder's (name {:?}, priority {}) is kept; the Node version had name {:?}, priority {}",
                        g.id, e.name, e.priority, g.name, g.priority
                    ));
                }
            }
            None => {
                out.groups_imported += 1;
                out.ops.push(StoreOp::PutGroup(g));
            }
        }
    }

    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut keys: Vec<KeyRecord> = Vec::new();
    for mut k in parsed.keys {
        if let Some(id) = existing.get(&fingerprint(k.secret.expose())) {
            out.duplicates += 1;
            if *id != k.id {
                out.warnings.push(format!(
                    "key {}: the data folder already holds this key as {id}: not imported again",
                    k.id
                ));
            }
            continue;
        }
        if ids.contains(&k.id) {
            let fresh = format!("key_{}", uuid::Uuid::now_v7().simple());
            out.warnings.push(format!(
                "key {}: the data folder has another key with this id: imported as {fresh}",
                k.id
            ));
            renamed.insert(k.id.clone(), fresh.clone());
            k.id = fresh;
            out.renamed += 1;
        }
        ids.insert(k.id.clone());
        out.new_keys
            .push((k.id.clone(), k.secret.expose().to_string()));
        keys.push(k);
    }
    out.imported = keys.len();
    let imported: HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let events: Vec<KeyEvent> = parsed
        .events
        .into_iter()
        .map(|mut e| {
            if let Some(fresh) = renamed.get(&e.key_id) {
                e.key_id = fresh.clone();
            }
            e
        })
        .filter(|e| imported.contains(e.key_id.as_str()))
        .collect();
    out.ops.extend(keys.into_iter().map(StoreOp::PutKey));
    if !events.is_empty() {
        out.ops.push(StoreOp::AddEvents(events));
    }

    if let Some(algorithm) = parsed.algorithm {
        match pool.settings.get(ALGORITHM_SETTING) {
            None => {
                out.ops.push(StoreOp::PutSetting {
                    name: ALGORITHM_SETTING.to_string(),
                    value: serde_json::Value::String(algorithm.clone()),
                });
                out.algorithm = Some(algorithm);
            }
            Some(v) if v.as_str() == Some(algorithm.as_str()) => {}
            Some(v) => out.warnings.push(format!(
                "algorithm: the data folder's stored setting {v} is kept (key_pool.json has \"{algorithm}\")"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::import::parse_node_pool;

    const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/node/key_pool.json");

    #[test]
    fn first_then_second_plan() {
        let parsed = parse_node_pool(FIXTURE, 1).unwrap();
        let first = plan(parsed.clone(), &PoolSnapshot::default());
        assert_eq!(
            (first.imported, first.duplicates, first.groups_imported),
            (6, 0, 4)
        );
        assert_eq!(first.algorithm.as_deref(), Some("round-robin"));

        // The pool now holds them: nothing new.
        let pool = PoolSnapshot {
            keys: parsed.keys.clone(),
            groups: parsed.groups.clone(),
            settings: [(
                ALGORITHM_SETTING.to_string(),
                serde_json::json!("round-robin"),
            )]
            .into_iter()
            .collect(),
        };
        let second = plan(parsed, &pool);
        assert!(second.ops.is_empty(), "{:?}", second.ops);
        assert_eq!((second.imported, second.duplicates), (0, 6));
        assert_eq!(second.groups_existing, 4);
        assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    }

    #[test]
    fn an_id_in_use_for_another_key_is_renamed() {
        let parsed = parse_node_pool(FIXTURE, 1).unwrap();
        let mut other = parsed.keys[0].clone();
        other.secret = crate::secret::Secret::new("fk-some-other-key-000000000");
        let pool = PoolSnapshot {
            keys: vec![other],
            ..PoolSnapshot::default()
        };
        let p = plan(parsed, &pool);
        assert_eq!((p.imported, p.renamed), (6, 1));
        let renamed = &p.new_keys[0].0;
        assert_ne!(renamed, "key_1728700000001_a1b2c3d4e");
        let event_ids: Vec<&str> = p
            .ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::AddEvents(e) => Some(e.iter().map(|e| e.key_id.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(event_ids.contains(&renamed.as_str()));
        assert!(!event_ids.contains(&"key_1728700000001_a1b2c3d4e"));
    }
}
