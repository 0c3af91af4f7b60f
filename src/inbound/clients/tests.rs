#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn ms(s: &str) -> Millis {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn record(id: &str, key: &str) -> ClientRecord {
    ClientRecord {
        id: id.into(),
        name: id.into(),
        key_digest: hex::encode(digest(key)),
        key_masked: mask(key),
        rpm: None,
        requests_per_day: None,
        tokens_per_day: None,
        models: None,
        expires_at: None,
        created_at: 1,
        updated_at: 1,
    }
}

fn tokyo() -> TimeZone {
    TimeZone::get("Asia/Tokyo").unwrap()
}

#[test]
fn keys_are_random_prefixed_and_only_their_digest_and_mask_are_kept() {
    let (a, digest_a, mask_a) = new_key().unwrap();
    let (b, _, _) = new_key().unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with("d2a-"));
    assert_eq!(a.len(), 4 + 64);
    assert_eq!(digest_a.len(), 64);
    assert!(!digest_a.contains(&a[4..]));
    assert_eq!(mask_a, format!("{}…{}", &a[..7], &a[a.len() - 4..]));
    assert_eq!(mask("d2a-short"), "…");
    assert!(new_id().starts_with("cli_"));
}

#[test]
fn a_key_authenticates_until_rotated_or_forgotten() {
    let clients = Clients::new(TimeZone::UTC);
    assert!(!clients.any());
    assert!(clients.authenticate("d2a-one").is_none());
    clients.apply(record("cli_1", "d2a-one"));
    assert!(clients.any());
    assert_eq!(clients.authenticate("d2a-one").unwrap().rec.id, "cli_1");
    assert!(clients.authenticate("d2a-two").is_none());
    assert!(clients.authenticate("not-a-client-key").is_none());

    // Rotation: the same id with another digest; the counters stay.
    let c = clients.get("cli_1").unwrap();
    clients.admit(&c, 1_000).unwrap();
    clients.apply(record("cli_1", "d2a-two"));
    assert!(clients.authenticate("d2a-one").is_none());
    let rotated = clients.authenticate("d2a-two").unwrap();
    assert_eq!(clients.today(&rotated, 2_000).requests, 1);

    assert!(clients.forget("cli_1").is_some());
    assert!(clients.authenticate("d2a-two").is_none());
    assert!(!clients.any());
    assert!(clients.forget("cli_1").is_none());
}

#[test]
fn daily_requests_are_counted_when_admitted_and_reset_at_local_midnight() {
    let clients = Clients::new(tokyo());
    let mut rec = record("cli_1", "d2a-k");
    rec.requests_per_day = Some(2);
    let c = clients.apply(rec);
    // 23:00 in Tokyo on 2026-03-01.
    let late = ms("2026-03-01T14:00:00Z");
    clients.admit(&c, late).unwrap();
    clients.admit(&c, late + 1).unwrap();
    let refused = clients.admit(&c, late + 2).unwrap_err();
    // Midnight in Tokyo is an hour away.
    assert_eq!(
        refused,
        Refusal::Quota {
            what: "requests_per_day",
            limit: 2,
            retry_after_s: 3600,
        }
    );
    // A refused request is not counted.
    assert_eq!(clients.today(&c, late + 3).requests, 2);
    // Past midnight, Tokyo time.
    clients.admit(&c, ms("2026-03-01T15:00:00Z")).unwrap();
    assert_eq!(clients.today(&c, ms("2026-03-01T15:00:01Z")).requests, 1);
}

#[test]
fn tokens_refuse_once_used_up_and_count_on_the_day_the_request_arrived() {
    let clients = Clients::new(TimeZone::UTC);
    let mut rec = record("cli_1", "d2a-k");
    rec.tokens_per_day = Some(100);
    let c = clients.apply(rec);
    let now = ms("2026-03-01T12:00:00Z");
    clients.admit(&c, now).unwrap();
    c.add_tokens(now, 99);
    // 99 < 100: still admitted, and that request may take the total past the limit.
    clients.admit(&c, now).unwrap();
    c.add_tokens(now, 50);
    assert!(matches!(
        clients.admit(&c, now),
        Err(Refusal::Quota {
            what: "tokens_per_day",
            limit: 100,
            ..
        })
    ));
    // A request that began yesterday adds nothing to today.
    c.add_tokens(ms("2026-02-28T23:59:59Z"), 1_000);
    assert_eq!(clients.today(&c, now).tokens, 149);
}

#[test]
fn rpm_refuses_the_request_past_the_burst_with_a_whole_retry_after() {
    let clients = Clients::new(TimeZone::UTC);
    let mut rec = record("cli_1", "d2a-k");
    rec.rpm = Some(3);
    let c = clients.apply(rec.clone());
    for _ in 0..3 {
        clients.check_rate(&c).unwrap();
    }
    match clients.check_rate(&c) {
        Err(Refusal::RateLimited { rpm, retry_after_s }) => {
            assert_eq!(rpm, 3);
            assert!((1..=20).contains(&retry_after_s), "{retry_after_s}");
        }
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    // The same rpm keeps the limiter (a rename does not reset it) …
    rec.name = "renamed".into();
    let c = clients.apply(rec.clone());
    assert!(clients.check_rate(&c).is_err());
    // … a new rpm takes effect at once.
    rec.rpm = Some(10);
    let c = clients.apply(rec.clone());
    clients.check_rate(&c).unwrap();
    rec.rpm = None;
    let c = clients.apply(rec);
    for _ in 0..100 {
        clients.check_rate(&c).unwrap();
    }
}

#[test]
fn models_allow_the_requested_name_or_its_resolved_id() {
    let clients = Clients::new(TimeZone::UTC);
    let mut rec = record("cli_1", "d2a-k");
    let c = clients.apply(rec.clone());
    assert!(c.allows_model("anything", "anything"));
    rec.models = Some(vec!["claude-test".into()]);
    let c = clients.apply(rec);
    assert!(c.allows_model("claude-test", "claude-test"));
    assert!(c.allows_model("alias", "claude-test"));
    assert!(!c.allows_model("gpt-test", "gpt-test"));
}

#[test]
fn expiry_and_merged_counts() {
    let clients = Clients::new(TimeZone::UTC);
    let mut rec = record("cli_1", "d2a-k");
    rec.expires_at = Some(1_000);
    let c = clients.apply(rec);
    assert!(!c.expired(999));
    assert!(c.expired(1_000));

    let day = ms("2026-03-01T00:00:00Z");
    clients.merge_day("cli_1", day, 5, 500);
    clients.merge_day("cli_1", day - 86_400_000, 7, 700);
    clients.merge_day("cli_unknown", day, 1, 1);
    let today = clients.today(&c, day + 3_600_000);
    assert_eq!((today.requests, today.tokens), (5, 500));
    assert_eq!(today.day_end - today.day_start, 86_400_000);
}

/// Records what reaches the store: `local` (changes made elsewhere) apart from `acked` (admin
/// changes made here); `down` refuses admin changes as an unreachable Redis does.
#[derive(Debug, Default)]
struct Recorder {
    local: Mutex<Vec<StoreOp>>,
    acked: Mutex<Vec<StoreOp>>,
    down: AtomicBool,
}

impl Persist for Recorder {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.acked.lock().unwrap().extend(ops);
    }
    fn enqueue_acked(
        &self,
        ops: Vec<StoreOp>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), PersistError>> {
        self.enqueue(ops);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
    fn enqueue_local(&self, ops: Vec<StoreOp>) {
        self.local.lock().unwrap().extend(ops);
    }
    fn writable(&self) -> futures_util::future::BoxFuture<'static, Result<(), PersistError>> {
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                Err(PersistError::Shared("Redis is unreachable".into()))
            } else {
                Ok(())
            }
        })
    }
}

fn with_recorder() -> (Clients, Arc<Recorder>) {
    let clients = Clients::new(TimeZone::UTC);
    let rec = Arc::new(Recorder::default());
    clients.load(
        Vec::new(),
        &HashMap::new(),
        Some(rec.clone() as Arc<dyn Persist>),
    );
    (clients, rec)
}

fn local_ops(r: &Recorder) -> Vec<String> {
    r.local
        .lock()
        .unwrap()
        .iter()
        .map(|op| match op {
            StoreOp::PutClient(c) => format!("put {}", c.id),
            StoreOp::DeleteClient(id) => format!("del {id}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn remote_changes_apply_in_memory_and_reach_only_the_local_store() {
    let (clients, store) = with_recorder();
    // Created elsewhere: authenticates here, mirrored to the local store.
    clients.apply_client("cli_1", Some(record("cli_1", "d2a-one")));
    assert_eq!(clients.authenticate("d2a-one").unwrap().rec.id, "cli_1");
    // The same record again (an echo, a replay) writes nothing.
    clients.apply_client("cli_1", Some(record("cli_1", "d2a-one")));
    // Rotated elsewhere: the old key is refused at once, the counters stay.
    let c = clients.get("cli_1").unwrap();
    clients.admit(&c, 1_000).unwrap();
    clients.apply_client("cli_1", Some(record("cli_1", "d2a-two")));
    assert!(clients.authenticate("d2a-one").is_none());
    let rotated = clients.authenticate("d2a-two").unwrap();
    assert_eq!(clients.today(&rotated, 2_000).requests, 1);
    // Deleted elsewhere: refused; deleting an unknown client writes nothing.
    clients.apply_client("cli_1", None);
    assert!(clients.authenticate("d2a-two").is_none());
    assert!(!clients.any());
    clients.apply_client("cli_1", None);
    assert_eq!(local_ops(&store), ["put cli_1", "put cli_1", "del cli_1"]);
    assert!(
        store.acked.lock().unwrap().is_empty(),
        "nothing sent back out"
    );
}

#[test]
fn a_full_resync_replaces_the_table_and_keeps_the_counts_of_kept_clients() {
    let (clients, store) = with_recorder();
    clients.apply_client("cli_a", Some(record("cli_a", "d2a-a")));
    clients.apply_client("cli_b", Some(record("cli_b", "d2a-b")));
    let a = clients.get("cli_a").unwrap();
    clients.admit(&a, 1_000).unwrap();
    store.local.lock().unwrap().clear();
    let mut a2 = record("cli_a", "d2a-a");
    a2.name = "renamed".into();
    clients.replace_clients(vec![a2, record("cli_c", "d2a-c")]);
    assert!(clients.authenticate("d2a-b").is_none());
    assert!(clients.authenticate("d2a-c").is_some());
    let a = clients.authenticate("d2a-a").unwrap();
    assert_eq!(a.rec.name, "renamed");
    assert_eq!(clients.today(&a, 2_000).requests, 1);
    let mut ops = local_ops(&store);
    ops.sort();
    assert_eq!(ops, ["del cli_b", "put cli_a", "put cli_c"]);
    let mut local: Vec<String> = clients.local_clients().into_iter().map(|r| r.id).collect();
    local.sort();
    assert_eq!(local, ["cli_a", "cli_c"]);
    clients.replace_clients(Vec::new());
    assert!(!clients.any());
}

#[test]
fn admission_judges_this_instance_and_the_others_and_never_counts_its_own_twice() {
    let clients = Clients::new(TimeZone::UTC);
    let mut rec = record("cli_1", "d2a-k");
    rec.requests_per_day = Some(4);
    rec.tokens_per_day = Some(1_000);
    let c = clients.apply(rec);
    let now = ms("2026-03-01T12:00:00Z");
    let day = ms("2026-03-01T00:00:00Z");
    assert_eq!(clients.own_quota(now), Some((day, QuotaCounts::new())));
    clients.admit(&c, now).unwrap();
    let (d, own) = clients.own_quota(now).unwrap();
    assert_eq!((d, own.get("cli_1")), (day, Some(&(1, 0))));
    // The others admitted two; Redis holds our own one: 3 in all, not 4.
    let others: QuotaCounts = [("cli_1".to_string(), (2, 100))].into();
    clients.fleet_quota(day, others.clone(), own.clone());
    clients.fleet_quota(day, others, own);
    let t = clients.today(&c, now);
    assert_eq!((t.total_requests(), t.total_tokens()), (3, 100));
    assert_eq!((t.requests, t.fleet_requests), (1, 2));
    // A restart: Redis holds more of our own than the rollups (a record not yet written).
    clients.fleet_quota(
        day,
        QuotaCounts::new(),
        [("cli_1".to_string(), (2, 0))].into(),
    );
    let t = clients.today(&c, now);
    assert_eq!(
        (t.requests, t.fleet_requests, t.total_requests()),
        (2, 2, 4)
    );
    assert!(matches!(
        clients.admit(&c, now),
        Err(Refusal::Quota {
            what: "requests_per_day",
            limit: 4,
            ..
        })
    ));
    // Yesterday's counts change nothing; tokens of the fleet refuse too.
    clients.fleet_quota(
        day - 86_400_000,
        [("cli_1".to_string(), (0, 5_000))].into(),
        QuotaCounts::new(),
    );
    assert_eq!(clients.today(&c, now).total_tokens(), 100);
    clients.fleet_quota(
        day,
        [("cli_1".to_string(), (0, 1_000))].into(),
        QuotaCounts::new(),
    );
    assert_eq!(clients.today(&c, now).total_requests(), 4);
    assert_eq!(clients.today(&c, now).total_tokens(), 1_000);
    // The next day starts from zero everywhere.
    let t = clients.today(&c, now + 86_400_000);
    assert_eq!((t.total_requests(), t.total_tokens()), (0, 0));
}

#[tokio::test]
async fn admin_changes_are_refused_while_the_shared_state_does_not_answer() {
    let (clients, store) = with_recorder();
    store.down.store(true, Ordering::SeqCst);
    let err = clients
        .create(record("cli_1", "d2a-one"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientsError::Shared(_)), "{err:?}");
    assert!(clients.authenticate("d2a-one").is_none(), "nothing changed");
    store.down.store(false, Ordering::SeqCst);
    clients.create(record("cli_1", "d2a-one")).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        clients.delete("cli_1").await,
        Err(ClientsError::Shared(_))
    ));
    assert!(matches!(
        clients
            .update("cli_1", |r| {
                r.name = "x".into();
                Ok::<(), ()>(())
            })
            .await,
        Err(ClientsError::Shared(_))
    ));
    // Client keys keep working from memory.
    assert!(clients.authenticate("d2a-one").is_some());
    assert_eq!(store.acked.lock().unwrap().len(), 1);
}
