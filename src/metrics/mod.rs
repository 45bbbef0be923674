//! Prometheus metrics, in the default registry that the metrics listener serves.

pub mod access_log;
pub mod exporter;
pub mod names;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::proto::MetricFamily;
use pingora_prometheus::prometheus::{
    self, Counter, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

/// A gauge registered in the default registry (registration failures, e.g. a
/// second engine in one process, leave it unregistered but usable).
pub fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

/// A counter with labels, registered like [`gauge`].
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::HTTP_REJECTED,
        "Requests refused by awning before the origin, by reason.",
        &["reason"],
    )
});

/// Every `reason` a refusal is counted under.
pub const REJECTION_REASONS: [&str; 15] = [
    "bad_target",
    "hidden_separator",
    "unknown_host",
    "ambiguous_framing",
    "malformed_header",
    "uri_too_long",
    "too_many_headers",
    "headers_too_large",
    "method_not_allowed",
    "body_too_large",
    "unsupported_media_type",
    "too_many_connections",
    "header_timeout",
    "client_write_timeout",
    "client_read_timeout",
];

/// Counts a request refused for `reason`.
pub fn rejected(reason: &str) {
    REJECTED.with_label_values(&[reason]).inc();
}

/// A histogram with labels, registered like [`gauge`].
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric name");
    let _ = prometheus::register(Box::new(h.clone()));
    h
}

/// Latency buckets for an edge: from half a millisecond (a cache hit) to
/// ten seconds (a struggling origin).
pub const EDGE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route label of requests that matched no route: one series for all.
pub const UNMATCHED: &str = "unmatched";

static REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        names::HTTP_REQUEST_DURATION,
        "Time from the request's arrival to the end of its answer, by route, method, status class and cache outcome.",
        &["route", "method", "status", "cache"],
        &EDGE_BUCKETS,
    )
});

static UPSTREAM_TTFB: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        names::UPSTREAM_RESPONSE_DURATION,
        "Time from sending a request to the origin to its response header, by route and upstream.",
        &["route", "upstream"],
        &EDGE_BUCKETS,
    )
});

static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::UPSTREAM_ERRORS,
        "Failed exchanges with an origin, by upstream and kind.",
        &["upstream", "kind"],
    )
});

static RESPONSE_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::HTTP_RESPONSE_BYTES,
        "Response body bytes sent to clients, by route and cache outcome (hits are bytes the origin did not send).",
        &["route", "cache"],
    )
});

static SLOW: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::SLOW_REQUESTS,
        "Requests slower than their route's thresholds, by route and level (warn, critical).",
        &["route", "level"],
    )
});

static OPEN_CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(names::OPEN_CONNECTIONS, "Client connections open now."));

/// The method label: the common methods by name, the rest as `OTHER`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// The status label: its class, or `none` when no answer was sent.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// The per-request series of one route, resolved once per thread: a
/// `with_label_values` hashes the labels and takes the vector's lock on every
/// call, for series that never change once created.
type RouteSeries =
    HashMap<(&'static str, &'static str, &'static str), (prometheus::Histogram, IntCounter)>;

thread_local! {
    static REQUEST_SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::new(HashMap::new());
}

/// Counts one finished request and the body bytes it sent.
pub fn request_done(
    route: &str,
    method: &str,
    status: u16,
    cache: &'static str,
    took: Duration,
    bytes_out: u64,
) {
    let labels = (method_label(method), status_class(status), cache);
    REQUEST_SERIES.with(|series| {
        let mut series = series.borrow_mut();
        if !series.contains_key(route) {
            series.insert(route.into(), HashMap::new());
        }
        let route_series = series.get_mut(route).expect("inserted above");
        let (duration, bytes) = route_series.entry(labels).or_insert_with(|| {
            (
                REQUESTS.with_label_values(&[route, labels.0, labels.1, cache]),
                RESPONSE_BYTES.with_label_values(&[route, cache]),
            )
        });
        duration.observe(took.as_secs_f64());
        bytes.inc_by(bytes_out);
    });
}

/// Counts one origin response header, `took` after the request was sent.
pub fn upstream_answered(route: &str, upstream: &str, took: Duration) {
    UPSTREAM_TTFB
        .with_label_values(&[route, upstream])
        .observe(took.as_secs_f64());
}

/// Counts one failed exchange with an origin.
pub fn upstream_failed(upstream: &str, kind: &str) {
    UPSTREAM_ERRORS.with_label_values(&[upstream, kind]).inc();
}

/// Counts one slow request.
pub fn slow_request(route: &str, level: &str) {
    SLOW.with_label_values(&[route, level]).inc();
}

/// A client connection opened (+1) or closed (-1).
pub fn connection_change(delta: i64) {
    OPEN_CONNECTIONS.add(delta);
}

/// `awning_build_info{version}`: 1, so that dashboards can show versions.
pub fn register_build_info() {
    let info = IntGaugeVec::new(
        Opts::new(names::BUILD_INFO, "The running awning's version."),
        &["version"],
    )
    .expect("valid metric name");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let _ = prometheus::register(Box::new(info));
    LazyLock::force(&OPEN_CONNECTIONS);
    init_fixed_series();
}

static CACHE_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::CACHE_EVENTS,
        "Cache events: coalesced (waited for another request's fill), stale_while_revalidate and stale_if_error (stale answers served).",
        &["event"],
    )
});

static PURGED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        names::CACHE_PURGED,
        "Cache entries purged, by how they were named (urls, prefixes, tags).",
        &["by"],
    )
});

static REDIS_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        names::REDIS_COMMAND_DURATION,
        "Round trips to Redis, by command (decide: one rate-limit script; ping: health check).",
        &["command"],
        &[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ],
    )
});

/// Creates the series of fixed vocabularies at zero, so that dashboards and
/// alerts see them before the first event.
pub fn init_fixed_series() {
    for event in ["coalesced", "stale_while_revalidate", "stale_if_error"] {
        CACHE_EVENTS.with_label_values(&[event]);
    }
    for by in ["urls", "prefixes", "tags"] {
        PURGED.with_label_values(&[by]);
    }
    for reason in REJECTION_REASONS {
        REJECTED.with_label_values(&[reason]);
    }
    for command in ["decide", "ping"] {
        REDIS_DURATION.with_label_values(&[command]);
    }
    LazyLock::force(&REQUESTS);
    LazyLock::force(&RESPONSE_BYTES);
    LazyLock::force(&UPSTREAM_TTFB);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&SLOW);
    LazyLock::force(&REJECTED);
}

/// Counts a cache event (`coalesced`, `stale_while_revalidate`, `stale_if_error`).
pub fn cache_event(event: &str) {
    CACHE_EVENTS.with_label_values(&[event]).inc();
}

/// Counts purged entries.
pub fn purged(by: &str, n: u64) {
    PURGED.with_label_values(&[by]).inc_by(n);
}

/// Records one Redis round trip.
pub fn redis_command(command: &str, took: Duration) {
    REDIS_DURATION
        .with_label_values(&[command])
        .observe(took.as_secs_f64());
}

type Read = Box<dyn Fn() -> f64 + Send + Sync>;

/// Values read when Prometheus scrapes, from state awning keeps anyway
/// (bytes the cache evicted, whether Redis is connected).
pub struct Sampled {
    counters: Vec<(Counter, Read)>,
    gauges: Vec<(Gauge, Read)>,
}

impl Sampled {
    pub fn new() -> Self {
        Self {
            counters: Vec::new(),
            gauges: Vec::new(),
        }
    }

    /// A counter read from a monotonic source.
    pub fn counter(mut self, name: &str, help: &str, read: Read) -> Self {
        self.counters
            .push((Counter::new(name, help).expect("valid metric name"), read));
        self
    }

    pub fn gauge(mut self, name: &str, help: &str, read: Read) -> Self {
        self.gauges
            .push((Gauge::new(name, help).expect("valid metric name"), read));
        self
    }

    /// Registers in the default registry.
    pub fn register(self) {
        let _ = prometheus::register(Box::new(self));
    }
}

impl Default for Sampled {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for Sampled {
    fn desc(&self) -> Vec<&Desc> {
        let counters = self.counters.iter().flat_map(|(c, _)| c.desc());
        counters
            .chain(self.gauges.iter().flat_map(|(g, _)| g.desc()))
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        for (c, read) in &self.counters {
            let now = read();
            let delta = now - c.get();
            if delta > 0.0 {
                c.inc_by(delta);
            }
            out.extend(c.collect());
        }
        for (g, read) in &self.gauges {
            g.set(read());
            out.extend(g.collect());
        }
        out
    }
}

/// The standard process metrics (CPU, memory, file descriptors) where the
/// platform has them.
pub fn register_process_metrics() {
    let _ = prometheus::register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
}
