//! One usage record per client request, handed to the store's writer in batches.
//!
//! Recording never blocks a request: records go through a bounded queue; when it is full the
//! record is dropped (the Prometheus request and token counters, updated before the queue, still
//! count it) and `droid2api_usage_dropped_total` says so.

use std::sync::Arc;

use jiff::tz::TimeZone;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::buckets;
use crate::store::records::{StoreOp, UsageRecord};
use crate::store::sqlite::Store;
use crate::telemetry::metrics as m;

/// Records waiting for the writer at most.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Records per store batch at most.
pub const BATCH: usize = 500;

/// The recording handle.
#[derive(Debug)]
pub struct Recorder {
    tx: mpsc::Sender<UsageRecord>,
    tz: TimeZone,
    stop: CancellationToken,
}

impl Recorder {
    /// Starts the batching task on `tasks`.
    pub fn start(store: Store, tz: TimeZone, tasks: &TaskTracker) -> Arc<Recorder> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stop = CancellationToken::new();
        tasks.spawn(drain(rx, store, stop.clone()));
        Arc::new(Recorder { tx, tz, stop })
    }

    /// The configured time zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// Queues a record (its hour and day are computed here, in the configured zone).
    pub fn record(&self, mut r: UsageRecord) {
        (r.hour_start, r.day_start) = buckets::buckets(r.at, &self.tz);
        if self.tx.try_send(r).is_err() {
            metrics::counter!(m::USAGE_DROPPED).increment(1);
        }
    }

    /// Stops accepting and writes what is queued (the end of shutdown, after the last request).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn drain(mut rx: mpsc::Receiver<UsageRecord>, store: Store, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    store.submit(vec![StoreOp::AddUsage(std::mem::take(&mut batch))]);
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        store.submit(vec![StoreOp::AddUsage(std::mem::take(&mut batch))]);
    }
}
