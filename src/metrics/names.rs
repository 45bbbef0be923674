//! Every metric name awning exports. Emitters and tests use these constants.

/// Bytes charged to the cache (bodies, headers, per-entry overhead).
pub const CACHE_STORED_BYTES: &str = "awning_cache_stored_bytes";
/// Objects in the cache.
pub const CACHE_STORED_OBJECTS: &str = "awning_cache_stored_objects";
/// The cache's configured bound, `cache.memory`.
pub const CACHE_CAPACITY_BYTES: &str = "awning_cache_capacity_bytes";
/// Rate-limit decisions, by `policy`, `tier` and `result`.
pub const RATELIMIT_DECISIONS: &str = "awning_ratelimit_decisions_total";
/// Shared decisions Redis could not make (each fell back), by `reason`.
pub const RATELIMIT_REDIS_FAILURES: &str = "awning_ratelimit_redis_failures_total";
/// Requests awning refused itself (bounds, `allow`, framing), by `reason`.
pub const HTTP_REJECTED: &str = "awning_http_requests_rejected_total";
/// Request latency histogram, by `route`, `method`, `status` class and `cache` outcome.
pub const HTTP_REQUEST_DURATION: &str = "awning_http_request_duration_seconds";
/// Time to the origin's response header, by `route` and `upstream`.
pub const UPSTREAM_RESPONSE_DURATION: &str = "awning_upstream_response_duration_seconds";
/// Failed exchanges with an origin, by `upstream` and `kind`.
pub const UPSTREAM_ERRORS: &str = "awning_upstream_errors_total";
/// Requests over their route's slow thresholds, by `route` and `level`.
pub const SLOW_REQUESTS: &str = "awning_slow_requests_total";
/// Client connections open now.
pub const OPEN_CONNECTIONS: &str = "awning_open_connections";
/// The version running, as a label.
pub const BUILD_INFO: &str = "awning_build_info";
/// Cache events (`coalesced`, `stale_while_revalidate`, `stale_if_error`), by `event`.
pub const CACHE_EVENTS: &str = "awning_cache_events_total";
/// Entries purged, `by` urls, prefixes or tags.
pub const CACHE_PURGED: &str = "awning_cache_purged_total";
/// Bytes the cache evicted to stay within its bound.
pub const CACHE_EVICTED_BYTES: &str = "awning_cache_evicted_bytes_total";
/// Redis round-trip histogram, by `command`.
pub const REDIS_COMMAND_DURATION: &str = "awning_redis_command_duration_seconds";
/// 1 while the shared rate-limit tier has a Redis connection.
pub const REDIS_CONNECTED: &str = "awning_redis_connected";
/// Response body bytes, by `route` and `cache` outcome.
pub const HTTP_RESPONSE_BYTES: &str = "awning_http_response_bytes_total";
/// Servers of an upstream group considered up, by `upstream`.
pub const UPSTREAM_HEALTHY_SERVERS: &str = "awning_upstream_healthy_servers";
/// Servers of an upstream group, by `upstream`.
pub const UPSTREAM_SERVERS: &str = "awning_upstream_servers";
/// The running configuration's generation (1 at start, +1 per applied reload).
pub const CONFIG_GENERATION: &str = "awning_config_generation";
/// Configuration reloads, by `outcome` (applied, unchanged, rejected).
pub const CONFIG_RELOADS: &str = "awning_config_reloads_total";
/// Unix time of the last successful configuration load.
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "awning_config_last_reload_success_timestamp_seconds";
/// 1, labelled with the running configuration's content `hash`.
pub const CONFIG_INFO: &str = "awning_config_info";
/// Time from a purge entering the shared stream to this node applying it.
pub const PURGE_LAG: &str = "awning_cluster_purge_lag_seconds";
/// Purge stream events on this node, by `event`.
pub const PURGE_STREAM_EVENTS: &str = "awning_cluster_purge_events_total";
/// Nodes live in the shared Redis (heartbeat within 3 s).
pub const CLUSTER_NODES: &str = "awning_cluster_nodes";
/// Shared L2 cache events, by `event`.
pub const CACHE_L2_EVENTS: &str = "awning_cache_l2_events_total";
