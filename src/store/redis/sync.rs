//! Following the shared state: the supervisor checks Redis's `meta` every second (unreachable →
//! degraded; empty → re-seed from local state; a new epoch → merge, then adopt), and between
//! checks reads the change log with a blocking `XREAD` on the reader connection, applying every
//! entry in order. A gap in the log (entries trimmed, or missed) triggers a full resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::StreamReadReply;
use tokio_util::sync::CancellationToken;

use super::link::BLOCK_MS;
use super::wire::{self, split_versioned};
use super::{Remote, Shared, SharedError, Snapshot, k};

/// How often `meta` is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_LIMIT: Duration = Duration::from_secs(1);
/// Entries read per `XREAD`.
const READ_COUNT: usize = 512;

/// Merges a batch of records into a hash without overwriting (`0|<json>`); keys named in the
/// tombstone hash are not merged (a deleted key never returns).
const MERGE_SCRIPT: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    n = n + redis.call('HSETNX', KEYS[1], ARGV[i], '0|' .. ARGV[i + 1])
  end
end
return n
";

/// Where the reader is in the log.
#[derive(Debug, Default)]
struct Cursor {
    epoch: Option<String>,
    last_id: String,
    last_v: u64,
    /// `ver` was ahead of the log position at the last check too (entries this reader never
    /// got: trimmed while it was away).
    behind: bool,
}

fn version(map: &HashMap<String, redis::Value>) -> u64 {
    map.get("v")
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn field(map: &HashMap<String, redis::Value>, name: &str) -> String {
    map.get(name)
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        .unwrap_or_default()
}

/// Reads the whole shared state and the log position it corresponds to (at least).
async fn snapshot(shared: &Shared) -> Result<(Snapshot, String, u64), SharedError> {
    let mut pipe = redis::pipe();
    pipe.cmd("XREVRANGE")
        .arg(k("log"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    for h in ["keys", "groups", "settings", "bal", "sess", "clients"] {
        pipe.cmd("HGETALL").arg(k(h));
    }
    type Last = Vec<(String, HashMap<String, redis::Value>)>;
    type H = HashMap<String, String>;
    let (last, keys, groups, settings, bal, sess, clients): (Last, H, H, H, H, H, H) =
        shared.link.pipe(Duration::from_secs(5), &pipe).await?;
    let (last_id, last_v) = match last.first() {
        Some((id, map)) => (id.clone(), version(map)),
        None => ("0-0".to_string(), 0),
    };
    let mut snap = Snapshot::default();
    let mut bad = 0usize;
    for v in keys.values() {
        match split_versioned(v).map(|(_, j)| wire::key_from_json(j)) {
            Some(Ok(r)) => snap.keys.push(r),
            _ => bad += 1,
        }
    }
    for v in groups.values() {
        match split_versioned(v).map(|(_, j)| wire::group_from_json(j)) {
            Some(Ok(g)) => snap.groups.push(g),
            _ => bad += 1,
        }
    }
    for (name, v) in &settings {
        match split_versioned(v).map(|(_, j)| serde_json::from_str(j)) {
            Some(Ok(value)) => {
                snap.settings.insert(name.clone(), value);
            }
            _ => bad += 1,
        }
    }
    for v in bal.values() {
        match split_versioned(v).map(|(_, j)| wire::balance_from_json(j)) {
            Some(Ok(b)) => snap.balances.push(b),
            _ => bad += 1,
        }
    }
    for (digest, v) in sess {
        match split_versioned(&v) {
            Some((_, j)) => snap.sessions.push((digest, j.to_string())),
            None => bad += 1,
        }
    }
    for v in clients.values() {
        match split_versioned(v).map(|(_, j)| wire::client_from_json(j)) {
            Some(Ok(c)) => snap.clients.push(c),
            _ => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(
            records = bad,
            "unreadable shared records skipped (written by another version?)"
        );
    }
    Ok((snap, last_id, last_v))
}

/// Merges this instance's local state into Redis without overwriting what is there.
async fn merge_local(shared: &Shared) -> Result<u64, SharedError> {
    let Some(apply) = shared.apply.get() else {
        return Ok(0);
    };
    let local = apply.local();
    let script = redis::Script::new(MERGE_SCRIPT);
    let mut merged = 0u64;
    let mut run = async |hash: &str, tomb: &str, pairs: Vec<(String, String)>| {
        for chunk in pairs.chunks(500) {
            let mut inv = script.key(k(hash));
            inv.key(k(tomb));
            for (id, json) in chunk {
                inv.arg(id).arg(json);
            }
            merged += shared
                .link
                .script::<u64>(Duration::from_secs(5), &inv)
                .await?;
        }
        Ok::<(), SharedError>(())
    };
    run(
        "groups",
        "gtomb-merge",
        local
            .groups
            .iter()
            .map(|g| (g.id.clone(), wire::group_to_json(g)))
            .collect(),
    )
    .await?;
    run(
        "keys",
        "tomb",
        local
            .keys
            .iter()
            .map(|r| (r.id.clone(), wire::key_to_json(r)))
            .collect(),
    )
    .await?;
    run(
        "settings",
        "stomb-merge",
        local
            .settings
            .iter()
            .map(|(n, v)| (n.clone(), v.to_string()))
            .collect(),
    )
    .await?;
    run(
        "bal",
        "btomb-merge",
        local
            .balances
            .iter()
            .map(|b| (b.key_id.clone(), wire::balance_to_json(b)))
            .collect(),
    )
    .await?;
    run("sess", "sesstomb", local.sessions).await?;
    // Client keys: a deleted client's tombstone keeps it from coming back.
    run(
        "clients",
        "ctomb",
        local
            .clients
            .iter()
            .map(|c| (c.id.clone(), wire::client_to_json(c)))
            .collect(),
    )
    .await?;
    // Our counters are published again in full (absolute totals: exact after an empty restart).
    {
        let mut st = shared.state();
        let ids: Vec<String> = st.own.keys().cloned().collect();
        st.dirty.extend(ids);
        st.quota_sent = Default::default();
    }
    Ok(merged)
}

/// Replaces the local shared state with Redis's and moves the cursor to the log's end.
async fn resync(shared: &Shared, cur: &mut Cursor) -> Result<(), SharedError> {
    let (snap, last_id, last_v) = snapshot(shared).await?;
    let keys = snap.keys.len();
    if let Some(a) = shared.apply.get() {
        a.replace_all(snap);
    }
    cur.last_id = last_id;
    cur.last_v = last_v;
    tracing::info!(keys, "shared state loaded from Redis");
    Ok(())
}

/// One check of `meta`; seeds, merges and resyncs as needed.
async fn check(shared: &Shared, cur: &mut Cursor) -> Result<(), SharedError> {
    let mut probe = redis::pipe();
    probe.cmd("HGET").arg(k("meta")).arg("epoch");
    probe.cmd("GET").arg(k("ver"));
    let (epoch, ver): (Option<String>, Option<u64>) = shared.link.pipe(CHECK_LIMIT, &probe).await?;
    if epoch.is_some() && epoch == cur.epoch {
        // Backstop: the reader follows the log within milliseconds, so `ver` ahead of it at
        // two checks in a row means entries it can no longer read.
        let ahead = ver.unwrap_or(0) > cur.last_v;
        if !(ahead && cur.behind) {
            cur.behind = ahead;
            return Ok(());
        }
        tracing::info!(
            ver = ver.unwrap_or(0),
            read = cur.last_v,
            "the shared change log moved on without this instance: reloading the shared state"
        );
    }
    cur.behind = false;
    shared.settled.store(false, Ordering::Release);
    let merged = merge_local(shared).await?;
    if epoch.is_none() {
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX")
            .arg(k("meta"))
            .arg("epoch")
            .arg(uuid::Uuid::new_v4().to_string())
            .ignore();
        pipe.cmd("HSETNX")
            .arg(k("meta"))
            .arg("schema")
            .arg(1)
            .ignore();
        shared.link.pipe::<()>(CHECK_LIMIT, &pipe).await?;
        tracing::info!(
            records = merged,
            "Redis held no shared state: seeded it from this instance's data folder"
        );
    } else if merged > 0 {
        tracing::info!(
            records = merged,
            "joined the shared state: added this instance's records that Redis did not hold"
        );
    }
    let epoch: Option<String> = shared
        .link
        .query(CHECK_LIMIT, redis::cmd("HGET").arg(k("meta")).arg("epoch"))
        .await?;
    resync(shared, cur).await?;
    cur.epoch = epoch;
    shared.settled.store(true, Ordering::Release);
    Ok(())
}

/// Turns one log entry into a change, or None for an echo of ours that a newer write of ours
/// will follow (or any of our history rows, which are stored already).
fn entry(
    shared: &Shared,
    map: &HashMap<String, redis::Value>,
) -> Result<Option<Remote>, SharedError> {
    let kind = field(map, "kind");
    let id = field(map, "id");
    let data = field(map, "data");
    let origin = field(map, "origin");
    let (o_inst, o_seq) = origin.rsplit_once(':').unwrap_or(("", "0"));
    let mine = o_inst == shared.inst;
    if mine {
        let hash = match kind.as_str() {
            "key" | "delkey" => "keys",
            "group" | "delgroup" => "groups",
            "setting" => "settings",
            "balance" => "bal",
            "session" | "endsession" => "sess",
            "client" | "delclient" => "clients",
            "events" => return Ok(None),
            _ => "",
        };
        let seq: u64 = o_seq.parse().unwrap_or(0);
        let latest = shared
            .state()
            .latest
            .get(&format!("{hash}:{id}"))
            .copied()
            .unwrap_or(0);
        if latest > seq {
            return Ok(None);
        }
    }
    Ok(Some(match kind.as_str() {
        "key" => Remote::Key(wire::key_from_json(&data)?),
        "delkey" => Remote::DeleteKey(id),
        "group" => Remote::Group(wire::group_from_json(&data)?),
        "delgroup" => Remote::DeleteGroup {
            id,
            move_keys_to: data,
        },
        "setting" => Remote::Setting {
            name: id,
            value: serde_json::from_str(&data)
                .map_err(|e| SharedError::Data(format!("setting: {e}")))?,
        },
        "clearsettings" => Remote::ClearSettings,
        "events" => Remote::Events(wire::events_from_json(&data)?),
        "balance" => Remote::Balance(wire::balance_from_json(&data)?),
        "session" => Remote::Session { digest: id, data },
        "endsession" => Remote::EndSession { digest: id },
        "client" => Remote::Client(wire::client_from_json(&data)?),
        "delclient" => Remote::DeleteClient(id),
        other => return Err(SharedError::Data(format!("unknown change kind {other:?}"))),
    }))
}

/// One blocking read of the log; applies what it got. `Ok(false)`: a gap, resync needed.
async fn read(shared: &Shared, cur: &mut Cursor) -> Result<bool, SharedError> {
    let reply: Option<StreamReadReply> = shared
        .link
        .read(
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(k("log"))
                .arg(&cur.last_id),
        )
        .await?;
    let Some(reply) = reply else {
        return Ok(true);
    };
    let apply = shared.apply.get();
    for sk in reply.keys {
        for e in sk.ids {
            let v = version(&e.map);
            if cur.last_v > 0 && v != cur.last_v + 1 {
                tracing::info!(
                    expected = cur.last_v + 1,
                    got = v,
                    "gap in the shared change log: reloading the shared state"
                );
                return Ok(false);
            }
            match entry(shared, &e.map) {
                Ok(Some(change)) => {
                    if let Some(a) = apply {
                        a.apply(change);
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "shared change skipped"),
            }
            cur.last_id = e.id;
            cur.last_v = v;
        }
    }
    Ok(true)
}

/// The supervisor and log reader.
pub(super) async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    let mut cur = Cursor {
        last_id: "0-0".into(),
        ..Cursor::default()
    };
    let mut next_check = tokio::time::Instant::now();
    let mut logged_down = false;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if tokio::time::Instant::now() >= next_check || !shared.is_up() {
            next_check = tokio::time::Instant::now() + CHECK_EVERY;
            match check(&shared, &mut cur).await {
                Ok(()) => {
                    logged_down = false;
                    shared.set_up(true);
                }
                Err(e) => {
                    if !logged_down {
                        tracing::warn!(redis = %shared.link.masked, error = %e, "Redis check failed");
                        logged_down = true;
                    }
                    shared.set_up(false);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = shared.check.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            }
        }
        let step = tokio::select! {
            _ = stop.cancelled() => break,
            r = read(&shared, &mut cur) => r,
        };
        match step {
            Ok(true) => {}
            Ok(false) => {
                // Through the full check: a gap may mean Redis came back empty, and an empty
                // Redis is seeded before anything is loaded from it.
                cur.epoch = None;
                if let Err(e) = check(&shared, &mut cur).await {
                    tracing::warn!(error = %e, "shared state reload failed");
                    shared.set_up(false);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "shared log read failed");
                next_check = tokio::time::Instant::now();
            }
        }
    }
}
