//! The node's one Redis connection (standalone, Sentinel or Cluster), shared
//! by the shared rate limits and the cluster features (purge fan-out, node
//! heartbeat). A background task connects, checks it every half second and
//! replaces it when it breaks; users that find it broken drop it at once so
//! that later calls fail fast instead of each waiting out a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};
use tokio::sync::Notify;

use crate::config::RedisServers;

/// Time allowed to (re)connect and to answer a health check.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a live connection is checked, and a dead one retried.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Connection trouble is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection to a single Redis (standalone or Sentinel's primary) or to a
/// Cluster, used the same way by commands and scripts.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    async fn ping(&mut self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            // One primary: a plain PING goes to all of them, and one shard
            // failing over must not take the whole link out.
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

/// Whether an error says the connection itself is unusable (rather than one
/// key or command failing).
pub fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

pub struct RedisLink {
    servers: RedisServers,
    /// Loaded on every (re)connect, so their first use is one round trip.
    preload: Vec<Script>,
    conn: ArcSwapOption<Conn>,
    /// Woken by a user that found the connection broken.
    trouble: Notify,
    /// Connections made so far (users reset per-connection state on change).
    connects: AtomicU64,
    epoch: Instant,
    last_logged_ms: AtomicU64,
}

impl RedisLink {
    pub fn new(servers: RedisServers, preload: Vec<Script>) -> Self {
        Self {
            servers,
            preload,
            conn: ArcSwapOption::empty(),
            trouble: Notify::new(),
            connects: AtomicU64::new(0),
            epoch: Instant::now(),
            last_logged_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The live connection, `None` while Redis is unreachable.
    pub fn current(&self) -> Option<Arc<Conn>> {
        self.conn.load_full()
    }

    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Takes `used` out of service (only that one: the background task may
    /// have installed a new connection meanwhile) and wakes the task.
    pub fn drop_broken(&self, used: &Arc<Conn>) {
        self.conn.compare_and_swap(&Some(Arc::clone(used)), None);
        self.trouble.notify_one();
    }

    /// Keeps a connection until `shutdown` turns true.
    pub async fn maintain(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut was_down = false;
        loop {
            match self.conn.load_full() {
                None => match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                    Ok(Ok(conn)) => {
                        self.connects.fetch_add(1, Ordering::Relaxed);
                        self.conn.store(Some(Arc::new(conn)));
                        if was_down {
                            log::warn!("Redis is back: shared limits and cluster features resume");
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
        for script in &self.preload {
            match &mut conn {
                Conn::Single(c) => {
                    script.load_async(c).await?;
                }
                // Each primary needs it; a NOSCRIPT on a slot's node is
                // answered by loading there (invoke_async).
                Conn::Cluster(c) => {
                    let _ = script.load_async(c).await;
                }
            }
        }
        Ok(conn)
    }

    /// Logs Redis trouble at most once per [`LOG_EVERY`]: an outage must not
    /// flood the log with one line per request.
    pub fn log_trouble(&self, what: &str) {
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
                "Redis trouble ({what}); shared limits decide locally and cluster features wait until it recovers"
            );
        }
    }
}
