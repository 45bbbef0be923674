//! Prometheus metrics, in the default registry that the metrics listener serves.

pub mod access_log;
pub mod names;

use pingora_prometheus::prometheus::{self, IntCounterVec, IntGauge, Opts};

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

static REJECTED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_vec(
        names::HTTP_REJECTED,
        "Requests refused by awning before the origin, by reason.",
        &["reason"],
    )
});

/// Counts a request refused for `reason`.
pub fn rejected(reason: &str) {
    REJECTED.with_label_values(&[reason]).inc();
}
