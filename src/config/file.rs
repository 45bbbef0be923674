//! The serde mirror of the files operators write. Every struct denies unknown
//! keys so a typo is an error, not a silently ignored setting. Nothing here is
//! validated beyond types; `validate.rs` turns these into a typed `Config`.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{HumanDuration, HumanSize};

/// Top-level keys of `proxy.yaml`, each deserialised on its own so that one
/// broken section does not hide the errors in the others.
pub const PROXY_KEYS: &[&str] = &[
    "threads",
    "listen",
    "upstreams",
    "admin",
    "metrics",
    "cache",
    "redis",
    "rules",
    "shutdown_grace",
    "trusted_proxies",
    "limiter",
    "response_headers",
    "request_headers",
    "requests",
    "clients",
    "access_log",
    "reload",
    "upgrade_socket",
];

/// Top-level keys of a rule file.
pub const RULE_KEYS: &[&str] = &["routes", "warm", "limits"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListen {
    #[serde(default)]
    pub http: Vec<FileHttpListener>,
    #[serde(default)]
    pub tls: Vec<FileTlsListener>,
}

/// `"0.0.0.0:8080"` or `{ addr: "0.0.0.0:8080", hosts: [shop.example.com] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileHttpListener {
    Addr(String),
    Full(FileHttpListenerFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpListenerFull {
    pub addr: String,
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTlsListener {
    pub addr: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub servers: Vec<String>,
    pub connect_timeout: Option<HumanDuration>,
    pub read_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub fail_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    pub health_check: Option<FileHealthCheck>,
}

/// `health_check:` on an upstream group: an active check of every server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    pub path: String,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub memory: Option<HumanSize>,
    pub max_object: Option<HumanSize>,
    pub tag_headers: Option<Vec<String>>,
    pub warm_concurrency: Option<usize>,
    pub shared: Option<FileSharedCache>,
    pub shared_max_object: Option<HumanSize>,
}

/// `cache.shared`: where the L2 lives.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileSharedCache {
    Redis,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    pub url: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub sentinel: Option<FileSentinel>,
    pub timeout: Option<HumanDuration>,
    pub expected_nodes: Option<i64>,
    pub key_secret_file: Option<PathBuf>,
    pub node_id: Option<String>,
    pub purge_wait: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSentinel {
    pub master: String,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileDenyBody {
    Text,
    Json,
}

/// `limiter:` in proxy.yaml: the node's rate-limiting settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimiter {
    pub table_size: Option<i64>,
    pub ipv6_prefix: Option<i64>,
    pub body: Option<FileDenyBody>,
}

/// `reload:` in proxy.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReload {
    pub watch: Option<bool>,
    pub debounce: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: FileMatch,
    pub upstream: String,
    pub cache: Option<FileRouteCache>,
    #[serde(default)]
    pub compress: bool,
    #[serde(default)]
    pub limits: Vec<String>,
    pub response_headers: Option<FileHeaderRules>,
    pub allow: Option<FileAllow>,
    pub slow: Option<FileSlow>,
}

/// `slow:` on a route: latency thresholds that log and count a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSlow {
    pub warn: Option<HumanDuration>,
    pub critical: Option<HumanDuration>,
}

/// `response_headers:` in proxy.yaml or on a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderRules {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub set_if_absent: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    /// proxy.yaml only: origin headers never passed to clients.
    #[serde(default)]
    pub strip: Vec<String>,
}

/// `request_headers:` in proxy.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequestHeaders {
    #[serde(default)]
    pub strip: Vec<String>,
}

/// `requests:` in proxy.yaml: bounds on every request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequests {
    pub unknown_host: Option<u16>,
    pub encoded_slashes: Option<FileEncodedSlashes>,
    pub max_uri: Option<HumanSize>,
    pub max_body: Option<HumanSize>,
    pub max_headers: Option<i64>,
    pub max_header_bytes: Option<HumanSize>,
}

/// `allow:` on a route: what requests that matched it may be.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAllow {
    pub methods: Option<Vec<String>>,
    pub max_body: Option<HumanSize>,
    pub content_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileLimitScope {
    #[default]
    Local,
    Shared,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileRedisFallback {
    #[default]
    Local,
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileLimitMode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileLimitCount {
    #[default]
    All,
    Misses,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileLimitHeaders {
    #[default]
    OnDeny,
    Always,
}

/// A rate-limit policy in a rule file's `limits:` map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimit {
    pub rate: String,
    pub burst: Option<i64>,
    #[serde(default)]
    pub key: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub scope: FileLimitScope,
    #[serde(default)]
    pub mode: FileLimitMode,
    #[serde(default)]
    pub count: FileLimitCount,
    #[serde(default)]
    pub headers: FileLimitHeaders,
    pub lockout: Option<FileLockout>,
    pub on_redis_error: Option<FileRedisFallback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLockout {
    pub after: i64,
    #[serde(rename = "for")]
    pub duration: HumanDuration,
    pub max: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileCacheMode {
    Origin,
    Override,
    Bypass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteCache {
    pub mode: FileCacheMode,
    pub ttl: Option<HumanDuration>,
    pub negative_ttl: Option<HumanDuration>,
    pub stale_while_revalidate: Option<HumanDuration>,
    pub stale_if_error: Option<HumanDuration>,
    pub statuses: Option<Vec<u16>>,
    #[serde(default)]
    pub key: FileCacheKey,
    #[serde(default)]
    pub bypass_cookies: Vec<String>,
    #[serde(default)]
    pub store_private: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileQueryMode {
    #[default]
    AsSent,
    Sorted,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheKey {
    #[serde(default)]
    pub query: FileQueryMode,
    #[serde(default)]
    pub drop_params: Vec<String>,
    pub only_params: Option<Vec<String>>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// `clients:` in proxy.yaml: timeouts and caps toward clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClients {
    pub header_timeout: Option<HumanDuration>,
    pub body_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
    pub keepalive_timeout: Option<HumanDuration>,
    pub max_requests_per_connection: Option<i64>,
    pub max_connections: Option<i64>,
    pub max_connections_per_ip: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileEncodedSlashes {
    Reject,
    Keep,
}

/// `access_log:` in proxy.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// `stdout`, `stderr`, `off` or a file path.
    pub to: Option<String>,
    pub query: Option<bool>,
    pub hit_sample: Option<f64>,
}
