//! Operator configuration: `proxy.yaml` and the rule files it lists.
//!
//! Pipeline: text -> serde mirror (`file.rs`, unknown keys rejected) ->
//! `validate.rs` (every error with file:line:column and YAML path) -> the typed
//! [`Config`] below. Nothing downstream of `Config` re-checks what it holds.

pub mod defaults;
mod error;
mod file;
mod hardening;
mod locate;
mod tls;
pub mod units;
mod validate;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors, Position, YamlPath};
pub use validate::{load, parse_host_match, parse_path_match};

/// A validated configuration generation.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `proxy.yaml` it was read from.
    pub source: PathBuf,
    /// The rule files, in the order their routes were read.
    pub rule_files: Vec<PathBuf>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    pub listen: Listen,
    /// Upstream groups, in file order; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    pub admin: Admin,
    pub metrics: Metrics,
    pub cache: Cache,
    pub redis: Option<Redis>,
    pub limiter: LimiterSettings,
    /// The proxy-wide response header rules (routes carry them merged).
    pub response_headers: ResponseHeaderRules,
    pub requests: RequestBounds,
    pub clients: ClientLimits,
    pub access_log: AccessLog,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Peers whose forwarding headers are believed (load balancers, CDNs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Routes in match order (first match wins).
    pub routes: Vec<Route>,
    /// URLs fetched through the proxy at start, so the first customers hit a warm cache.
    pub warm: Vec<WarmUrl>,
    /// Rate-limit policies; routes refer to them by index.
    pub limits: Vec<LimitPolicy>,
    pub reload: ReloadSettings,
    /// The Unix socket a running awning hands its listeners over on (binary upgrade).
    pub upgrade_socket: PathBuf,
    /// The files this generation was read from, as read.
    pub sources: Vec<SourceFile>,
}

/// One file of a configuration, as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// `reload:` in proxy.yaml.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Reload when proxy.yaml or a rule file changes.
    pub watch: bool,
    pub debounce: Duration,
}

/// What a rate-limit key is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (IPv6 grouped by /64).
    ClientIp,
    /// The route as a whole (protects the origin).
    Route,
    Header(http::HeaderName),
    Cookie(String),
}

/// A rate-limit policy.
#[derive(Clone, Debug)]
pub struct LimitPolicy {
    pub name: String,
    /// Requests per `window` (for the headers), and the bucket size.
    pub limit: u32,
    pub window: Duration,
    pub burst: u32,
    pub key: Vec<LimitKey>,
    /// Decide and count, never deny.
    pub shadow: bool,
    /// Count only requests that go to the origin (cache misses).
    pub misses_only: bool,
    /// RateLimit headers on every answer, not only on 429s.
    pub headers_always: bool,
    /// Brute-force lockout.
    pub lockout: Option<LockoutRule>,
    /// Decided through Redis, one budget across nodes.
    pub shared: bool,
    pub on_redis_error: RedisFallback,
    /// [`LimitPolicy::fingerprint`], computed once.
    pub definition: u64,
}

impl LimitPolicy {
    /// What the policy counts and against what: two policies with the same
    /// definition share their buckets across a reload, a changed one starts
    /// afresh. Stable across processes (shared keys in Redis use it).
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(0);
        let mut part = |tag: u8, bytes: &[u8]| {
            h.update(&[tag]);
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let nanos = |d: Duration| d.as_nanos().to_le_bytes();
        part(b'n', self.name.as_bytes());
        part(b'l', &self.limit.to_le_bytes());
        part(b'w', &nanos(self.window));
        part(b'b', &self.burst.to_le_bytes());
        for k in &self.key {
            match k {
                LimitKey::ClientIp => part(b'i', b""),
                LimitKey::Route => part(b'r', b""),
                LimitKey::Header(name) => part(b'h', name.as_str().as_bytes()),
                LimitKey::Cookie(name) => part(b'c', name.as_bytes()),
            }
        }
        if let Some(l) = &self.lockout {
            part(b'o', &l.after.to_le_bytes());
            part(b'o', &nanos(l.base));
            part(b'o', &nanos(l.max));
        }
        part(b'm', &[u8::from(self.misses_only)]);
        part(b's', &[u8::from(self.shared)]);
        h.digest()
    }
}

/// After `after` denials within `base`, refuse the key for `base`, doubling
/// on each repeat up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutRule {
    pub after: u32,
    pub base: Duration,
    pub max: Duration,
}

/// A URL to warm: `http(s)://host[:port]/path?query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmUrl {
    pub tls: bool,
    /// Host (and port) as written, sent as `Host`.
    pub authority: String,
    pub host: String,
    pub path_and_query: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listen {
    pub http: Vec<SocketAddr>,
    pub tls: Vec<TlsListener>,
    /// Listeners that answer only for some hosts.
    pub allowed_hosts: Vec<(SocketAddr, Vec<HostMatch>)>,
}

impl Listen {
    /// The hosts the listener at `local` answers for (`None`: any). A
    /// wildcard listener (`0.0.0.0:8080`) is found by its port.
    pub fn hosts_for(&self, local: SocketAddr) -> Option<&[HostMatch]> {
        let exact = self.allowed_hosts.iter().find(|(a, _)| *a == local);
        exact
            .or_else(|| {
                self.allowed_hosts
                    .iter()
                    .find(|(a, _)| a.ip().is_unspecified() && a.port() == local.port())
            })
            .map(|(_, hosts)| hosts.as_slice())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsListener {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A named group of origin servers, resolved when the config is loaded.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// Each configured server as written, with the addresses it resolved to.
    pub servers: Vec<(String, SocketAddr)>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub fail_timeout: Duration,
    pub tls: bool,
    pub sni: String,
    pub health_check: Option<HealthCheck>,
}

/// An active health check: `GET path` on every server each `interval`; a
/// server that does not answer 2xx/3xx within `timeout` is down until it does.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cache {
    pub memory: u64,
    pub max_object: u64,
    /// Response headers whose values are purge tags.
    pub tag_headers: Vec<http::HeaderName>,
    /// How many warm requests run at once.
    pub warm_concurrency: usize,
    /// Responses are shared through Redis (L2) as well as kept in memory (L1).
    pub shared: bool,
    /// Largest response written to the L2.
    pub shared_max_object: u64,
}

/// The Redis deployment shared by the nodes of one shop.
#[derive(Clone, Debug, PartialEq)]
pub struct Redis {
    pub servers: RedisServers,
    /// Latency budget of one shared decision; slower answers count as failures.
    pub timeout: Duration,
    /// awning nodes sharing the limits; a node on its own (Redis down) allows
    /// each key this share of a shared policy.
    pub expected_nodes: u32,
    /// Seeds the hash of shared keys (the same on every node), so that key
    /// values cannot be recovered from Redis by trying them all.
    pub key_seed: u64,
    /// This node's name among the nodes sharing the Redis (`HOSTNAME:PID` by default).
    pub node_id: String,
    /// How long `POST /purge` waits for the other nodes to apply a purge.
    pub purge_wait: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisServers {
    Standalone(String),
    Cluster(Vec<String>),
    Sentinel { master: String, nodes: Vec<String> },
}

/// The node's rate-limiting settings (`limiter:` in proxy.yaml).
#[derive(Clone, Debug, PartialEq)]
pub struct LimiterSettings {
    /// Keys the local tier holds at most, across all policies.
    pub table_size: usize,
    /// IPv6 clients are keyed by this prefix length.
    pub ipv6_prefix: u8,
    /// 429 bodies are JSON rather than text.
    pub json_body: bool,
}

/// What a shared policy decides while Redis is slow or down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisFallback {
    /// The local tier, with the limit divided by `expected_nodes`.
    #[default]
    Local,
    /// Allow.
    Open,
    /// Deny.
    Closed,
}

/// One route: what it matches and where it sends requests.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// `None` matches every method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Where the route was defined, for messages.
    pub defined_at: String,
    pub cache: RouteCache,
    /// Compress text responses (gzip, brotli) for clients that accept it when
    /// the origin did not; the stored copy stays as the origin sent it.
    pub compress: bool,
    /// Rate-limit policies (indices into [`Config::limits`]); all must allow.
    pub limits: Vec<usize>,
    /// Headers set on, or removed from, every answer of this route (the
    /// proxy-wide rules with the route's own on top).
    pub response_headers: ResponseHeaderRules,
    pub allow: Allow,
    pub slow: SlowThresholds,
}

/// A request this slow is logged with its timings and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowThresholds {
    pub warn: Duration,
    pub critical: Duration,
}

impl Default for SlowThresholds {
    fn default() -> Self {
        Self {
            warn: defaults::DEFAULT_SLOW_WARN,
            critical: defaults::DEFAULT_SLOW_CRITICAL,
        }
    }
}

/// What requests that matched a route may be.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    /// Other methods get 405 with `Allow`.
    pub methods: Option<Vec<http::Method>>,
    /// Larger bodies get 413 (`requests.max_body` when the route sets none).
    pub max_body: Option<u64>,
    /// Media types (`application/json`, or `text/*`) a body may have; others get 415.
    pub content_types: Option<Vec<String>>,
}

/// How a response header is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMode {
    /// Replaces the origin's value.
    Set,
    /// The origin's value wins.
    SetIfAbsent,
    /// Removed whatever the origin sent.
    Remove,
}

/// A header name, or every name starting with a prefix (`x-nextjs-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(http::HeaderName),
    Prefix(String),
}

impl NamePattern {
    pub fn matches(&self, name: &http::HeaderName) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Prefix(p) => name.as_str().starts_with(p.as_str()),
        }
    }
}

/// One header rule: `value` is `None` for [`HeaderMode::Remove`].
#[derive(Clone, Debug)]
pub struct HeaderRule {
    pub name: http::HeaderName,
    pub value: Option<http::HeaderValue>,
    pub mode: HeaderMode,
}

impl HeaderRule {
    pub fn new(name: http::HeaderName, value: Option<http::HeaderValue>, mode: HeaderMode) -> Self {
        Self { name, value, mode }
    }
}

/// The security headers of answers and the origin headers never passed on.
#[derive(Clone, Debug, Default)]
pub struct ResponseHeaderRules {
    /// At most one rule per name.
    pub rules: Vec<HeaderRule>,
    pub strip: Vec<NamePattern>,
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSink {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

/// `access_log:` in proxy.yaml: one JSON line per request.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    pub to: LogSink,
    /// Log the query string (off: it may carry personal data).
    pub query: bool,
    /// Share of successful cache hits logged (errors and misses always are).
    pub hit_sample: f64,
}

/// Timeouts and caps toward clients (`clients:` in proxy.yaml).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientLimits {
    /// A request's whole header section must arrive within this.
    pub header_timeout: Duration,
    /// Longest wait for each read of a request body.
    pub body_timeout: Duration,
    /// Longest wait for each write to a client (a reader that stopped).
    pub write_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    pub max_requests_per_connection: u32,
    /// Concurrent connections per listener.
    pub max_connections: usize,
    /// Concurrent connections per client address (trusted proxies exempt).
    pub max_connections_per_ip: usize,
}

/// Bounds on every request, checked before routing.
#[derive(Clone, Debug)]
pub struct RequestBounds {
    /// Status for a host a listener does not serve: 421 or 400.
    pub unknown_host: u16,
    /// Keep `%2F` / `%5C` encoded inside a segment instead of refusing the path.
    pub keep_encoded_slashes: bool,
    /// Larger request bodies get 413 on routes without their own `allow.max_body`.
    pub max_body: u64,
    /// Longer request targets get 414.
    pub max_uri: usize,
    /// More header fields get 431.
    pub max_headers: usize,
    /// Larger header sections (names, values, separators) get 431.
    pub max_header_bytes: usize,
    /// Headers removed from clients that are not trusted proxies (besides
    /// the forwarding headers awning sets itself).
    pub strip: Vec<NamePattern>,
}

/// How a route caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// RFC 9111 shared cache: the origin's headers decide, no default TTL.
    Origin,
    /// The route's TTL wins over the origin's freshness.
    Override,
    /// Never looked up, never stored.
    #[default]
    Bypass,
}

/// A query parameter name, or a prefix written `utm_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryParam {
    Exact(String),
    Prefix(String),
}

/// What goes into a route's cache key besides the URL.
#[derive(Clone, Debug, Default)]
pub struct CacheKeyRules {
    pub sort_query: bool,
    pub drop_params: Vec<QueryParam>,
    pub only_params: Option<Vec<QueryParam>>,
    pub headers: Vec<http::HeaderName>,
    pub cookies: Vec<String>,
}

/// A route's cache policy.
#[derive(Clone, Debug, Default)]
pub struct RouteCache {
    pub mode: CacheMode,
    /// Freshness in `override` mode.
    pub ttl: std::time::Duration,
    /// Freshness of 404/410 in `override` mode.
    pub negative_ttl: std::time::Duration,
    pub stale_while_revalidate: std::time::Duration,
    pub stale_if_error: std::time::Duration,
    /// Statuses that may be stored.
    pub statuses: Vec<u16>,
    pub key: CacheKeyRules,
    /// Requests carrying any of these cookies skip the cache.
    pub bypass_cookies: Vec<String>,
    /// Store responses marked private / no-store / with Set-Cookie (Set-Cookie
    /// is removed from the stored copy). Off unless the route says so.
    pub store_private: bool,
}

/// Host part of a route match, lower-case, without port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (not `example.com`).
    Suffix(String),
}

/// Path part of a route match.
#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Glob {
        pattern: String,
        matcher: globset::GlobMatcher,
    },
}

impl Config {
    /// One line for `awning check`.
    pub fn summary(&self) -> String {
        let servers: usize = self.upstreams.iter().map(|u| u.servers.len()).sum();
        let listeners: Vec<String> = self
            .listen
            .http
            .iter()
            .map(|a| format!("http://{a}"))
            .chain(
                self.listen
                    .tls
                    .iter()
                    .map(|t| format!("https://{}", t.addr)),
            )
            .collect();
        format!(
            "configuration OK: {} ({} rule file{}, {} route{}, {} upstream{} with {} server{}), listening on {}",
            self.source.display(),
            self.rule_files.len(),
            plural(self.rule_files.len()),
            self.routes.len(),
            plural(self.routes.len()),
            self.upstreams.len(),
            plural(self.upstreams.len()),
            servers,
            plural(servers),
            listeners.join(", ")
        )
    }

    /// Index of the upstream named `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }
}

/// Where to connect to reach a listener from this host: a wildcard bind
/// (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
