//! GCRA (generic cell rate algorithm): a token bucket kept as one number per
//! key, the theoretical arrival time (TAT). Exact under concurrency: each
//! decision runs under its shard's lock. Memory is bounded: a full shard first
//! forgets keys whose bucket is full again (forgetting them changes no
//! decision), then the key closest to full.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

const SHARDS: usize = 64;

/// Rate and burst of one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Time to earn one request back.
    pub interval: Duration,
    /// Requests allowed at once from a full bucket.
    pub burst: u32,
}

impl Quota {
    fn interval_ns(&self) -> u64 {
        self.interval.as_nanos().max(1) as u64
    }
}

/// One decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left right after this one.
    pub remaining: u32,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// Refused by a brute-force lockout (running, or started by this denial).
    pub locked: bool,
}

/// Buckets keyed by a hash of the policy and key parts.
pub struct Table {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    per_shard: usize,
}

impl Table {
    /// A table holding at most about `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(16),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one request for `key` at time `now_ns` (a monotonic clock).
    pub fn check(&self, key: u64, quota: Quota, now_ns: u64) -> Decision {
        let t = quota.interval_ns();
        let capacity = t.saturating_mul(u64::from(quota.burst.max(1)));
        let mut shard = self.shards[(key as usize) % SHARDS].lock();
        let tat = shard.get(&key).copied().unwrap_or(now_ns).max(now_ns);
        let new_tat = tat.saturating_add(t);
        let ahead = new_tat - now_ns;
        if ahead > capacity {
            return Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_nanos(ahead - capacity),
                reset_after: Duration::from_nanos(tat - now_ns),
                locked: false,
            };
        }
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            make_room(&mut shard, now_ns, self.per_shard);
        }
        shard.insert(key, new_tat);
        Decision {
            allowed: true,
            remaining: ((capacity - ahead) / t) as u32,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_nanos(ahead),
            locked: false,
        }
    }
}

fn make_room(shard: &mut HashMap<u64, u64>, now_ns: u64, limit: usize) {
    shard.retain(|_, tat| *tat > now_ns);
    if shard.len() < limit {
        return;
    }
    // Still full of active keys: forget the eighth closest to a full bucket,
    // so a flood of new keys costs amortised O(1) per key.
    let mut tats: Vec<u64> = shard.values().copied().collect();
    let cut = (limit / 8).max(1).min(tats.len() - 1);
    let (_, threshold, _) = tats.select_nth_unstable(cut);
    let threshold = *threshold;
    shard.retain(|_, tat| *tat > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn quota(per_sec: u64, burst: u32) -> Quota {
        Quota {
            interval: Duration::from_nanos(SEC / per_sec),
            burst,
        }
    }

    #[test]
    fn a_full_bucket_admits_exactly_the_burst() {
        let t = Table::new(1000);
        let q = quota(1, 5);
        let allowed = (0..20).filter(|_| t.check(7, q, 10 * SEC).allowed).count();
        assert_eq!(allowed, 5);
        let d = t.check(7, q, 10 * SEC);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(1));
    }

    #[test]
    fn refills_at_the_rate() {
        let t = Table::new(1000);
        let q = quota(10, 1);
        assert!(t.check(1, q, SEC).allowed);
        assert!(
            !t.check(1, q, SEC + SEC / 20).allowed,
            "50 ms later: not yet"
        );
        assert!(
            t.check(1, q, SEC + SEC / 10).allowed,
            "100 ms later: one more"
        );
    }

    #[test]
    fn remaining_counts_down() {
        let t = Table::new(1000);
        let q = quota(1, 3);
        let r: Vec<u32> = (0..3).map(|_| t.check(9, q, SEC).remaining).collect();
        assert_eq!(r, vec![2, 1, 0]);
    }

    #[test]
    fn exact_under_concurrency() {
        let t = std::sync::Arc::new(Table::new(1000));
        let q = quota(1, 10);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..50).filter(|_| t.check(3, q, 5 * SEC).allowed).count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn memory_stays_bounded_with_distinct_keys() {
        let t = Table::new(6400);
        let q = quota(1, 10);
        for k in 0..1_000_000u64 {
            t.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), q, SEC);
        }
        assert!(t.len() <= 6400 + SHARDS, "{} keys held", t.len());
    }
}
