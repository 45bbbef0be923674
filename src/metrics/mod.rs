//! Prometheus metrics, in the default registry that the metrics listener serves.

pub mod names;

use pingora_prometheus::prometheus::{self, IntGauge};

/// A gauge registered in the default registry (registration failures, e.g. a
/// second engine in one process, leave it unregistered but usable).
pub fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}
