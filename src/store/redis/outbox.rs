//! The one writer of shared changes: queued writes in order (one script each), this instance's
//! counter totals, its heartbeat, and the other instances' counters read back for the fleet view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Counters, Shared, SharedError, Write, k};

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
        .arg(if w.hash == "keys" { "1" } else { "0" })
        .ignore();
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
        })
        .await;
    }
}
