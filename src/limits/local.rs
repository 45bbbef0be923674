//! The local tier: exact decisions in this process, in bounded tables.

use std::time::{Duration, Instant};

use super::gcra::{Decision, Quota, Table};
use super::lockout::{Lockouts, Rule};

pub struct LocalTier {
    table: Table,
    lockouts: Lockouts,
    epoch: Instant,
}

impl LocalTier {
    /// Tables holding at most about `table_size` buckets (and a quarter of
    /// that in lockout states).
    pub fn new(table_size: usize) -> Self {
        Self {
            table: Table::new(table_size),
            lockouts: Lockouts::new(table_size / 4),
            epoch: Instant::now(),
        }
    }

    /// Keys held.
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// Takes one request from `key`'s bucket. A key locked out is refused
    /// without touching its bucket; a denial may start a lockout.
    pub fn check(&self, key: u64, quota: Quota, lockout: Option<Rule>) -> Decision {
        let now = self.epoch.elapsed().as_nanos() as u64;
        if lockout.is_some() {
            if let Some(left) = self.lockouts.locked(key, now) {
                return locked(left);
            }
        }
        let d = self.table.check(key, quota, now);
        match lockout {
            Some(rule) if !d.allowed => match self.lockouts.deny(key, rule, now) {
                Some(length) => locked(length),
                None => d,
            },
            _ => d,
        }
    }
}

fn locked(left: Duration) -> Decision {
    Decision {
        allowed: false,
        remaining: 0,
        retry_after: left,
        reset_after: left,
        locked: true,
    }
}
