//! Rate limiting (local tier) through the real binary.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const RULES: &str = r#"
limits:
  burst10: { rate: 10/min, burst: 10, key: [client_ip] }
  tenps:   { rate: 10/s, burst: 1 }
  auth:    { rate: 5/min, burst: 5, key: [client_ip] }
  shadow:  { rate: 1/min, burst: 1, mode: shadow, headers: always }
  origin:  { rate: 1/min, burst: 1, key: [route], count: misses }
  user:    { rate: 2/min, burst: 2, key: [{ cookie: session }] }
  apikey:  { rate: 2/min, burst: 2, key: [{ header: x-api-key }] }
routes:
  - name: api
    match: { prefix: "/api" }
    upstream: shop
    limits: [apikey]
  - name: exact
    match: { prefix: "/exact" }
    upstream: shop
    limits: [burst10]
  - name: refill
    match: { prefix: "/refill" }
    upstream: shop
    limits: [tenps]
  - name: login
    match: { prefix: "/login" }
    upstream: shop
    limits: [auth]
  - name: trial
    match: { prefix: "/trial" }
    upstream: shop
    limits: [shadow]
  - name: cached
    match: { prefix: "/cached/" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
    limits: [origin]
  - name: account
    match: { prefix: "/account" }
    upstream: shop
    limits: [user]
"#;

fn proxy(origin: &FakeOrigin) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES),
    )
}

#[test]
fn a_burst_of_ten_admits_exactly_ten_of_a_hundred_concurrent_requests() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin);
    let barrier = Arc::new(Barrier::new(100));
    let addr = proxy.addr;
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                get(addr, "/exact").status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 90);
    assert_eq!(origin.count("/exact"), 10);
}

#[test]
fn refill_follows_the_rate() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin);
    let started = Instant::now();
    let mut admitted = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        if get(proxy.addr, "/refill").status == 200 {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed();
    // One from the full bucket, then one per 100 ms.
    let expected = 1 + elapsed.as_millis() as u64 / 100;
    eprintln!("admitted {admitted} in {elapsed:?}, expected {expected}");
    assert!(
        admitted.abs_diff(expected) <= 1,
        "admitted {admitted}, expected {expected} (±5 %)"
    );
}

#[test]
fn denials_are_429_with_retry_after_and_ratelimit_fields() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin);
    for _ in 0..5 {
        assert_eq!(get(proxy.addr, "/login").status, 200);
    }
    let denied = get(proxy.addr, "/login");
    assert_eq!(denied.status, 429);
    assert_eq!(denied.text(), "429 Too Many Requests\n");
    let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(denied.header("ratelimit-policy"), Some("\"auth\";q=5;w=60"));
    let limit = denied.header("ratelimit").unwrap();
    assert!(limit.starts_with("\"auth\";r=0;t="), "{limit}");
    assert_eq!(origin.count("/login"), 5);
    // Spoofed forwarding headers from an untrusted client change nothing.
    let spoofed = Request::get("/login")
        .header("X-Forwarded-For", "203.0.113.9")
        .send(proxy.addr);
    assert_eq!(spoofed.status, 429);
}

#[test]
fn shadow_mode_never_denies_but_tells() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin);
    for _ in 0..5 {
        let r = get(proxy.addr, "/trial");
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_some(), "headers: always");
    }
    assert!(get(proxy.addr, "/trial")
        .header("ratelimit")
        .unwrap()
        .contains(";r=0;"));
    eventually(
        "the shadow denial to be logged",
        Duration::from_secs(5),
        || {
            proxy
                .stderr()
                .contains("would deny (shadow mode)")
                .then_some(())
        },
    );
    let counted = |result: &str| -> u64 {
        proxy.metric(&format!(
            "awning_ratelimit_decisions_total{{decision=\"{result}\",policy=\"shadow\",tier=\"local\"}}"
        )) as u64
    };
    assert_eq!(counted("allow"), 1);
    assert_eq!(counted("shadow_deny"), 5, "counted, though never denied");
    assert_eq!(counted("deny"), 0);
}

#[test]
fn count_misses_spares_cache_hits() {
    let origin = FakeOrigin::fixed("page");
    let proxy = proxy(&origin);
    assert_eq!(
        get(proxy.addr, "/cached/a").status,
        200,
        "the miss takes the one token"
    );
    for _ in 0..5 {
        assert_eq!(
            get(proxy.addr, "/cached/a").status,
            200,
            "hits are not charged"
        );
    }
    assert_eq!(get(proxy.addr, "/cached/b").status, 429, "a second miss is");
    assert_eq!(origin.total(), 1);
}

#[test]
fn cookie_keys_give_each_customer_a_budget() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin);
    let as_user = |s: &str| {
        Request::get("/account")
            .header("Cookie", &format!("session={s}"))
            .send(proxy.addr)
            .status
    };
    assert_eq!(
        (as_user("alice"), as_user("alice"), as_user("alice")),
        (200, 200, 429)
    );
    assert_eq!(as_user("bob"), 200);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra("trusted_proxies: [\"127.0.0.1/32\"]"),
    );
    let from = |client: &str| {
        Request::get("/login")
            .header("X-Forwarded-For", &format!("198.51.100.1, {client}"))
            .send(proxy.addr)
            .status
    };
    for _ in 0..5 {
        assert_eq!(from("203.0.113.9"), 200);
    }
    assert_eq!(from("203.0.113.9"), 429);
    assert_eq!(
        from("203.0.113.10"),
        200,
        "another customer behind the same proxy"
    );
    assert_eq!(
        origin.last().header("x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.10, 127.0.0.1"),
        "a trusted proxy's chain is extended"
    );
}

#[test]
fn lockout_escalates_and_expires() {
    let origin = FakeOrigin::fixed("ok");
    let rules = r#"
limits:
  guard: { rate: 20/s, burst: 1, lockout: { after: 3, for: 1s, max: 4s } }
routes:
  - name: login
    match: { path: "/**" }
    upstream: shop
    limits: [guard]
"#;
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(rules),
    );
    let retry = |r: &Response| r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
    // One admitted, three denied by the bucket: locked for 1 s.
    assert_eq!(get(proxy.addr, "/login").status, 200);
    let mut locked = None;
    for _ in 0..4 {
        let r = get(proxy.addr, "/login");
        assert_eq!(r.status, 429);
        locked = retry(&r);
    }
    assert_eq!(locked, Some(1), "first lockout lasts `for`");
    let locked_at = Instant::now();
    let reopened = eventually("the lockout to expire", Duration::from_secs(5), || {
        (get(proxy.addr, "/login").status == 200).then(Instant::now)
    });
    assert!(
        reopened - locked_at >= Duration::from_millis(800),
        "reopened after {:?}",
        reopened - locked_at
    );
    // Three more denials: the second lockout is twice as long.
    let mut second = None;
    for _ in 0..4 {
        second = retry(&get(proxy.addr, "/login"));
    }
    assert_eq!(second, Some(2));
    assert!(
        proxy.metric("awning_ratelimit_decisions_total{decision=\"lockout\"") >= 2.0,
        "lockout refusals are counted as such"
    );
}

#[test]
fn warming_does_not_spend_the_origin_budget() {
    let origin = FakeOrigin::fixed("page");
    let rules = format!("{RULES}\nwarm:\n  - http://shop.test/cached/warm\n");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(&rules),
    );
    eventually("the warm request", Duration::from_secs(10), || {
        (origin.count("/cached/warm") == 1).then_some(())
    });
    assert_eq!(
        origin.last().header("x-awning-warm"),
        None,
        "the warm marker stays inside awning"
    );
    // The one-per-minute origin budget is still whole for the first customer miss.
    assert_eq!(get(proxy.addr, "/cached/other").status, 200);
    assert_eq!(get(proxy.addr, "/cached/warm").status, 200, "a hit");
}

#[test]
fn a_huge_header_key_is_hashed_like_any_other() {
    let origin = FakeOrigin::fixed("ok");
    // The default header bound (8 KiB) would refuse it first with 431.
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra("requests: { max_header_bytes: 32KiB }\n"),
    );
    let huge = "k".repeat(10 * 1024);
    let call = |key: &str| {
        Request::get("/api")
            .header("x-api-key", key)
            .send(proxy.addr)
            .status
    };
    assert_eq!(call(&huge), 200);
    assert_eq!(call(&huge), 200);
    assert_eq!(call(&huge), 429, "its own budget of 2, like any key");
    assert_eq!(call("other"), 200, "other keys are not affected");
    assert!(
        !proxy.stderr().contains("kkkkkkkk"),
        "key values are never logged"
    );
}

#[test]
fn denials_can_answer_in_json() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra("limiter: { body: json }\n"),
    );
    for _ in 0..5 {
        assert_eq!(get(proxy.addr, "/login").status, 200);
    }
    let denied = get(proxy.addr, "/login");
    assert_eq!(denied.status, 429);
    assert_eq!(denied.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&denied.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["policy"], "auth");
    assert_eq!(
        body["retry_after"].as_u64().unwrap().to_string(),
        denied.header("retry-after").unwrap()
    );
}
