//! Hourly counts of requests rejected before authentication (schema version 3): one row per
//! local hour and reason, each carrying the start of its local day so that daily series group
//! by it. Never pruned (a few rows per hour at most, like the usage rollups).

use rusqlite::{Connection, params};

use super::schema::{sql, to_i64, to_u64};
use super::{SqliteError, Store};
use crate::store::StoreError;
use crate::store::records::{Millis, RejectedCount};

const ADD: &str = "INSERT INTO rejected_counts (hour_start, day_start, reason, count)
    VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (hour_start, reason) DO UPDATE SET count = count + excluded.count";

/// Adds counts (the writer's side of `StoreOp::AddRejected`).
pub(super) fn add(conn: &Connection, counts: &[RejectedCount]) -> Result<(), SqliteError> {
    let mut st = conn
        .prepare_cached(ADD)
        .map_err(sql("adding rejected-request counts"))?;
    for c in counts {
        st.execute(params![
            c.hour_start,
            c.day_start,
            c.reason,
            to_i64(c.count)
        ])
        .map_err(sql("adding rejected-request counts"))?;
    }
    Ok(())
}

/// Per bucket of `granularity` (`hour` or `day`) with `from <= bucket < to`, per reason:
/// `(bucket start, reason, count)`, ascending.
pub(super) fn series(
    conn: &Connection,
    granularity: &str,
    from: Millis,
    to: Millis,
) -> Result<Vec<(Millis, String, u64)>, SqliteError> {
    let column = match granularity {
        "hour" => "hour_start",
        "day" => "day_start",
        other => {
            return Err(SqliteError::Refused(format!(
                "unknown granularity {other:?} (expected hour or day)"
            )));
        }
    };
    let query = format!(
        "SELECT {column}, reason, SUM(count) FROM rejected_counts
         WHERE {column} >= ?1 AND {column} < ?2
         GROUP BY {column}, reason ORDER BY {column}, reason"
    );
    let context = || format!("reading the {granularity} series of rejected requests");
    let mut st = conn.prepare_cached(&query).map_err(sql(context()))?;
    let rows = st
        .query_map(params![from, to], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(context()))?;
    let mut out = Vec::new();
    for row in rows {
        let (t, reason, n) = row.map_err(sql(context()))?;
        out.push((t, reason, to_u64(n)));
    }
    Ok(out)
}

impl Store {
    /// Rejected-request counts per bucket of `granularity` (`"hour"` or `"day"`, anything else
    /// is refused) and reason, with `from <= bucket_start < to`, ascending. Reads on the
    /// read-only connection (never waits on the writer).
    pub async fn rejected_series(
        &self,
        granularity: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(Millis, String, u64)>, StoreError> {
        let granularity = granularity.to_string();
        self.read(move |conn| series(conn, &granularity, from, to))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoreOp;

    #[tokio::test]
    async fn counts_add_up_per_hour_and_group_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let h = 3_600_000;
        let (day1, day2) = (100 * 24 * h, 101 * 24 * h);
        let c = |hour_start, day_start, reason: &str, count| RejectedCount {
            hour_start,
            day_start,
            reason: reason.into(),
            count,
        };
        store
            .commit(vec![StoreOp::AddRejected(vec![
                c(day1, day1, "bad_client_key", 2),
                c(day1 + h, day1, "bad_client_key", 1),
                c(day1 + h, day1, "throttled", 4),
            ])])
            .await
            .unwrap();
        store
            .commit(vec![StoreOp::AddRejected(vec![
                c(day1, day1, "bad_client_key", 3),
                c(day2, day2, "bad_admin_key", 1),
            ])])
            .await
            .unwrap();
        let hours = store.rejected_series("hour", day1, day2 + h).await.unwrap();
        assert_eq!(
            hours,
            vec![
                (day1, "bad_client_key".to_string(), 5),
                (day1 + h, "bad_client_key".to_string(), 1),
                (day1 + h, "throttled".to_string(), 4),
                (day2, "bad_admin_key".to_string(), 1),
            ]
        );
        let days = store
            .rejected_series("day", day1, day2 + 24 * h)
            .await
            .unwrap();
        assert_eq!(
            days,
            vec![
                (day1, "bad_client_key".to_string(), 6),
                (day1, "throttled".to_string(), 4),
                (day2, "bad_admin_key".to_string(), 1),
            ]
        );
        assert_eq!(
            store
                .rejected_series("hour", day1 + h, day2)
                .await
                .unwrap()
                .len(),
            2,
            "from is inclusive, to exclusive"
        );
        assert!(store.rejected_series("week", 0, 1).await.is_err());
        store.close().unwrap();
    }
}
