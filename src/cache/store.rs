//! awning's cache storage: a sharded in-memory map of complete responses.
//!
//! - Bounded: every entry is charged its body, its headers and a fixed overhead;
//!   pingora's LRU eviction manager (given the same weight) picks what goes.
//! - Zero-copy hits: bodies are `Bytes`, a hit clones a reference.
//! - Metadata stays decoded: a hit clones the `CacheMeta`, it never deserialises.
//! - A write is visible only when `finish` is called with the whole body; a
//!   miss handler dropped early (upstream aborted, body truncated) stores nothing.
//! - Each write gets an entry id, so an eviction aimed at an old entry never
//!   removes a newer one stored under the same key.
//! - With a shared L2 attached (`shared.rs`), a local miss looks in Redis,
//!   and finished fills are written there too.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use pingora::cache::eviction::{CacheEntryId, EvictionManager};
use pingora::cache::key::{CacheHashKey, CacheKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheEntryKey, CacheEntryKeyRef};
use pingora::cache::{CacheMeta, Storage};
use pingora::{Error, ErrorType, Result};
use pingora_prometheus::prometheus::IntGauge;

use crate::metrics::{self, names};

const SHARDS: usize = 32;
/// Bookkeeping charged per entry on top of body and headers.
pub const ENTRY_OVERHEAD: usize = 256;

/// One stored response.
pub struct Entry {
    pub meta: CacheMeta,
    pub body: Bytes,
    pub id: u64,
    /// The primary key (normalised URL) it was stored under.
    pub url: Arc<str>,
    pub primary: HashBinary,
    /// The key as the eviction manager knows it.
    pub compact: CompactCacheKey,
    /// Tags from the configured tag headers, for purge by tag.
    pub tags: Vec<String>,
    pub weight: usize,
}

fn header_weight(meta: &CacheMeta) -> usize {
    meta.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 32
}

/// Weight charged against `cache.memory` for a response.
pub fn weight_of(meta: &CacheMeta, body_len: usize) -> usize {
    body_len + header_weight(meta) + ENTRY_OVERHEAD
}

type Shard = RwLock<HashMap<HashBinary, Arc<Entry>>>;
/// Primary key -> the slots of its variants.
type VariantShard = RwLock<HashMap<HashBinary, HashSet<HashBinary>>>;

/// The in-memory cache store.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    /// Which slots hold a URL's variants, so invalidating a URL touches only them.
    variants: Box<[VariantShard]>,
    /// Told about entries replaced by a newer fill, which Pingora does not report.
    eviction: Option<&'static (dyn EvictionManager + Sync)>,
    next_id: AtomicU64,
    stored_bytes: IntGauge,
    stored_objects: IntGauge,
    max_object: usize,
    /// Response headers whose whitespace/comma separated values are purge tags.
    tag_headers: Vec<http::HeaderName>,
    /// Called with each finished body before it becomes visible (ETag synthesis).
    finalize: fn(&mut CacheMeta, &Bytes),
    /// The shared L2, when `cache.shared: redis`.
    l2: OnceLock<Arc<super::shared::SharedCache>>,
}

impl MemoryStore {
    pub fn new(
        max_object: usize,
        tag_headers: Vec<http::HeaderName>,
        finalize: fn(&mut CacheMeta, &Bytes),
        eviction: Option<&'static (dyn EvictionManager + Sync)>,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            variants: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            eviction,
            next_id: AtomicU64::new(1),
            stored_bytes: metrics::gauge(
                names::CACHE_STORED_BYTES,
                "Bytes charged to the cache (bodies, headers, overhead)",
            ),
            stored_objects: metrics::gauge(names::CACHE_STORED_OBJECTS, "Objects in the cache"),
            max_object,
            tag_headers,
            finalize,
            l2: OnceLock::new(),
        }
    }

    /// Puts the shared L2 behind this store (once, at start).
    pub fn attach_l2(&self, l2: Arc<super::shared::SharedCache>) {
        let _ = self.l2.set(l2);
    }

    pub fn l2(&self) -> Option<&Arc<super::shared::SharedCache>> {
        self.l2.get()
    }

    fn lookup_local(&self, key: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
        let entry = self.get(&key.combined_bin())?;
        let meta = clone_meta(&entry.meta);
        let hit = MemoryHit {
            body: entry.body.clone(),
            range: 0..entry.body.len(),
            done: false,
            weight: entry.weight,
            id: entry.id,
        };
        Some((meta, Box::new(hit)))
    }

    /// Stores a response fetched from the L2 as if this node had filled it
    /// (charged, admitted to the eviction order), and answers from it.
    fn adopt(
        &self,
        key: &CacheKey,
        record: super::shared::Record,
    ) -> Option<(CacheMeta, HitHandler)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weight = weight_of(&record.meta, record.body.len());
        let compact = key.to_compact();
        let fresh_until = record.meta.fresh_until();
        self.insert(
            key.combined_bin(),
            Entry {
                meta: record.meta,
                body: record.body,
                id,
                url: Arc::from(record.url),
                primary: key.primary_bin(),
                compact: compact.clone(),
                tags: record.tags,
                weight,
            },
        );
        if let Some(eviction) = self.eviction {
            let admitted = CacheEntryKey::from_entry_id(compact, Some(CacheEntryId::new(id)));
            for evicted in eviction.admit(admitted, weight, fresh_until) {
                self.remove(
                    &evicted.key().combined_bin(),
                    evicted.entry_id().map(|i| i.get()),
                );
            }
        }
        self.lookup_local(key)
    }

    fn shard(&self, key: &HashBinary) -> &Shard {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// Bytes currently charged (bodies, headers, overhead).
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.get().max(0) as u64
    }

    pub fn stored_objects(&self) -> u64 {
        self.stored_objects.get().max(0) as u64
    }

    pub fn get(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.shard(key).read().get(key).cloned()
    }

    fn variant_shard(&self, primary: &HashBinary) -> &VariantShard {
        &self.variants[primary[0] as usize % SHARDS]
    }

    /// The slots holding variants of `primary`.
    pub fn slots_of(&self, primary: &HashBinary) -> Vec<HashBinary> {
        self.variant_shard(primary)
            .read()
            .get(primary)
            .map(|slots| slots.iter().copied().collect())
            .unwrap_or_default()
    }

    fn insert(&self, key: HashBinary, entry: Entry) {
        let weight = entry.weight as i64;
        let primary = entry.primary;
        let id = entry.id;
        let old = {
            // The index changes under the slot's lock, so it never lags the slot.
            let mut shard = self.shard(&key).write();
            let old = shard.insert(key, Arc::new(entry));
            let mut index = self.variant_shard(&primary).write();
            index.entry(primary).or_default().insert(key);
            old
        };
        self.stored_bytes.add(weight);
        match old {
            Some(old) => {
                self.stored_bytes.sub(old.weight as i64);
                if old.id != id {
                    if let Some(eviction) = self.eviction {
                        eviction.remove(CacheEntryKeyRef::from_entry_id(
                            &old.compact,
                            Some(CacheEntryId::new(old.id)),
                        ));
                    }
                }
            }
            None => self.stored_objects.inc(),
        }
    }

    /// Removes `key` if it holds entry `id` (any entry when `id` is `None`).
    pub fn remove(&self, key: &HashBinary, id: Option<u64>) -> Option<Arc<Entry>> {
        let mut shard = self.shard(key).write();
        match (shard.get(key), id) {
            (Some(e), Some(id)) if e.id != id => return None,
            (None, _) => return None,
            _ => {}
        }
        let removed = shard.remove(key)?;
        {
            let mut index = self.variant_shard(&removed.primary).write();
            if let Some(slots) = index.get_mut(&removed.primary) {
                slots.remove(key);
                if slots.is_empty() {
                    index.remove(&removed.primary);
                }
            }
        }
        drop(shard);
        self.stored_bytes.sub(removed.weight as i64);
        self.stored_objects.dec();
        Some(removed)
    }

    /// Every entry `pred` selects, with its slot (a scan; used by admin purges).
    pub fn select(&self, pred: impl Fn(&Entry) -> bool) -> Vec<(HashBinary, Arc<Entry>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (k, e) in shard.read().iter() {
                if pred(e) {
                    out.push((*k, e.clone()));
                }
            }
        }
        out
    }

    /// Marks entry `key` stale now (soft purge), keeping it for revalidation.
    pub fn expire_entry(&self, key: &HashBinary) -> bool {
        let mut shard = self.shard(key).write();
        let Some(e) = shard.get(key) else {
            return false;
        };
        let mut meta = clone_meta(&e.meta);
        meta.expire_at(SystemTime::now());
        let entry = Entry {
            meta,
            body: e.body.clone(),
            id: e.id,
            url: e.url.clone(),
            primary: e.primary,
            compact: e.compact.clone(),
            tags: e.tags.clone(),
            weight: e.weight,
        };
        shard.insert(*key, Arc::new(entry));
        true
    }

    fn tags_of(&self, meta: &CacheMeta) -> Vec<String> {
        let mut tags = Vec::new();
        for name in &self.tag_headers {
            for v in meta.headers().get_all(name) {
                if let Ok(s) = v.to_str() {
                    tags.extend(
                        s.split([' ', ','])
                            .filter(|t| !t.is_empty())
                            .map(str::to_string),
                    );
                }
            }
        }
        tags
    }
}

/// `CacheMeta` has no `Clone`; rebuild it from its parts (no serialisation).
/// `updated` cannot be set directly, so the copy's creation time is the last
/// validation time: what `Age` is measured from.
pub fn clone_meta(meta: &CacheMeta) -> CacheMeta {
    let mut m = CacheMeta::new(
        meta.fresh_until(),
        meta.updated(),
        meta.stale_while_revalidate_sec(),
        meta.stale_if_error_sec(),
        meta.response_header_copy(),
    );
    if let Some(v) = meta.variance() {
        m.set_variance(v);
    }
    if let Some(epoch) = meta.epoch_override() {
        m.set_epoch_override(epoch);
    }
    m
}

fn target_id(target: &PurgeTarget<'_>) -> (HashBinary, Option<u64>) {
    match target {
        PurgeTarget::Active(key) => (key.combined_bin(), None),
        PurgeTarget::Exact(entry) => (
            entry.key().combined_bin(),
            entry.entry_id().map(|i| i.get()),
        ),
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some(hit) = self.lookup_local(key) {
            // An expired copy is refetched: that fill is stamped now.
            if let Some(l2) = self.l2.get() {
                if !hit.0.is_fresh(SystemTime::now()) {
                    l2.note_miss(&key.combined_bin());
                }
            }
            return Ok(Some(hit));
        }
        let Some(l2) = self.l2.get() else {
            return Ok(None);
        };
        Ok(l2
            .lookup(key, || self.lookup_local(key), |r| self.adopt(key, r))
            .await)
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            store: self,
            key: key.combined_bin(),
            primary: key.primary_bin(),
            url: Arc::from(key.primary_key_str().unwrap_or_default()),
            compact: key.to_compact(),
            meta: clone_meta(meta),
            body: BytesMut::new(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _kind: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let (key, id) = target_id(&target);
        Ok(match self.remove(&key, id) {
            Some(e) => PurgeOutcome::Purged(Some(CacheEntryId::new(e.id))),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let (key, _) = target_id(&target);
        Ok(if self.expire_entry(&key) {
            PurgeOutcome::Expired
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let bin = key.combined_bin();
        let mut shard = self.shard(&bin).write();
        // The entry may have been evicted or purged since the stale lookup.
        let Some(old) = shard.get(&bin) else {
            return Ok(false);
        };
        let entry = Entry {
            meta: clone_meta(meta),
            body: old.body.clone(),
            id: old.id,
            url: old.url.clone(),
            primary: old.primary,
            compact: old.compact.clone(),
            tags: self.tags_of(meta),
            weight: old.weight,
        };
        shard.insert(bin, Arc::new(entry));
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

struct MemoryHit {
    /// The whole stored body; seeks select from it, never from a previous seek.
    body: Bytes,
    range: std::ops::Range<usize>,
    done: bool,
    weight: usize,
    id: u64,
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.clone())))
    }

    async fn finish(
        self: Box<Self>,
        _s: &'static (dyn Storage + Sync),
        _k: &CacheKey,
        _t: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.unwrap_or(len).min(len);
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek beyond the body");
        }
        self.range = start..end;
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn entry_id(&self) -> Option<CacheEntryId> {
        Some(CacheEntryId::new(self.id))
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct MemoryMiss {
    store: &'static MemoryStore,
    key: HashBinary,
    primary: HashBinary,
    url: Arc<str>,
    compact: CompactCacheKey,
    meta: CacheMeta,
    body: BytesMut,
    id: u64,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.store.max_object {
            return Error::e_explain(
                ErrorType::InternalError,
                "object larger than cache.max_object",
            );
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let MemoryMiss {
            store,
            key,
            primary,
            url,
            compact,
            mut meta,
            body,
            id,
        } = *self;
        let body = body.freeze();
        (store.finalize)(&mut meta, &body);
        let weight = weight_of(&meta, body.len());
        let tags = store.tags_of(&meta);
        if let Some(l2) = store.l2.get() {
            l2.begin_write(&key);
            let (l2, meta, body, tags, url) = (
                Arc::clone(l2),
                clone_meta(&meta),
                body.clone(),
                tags.clone(),
                url.to_string(),
            );
            tokio::spawn(async move { l2.store(key, primary, url, tags, meta, body).await });
        }
        store.insert(
            key,
            Entry {
                meta,
                body,
                id,
                url,
                primary,
                compact,
                tags,
                weight,
            },
        );
        Ok(MissFinishType::Created(weight))
    }

    fn entry_id(&self) -> Option<CacheEntryId> {
        Some(CacheEntryId::new(self.id))
    }
}
