//! Prometheus metrics: every name is a constant here, so names are grep-able and stable.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Client requests, by `route`, `model` and `status`.
pub const REQUESTS: &str = "droid2api_requests_total";
/// Whole-request latency in seconds, by `route`.
pub const REQUEST_DURATION: &str = "droid2api_request_duration_seconds";
/// Time until the first response byte left for the client, by `route`.
pub const TIME_TO_FIRST_BYTE: &str = "droid2api_time_to_first_byte_seconds";
/// Upstream answers other than 2xx, by `status` (`0` = no answer: connect error or timeout).
pub const UPSTREAM_ERRORS: &str = "droid2api_upstream_errors_total";
/// Failed WorkOS refreshes.
pub const REFRESH_FAILURES: &str = "droid2api_refresh_failures_total";
/// Tokens seen in upstream usage, by `model` and `kind` (input, cache_read, cache_write, output).
pub const TOKENS: &str = "droid2api_tokens_total";
/// Streams whose client went away before the end.
pub const CLIENT_DISCONNECTS: &str = "droid2api_client_disconnects_total";

/// Pool keys by state (`active`, `cooling`, `disabled`, `banned`).
pub const POOL_KEYS: &str = "droid2api_pool_keys";
/// Retries on another key within one request, by the `status` that caused them.
pub const POOL_FAILOVERS: &str = "droid2api_pool_failovers_total";
/// Requests the pool could not serve, by `reason` (`cooling`, `no_active_key`).
pub const POOL_EXHAUSTED: &str = "droid2api_pool_exhausted_total";
/// Key state transitions, by `reason`.
pub const POOL_TRANSITIONS: &str = "droid2api_pool_transitions_total";
/// Picks for a request of a known conversation (contract §14), by `result`: `hit` (its pinned
/// key served), `miss` (no pin: the pick was pinned), `repin` (the pinned key could not serve:
/// the pin moved).
pub const STICKY: &str = "droid2api_sticky_total";

/// Usage records dropped because the store's traffic queue was full (kept for dashboards that
/// use it; `droid2api_store_dropped_total{kind="usage"}` counts the same records).
pub const USAGE_DROPPED: &str = "droid2api_usage_dropped_total";

// Exposure limits (contract §9).
/// Requests refused before authentication or before the pipeline, by `reason`
/// (`inbound::rejected::REASONS`). They are not usage records.
pub const REJECTED: &str = "droid2api_rejected_total";
/// Requests refused by a client key's limits (contract §13), by `reason` (`rate_limited`,
/// `quota_exceeded`, `model_not_allowed`, `expired`). The first three of those are also rejected
/// counts (no usage record); a `model_not_allowed` refusal is a usage record (status 403).
pub const CLIENT_REJECTED: &str = "droid2api_client_rejected_total";
/// Client connections open now.
pub const OPEN_CONNECTIONS: &str = "droid2api_open_connections";
/// Connections the gateway closed itself, by `reason` (`header_timeout`, `idle_timeout`).
pub const CONNECTIONS_CLOSED: &str = "droid2api_connections_closed_total";

// ----- the store's write-behind and the process's upkeep -----

/// Writes dropped before reaching the database because the store's traffic queue was full (or
/// the store closed), by `kind`: `usage` (usage records), `event` (key history events from
/// traffic), `other`, `admin` (unacknowledged admin-lane ops when that lane was full). Key
/// states, counters and balances are coalesced per key and never dropped.
pub const STORE_DROPPED: &str = "droid2api_store_dropped_total";
/// Acknowledged writes whose caller stopped waiting after the acknowledgement timeout (the
/// admin API answered 503).
pub const STORE_ACK_TIMEOUTS: &str = "droid2api_store_ack_timeouts_total";
/// Traffic items (usage records, key events) waiting for the store's writer, sampled every
/// upkeep period.
pub const STORE_QUEUED: &str = "droid2api_store_queued";
/// The traffic queue's capacity.
pub const STORE_QUEUE_CAPACITY: &str = "droid2api_store_queue_capacity";
/// Console log lines dropped because the console writer fell behind (lossy, never blocking).
pub const LOG_DROPPED: &str = "droid2api_log_dropped_lines_total";
/// 1 while Redis answers and the shared state is in step, 0 otherwise (only with `REDIS_URL`).
pub const REDIS_UP: &str = "droid2api_redis_up";
/// Shared writes dropped because the outage buffer was full.
pub const REDIS_DROPPED: &str = "droid2api_redis_dropped_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder (installed on first use; every server in the process shares it).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Client requests by route, model and status");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Whole-request latency"
    );
    metrics::describe_histogram!(
        TIME_TO_FIRST_BYTE,
        metrics::Unit::Seconds,
        "Time to the first response byte"
    );
    metrics::describe_counter!(
        UPSTREAM_ERRORS,
        "Upstream non-2xx answers and transport failures by status"
    );
    metrics::describe_counter!(REFRESH_FAILURES, "Failed WorkOS token refreshes");
    metrics::describe_counter!(
        STICKY,
        "Key picks for a conversation, by result: hit (its pinned key), miss (newly pinned), repin (pin moved)"
    );
    metrics::describe_counter!(TOKENS, "Tokens reported by the upstream, by model and kind");
    metrics::describe_counter!(
        CLIENT_DISCONNECTS,
        "Streams the client abandoned before the end"
    );
    metrics::describe_counter!(
        REJECTED,
        "Requests refused before authentication or before the pipeline, by reason"
    );
    metrics::describe_gauge!(OPEN_CONNECTIONS, "Client connections open now");
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections closed by the gateway for a header or idle timeout"
    );
    metrics::describe_counter!(
        USAGE_DROPPED,
        "Usage records dropped because the store's queue was full"
    );
    metrics::describe_counter!(
        STORE_DROPPED,
        "Writes dropped because the store's traffic queue was full, by kind"
    );
    metrics::describe_counter!(
        STORE_ACK_TIMEOUTS,
        "Acknowledged writes the store did not confirm within the timeout"
    );
    metrics::describe_gauge!(
        STORE_QUEUED,
        "Usage records and key events waiting for the store's writer"
    );
    metrics::describe_gauge!(
        STORE_QUEUE_CAPACITY,
        "Capacity of the store's traffic queue"
    );
    metrics::describe_counter!(
        LOG_DROPPED,
        "Console log lines dropped because the console writer fell behind"
    );
    metrics::describe_gauge!(
        REDIS_UP,
        "1 while Redis answers and this instance's shared state is in step (REDIS_URL set)"
    );
    metrics::describe_counter!(
        REDIS_DROPPED,
        "Shared writes dropped because the buffer held while Redis was unreachable was full"
    );
}

/// How often the metrics upkeep runs (histogram samples folded into their buckets, gauges of
/// queues sampled). Histogram samples are held in memory until then, so this bounds them.
pub const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Calls `upkeep` every `period` until `stop` fires, then once more. The recorder is built
/// without the exporter's own upkeep task (the gateway serves `/metrics` itself), so without
/// this loop histogram samples would pile up until someone scrapes `/metrics`.
pub async fn upkeep_loop(
    period: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
    mut upkeep: impl FnMut(),
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => upkeep(),
        }
    }
    upkeep();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test]
    async fn upkeep_runs_every_period_until_stopped_then_once_more() {
        let runs = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let counted = Arc::clone(&runs);
        let task = tokio::spawn(upkeep_loop(
            Duration::from_millis(10),
            stop.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "upkeep did not run");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the loop stops when cancelled")
            .unwrap();
        let after = runs.load(Ordering::SeqCst);
        assert!(after >= 4, "a last run at shutdown: {after}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            after,
            "nothing runs after the stop"
        );
    }
}
