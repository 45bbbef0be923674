//! One local rate-limit decision: key the request, take a token.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;

use awning::config::{LimitKey, LimitPolicy};
use awning::limits::{KeySource, Limiter};

fn local_decision(c: &mut Criterion) {
    let limiter = Limiter::new(1_000_000);
    let policy = LimitPolicy {
        name: "api".into(),
        limit: 300,
        window: Duration::from_secs(60),
        burst: 50,
        key: vec![LimitKey::ClientIp],
        shadow: false,
        misses_only: false,
        headers_always: false,
        lockout: None,
    };
    let headers = HeaderMap::new();
    let mut n: u32 = 0;
    c.bench_function("limits/local_decision_distinct_clients", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let src = KeySource {
                client_ip: Some(std::net::IpAddr::from(n.to_be_bytes())),
                route: "api",
                headers: &headers,
            };
            let key = limiter.key(&policy, black_box(src));
            limiter.check(&policy, key)
        })
    });
    let src = KeySource {
        client_ip: Some([192, 0, 2, 1].into()),
        route: "api",
        headers: &headers,
    };
    c.bench_function("limits/local_decision_one_client", |b| {
        b.iter(|| limiter.check(&policy, limiter.key(&policy, black_box(src))))
    });
}

criterion_group!(benches, local_decision);
criterion_main!(benches);
