//! Defaults for every optional setting, named so the README and the code agree.

use std::time::Duration;

/// Upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to wait for each read from the upstream (first byte, then between chunks).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to wait for each write to the upstream.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle upstream connections are closed after this; below Node's 5 s keep-alive
/// so that awning never reuses a socket the storefront is about to close.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// A server that refused or timed out a connection is skipped for this long.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for in-flight requests before exiting.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Admin listener (health, readiness; later reload and purge).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Prometheus metrics listener.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9091";
/// Cache memory bound.
pub const DEFAULT_CACHE_MEMORY: u64 = 256 * 1024 * 1024;
/// Largest object the cache stores.
pub const DEFAULT_CACHE_MAX_OBJECT: u64 = 8 * 1024 * 1024;
/// Rule files read when `rules:` is absent.
pub const DEFAULT_RULES: &str = "rules/*.yaml";
/// Statuses a route may store unless it lists its own.
pub const DEFAULT_CACHE_STATUSES: [u16; 7] = [200, 203, 300, 301, 308, 404, 410];
/// Freshness of 404/410 in `override` mode unless the route sets `negative_ttl`.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Response headers read for purge tags.
pub const DEFAULT_TAG_HEADERS: [&str; 2] = ["surrogate-key", "cache-tag"];
/// Warm requests in flight at once.
pub const DEFAULT_WARM_CONCURRENCY: usize = 4;
/// Latency budget of one shared rate-limit decision.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(5);
/// Keys the local rate-limit tier holds at most.
pub const DEFAULT_LIMITER_TABLE_SIZE: usize = 1_000_000;
/// IPv6 clients are grouped by this prefix, the block one customer usually holds.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Longest request target (nginx: 8 KiB through `large_client_header_buffers`).
pub const DEFAULT_MAX_URI: usize = 8 * 1024;
/// Most header fields in a request (nginx: no count limit; Node: 2000).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest request header section: well below Node's 16 KiB so that the
/// headers awning adds never push the storefront over its limit.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Security headers on every answer unless configured otherwise: (name,
/// value, the origin's value wins). HSTS is sent only to https clients.
pub const DEFAULT_SECURITY_HEADERS: [(&str, &str, bool); 7] = [
    ("strict-transport-security", "max-age=31536000", true),
    ("x-content-type-options", "nosniff", false),
    ("x-frame-options", "SAMEORIGIN", true),
    ("content-security-policy", "frame-ancestors 'self'", true),
    ("referrer-policy", "strict-origin-when-cross-origin", true),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
        true,
    ),
    // Not `same-origin`: payment providers' popups must be able to report back.
    (
        "cross-origin-opener-policy",
        "same-origin-allow-popups",
        true,
    ),
];
/// Origin headers never passed to clients: they tell attackers what runs
/// behind awning (`*` ends a prefix).
pub const DEFAULT_STRIP_RESPONSE: [&str; 6] = [
    "server",
    "x-powered-by",
    "x-nextjs-*",
    "x-middleware-*",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];
/// Client headers the storefront must be able to trust, removed unless a
/// trusted proxy sent them (`X-Middleware-Subrequest` skips Next.js
/// middleware, CVE-2025-29927).
pub const DEFAULT_STRIP_REQUEST: [&str; 5] = [
    "x-forwarded-*",
    "forwarded",
    "x-real-ip",
    "x-middleware-subrequest",
    "x-request-id",
];
/// A request's header section must arrive within this (nginx `client_header_timeout`: 60s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for each read of a request body (nginx `client_body_timeout`: 60s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for each write to a client (nginx `send_timeout`: 60s).
pub const DEFAULT_WRITE_TIMEOUT_CLIENT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections from clients close after this (nginx `keepalive_timeout`: 75s).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests per client connection (nginx `keepalive_requests`: 1000).
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;
/// Concurrent connections per listener (nginx: `worker_connections` 512 per worker).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Concurrent connections per client address (nginx: no `limit_conn` by default);
/// browsers open at most 6 per host, a carrier NAT carries many customers.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// HTTP/2 streams at once per connection (nginx `http2_max_concurrent_streams`: 128).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 decoded header list size (nginx: `large_client_header_buffers`, 32 KiB).
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Largest request body on routes that set no `allow.max_body` (nginx
/// `client_max_body_size`: 1 MiB, too small for a shop's image uploads).
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// A request slower than this is logged as slow (warn).
pub const DEFAULT_SLOW_WARN: Duration = Duration::from_secs(1);
/// A request slower than this is logged as critically slow.
pub const DEFAULT_SLOW_CRITICAL: Duration = Duration::from_secs(5);
/// Active health checks run this often unless configured.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// An active health check fails after this long without an answer.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// File-watch events closer together than this make one reload (an editor's
/// save is often several writes and a rename).
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(150);

/// Largest response written to the shared L2 cache.
pub const DEFAULT_SHARED_MAX_OBJECT: u64 = 1024 * 1024;

/// How long `POST /purge` waits for the other nodes to apply a purge.
pub const DEFAULT_PURGE_WAIT: Duration = Duration::from_secs(1);

/// Where a running awning hands its listeners to `run --upgrade`.
pub const DEFAULT_UPGRADE_SOCKET: &str = "/tmp/awning_upgrade.sock";
