//! The shared tier: one budget across nodes, decided by one atomic Lua script
//! per request in Redis (standalone, Sentinel or Cluster) over one multiplexed
//! connection. A decision that cannot be made within the latency budget is
//! reported as a failure and the caller falls back; a background task keeps
//! the connection, so Redis coming back needs no restart.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisResult, Script, ScriptInvocation};
use tokio::sync::Notify;

use super::gcra::{Decision, Quota};
use super::lockout::Rule;
use crate::config::{Redis, RedisServers};

/// Time allowed to (re)connect and to answer a health check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a live connection is checked, and a dead one retried.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Decisions in a row that may miss the latency budget before Redis is
/// treated as down until the next health check.
const TIMEOUTS_BEFORE_DOWN: u32 = 3;
/// Connection trouble is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

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

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn eval(&mut self, inv: &ScriptInvocation<'_>) -> RedisResult<Vec<i64>> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    async fn ping(&mut self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            // One primary: a plain PING goes to all of them, and one shard
            // failing over must not take the whole tier out.
            Conn::Cluster(c) => c
                .route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
                .map(drop),
        }
    }
}

pub struct SharedTier {
    servers: RedisServers,
    budget: Duration,
    script: Script,
    /// The live connection; `None` while Redis is unreachable.
    conn: ArcSwapOption<Conn>,
    /// Woken by a decision that found the connection broken.
    trouble: Notify,
    timeouts_in_a_row: AtomicU32,
    epoch: Instant,
    last_logged_ms: AtomicU64,
}

impl SharedTier {
    pub fn new(redis: &Redis) -> Self {
        Self {
            servers: redis.servers.clone(),
            budget: redis.timeout,
            script: Script::new(include_str!("gcra.lua")),
            conn: ArcSwapOption::empty(),
            trouble: Notify::new(),
            timeouts_in_a_row: AtomicU32::new(0),
            epoch: Instant::now(),
            last_logged_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether decisions are being made in Redis right now.
    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
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
        let Some(conn) = self.conn.load_full() else {
            return Err(Failure::Unavailable);
        };
        let used = Some(conn.clone());
        let mut conn = (*conn).clone();
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
        let answer = tokio::time::timeout(self.budget, conn.eval(&inv)).await;
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
                self.log_trouble(&format!("the rate-limit script answered {v:?}"));
                Failure::Error
            }
            Ok(Err(e)) => {
                self.log_trouble(&e.to_string());
                // A key-level answer (TRYAGAIN, CLUSTERDOWN on one slot, ...)
                // says nothing of the connection; a broken connection or a
                // primary turned replica (Sentinel failover) does.
                let broken = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                if !broken {
                    return Err(Failure::Error);
                }
                Failure::Error
            }
            Err(_) => {
                self.log_trouble(&format!(
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
        self.conn.compare_and_swap(&used, None);
        self.trouble.notify_one();
        Err(failure)
    }

    /// Keeps a connection until `shutdown` turns true: connects, checks it
    /// every half second, and replaces it when it breaks.
    pub async fn maintain(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut was_down = false;
        loop {
            match self.conn.load_full() {
                None => match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                    Ok(Ok(conn)) => {
                        self.conn.store(Some(Arc::new(conn)));
                        if was_down {
                            log::warn!(
                                "shared rate limits: Redis is back; deciding in Redis again"
                            );
                        }
                        was_down = false;
                    }
                    Ok(Err(e)) => {
                        was_down = true;
                        self.log_trouble(&format!("cannot connect: {e}"));
                    }
                    Err(_) => {
                        was_down = true;
                        self.log_trouble("cannot connect: timed out");
                    }
                },
                Some(conn) => {
                    let mut conn = (*conn).clone();
                    let sent = Instant::now();
                    let ok = matches!(
                        tokio::time::timeout(CONNECT_TIMEOUT, conn.ping()).await,
                        Ok(Ok(()))
                    );
                    crate::metrics::redis_command("ping", sent.elapsed());
                    if !ok {
                        was_down = true;
                        self.conn.store(None);
                        self.log_trouble("health check failed");
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = self.trouble.notified() => {
                    was_down = true;
                    // Not faster than the regular check: a Redis that accepts
                    // connections but answers slowly must not be hammered.
                    tokio::time::sleep(CHECK_EVERY).await;
                }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = match &self.servers {
            RedisServers::Standalone(url) => Conn::Single(
                redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            RedisServers::Sentinel { master, nodes } => {
                // Asked again on every reconnect, so a failover is followed.
                let mut sentinel = SentinelClient::build(
                    nodes.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                Conn::Single(
                    sentinel
                        .async_get_client()
                        .await?
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            RedisServers::Cluster(nodes) => Conn::Cluster(
                redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(CONNECT_TIMEOUT)
                    .build()?
                    .get_async_connection()
                    .await?,
            ),
        };
        conn.ping().await?;
        // Loaded now so that the first decision is one round trip, not three
        // (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA).
        match &mut conn {
            Conn::Single(c) => {
                self.script.load_async(c).await?;
            }
            Conn::Cluster(c) => {
                // Each primary needs it; a NOSCRIPT on a slot's node is
                // answered by loading there (invoke_async).
                let _ = self.script.load_async(c).await;
            }
        }
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        Ok(conn)
    }

    /// Logs Redis trouble at most once per [`LOG_EVERY`]: an outage must not
    /// flood the log with one line per request.
    fn log_trouble(&self, what: &str) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "shared rate limits: Redis trouble ({what}); deciding locally until it recovers"
            );
        }
    }
}
