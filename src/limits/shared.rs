//! The shared tier: one budget across nodes, decided by one atomic Lua script
//! per request in Redis (standalone, Sentinel or Cluster) over one multiplexed
//! connection. A decision that cannot be made within the latency budget is
//! reported as a failure and the caller falls back; a background task keeps
//! the connection, so Redis coming back needs no restart.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Script;

use super::gcra::{Decision, Quota};
use super::lockout::Rule;
use crate::config::Redis;
use crate::redis_link::{is_broken, RedisLink};

/// Decisions in a row that may miss the latency budget before Redis is
/// treated as down until the next health check.
const TIMEOUTS_BEFORE_DOWN: u32 = 3;

/// Why a shared decision was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection right now (Redis down, or reconnecting).
    Unavailable,
    /// Redis did not answer within the latency budget.
    Timeout,
    /// Redis answered with an error, or the connection broke.
    Error,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unavailable => "unavailable",
            Failure::Timeout => "timeout",
            Failure::Error => "error",
        }
    }
}

pub struct SharedTier {
    link: Arc<RedisLink>,
    budget: Duration,
    script: Script,
    timeouts_in_a_row: AtomicU32,
    /// The link's connection count when `timeouts_in_a_row` was last reset.
    connection_seen: AtomicU64,
}

impl SharedTier {
    pub fn new(redis: &Redis) -> Self {
        let script = Script::new(include_str!("gcra.lua"));
        Self {
            link: Arc::new(RedisLink::new(redis.servers.clone(), vec![script.clone()])),
            budget: redis.timeout,
            script,
            timeouts_in_a_row: AtomicU32::new(0),
            connection_seen: AtomicU64::new(0),
        }
    }

    /// The node's Redis connection (also used by the cluster features).
    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }

    /// Whether decisions are being made in Redis right now.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// One decision for `key` (already hashed; the policy name keeps keys of
    /// different policies apart and the braces keep a key's bucket and
    /// lockout on one Cluster slot).
    pub async fn check(
        &self,
        policy: &str,
        key: &str,
        quota: Quota,
        lockout: Option<Rule>,
    ) -> Result<Decision, Failure> {
        let Some(used) = self.link.current() else {
            return Err(Failure::Unavailable);
        };
        // A new connection starts with a clean record of slow answers.
        let connects = self.link.connects();
        if self.connection_seen.swap(connects, Ordering::Relaxed) != connects {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        }
        let mut conn = (*used).clone();
        let bucket = format!("awning:rl:{{{policy}:{key}}}");
        let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX / 4)) as u64;
        let (after, base, max) = lockout.map_or((0, 0, 0), |r| {
            (r.after, micros(r.base).max(1), micros(r.max).max(1))
        });
        let mut inv = self.script.prepare_invoke();
        inv.key(&bucket)
            .key(format!("{bucket}:lock"))
            .arg(micros(quota.interval).max(1))
            .arg(quota.burst.max(1))
            .arg(after)
            .arg(base)
            .arg(max);
        let sent = Instant::now();
        let answer: Result<redis::RedisResult<Vec<i64>>, _> =
            tokio::time::timeout(self.budget, inv.invoke_async(&mut conn)).await;
        crate::metrics::redis_command("decide", sent.elapsed());
        let failure = match answer {
            Ok(Ok(v)) if v.len() == 5 => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                let us = |x: i64| Duration::from_micros(x.max(0) as u64);
                return Ok(Decision {
                    allowed: v[0] == 1,
                    remaining: v[1].clamp(0, i64::from(u32::MAX)) as u32,
                    retry_after: us(v[2]),
                    reset_after: us(v[3]),
                    locked: v[4] == 1,
                });
            }
            Ok(Ok(v)) => {
                self.link
                    .log_trouble(&format!("the rate-limit script answered {v:?}"));
                Failure::Error
            }
            Ok(Err(e)) => {
                self.link.log_trouble(&e.to_string());
                // A key-level answer (TRYAGAIN, CLUSTERDOWN on one slot, ...)
                // says nothing of the connection; a broken connection or a
                // primary turned replica (Sentinel failover) does.
                if !is_broken(&e) {
                    return Err(Failure::Error);
                }
                Failure::Error
            }
            Err(_) => {
                self.link.log_trouble(&format!(
                    "no answer within the {:?} latency budget",
                    self.budget
                ));
                // One slow answer (a busy moment) does not take Redis out of
                // service; a run of them does.
                if self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 < TIMEOUTS_BEFORE_DOWN
                {
                    return Err(Failure::Timeout);
                }
                Failure::Timeout
            }
        };
        // Later decisions go local at once instead of each waiting out the
        // budget; the background task reconnects.
        // Only the connection this decision used: the background task may
        // have installed a new one meanwhile.
        self.link.drop_broken(&used);
        Err(failure)
    }

    /// Keeps the Redis connection until `shutdown` turns true.
    pub async fn maintain(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.link.maintain(shutdown).await;
    }
}
