//! One usage record per client request, handed to the store's writer.
//!
//! Recording never blocks a request: the record goes straight into the store's bounded traffic
//! queue (the one queue between requests and the database; see `store::sqlite`). When that queue
//! is full the record is dropped — the Prometheus request and token counters, updated before,
//! still count it — and both `droid2api_store_dropped_total{kind="usage"}` and
//! `droid2api_usage_dropped_total` say so. Token counts are clamped to [`MAX_TOKENS`] per field
//! here too, whatever the caller computed.

use std::sync::Arc;

use jiff::tz::TimeZone;

use super::{MAX_TOKENS, buckets};
use crate::store::records::UsageRecord;
use crate::store::sqlite::Store;
use crate::telemetry::metrics as m;

/// The recording handle.
#[derive(Debug)]
pub struct Recorder {
    store: Store,
    tz: TimeZone,
}

impl Recorder {
    /// Records into `store`, bucketing in `tz`.
    pub fn new(store: Store, tz: TimeZone) -> Arc<Recorder> {
        Arc::new(Recorder { store, tz })
    }

    /// The configured time zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// Queues a record (its hour and day are computed here, in the configured zone). Never
    /// blocks.
    pub fn record(&self, mut r: UsageRecord) {
        (r.hour_start, r.day_start) = buckets::buckets(r.at, &self.tz);
        for n in [
            &mut r.input_tokens,
            &mut r.cache_read_tokens,
            &mut r.cache_write_tokens,
            &mut r.output_tokens,
            &mut r.reasoning_tokens,
        ] {
            *n = (*n).min(MAX_TOKENS);
        }
        if !self.store.record_usage(r) {
            metrics::counter!(m::USAGE_DROPPED).increment(1);
        }
    }
}
