//! The access log: one JSON line per request with what an operator needs.

mod common;

use std::time::Duration;

use common::*;

const RULES: &str = r#"
limits:
  tight: { rate: 1/min, burst: 1 }
routes:
  - name: products
    match: { prefix: "/api/products" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: login
    match: { prefix: "/login" }
    upstream: shop
    limits: [tight]
"#;

fn start(origin: &FakeOrigin, access_log: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra(&format!("access_log: {{ to: access.log{access_log} }}")),
    )
}

/// The log's lines once there are `n` of them.
fn lines(proxy: &ProxyUnderTest, n: usize) -> Vec<serde_json::Value> {
    let path = proxy.dir.path().join("access.log");
    eventually("access-log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
}

#[test]
fn each_request_is_one_json_line_with_every_field() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin, "");
    let miss = get(proxy.addr, "/api/products?email=a@b.c");
    let hit = get(proxy.addr, "/api/products?email=a@b.c");
    let allowed = get(proxy.addr, "/login");
    let limited = get(proxy.addr, "/login");
    let unknown = get(proxy.addr, "/nowhere");
    assert_eq!(
        [
            miss.status,
            hit.status,
            allowed.status,
            limited.status,
            unknown.status
        ],
        [200, 200, 200, 429, 404]
    );
    let log = lines(&proxy, 5);
    let fields = [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "route",
        "cache",
        "limit",
        "upstream",
    ];
    for line in &log {
        for f in fields {
            assert!(line.get(f).is_some(), "{f} missing in {line}");
        }
        assert!(line.get("query").is_none(), "no query string by default");
    }
    eprintln!(
        "{log:#?} {:?} {:?}",
        miss.header("x-request-id"),
        hit.header("x-request-id")
    );
    // Lines are written as requests finish, not always in the order sent:
    // each is found by the id its response carried.
    let line = |r: &Response| {
        let id = r.header("x-request-id").expect("an id");
        log.iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}"))
    };
    let (miss, hit, allowed, limited, unknown) = (
        line(&miss),
        line(&hit),
        line(&allowed),
        line(&limited),
        line(&unknown),
    );
    assert_eq!(miss["cache"], "miss");
    assert_eq!(miss["route"], "products");
    assert_eq!(miss["path"], "/api/products");
    assert_eq!(miss["client_ip"], "127.0.0.1");
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["bytes_out"], 2);
    assert_eq!(miss["upstream"], origin.addr().to_string());
    assert!(miss["upstream_ms"].as_f64().is_some());
    assert_eq!(hit["cache"], "hit");
    assert!(hit["upstream_ms"].is_null(), "a hit never asked the origin");
    assert_eq!(allowed["limit"], "tight:allow");
    assert_eq!(limited["limit"], "tight:deny");
    assert_eq!(limited["status"], 429);
    assert_eq!(unknown["status"], 404);
    assert!(unknown["route"].is_null());
}

#[test]
fn query_strings_are_logged_only_when_asked_and_hits_can_be_sampled_out() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin, ", query: true, hit_sample: 0");
    get(proxy.addr, "/api/products?page=2");
    get(proxy.addr, "/api/products?page=2");
    get(proxy.addr, "/api/products?page=2");
    get(proxy.addr, "/nowhere?x=1");
    let log = lines(&proxy, 2);
    assert_eq!(log.len(), 2, "the two hits were sampled out: {log:?}");
    let miss = log.iter().find(|l| l["cache"] == "miss").expect("the miss");
    assert_eq!(miss["query"], "page=2");
    assert!(log
        .iter()
        .any(|l| l["status"] == 404 && l["query"] == "x=1"));
}
