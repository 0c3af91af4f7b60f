//! Selection indexes: one per tier, one kind per algorithm (contract §7). Each pick is O(1) or
//! O(log n) in the number of keys, so selection stays well under a microsecond at 10,000 keys
//! (`benches/pool_select.rs`).
//!
//! - `round-robin`: a cursor over the tier's keys, skipping ineligible ones.
//! - `random`: uniform; a few random probes, then a scan of the eligible keys.
//! - `least-used`: an ordered set by requests in the last 24 h, ties broken by a random number
//!   drawn again at each pick, so equal keys share the load.
//! - `weighted-score`: roulette over a Fenwick tree of weights ((successes+1)/(requests+2))² over
//!   each key's last 100 requests.
//! - `least-token-used` / `max-remaining`: an ordered set by token buckets 1 % wide (keys within
//!   1 % of each other share a bucket) with the same re-drawn random tie-break, so near-ties are
//!   spread at random instead of sending all traffic to one key.

use std::collections::BTreeSet;

/// The six algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    Random,
    LeastUsed,
    WeightedScore,
    LeastTokenUsed,
    MaxRemaining,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round-robin" => Some(Algorithm::RoundRobin),
            "random" => Some(Algorithm::Random),
            "least-used" => Some(Algorithm::LeastUsed),
            "weighted-score" => Some(Algorithm::WeightedScore),
            "least-token-used" => Some(Algorithm::LeastTokenUsed),
            "max-remaining" => Some(Algorithm::MaxRemaining),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Random => "random",
            Algorithm::LeastUsed => "least-used",
            Algorithm::WeightedScore => "weighted-score",
            Algorithm::LeastTokenUsed => "least-token-used",
            Algorithm::MaxRemaining => "max-remaining",
        }
    }
}

/// What an index needs to know about a key to rank it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rank {
    /// Requests in the last 24 h (least-used).
    pub requests_24h: u64,
    /// Roulette weight (weighted-score).
    pub weight: f64,
    /// Tokens used: last balance sync + this gateway's tokens since (least-token-used).
    pub tokens_used: u64,
    /// Tokens remaining, when a balance is known (max-remaining).
    pub remaining: Option<u64>,
}

/// A 1 %-wide logarithmic bucket: values in one bucket are within 1 % of each other.
pub fn bucket(x: u64) -> u32 {
    if x == 0 {
        0
    } else {
        1 + ((x as f64).ln() / 1.01f64.ln()) as u32
    }
}

/// The ordering key of an ordered-set algorithm (smaller serves first).
fn order_key(alg: Algorithm, r: &Rank) -> u64 {
    match alg {
        Algorithm::LeastUsed => r.requests_24h,
        Algorithm::LeastTokenUsed => bucket(r.tokens_used) as u64,
        // Keys with a known balance first, most remaining first; then keys without one, fewest
        // tokens used first.
        Algorithm::MaxRemaining => match r.remaining {
            Some(rem) => (u32::MAX - bucket(rem)) as u64,
            None => (1u64 << 32) + bucket(r.tokens_used) as u64,
        },
        _ => 0,
    }
}

/// A Fenwick (binary indexed) tree of non-negative weights.
#[derive(Debug, Clone, Default)]
struct Fenwick {
    tree: Vec<f64>,
    values: Vec<f64>,
}

impl Fenwick {
    fn new(values: Vec<f64>) -> Self {
        let mut f = Fenwick {
            tree: vec![0.0; values.len() + 1],
            values: vec![0.0; values.len()],
        };
        for (i, v) in values.into_iter().enumerate() {
            f.set(i, v);
        }
        f
    }

    fn set(&mut self, i: usize, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let delta = v - self.values[i];
        self.values[i] = v;
        let mut j = i + 1;
        while j < self.tree.len() {
            self.tree[j] += delta;
            j += j & j.wrapping_neg();
        }
    }

    fn total(&self) -> f64 {
        let mut s = 0.0;
        let mut j = self.values.len();
        while j > 0 {
            s += self.tree[j];
            j -= j & j.wrapping_neg();
        }
        s
    }

    /// The position whose cumulative range contains `target` (0 ≤ target < total).
    fn find(&self, mut target: f64) -> usize {
        let n = self.values.len();
        let mut pos = 0;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= target {
                target -= self.tree[next];
                pos = next;
            }
            step >>= 1;
        }
        pos.min(n.saturating_sub(1))
    }
}

/// The selection index of one tier. `members` are slot numbers of the pool's key table.
#[derive(Debug, Clone)]
pub struct TierIndex {
    alg: Algorithm,
    members: Vec<usize>,
    /// slot → position in `members` (dense map over slot numbers).
    position: Vec<usize>,
    cursor: usize,
    /// (rank class, sequence, slot): within a class, the least recently picked first.
    ordered: BTreeSet<(u64, u64, usize)>,
    /// Sequence numbers for re-inserted entries (initial ones are random).
    seq: u64,
    /// position → the entry currently in `ordered`.
    entries: Vec<(u64, u64)>,
    weights: Fenwick,
}

const NO_POSITION: usize = usize::MAX;

impl TierIndex {
    /// Builds the index of a tier over `members` (slot, rank).
    pub fn new(alg: Algorithm, members: &[(usize, Rank)], rng: &mut fastrand::Rng) -> Self {
        let max_slot = members.iter().map(|(s, _)| *s).max().map_or(0, |m| m + 1);
        let mut position = vec![NO_POSITION; max_slot];
        for (i, (slot, _)) in members.iter().enumerate() {
            position[*slot] = i;
        }
        let mut idx = TierIndex {
            alg,
            members: members.iter().map(|(s, _)| *s).collect(),
            position,
            cursor: 0,
            ordered: BTreeSet::new(),
            seq: 1 << 63,
            entries: Vec::new(),
            weights: Fenwick::default(),
        };
        match alg {
            Algorithm::LeastUsed | Algorithm::LeastTokenUsed | Algorithm::MaxRemaining => {
                idx.entries = members
                    .iter()
                    .map(|(_, r)| (order_key(alg, r), rng.u64(..1 << 63)))
                    .collect();
                idx.ordered = members
                    .iter()
                    .zip(&idx.entries)
                    .map(|((slot, _), (k, t))| (*k, *t, *slot))
                    .collect();
            }
            Algorithm::WeightedScore => {
                idx.weights = Fenwick::new(members.iter().map(|(_, r)| r.weight).collect());
            }
            Algorithm::RoundRobin | Algorithm::Random => {
                idx.cursor = if members.is_empty() {
                    0
                } else {
                    rng.usize(..members.len())
                };
            }
        }
        idx
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// Picks an eligible slot, or `None` when no member is eligible.
    pub fn pick(
        &mut self,
        eligible: &mut impl FnMut(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        match self.alg {
            Algorithm::RoundRobin => {
                for i in 0..n {
                    let p = (self.cursor + i) % n;
                    let slot = self.members[p];
                    if eligible(slot) {
                        self.cursor = (p + 1) % n;
                        return Some(slot);
                    }
                }
                None
            }
            Algorithm::Random => {
                for _ in 0..8 {
                    let slot = self.members[rng.usize(..n)];
                    if eligible(slot) {
                        return Some(slot);
                    }
                }
                let ok: Vec<usize> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|s| eligible(*s))
                    .collect();
                (!ok.is_empty()).then(|| ok[rng.usize(..ok.len())])
            }
            Algorithm::LeastUsed | Algorithm::LeastTokenUsed | Algorithm::MaxRemaining => {
                // The first eligible entry's rank class; a random one of (up to 8) eligible
                // entries of that class serves, and goes to the back of its class, so equals
                // share the load at random.
                let mut group: [Option<(u64, u64, usize)>; 8] = [None; 8];
                let mut found = 0;
                for e in self.ordered.iter() {
                    if found > 0 && group[0].is_some_and(|g| g.0 != e.0) {
                        break;
                    }
                    if eligible(e.2) {
                        group[found] = Some(*e);
                        found += 1;
                        if found == group.len() {
                            break;
                        }
                    }
                }
                let (key, tie, slot) = group[rng.usize(..found.max(1))]?;
                self.ordered.remove(&(key, tie, slot));
                // For least-used the pick itself counts as a request.
                let key = if self.alg == Algorithm::LeastUsed {
                    key + 1
                } else {
                    key
                };
                self.seq += 1;
                self.entries[self.position[slot]] = (key, self.seq);
                self.ordered.insert((key, self.seq, slot));
                Some(slot)
            }
            Algorithm::WeightedScore => {
                let total = self.weights.total();
                if total > 0.0 {
                    for _ in 0..8 {
                        let p = self.weights.find(rng.f64() * total);
                        let slot = self.members[p];
                        if eligible(slot) {
                            return Some(slot);
                        }
                    }
                }
                // Slow path: roulette over the eligible members only.
                let ok: Vec<(usize, f64)> = self
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| eligible(**s))
                    .map(|(p, s)| (*s, self.weights.values[p].max(f64::MIN_POSITIVE)))
                    .collect();
                let sum: f64 = ok.iter().map(|(_, w)| w).sum();
                let mut r = rng.f64() * sum;
                for (slot, w) in &ok {
                    if r < *w {
                        return Some(*slot);
                    }
                    r -= w;
                }
                ok.last().map(|(s, _)| *s)
            }
        }
    }

    /// A member's rank changed (a request finished, tokens were counted).
    pub fn update(&mut self, slot: usize, rank: &Rank, rng: &mut fastrand::Rng) {
        let Some(&p) = self.position.get(slot) else {
            return;
        };
        if p == NO_POSITION {
            return;
        }
        match self.alg {
            Algorithm::LeastUsed | Algorithm::LeastTokenUsed | Algorithm::MaxRemaining => {
                let key = order_key(self.alg, rank);
                let (old_key, old_tie) = self.entries[p];
                if key != old_key {
                    self.ordered.remove(&(old_key, old_tie, slot));
                    let tie = rng.u64(..1 << 63);
                    self.entries[p] = (key, tie);
                    self.ordered.insert((key, tie, slot));
                }
            }
            Algorithm::WeightedScore => self.weights.set(p, rank.weight),
            Algorithm::RoundRobin | Algorithm::Random => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(requests_24h: u64, weight: f64, tokens_used: u64) -> Rank {
        Rank {
            requests_24h,
            weight,
            tokens_used,
            remaining: None,
        }
    }

    fn counts(
        alg: Algorithm,
        ranks: &[Rank],
        picks: usize,
        eligible: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let members: Vec<(usize, Rank)> = ranks.iter().copied().enumerate().collect();
        let mut idx = TierIndex::new(alg, &members, &mut rng);
        let mut c = vec![0; ranks.len()];
        let mut ok = |s: usize| eligible(s);
        for _ in 0..picks {
            if let Some(s) = idx.pick(&mut ok, &mut rng) {
                c[s] += 1;
            }
        }
        c
    }

    #[test]
    fn bucket_is_one_percent_wide() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000_000), bucket(1_005_000));
        assert!(bucket(1_000_000) < bucket(1_030_000));
        assert!(bucket(1) >= 1);
    }

    #[test]
    fn round_robin_cycles_and_skips_ineligible() {
        let c = counts(Algorithm::RoundRobin, &[rank(0, 1.0, 0); 4], 400, |s| {
            s != 2
        });
        assert_eq!(c[2], 0);
        assert!(
            c.iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .all(|(_, v)| (133..=134).contains(v)),
            "{c:?}"
        );
    }

    #[test]
    fn random_is_roughly_uniform() {
        let c = counts(Algorithm::Random, &[rank(0, 1.0, 0); 4], 8000, |_| true);
        assert!(c.iter().all(|v| (1700..=2300).contains(v)), "{c:?}");
        let c = counts(Algorithm::Random, &[rank(0, 1.0, 0); 50], 500, |s| s == 37);
        assert_eq!(c[37], 500, "the slow path finds the one eligible key");
    }

    #[test]
    fn least_used_prefers_the_least_used_then_balances() {
        // Key 0 already served 100 requests today: the others catch up first.
        let c = counts(
            Algorithm::LeastUsed,
            &[rank(100, 1.0, 0), rank(0, 1.0, 0), rank(0, 1.0, 0)],
            200,
            |_| true,
        );
        assert_eq!(c[0], 0, "{c:?}");
        assert_eq!(c[1] + c[2], 200);
        assert!(c[1].abs_diff(c[2]) <= 1, "{c:?}");
        let c = counts(
            Algorithm::LeastUsed,
            &[rank(100, 1.0, 0), rank(0, 1.0, 0), rank(0, 1.0, 0)],
            600,
            |_| true,
        );
        assert!(c[0] > 100, "{c:?}");
    }

    #[test]
    fn weighted_score_follows_the_weights() {
        let c = counts(
            Algorithm::WeightedScore,
            &[rank(0, 0.9, 0), rank(0, 0.1, 0)],
            10_000,
            |_| true,
        );
        assert!((8700..=9300).contains(&c[0]), "{c:?}");
        let c = counts(
            Algorithm::WeightedScore,
            &[rank(0, 0.9, 0), rank(0, 0.1, 0)],
            1000,
            |s| s == 1,
        );
        assert_eq!(c[1], 1000);
    }

    #[test]
    fn least_token_used_spreads_near_ties_and_avoids_heavy_keys() {
        assert_eq!(bucket(1_000_000), bucket(1_004_000));
        let c = counts(
            Algorithm::LeastTokenUsed,
            &[
                rank(0, 1.0, 5_000_000),
                rank(0, 1.0, 1_000_000),
                rank(0, 1.0, 1_004_000),
                rank(0, 1.0, 2_000_000),
            ],
            4000,
            |_| true,
        );
        assert_eq!(c[0] + c[3], 0, "{c:?}");
        assert!(
            (1800..=2200).contains(&c[1]) && (1800..=2200).contains(&c[2]),
            "near-ties share: {c:?}"
        );
    }

    #[test]
    fn max_remaining_prefers_known_balances_with_most_left() {
        let r = |rem: Option<u64>, tokens: u64| Rank {
            requests_24h: 0,
            weight: 1.0,
            tokens_used: tokens,
            remaining: rem,
        };
        assert_eq!(bucket(9_000_000), bucket(9_030_000));
        let c = counts(
            Algorithm::MaxRemaining,
            &[
                r(Some(1_000), 0),
                r(Some(9_000_000), 0),
                r(None, 0),
                r(Some(9_030_000), 0),
            ],
            1000,
            |_| true,
        );
        assert_eq!(c[0] + c[2], 0, "{c:?}");
        assert!(c[1] > 400 && c[3] > 400, "{c:?}");
        let c = counts(
            Algorithm::MaxRemaining,
            &[r(Some(1_000), 0), r(None, 0)],
            10,
            |s| s == 1,
        );
        assert_eq!(
            c[1], 10,
            "a key without a balance serves when nothing better is eligible"
        );
    }

    #[test]
    fn updates_move_keys() {
        let mut rng = fastrand::Rng::with_seed(1);
        let members = vec![(3, rank(0, 1.0, 0)), (8, rank(0, 1.0, 10))];
        let mut idx = TierIndex::new(Algorithm::LeastTokenUsed, &members, &mut rng);
        let mut all = |_| true;
        assert_eq!(idx.pick(&mut all, &mut rng), Some(3));
        idx.update(3, &rank(0, 1.0, 1_000_000), &mut rng);
        assert_eq!(idx.pick(&mut all, &mut rng), Some(8));
        assert_eq!(idx.pick(&mut |s| s == 3, &mut rng), Some(3));
        assert_eq!(idx.pick(&mut |_| false, &mut rng), None);
    }

    #[test]
    fn fenwick_find() {
        let f = Fenwick::new(vec![1.0, 0.0, 3.0, 2.0]);
        assert_eq!(f.total(), 6.0);
        assert_eq!(f.find(0.5), 0);
        assert_eq!(f.find(1.0), 2);
        assert_eq!(f.find(3.99), 2);
        assert_eq!(f.find(4.0), 3);
        assert_eq!(f.find(5.99), 3);
    }
}
