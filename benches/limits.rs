//! Rate-limit decisions: one local decision (key the request, take a token),
//! and the same policy decided in a real local `redis-server` (the shared
//! tier's added latency is the difference).

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;

use awning::config::{LimitKey, LimitPolicy, LimiterSettings, Redis, RedisFallback, RedisServers};
use awning::limits::{KeySource, Limiter, Tier};

fn policy(shared: bool) -> LimitPolicy {
    LimitPolicy {
        name: "api".into(),
        limit: 300,
        window: Duration::from_secs(60),
        burst: 50,
        key: vec![LimitKey::ClientIp],
        shadow: false,
        misses_only: false,
        headers_always: false,
        lockout: None,
        shared,
        on_redis_error: RedisFallback::Local,
        definition: 0,
    }
}

const SETTINGS: LimiterSettings = LimiterSettings {
    table_size: 1_000_000,
    ipv6_prefix: 64,
    json_body: false,
};

fn local_decision(c: &mut Criterion) {
    let limiter = Limiter::new(&SETTINGS, None);
    let policy = policy(false);
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
            limiter.decide_locally(&policy, black_box(src))
        })
    });
    let src = KeySource {
        client_ip: Some([192, 0, 2, 1].into()),
        route: "api",
        headers: &headers,
    };
    c.bench_function("limits/local_decision_one_client", |b| {
        b.iter(|| limiter.decide_locally(&policy, black_box(src)))
    });
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A throwaway redis-server on a free loopback port, or `None` (with a
/// message) when it is not installed.
fn start_redis() -> Option<(RedisServer, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!(
            "redis-server not found (apt-get install redis-server): skipping the shared-tier bench"
        );
        return None;
    };
    let server = RedisServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, port))
}

fn shared_decision(c: &mut Criterion) {
    let Some((_server, port)) = start_redis() else {
        return;
    };
    let redis = Redis {
        servers: RedisServers::Standalone(format!("redis://127.0.0.1:{port}")),
        timeout: Duration::from_millis(50),
        expected_nodes: 1,
        key_seed: 0,
        node_id: "bench".into(),
        purge_wait: Duration::from_secs(1),
    };
    let limiter = Limiter::new(&SETTINGS, Some(&redis));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shared = limiter.shared_tier().expect("shared tier");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    rt.spawn(async move { shared.maintain(stopped).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !limiter.shared_tier().is_some_and(|s| s.is_connected()) {
        assert!(Instant::now() < deadline, "no connection to redis");
        std::thread::sleep(Duration::from_millis(10));
    }
    let headers = HeaderMap::new();
    let src = KeySource {
        client_ip: Some([192, 0, 2, 1].into()),
        route: "api",
        headers: &headers,
    };
    let shared_policy = policy(true);
    let local_policy = policy(false);
    let v = rt.block_on(limiter.decide(&shared_policy, src));
    assert_eq!(v.tier, Tier::Shared, "the bench must measure Redis");
    c.bench_function("limits/shared_decision_local_redis", |b| {
        b.iter(|| rt.block_on(limiter.decide(&shared_policy, black_box(src))))
    });
    c.bench_function("limits/local_decision_same_path", |b| {
        b.iter(|| rt.block_on(limiter.decide(&local_policy, black_box(src))))
    });
}

criterion_group!(benches, local_decision, shared_decision);
criterion_main!(benches);
