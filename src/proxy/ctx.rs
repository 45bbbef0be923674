//! Per-request state, created in `new_ctx` and dropped after `logging`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::headers::request::CheckedTarget;
use crate::snapshot::Snapshot;
use crate::upstreams::Tried;

static INFLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Requests whose context is alive: read, being proxied or being logged.
/// Graceful shutdown waits for this to reach zero.
pub fn inflight_requests() -> usize {
    INFLIGHT.load(Ordering::Acquire)
}

struct InflightGuard;

impl InflightGuard {
    fn new() -> Self {
        INFLIGHT.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct RequestCtx {
    pub started: Instant,
    /// The config generation this request runs under, start to end.
    pub snapshot: Arc<Snapshot>,
    pub target: CheckedTarget,
    /// Index of the matched route in `snapshot.routes`.
    pub route: Option<usize>,
    /// Servers of the route's upstream this request has tried.
    pub tried: Tried,
    /// The server of the current attempt.
    pub server: Option<usize>,
    /// The client connected over TLS.
    pub tls: bool,
    /// The client's address (through trusted proxies, the address they report).
    pub client_ip: Option<std::net::IpAddr>,
    /// Why the cache was not used or the response not stored.
    pub cache_detail: Option<&'static str>,
    /// The response fetched for this request was stored.
    pub cache_stored: bool,
    /// The key this request missed (and may hold the shared L2 fill lock of).
    pub missed_key: Option<pingora::cache::key::HashBinary>,
    /// Headers of an upstream 304 answering a revalidation, to update the
    /// stored response with (Pingora merges only a few of them).
    pub revalidated_headers: Option<http::HeaderMap>,
    /// The client takes brotli and the route compresses.
    pub brotli_wanted: bool,
    /// The brotli encoder of this response's body.
    pub brotli: Option<crate::compression::BrotliStream>,
    /// `RateLimit-Policy` and `RateLimit` values to send with the answer, and
    /// the requests they say are left.
    pub limit_headers: Option<(String, String, u32)>,
    /// The connection's peer is in `trusted_proxies`.
    pub trusted_peer: bool,
    /// The client used https (to awning, or to a trusted proxy in front).
    pub client_https: bool,
    /// `X-Request-Id`: sent to the origin and back to the client.
    pub request_id: Option<http::HeaderValue>,
    /// Request body bytes received so far (for the route's `max_body`).
    pub body_bytes: u64,
    /// When the request was sent to the origin.
    pub upstream_sent: Option<Instant>,
    /// Time from sending to the origin's response header.
    pub upstream_ttfb: Option<std::time::Duration>,
    /// The rate limit that spoke (index into the config's policies) and its
    /// decision, for the access log.
    pub limit_outcome: Option<(usize, &'static str)>,
    _inflight: InflightGuard,
}

impl RequestCtx {
    /// The matched route.
    pub fn route(&self) -> Option<&crate::config::Route> {
        self.route.and_then(|i| self.snapshot.routes.get(i))
    }

    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            started: Instant::now(),
            snapshot,
            target: CheckedTarget::default(),
            route: None,
            tried: Tried::default(),
            server: None,
            tls: false,
            client_ip: None,
            cache_detail: None,
            cache_stored: false,
            missed_key: None,
            revalidated_headers: None,
            brotli_wanted: false,
            brotli: None,
            limit_headers: None,
            trusted_peer: false,
            client_https: false,
            request_id: None,
            body_bytes: 0,
            upstream_sent: None,
            upstream_ttfb: None,
            limit_outcome: None,
            _inflight: InflightGuard::new(),
        }
    }
}
