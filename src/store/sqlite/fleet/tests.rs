use super::*;
use crate::store::records::{StoreOp, UsageRecord};
use crate::store::sqlite::usage::Tokens;
use crate::store::sqlite::{DB_FILE, schema};

const HOUR: Millis = 3_600_000;
const DAY: Millis = 1_700_006_400_000 - 1_700_006_400_000 % (24 * HOUR);

fn record(at: Millis, key: &str, model: &str, tokens: u64) -> UsageRecord {
    UsageRecord {
        at,
        hour_start: at - at % HOUR,
        day_start: DAY,
        credential: key.into(),
        attempts: 1,
        client: "c".into(),
        model: model.into(),
        route: "/v1/messages".into(),
        upstream_format: "anthropic".into(),
        status: 200,
        input_tokens: tokens,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 1,
        reasoning_tokens: 0,
        estimated: false,
        complete: true,
        latency_ms: 1,
        ttfb_ms: None,
    }
}

fn totals(requests: u64, input: u64) -> UsageTotals {
    UsageTotals {
        requests,
        successes: requests,
        tokens: Tokens {
            input_tokens: input,
            output_tokens: requests,
            ..Tokens::default()
        },
    }
}

fn row(g: &str, d: &str, v: &str, bucket: Millis, t: UsageTotals) -> RollupRow {
    RollupRow {
        granularity: g.into(),
        dim: d.into(),
        value: v.into(),
        bucket_start: bucket,
        totals: t,
    }
}

/// Every changed row after `from`, read in pages of `limit`; the cursor at the end.
async fn drain(
    store: &Store,
    mut from: ChangeCursor,
    limit: usize,
) -> (Vec<RollupRow>, ChangeCursor) {
    let mut out = Vec::new();
    loop {
        let page = store.rollups_changed(from.clone(), limit).await.unwrap();
        let n = page.len();
        for (c, r) in page {
            from = c;
            out.push(r);
        }
        if n < limit {
            return (out, from);
        }
    }
}

#[tokio::test]
async fn changed_rows_are_read_once_in_pages_and_again_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    assert_eq!(store.rollups_max_seq().await.unwrap(), 0);
    let (none, cur) = drain(&store, ChangeCursor::start(), 5).await;
    assert!(none.is_empty());
    assert_eq!(cur.complete_seq(), -1);

    let at = DAY + 3 * HOUR;
    store
        .commit(vec![StoreOp::AddUsage(vec![
            record(at, "k1", "m1", 10),
            record(at, "k2", "m1", 20),
        ])])
        .await
        .unwrap();
    // 3 granularities × (all, k1, k2, m1, c) = 15 rows, read in pages of 4.
    let (first, cur) = drain(&store, ChangeCursor::start(), 4).await;
    assert_eq!(first.len(), 15, "{first:#?}");
    let mut fields: Vec<_> = first
        .iter()
        .map(|r| (&r.granularity, &r.dim, &r.value))
        .collect();
    fields.sort();
    fields.dedup();
    assert_eq!(fields.len(), 15, "each row once");
    let seq1 = store.rollups_max_seq().await.unwrap();
    assert_eq!(cur.complete_seq(), seq1);
    assert_eq!(cur.seq(), seq1);

    // Nothing new: nothing read.
    assert!(drain(&store, cur.clone(), 4).await.0.is_empty());

    // One more request on k1: only its rows (and all, m1, c) come again, with absolute sums.
    store
        .commit(vec![StoreOp::AddUsage(vec![record(at, "k1", "m1", 5)])])
        .await
        .unwrap();
    let (second, cur2) = drain(&store, cur.clone(), 100).await;
    assert_eq!(second.len(), 12, "{second:#?}");
    assert!(second.iter().all(|r| r.value != "k2"));
    let total_k1 = second
        .iter()
        .find(|r| r.granularity == "total" && r.dim == "key")
        .unwrap();
    assert_eq!(total_k1.totals, totals(2, 15));
    let total_all = second
        .iter()
        .find(|r| r.granularity == "total" && r.dim == "all")
        .unwrap();
    assert_eq!(total_all.totals, totals(3, 35));
    assert!(cur2.complete_seq() > seq1);

    // From a sequence: what changed after it.
    let (after, _) = drain(&store, ChangeCursor::after_seq(seq1), 100).await;
    assert_eq!(after, second);
    let (all, _) = drain(&store, ChangeCursor::after_seq(-1), 3).await;
    assert_eq!(all.len(), 15);
    store.close().unwrap();
}

#[tokio::test]
async fn the_mirror_adds_to_every_usage_answer_once_included() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let at = DAY + 5 * HOUR;
    let hour = at - at % HOUR;
    store
        .commit(vec![StoreOp::AddUsage(vec![
            record(at, "k1", "m1", 10),
            record(at, "k1", "m1", 10),
        ])])
        .await
        .unwrap();
    let mirror = |b: u64| {
        vec![
            row("total", "all", "", 0, totals(b, 100)),
            row("day", "all", "", DAY, totals(b, 100)),
            row("hour", "all", "", hour, totals(b, 100)),
            row("hour", "all", "", hour + HOUR, totals(1, 1)),
            row("total", "key", "k1", 0, totals(b, 100)),
            row("day", "key", "k1", DAY, totals(b, 100)),
            row("total", "key", "k9", 0, totals(1, 7)),
            row("total", "model", "m|x", 0, totals(1, 7)),
        ]
    };
    store.mirror_fleet("B", mirror(3), Some(41)).await.unwrap();
    store.mirror_fleet("C", mirror(4), None).await.unwrap();

    // Off (no REDIS_URL): local only.
    let (all, day) = store.usage_totals(DAY).await.unwrap();
    assert_eq!((all.requests, day.requests), (2, 2));
    let series = store
        .usage_series("hour", DAY, DAY + 24 * HOUR, None, None)
        .await
        .unwrap();
    assert_eq!(series.len(), 1);

    store.include_fleet(true);
    let (all, day) = store.usage_totals(DAY).await.unwrap();
    assert_eq!(all, totals(9, 220));
    assert_eq!(day, totals(9, 220));
    let by_key = store.usage_by("key", DAY).await.unwrap();
    let keys: Vec<_> = by_key
        .iter()
        .map(|(k, a, d)| (k.as_str(), a.requests, d.requests))
        .collect();
    assert_eq!(keys, [("k1", 9, 9), ("k9", 2, 0)]);
    let models: Vec<_> = store
        .usage_by("model", DAY)
        .await
        .unwrap()
        .into_iter()
        .map(|(m, a, _)| (m, a.requests))
        .collect();
    assert_eq!(models, [("m1".to_string(), 2), ("m|x".to_string(), 2)]);
    let series = store
        .usage_series("hour", DAY, DAY + 24 * HOUR, None, None)
        .await
        .unwrap();
    let points: Vec<_> = series.iter().map(|(t, u)| (*t, u.requests)).collect();
    assert_eq!(points, [(hour, 9), (hour + HOUR, 2)]);
    let by_key_series = store
        .usage_series("day", DAY, DAY + 24 * HOUR, Some("k1"), None)
        .await
        .unwrap();
    assert_eq!(by_key_series, [(DAY, totals(9, 220))]);
    // Key and model together come from this instance's records alone.
    let records = store
        .usage_series("hour", DAY, DAY + 24 * HOUR, Some("k1"), Some("m1"))
        .await
        .unwrap();
    assert_eq!(records.iter().map(|p| p.1.requests).sum::<u64>(), 2);

    // An older copy never takes a row back; a newer one replaces it.
    store.mirror_fleet("B", mirror(1), Some(42)).await.unwrap();
    assert_eq!(store.usage_totals(DAY).await.unwrap().0.requests, 9);
    store.mirror_fleet("B", mirror(10), Some(43)).await.unwrap();
    assert_eq!(store.usage_totals(DAY).await.unwrap().0.requests, 16);

    let cursors = store.fleet_cursors().await.unwrap();
    assert_eq!(cursors, HashMap::from([("B".to_string(), 43)]));

    // The mirror pages through every row of every instance once.
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = store.fleet_mirror_page(after.clone(), 3).await.unwrap();
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
        let n = page.len();
        seen.extend(page);
        if n < 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 16);
    assert_eq!(seen.iter().filter(|(i, _)| i == "C").count(), 8);
    store.close().unwrap();
}

#[tokio::test]
async fn the_fleet_step_runs_again_on_a_database_that_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::AddUsage(vec![record(DAY, "k", "m", 3)])])
        .await
        .unwrap();
    store
        .mirror_fleet("B", vec![row("total", "all", "", 0, totals(5, 5))], Some(1))
        .await
        .unwrap();
    store.close().unwrap();
    {
        let raw = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        // The version before the fleet step (later steps run again too).
        let before_fleet = schema::MIGRATIONS
            .iter()
            .position(|step| *step == super::FLEET_STEP)
            .unwrap();
        raw.pragma_update(None, "user_version", before_fleet as i64)
            .unwrap();
    }
    let (store, _) = Store::open(dir.path()).unwrap();
    store.include_fleet(true);
    assert_eq!(store.usage_totals(DAY).await.unwrap().0.requests, 6);
    // The rebuilt rollups are all published again (their sequence starts over).
    let (rows, _) = drain(&store, ChangeCursor::start(), 100).await;
    assert_eq!(rows.len(), 12);
    store
        .commit(vec![StoreOp::AddUsage(vec![record(DAY, "k", "m", 3)])])
        .await
        .unwrap();
    assert_eq!(store.rollups_max_seq().await.unwrap(), 1);
    store.close().unwrap();
}

#[test]
fn reading_changes_uses_the_change_index() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store.close().unwrap();
    let raw = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let plan: Vec<String> = raw
        .prepare(
            "EXPLAIN QUERY PLAN SELECT * FROM usage_rollups
             WHERE (changed_seq, granularity, dim, value, bucket_start) > (1, '', '', '', 0)
             ORDER BY changed_seq, granularity, dim, value, bucket_start LIMIT 10",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("; ");
    assert!(plan.contains("usage_rollups_changed"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}
