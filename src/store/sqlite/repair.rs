//! The schema step that repairs integer columns that hold REAL values.
//!
//! Before sums saturated, SQLite turned an overflowing `a + b` on a counter (key counters, usage
//! rollups) into a REAL, after which the row could no longer be read as an integer and the store
//! could not be opened. This step rewrites every REAL in those columns as an INTEGER, clamped to
//! `0 ..= i64::MAX` (a REAL at or beyond `2^63` becomes `i64::MAX`). Columns are only touched
//! where a REAL is found, so on a healthy database the step only reads. Every write since
//! saturates (`schema::ADD_COUNTERS`, `usage::UPSERT_ROLLUP`), so no new REAL appears.
//!
//! It also adds an index for reading a key's history in time order.

/// The SQL of the step (appended to `schema::MIGRATIONS`).
pub(super) const REPAIR_REAL_COUNTERS: &str = "
    UPDATE keys SET
        requests = CASE WHEN typeof(requests) <> 'real' THEN requests
            WHEN requests >= 9223372036854775807 THEN 9223372036854775807
            WHEN requests <= 0 THEN 0 ELSE CAST(requests AS INTEGER) END,
        successes = CASE WHEN typeof(successes) <> 'real' THEN successes
            WHEN successes >= 9223372036854775807 THEN 9223372036854775807
            WHEN successes <= 0 THEN 0 ELSE CAST(successes AS INTEGER) END,
        failures = CASE WHEN typeof(failures) <> 'real' THEN failures
            WHEN failures >= 9223372036854775807 THEN 9223372036854775807
            WHEN failures <= 0 THEN 0 ELSE CAST(failures AS INTEGER) END,
        input_tokens = CASE WHEN typeof(input_tokens) <> 'real' THEN input_tokens
            WHEN input_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN input_tokens <= 0 THEN 0 ELSE CAST(input_tokens AS INTEGER) END,
        output_tokens = CASE WHEN typeof(output_tokens) <> 'real' THEN output_tokens
            WHEN output_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN output_tokens <= 0 THEN 0 ELSE CAST(output_tokens AS INTEGER) END
    WHERE typeof(requests) = 'real' OR typeof(successes) = 'real' OR typeof(failures) = 'real' OR typeof(input_tokens) = 'real' OR typeof(output_tokens) = 'real';
    UPDATE usage_rollups SET
        requests = CASE WHEN typeof(requests) <> 'real' THEN requests
            WHEN requests >= 9223372036854775807 THEN 9223372036854775807
            WHEN requests <= 0 THEN 0 ELSE CAST(requests AS INTEGER) END,
        successes = CASE WHEN typeof(successes) <> 'real' THEN successes
            WHEN successes >= 9223372036854775807 THEN 9223372036854775807
            WHEN successes <= 0 THEN 0 ELSE CAST(successes AS INTEGER) END,
        input_tokens = CASE WHEN typeof(input_tokens) <> 'real' THEN input_tokens
            WHEN input_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN input_tokens <= 0 THEN 0 ELSE CAST(input_tokens AS INTEGER) END,
        cache_read_tokens = CASE WHEN typeof(cache_read_tokens) <> 'real' THEN cache_read_tokens
            WHEN cache_read_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN cache_read_tokens <= 0 THEN 0 ELSE CAST(cache_read_tokens AS INTEGER) END,
        cache_write_tokens = CASE WHEN typeof(cache_write_tokens) <> 'real' THEN cache_write_tokens
            WHEN cache_write_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN cache_write_tokens <= 0 THEN 0 ELSE CAST(cache_write_tokens AS INTEGER) END,
        output_tokens = CASE WHEN typeof(output_tokens) <> 'real' THEN output_tokens
            WHEN output_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN output_tokens <= 0 THEN 0 ELSE CAST(output_tokens AS INTEGER) END,
        reasoning_tokens = CASE WHEN typeof(reasoning_tokens) <> 'real' THEN reasoning_tokens
            WHEN reasoning_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN reasoning_tokens <= 0 THEN 0 ELSE CAST(reasoning_tokens AS INTEGER) END
    WHERE typeof(requests) = 'real' OR typeof(successes) = 'real' OR typeof(input_tokens) = 'real' OR typeof(cache_read_tokens) = 'real' OR typeof(cache_write_tokens) = 'real' OR typeof(output_tokens) = 'real' OR typeof(reasoning_tokens) = 'real';
    UPDATE usage_records SET
        input_tokens = CASE WHEN typeof(input_tokens) <> 'real' THEN input_tokens
            WHEN input_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN input_tokens <= 0 THEN 0 ELSE CAST(input_tokens AS INTEGER) END,
        cache_read_tokens = CASE WHEN typeof(cache_read_tokens) <> 'real' THEN cache_read_tokens
            WHEN cache_read_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN cache_read_tokens <= 0 THEN 0 ELSE CAST(cache_read_tokens AS INTEGER) END,
        cache_write_tokens = CASE WHEN typeof(cache_write_tokens) <> 'real' THEN cache_write_tokens
            WHEN cache_write_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN cache_write_tokens <= 0 THEN 0 ELSE CAST(cache_write_tokens AS INTEGER) END,
        output_tokens = CASE WHEN typeof(output_tokens) <> 'real' THEN output_tokens
            WHEN output_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN output_tokens <= 0 THEN 0 ELSE CAST(output_tokens AS INTEGER) END,
        reasoning_tokens = CASE WHEN typeof(reasoning_tokens) <> 'real' THEN reasoning_tokens
            WHEN reasoning_tokens >= 9223372036854775807 THEN 9223372036854775807
            WHEN reasoning_tokens <= 0 THEN 0 ELSE CAST(reasoning_tokens AS INTEGER) END,
        latency_ms = CASE WHEN typeof(latency_ms) <> 'real' THEN latency_ms
            WHEN latency_ms >= 9223372036854775807 THEN 9223372036854775807
            WHEN latency_ms <= 0 THEN 0 ELSE CAST(latency_ms AS INTEGER) END
    WHERE typeof(input_tokens) = 'real' OR typeof(cache_read_tokens) = 'real' OR typeof(cache_write_tokens) = 'real' OR typeof(output_tokens) = 'real' OR typeof(reasoning_tokens) = 'real' OR typeof(latency_ms) = 'real';
    UPDATE balances SET
        used = CASE WHEN typeof(used) <> 'real' THEN used
            WHEN used >= 9223372036854775807 THEN 9223372036854775807
            WHEN used <= 0 THEN 0 ELSE CAST(used AS INTEGER) END,
        allowance = CASE WHEN typeof(allowance) <> 'real' THEN allowance
            WHEN allowance >= 9223372036854775807 THEN 9223372036854775807
            WHEN allowance <= 0 THEN 0 ELSE CAST(allowance AS INTEGER) END,
        premium_used = CASE WHEN typeof(premium_used) <> 'real' THEN premium_used
            WHEN premium_used >= 9223372036854775807 THEN 9223372036854775807
            WHEN premium_used <= 0 THEN 0 ELSE CAST(premium_used AS INTEGER) END,
        premium_allowance = CASE WHEN typeof(premium_allowance) <> 'real' THEN premium_allowance
            WHEN premium_allowance >= 9223372036854775807 THEN 9223372036854775807
            WHEN premium_allowance <= 0 THEN 0 ELSE CAST(premium_allowance AS INTEGER) END
    WHERE typeof(used) = 'real' OR typeof(allowance) = 'real' OR typeof(premium_used) = 'real' OR typeof(premium_allowance) = 'real';
    CREATE INDEX IF NOT EXISTS key_events_key_at ON key_events (key_id, at, seq);";

/// The schema version this step brings a database to.
pub fn repair_version() -> i64 {
    super::schema::MIGRATIONS
        .iter()
        .position(|step| *step == REPAIR_REAL_COUNTERS)
        .and_then(|i| i64::try_from(i + 1).ok())
        .unwrap_or(0)
}
