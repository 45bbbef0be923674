//! Brute-force lockout: after `after` denials of one key within `for`, the
//! key is refused outright for `for`, doubling with each repeat up to `max`.
//! Strikes are forgotten after `max` without a lockout.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

const SHARDS: usize = 64;

pub use crate::config::LockoutRule as Rule;

#[derive(Clone, Copy, Debug, Default)]
struct State {
    denials: u32,
    window_start: u64,
    locked_until: u64,
    strikes: u32,
    /// Until when the strikes are kept for escalation.
    remember_until: u64,
}

/// Lockout states, bounded like the rate table.
pub struct Lockouts {
    shards: Box<[Mutex<HashMap<u64, State>>]>,
    per_shard: usize,
}

impl Lockouts {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(16),
        }
    }

    /// Time left on `key`'s lockout, if it is locked out at `now_ns`.
    pub fn locked(&self, key: u64, now_ns: u64) -> Option<Duration> {
        let shard = self.shards[(key as usize) % SHARDS].lock();
        let s = shard.get(&key)?;
        (s.locked_until > now_ns).then(|| Duration::from_nanos(s.locked_until - now_ns))
    }

    /// Records a denial; returns the lockout it started, if any.
    pub fn deny(&self, key: u64, rule: Rule, now_ns: u64) -> Option<Duration> {
        let base = rule.base.as_nanos() as u64;
        let max = rule.max.as_nanos() as u64;
        let mut shard = self.shards[(key as usize) % SHARDS].lock();
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            // Forget keys that are neither locked, nor remembered for escalation,
            // nor counting denials; then the one whose lock ends first, so a
            // flood of new keys cannot lift a running lockout early.
            shard.retain(|_, s| {
                s.locked_until > now_ns
                    || s.remember_until > now_ns
                    || now_ns.saturating_sub(s.window_start) < base
            });
            if shard.len() >= self.per_shard {
                let first = shard
                    .iter()
                    .min_by_key(|(_, s)| (s.locked_until, s.remember_until))
                    .map(|(k, _)| *k);
                if let Some(k) = first {
                    shard.remove(&k);
                }
            }
        }
        let s = shard.entry(key).or_insert(State {
            window_start: now_ns,
            ..State::default()
        });
        if s.locked_until != 0 && now_ns > s.locked_until.saturating_add(max) {
            s.strikes = 0;
        }
        if now_ns.saturating_sub(s.window_start) > base {
            s.denials = 0;
            s.window_start = now_ns;
        }
        s.denials += 1;
        if s.denials < rule.after.max(1) {
            return None;
        }
        let factor = 1u64 << s.strikes.min(32);
        let length = base.saturating_mul(factor).min(max.max(base));
        s.strikes = s.strikes.saturating_add(1);
        s.denials = 0;
        s.window_start = now_ns;
        s.locked_until = now_ns.saturating_add(length);
        s.remember_until = s.locked_until.saturating_add(max);
        Some(Duration::from_nanos(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn rule() -> Rule {
        Rule {
            after: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(35),
        }
    }

    #[test]
    fn locks_after_n_denials_and_doubles_up_to_max() {
        let l = Lockouts::new(1000);
        let mut now = 100 * SEC;
        let mut locks = Vec::new();
        for _ in 0..4 {
            assert_eq!(l.deny(1, rule(), now), None);
            assert_eq!(l.deny(1, rule(), now), None);
            let d = l.deny(1, rule(), now).expect("third denial locks");
            assert_eq!(l.locked(1, now), Some(d));
            locks.push(d.as_secs());
            now += d.as_nanos() as u64;
            assert_eq!(l.locked(1, now), None, "expired");
        }
        assert_eq!(locks, vec![10, 20, 35, 35]);
    }

    #[test]
    fn a_flood_of_new_keys_does_not_lift_a_lockout() {
        let l = Lockouts::new(16 * SHARDS);
        let now = SEC;
        for _ in 0..3 {
            l.deny(42, rule(), now);
        }
        assert!(l.locked(42, now).is_some());
        for k in 1000..200_000u64 {
            l.deny(k, rule(), now + 1);
        }
        assert!(
            l.locked(42, now + 2).is_some(),
            "lockout lifted by eviction"
        );
    }

    #[test]
    fn denials_spread_out_do_not_lock() {
        let l = Lockouts::new(1000);
        for i in 0..10 {
            assert_eq!(l.deny(2, rule(), i * 11 * SEC), None);
        }
    }

    #[test]
    fn strikes_are_forgotten_after_a_quiet_max() {
        let l = Lockouts::new(1000);
        let now = SEC;
        for _ in 0..2 {
            l.deny(3, rule(), now);
        }
        assert_eq!(l.deny(3, rule(), now).unwrap().as_secs(), 10);
        let later = now + 100 * SEC;
        l.deny(3, rule(), later);
        l.deny(3, rule(), later);
        assert_eq!(
            l.deny(3, rule(), later).unwrap().as_secs(),
            10,
            "back to the base length"
        );
    }
}
