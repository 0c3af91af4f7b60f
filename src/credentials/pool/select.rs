//! Selection indexes: one per tier, one kind per algorithm (contract §7). An index holds only
//! the tier's keys that may serve now (cooling keys wait outside it, `tiers.rs`); keys enter and
//! leave in O(log n). Each pick is O(1) or O(log n) in the number of keys, so selection stays
//! well under a microsecond at 10,000 keys however many cool (`benches/pool_select.rs`).
//!
//! - `round-robin`: a cursor over the tier's keys, skipping the ones the request already tried.
//! - `random`: uniform; a few random probes, then a scan of the untried keys.
//! - `least-used`: an ordered set by requests in the last 24 h, ties broken by a random number
//!   drawn again at each pick, so equal keys share the load.
//! - `weighted-score`: roulette over a Fenwick tree of weights ((successes+1)/(requests+2))² over
//!   each key's last 100 requests (integer weights: no drift over any number of updates).
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
    /// The key's place in the fleet-wide round-robin order: the same on every instance (a
    /// hash of its id), so a shared position picks the same key everywhere.
    pub order: u64,
}

/// A stable 64-bit hash of a key id (FNV-1a): the fleet-wide round-robin order.
pub fn ring_order(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
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

/// A Fenwick (binary indexed) tree of integer weights over positions `0..len`, with room to
/// grow (doubling, rebuilt in linear time) and an exact running total: integer weights never
/// drift however many updates they take.
#[derive(Debug, Clone, Default)]
struct Fenwick {
    /// 1-based tree over `capacity` positions (`tree.len() == capacity + 1`).
    tree: Vec<u64>,
    /// The weight at each live position.
    values: Vec<u64>,
    total: u64,
}

/// A roulette weight in (0, 1] as an integer (2^32 = 1.0); 0 for a weight that is not a positive
/// number. The smallest real weight, (1/102)², is about 412,000: far from rounding to nothing.
fn scale(w: f64) -> u64 {
    if w.is_finite() && w > 0.0 {
        ((w * 4_294_967_296.0) as u64).max(1)
    } else {
        0
    }
}

impl Fenwick {
    fn new(values: Vec<u64>) -> Self {
        let mut f = Fenwick {
            tree: Vec::new(),
            values,
            total: 0,
        };
        f.rebuild(f.values.len().max(16));
        f
    }

    fn capacity(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    /// Rebuilds the tree over `capacity` positions from `values` in linear time.
    fn rebuild(&mut self, capacity: usize) {
        self.tree = vec![0; capacity + 1];
        for (i, v) in self.values.iter().enumerate() {
            self.tree[i + 1] = *v;
        }
        for i in 1..=capacity {
            let j = i + (i & i.wrapping_neg());
            if j <= capacity {
                self.tree[j] = self.tree[j].wrapping_add(self.tree[i]);
            }
        }
        self.total = self.values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
    }

    fn add(&mut self, i: usize, old: u64, new: u64) {
        let mut j = i + 1;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j].wrapping_sub(old).wrapping_add(new);
            j += j & j.wrapping_neg();
        }
        self.total = self.total.wrapping_sub(old).wrapping_add(new);
    }

    fn set(&mut self, i: usize, v: u64) {
        let old = self.values[i];
        self.values[i] = v;
        self.add(i, old, v);
    }

    fn push(&mut self, v: u64) {
        if self.values.len() == self.capacity() {
            self.values.push(v);
            self.rebuild((self.capacity() * 2).max(16));
        } else {
            self.values.push(0);
            let i = self.values.len() - 1;
            self.set(i, v);
        }
    }

    /// Moves the last position's weight into `i` and drops the last position.
    fn swap_remove(&mut self, i: usize) {
        let last = self.values.len() - 1;
        if i != last {
            let v = self.values[last];
            self.set(i, v);
        }
        self.set(last, 0);
        self.values.pop();
    }

    fn total(&self) -> u64 {
        self.total
    }

    /// The position whose cumulative range holds `target` (0 ≤ target < total).
    fn find(&self, mut target: u64) -> usize {
        let cap = self.capacity();
        let mut pos = 0;
        let mut step = if cap == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - cap.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= cap && self.tree[next] <= target {
                target -= self.tree[next];
                pos = next;
            }
            step >>= 1;
        }
        pos.min(self.values.len().saturating_sub(1))
    }
}

/// The selection index of one tier: the tier's keys that may serve now. `members` are slot
/// numbers of the pool's key table. Keys enter and leave one at a time in O(log n) (a key that
/// starts cooling leaves; it comes back when its cooldown is over), so a pick never walks past
/// keys that cannot serve: the only keys it skips are the few a request already tried.
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
    /// position → the entry currently in `ordered` (ordered-set algorithms).
    entries: Vec<(u64, u64)>,
    /// position → roulette weight (weighted-score).
    weights: Fenwick,
    /// Round-robin: the members in fleet order (`Rank::order`, then slot), for positions
    /// handed out by the shared counter.
    ring: Vec<(u64, usize)>,
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
            ring: Vec::new(),
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
                idx.weights = Fenwick::new(members.iter().map(|(_, r)| scale(r.weight)).collect());
            }
            Algorithm::RoundRobin | Algorithm::Random => {
                idx.cursor = if members.is_empty() {
                    0
                } else {
                    rng.usize(..members.len())
                };
                if alg == Algorithm::RoundRobin {
                    idx.ring = members.iter().map(|(s, r)| (r.order, *s)).collect();
                    idx.ring.sort_unstable();
                }
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

    /// The slots in the index, in no particular order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    pub fn contains(&self, slot: usize) -> bool {
        self.position.get(slot).is_some_and(|p| *p != NO_POSITION)
    }

    /// Adds a key (a rank update when it is already in).
    pub fn insert(&mut self, slot: usize, rank: &Rank, rng: &mut fastrand::Rng) {
        if self.contains(slot) {
            self.update(slot, rank, rng);
            return;
        }
        if self.position.len() <= slot {
            self.position.resize(slot + 1, NO_POSITION);
        }
        self.position[slot] = self.members.len();
        self.members.push(slot);
        match self.alg {
            Algorithm::LeastUsed | Algorithm::LeastTokenUsed | Algorithm::MaxRemaining => {
                let entry = (order_key(self.alg, rank), rng.u64(..1 << 63));
                self.entries.push(entry);
                self.ordered.insert((entry.0, entry.1, slot));
            }
            Algorithm::WeightedScore => self.weights.push(scale(rank.weight)),
            Algorithm::RoundRobin => {
                let e = (rank.order, slot);
                let at = self.ring.partition_point(|x| *x < e);
                self.ring.insert(at, e);
            }
            Algorithm::Random => {}
        }
    }

    /// Removes a key (nothing when it is not in).
    pub fn remove(&mut self, slot: usize) {
        let Some(&p) = self.position.get(slot) else {
            return;
        };
        if p == NO_POSITION {
            return;
        }
        match self.alg {
            Algorithm::LeastUsed | Algorithm::LeastTokenUsed | Algorithm::MaxRemaining => {
                let (key, tie) = self.entries[p];
                self.ordered.remove(&(key, tie, slot));
                self.entries.swap_remove(p);
            }
            Algorithm::WeightedScore => self.weights.swap_remove(p),
            Algorithm::RoundRobin => self.ring.retain(|(_, s)| *s != slot),
            Algorithm::Random => {}
        }
        self.members.swap_remove(p);
        self.position[slot] = NO_POSITION;
        if let Some(&moved) = self.members.get(p) {
            self.position[moved] = p;
        }
        if self.cursor >= self.members.len() {
            self.cursor = 0;
        }
    }

    /// Picks a slot `eligible` accepts, or `None` when it accepts no member. Every member is
    /// expected to be eligible but for the few keys a request already tried, so the fast paths
    /// nearly always serve. `shared` is a fleet-wide round-robin position (several instances):
    /// it picks in the fleet order instead of this instance's cursor.
    pub fn pick(
        &mut self,
        eligible: &mut impl FnMut(usize) -> bool,
        rng: &mut fastrand::Rng,
        shared: Option<u64>,
    ) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        match self.alg {
            Algorithm::RoundRobin if let Some(pos) = shared => {
                let start = (pos % self.ring.len().max(1) as u64) as usize;
                (0..self.ring.len())
                    .map(|i| self.ring[(start + i) % self.ring.len()].1)
                    .find(|s| eligible(*s))
            }
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
                if total > 0 {
                    for _ in 0..8 {
                        let p = self.weights.find(rng.u64(..total));
                        let slot = self.members[p];
                        if eligible(slot) {
                            return Some(slot);
                        }
                    }
                }
                // Slow path (the tried keys hold most of the weight): roulette over the
                // eligible members only.
                let ok: Vec<(usize, u64)> = self
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| eligible(**s))
                    .map(|(p, s)| (*s, self.weights.values[p].max(1)))
                    .collect();
                let sum = ok.iter().fold(0u64, |a, (_, w)| a.saturating_add(*w));
                if sum == 0 {
                    return None;
                }
                let mut r = rng.u64(..sum);
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
            Algorithm::WeightedScore => self.weights.set(p, scale(rank.weight)),
            Algorithm::RoundRobin | Algorithm::Random => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(requests_24h: u64, weight: f64, tokens_used: u64) -> Rank {
        Rank {
            order: 0,
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
            if let Some(s) = idx.pick(&mut ok, &mut rng, None) {
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
            order: 0,
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
        assert_eq!(idx.pick(&mut all, &mut rng, None), Some(3));
        idx.update(3, &rank(0, 1.0, 1_000_000), &mut rng);
        assert_eq!(idx.pick(&mut all, &mut rng, None), Some(8));
        assert_eq!(idx.pick(&mut |s| s == 3, &mut rng, None), Some(3));
        assert_eq!(idx.pick(&mut |_| false, &mut rng, None), None);
    }

    #[test]
    fn fenwick_find() {
        let f = Fenwick::new(vec![10, 0, 30, 20]);
        assert_eq!(f.total(), 60);
        assert_eq!(f.find(5), 0);
        assert_eq!(f.find(10), 2);
        assert_eq!(f.find(39), 2);
        assert_eq!(f.find(40), 3);
        assert_eq!(f.find(59), 3);
    }

    #[test]
    fn fenwick_grows_and_shrinks_exactly() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut f = Fenwick::default();
        let mut naive: Vec<u64> = Vec::new();
        for step in 0..5_000 {
            match rng.u8(..3) {
                0 | 1 => {
                    let v = rng.u64(..1 << 32);
                    f.push(v);
                    naive.push(v);
                }
                _ if !naive.is_empty() => {
                    let i = rng.usize(..naive.len());
                    f.swap_remove(i);
                    naive.swap_remove(i);
                }
                _ => {}
            }
            if !naive.is_empty() && step % 7 == 0 {
                let i = rng.usize(..naive.len());
                let v = rng.u64(..1 << 32);
                f.set(i, v);
                naive[i] = v;
            }
            assert_eq!(f.total(), naive.iter().sum::<u64>(), "step {step}");
        }
        // `find` agrees with a linear scan everywhere it is asked.
        let total = f.total();
        for _ in 0..2_000 {
            let t = rng.u64(..total);
            let mut acc = 0;
            let expected = naive
                .iter()
                .position(|w| {
                    acc += w;
                    acc > t
                })
                .unwrap();
            assert_eq!(f.find(t), expected);
        }
    }

    /// Every algorithm: a removed key is never picked, a re-inserted one serves again, and the
    /// index stays consistent through a long series of random removals and insertions.
    #[test]
    fn keys_leave_and_return_for_every_algorithm() {
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::Random,
            Algorithm::LeastUsed,
            Algorithm::WeightedScore,
            Algorithm::LeastTokenUsed,
            Algorithm::MaxRemaining,
        ] {
            let mut rng = fastrand::Rng::with_seed(11);
            let members: Vec<(usize, Rank)> =
                (0..50).map(|s| (s, rank(0, 1.0, 1_000_000))).collect();
            let mut idx = TierIndex::new(alg, &members, &mut rng);
            let mut inside: Vec<bool> = vec![true; 50];
            for round in 0..2_000 {
                let s = rng.usize(..50);
                if inside[s] {
                    idx.remove(s);
                } else {
                    idx.insert(s, &rank(0, 1.0, 1_000_000), &mut rng);
                }
                inside[s] = !inside[s];
                assert_eq!(idx.len(), inside.iter().filter(|x| **x).count());
                assert_eq!(idx.contains(s), inside[s]);
                match idx.pick(&mut |_| true, &mut rng, None) {
                    Some(p) => assert!(inside[p], "{alg:?} round {round}: picked removed {p}"),
                    None => assert!(idx.is_empty(), "{alg:?}: nothing picked from a full index"),
                }
            }
            // Only keys 0..10 inside: each of them serves, nothing else does.
            for (s, inside) in inside.iter_mut().enumerate() {
                if *inside && s >= 10 {
                    idx.remove(s);
                } else if !*inside && s < 10 {
                    idx.insert(s, &rank(0, 1.0, 1_000_000), &mut rng);
                }
                *inside = s < 10;
            }
            let mut seen = [0u32; 50];
            for _ in 0..1_000 {
                seen[idx.pick(&mut |_| true, &mut rng, None).unwrap()] += 1;
            }
            assert!(seen[..10].iter().all(|c| *c > 0), "{alg:?}: {seen:?}");
            assert!(seen[10..].iter().all(|c| *c == 0), "{alg:?}: {seen:?}");
            // Removing the rest empties it.
            for s in 0..10 {
                idx.remove(s);
                idx.remove(s);
            }
            assert!(idx.is_empty());
            assert_eq!(idx.pick(&mut |_| true, &mut rng, None), None);
        }
    }

    #[test]
    fn a_shared_position_picks_the_same_key_on_every_instance() {
        // Two instances hold the same keys under different slot numbers, added in other orders.
        let ids = ["key_a", "key_b", "key_c", "key_d", "key_e"];
        let with = |slots: &[(usize, &str)]| {
            let members: Vec<(usize, Rank)> = slots
                .iter()
                .map(|(s, id)| {
                    (
                        *s,
                        Rank {
                            order: ring_order(id),
                            ..rank(0, 1.0, 0)
                        },
                    )
                })
                .collect();
            TierIndex::new(
                Algorithm::RoundRobin,
                &members,
                &mut fastrand::Rng::with_seed(1),
            )
        };
        let mut a = with(&[
            (0, ids[0]),
            (1, ids[1]),
            (2, ids[2]),
            (3, ids[3]),
            (4, ids[4]),
        ]);
        let mut b = with(&[(9, ids[4]), (7, ids[2]), (5, ids[0])]);
        b.insert(
            6,
            &Rank {
                order: ring_order(ids[3]),
                ..rank(0, 1.0, 0)
            },
            &mut fastrand::Rng::new(),
        );
        b.insert(
            8,
            &Rank {
                order: ring_order(ids[1]),
                ..rank(0, 1.0, 0)
            },
            &mut fastrand::Rng::new(),
        );
        let a_id = |s: usize| ids[s];
        let b_id = |s: usize| match s {
            5 => ids[0],
            8 => ids[1],
            7 => ids[2],
            6 => ids[3],
            _ => ids[4],
        };
        let mut rng = fastrand::Rng::new();
        let mut seen = std::collections::HashSet::new();
        for pos in 0..5u64 {
            let x = a.pick(&mut |_| true, &mut rng, Some(pos)).map(a_id);
            let y = b.pick(&mut |_| true, &mut rng, Some(pos)).map(b_id);
            assert_eq!(x, y, "position {pos}");
            seen.insert(x);
        }
        assert_eq!(seen.len(), 5, "five positions, five different keys");
        // A removed key leaves the ring; a tried key is skipped to the next in order.
        b.remove(7);
        assert_eq!(b.len(), 4);
        let first = b.pick(&mut |_| true, &mut rng, Some(0));
        let skipped = b.pick(&mut |s| Some(s) != first, &mut rng, Some(0));
        assert_ne!(first, skipped);
        assert!(skipped.is_some());
    }
}
