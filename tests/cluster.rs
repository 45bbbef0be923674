//! Many nodes, one shop: three real awning processes sharing a real Redis
//! (standalone, and a 3-primary Redis Cluster) purge together and hold one
//! rate limit.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;

const TOKEN: &str = "cluster-token";

const RULES: &str = r#"
limits:
  team: { rate: 9/min, burst: 9, key: [{ header: x-api-key }], scope: shared, headers: always }
routes:
  - name: pages
    match: { prefix: "/p/" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: team
    match: { prefix: "/team" }
    upstream: shop
    limits: [team]
"#;

struct Shop {
    origin: FakeOrigin,
    nodes: Vec<ProxyUnderTest>,
    _token: tempfile::NamedTempFile,
}

/// Three nodes sharing the Redis of `redis_yaml`, each seeing all three live.
fn shop(redis_yaml: &str) -> Shop {
    shop_with(redis_yaml, "")
}

/// The same, with more proxy.yaml (`extra`).
fn shop_with(redis_yaml: &str, extra: &str) -> Shop {
    let versions = std::sync::atomic::AtomicUsize::new(0);
    let origin = FakeOrigin::start(move |r| match r.path() {
        "/p/slow" => Reply::ok("slow page").delay(Duration::from_millis(300)),
        // Each fetch a new version, to tell a fresh copy from a purged one.
        "/p/versioned" => {
            let v = versions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            Reply::ok(&format!("version {v}"))
        }
        "/p/big" => Reply::ok(&"big page ".repeat(20_000)),
        "/p/nostore" => Reply::ok("personal")
            .header("cache-control", "no-store")
            .delay(Duration::from_millis(200)),
        p => Reply::ok(&format!("page {p}")),
    });
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), TOKEN).unwrap();
    let nodes: Vec<ProxyUnderTest> = (0..3)
        .map(|_| {
            ProxyUnderTest::start(
                Setup::new()
                    .upstream("shop", &[origin.addr()], "")
                    .admin_token_file(token.path())
                    .rules(RULES)
                    .extra(redis_yaml)
                    .extra(extra),
            )
        })
        .collect();
    for n in &nodes {
        eventually("three live nodes", Duration::from_secs(15), || {
            (n.metric("awning_cluster_nodes") == 3.0).then_some(())
        });
    }
    Shop {
        origin,
        nodes,
        _token: token,
    }
}

fn purge(node: &ProxyUnderTest, url: &str) -> serde_json::Value {
    let body = format!("{{\"urls\": [\"{url}\"]}}");
    let r = Request::post("/purge", body.as_bytes())
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .send(node.admin);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// Caches `path` on every node: one origin request each, then hits.
fn cache_everywhere(shop: &Shop, path: &str) {
    let before = shop.origin.count(path);
    for n in &shop.nodes {
        assert_eq!(get(n.addr, path).status, 200);
    }
    for n in &shop.nodes {
        assert_eq!(get(n.addr, path).status, 200);
    }
    assert_eq!(
        shop.origin.count(path),
        before + 3,
        "one fill per node, then hits"
    );
}

fn purges_reach_every_node(redis_yaml: &str) {
    let shop = shop(redis_yaml);
    let [a, b, c] = [&shop.nodes[0], &shop.nodes[1], &shop.nodes[2]];

    cache_everywhere(&shop, "/p/1");
    let doc = purge(a, "shop.test/p/1");
    assert_eq!(doc["nodes"]["live"], 3, "{doc}");
    assert_eq!(
        doc["nodes"]["acknowledged"], 3,
        "every node applied it: {doc}"
    );
    assert_eq!(doc["purged"]["urls"], 1, "{doc}");
    for n in [a, b, c] {
        let before = shop.origin.count("/p/1");
        assert_eq!(get(n.addr, "/p/1").status, 200);
        assert_eq!(
            shop.origin.count("/p/1"),
            before + 1,
            "a miss on every node"
        );
    }
    assert!(b.metric("awning_cluster_purge_lag_seconds_count") >= 1.0);

    // A successful write through one node invalidates the URL on all of them.
    cache_everywhere(&shop, "/p/written");
    let r = Request::post("/p/written", b"new").send(a.addr);
    assert_eq!(r.status, 200);
    for n in [b, c] {
        let before = shop.origin.count("/p/written");
        eventually(
            "the write's invalidation reaches the node",
            Duration::from_secs(5),
            || {
                get(n.addr, "/p/written");
                (shop.origin.count("/p/written") > before).then_some(())
            },
        );
    }

    // A node stopped while a purge is issued applies it when it resumes.
    cache_everywhere(&shop, "/p/2");
    c.signal(libc::SIGSTOP);
    let doc = purge(a, "shop.test/p/2");
    assert_eq!(
        doc["nodes"]["acknowledged"], 2,
        "the stopped node has not applied it: {doc}"
    );
    c.signal(libc::SIGCONT);
    let before = shop.origin.count("/p/2");
    eventually(
        "the resumed node applies the purge",
        Duration::from_secs(10),
        || {
            get(c.addr, "/p/2");
            (shop.origin.count("/p/2") == before + 1).then_some(())
        },
    );
    assert_eq!(get(b.addr, "/p/2").status, 200);
    assert_eq!(shop.origin.count("/p/2"), before + 2, "b applied it too");
}

#[test]
fn a_purge_on_one_node_clears_every_node() {
    let redis = RedisServer::start();
    purges_reach_every_node(&redis.yaml(""));
}

#[test]
fn a_purge_on_one_node_clears_every_node_through_a_redis_cluster() {
    let cluster = RedisServer::cluster(3);
    let urls: Vec<String> = cluster.iter().map(|n| format!("\"{}\"", n.url())).collect();
    purges_reach_every_node(&format!("redis: {{ cluster: [{}] }}\n", urls.join(", ")));
}

#[test]
fn bad_stream_entries_and_a_redis_restart_lose_nothing() {
    let mut redis = RedisServer::start();
    let shop = shop(&redis.yaml(""));
    let [a, b] = [&shop.nodes[0], &shop.nodes[1]];

    // Something that is not a purge in the stream: skipped and counted.
    redis
        .command(&["XADD", "awning:purge", "*", "junk", "1"])
        .unwrap();
    for n in &shop.nodes {
        eventually("the bad entry skipped", Duration::from_secs(5), || {
            (n.metric("awning_cluster_purge_events_total{event=\"skipped\"}") == 1.0).then_some(())
        });
    }
    cache_everywhere(&shop, "/p/3");
    let doc = purge(a, "shop.test/p/3");
    assert_eq!(doc["nodes"]["acknowledged"], 3, "{doc}");

    // Redis comes back empty: the stream no longer holds the last purge each
    // node applied, so purges may have been lost; caches are emptied.
    cache_everywhere(&shop, "/p/4");
    redis.restart();
    eventually("b empties its cache", Duration::from_secs(15), || {
        (b.metric("awning_cluster_purge_events_total{event=\"cache_cleared\"}") == 1.0)
            .then_some(())
    });
    let before = shop.origin.count("/p/4");
    assert_eq!(get(b.addr, "/p/4").status, 200);
    assert_eq!(
        shop.origin.count("/p/4"),
        before + 1,
        "served from the origin"
    );
    for n in &shop.nodes {
        assert_eq!(get(n.admin, "/healthz").status, 200);
    }
    // And purges flow again through the new stream. The restarted Redis
    // knows the nodes again once each has beaten; only then is each node's
    // view (refreshed every second) complete.
    eventually(
        "three nodes registered again",
        Duration::from_secs(15),
        || (redis.command(&["ZCARD", "awning:{nodes}:live"]).ok()? == ":3").then_some(()),
    );
    for n in &shop.nodes {
        eventually(
            "every node sees three live nodes again",
            Duration::from_secs(15),
            || {
                let ready = n.readiness();
                (ready["cluster"]["live_nodes"].as_array()?.len() == 3).then_some(())
            },
        );
    }
    cache_everywhere(&shop, "/p/5");
    let doc = purge(b, "shop.test/p/5");
    assert_eq!(doc["nodes"]["acknowledged"], 3, "{doc}");
}

#[test]
fn a_purge_while_redis_is_down_is_applied_locally_and_says_so() {
    let mut redis = RedisServer::start();
    let shop = shop(&redis.yaml(""));
    cache_everywhere(&shop, "/p/6");
    redis.kill();
    let doc = purge(&shop.nodes[0], "shop.test/p/6");
    assert_eq!(doc["purged"]["urls"], 1, "{doc}");
    assert!(doc["nodes"]["error"].is_string(), "{doc}");
    assert!(doc["nodes"]["entry"].is_null(), "{doc}");
}

/// `redis:` settings of the limit tests: three nodes share the budget, and a
/// latency budget a busy test machine does not exceed.
const LIMIT_SETTINGS: &str = ", expected_nodes: 3, timeout: 250ms";

/// One budget of 9 across three nodes; with Redis gone each node allows its
/// third of it.
fn one_limit_across_three_nodes(redis: &mut [RedisServer], yaml: &str) {
    let shop = shop(yaml);
    let barrier = Arc::new(Barrier::new(30));
    let admitted: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let node = &shop.nodes[i % 3];
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    let r = Request::get("/team")
                        .header("x-api-key", "k1")
                        .send(node.addr);
                    assert!(r.status == 200 || r.status == 429, "{}", r.status);
                    usize::from(r.status == 200)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 9, "one budget of 9 across three nodes");
    assert_eq!(shop.origin.count("/team"), 9);

    for r in redis.iter_mut() {
        r.kill();
    }
    for n in &shop.nodes {
        eventually("the node decides alone", Duration::from_secs(10), || {
            let r = Request::get("/team")
                .header("x-api-key", "probe")
                .send(n.addr);
            r.header("ratelimit-policy")
                .is_some_and(|p| p.contains("q=3"))
                .then_some(())
        });
    }
    for n in &shop.nodes {
        let allowed = (0..6)
            .filter(|_| {
                Request::get("/team")
                    .header("x-api-key", "k2")
                    .send(n.addr)
                    .status
                    == 200
            })
            .count();
        assert_eq!(allowed, 3, "each node its third of the budget");
    }
}

#[test]
fn three_nodes_hold_one_limit_and_a_third_each_without_redis() {
    let redis = RedisServer::start();
    let yaml = redis.yaml(LIMIT_SETTINGS);
    one_limit_across_three_nodes(&mut [redis], &yaml);
}

#[test]
fn three_nodes_hold_one_limit_through_a_redis_cluster() {
    let mut cluster = RedisServer::cluster(3);
    let urls: Vec<String> = cluster.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let yaml = format!(
        "redis: {{ cluster: [{}]{LIMIT_SETTINGS} }}\n",
        urls.join(", ")
    );
    one_limit_across_three_nodes(&mut cluster, &yaml);
}

const L2: &str = "cache: { shared: redis }";
/// A latency budget a busy test machine does not exceed (the default is
/// 50 ms; slower answers send the request to the origin, by design).
const L2_BUDGET: &str = ", timeout: 250ms";

#[test]
fn with_the_shared_cache_one_nodes_fill_serves_the_others() {
    let redis = RedisServer::start();
    let shop = shop_with(&redis.yaml(L2_BUDGET), L2);
    let [a, b, c] = [&shop.nodes[0], &shop.nodes[1], &shop.nodes[2]];
    for path in ["/p/10", "/p/big"] {
        let first = get(a.addr, path);
        assert_eq!(first.status, 200);
        for n in [b, c] {
            let r = get(n.addr, path);
            assert_eq!(r.status, 200);
            assert_eq!(r.body, first.body, "the same page");
        }
        assert_eq!(
            shop.origin.count(path),
            1,
            "{path}: one origin request for three nodes"
        );
    }
    // From Redis at once, or after waiting for a's write to land.
    let from_l2 = b.metric("awning_cache_l2_events_total{event=\"hit\"}")
        + b.metric("awning_cache_l2_events_total{event=\"waited\"}");
    assert!(from_l2 >= 2.0, "{from_l2}");
    // A big page is stored compressed and comes back whole (checked above).
    let keys = redis.command_full(&["KEYS", "awning:l2:*"]).unwrap();
    assert!(keys.matches("awning:l2:").count() >= 2, "{keys}");

    // A purge on any node keeps the purged L2 copy from serving anywhere:
    // the next node to ask fetches a new version, which then serves the rest.
    assert_eq!(get(a.addr, "/p/versioned").text(), "version 1");
    for n in [b, c] {
        assert_eq!(get(n.addr, "/p/versioned").text(), "version 1");
    }
    let doc = purge(a, "shop.test/p/versioned");
    assert_eq!(doc["nodes"]["acknowledged"], 3, "{doc}");
    // The purging node first: its own copy must not come back from Redis.
    for n in [a, b, c] {
        let t = get(n.addr, "/p/versioned").text();
        assert_ne!(t, "version 1", "never the purged copy");
    }
    // Normally 2 (the new version is shared); a Redis slower than the
    // budget on a busy machine sends a node to the origin instead.
    assert!(shop.origin.count("/p/versioned") <= 4);
}

#[test]
fn a_stampede_on_three_nodes_sends_one_origin_request() {
    let redis = RedisServer::start();
    let shop = shop_with(&redis.yaml(L2_BUDGET), L2);
    let barrier = Arc::new(Barrier::new(300));
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = (0..300)
            .map(|i| {
                let node = &shop.nodes[i % 3];
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    get(node.addr, "/p/slow").status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        shop.origin.count("/p/slow"),
        1,
        "one origin request for 300 misses on 3 nodes"
    );
}

#[test]
fn corrupt_records_and_a_dead_redis_cost_no_request() {
    let mut redis = RedisServer::start();
    let shop = shop_with(&redis.yaml(L2_BUDGET), L2);
    let [a, b] = [&shop.nodes[0], &shop.nodes[1]];
    assert_eq!(get(a.addr, "/p/20").status, 200);
    // The record is written after the answer, asynchronously.
    let key = eventually("a's record in Redis", Duration::from_secs(5), || {
        let keys = redis.command_full(&["KEYS", "awning:l2:*"]).ok()?;
        keys.lines()
            .find(|l| l.starts_with("awning:l2:") && !l.ends_with(":lock"))
            .map(str::to_string)
    });
    redis.command(&["SET", &key, "not a record"]).unwrap();
    let r = get(b.addr, "/p/20");
    assert_eq!((r.status, r.text().as_str()), (200, "page /p/20"));
    assert_eq!(
        b.metric("awning_cache_l2_events_total{event=\"corrupt\"}"),
        1.0
    );
    assert_eq!(
        shop.origin.count("/p/20"),
        2,
        "served from the origin instead"
    );

    // Redis dies under load: every request is still answered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = thread::scope(|s| {
        let handles: Vec<_> = shop
            .nodes
            .iter()
            .map(|n| {
                let stop = stop.clone();
                s.spawn(move || {
                    let mut failed = 0;
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2000 {
                        i += 1;
                        if get(n.addr, &format!("/p/load-{}", i % 50)).status != 200 {
                            failed += 1;
                        }
                    }
                    failed
                })
            })
            .collect();
        eventually("load running", Duration::from_secs(5), || {
            (shop.origin.total() > 20).then_some(())
        });
        redis.kill();
        let before = shop.origin.total();
        eventually(
            "more requests after the kill",
            Duration::from_secs(10),
            || (shop.origin.total() > before + 30).then_some(()),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(failures, 0, "requests failed while Redis died");
}

#[test]
fn waiting_nodes_go_to_the_origin_at_once_when_the_answer_cannot_be_shared() {
    let redis = RedisServer::start();
    let shop = shop_with(&redis.yaml(L2_BUDGET), L2);
    let barrier = Arc::new(Barrier::new(60));
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|i| {
                let node = &shop.nodes[i % 3];
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    get(node.addr, "/p/nostore").status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for n in &shop.nodes {
        assert_eq!(
            n.metric("awning_cache_l2_events_total{event=\"lock_timeout\"}"),
            0.0,
            "nobody waited out the lock for an answer that was never shared"
        );
    }
    assert_eq!(
        shop.origin.count("/p/nostore"),
        60,
        "no-store: each request its own answer"
    );
}
