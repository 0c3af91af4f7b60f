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
