//! The one writer of shared changes: queued writes in order (one script each), this instance's
//! counter totals, its heartbeat, and the other instances' counters read back for the fleet view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::wire::{quota_decode, quota_encode};
use super::{Counters, QuotaCounts, Shared, SharedError, Write, k};

/// How often counters are published and the outbox retried.
const TICK: Duration = Duration::from_millis(250);
/// How often the other instances' counters are read back.
const FLEET_READ: Duration = Duration::from_secs(2);
/// Deadline of one shared write.
const WRITE_LIMIT: Duration = Duration::from_millis(800);

/// One change: bump `ver`, write the record (a key's state never resurrects a deleted key),
/// append to the log (trimmed to about 10,000 entries).
const WRITE_SCRIPT: &str = r"
local op = ARGV[1]
if op == 'put' and ARGV[6] == '1' and redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then
  return 0
end
local v = redis.call('INCR', KEYS[1])
if op == 'put' then
  redis.call('HSET', KEYS[3], ARGV[2], v .. '|' .. ARGV[3])
  if ARGV[6] ~= '1' then redis.call('HDEL', KEYS[4], ARGV[2]) end
elseif op == 'del' then
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[2], v)
elseif op == 'clear' then
  redis.call('DEL', KEYS[3])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'v', v, 'kind', ARGV[4], 'id', ARGV[2], 'origin', ARGV[5], 'data', ARGV[3])
return v
";

/// Writes sent in one pipeline at most.
const BATCH: usize = 512;

fn add_write(pipe: &mut redis::Pipeline, inst: &str, w: &Write) {
    let hash = if w.hash.is_empty() { "log" } else { w.hash };
    let tomb = if w.tomb.is_empty() { "tomb" } else { w.tomb };
    // EVAL with the source (not EVALSHA): Redis caches the compiled script by its digest, and a
    // Redis restarted empty cannot answer NOSCRIPT halfway through a pipeline.
    pipe.cmd("EVAL")
        .arg(WRITE_SCRIPT)
        .arg(4)
        .arg(k("ver"))
        .arg(k("log"))
        .arg(k(hash))
        .arg(k(tomb))
        .arg(w.op)
        .arg(&w.id)
        .arg(&w.data)
        .arg(w.kind)
        .arg(format!("{inst}:{}", w.seq))
        // A deleted key or client never comes back (their ids are never reused).
        .arg(if matches!(w.hash, "keys" | "clients") {
            "1"
        } else {
            "0"
        })
        .ignore();
}

/// How long an instance's daily client counts are kept (the day, and a margin for zones).
const QUOTA_TTL_S: u64 = 2 * 86_400;

/// The hash of one instance's client counts of the local day starting at `day_start` (UTC ms:
/// the same name on every instance whatever its host's zone, as long as they share `timezone`).
pub(super) fn quota_key(inst: &str, day_start: i64) -> String {
    k(&format!("cq:{inst}:{day_start}"))
}

/// The counts of `now` that differ from what Redis acknowledged (all of them on a new day).
pub(super) fn quota_changes(
    sent: &(i64, QuotaCounts),
    day_start: i64,
    now: &QuotaCounts,
) -> Vec<(String, String)> {
    let same_day = sent.0 == day_start;
    let mut out: Vec<(String, String)> = now
        .iter()
        .filter(|(id, c)| !same_day || sent.1.get(*id) != Some(c))
        .map(|(id, (r, t))| (id.clone(), quota_encode(*r, *t)))
        .collect();
    out.sort();
    out
}

/// Publishes this instance's client counts of today that changed (absolute totals, so a retry
/// or a re-seed is exact), with an expiry of two days.
async fn publish_quota(shared: &Shared) -> Result<(), SharedError> {
    let Some(apply) = shared.apply.get() else {
        return Ok(());
    };
    let Some(table) = apply.clients() else {
        return Ok(());
    };
    let Some((day, counts)) = table.own_quota(jiff::Timestamp::now().as_millisecond()) else {
        return Ok(());
    };
    let changed = quota_changes(&shared.state().quota_sent, day, &counts);
    if changed.is_empty() {
        return Ok(());
    }
    let key = quota_key(&shared.inst, day);
    let mut pipe = redis::pipe();
    for chunk in changed.chunks(1000) {
        pipe.cmd("HSET").arg(&key).arg(chunk).ignore();
    }
    pipe.cmd("EXPIRE").arg(&key).arg(QUOTA_TTL_S).ignore();
    shared.link.pipe::<()>(WRITE_LIMIT, &pipe).await?;
    let mut st = shared.state();
    if st.quota_sent.0 != day {
        st.quota_sent = (day, QuotaCounts::new());
    }
    for (id, v) in changed {
        if let Some(c) = quota_decode(&v) {
            st.quota_sent.1.insert(id, c);
        }
    }
    Ok(())
}

/// Reads every instance's client counts of today and hands them to the client table: the
/// others' summed, and this instance's own as Redis holds it (after a restart it may hold more
/// than the local rollups: requests admitted whose usage record was not yet written).
async fn read_quota(shared: &Shared, members: &[String]) -> Result<(), SharedError> {
    let Some(apply) = shared.apply.get() else {
        return Ok(());
    };
    let Some(table) = apply.clients() else {
        return Ok(());
    };
    let Some((day, _)) = table.own_quota(jiff::Timestamp::now().as_millisecond()) else {
        return Ok(());
    };
    let mut pipe = redis::pipe();
    for m in members {
        pipe.cmd("HGETALL").arg(quota_key(m, day));
    }
    let all: Vec<HashMap<String, String>> = shared.link.pipe(Duration::from_secs(2), &pipe).await?;
    let (others, mine) = sum_quota(&shared.inst, members, all);
    table.fleet_quota(day, others, mine);
    Ok(())
}

/// Splits instances' published counts into the others' sums and this instance's own
/// (unreadable fields are skipped).
pub(super) fn sum_quota(
    me: &str,
    members: &[String],
    all: Vec<HashMap<String, String>>,
) -> (QuotaCounts, QuotaCounts) {
    let (mut others, mut mine) = (QuotaCounts::new(), QuotaCounts::new());
    for (m, h) in members.iter().zip(all) {
        let into = if m == me { &mut mine } else { &mut others };
        for (id, v) in h {
            if let Some((r, t)) = quota_decode(&v) {
                let e = into.entry(id).or_default();
                e.0 = e.0.saturating_add(r);
                e.1 = e.1.saturating_add(t);
            }
        }
    }
    (others, mine)
}

/// Writes the queued changes in order, up to [`BATCH`] per pipeline; stops at the first failure
/// (the batch goes back to the front of the queue and is sent again when Redis is back: every
/// write is a whole record, so running one twice is harmless).
async fn drain(shared: &Shared) -> Result<(), SharedError> {
    loop {
        let batch: Vec<Write> = {
            let mut st = shared.state();
            let n = st.outbox.len().min(BATCH);
            st.outbox.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for w in &batch {
            add_write(&mut pipe, &shared.inst, w);
        }
        match shared.link.pipe::<()>(WRITE_LIMIT * 4, &pipe).await {
            Ok(()) => {
                for w in batch {
                    if let Some(ack) = w.ack {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                let mut st = shared.state();
                for w in batch.into_iter().rev() {
                    st.outbox.push_front(w);
                }
                return Err(e);
            }
        }
    }
}

/// Publishes this instance's changed counter totals (absolute: a retry is harmless).
async fn publish_counters(shared: &Shared) -> Result<(), SharedError> {
    let (changed, gone): (Vec<(String, String)>, Vec<String>) = {
        let mut st = shared.state();
        if st.dirty.is_empty() && st.gone.is_empty() {
            return Ok(());
        }
        let dirty: Vec<String> = st.dirty.drain().collect();
        let changed = dirty
            .into_iter()
            .filter_map(|id| st.own.get(&id).map(|c| (id, c.encode())))
            .collect();
        (changed, st.gone.drain().collect())
    };
    let key = k(&format!("kc:{}", shared.inst));
    let mut pipe = redis::pipe();
    for chunk in changed.chunks(1000) {
        pipe.cmd("HSET").arg(&key).arg(chunk).ignore();
    }
    for chunk in gone.chunks(1000) {
        pipe.cmd("HDEL").arg(&key).arg(chunk).ignore();
    }
    match shared.link.pipe::<()>(WRITE_LIMIT, &pipe).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // Not acknowledged: publish them again next time.
            let mut st = shared.state();
            st.dirty.extend(changed.into_iter().map(|(id, _)| id));
            st.gone.extend(gone);
            Err(e)
        }
    }
}

/// Reads every other instance's counters and hands their sums to the pool.
async fn read_fleet(shared: &Shared) -> Result<(), SharedError> {
    let now = jiff::Timestamp::now().as_millisecond();
    let mut hb = redis::pipe();
    hb.cmd("ZADD")
        .arg(k("inst"))
        .arg(now)
        .arg(&shared.inst)
        .ignore();
    hb.cmd("ZRANGE").arg(k("inst")).arg(0).arg(-1);
    let (members,): (Vec<String>,) = shared.link.pipe(WRITE_LIMIT, &hb).await?;
    read_quota(shared, &members).await?;
    let others: Vec<String> = members.into_iter().filter(|m| *m != shared.inst).collect();
    let mut sums: HashMap<String, Counters> = HashMap::new();
    if !others.is_empty() {
        let mut pipe = redis::pipe();
        for o in &others {
            pipe.cmd("HGETALL").arg(k(&format!("kc:{o}")));
        }
        let all: Vec<HashMap<String, String>> =
            shared.link.pipe(Duration::from_secs(2), &pipe).await?;
        for h in all {
            for (id, v) in h {
                if let Some(c) = Counters::decode(&v) {
                    sums.entry(id).or_default().add(&c);
                }
            }
        }
    }
    if let Some(a) = shared.apply.get() {
        a.fleet_counters(sums);
    }
    Ok(())
}

/// The writer task.
pub(super) async fn write_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_fleet = tokio::time::Instant::now() - FLEET_READ;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        if !shared.is_up() {
            continue;
        }
        let result = async {
            drain(&shared).await?;
            publish_counters(&shared).await?;
            publish_quota(&shared).await?;
            if last_fleet.elapsed() >= FLEET_READ {
                last_fleet = tokio::time::Instant::now();
                read_fleet(&shared).await?;
            }
            Ok::<(), SharedError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "shared write deferred");
            shared.check.notify_one();
        }
    }
    // Last chance at shutdown: what Redis takes within a second is not lost to the fleet view.
    if shared.is_up() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = drain(&shared).await;
            let _ = publish_counters(&shared).await;
            let _ = publish_quota(&shared).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(&str, u64, u64)]) -> QuotaCounts {
        v.iter()
            .map(|(id, r, t)| (id.to_string(), (*r, *t)))
            .collect()
    }

    #[test]
    fn only_changed_counts_are_written_again_and_all_on_a_new_day() {
        let sent = (100, counts(&[("cli_a", 1, 10), ("cli_b", 2, 0)]));
        let now = counts(&[("cli_a", 1, 10), ("cli_b", 3, 0), ("cli_c", 1, 0)]);
        assert_eq!(
            quota_changes(&sent, 100, &now),
            vec![
                ("cli_b".to_string(), "3,0".to_string()),
                ("cli_c".to_string(), "1,0".to_string())
            ]
        );
        assert_eq!(quota_changes(&sent, 200, &now).len(), 3);
        assert!(quota_changes(&(100, now.clone()), 100, &now).is_empty());
        assert_eq!(quota_key("i1", 200), "droid2api:{v1}:cq:i1:200");
    }

    #[test]
    fn the_fleet_sums_the_others_and_keeps_our_own_apart() {
        let members = vec!["me".to_string(), "a".to_string(), "b".to_string()];
        let h = |v: &[(&str, &str)]| -> HashMap<String, String> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let all = vec![
            h(&[("cli_1", "5,50")]),
            h(&[("cli_1", "1,10"), ("cli_2", "garbage")]),
            h(&[("cli_1", "2,20"), ("cli_2", "3,0")]),
        ];
        let (others, mine) = sum_quota("me", &members, all);
        assert_eq!(others, counts(&[("cli_1", 3, 30), ("cli_2", 3, 0)]));
        assert_eq!(mine, counts(&[("cli_1", 5, 50)]));
    }
}
