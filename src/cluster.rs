//! Many nodes as one shop, through the Redis they share: every node
//! registers itself with a heartbeat, and every purge accepted by any node is
//! appended to a Redis Stream that every node applies, in order, resuming
//! after a disconnection from the last entry it applied. A node that finds
//! entries it never read trimmed away (or the stream gone with a Redis
//! restart) empties its cache rather than risk serving what was purged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use pingora_prometheus::prometheus::{Histogram, IntCounterVec, IntGauge};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};

use crate::cache::purge::PurgeRequest;
use crate::cache::shared::{EntryId, PurgeLog, LOG_LENGTH};
use crate::cache::CacheEngine;
use crate::metrics::{self, names};
use crate::redis_link::RedisLink;
use crate::snapshot::SharedSnapshot;

/// The purge stream, the nodes' acknowledgements, the live nodes.
pub const STREAM: &str = "awning:purge";
/// One hash tag: the heartbeat script touches both in one Cluster slot.
pub const ACKS: &str = "awning:{nodes}:acks";
pub const NODES: &str = "awning:{nodes}:live";
/// Entries kept in the stream (approximately): a node away for more purges
/// than this empties its cache when it comes back.
const STREAM_LENGTH: usize = 10_000;
/// How often a node looks for new purges (the fan-out delay).
const POLL_EVERY: Duration = Duration::from_millis(100);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is not counted as live (five
/// heartbeats: one slow Redis answer does not make a node vanish).
const NODE_TTL: Duration = Duration::from_secs(5);
/// Entries read per poll.
const BATCH: usize = 200;

static PURGE_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        pingora_prometheus::prometheus::HistogramOpts::new(
            names::PURGE_LAG,
            "Time from a purge entering the stream to this node applying it.",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
        ]),
    )
    .expect("valid metric");
    let _ = pingora_prometheus::prometheus::register(Box::new(h.clone()));
    h
});

static STREAM_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        names::PURGE_STREAM_EVENTS,
        "Purge stream events on this node: applied (from other nodes), published, publish_failed, skipped (unreadable entries), cache_cleared (entries lost: the cache was emptied).",
        &["event"],
    )
});

static LIVE_NODES: LazyLock<IntGauge> = LazyLock::new(|| {
    metrics::gauge(
        names::CLUSTER_NODES,
        "Nodes that sent a heartbeat to the shared Redis in the last 5 s (0 while Redis is unreachable).",
    )
});

/// Creates the fixed series at zero.
pub fn init_metrics() {
    for e in [
        "applied",
        "published",
        "publish_failed",
        "skipped",
        "cache_cleared",
    ] {
        STREAM_EVENTS.with_label_values(&[e]);
    }
    LazyLock::force(&PURGE_LAG);
    LazyLock::force(&LIVE_NODES);
}

/// Registers the node and returns the ids of the live ones, on Redis's clock.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
-- Nodes gone for ten minutes are forgotten, with their acknowledgements.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 600000)) do
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 600000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
"#;

/// The sender's token and the purge of a stream entry.
fn parse(entry: &StreamId) -> Option<(Option<String>, PurgeRequest)> {
    let body: String = entry.get("purge")?;
    let req = serde_json::from_str::<PurgeRequest>(&body).ok()?;
    Some((entry.get("token"), req))
}

/// How many nodes applied a purge within the wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Acknowledgements {
    /// The purge's stream entry (`None`: it could not be published).
    pub entry: Option<String>,
    /// Live nodes that applied it (this one included).
    pub acknowledged: usize,
    /// Nodes live when the wait ended.
    pub live: usize,
    /// Why other nodes will not see it, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Cluster {
    node_id: String,
    link: Arc<RedisLink>,
    cache: &'static CacheEngine,
    snapshots: SharedSnapshot,
    purge_wait: Duration,
    heartbeat: Script,
    /// The purges seen, for judging shared L2 records.
    log: Arc<PurgeLog>,
    /// The last entry applied; `None` until the stream was first read.
    applied: Mutex<Option<EntryId>>,
    /// `applied` is an entry of the stream (not the start-up position).
    applied_is_entry: AtomicBool,
    live: Mutex<Vec<String>>,
    /// Tells this process's own stream entries apart (node ids may repeat).
    token: String,
    /// When this process started, in ms: purges from then on are applied
    /// even if they came before the first read of the stream.
    started_ms: u64,
    /// Purges applied here that Redis did not take yet, with their log holds.
    unpublished: Mutex<Vec<(PurgeRequest, u64)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Cluster {
    pub fn new(
        node_id: String,
        link: Arc<RedisLink>,
        cache: &'static CacheEngine,
        snapshots: SharedSnapshot,
        purge_wait: Duration,
        log: Arc<PurgeLog>,
    ) -> Self {
        init_metrics();
        Self {
            log,
            node_id,
            link,
            cache,
            snapshots,
            purge_wait,
            heartbeat: Script::new(HEARTBEAT),
            applied: Mutex::new(None),
            applied_is_entry: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            token: uuid::Uuid::new_v4().simple().to_string(),
            started_ms: now_ms(),
            unpublished: Mutex::new(Vec::new()),
        }
    }

    /// Call before applying a purge locally: until it is published, shared
    /// cache records it matches are not served here (they could be taken
    /// back into memory between the local purge and the stream).
    pub fn hold(&self, req: &PurgeRequest) -> u64 {
        let snap = self.snapshots.load();
        self.log.hold(&snap.routes, req, None)
    }

    /// Appends a purge this node applied (and held) to the stream. On
    /// failure it stays held and is published again once Redis answers.
    pub async fn publish(&self, req: &PurgeRequest, hold: u64) -> Result<EntryId, String> {
        let outcome = self.xadd(req).await;
        match &outcome {
            Ok(id) => {
                let snap = self.snapshots.load();
                self.log.record(*id, &snap.routes, req);
                self.log.unhold(hold);
                STREAM_EVENTS.with_label_values(&["published"]).inc();
            }
            Err(e) => {
                STREAM_EVENTS.with_label_values(&["publish_failed"]).inc();
                tracing::warn!(
                    "purge not sent to the other nodes yet (retried while Redis is back): {e}"
                );
                let mut queue = self.unpublished.lock();
                if queue.len() < 10_000 {
                    queue.push((req.clone(), hold));
                }
            }
        }
        outcome
    }

    async fn xadd(&self, req: &PurgeRequest) -> Result<EntryId, String> {
        let Some(used) = self.link.current() else {
            return Err("Redis is unreachable".into());
        };
        let mut conn = (*used).clone();
        let body = serde_json::to_string(req).expect("serialisable");
        let added: redis::RedisResult<String> = tokio::time::timeout(
            crate::redis_link::CONNECT_TIMEOUT,
            redis::cmd("XADD")
                .arg(STREAM)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LENGTH)
                .arg("*")
                .arg("node")
                .arg(&self.node_id)
                .arg("token")
                .arg(&self.token)
                .arg("purge")
                .arg(body)
                .query_async(&mut conn),
        )
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        match added.map(|id| EntryId::parse(&id)) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err("XADD answered an unexpected id".into()),
            Err(e) => {
                if crate::redis_link::is_broken(&e) {
                    self.link.drop_broken(&used);
                }
                Err(e.to_string())
            }
        }
    }

    /// Publishes the purges Redis did not take before.
    async fn republish(&self) {
        let queued = std::mem::take(&mut *self.unpublished.lock());
        for (req, hold) in queued {
            let _ = self.publish(&req, hold).await;
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The live nodes as of the last heartbeat.
    pub fn live_nodes(&self) -> Vec<String> {
        self.live.lock().clone()
    }

    /// The last purge entry this node applied.
    pub fn applied(&self) -> Option<EntryId> {
        *self.applied.lock()
    }

    /// Publishes a purge this node applied (held with [`Cluster::hold`]),
    /// then waits (up to `redis.purge_wait`) until every live node applied it.
    pub async fn fan_out(&self, req: &PurgeRequest, hold: u64) -> Acknowledgements {
        // This node applied it; the others count as they acknowledge.
        let published = self.publish(req, hold).await;
        let mut acks = Acknowledgements {
            entry: published.as_ref().ok().map(EntryId::to_string),
            acknowledged: 1,
            live: self.live.lock().len().max(1),
            error: published.as_ref().err().cloned(),
        };
        let (Ok(entry), Some(used)) = (published, self.link.current()) else {
            return acks;
        };
        let mut conn = (*used).clone();
        let deadline = Instant::now() + self.purge_wait;
        loop {
            let live = self.live.lock().clone();
            let applied: HashMap<String, String> = conn.hgetall(ACKS).await.unwrap_or_default();
            let done = live
                .iter()
                .filter(|n| {
                    **n == self.node_id
                        || applied
                            .get(*n)
                            .and_then(|id| EntryId::parse(id))
                            .is_some_and(|id| id >= entry)
                })
                .count();
            acks.live = live.len().max(1);
            acks.acknowledged = done.max(1);
            if acks.acknowledged >= acks.live || Instant::now() >= deadline {
                return acks;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Heartbeat and purge following, until shutdown.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        // Separate loops: a slow stream read must not delay the heartbeat
        // (other nodes would count this one as gone).
        let beating = async {
            let mut shutdown = shutdown.clone();
            loop {
                self.beat().await;
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        };
        let following = async {
            let mut shutdown = shutdown.clone();
            loop {
                if self.link.is_connected() && !self.unpublished.lock().is_empty() {
                    self.republish().await;
                }
                self.follow().await;
                tokio::select! {
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        };
        tokio::join!(beating, following);
    }

    async fn beat(&self) {
        let Some(used) = self.link.current() else {
            LIVE_NODES.set(0);
            return;
        };
        let mut conn = (*used).clone();
        let mut inv = self.heartbeat.prepare_invoke();
        inv.key(NODES)
            .key(ACKS)
            .arg(&self.node_id)
            .arg(NODE_TTL.as_millis() as u64);
        let answer: redis::RedisResult<Vec<String>> = match tokio::time::timeout(
            crate::redis_link::CONNECT_TIMEOUT,
            inv.invoke_async(&mut conn),
        )
        .await
        {
            Ok(a) => a,
            Err(_) => return,
        };
        match answer {
            Ok(live) => {
                LIVE_NODES.set(live.len() as i64);
                *self.live.lock() = live;
            }
            Err(e) => {
                if crate::redis_link::is_broken(&e) {
                    self.link.drop_broken(&used);
                }
                self.link.log_trouble(&format!("node heartbeat: {e}"));
            }
        }
    }

    /// Reads and applies the purges published since the last one applied.
    async fn follow(&self) {
        let Some(used) = self.link.current() else {
            return;
        };
        let mut conn = (*used).clone();
        let result = tokio::time::timeout(crate::redis_link::CONNECT_TIMEOUT, async {
            let from = match self.applied() {
                // First contact: purges before this node existed are moot
                // (its cache is empty); start after the newest entry.
                None => {
                    self.load_log(&mut conn).await?;
                    // Apply from this process's start (with a margin for
                    // clock skew): warming or an outage at boot may have
                    // filled the cache before this first read.
                    let id = EntryId {
                        ms: self.started_ms.saturating_sub(5_000),
                        seq: 0,
                    };
                    *self.applied.lock() = Some(id);
                    id
                }
                Some(id) => {
                    let from = self.check_for_lost_entries(&mut conn, id).await?;
                    *self.applied.lock() = Some(from);
                    from
                }
            };
            let opts = StreamReadOptions::default().count(BATCH);
            let reply: StreamReadReply = conn
                .xread_options(&[STREAM], &[from.to_string()], &opts)
                .await?;
            let entries: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
            if entries.is_empty() {
                return Ok::<(), redis::RedisError>(());
            }
            let mut last = from;
            for entry in &entries {
                if let Some(id) = EntryId::parse(&entry.id) {
                    self.apply(id, entry);
                    last = last.max(id);
                }
            }
            *self.applied.lock() = Some(last);
            self.applied_is_entry.store(true, Ordering::Relaxed);
            let _: () = conn.hset(ACKS, &self.node_id, last.to_string()).await?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if crate::redis_link::is_broken(&e) {
                    self.link.drop_broken(&used);
                }
                self.link.log_trouble(&format!("purge stream: {e}"));
            }
            Err(_) => self.link.log_trouble("purge stream: no answer in time"),
        }
    }

    /// Whether purges after `applied` may be gone unread: the stream
    /// trims its oldest entries first, so while `applied` is still there
    /// nothing after it was trimmed. It is not when the node was away (or
    /// stopped) for more than the stream holds, or Redis restarted empty;
    /// then the cache is emptied.
    async fn check_for_lost_entries(
        &self,
        conn: &mut crate::redis_link::Conn,
        applied: EntryId,
    ) -> redis::RedisResult<EntryId> {
        let lost = if !self.applied_is_entry.load(Ordering::Relaxed) {
            // Nothing read yet: lost only if the stream overflowed past
            // the point this node reads from.
            let len: usize = conn.xlen(STREAM).await?;
            let oldest: StreamRangeReply = conn.xrange_count(STREAM, "-", "+", 1).await?;
            let oldest = oldest.ids.first().and_then(|e| EntryId::parse(&e.id));
            len >= STREAM_LENGTH && oldest.is_some_and(|o| o > applied)
        } else {
            let at = applied.to_string();
            let still: StreamRangeReply = conn.xrange_count(STREAM, &at, &at, 1).await?;
            still.ids.is_empty()
        };
        if !lost {
            return Ok(applied);
        }
        // Distrust shared records first, then empty memory: nothing may be
        // taken back from Redis under the old, incomplete log meanwhile.
        let newest = self.newest(conn).await?;
        self.log.reset(newest);
        {
            let removed = self.cache.purge_all();
            STREAM_EVENTS.with_label_values(&["cache_cleared"]).inc();
            tracing::warn!(
                applied = %applied,
                removed,
                "purges may have been missed (the stream no longer holds the last one applied): the cache was emptied"
            );
        }
        // Everything in the stream now predates the emptied cache.
        self.applied_is_entry
            .store(newest != EntryId::ZERO, Ordering::Relaxed);
        Ok(newest)
    }

    /// Fills the purge log from the stream as Redis keeps it, so that shared
    /// cache records written before this node started can be judged.
    async fn load_log(&self, conn: &mut crate::redis_link::Conn) -> redis::RedisResult<()> {
        let len: usize = conn.xlen(STREAM).await?;
        let kept: StreamRangeReply = conn.xrange_count(STREAM, "-", "+", LOG_LENGTH).await?;
        let ids: Vec<(EntryId, &StreamId)> = kept
            .ids
            .iter()
            .filter_map(|e| Some((EntryId::parse(&e.id)?, e)))
            .collect();
        // A stream that never overflowed holds every purge ever made.
        let complete_after = match ids.first() {
            Some((first, _)) if len >= STREAM_LENGTH || ids.len() >= LOG_LENGTH => *first,
            _ => EntryId::ZERO,
        };
        self.log.reset(complete_after);
        let snap = self.snapshots.load();
        for (id, entry) in ids {
            match parse(entry) {
                Some((_, req)) => self.log.record(id, &snap.routes, &req),
                None => self.log.advance(id),
            }
        }
        Ok(())
    }

    /// The newest entry in the stream (`0-0` when there is none).
    async fn newest(&self, conn: &mut crate::redis_link::Conn) -> redis::RedisResult<EntryId> {
        let newest: StreamRangeReply = conn.xrevrange_count(STREAM, "+", "-", 1).await?;
        Ok(newest
            .ids
            .first()
            .and_then(|e| EntryId::parse(&e.id))
            .unwrap_or(EntryId::ZERO))
    }

    fn apply(&self, id: EntryId, entry: &StreamId) {
        let node: Option<String> = entry.get("node");
        let Some((token, req)) = parse(entry) else {
            STREAM_EVENTS.with_label_values(&["skipped"]).inc();
            tracing::warn!(entry = %id, "purge stream: an entry that is not a purge was skipped");
            self.log.advance(id);
            return;
        };
        let snap = self.snapshots.load();
        self.log.record(id, &snap.routes, &req);
        if token.as_deref() == Some(self.token.as_str()) {
            return;
        }
        let counts = self.cache.purge(&snap.routes, &req);
        STREAM_EVENTS.with_label_values(&["applied"]).inc();
        PURGE_LAG.observe(now_ms().saturating_sub(id.ms) as f64 / 1000.0);
        tracing::info!(
            entry = %id,
            from = node.as_deref().unwrap_or("?"),
            removed = counts.total(),
            "purge from another node applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_and_order_like_redis() {
        let a = EntryId::parse("1700000000000-0").unwrap();
        let b = EntryId::parse("1700000000000-1").unwrap();
        let c = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "1700000000001-0");
        assert_eq!(EntryId::parse("x-1"), None);
        assert_eq!(EntryId::parse("17"), None);
    }
}
