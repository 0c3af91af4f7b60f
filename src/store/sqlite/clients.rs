//! Client keys (contract §13): the `clients` table, its ops and its loading. The key itself is
//! never stored: a row holds the SHA-256 digest of the key (hex) and a display mask computed
//! when the key was made. Deleting a client removes its row; its usage (records and rollups
//! under its id) stays.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteError;
use super::schema::{sql, to_i64, to_u64};
use crate::store::records::{ClientRecord, Millis};

/// Schema step 6: the client keys (`IF NOT EXISTS`: a database whose version was lowered by hand
/// runs the later steps again).
pub(super) const CLIENTS_STEP: &str = "CREATE TABLE IF NOT EXISTS clients (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        key_digest       TEXT NOT NULL UNIQUE,
        key_masked       TEXT NOT NULL,
        rpm              INTEGER,
        requests_per_day INTEGER,
        tokens_per_day   INTEGER,
        models           TEXT,
        expires_at       INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    );";

const UPSERT_CLIENT: &str = "INSERT INTO clients (id, name, key_digest, key_masked, rpm,
        requests_per_day, tokens_per_day, models, expires_at, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, key_digest = excluded.key_digest,
        key_masked = excluded.key_masked, rpm = excluded.rpm,
        requests_per_day = excluded.requests_per_day, tokens_per_day = excluded.tokens_per_day,
        models = excluded.models, expires_at = excluded.expires_at,
        created_at = excluded.created_at, updated_at = excluded.updated_at";

/// `PutClient`.
pub(super) fn put_client(conn: &Connection, c: &ClientRecord) -> Result<(), SqliteError> {
    let models = c
        .models
        .as_ref()
        .map(|m| serde_json::Value::from(m.clone()).to_string());
    conn.prepare_cached(UPSERT_CLIENT)
        .and_then(|mut st| {
            st.execute(params![
                c.id,
                c.name,
                c.key_digest,
                c.key_masked,
                c.rpm,
                c.requests_per_day.map(to_i64),
                c.tokens_per_day.map(to_i64),
                models,
                c.expires_at,
                c.created_at,
                c.updated_at,
            ])
        })
        .map_err(sql(format!("storing client {}", c.id)))?;
    Ok(())
}

/// `DeleteClient`.
pub(super) fn delete_client(conn: &Connection, id: &str) -> Result<(), SqliteError> {
    conn.prepare_cached("DELETE FROM clients WHERE id = ?1")
        .and_then(|mut st| st.execute([id]))
        .map_err(sql(format!("deleting client {id}")))?;
    Ok(())
}

/// Every client, in creation order.
pub(super) fn load_clients(conn: &Connection) -> Result<Vec<ClientRecord>, SqliteError> {
    let mut st = conn
        .prepare(
            "SELECT id, name, key_digest, key_masked, rpm, requests_per_day, tokens_per_day,
                models, expires_at, created_at, updated_at
             FROM clients ORDER BY created_at, rowid",
        )
        .map_err(sql("loading clients"))?;
    st.query_map([], |r| {
        let models: Option<String> = r.get(7)?;
        let id: String = r.get(0)?;
        let models = models.map(|text| match serde_json::from_str::<Vec<String>>(&text) {
            Ok(list) => list,
            Err(_) => {
                // Never written by us; refusing every model is the safe reading.
                tracing::warn!(client = %id, "store: a client's model list is not a JSON list of strings; it allows no model");
                Vec::new()
            }
        });
        Ok(ClientRecord {
            name: r.get(1)?,
            key_digest: r.get(2)?,
            key_masked: r.get(3)?,
            rpm: r
                .get::<_, Option<i64>>(4)?
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            requests_per_day: r.get::<_, Option<i64>>(5)?.map(to_u64),
            tokens_per_day: r.get::<_, Option<i64>>(6)?.map(to_u64),
            models,
            expires_at: r.get(8)?,
            created_at: r.get(9)?,
            updated_at: r.get(10)?,
            id,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sql("loading clients"))
}

/// When each client was last used, as far as the usage records tell: the latest hour rollup of
/// the client, then the latest record within that hour (both found through an index).
pub(super) fn load_last_used(
    conn: &Connection,
    ids: &[&str],
) -> Result<HashMap<String, Millis>, SqliteError> {
    let mut out = HashMap::new();
    let mut hour = conn
        .prepare_cached(
            "SELECT max(bucket_start) FROM usage_rollups
             WHERE granularity = 'hour' AND dim = 'client' AND value = ?1",
        )
        .map_err(sql("reading when clients were last used"))?;
    let mut last = conn
        .prepare_cached(
            "SELECT max(at) FROM usage_records WHERE at >= ?1 AND at < ?2 AND client = ?3",
        )
        .map_err(sql("reading when clients were last used"))?;
    for id in ids {
        let start: Option<Millis> = hour
            .query_row([id], |r| r.get(0))
            .optional()
            .map_err(sql("reading when clients were last used"))?
            .flatten();
        let Some(start) = start else { continue };
        // Records are bucketed by their arrival time; an hour bucket spans one hour (allow for
        // a zone's odd offsets by reading two).
        let at: Option<Millis> = last
            .query_row(params![start, start + 2 * 3_600_000, id], |r| r.get(0))
            .optional()
            .map_err(sql("reading when clients were last used"))?
            .flatten();
        // Records past retention are gone: the hour is the best answer left.
        out.insert((*id).to_string(), at.unwrap_or(start));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::Store;
    use crate::store::records::{ClientRecord, Millis, StoreOp, UsageRecord};

    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 1_700_006_400_000; // a UTC midnight

    fn client(id: &str, models: Option<Vec<String>>) -> ClientRecord {
        ClientRecord {
            id: id.into(),
            name: format!("name of {id}"),
            key_digest: format!("{:0>64}", id.len()),
            key_masked: "d2a-abc…wxyz".into(),
            rpm: Some(3),
            requests_per_day: None,
            tokens_per_day: Some(u64::MAX / 4),
            models,
            expires_at: Some(DAY + 9),
            created_at: DAY,
            updated_at: DAY + 1,
        }
    }

    fn used(at: Millis, client: &str, model: &str) -> UsageRecord {
        UsageRecord {
            at,
            hour_start: at - at.rem_euclid(HOUR),
            day_start: at - at.rem_euclid(24 * HOUR),
            credential: "env".into(),
            attempts: 1,
            client: client.into(),
            model: model.into(),
            route: "/v1/messages".into(),
            upstream_format: "anthropic".into(),
            status: 200,
            input_tokens: 10,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 5,
            reasoning_tokens: 0,
            estimated: false,
            complete: true,
            latency_ms: 1,
            ttfb_ms: None,
        }
    }

    #[tokio::test]
    async fn clients_are_stored_replaced_deleted_and_found_by_usage() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(dir.path()).unwrap();
        assert!(loaded.clients.is_empty());
        let a = client("cli_a", Some(vec!["m1".into(), "m2".into()]));
        let mut b = client("cli_bb", None);
        store
            .commit(vec![
                StoreOp::PutClient(a.clone()),
                StoreOp::PutClient(b.clone()),
                StoreOp::AddUsage(vec![
                    used(DAY + 2 * HOUR + 5, "cli_a", "m1"),
                    used(DAY + 2 * HOUR + 7, "cli_a", "m2"),
                    used(DAY + 3 * HOUR, "cli_bb", "m1"),
                    used(DAY + 4 * HOUR, "anonymous", "m1"),
                ]),
            ])
            .await
            .unwrap();
        b.name = "renamed".into();
        b.rpm = None;
        store
            .commit(vec![StoreOp::PutClient(b.clone())])
            .await
            .unwrap();

        // One filter reads the rollups, two the records.
        let series = store
            .usage_series_of("day", DAY, DAY + 24 * HOUR, None, None, Some("cli_a"))
            .await
            .unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].1.requests, 2);
        let series = store
            .usage_series_of(
                "hour",
                DAY,
                DAY + 24 * HOUR,
                None,
                Some("m1"),
                Some("cli_a"),
            )
            .await
            .unwrap();
        assert_eq!(series, vec![(DAY + 2 * HOUR, series[0].1.clone())]);
        assert_eq!(series[0].1.requests, 1);
        assert!(
            store
                .usage_series_of("day", DAY, DAY + 24 * HOUR, None, None, Some("cli_none"))
                .await
                .unwrap()
                .is_empty()
        );
        store.close().unwrap();

        let (store, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(loaded.clients, vec![a, b]);
        assert_eq!(
            loaded.client_last_used.get("cli_a"),
            Some(&(DAY + 2 * HOUR + 7))
        );
        assert_eq!(
            loaded.client_last_used.get("cli_bb"),
            Some(&(DAY + 3 * HOUR))
        );
        store
            .commit(vec![StoreOp::DeleteClient("cli_a".into())])
            .await
            .unwrap();
        store.close().unwrap();
        let (store, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(loaded.clients.len(), 1);
        assert_eq!(loaded.clients[0].id, "cli_bb");
        // The deleted client's usage stays under its id.
        let by_client = store.usage_by("client", DAY).await.unwrap();
        assert!(by_client.iter().any(|(id, _, _)| id == "cli_a"));
        store.close().unwrap();
    }
}
