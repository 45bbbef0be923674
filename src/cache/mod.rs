//! HTTP caching: the store, keys, the storing policy, `Cache-Status`, purge.
//! The proxy phases call the functions here; none of them touch Pingora's
//! session beyond what they are handed.

pub mod key;
pub mod policy;
pub mod purge;
pub mod shared;
pub mod status;
pub mod store;
pub mod warm;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora::cache::eviction::lru;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{CacheMeta, CacheOptionOverrides};

use crate::config::Cache as CacheConfig;
use crate::headers::values;
pub use store::MemoryStore;

/// How long a request filling the cache may hold the key's lock before the
/// waiters compete again.
pub const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits on another's fill before going to the origin itself.
pub const LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest freshness awning stores (also the longest duration config accepts).
pub const MAX_FRESHNESS: Duration = Duration::from_secs(10 * 366 * 86400);

/// Process-lifetime cache parts (Pingora wants them `'static`).
pub struct CacheEngine {
    pub store: &'static MemoryStore,
    pub eviction: &'static lru::Manager<16>,
    pub lock: &'static CacheKeyLockImpl,
    pub max_object: usize,
    pub capacity: u64,
}

impl CacheEngine {
    /// Builds the engine once per process; its size cannot change on reload.
    pub fn new(cfg: &CacheConfig) -> &'static CacheEngine {
        let eviction: &'static lru::Manager<16> = Box::leak(Box::new(lru::Manager::with_capacity(
            cfg.memory as usize,
            8192,
        )));
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(
            cfg.max_object as usize,
            cfg.tag_headers.clone(),
            synthesize_etag,
            Some(eviction),
        )));
        let lock: &'static CacheLock = Box::leak(CacheLock::new_boxed(LOCK_AGE_TIMEOUT));
        crate::metrics::gauge(
            crate::metrics::names::CACHE_CAPACITY_BYTES,
            "The cache's bound, cache.memory",
        )
        .set(cfg.memory as i64);
        Box::leak(Box::new(CacheEngine {
            store,
            eviction,
            lock,
            max_object: cfg.max_object as usize,
            capacity: cfg.memory,
        }))
    }

    pub fn options() -> CacheOptionOverrides {
        let mut o = CacheOptionOverrides::default();
        o.wait_timeout = Some(LOCK_WAIT_TIMEOUT);
        o
    }

    pub fn evicted_bytes(&self) -> u64 {
        self.eviction.evicted_size() as u64
    }
}

/// Whether a request may use the cache at all, or why not.
pub fn admit_request(
    policy: &crate::config::RouteCache,
    req: &pingora::http::RequestHeader,
) -> Result<(), &'static str> {
    if policy.mode == crate::config::CacheMode::Bypass {
        return Err("route");
    }
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return Err("method");
    }
    if policy
        .bypass_cookies
        .iter()
        .any(|c| values::cookie_value(&req.headers, c).is_some())
    {
        return Err("bypass-cookie");
    }
    // A key cookie sent twice: the key would take one value and the origin
    // may read the other.
    if policy
        .key
        .cookies
        .iter()
        .any(|c| values::cookie_count(&req.headers, c) > 1)
    {
        return Err("ambiguous-key-cookie");
    }
    Ok(())
}

/// Fields of a 304 that never replace the stored response's (RFC 9111 §4.3.4:
/// framing belongs to the stored body).
const NOT_UPDATED_BY_304: [http::HeaderName; 5] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_RANGE,
    http::header::CONNECTION,
];

/// The stored response header updated with the fields of an upstream 304.
pub fn apply_304_fields(
    stored: &pingora::http::ResponseHeader,
    fields: &http::HeaderMap,
) -> pingora::http::ResponseHeader {
    let mut updated = stored.clone();
    for name in fields.keys() {
        if NOT_UPDATED_BY_304.contains(name) {
            continue;
        }
        updated.remove_header(name);
        for value in fields.get_all(name) {
            let _ = updated.append_header(name.clone(), value.clone());
        }
    }
    updated
}

/// Shapes the request a cache fill sends upstream:
/// - `Accept-Encoding` becomes exactly the variant bucket the response is
///   stored under, so an encoding another client cannot decode never lands in
///   a shared variant;
/// - an `If-None-Match` carrying only awning's own synthesised tags is
///   dropped: the origin never issued them, and while it is present the origin
///   must ignore `If-Modified-Since` (RFC 9110 §13.1.3).
pub fn prepare_upstream_request(
    client: &pingora::http::RequestHeader,
    upstream: &mut pingora::http::RequestHeader,
) {
    // Every line counts, as for the variance; "identity" rather than no header,
    // which would allow any coding (RFC 9110 §12.5.3).
    let present = client.headers.contains_key(http::header::ACCEPT_ENCODING);
    let all = values::all_values(&client.headers, "accept-encoding");
    let bucket = key::accept_encoding_bucket(present.then_some(&all[..]));
    let _ = upstream.insert_header(http::header::ACCEPT_ENCODING, bucket);
    let only_ours = upstream
        .headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').all(|t| is_synthesised_etag(t.trim())));
    if only_ours {
        upstream.remove_header(&http::header::IF_NONE_MATCH);
    }
}

/// Prefix of the entity tags awning makes up (never sent to the origin).
const SYNTHESISED_ETAG_PREFIX: &str = "\"awn-";

fn is_synthesised_etag(tag: &str) -> bool {
    tag.trim_start_matches("W/")
        .starts_with(SYNTHESISED_ETAG_PREFIX)
}

/// Methods that change the resource at the request URL (RFC 9111 §4.4).
pub fn is_unsafe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

/// A stored 200 without a validator gets a strong `ETag` from its body, so
/// clients can revalidate against awning even when the origin sends none.
fn synthesize_etag(meta: &mut CacheMeta, body: &Bytes) {
    let header = meta.response_header_mut();
    if header.status != 200 || header.headers.contains_key(http::header::ETAG) {
        return;
    }
    let _ = header.insert_header(http::header::ETAG, body_etag(body));
}

/// A strong entity tag for `body`: a BLAKE2b-128 digest in hex.
pub fn body_etag(body: &[u8]) -> String {
    use blake2::digest::consts::U16;
    use blake2::{Blake2b, Digest};
    let digest = Blake2b::<U16>::digest(body);
    let mut tag = String::with_capacity(38);
    tag.push_str(SYNTHESISED_ETAG_PREFIX);
    for b in digest {
        tag.push_str(&format!("{b:02x}"));
    }
    tag.push('"');
    tag
}

/// Builds the meta for a response the policy allowed.
pub fn meta_for(
    decision: &policy::Decision,
    resp: &pingora::http::ResponseHeader,
    now: SystemTime,
) -> Option<CacheMeta> {
    let policy::Decision::Store {
        fresh_for,
        stale_while_revalidate,
        stale_if_error,
        strip_set_cookie,
    } = decision
    else {
        return None;
    };
    let mut header = resp.clone();
    if *strip_set_cookie {
        header.remove_header(&http::header::SET_COOKIE);
    }
    header.remove_header(&http::header::AGE);
    // A response stored stale is revalidated before every use; keep it one
    // second in the past so it is never treated as fresh.
    let fresh_until = if fresh_for.is_zero() {
        now - Duration::from_secs(1)
    } else {
        now.checked_add(*fresh_for).unwrap_or(now + MAX_FRESHNESS)
    };
    Some(CacheMeta::new(
        fresh_until,
        now,
        stale_while_revalidate.as_secs().min(u64::from(u32::MAX)) as u32,
        stale_if_error.as_secs().min(u64::from(u32::MAX)) as u32,
        header,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_ask_the_origin_for_the_variant_bucket_and_never_our_own_tags() {
        let mut client = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        // Split over two lines: both count.
        client
            .append_header("accept-encoding", "gzip, deflate")
            .unwrap();
        client.append_header("accept-encoding", "br, zstd").unwrap();
        let mut up = client.clone();
        up.insert_header("if-none-match", body_etag(b"x")).unwrap();
        up.insert_header("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")
            .unwrap();
        prepare_upstream_request(&client, &mut up);
        assert_eq!(up.headers["accept-encoding"], "br");
        assert!(!up.headers.contains_key("if-none-match"));
        assert!(up.headers.contains_key("if-modified-since"));

        let mut plain = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        plain.insert_header("accept-encoding", "zstd").unwrap();
        let mut up = plain.clone();
        up.insert_header("if-none-match", "\"origin-tag\"").unwrap();
        prepare_upstream_request(&plain, &mut up);
        assert_eq!(up.headers["accept-encoding"], "identity");
        assert_eq!(up.headers["if-none-match"], "\"origin-tag\"");
    }

    #[test]
    fn a_304_replaces_stored_fields_but_not_framing() {
        let mut stored = pingora::http::ResponseHeader::build(200, None).unwrap();
        stored.insert_header("content-length", "10").unwrap();
        stored.insert_header("x-revision", "1").unwrap();
        stored.insert_header("content-type", "text/plain").unwrap();
        let mut fields = http::HeaderMap::new();
        fields.insert("x-revision", "2".parse().unwrap());
        fields.insert("content-length", "0".parse().unwrap());
        let updated = apply_304_fields(&stored, &fields);
        assert_eq!(updated.headers["x-revision"], "2");
        assert_eq!(updated.headers["content-length"], "10");
        assert_eq!(updated.headers["content-type"], "text/plain");
    }

    #[test]
    fn etags_are_strong_and_depend_on_the_body() {
        let a = body_etag(b"hello");
        assert!(
            a.starts_with("\"awn-") && a.ends_with('"') && a.len() == 38,
            "{a}"
        );
        assert_eq!(a, body_etag(b"hello"));
        assert_ne!(a, body_etag(b"hello!"));
    }

    #[test]
    fn etag_is_added_to_stored_200s_without_one() {
        let mut h = pingora::http::ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "text/plain").unwrap();
        let mut meta = CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, h);
        synthesize_etag(&mut meta, &Bytes::from_static(b"body"));
        assert_eq!(meta.headers()["etag"], body_etag(b"body").as_str());

        let mut h = pingora::http::ResponseHeader::build(200, None).unwrap();
        h.insert_header("etag", "\"origin\"").unwrap();
        let mut meta = CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, h);
        synthesize_etag(&mut meta, &Bytes::from_static(b"body"));
        assert_eq!(meta.headers()["etag"], "\"origin\"");
    }
}
