//! The shared L2 cache (`cache.shared: redis`): on a local miss the node
//! looks in Redis before going to the origin, and its fills are written
//! there too, so a page fetched by one node serves the others. A short Redis
//! lock makes N nodes missing the same key send one origin request. Redis
//! slow or down means L1 + origin, never an error.
//!
//! Purges cannot reach into Redis by prefix or tag, so an L2 record carries a
//! stamp: the newest purge its writer had applied. A reader takes it only if
//! no purge it knows of since that stamp matches the record; a record older
//! than what the node knows of the purge stream is not taken at all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use pingora::cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora::cache::CacheMeta;
use pingora_prometheus::prometheus::IntCounterVec;
use redis::AsyncCommands;

use super::purge::{prefix_matches, url_primaries, PurgeRequest};
use crate::metrics::{self, names};
use crate::redis_link::{is_broken, RedisLink};
use crate::routes::RouteTable;

/// A purge stream entry id, `MS-SEQ`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Purges remembered to judge L2 records.
pub const LOG_LENGTH: usize = 10_000;

struct Logged {
    id: EntryId,
    primaries: Vec<HashBinary>,
    prefixes: Vec<String>,
    tags: Vec<String>,
}

impl Logged {
    fn of(id: EntryId, routes: &RouteTable, req: &PurgeRequest) -> Logged {
        Logged {
            id,
            primaries: req
                .urls
                .iter()
                .flat_map(|u| url_primaries(routes, u))
                .collect(),
            prefixes: req.prefixes.clone(),
            tags: req.tags.clone(),
        }
    }

    fn matches(&self, primary: &HashBinary, url: &str, tags: &[String]) -> bool {
        self.primaries.contains(primary)
            || self.prefixes.iter().any(|p| prefix_matches(p, url))
            || self.tags.iter().any(|t| tags.contains(t))
    }
}

struct LogState {
    entries: VecDeque<Logged>,
    /// Every purge after this one is in `entries` (`None`: not known yet).
    complete_after: Option<EntryId>,
    /// The newest purge recorded.
    latest: EntryId,
    /// Purges this node applied but could not publish yet (Redis down):
    /// they bar matching records whatever their stamp.
    held: Vec<(u64, Logged)>,
    next_hold: u64,
}

/// What the log says of an L2 record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Serve,
    /// A purge since it was written matches it.
    Purged,
    /// Purges it may predate are not known here.
    Unknown,
}

/// The purges of the shared stream this node has seen, newest last.
pub struct PurgeLog {
    state: Mutex<LogState>,
}

impl Default for PurgeLog {
    fn default() -> Self {
        Self {
            state: Mutex::new(LogState {
                entries: VecDeque::new(),
                complete_after: None,
                latest: EntryId::ZERO,
                held: Vec::new(),
                next_hold: 0,
            }),
        }
    }
}

impl PurgeLog {
    /// Forgets what was recorded: purges after `from` will be (at start, or
    /// after the cache was emptied because purges were lost). Never moves
    /// back past what was already seen (a Redis restored from an older
    /// snapshot must not make older records acceptable again).
    pub fn reset(&self, from: EntryId) {
        let mut s = self.state.lock();
        let from = from.max(s.latest);
        s.entries.clear();
        s.complete_after = Some(from);
        s.latest = from;
    }

    fn push(&self, logged: Logged) {
        let mut s = self.state.lock();
        s.latest = s.latest.max(logged.id);
        s.entries.push_back(logged);
        if s.entries.len() > LOG_LENGTH {
            if let Some(oldest) = s.entries.pop_front() {
                s.complete_after = Some(oldest.id);
            }
        }
    }

    /// Records one purge (any node's).
    pub fn record(&self, id: EntryId, routes: &RouteTable, req: &PurgeRequest) {
        self.push(Logged::of(id, routes, req));
    }

    /// Records the invalidation of one URL (an unsafe request changed it).
    pub fn record_primary(&self, id: EntryId, primary: HashBinary) {
        self.push(Logged {
            id,
            primaries: vec![primary],
            prefixes: Vec::new(),
            tags: Vec::new(),
        });
    }

    /// Notes an entry that is not a purge (nothing to match, but read).
    pub fn advance(&self, id: EntryId) {
        let mut s = self.state.lock();
        s.latest = s.latest.max(id);
    }

    /// Bars records matching a purge not yet published; returns its handle.
    pub fn hold(
        &self,
        routes: &RouteTable,
        req: &PurgeRequest,
        primary: Option<HashBinary>,
    ) -> u64 {
        let mut logged = Logged::of(EntryId::ZERO, routes, req);
        logged.primaries.extend(primary);
        let mut s = self.state.lock();
        s.next_hold += 1;
        let handle = s.next_hold;
        s.held.push((handle, logged));
        handle
    }

    /// The held purge was published (and recorded under its id).
    pub fn unhold(&self, handle: u64) {
        self.state.lock().held.retain(|(h, _)| *h != handle);
    }

    /// The stamp for a record written now: the newest purge recorded
    /// (`None` before the stream was first read).
    pub fn stamp(&self) -> Option<EntryId> {
        let s = self.state.lock();
        s.complete_after.map(|_| s.latest)
    }

    /// Whether a record stamped `stamp` for `url` (under `primary`, tagged
    /// `tags`) may be served: every purge after the stamp is known, and none
    /// of them matches it.
    pub fn judge(
        &self,
        stamp: EntryId,
        primary: &HashBinary,
        url: &str,
        tags: &[String],
    ) -> Judgement {
        let s = self.state.lock();
        if s.held.iter().any(|(_, l)| l.matches(primary, url, tags)) {
            return Judgement::Purged;
        }
        let Some(complete_after) = s.complete_after else {
            return Judgement::Unknown;
        };
        if stamp < complete_after {
            return Judgement::Unknown;
        }
        let purged = s
            .entries
            .iter()
            .rev()
            .take_while(|e| e.id > stamp)
            .any(|e| e.matches(primary, url, tags));
        if purged {
            Judgement::Purged
        } else {
            Judgement::Serve
        }
    }

    pub fn allows(&self, stamp: EntryId, primary: &HashBinary, url: &str, tags: &[String]) -> bool {
        self.judge(stamp, primary, url, tags) == Judgement::Serve
    }
}

static L2_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        names::CACHE_L2_EVENTS,
        "Shared L2 cache events: hit, miss, stale (purged since written), unknown (older than the purges this node knows), corrupt, error (Redis failed or slow), stored, waited (another node filled it), lock_timeout.",
        &["event"],
    )
});

pub fn init_metrics() {
    for e in [
        "hit",
        "miss",
        "stale",
        "unknown",
        "corrupt",
        "error",
        "stored",
        "waited",
        "lock_timeout",
    ] {
        L2_EVENTS.with_label_values(&[e]);
    }
}

fn event(e: &str) {
    L2_EVENTS.with_label_values(&[e]).inc();
}

/// One response as stored in Redis.
pub struct Record {
    pub stamp: EntryId,
    pub url: String,
    pub tags: Vec<String>,
    pub meta: CacheMeta,
    pub body: Bytes,
}

const FORMAT: u8 = 1;
const PLAIN: u8 = 0;
const BROTLI: u8 = 1;
/// Bodies smaller than this are stored as they are.
const COMPRESS_FROM: usize = 1024;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn take_u32(input: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(input, 4)?.try_into().ok()?))
}

fn take_u64(input: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(input, 8)?.try_into().ok()?))
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_u32(input)? as usize;
    take(input, n)
}

impl Record {
    /// The record's bytes; the body is compressed when that saves a tenth.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (internal, header) = self.meta.serialize().ok()?;
        let mut out = Vec::with_capacity(self.body.len() + internal.len() + header.len() + 64);
        out.push(FORMAT);
        out.extend_from_slice(&self.stamp.ms.to_le_bytes());
        out.extend_from_slice(&self.stamp.seq.to_le_bytes());
        put_bytes(&mut out, self.url.as_bytes());
        out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        for t in &self.tags {
            put_bytes(&mut out, t.as_bytes());
        }
        put_bytes(&mut out, &internal);
        put_bytes(&mut out, &header);
        let compressed = (self.body.len() >= COMPRESS_FROM)
            .then(|| {
                let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 3, 20);
                w.write_all(&self.body).ok()?;
                Some(w.into_inner())
            })
            .flatten()
            .filter(|c| c.len() < self.body.len() / 10 * 9);
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        match compressed {
            Some(c) => {
                out.push(BROTLI);
                put_bytes(&mut out, &c);
            }
            None => {
                out.push(PLAIN);
                put_bytes(&mut out, &self.body);
            }
        }
        // Anything cut short or altered in Redis is refused, not served.
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Some(out)
    }

    /// Reads a record; `None` for anything that is not one (corrupted,
    /// truncated, another format, a body larger than `max_body`).
    pub fn decode(input: &[u8], max_body: usize) -> Option<Record> {
        let (content, sum) = input.split_at_checked(input.len().checked_sub(8)?)?;
        if xxhash_rust::xxh3::xxh3_64(content).to_le_bytes() != sum {
            return None;
        }
        let mut content = content;
        let input = &mut content;
        if take(input, 1)? != [FORMAT] {
            return None;
        }
        let stamp = EntryId {
            ms: take_u64(input)?,
            seq: take_u64(input)?,
        };
        let url = String::from_utf8(take_bytes(input)?.to_vec()).ok()?;
        let n = take_u32(input)? as usize;
        if n > 1024 {
            return None;
        }
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            tags.push(String::from_utf8(take_bytes(input)?.to_vec()).ok()?);
        }
        let internal = take_bytes(input)?;
        let header = take_bytes(input)?;
        let meta = CacheMeta::deserialize(internal, header).ok()?;
        let len = take_u64(input)? as usize;
        if len > max_body {
            return None;
        }
        let body = match take(input, 1)? {
            [PLAIN] => Bytes::copy_from_slice(take_bytes(input)?),
            [BROTLI] => {
                let compressed = take_bytes(input)?;
                let mut out = Vec::with_capacity(len);
                brotli::Decompressor::new(compressed, 4096)
                    .take(len as u64 + 1)
                    .read_to_end(&mut out)
                    .ok()?;
                Bytes::from(out)
            }
            _ => return None,
        };
        (body.len() == len && input.is_empty()).then_some(Record {
            stamp,
            url,
            tags,
            meta,
            body,
        })
    }
}

/// How long a node waits for another node's fill of the same key (as long
/// as Pingora's local cache lock waits).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a fill lock lives if its holder never finishes (a crash).
const LOCK_TTL: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// The lock value telling waiters that the filler's answer could not be
/// shared: each of them goes to the origin now.
const GO_TO_ORIGIN: &str = "origin";

/// Deletes (or marks) a lock only while it still holds this node's token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 0
"#;

/// The L2 tier. Records live at `awning:l2:{KEY}`, fill locks at
/// `awning:l2:{KEY}:lock` (one Cluster slot for both).
pub struct SharedCache {
    link: Arc<RedisLink>,
    log: Arc<PurgeLog>,
    /// This process's lock value (unique even if node ids are not).
    token: String,
    /// Latency budget of one Redis call on the request path.
    budget: Duration,
    max_object: usize,
    release_script: redis::Script,
    /// Fill locks this node holds.
    held: Mutex<HashSet<HashBinary>>,
    /// Keys whose record is being written (the write releases the lock).
    writing: Mutex<HashSet<HashBinary>>,
    /// The stamp at the moment a key missed: the fill reflects purges up to
    /// there (a purge applied during the fetch must still win). The oldest
    /// stamp wins when several requests miss the same key.
    pending: Mutex<HashMap<HashBinary, EntryId>>,
}

pub fn record_key(key: &HashBinary) -> String {
    use std::fmt::Write;
    let mut name = String::with_capacity(48);
    name.push_str("awning:l2:{");
    for b in key {
        let _ = write!(name, "{b:02x}");
    }
    name.push('}');
    name
}

fn lock_key(key: &HashBinary) -> String {
    format!("{}:lock", record_key(key))
}

/// Keys missed at once, at most (the map is emptied beyond: fills then
/// have no stamp and are not shared, never wrongly stamped).
const PENDING_BOUND: usize = 100_000;

impl SharedCache {
    pub fn new(
        link: Arc<RedisLink>,
        log: Arc<PurgeLog>,
        budget: Duration,
        max_object: usize,
    ) -> Self {
        init_metrics();
        Self {
            link,
            log,
            token: uuid::Uuid::new_v4().simple().to_string(),
            budget,
            max_object,
            release_script: redis::Script::new(RELEASE),
            held: Mutex::new(HashSet::new()),
            writing: Mutex::new(HashSet::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    async fn call<T>(
        &self,
        f: impl AsyncFnOnce(&mut crate::redis_link::Conn) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let used = self.link.current()?;
        let mut conn = (*used).clone();
        match tokio::time::timeout(self.budget, f(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                if is_broken(&e) {
                    self.link.drop_broken(&used);
                }
                self.link.log_trouble(&format!("shared cache: {e}"));
                event("error");
                None
            }
            Err(_) => {
                event("error");
                None
            }
        }
    }

    /// A key missed (or was found expired) locally: its fill will carry the
    /// stamp of now.
    pub fn note_miss(&self, key: &HashBinary) {
        let Some(stamp) = self.log.stamp() else {
            return;
        };
        let mut pending = self.pending.lock();
        if pending.len() >= PENDING_BOUND {
            pending.clear();
        }
        pending.entry(*key).or_insert(stamp);
    }

    /// The record for `key` if Redis has a usable one. Corrupt and purged
    /// records are deleted; records this node cannot judge are left alone.
    async fn fetch(&self, key: &CacheKey) -> Option<Record> {
        let name = record_key(&key.combined_bin());
        let bytes: Option<Vec<u8>> = self.call(async |c| c.get(&name).await).await?;
        let bytes = bytes?;
        let Some(record) = Record::decode(&bytes, self.max_object) else {
            event("corrupt");
            tracing::warn!(key = %name, "shared cache: an unreadable record was deleted");
            let _ = self.call(async |c| c.del::<_, ()>(&name).await).await;
            return None;
        };
        match self
            .log
            .judge(record.stamp, &key.primary_bin(), &record.url, &record.tags)
        {
            Judgement::Serve => Some(record),
            Judgement::Purged => {
                event("stale");
                let _ = self.call(async |c| c.del::<_, ()>(&name).await).await;
                None
            }
            Judgement::Unknown => {
                event("unknown");
                None
            }
        }
    }

    /// A local miss: the record from Redis, or, when another node is filling
    /// the key, the record it writes (within [`LOCK_WAIT`]). `None`: this
    /// request goes to the origin (and holds the fill lock when it got it).
    /// `l1` looks in the local store again while waiting (another request of
    /// this node may fill it first).
    pub async fn lookup<T>(
        &self,
        key: &CacheKey,
        l1: impl Fn() -> Option<T>,
        adopt: impl Fn(Record) -> Option<T>,
    ) -> Option<T> {
        let bin = key.combined_bin();
        self.note_miss(&bin);
        if let Some(r) = self.fetch(key).await {
            event("hit");
            self.pending.lock().remove(&bin);
            return adopt(r);
        }
        let name = record_key(&bin);
        let lock = lock_key(&bin);
        // Redis unusable: straight to the origin, no waiting.
        if self.try_lock(&bin).await? {
            event("miss");
            return None;
        }
        let deadline = Instant::now() + LOCK_WAIT;
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if let Some(hit) = l1() {
                return Some(hit);
            }
            let (has_record, holder): (bool, Option<String>) = self
                .call(async |c| redis::pipe().exists(&name).get(&lock).query_async(c).await)
                .await?;
            if has_record {
                if let Some(r) = self.fetch(key).await {
                    event("waited");
                    self.pending.lock().remove(&bin);
                    return adopt(r);
                }
            }
            match holder.as_deref() {
                // The filler's answer cannot be shared: everyone fetches.
                Some(GO_TO_ORIGIN) => {
                    event("miss");
                    return None;
                }
                Some(_) => {}
                // The filler gave up or crashed: this request fills,
                // unless another got there first.
                None => {
                    if self.try_lock(&bin).await? {
                        event("miss");
                        return None;
                    }
                }
            }
        }
        event("lock_timeout");
        None
    }

    /// Takes the fill lock: `Some(true)` taken, `Some(false)` another
    /// request holds it, `None` Redis did not answer.
    async fn try_lock(&self, key: &HashBinary) -> Option<bool> {
        let lock = lock_key(key);
        let got: Option<String> = self
            .call(async |c| {
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL.as_millis() as u64)
                    .query_async(c)
                    .await
            })
            .await?;
        let got = got.is_some();
        if got {
            self.held.lock().insert(*key);
        }
        Some(got)
    }

    /// Whether the record of `key` is being written (the write ends the fill).
    pub fn writing(&self, key: &HashBinary) -> bool {
        self.writing.lock().contains(key)
    }

    /// Ends this node's fill of `key` without a record (the answer could not
    /// be shared, or the fetch failed): waiting nodes go to the origin
    /// instead of waiting out the lock.
    pub async fn release(&self, key: &HashBinary) {
        self.pending.lock().remove(key);
        if self.held.lock().remove(key) {
            self.unlock(key, GO_TO_ORIGIN).await;
        }
    }

    async fn unlock(&self, key: &HashBinary, mark: &str) {
        let lock = lock_key(key);
        let mut inv = self.release_script.prepare_invoke();
        inv.key(&lock)
            .arg(&self.token)
            .arg(mark)
            .arg(LOCK_TTL.as_millis() as u64);
        let _ = self
            .call(async |c| inv.invoke_async::<redis::Value>(c).await)
            .await;
    }

    /// Marks the record of `key` as being written (before the write task starts).
    pub fn begin_write(&self, key: &HashBinary) {
        self.writing.lock().insert(*key);
    }

    /// Writes a fill to Redis for its freshness plus stale windows, then
    /// releases the fill lock. Runs after the response is stored locally.
    /// A fill without a miss stamp (a request that did not miss here) is
    /// not shared: its stamp would not be known to be early enough.
    pub async fn store(
        &self,
        key: HashBinary,
        primary: HashBinary,
        url: String,
        tags: Vec<String>,
        meta: CacheMeta,
        body: Bytes,
    ) {
        let stamp = self.pending.lock().remove(&key);
        let name = record_key(&key);
        if let (Some(stamp), Some(ttl)) = (stamp, ttl_of(&meta)) {
            // A purge recorded since the miss would make it stale at once.
            if body.len() <= self.max_object && self.log.allows(stamp, &primary, &url, &tags) {
                let record = Record {
                    stamp,
                    url,
                    tags,
                    meta,
                    body,
                };
                // Compression is CPU work: off the request threads.
                let bytes = tokio::task::spawn_blocking(move || record.encode())
                    .await
                    .ok()
                    .flatten();
                if let Some(bytes) = bytes {
                    let ms = ttl.as_millis().max(1) as u64;
                    if self
                        .call(async |c| c.pset_ex::<_, _, ()>(&name, bytes, ms).await)
                        .await
                        .is_some()
                    {
                        event("stored");
                    }
                }
            }
        }
        self.writing.lock().remove(&key);
        if self.held.lock().remove(&key) {
            // Written or not, the waiters look again (and fetch themselves
            // when no record came).
            self.unlock(&key, "").await;
        }
    }
}

/// How long a record is worth keeping: freshness left plus the longer stale window.
fn ttl_of(meta: &CacheMeta) -> Option<Duration> {
    let fresh = meta
        .fresh_until()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let stale = Duration::from_secs(u64::from(
        meta.stale_while_revalidate_sec()
            .max(meta.stale_if_error_sec()),
    ));
    let ttl = fresh + stale;
    (ttl >= Duration::from_secs(1)).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    fn meta() -> CacheMeta {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "text/html").unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 10, 0, h)
    }

    #[test]
    fn records_round_trip_compressed_or_not_and_garbage_is_refused() {
        for body in [
            Bytes::from_static(b"small"),
            Bytes::from(vec![b'x'; 100_000]),
        ] {
            let r = Record {
                stamp: EntryId { ms: 5, seq: 1 },
                url: "http://shop.test/p".into(),
                tags: vec!["product-1".into()],
                meta: meta(),
                body: body.clone(),
            };
            let bytes = r.encode().unwrap();
            if body.len() > COMPRESS_FROM {
                assert!(bytes.len() < 2000, "compressed: {}", bytes.len());
            }
            let back = Record::decode(&bytes, 1 << 20).unwrap();
            assert_eq!(back.body, body);
            assert_eq!(
                (back.stamp, back.url.as_str()),
                (r.stamp, "http://shop.test/p")
            );
            assert_eq!(back.tags, r.tags);
            assert_eq!(back.meta.response_header().status, 200);
            assert!(Record::decode(&bytes, 4).is_none(), "oversized refused");
            assert!(
                Record::decode(&bytes[..bytes.len() - 1], 1 << 20).is_none(),
                "truncated"
            );
            let mut flipped = bytes.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 1;
            assert!(Record::decode(&flipped, 1 << 20).is_none(), "altered");
        }
        assert!(Record::decode(b"", 100).is_none());
        assert!(Record::decode(b"\x02garbage", 100).is_none());
        assert!(Record::decode(&[1; 40], 100).is_none());
    }

    #[test]
    fn record_keys_put_a_record_and_its_lock_in_one_cluster_slot() {
        let key = [0xab; 16];
        assert_eq!(
            record_key(&key),
            format!("awning:l2:{{{}}}", "ab".repeat(16))
        );
        assert_eq!(lock_key(&key), format!("{}:lock", record_key(&key)));
    }

    #[test]
    fn the_log_refuses_records_a_later_purge_matches_or_it_cannot_judge() {
        let log = PurgeLog::default();
        let primary = [7u8; 16];
        let url = "http://shop.test/api/products/1";
        assert!(
            !log.allows(EntryId::ZERO, &primary, url, &[]),
            "nothing known yet"
        );
        log.reset(EntryId { ms: 100, seq: 0 });
        assert!(log.allows(EntryId { ms: 100, seq: 0 }, &primary, url, &[]));
        assert!(
            !log.allows(EntryId { ms: 99, seq: 0 }, &primary, url, &[]),
            "older than what is known"
        );
        let routes = RouteTable::new(Vec::new());
        log.record(
            EntryId { ms: 200, seq: 0 },
            &routes,
            &PurgeRequest {
                prefixes: vec!["shop.test/api/".into()],
                ..Default::default()
            },
        );
        assert_eq!(log.stamp(), Some(EntryId { ms: 200, seq: 0 }));
        assert!(
            !log.allows(EntryId { ms: 100, seq: 0 }, &primary, url, &[]),
            "purged since"
        );
        assert!(
            log.allows(EntryId { ms: 200, seq: 0 }, &primary, url, &[]),
            "written after the purge"
        );
        assert!(log.allows(
            EntryId { ms: 100, seq: 0 },
            &primary,
            "http://shop.test/about",
            &[]
        ));
        log.record(
            EntryId { ms: 300, seq: 0 },
            &routes,
            &PurgeRequest {
                tags: vec!["product-1".into()],
                ..Default::default()
            },
        );
        assert!(!log.allows(
            EntryId { ms: 250, seq: 0 },
            &primary,
            "http://x/y",
            &["product-1".into()]
        ));
        assert!(log.allows(
            EntryId { ms: 250, seq: 0 },
            &primary,
            "http://x/y",
            &["product-2".into()]
        ));

        // A purge applied here but not yet published bars matching records
        // whatever their stamp, until it is.
        let held = log.hold(
            &routes,
            &PurgeRequest {
                prefixes: vec!["shop.test/sale/".into()],
                ..Default::default()
            },
            None,
        );
        let sale = "http://shop.test/sale/1";
        let at = EntryId { ms: 300, seq: 0 };
        assert_eq!(log.judge(at, &primary, sale, &[]), Judgement::Purged);
        log.unhold(held);
        assert_eq!(log.judge(at, &primary, sale, &[]), Judgement::Serve);
        // Reset never lowers the floor below what was already seen.
        log.reset(EntryId { ms: 10, seq: 0 });
        let before = EntryId { ms: 250, seq: 0 };
        assert_eq!(log.judge(before, &primary, sale, &[]), Judgement::Unknown);
    }
}
