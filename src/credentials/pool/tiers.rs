//! Where each key sits, and the pick across tiers.
//!
//! An active key is in exactly one tier (its group's priority), in one of two places: the tier's
//! selection index when it may serve now, or the tier's wake queue — ordered by the time it may
//! serve again — while it cools or a probe of it is in flight. A key moves between the two (and
//! between tiers, and out of them when it stops being active) one at a time in O(log n), through
//! [`Inner::place`], which every change of a key's state calls. Time passing is the one change
//! nobody reports: a pick first wakes the keys whose time has come from the head of each queue
//! (amortised O(log n): each key is queued once per cooldown and woken once; at most
//! [`WAKE_BUDGET`] per tier and pick unless nothing awake may serve). So:
//!
//! - a pick never walks past keys that cannot serve, however many cool;
//! - when nothing may serve, the soonest `Retry-After` is the head of a queue: O(1) per tier;
//! - the per-state counts are kept in step, so publishing the gauges scans nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::select::{Rank, TierIndex};
use super::sticky::{Conversation, Pin, StickyResult};
use super::{Algorithm, Inner, PoolPick, Slot, priority_of};
use crate::store::records::{KeyStatus, Millis};

const HOUR_MS: Millis = 3_600_000;

/// The most keys a pick wakes per tier: when many cooldowns end at once, the work spreads over
/// the next picks instead of one long hold of the lock. A pick that finds nothing to serve
/// among the awake keys wakes all the due ones of its tier.
pub(super) const WAKE_BUDGET: usize = 32;

/// How many least-used keys a pick re-ranks after an hour ended ([`Inner::rerank_some`]).
const RERANK_BUDGET: usize = 8;

/// Where a key sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Placement {
    /// In no tier: not active (or not placed yet).
    #[default]
    Out,
    /// In its tier's selection index.
    Ready { priority: i64 },
    /// In its tier's wake queue until `until`; `cooling` tells a cooldown from a probe in flight.
    Waiting {
        priority: i64,
        until: Millis,
        cooling: bool,
    },
}

/// One tier: the active keys of the groups sharing a priority.
#[derive(Debug, Clone)]
pub(super) struct Tier {
    pub priority: i64,
    pub index: TierIndex,
    /// (time the key may serve again, slot), soonest first.
    pub waiting: BTreeSet<(Millis, usize)>,
}

impl Tier {
    fn is_empty(&self) -> bool {
        self.index.is_empty() && self.waiting.is_empty()
    }
}

/// Keys by stored status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct StatusCounts {
    pub active: u64,
    pub disabled: u64,
    pub banned: u64,
}

impl StatusCounts {
    fn get(&mut self, s: KeyStatus) -> &mut u64 {
        match s {
            KeyStatus::Active => &mut self.active,
            KeyStatus::Disabled => &mut self.disabled,
            KeyStatus::Banned => &mut self.banned,
        }
    }
}

/// Where a key belongs now.
fn desired(s: &Slot, now: Millis) -> Placement {
    if s.rec.status != KeyStatus::Active {
        return Placement::Out;
    }
    let cool = s.rec.cooldown_until.filter(|t| *t > now);
    let probe = s.health.probe_blocked_until(now);
    match cool.max(probe) {
        Some(until) => Placement::Waiting {
            priority: s.priority,
            until,
            cooling: cool.is_some(),
        },
        None => Placement::Ready {
            priority: s.priority,
        },
    }
}

impl Inner {
    fn tier_position(&self, priority: i64) -> Result<usize, usize> {
        self.tiers.binary_search_by_key(&priority, |t| t.priority)
    }

    /// Puts key `i` where it belongs now and keeps the counts in step. O(log n).
    pub(super) fn place(&mut self, i: usize, now: Millis) {
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        let status = s.rec.status;
        if s.counted != Some(status) {
            if let Some(old) = s.counted {
                let c = self.status_counts.get(old);
                *c = c.saturating_sub(1);
            }
            *self.status_counts.get(status) += 1;
            s.counted = Some(status);
        }
        let (have, want) = (s.placed, desired(s, now));
        if have == want {
            return;
        }
        let rank = matches!(want, Placement::Ready { .. }).then(|| s.rank(now));
        s.placed = want;
        self.take_out(i, have);
        self.put_in(i, want, rank.as_ref());
    }

    /// Takes key `i` out of its tier and the counts (before it leaves the table).
    pub(super) fn unplace(&mut self, i: usize) {
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        let have = std::mem::take(&mut s.placed);
        if let Some(old) = s.counted.take() {
            let c = self.status_counts.get(old);
            *c = c.saturating_sub(1);
        }
        self.take_out(i, have);
    }

    fn take_out(&mut self, i: usize, p: Placement) {
        let priority = match p {
            Placement::Out => return,
            Placement::Ready { priority } | Placement::Waiting { priority, .. } => priority,
        };
        let Ok(t) = self.tier_position(priority) else {
            return;
        };
        let tier = &mut self.tiers[t];
        match p {
            Placement::Out => {}
            Placement::Ready { .. } => tier.index.remove(i),
            Placement::Waiting { until, cooling, .. } => {
                tier.waiting.remove(&(until, i));
                if cooling {
                    self.cooling_waiting = self.cooling_waiting.saturating_sub(1);
                }
            }
        }
        if self.tiers[t].is_empty() {
            self.tiers.remove(t);
        }
    }

    fn put_in(&mut self, i: usize, p: Placement, rank: Option<&Rank>) {
        let priority = match p {
            Placement::Out => return,
            Placement::Ready { priority } | Placement::Waiting { priority, .. } => priority,
        };
        let t = match self.tier_position(priority) {
            Ok(t) => t,
            Err(t) => {
                let index = TierIndex::new(self.alg, &[], &mut self.rng);
                self.tiers.insert(
                    t,
                    Tier {
                        priority,
                        index,
                        waiting: BTreeSet::new(),
                    },
                );
                t
            }
        };
        match (p, rank) {
            (Placement::Ready { .. }, Some(rank)) => {
                self.tiers[t].index.insert(i, rank, &mut self.rng)
            }
            (Placement::Waiting { until, cooling, .. }, _) => {
                self.tiers[t].waiting.insert((until, i));
                if cooling {
                    self.cooling_waiting += 1;
                }
            }
            _ => {}
        }
    }

    /// Wakes up to `budget` keys of tier `priority` whose time has come; returns how many.
    fn wake(&mut self, priority: i64, now: Millis, budget: usize) -> usize {
        let mut woken = 0;
        while woken < budget {
            let Ok(t) = self.tier_position(priority) else {
                break;
            };
            let Some((until, i)) = self.tiers[t].waiting.first().copied() else {
                break;
            };
            if until > now {
                break;
            }
            self.place(i, now);
            woken += 1;
            // `place` moved the key out of this queue; should the table ever disagree with the
            // queue, drop the stale entry rather than loop on it.
            if let Ok(t) = self.tier_position(priority)
                && self.tiers[t].waiting.first() == Some(&(until, i))
            {
                debug_assert!(false, "slot {i} stayed queued after waking");
                self.tiers[t].waiting.remove(&(until, i));
            }
        }
        woken
    }

    /// Wakes, in every tier, up to [`WAKE_BUDGET`] keys whose time has come.
    pub(super) fn sweep(&mut self, now: Millis) {
        let priorities: Vec<i64> = self.tiers.iter().map(|t| t.priority).collect();
        for p in priorities {
            self.wake(p, now, WAKE_BUDGET);
        }
    }

    /// A ready key's rank changed (a request finished, tokens were counted, a balance synced).
    pub(super) fn update_rank(&mut self, i: usize, now: Millis) {
        let Some(s) = self.slots[i].as_ref() else {
            return;
        };
        let Placement::Ready { priority } = s.placed else {
            return;
        };
        let rank = s.rank(now);
        if let Ok(t) = self.tier_position(priority) {
            self.tiers[t].index.update(i, &rank, &mut self.rng);
        }
    }

    /// Rebuilds the tiers from scratch, after a change of the algorithm or of the groups.
    /// O(n log n).
    pub(super) fn rebuild(&mut self, now: Millis) {
        #[derive(Default)]
        struct Build {
            ready: Vec<(usize, Rank)>,
            waiting: BTreeSet<(Millis, usize)>,
        }
        let mut by_priority: BTreeMap<i64, Build> = BTreeMap::new();
        let mut counts = StatusCounts::default();
        let mut cooling = 0;
        let Inner { slots, groups, .. } = self;
        for (i, s) in slots.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            s.priority = priority_of(groups, &s.rec.pool_group);
            *counts.get(s.rec.status) += 1;
            s.counted = Some(s.rec.status);
            s.placed = desired(s, now);
            match s.placed {
                Placement::Out => {}
                Placement::Ready { priority } => by_priority
                    .entry(priority)
                    .or_default()
                    .ready
                    .push((i, s.rank(now))),
                Placement::Waiting {
                    priority,
                    until,
                    cooling: c,
                } => {
                    by_priority
                        .entry(priority)
                        .or_default()
                        .waiting
                        .insert((until, i));
                    cooling += u64::from(c);
                }
            }
        }
        let alg = self.alg;
        let rng = &mut self.rng;
        self.tiers = by_priority
            .into_iter()
            .map(|(priority, b)| Tier {
                priority,
                index: TierIndex::new(alg, &b.ready, rng),
                waiting: b.waiting,
            })
            .collect();
        self.status_counts = counts;
        self.cooling_waiting = cooling;
        self.index_hour = now / HOUR_MS;
        self.rerank.clear();
        self.rebuilds += 1;
    }

    /// Chooses a key not in `exclude` (contract §5 and §7 tier rules). With a conversation
    /// (contract §14), its pinned key serves while it may serve this pick — in the tier the
    /// pick serves from —, else the algorithm picks and the pin moves; what happened is
    /// returned for the metric (`None` when nothing was pinned or looked up).
    pub(super) fn pick(
        &mut self,
        exclude: &[String],
        now: Millis,
        conversation: Option<Conversation>,
    ) -> (PoolPick, Option<StickyResult>) {
        if self.alg == Algorithm::LeastUsed {
            self.rerank_some(now);
        }
        let excluded: Vec<usize> = exclude
            .iter()
            .filter_map(|id| self.by_id.get(id).copied())
            .collect();
        let conversation = conversation.filter(|_| self.settings.sticky_sessions);
        let ttl_ms = self.sticky_ttl_ms();
        let pinned = conversation.and_then(|c| self.pins.get(c.id, now, ttl_ms));
        let mut strict_tier = None;
        let mut t = 0;
        while t < self.tiers.len() {
            let priority = self.tiers[t].priority;
            self.wake(priority, now, WAKE_BUDGET);
            let mut chosen = self.choose(pinned, priority, &excluded, now);
            if chosen.is_none()
                && self
                    .tier_position(priority)
                    .is_ok_and(|t| self.tiers[t].waiting.first().is_some_and(|w| w.0 <= now))
            {
                // More keys are due than one pick wakes, and none of the awake ones may serve.
                self.wake(priority, now, usize::MAX);
                chosen = self.choose(pinned, priority, &excluded, now);
            }
            if let Some((i, hit)) = chosen {
                let sticky = conversation.and_then(|c| self.repin(c, pinned, hit, i, now));
                return (self.picked(i, now), sticky);
            }
            let Ok(here) = self.tier_position(priority) else {
                break;
            };
            if !self.settings.auto_fallback {
                // Strict tiers: only the highest-priority tier holding an active key serves.
                strict_tier = Some(here);
                break;
            }
            t = here + 1;
        }
        if self.tiers.is_empty() {
            return (PoolPick::NoActiveKey, None);
        }
        // Nothing may serve: 429 with the soonest time a key of the serving tier(s) may.
        let soonest = match strict_tier {
            Some(t) => self.tiers[t].waiting.first().map(|w| w.0),
            None => self
                .tiers
                .iter()
                .filter_map(|t| t.waiting.first().map(|w| w.0))
                .min(),
        };
        let retry_after_s = soonest.map_or(1, |t| ((t - now + 999) / 1000).max(1) as u64);
        (PoolPick::AllCooling { retry_after_s }, None)
    }

    /// `sticky_ttl_s` in milliseconds.
    pub(super) fn sticky_ttl_ms(&self) -> Millis {
        Millis::try_from(self.settings.sticky_ttl_s)
            .unwrap_or(Millis::MAX)
            .saturating_mul(1000)
    }

    /// The key of tier `priority` this pick takes: the pinned one if it may serve here (then
    /// `true`), else the algorithm's.
    fn choose(
        &mut self,
        pinned: Option<Pin>,
        priority: i64,
        excluded: &[usize],
        now: Millis,
    ) -> Option<(usize, bool)> {
        if let Some(i) = self.pinned_here(pinned, priority, excluded, now) {
            return Some((i, true));
        }
        self.pick_in(priority, excluded, now).map(|i| (i, false))
    }

    /// The pinned key, if it is still the key it was pinned to, ready in tier `priority` (active,
    /// not cooling, no probe in flight), eligible, and not tried by this request.
    fn pinned_here(
        &self,
        pinned: Option<Pin>,
        priority: i64,
        excluded: &[usize],
        now: Millis,
    ) -> Option<usize> {
        let p = pinned?;
        let s = self.slots.get(p.slot)?.as_ref()?;
        (s.order == p.order
            && s.placed == Placement::Ready { priority }
            && !excluded.contains(&p.slot)
            && s.health.eligible(&s.rec, now))
        .then_some(p.slot)
    }

    /// Remembers that key `i` serves the conversation (a request that may pin), and says how.
    fn repin(
        &mut self,
        c: Conversation,
        pinned: Option<Pin>,
        hit: bool,
        i: usize,
        now: Millis,
    ) -> Option<StickyResult> {
        if !c.pin {
            return None;
        }
        let order = self.slots[i].as_ref()?.order;
        let ttl_ms = self.sticky_ttl_ms();
        self.pins.set(c.id, Pin { slot: i, order }, now, ttl_ms);
        Some(match (hit, pinned) {
            (true, _) => StickyResult::Hit,
            (false, None) => StickyResult::Miss,
            (false, Some(_)) => StickyResult::Repin,
        })
    }

    /// Least-used ranks by requests over the last 24 hours, which change for every key when an
    /// hour ends. Rather than rebuild the index then (one long hold of the lock), the ready keys
    /// are re-ranked [`RERANK_BUDGET`] per pick through the next picks; a key that serves is
    /// re-ranked on its own report anyway.
    fn rerank_some(&mut self, now: Millis) {
        let hour = now / HOUR_MS;
        if hour != self.index_hour {
            self.index_hour = hour;
            self.rerank.clear();
            for t in &self.tiers {
                self.rerank.extend_from_slice(t.index.members());
            }
        }
        for _ in 0..RERANK_BUDGET {
            let Some(i) = self.rerank.pop() else {
                break;
            };
            self.update_rank(i, now);
        }
    }

    /// A key of tier `priority` that may serve and is not `excluded`.
    fn pick_in(&mut self, priority: i64, excluded: &[usize], now: Millis) -> Option<usize> {
        let t = self.tier_position(priority).ok()?;
        let shared = match (&self.positions, self.alg) {
            (Some(p), Algorithm::RoundRobin) => p.next(priority),
            _ => None,
        };
        let Inner {
            tiers, slots, rng, ..
        } = self;
        // Every indexed key may serve but for the ones this request tried; the full check
        // stays as a safety net.
        let mut eligible = |slot: usize| {
            !excluded.contains(&slot)
                && slots[slot]
                    .as_ref()
                    .is_some_and(|s| s.health.eligible(&s.rec, now))
        };
        tiers[t].index.pick(&mut eligible, rng, shared)
    }

    /// Records the pick of key `i` and hands it out.
    fn picked(&mut self, i: usize, now: Millis) -> PoolPick {
        let Some(s) = self.slots[i].as_mut() else {
            return PoolPick::NoActiveKey;
        };
        s.health.on_pick(now);
        s.count_request(now);
        s.rec.last_used_at = Some(now);
        let pick = PoolPick::Key {
            id: s.rec.id.clone(),
            secret: s.rec.secret.clone(),
        };
        if s.health.half_open {
            // This pick is the key's probe: it waits for the answer.
            self.place(i, now);
        }
        pick
    }

    /// Checks that the tiers, the queues, the placements and the counts agree (tests).
    #[cfg(test)]
    pub(super) fn check(&self, now: Millis) {
        let mut counts = StatusCounts::default();
        let mut cooling = 0;
        let mut placed = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            *counts.get(s.rec.status) += 1;
            assert_eq!(s.counted, Some(s.rec.status), "slot {i}");
            match s.placed {
                Placement::Out => assert_ne!(s.rec.status, KeyStatus::Active, "slot {i}"),
                Placement::Ready { priority } => {
                    let t = &self.tiers[self.tier_position(priority).unwrap()];
                    assert!(t.index.contains(i), "slot {i} not indexed");
                    assert!(
                        s.health.eligible(&s.rec, now),
                        "slot {i} indexed, not eligible"
                    );
                    placed += 1;
                }
                Placement::Waiting {
                    priority,
                    until,
                    cooling: c,
                } => {
                    let t = &self.tiers[self.tier_position(priority).unwrap()];
                    assert!(t.waiting.contains(&(until, i)), "slot {i} not queued");
                    cooling += u64::from(c);
                    placed += 1;
                }
            }
        }
        let held: usize = self
            .tiers
            .iter()
            .map(|t| t.index.len() + t.waiting.len())
            .sum();
        assert_eq!(held, placed, "the tiers hold exactly the placed keys");
        assert!(self.tiers.iter().all(|t| !t.is_empty()), "no empty tier");
        assert!(self.tiers.windows(2).all(|w| w[0].priority < w[1].priority));
        assert_eq!(self.status_counts, counts);
        assert_eq!(self.cooling_waiting, cooling);
    }
}
