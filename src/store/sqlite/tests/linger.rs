//! The traffic lane lingers: the writer takes traffic once its oldest item has waited the
//! linger time, or the lane is half full, or an admin message comes — never one small
//! transaction per request.

use std::time::{Duration, Instant};

use super::super::queue::{AdminMsg, Queue};
use super::*;

const LINGER: Duration = Duration::from_millis(300);

fn record(i: i64) -> UsageRecord {
    usage(DAY1 + i, "k1", "claude", "c", 200)
}

#[test]
fn traffic_waits_for_the_linger_time_then_is_taken_at_once() {
    let q = Queue::new(100, LINGER);
    let start = Instant::now();
    assert!(q.push_usage(record(1)));
    // Not due yet: a non-blocking take leaves it queued.
    let early = q.take(false);
    assert!(early.admin.is_empty());
    assert!(early.traffic.usage.is_empty());
    assert!(q.push_usage(record(2)));
    assert_eq!(q.stats().queued, 2);
    // A blocking take waits out the linger, then takes both records in one go.
    let taken = q.take(true);
    assert!(
        start.elapsed() >= LINGER,
        "taken after {:?}",
        start.elapsed()
    );
    assert_eq!(taken.traffic.usage.len(), 2);
    assert_eq!(q.stats().queued, 0);
}

#[test]
fn half_capacity_makes_traffic_due_at_once() {
    let q = Queue::new(100, Duration::from_secs(3600));
    for i in 0..49 {
        assert!(q.push_usage(record(i)));
    }
    assert!(
        q.take(false).traffic.usage.is_empty(),
        "below half: still lingering"
    );
    assert!(q.push_usage(record(49)));
    assert_eq!(q.take(false).traffic.usage.len(), 50);
}

#[test]
fn an_admin_message_takes_lingering_traffic_along() {
    let q = Queue::new(100, Duration::from_secs(3600));
    assert!(q.push_usage(record(1)));
    let (ack, _rx) = tokio::sync::oneshot::channel();
    assert!(q.push_admin(AdminMsg::Flush(ack)).is_ok());
    let taken = q.take(false);
    assert_eq!(taken.admin.len(), 1);
    assert_eq!(taken.traffic.usage.len(), 1);
}

#[test]
fn a_blocked_writer_wakes_for_traffic_and_for_close() {
    let q = std::sync::Arc::new(Queue::new(100, Duration::from_millis(50)));
    let writer = {
        let q = std::sync::Arc::clone(&q);
        std::thread::spawn(move || {
            let first = q.take(true);
            let second = q.take(true);
            (first.traffic.usage.len(), second.closed)
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(q.push_usage(record(1)));
    // The writer picks the record up after the linger; then close wakes it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.stats().queued > 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never took the record"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    q.close();
    assert_eq!(writer.join().unwrap(), (1, true));
}

#[tokio::test]
async fn store_flush_writes_lingering_usage_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        traffic_linger: Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    assert!(store.record_usage(record(1)));
    store.flush().await.unwrap();
    let (all_time, _) = store.usage_totals(DAY1).await.unwrap();
    assert_eq!(all_time.requests, 1);
    store.close().unwrap();
}
