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
