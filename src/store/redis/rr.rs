//! The fleet-wide round-robin position, claimed in blocks so that a pick never waits on Redis:
//! `INCRBY rr:<tier> B` hands this instance positions `end-B .. end-1`; the next block is claimed
//! in the background when half of the current one is used. Without a block (Redis down, or
//! the first claim still in flight) the pool uses its own cursor. Every position is served by
//! exactly one instance, so across the fleet each key's share stays within ±B of even.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Shared, k};

/// Positions per claim.
pub const BLOCK: u64 = 16;

#[derive(Debug, Default)]
struct TierBlock {
    /// The positions being served: `[next, end)`.
    next: u64,
    end: u64,
    /// The block claimed ahead.
    ahead: Option<(u64, u64)>,
    claiming: bool,
}

/// The blocks of every tier.
#[derive(Debug, Default)]
pub struct Blocks {
    tiers: Mutex<HashMap<i64, TierBlock>>,
    want: tokio::sync::Notify,
}

impl Blocks {
    /// The next fleet position for a tier, if a block is at hand. Never waits.
    pub fn next(&self, tier: i64) -> Option<u64> {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        let b = tiers.entry(tier).or_default();
        if b.next >= b.end
            && let Some((start, end)) = b.ahead.take()
        {
            (b.next, b.end) = (start, end);
        }
        let pos = (b.next < b.end).then(|| {
            b.next += 1;
            b.next - 1
        });
        if b.ahead.is_none() && !b.claiming && b.end.saturating_sub(b.next) <= BLOCK / 2 {
            b.claiming = true;
            self.want.notify_one();
        }
        pos
    }

    fn wanted(&self) -> Vec<i64> {
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers
            .iter()
            .filter(|(_, b)| b.claiming)
            .map(|(t, _)| *t)
            .collect()
    }

    fn claimed(&self, tier: i64, block: Option<(u64, u64)>) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        let b = tiers.entry(tier).or_default();
        b.claiming = false;
        if let Some((start, end)) = block {
            if b.next >= b.end {
                (b.next, b.end) = (start, end);
            } else {
                b.ahead = Some((start, end));
            }
        }
    }
}

/// Claims blocks as the pool asks for them.
pub(super) async fn claim_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.rr.want.notified() => {}
            // A claim refused while Redis was down is asked again.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for tier in shared.rr.wanted() {
            let block = if shared.is_up() {
                let end: Result<u64, _> = shared
                    .link
                    .query(
                        Duration::from_millis(500),
                        redis::cmd("INCRBY")
                            .arg(k(&format!("rr:{tier}")))
                            .arg(BLOCK),
                    )
                    .await;
                end.ok().map(|end| (end.saturating_sub(BLOCK), end))
            } else {
                None
            };
            shared.rr.claimed(tier, block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_the_current_block_then_the_one_claimed_ahead() {
        let b = Blocks::default();
        assert_eq!(
            b.next(1),
            None,
            "no block yet: the pool's own cursor serves"
        );
        assert_eq!(b.wanted(), vec![1]);
        b.claimed(1, Some((32, 48)));
        let got: Vec<u64> = (0..8).filter_map(|_| b.next(1)).collect();
        assert_eq!(got, (32..40).collect::<Vec<_>>());
        // Half used: the next block is wanted, and arrives while the current one still serves.
        assert_eq!(b.wanted(), vec![1]);
        b.claimed(1, Some((96, 112)));
        let got: Vec<u64> = (0..10).filter_map(|_| b.next(1)).collect();
        assert_eq!(got, vec![40, 41, 42, 43, 44, 45, 46, 47, 96, 97]);
    }

    #[test]
    fn a_failed_claim_is_asked_again() {
        let b = Blocks::default();
        assert_eq!(b.next(5), None);
        b.claimed(5, None);
        assert!(b.wanted().is_empty());
        assert_eq!(b.next(5), None);
        assert_eq!(b.wanted(), vec![5]);
    }
}
