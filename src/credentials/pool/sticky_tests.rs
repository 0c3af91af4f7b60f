//! The pick with conversation pins (contract §14), over every algorithm.

use std::sync::atomic::{AtomicI64, Ordering};

use super::sticky::{Conversation, StickyResult};
use super::*;

#[derive(Debug, Default)]
struct TestClock(AtomicI64);
impl TestClock {
    fn advance_s(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}
impl Clock for TestClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

fn pool_with(settings: KeyPoolSettings) -> (KeyPool, Arc<TestClock>) {
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
    let pool = KeyPool::new(Vec::new(), Vec::new(), settings, None, clock.clone());
    (pool, clock)
}

fn alg(name: &str) -> KeyPoolSettings {
    KeyPoolSettings {
        algorithm: name.to_string(),
        ..KeyPoolSettings::default()
    }
}

async fn add_keys(p: &KeyPool, n: usize, tag: &str, group: Option<&str>) -> Vec<String> {
    let entries: Vec<String> = (0..n).map(|i| format!("fk-{tag}-key-{i:04}")).collect();
    p.add_batch(&entries, group).await.unwrap().ids
}

fn conv(p: &KeyPool, identity: &str) -> Conversation {
    p.conversation(identity, true).unwrap()
}

/// One pick for `c` (excluding `exclude`): the key and what happened to the pin.
fn pick(
    p: &KeyPool,
    exclude: &[String],
    c: Option<Conversation>,
) -> (String, Option<StickyResult>) {
    let now = p.now();
    match p.lock().pick(exclude, now, c) {
        (PoolPick::Key { id, .. }, r) => (id, r),
        (other, _) => panic!("expected a key, got {other:?}"),
    }
}

/// Serves a pick as a request would: success, tokens counted (ranks move).
fn serve(p: &KeyPool, id: &str) {
    p.report(id, &Outcome::Success, EventSource::Traffic);
    p.add_tokens(id, 1_000, 100);
}

#[tokio::test]
async fn every_algorithm_keeps_a_conversation_on_its_key_while_others_spread() {
    for name in crate::config::ALGORITHMS {
        let (p, _) = pool_with(alg(name));
        let ids = add_keys(&p, 5, "alg", None).await;
        let a = conv(&p, "conversation-a");
        let (first, r) = pick(&p, &[], Some(a));
        assert_eq!(r, Some(StickyResult::Miss), "{name}");
        serve(&p, &first);
        let mut others = std::collections::HashSet::new();
        for turn in 0..20 {
            let (id, r) = pick(&p, &[], Some(a));
            assert_eq!(
                (id.as_str(), r),
                (first.as_str(), Some(StickyResult::Hit)),
                "{name} turn {turn}"
            );
            serve(&p, &id);
            // Traffic without a conversation keeps going through the algorithm.
            let (other, r) = pick(&p, &[], None);
            assert_eq!(r, None);
            serve(&p, &other);
            others.insert(other);
        }
        assert!(others.iter().all(|o| ids.contains(o)));
        assert_eq!(p.sticky_pins(), 1, "{name}");
        p.lock().check(p.now());
    }
}

#[tokio::test]
async fn new_conversations_are_spread_by_the_algorithm() {
    let (p, _) = pool_with(KeyPoolSettings::default());
    add_keys(&p, 5, "spread", None).await;
    let keys: std::collections::HashSet<String> = (0..5)
        .map(|i| {
            let c = conv(&p, &format!("conversation-{i}"));
            let (id, r) = pick(&p, &[], Some(c));
            assert_eq!(r, Some(StickyResult::Miss));
            id
        })
        .collect();
    assert_eq!(
        keys.len(),
        5,
        "round-robin gives five conversations five keys"
    );
    assert_eq!(p.sticky_pins(), 5);
}

#[tokio::test]
async fn a_pinned_key_that_cannot_serve_is_repinned_and_the_new_pin_holds() {
    for name in crate::config::ALGORITHMS {
        let (p, clock) = pool_with(alg(name));
        add_keys(&p, 4, "repin", None).await;
        let a = conv(&p, "conversation-a");
        let (first, _) = pick(&p, &[], Some(a));

        // Tried by this request already (a failover): another key, the pin moves with it.
        let (second, r) = pick(&p, std::slice::from_ref(&first), Some(a));
        assert_ne!(second, first, "{name}");
        assert_eq!(r, Some(StickyResult::Repin), "{name}");
        assert_eq!(
            pick(&p, &[], Some(a)),
            (second.clone(), Some(StickyResult::Hit))
        );

        // Cooling: repinned; once the cooldown ends the conversation stays on the new key.
        p.report(
            &second,
            &Outcome::RateLimited {
                retry_after_s: Some(30),
            },
            EventSource::Traffic,
        );
        let (third, r) = pick(&p, &[], Some(a));
        assert_ne!(third, second, "{name}");
        assert_eq!(r, Some(StickyResult::Repin));
        clock.advance_s(31);
        assert_eq!(
            pick(&p, &[], Some(a)),
            (third.clone(), Some(StickyResult::Hit)),
            "{name}"
        );

        // Banned (402), disabled by an admin, deleted: each a repin.
        p.report(
            &third,
            &Outcome::PaymentRequired("none".into()),
            EventSource::Traffic,
        );
        let (fourth, r) = pick(&p, &[], Some(a));
        assert_ne!(fourth, third);
        assert_eq!(r, Some(StickyResult::Repin));
        p.toggle(&fourth, KeyStatus::Disabled).await.unwrap();
        let (fifth, r) = pick(&p, &[], Some(a));
        assert_ne!(fifth, fourth);
        assert_eq!(r, Some(StickyResult::Repin));
        p.delete(&fifth).await.unwrap();
        // The deleted key's slot is reused by a new key: the pin does not follow the slot.
        add_keys(&p, 1, "reuse", None).await;
        let (sixth, r) = pick(&p, &[], Some(a));
        assert_ne!(sixth, fifth);
        assert_eq!(r, Some(StickyResult::Repin), "{name}");
        p.lock().check(p.now());
    }
}

#[tokio::test]
async fn the_pin_is_honoured_only_in_the_tier_the_pick_serves_from() {
    for auto_fallback in [true, false] {
        let (p, clock) = pool_with(KeyPoolSettings {
            auto_fallback,
            ..KeyPoolSettings::default()
        });
        p.create_group("first", "First", 1, "").await.unwrap();
        let high = add_keys(&p, 1, "high", Some("first")).await.remove(0);
        let low = add_keys(&p, 2, "low", None).await;
        let a = conv(&p, "conversation-a");
        assert_eq!(
            pick(&p, &[], Some(a)),
            (high.clone(), Some(StickyResult::Miss))
        );
        p.report(
            &high,
            &Outcome::RateLimited {
                retry_after_s: Some(30),
            },
            EventSource::Traffic,
        );
        if auto_fallback {
            let (fallback, r) = pick(&p, &[], Some(a));
            assert!(low.contains(&fallback));
            assert_eq!(r, Some(StickyResult::Repin));
            assert_eq!(pick(&p, &[], Some(a)), (fallback, Some(StickyResult::Hit)));
            // The higher tier serves again: the pin to the lower tier is not honoured.
            clock.advance_s(31);
            assert_eq!(
                pick(&p, &[], Some(a)),
                (high.clone(), Some(StickyResult::Repin))
            );
        } else {
            // Strict tiers: nothing serves, the pin stays.
            let now = p.now();
            assert!(matches!(
                p.lock().pick(&[], now, Some(a)),
                (PoolPick::AllCooling { .. }, None)
            ));
            clock.advance_s(31);
            assert_eq!(
                pick(&p, &[], Some(a)),
                (high.clone(), Some(StickyResult::Hit))
            );
        }
    }
}

#[tokio::test]
async fn a_pin_in_a_lower_tier_serves_when_the_higher_tier_cannot() {
    let (p, _) = pool_with(KeyPoolSettings::default());
    p.create_group("first", "First", 1, "").await.unwrap();
    let high = add_keys(&p, 1, "high", Some("first")).await.remove(0);
    let low = add_keys(&p, 3, "low", None).await;
    let a = conv(&p, "conversation-a");
    // The high key was tried: the conversation lands in the lower tier.
    let (pinned, r) = pick(&p, std::slice::from_ref(&high), Some(a));
    assert!(low.contains(&pinned));
    assert_eq!(r, Some(StickyResult::Miss));
    for _ in 0..5 {
        assert_eq!(
            pick(&p, std::slice::from_ref(&high), Some(a)),
            (pinned.clone(), Some(StickyResult::Hit))
        );
    }
}

#[tokio::test]
async fn count_tokens_follows_a_pin_but_never_creates_or_moves_one() {
    let (p, _) = pool_with(KeyPoolSettings::default());
    add_keys(&p, 3, "count", None).await;
    let follow = p.conversation("conversation-a", false).unwrap();
    let (_, r) = pick(&p, &[], Some(follow));
    assert_eq!(r, None);
    assert_eq!(p.sticky_pins(), 0, "no pin created");
    let (pinned, _) = pick(&p, &[], Some(conv(&p, "conversation-a")));
    for _ in 0..4 {
        assert_eq!(pick(&p, &[], Some(follow)), (pinned.clone(), None));
    }
    let (other, r) = pick(&p, std::slice::from_ref(&pinned), Some(follow));
    assert_ne!(other, pinned);
    assert_eq!(r, None);
    assert_eq!(
        pick(&p, &[], Some(conv(&p, "conversation-a"))),
        (pinned, Some(StickyResult::Hit)),
        "the pin did not move"
    );
}

#[tokio::test]
async fn turning_stickiness_off_or_lowering_the_ttl_applies_to_existing_pins() {
    let (p, clock) = pool_with(KeyPoolSettings::default());
    add_keys(&p, 3, "ttl", None).await;
    let a = conv(&p, "conversation-a");
    let (first, _) = pick(&p, &[], Some(a));
    clock.advance_s(100);
    assert_eq!(
        pick(&p, &[], Some(a)),
        (first.clone(), Some(StickyResult::Hit))
    );
    clock.advance_s(100);
    p.set_settings(KeyPoolSettings {
        sticky_ttl_s: 50,
        ..KeyPoolSettings::default()
    });
    let (_, r) = pick(&p, &[], Some(a));
    assert_eq!(
        r,
        Some(StickyResult::Miss),
        "unused for 100 s > 50 s: not honoured"
    );

    p.set_settings(KeyPoolSettings {
        sticky_sessions: false,
        ..KeyPoolSettings::default()
    });
    assert_eq!(p.sticky_pins(), 0, "turning it off drops the pins");
    let picks: std::collections::HashSet<String> = (0..3)
        .map(|_| pick(&p, &[], Some(a)))
        .map(|(id, r)| {
            assert_eq!(r, None);
            id
        })
        .collect();
    assert_eq!(picks.len(), 3, "turns rotate");
    assert_eq!(p.sticky_pins(), 0);
}
