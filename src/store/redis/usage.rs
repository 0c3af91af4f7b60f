//! Usage for the whole fleet (contract §7, §12): every instance publishes its own usage rollups
//! to Redis and mirrors everybody else's, so that `/admin/usage` and `/factory/balance/*`
//! answer with the fleet's sums on every instance within a few seconds of the traffic.
//!
//! **Layout** (per instance `<i>`, under the common prefix):
//! - `u:<i>` hash: one field per rollup row, `granularity|dim|value|bucket_start` (the value
//!   may hold `|`: it is what lies between the second and the last one), holding the row's
//!   ABSOLUTE sums `requests,successes,input,cache_read,cache_write,output,reasoning`. Only
//!   `<i>` writes it (one writer per field): a retried or repeated write is exact.
//! - `u:<i>:chg` zset: the same fields, scored by the publish that last wrote them (a
//!   millisecond time, strictly increasing per instance, one score per chunk), so readers fetch
//!   only what changed since the score they last saw. It holds one entry per field: its size is
//!   the hash's.
//! - `u:<i>:pub`: the change sequence of the local rollups up to which Redis holds everything
//!   (`sqlite::ChangeCursor`). Written with the chunk that catches up; a restarted instance
//!   continues from it, and when it is missing or behind (Redis emptied, restarted from an
//!   older snapshot) the instance publishes again from there, all its rows when it is missing.
//!
//! **Publisher** (every second, nothing on the request path): reads the rollup rows changed
//! since its cursor from SQLite in pages and writes each page in one `MULTI` (`HSET` + `ZADD`,
//! so a reader never sees a score without its value). On any failure the cursor goes back to
//! the last acknowledged `u:<i>:pub`: the rows are simply written again later. SQLite is the
//! outage buffer: nothing is held in memory but the cursor.
//!
//! **Reader** (same task, after publishing): for each other instance in the `inst` registry,
//! `ZRANGEBYSCORE u:<o>:chg (<seen> +inf` in pages, `HMGET` of those fields, and one mirror
//! write through the store's writer (rows and the new `<seen>` in one transaction, so a
//! restarted instance reads on from where its mirror is). A list whose top score fell below
//! what was seen (it was rebuilt) is read whole. The mirror keeps the larger of each sum, so a
//! stale copy never takes a row back.
//!
//! **Re-seeding**: when `meta.epoch` changes under a running instance (Redis came back empty
//! and was seeded), it also writes what its mirror holds of the others with `HSETNX` and low
//! scores (`ZADD NX`), so an instance that is gone for good still counts for instances that
//! join later; the live ones overwrite their own rows with fresher values.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Shared, SharedError, k};
use crate::store::StoreError;
use crate::store::sqlite::{ChangeCursor, MirrorPos, RollupRow, Store, Tokens, UsageTotals};

/// How often this instance publishes and reads the others.
const EVERY: Duration = Duration::from_secs(1);
/// Deadline of one Redis call.
const LIMIT: Duration = Duration::from_secs(2);
/// Rollup rows per published chunk (one `MULTI`, one score).
const CHUNK: usize = 500;
/// Changed fields read per page (more than a chunk: a page never ends inside the only chunk).
const PAGE: usize = 2_000;

const GRANULARITIES: [&str; 3] = ["hour", "day", "total"];
const DIMS: [&str; 4] = ["all", "key", "model", "client"];

/// The hash field of a rollup row.
pub fn field(r: &RollupRow) -> String {
    format!("{}|{}|{}|{}", r.granularity, r.dim, r.value, r.bucket_start)
}

/// The sums of a rollup row, as stored in the hash.
pub fn encode(t: &UsageTotals) -> String {
    let k = &t.tokens;
    format!(
        "{},{},{},{},{},{},{}",
        t.requests,
        t.successes,
        k.input_tokens,
        k.cache_read_tokens,
        k.cache_write_tokens,
        k.output_tokens,
        k.reasoning_tokens
    )
}

/// A row from its field and value; `None` for what this version cannot read (an unknown
/// granularity or dimension, a malformed number).
pub fn decode(field: &str, value: &str) -> Option<RollupRow> {
    let mut parts = field.splitn(3, '|');
    let granularity = parts.next()?;
    let dim = parts.next()?;
    let (val, bucket) = parts.next()?.rsplit_once('|')?;
    if !GRANULARITIES.contains(&granularity) || !DIMS.contains(&dim) {
        return None;
    }
    let n: Vec<u64> = value
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if n.len() < 7 {
        return None;
    }
    Some(RollupRow {
        granularity: granularity.to_string(),
        dim: dim.to_string(),
        value: val.to_string(),
        bucket_start: bucket.parse().ok()?,
        totals: UsageTotals {
            requests: n[0],
            successes: n[1],
            tokens: Tokens {
                input_tokens: n[2],
                cache_read_tokens: n[3],
                cache_write_tokens: n[4],
                output_tokens: n[5],
                reasoning_tokens: n[6],
            },
        },
    })
}

fn hash_key(inst: &str) -> String {
    k(&format!("u:{inst}"))
}

fn chg_key(inst: &str) -> String {
    k(&format!("u:{inst}:chg"))
}

fn pub_key(inst: &str) -> String {
    k(&format!("u:{inst}:pub"))
}

/// A round's failure: Redis or the local store (both retried next round).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where this instance's publishing stands.
#[derive(Debug)]
struct Publisher {
    /// Rows changed after it are not yet written.
    cursor: ChangeCursor,
    /// The `u:<i>:pub` this instance last saw or wrote; `None` before the first round.
    marker: Option<i64>,
    /// The last score used (scores only grow).
    score: i64,
    epoch: Option<String>,
    /// Redis was re-seeded under us: the others' usage from the mirror is still to be written.
    seed_pending: bool,
}

impl Publisher {
    fn new() -> Publisher {
        Publisher {
            cursor: ChangeCursor::start(),
            marker: None,
            score: 0,
            epoch: None,
            seed_pending: false,
        }
    }

    fn next_score(&mut self) -> i64 {
        let now = jiff::Timestamp::now().as_millisecond();
        self.score = now.max(self.score.saturating_add(1));
        self.score
    }

    /// Publishes what changed; on failure, rewinds to what Redis acknowledged.
    async fn round(&mut self, shared: &Shared, store: &Store) -> Result<(), RoundError> {
        let r = self.publish(shared, store).await;
        if r.is_err() {
            self.cursor = ChangeCursor::after_seq(self.marker.unwrap_or(-1));
        }
        r
    }

    async fn publish(&mut self, shared: &Shared, store: &Store) -> Result<(), RoundError> {
        let me = shared.instance();
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(k("meta")).arg("epoch");
        pipe.cmd("GET").arg(pub_key(me));
        pipe.cmd("ZREVRANGE")
            .arg(chg_key(me))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        type Top = Vec<(String, f64)>;
        let (epoch, marker, top): (Option<String>, Option<i64>, Top) =
            shared.pipe(LIMIT, &pipe).await?;
        // An empty Redis is seeded by the supervisor first (it writes `meta` last).
        let Some(epoch) = epoch else {
            return Ok(());
        };
        if let Some((_, s)) = top.first() {
            self.score = self.score.max(*s as i64);
        }
        if self.epoch.as_ref().is_some_and(|e| *e != epoch) {
            self.seed_pending = true;
        }
        self.epoch = Some(epoch);
        let marker = marker.unwrap_or(-1);
        if self.marker != Some(marker) {
            // First round, or Redis holds less than we wrote (emptied, or an older snapshot):
            // publish again from what it holds (everything when it holds more than we have:
            // another database under this instance id).
            let local = store.rollups_max_seq().await?;
            let from = if marker > local { -1 } else { marker };
            if self.marker.is_some_and(|m| marker < m) {
                tracing::info!(
                    from_seq = from,
                    "fleet usage: Redis lost part of this instance's usage; publishing it again"
                );
            }
            self.cursor = ChangeCursor::after_seq(from);
            self.marker = Some(from);
        }
        let mut published = 0usize;
        loop {
            let page = store.rollups_changed(self.cursor.clone(), CHUNK).await?;
            let caught_up = page.len() < CHUNK;
            let next = page
                .last()
                .map_or_else(|| self.cursor.clone(), |(c, _)| c.clone());
            let done = caught_up
                .then(|| next.complete_seq())
                .filter(|s| Some(*s) != self.marker);
            if page.is_empty() && done.is_none() {
                break;
            }
            let mut tx = redis::pipe();
            tx.atomic();
            if !page.is_empty() {
                let score = self.next_score();
                let fields: Vec<(String, String)> = page
                    .iter()
                    .map(|(_, r)| (field(r), encode(&r.totals)))
                    .collect();
                tx.cmd("HSET").arg(hash_key(me)).arg(&fields).ignore();
                let z = tx.cmd("ZADD").arg(chg_key(me));
                for (f, _) in &fields {
                    z.arg(score).arg(f);
                }
                z.ignore();
            }
            if let Some(seq) = done {
                tx.cmd("SET").arg(pub_key(me)).arg(seq).ignore();
            }
            shared.pipe::<()>(LIMIT, &tx).await?;
            published += page.len();
            self.cursor = next;
            if let Some(seq) = done {
                self.marker = Some(seq);
            }
            if caught_up {
                break;
            }
        }
        if published > 0 {
            tracing::trace!(rows = published, "fleet usage: published");
        }
        if self.seed_pending {
            seed_others(shared, store).await?;
            self.seed_pending = false;
        }
        Ok(())
    }
}

/// Writes what the mirror holds of the other instances into a re-seeded Redis, without
/// overwriting anything there. The scores are 1, 2, 3, … (one per field, so that no score is
/// shared by more fields than there are seeding instances: a reader's page never ends inside
/// one), far below any publish's: a reader that already mirrors those instances skips them
/// (or, when their lists have nothing newer, reads them whole once, keeping what it has).
async fn seed_others(shared: &Shared, store: &Store) -> Result<(), RoundError> {
    let mut after: Option<MirrorPos> = None;
    let mut rows = 0usize;
    let mut score = 0i64;
    loop {
        let page = store.fleet_mirror_page(after.clone(), CHUNK).await?;
        let Some((inst, last)) = page.last() else {
            break;
        };
        after = Some((
            last.granularity.clone(),
            last.dim.clone(),
            last.value.clone(),
            last.bucket_start,
            inst.clone(),
        ));
        let mut tx = redis::pipe();
        tx.atomic();
        let mut insts = BTreeSet::new();
        for (inst, r) in &page {
            if inst == shared.instance() {
                continue;
            }
            let f = field(r);
            tx.cmd("HSETNX")
                .arg(hash_key(inst))
                .arg(&f)
                .arg(encode(&r.totals))
                .ignore();
            score += 1;
            tx.cmd("ZADD")
                .arg(chg_key(inst))
                .arg("NX")
                .arg(score)
                .arg(&f)
                .ignore();
            insts.insert(inst.as_str());
        }
        for inst in insts {
            tx.cmd("ZADD")
                .arg(k("inst"))
                .arg("NX")
                .arg(0)
                .arg(inst)
                .ignore();
        }
        shared.pipe::<()>(LIMIT, &tx).await?;
        rows += page.len();
        if page.len() < CHUNK {
            break;
        }
    }
    if rows > 0 {
        tracing::info!(
            rows,
            "fleet usage: re-seeded Redis with the other instances' usage this instance mirrors"
        );
    }
    Ok(())
}

/// How far each other instance's change list was read.
#[derive(Debug, Default)]
struct Reader {
    seen: Option<HashMap<String, i64>>,
}

impl Reader {
    async fn round(&mut self, shared: &Shared, store: &Store) -> Result<(), RoundError> {
        if self.seen.is_none() {
            self.seen = Some(store.fleet_cursors().await?);
        }
        let me = shared.instance();
        let members: Vec<String> = shared
            .query(LIMIT, redis::cmd("ZRANGE").arg(k("inst")).arg(0).arg(-1))
            .await?;
        let others: Vec<String> = members.into_iter().filter(|m| m != me).collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for o in &others {
            pipe.cmd("ZREVRANGE")
                .arg(chg_key(o))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let tops: Vec<Vec<(String, f64)>> = shared.pipe(LIMIT, &pipe).await?;
        for (o, top) in others.iter().zip(tops) {
            let Some(&(_, top)) = top.first() else {
                continue;
            };
            let top = top as i64;
            let seen = self.seen.get_or_insert_default();
            let mut from = seen.get(o).copied();
            if let Some(s) = from {
                if top == s {
                    continue;
                }
                if top < s {
                    // Its list was rebuilt below what we saw: read it whole.
                    from = None;
                }
            }
            self.read_one(shared, store, o, from).await?;
        }
        Ok(())
    }

    /// Reads one instance's changes after `from` (all of them with `None`) into the mirror.
    async fn read_one(
        &mut self,
        shared: &Shared,
        store: &Store,
        inst: &str,
        mut from: Option<i64>,
    ) -> Result<(), RoundError> {
        loop {
            let min = from.map_or_else(|| "-inf".to_string(), |s| format!("({s}"));
            let mut entries: Vec<(String, f64)> = shared
                .query(
                    LIMIT,
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(chg_key(inst))
                        .arg(min)
                        .arg("+inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(PAGE),
                )
                .await?;
            let full = entries.len() == PAGE;
            // A chunk cut by the page's end is read whole next time. (Chunks are smaller than a
            // page, and seeded fields have scores of their own, so a page always holds more
            // than one score.)
            if full && let Some(&(_, last)) = entries.last() {
                let keep = entries.iter().filter(|(_, s)| *s < last).count();
                if keep > 0 {
                    entries.truncate(keep);
                }
            }
            let Some(&(_, score)) = entries.last() else {
                return Ok(());
            };
            let score = score as i64;
            let values: Vec<Option<String>> = shared
                .query(
                    LIMIT,
                    redis::cmd("HMGET")
                        .arg(hash_key(inst))
                        .arg(entries.iter().map(|(f, _)| f).collect::<Vec<_>>()),
                )
                .await?;
            let mut bad = 0usize;
            let rows: Vec<RollupRow> = entries
                .iter()
                .zip(values)
                .filter_map(|((f, _), v)| {
                    let row = v.as_deref().and_then(|v| decode(f, v));
                    if row.is_none() && v.is_some() {
                        bad += 1;
                    }
                    row
                })
                .collect();
            if bad > 0 {
                tracing::debug!(
                    instance = inst,
                    fields = bad,
                    "fleet usage: unreadable fields skipped (written by another version?)"
                );
            }
            store.mirror_fleet(inst, rows, Some(score)).await?;
            self.seen
                .get_or_insert_default()
                .insert(inst.to_string(), score);
            from = Some(score);
            if !full {
                return Ok(());
            }
        }
    }
}

/// Turns on the fleet view of `store` and starts the publisher and reader on `tasks`.
pub fn start(shared: &Arc<Shared>, store: &Store, tasks: &TaskTracker, stop: CancellationToken) {
    store.include_fleet(true);
    tasks.spawn(run(Arc::clone(shared), store.clone(), stop));
}

async fn run(shared: Arc<Shared>, store: Store, stop: CancellationToken) {
    let mut publisher = Publisher::new();
    let mut reader = Reader::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !shared.is_up() {
            continue;
        }
        let round = async {
            publisher.round(&shared, &store).await?;
            reader.round(&shared, &store).await
        };
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = round => r,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "fleet usage: round deferred");
        }
    }
    // Last chance at shutdown: what the store holds now reaches the fleet view.
    if shared.is_up() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if store.flush().await.is_ok() {
                let _ = publisher.round(&shared, &store).await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
