//! The shared rate-limit tier: real awning processes and a real redis-server.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;

const RULES: &str = r#"
limits:
  team:    { rate: 10/min, burst: 10, key: [{ header: x-api-key }], scope: shared, headers: always }
  guard:   { rate: 1/s, burst: 1, key: [{ header: x-api-key }], scope: shared, lockout: { after: 2, for: 2s, max: 8s } }
  strict:  { rate: 10/min, burst: 10, key: [{ header: x-api-key }], scope: shared, on_redis_error: closed }
  lenient: { rate: 1/min, burst: 1, key: [{ header: x-api-key }], scope: shared, on_redis_error: open }
routes:
  - name: team
    match: { prefix: "/team" }
    upstream: shop
    limits: [team]
  - name: login
    match: { prefix: "/login" }
    upstream: shop
    limits: [guard]
  - name: strict
    match: { prefix: "/strict" }
    upstream: shop
    limits: [strict]
  - name: lenient
    match: { prefix: "/lenient" }
    upstream: shop
    limits: [lenient]
"#;

/// A latency budget generous enough that a busy test machine does not push
/// decisions out of Redis (the default 5 ms is tested against a paused Redis).
const BUDGET: &str = ", timeout: 250ms";

/// A node of a two-node shop sharing `redis_yaml`.
fn node(origin: &FakeOrigin, redis_yaml: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra(redis_yaml),
    )
}

fn call(proxy: &ProxyUnderTest, path: &str, key: &str) -> Response {
    Request::get(path).header("x-api-key", key).send(proxy.addr)
}

/// The quota a node advertises for `/team` right now (10 when deciding in
/// Redis, 5 when deciding alone as one of two nodes). Each probe uses a fresh
/// key so probing spends no budget that is measured.
fn advertised_quota(proxy: &ProxyUnderTest, probe: &mut u32) -> String {
    *probe += 1;
    let r = call(proxy, "/team", &format!("probe-{probe}"));
    assert!(r.status < 500, "a 5xx while probing: {}", r.status);
    r.header("ratelimit-policy").unwrap_or("").to_string()
}

/// `checks.redis.connected` of the node's readiness document.
fn redis_connected(proxy: &ProxyUnderTest) -> Option<bool> {
    let ready = get(proxy.admin, "/readyz");
    let doc: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    let connected = doc["checks"]["redis"]["connected"].as_bool();
    // The `strict` policy (on_redis_error: closed) needs Redis to serve.
    let want = if connected == Some(false) { 503 } else { 200 };
    assert_eq!(ready.status, want, "{doc}");
    connected
}

/// Waits until the node decides in Redis (it connects in the background
/// after it starts listening).
fn wait_connected(proxy: &ProxyUnderTest) {
    eventually(
        "the node to connect to Redis",
        Duration::from_secs(10),
        || (redis_connected(proxy) == Some(true)).then_some(()),
    );
}

#[test]
fn two_nodes_share_one_budget() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::fixed("ok");
    // Both nodes seed the key hash with the same secret.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "cluster-secret\n").unwrap();
    let yaml = redis.yaml(&format!(
        "{BUDGET}, key_secret_file: \"{}\"",
        secret.path().display()
    ));
    let a = node(&origin, &yaml);
    let b = node(&origin, &yaml);
    wait_connected(&a);
    wait_connected(&b);
    let barrier = Arc::new(Barrier::new(40));
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let barrier = barrier.clone();
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            thread::spawn(move || {
                barrier.wait();
                Request::get("/team")
                    .header("x-api-key", "one-team")
                    .send(addr)
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    assert_eq!(origin.count("/team"), 10);
    let allowed =
        "awning_ratelimit_decisions_total{decision=\"allow\",policy=\"team\",tier=\"shared\"}";
    assert_eq!(a.metric(allowed) + b.metric(allowed), 10.0);
    assert_eq!(a.metric("awning_redis_connected"), 1.0);
    assert!(a.metric("awning_redis_command_duration_seconds_count{command=\"decide\"}") >= 1.0);
    let keys = redis.command_full(&["KEYS", "awning:rl:*"]).unwrap();
    assert!(
        !keys.contains("one-team"),
        "raw key values never reach Redis: {keys}"
    );
}

#[test]
fn when_redis_dies_nodes_fall_back_to_their_share_and_recover_when_it_returns() {
    let mut redis = RedisServer::start();
    let origin = FakeOrigin::fixed("ok");
    let yaml = redis.yaml(&format!("{BUDGET}, expected_nodes: 2"));
    let a = node(&origin, &yaml);
    let b = node(&origin, &yaml);
    wait_connected(&a);
    wait_connected(&b);
    let mut probe = 0;
    let shared = "\"team\";q=10;w=60";
    let alone = "\"team\";q=5;w=60";
    assert_eq!(advertised_quota(&a, &mut probe), shared);
    assert_eq!(advertised_quota(&b, &mut probe), shared);

    redis.kill();
    for proxy in [&a, &b] {
        eventually("the node to decide alone", Duration::from_secs(10), || {
            (advertised_quota(proxy, &mut probe) == alone).then_some(())
        });
    }
    // Each node allows its share: together the budget, not twice it.
    for proxy in [&a, &b] {
        let statuses: Vec<u16> = (0..10)
            .map(|_| call(proxy, "/team", "down").status)
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            5,
            "{statuses:?}"
        );
        assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    }
    assert!(a.metric("awning_ratelimit_decisions_total{decision=\"allow\",policy=\"team\",tier=\"fallback\"}") >= 5.0);
    assert!(a.metric("awning_ratelimit_redis_failures_total") >= 1.0);
    assert_eq!(
        redis_connected(&a),
        Some(false),
        "readyz tells, and stays 200"
    );

    redis.restart();
    for proxy in [&a, &b] {
        eventually(
            "the node to decide in Redis again",
            Duration::from_secs(10),
            || (advertised_quota(proxy, &mut probe) == shared).then_some(()),
        );
    }
    assert_eq!(redis_connected(&a), Some(true));
    let statuses: Vec<u16> = (0..20)
        .map(|i| call(if i % 2 == 0 { &a } else { &b }, "/team", "after").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
}

#[test]
fn a_slow_redis_costs_at_most_the_latency_budget_and_decides_locally() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::fixed("ok");
    let a = node(&origin, &redis.yaml(", expected_nodes: 2, timeout: 20ms"));
    wait_connected(&a);
    let mut probe = 0;
    eventually("a decision in Redis", Duration::from_secs(10), || {
        (advertised_quota(&a, &mut probe) == "\"team\";q=10;w=60").then_some(())
    });
    // Redis holds every client's commands for 3 s: alive, but too slow.
    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", "3000", "ALL"]).unwrap(),
        "+OK"
    );
    let r = call(&a, "/team", "slow");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), Some("\"team\";q=5;w=60"));
    assert!(a.metric("awning_ratelimit_redis_failures_total{reason=\"timeout\"}") >= 1.0);
    eventually(
        "Redis decisions after the pause",
        Duration::from_secs(15),
        || (advertised_quota(&a, &mut probe) == "\"team\";q=10;w=60").then_some(()),
    );
}

#[test]
fn a_lockout_on_one_node_holds_on_the_other_and_escalates() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::fixed("ok");
    let a = node(&origin, &redis.yaml(BUDGET));
    let b = node(&origin, &redis.yaml(BUDGET));
    wait_connected(&a);
    wait_connected(&b);
    let retry = |r: &Response| r.header("retry-after").unwrap_or("").to_string();

    assert_eq!(call(&a, "/login", "mallory").status, 200);
    assert_eq!(call(&a, "/login", "mallory").status, 429);
    let locking = call(&a, "/login", "mallory");
    assert_eq!(locking.status, 429);
    assert_eq!(retry(&locking), "2", "second denial starts a 2 s lockout");
    let elsewhere = call(&b, "/login", "mallory");
    assert_eq!(elsewhere.status, 429);
    assert!(["1", "2"].contains(&retry(&elsewhere).as_str()));

    eventually("the lockout to expire", Duration::from_secs(10), || {
        (call(&b, "/login", "mallory").status == 200).then_some(())
    });
    assert_eq!(call(&b, "/login", "mallory").status, 429);
    let again = call(&a, "/login", "mallory");
    assert_eq!(again.status, 429);
    assert_eq!(retry(&again), "4", "the second lockout is twice as long");
    let lockouts = a.metric("awning_ratelimit_decisions_total{decision=\"lockout\"")
        + b.metric("awning_ratelimit_decisions_total{decision=\"lockout\"");
    assert!(lockouts >= 3.0, "{lockouts} lockout decisions counted");
}

#[test]
fn without_redis_closed_policies_deny_and_open_policies_allow() {
    let origin = FakeOrigin::fixed("ok");
    let nothing_there = format!("redis: {{ url: \"redis://127.0.0.1:{}\" }}\n", free_port());
    let a = node(&origin, &nothing_there);
    let strict = call(&a, "/strict", "k");
    assert_eq!(strict.status, 429);
    assert!(strict.has_header("retry-after"));
    for _ in 0..5 {
        assert_eq!(
            call(&a, "/lenient", "k").status,
            200,
            "open: beyond its burst of 1"
        );
    }
    assert_eq!(origin.count("/strict"), 0);
}

/// `rounds` requests per key, alternating between the nodes: how many of
/// each key's were allowed.
fn admitted_per_key(
    a: &ProxyUnderTest,
    b: &ProxyUnderTest,
    keys: &[&str],
    rounds: usize,
) -> Vec<usize> {
    keys.iter()
        .map(|key| {
            (0..rounds)
                .filter(|i| {
                    let node = if i % 2 == 0 { a } else { b };
                    let r = call(node, "/team", key);
                    assert!(r.status == 200 || r.status == 429, "{}", r.status);
                    assert_eq!(
                        r.header("ratelimit-policy"),
                        Some("\"team\";q=10;w=60"),
                        "decided in Redis"
                    );
                    r.status == 200
                })
                .count()
        })
        .collect()
}

#[test]
fn a_redis_cluster_holds_the_shared_budget_across_slots() {
    let cluster = RedisServer::cluster(3);
    let urls: Vec<String> = cluster.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let yaml = format!("redis: {{ cluster: [{}]{BUDGET} }}\n", urls.join(", "));
    let origin = FakeOrigin::fixed("ok");
    let a = node(&origin, &yaml);
    let b = node(&origin, &yaml);
    let mut probe = 0;
    eventually("decisions in the cluster", Duration::from_secs(10), || {
        (advertised_quota(&a, &mut probe) == "\"team\";q=10;w=60").then_some(())
    });
    eventually("decisions in the cluster", Duration::from_secs(10), || {
        (advertised_quota(&b, &mut probe) == "\"team\";q=10;w=60").then_some(())
    });
    // Keys whose hashes land on different slots, so on different primaries.
    let keys = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    assert_eq!(admitted_per_key(&a, &b, &keys, 14), vec![10; keys.len()]);
    let used: Vec<usize> = cluster
        .iter()
        .map(|n| {
            let info = n.command_full(&["INFO", "keyspace"]).unwrap();
            info.split("keys=")
                .nth(1)
                .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
        })
        .collect();
    assert!(
        used.iter().filter(|k| **k > 0).count() >= 2,
        "buckets spread over the primaries: {used:?}"
    );
}

#[test]
fn through_sentinel_the_nodes_find_the_primary_and_share_the_budget() {
    let primary = RedisServer::start();
    let sentinel = RedisServer::sentinel_for(&primary);
    let yaml = format!(
        "redis: {{ sentinel: {{ master: mymaster, nodes: [\"{}\"] }}{BUDGET} }}\n",
        sentinel.url()
    );
    let origin = FakeOrigin::fixed("ok");
    let a = node(&origin, &yaml);
    let b = node(&origin, &yaml);
    let mut probe = 0;
    for proxy in [&a, &b] {
        eventually(
            "decisions through Sentinel",
            Duration::from_secs(10),
            || (advertised_quota(proxy, &mut probe) == "\"team\";q=10;w=60").then_some(()),
        );
    }
    assert_eq!(admitted_per_key(&a, &b, &["one", "two"], 14), vec![10, 10]);
    let keys = primary.command(&["DBSIZE"]).unwrap();
    assert_ne!(keys, ":0", "the buckets live on the primary");
}
