//! Caching through the real binary, against the fake origin and its counters.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ROUTES: &str = r#"
routes:
  - name: account
    match: { path: "/account" }
    upstream: shop
  - name: account-pages
    match: { prefix: "/account/" }
    upstream: shop
  - name: compressed
    match: { prefix: "/z/" }
    upstream: shop
    compress: true
    cache: { mode: override, ttl: 10m }
  - name: stylesheets
    match: { path: "/**/*.css" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: override
    match: { prefix: "/o/" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: origin
    match: { prefix: "/r/" }
    upstream: shop
    cache: { mode: origin }
  - name: short
    match: { prefix: "/short/" }
    upstream: shop
    cache: { mode: override, ttl: 1s }
  - name: swr
    match: { prefix: "/swr/" }
    upstream: shop
    cache: { mode: override, ttl: 1s, stale_while_revalidate: 1m }
  - name: sie
    match: { prefix: "/sie/" }
    upstream: shop
    cache: { mode: override, ttl: 1s, stale_if_error: 1h }
  - name: keyed
    match: { prefix: "/k/" }
    upstream: shop
    cache:
      mode: override
      ttl: 10m
      key: { query: sorted, drop_params: ["utm_*", "fbclid"], cookies: [currency] }
      bypass_cookies: [session]
  - name: pass
    match: { path: "/**" }
    upstream: shop
"#;

const TOKEN: &str = "test-admin-token";

fn proxy_for(origin: &FakeOrigin) -> ProxyUnderTest {
    proxy_with(origin, "")
}

fn proxy_with(origin: &FakeOrigin, extra: &str) -> ProxyUnderTest {
    let token_dir = tempfile::tempdir().unwrap().keep();
    let token_file = token_dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ROUTES)
            .extra(extra)
            .admin_token_file(&token_file),
    )
}

fn status_of(resp: &Response) -> String {
    resp.header("cache-status").unwrap_or("").to_string()
}

fn purge(proxy: &ProxyUnderTest, body: &str) -> Response {
    Request::post("/purge", body.as_bytes())
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(proxy.admin)
}

/// An origin that numbers its answers per path: `path#n`.
fn counting_origin(headers: &'static [(&'static str, &'static str)]) -> FakeOrigin {
    let n = Arc::new(AtomicUsize::new(0));
    FakeOrigin::start(move |r| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reply = Reply::ok(&format!("{}#{i}", r.target));
        for (k, v) in headers {
            reply = reply.header(k, v);
        }
        reply
    })
}

#[test]
fn miss_then_hit_keeps_the_origin_count_at_one() {
    let origin = counting_origin(&[]);
    let proxy = proxy_for(&origin);
    let first = get(proxy.addr, "/o/page");
    assert_eq!(first.status, 200);
    assert_eq!(status_of(&first), "awning; fwd=miss; stored");
    let second = get(proxy.addr, "/o/page");
    assert_eq!(second.text(), first.text());
    assert!(
        status_of(&second).starts_with("awning; hit; ttl="),
        "{}",
        status_of(&second)
    );
    assert!(second.has_header("age"), "{:?}", second.headers);
    assert_eq!(origin.count("/o/page"), 1);
}

#[test]
fn entries_expire_after_their_ttl() {
    let origin = counting_origin(&[]);
    let proxy = proxy_for(&origin);
    assert_eq!(get(proxy.addr, "/short/a").text(), "/short/a#1");
    // Hits until the 1 s TTL runs out, then the origin is asked again.
    let refreshed = eventually("the entry to expire", Duration::from_secs(5), || {
        let r = get(proxy.addr, "/short/a");
        (r.text() == "/short/a#2").then_some(r)
    });
    assert!(
        status_of(&refreshed).contains("fwd=stale"),
        "{}",
        status_of(&refreshed)
    );
    assert_eq!(origin.count("/short/a"), 2);
    // The replaced entry's weight leaves the LRU with it.
    let doc: serde_json::Value = serde_json::from_slice(&get(proxy.admin, "/readyz").body).unwrap();
    let cache = &doc["checks"]["cache"];
    assert_eq!(cache["lru_tracked_bytes"], cache["stored_bytes"], "{doc}");
}

#[test]
fn override_mode_stores_what_origin_mode_leaves_to_the_origin() {
    let origin = FakeOrigin::start(|r| {
        if r.path().ends_with("/fresh") {
            Reply::ok("fresh").header("Cache-Control", "public, max-age=60")
        } else {
            Reply::ok("no headers")
        }
    });
    let proxy = proxy_for(&origin);
    for _ in 0..2 {
        get(proxy.addr, "/o/plain");
        get(proxy.addr, "/r/plain");
        get(proxy.addr, "/r/fresh");
    }
    assert_eq!(
        origin.count("/o/plain"),
        1,
        "override stores without origin freshness"
    );
    assert_eq!(
        origin.count("/r/plain"),
        2,
        "origin mode applies no default TTL"
    );
    assert_eq!(origin.count("/r/fresh"), 1, "origin mode honours max-age");
    assert!(status_of(&get(proxy.addr, "/r/plain")).contains("detail=no-freshness"));
}

#[test]
fn vary_keeps_one_variant_per_accept_encoding_bucket() {
    let origin = FakeOrigin::start(|r| {
        let ae = r.header("accept-encoding").unwrap_or("none").to_string();
        Reply::ok(&format!("for {ae}")).header("Vary", "Accept-Encoding")
    });
    let proxy = proxy_for(&origin);
    let ask = |ae: &str| {
        Request::get("/o/v")
            .header("Accept-Encoding", ae)
            .send(proxy.addr)
            .text()
    };
    assert_eq!(ask("gzip"), "for gzip");
    assert_eq!(ask("br"), "for br");
    assert_eq!(ask("gzip"), "for gzip");
    assert_eq!(ask("gzip, deflate, br"), "for br", "same bucket as br");
    assert_eq!(origin.count("/o/v"), 2);
    // The origin is asked for exactly the bucket, so an encoding another
    // client of the bucket cannot decode is never stored.
    assert_eq!(ask("zstd, gzip, deflate, br"), "for br");
    assert_eq!(ask("zstd"), "for identity");
    assert_eq!(origin.count("/o/v"), 3);
}

#[test]
fn vary_star_is_never_stored() {
    let origin = FakeOrigin::start(|_| Reply::ok("x").header("Vary", "*"));
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/o/star");
    let second = get(proxy.addr, "/o/star");
    assert_eq!(origin.count("/o/star"), 2);
    assert!(
        status_of(&second).contains("detail=vary-star"),
        "{}",
        status_of(&second)
    );
}

#[test]
fn one_customers_response_never_reaches_another() {
    let n = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |r| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        match r.path() {
            "/o/cookie" => Reply::ok(&format!("cart of customer {i}"))
                .header("Set-Cookie", &format!("session=s{i}")),
            "/o/private" => {
                Reply::ok(&format!("account of customer {i}")).header("Cache-Control", "private")
            }
            "/o/nostore" => Reply::ok(&format!("order {i}")).header("Cache-Control", "no-store"),
            _ => Reply::ok(&format!("profile {i}")),
        }
    });
    let proxy = proxy_for(&origin);
    for path in ["/o/cookie", "/o/private", "/o/nostore"] {
        let a = get(proxy.addr, path);
        let b = get(proxy.addr, path);
        assert_ne!(
            a.text(),
            b.text(),
            "{path}: second client got the first client's response"
        );
        assert_eq!(origin.count(path), 2, "{path}");
    }
    let b = get(proxy.addr, "/o/cookie");
    assert_ne!(b.header("set-cookie"), Some("session=s0"));

    // A request with credentials is not stored for others...
    let alice = Request::get("/o/me")
        .header("Authorization", "Bearer alice")
        .send(proxy.addr);
    let bob = Request::get("/o/me")
        .header("Authorization", "Bearer bob")
        .send(proxy.addr);
    assert_ne!(alice.text(), bob.text());
    assert!(status_of(&alice).contains("detail=authorization"));
    // ...and a signed-in customer's request skips the cache on routes that say so.
    let anon = get(proxy.addr, "/k/cart");
    let signed = Request::get("/k/cart")
        .header("Cookie", "session=abc")
        .send(proxy.addr);
    assert_ne!(anon.text(), signed.text());
    assert!(
        status_of(&signed).contains("fwd=bypass; detail=bypass-cookie"),
        "{}",
        status_of(&signed)
    );
}

#[test]
fn cache_deception_paths_reach_the_route_of_the_real_resource() {
    let n = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |r| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::ok(&format!("account page {i} for {}", r.target))
    });
    let proxy = proxy_for(&origin);
    for path in [
        "/account;x.css",
        "/%61ccount;.css",
        "/static/..//account;style.css",
        "/account/x.css",
        "/account/..;/account/x.css",
    ] {
        let first = get(proxy.addr, path);
        let second = get(proxy.addr, path);
        assert_ne!(first.text(), second.text(), "{path} was served from cache");
        assert!(
            status_of(&second).contains("fwd=bypass; detail=route"),
            "{path}: {}",
            status_of(&second)
        );
    }
    assert_eq!(
        origin.count("/account"),
        6,
        "the origin sees the normalised path"
    );
    for hidden in ["/assets/..%2Faccount", "/assets/..%5caccount.css"] {
        assert_eq!(get(proxy.addr, hidden).status, 400, "{hidden}");
    }
    // A real stylesheet is still cached.
    get(proxy.addr, "/assets/site.css");
    get(proxy.addr, "//assets/./site.css");
    assert_eq!(origin.count("/assets/site.css"), 1);
}

#[test]
fn key_rules_sort_and_drop_query_params_and_vary_on_a_cookie() {
    let origin = counting_origin(&[]);
    let proxy = proxy_for(&origin);
    let a = get(proxy.addr, "/k/list?b=2&a=1&utm_source=mail");
    let b = get(proxy.addr, "/k/list?a=1&b=2&fbclid=xyz");
    assert_eq!(a.text(), b.text());
    assert_eq!(origin.count("/k/list"), 1);
    assert_eq!(
        origin.last().target,
        "/k/list?a=1&b=2",
        "the origin answers the keyed query"
    );
    // Requests the cache does not serve keep their query.
    Request::post("/k/form?utm_source=x&step=2", b"{}").send(proxy.addr);
    assert_eq!(origin.last().target, "/k/form?utm_source=x&step=2");
    let twice = Request::get("/k/price")
        .header("Cookie", "currency=EUR; currency=USD")
        .send(proxy.addr);
    assert!(
        status_of(&twice).contains("detail=ambiguous-key-cookie"),
        "{}",
        status_of(&twice)
    );
    let eur = Request::get("/k/price")
        .header("Cookie", "currency=EUR")
        .send(proxy.addr);
    let usd = Request::get("/k/price")
        .header("Cookie", "currency=USD")
        .send(proxy.addr);
    let eur2 = Request::get("/k/price")
        .header("Cookie", "currency=EUR")
        .send(proxy.addr);
    assert_ne!(eur.text(), usd.text());
    assert_eq!(eur.text(), eur2.text());
    assert_eq!(
        origin.count("/k/price"),
        3,
        "EUR, USD and the ambiguous request"
    );
}

#[test]
fn synthesised_etag_answers_if_none_match_with_304() {
    let origin = counting_origin(&[]);
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/o/etag");
    let hit = get(proxy.addr, "/o/etag");
    let etag = hit.header("etag").expect("synthesised ETag").to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );
    let not_modified = Request::get("/o/etag")
        .header("If-None-Match", &etag)
        .send(proxy.addr);
    assert_eq!(not_modified.status, 304);
    let changed = Request::get("/o/etag")
        .header("If-None-Match", "\"other\"")
        .send(proxy.addr);
    assert_eq!(changed.status, 200);
    assert_eq!(origin.count("/o/etag"), 1);
}

#[test]
fn upstream_304_refreshes_the_entry_and_its_headers() {
    let n = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |r| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        if r.header("if-none-match") == Some("\"v1\"") {
            Reply::status(304, "")
                .header("ETag", "\"v1\"")
                .header("X-Revision", &i.to_string())
        } else {
            Reply::ok("body v1")
                .header("ETag", "\"v1\"")
                .header("X-Revision", &i.to_string())
        }
    });
    let proxy = proxy_for(&origin);
    assert_eq!(get(proxy.addr, "/short/r").header("x-revision"), Some("1"));
    let revalidated = eventually("a revalidation", Duration::from_secs(5), || {
        let r = get(proxy.addr, "/short/r");
        status_of(&r).contains("fwd-status=304").then_some(r)
    });
    assert_eq!(revalidated.text(), "body v1");
    assert_eq!(origin.last().header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        revalidated.header("x-revision"),
        Some("2"),
        "headers from the 304 are stored"
    );
    let hit = get(proxy.addr, "/short/r");
    assert_eq!(hit.header("x-revision"), Some("2"));
}

#[test]
fn stale_while_revalidate_serves_stale_at_once_and_refreshes_once() {
    let n = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let r = Reply::ok(&format!("v{i}"));
        if i > 1 {
            r.delay(Duration::from_millis(800))
        } else {
            r
        }
    });
    let proxy = proxy_for(&origin);
    assert_eq!(get(proxy.addr, "/swr/a").text(), "v1");
    let stale = eventually(
        "a stale-while-revalidate answer",
        Duration::from_secs(5),
        || {
            let started = Instant::now();
            let r = get(proxy.addr, "/swr/a");
            status_of(&r)
                .contains("stale-while-revalidate")
                .then_some((r, started.elapsed()))
        },
    );
    assert_eq!(stale.0.text(), "v1");
    assert!(
        stale.1 < Duration::from_millis(500),
        "stale answer waited for the origin: {:?}",
        stale.1
    );
    // More requests while the refresh runs are served stale too, without a second refresh.
    for _ in 0..5 {
        assert_eq!(get(proxy.addr, "/swr/a").text(), "v1");
    }
    let fresh = eventually("the refreshed entry", Duration::from_secs(5), || {
        let r = get(proxy.addr, "/swr/a");
        (r.text() == "v2").then_some(r)
    });
    assert!(
        status_of(&fresh).starts_with("awning; hit"),
        "{}",
        status_of(&fresh)
    );
    assert_eq!(origin.count("/swr/a"), 2);
    assert!(
        proxy.metric("awning_cache_events_total{event=\"stale_while_revalidate\"}") >= 6.0,
        "stale answers are counted"
    );
}

#[test]
fn stale_if_error_serves_stale_on_5xx_and_when_the_origin_is_gone() {
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let origin = FakeOrigin::start(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::status(503, "down")
        } else {
            Reply::ok("good copy")
        }
    });
    let proxy = proxy_for(&origin);
    assert_eq!(get(proxy.addr, "/sie/a").text(), "good copy");
    failing.store(true, Ordering::SeqCst);
    let stale = eventually("a stale-if-error answer", Duration::from_secs(5), || {
        let r = get(proxy.addr, "/sie/a");
        status_of(&r).contains("stale-if-error").then_some(r)
    });
    assert_eq!((stale.status, stale.text().as_str()), (200, "good copy"));
    assert_eq!(
        get(proxy.addr, "/sie/never-cached").status,
        503,
        "nothing stored: the origin's 5xx passes"
    );

    // Origin gone entirely: the stale copy still answers, an uncached URL gets 502.
    let up = FakeOrigin::fixed("kept");
    let proxy2 = proxy_for(&up);
    assert_eq!(get(proxy2.addr, "/sie/b").text(), "kept");
    drop(up);
    let stale = eventually(
        "stale-if-error with the origin down",
        Duration::from_secs(5),
        || {
            let r = get(proxy2.addr, "/sie/b");
            status_of(&r).contains("stale-if-error").then_some(r)
        },
    );
    assert_eq!(stale.text(), "kept");
    assert_eq!(get(proxy2.addr, "/sie/other").status, 502);
}

#[test]
fn successful_unsafe_requests_invalidate_the_url_and_its_location() {
    let origin = FakeOrigin::start(|r| match r.method.as_str() {
        "POST" => Reply::status(201, "created").header("Location", "/o/items/7"),
        _ => Reply::ok(&format!("{} v{}", r.target, r.body_len)),
    });
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/o/items");
    get(proxy.addr, "/o/items/7");
    assert!(status_of(&get(proxy.addr, "/o/items")).starts_with("awning; hit"));
    let post = Request::post("/o/items", b"{}").send(proxy.addr);
    assert_eq!(post.status, 201);
    get(proxy.addr, "/o/items");
    get(proxy.addr, "/o/items/7");
    assert_eq!(
        origin
            .received()
            .iter()
            .filter(|r| r.method == "GET" && r.target == "/o/items")
            .count(),
        2
    );
    assert_eq!(
        origin
            .received()
            .iter()
            .filter(|r| r.method == "GET" && r.target == "/o/items/7")
            .count(),
        2
    );
}

#[test]
fn purge_by_url_prefix_tag_and_soft() {
    let origin = FakeOrigin::start(|r| {
        let mut reply = Reply::ok(&format!(
            "{} {}",
            r.target,
            r.header("accept-encoding").unwrap_or("-")
        ))
        .header("Vary", "Accept-Encoding")
        .header("ETag", "\"e\"");
        if r.path().starts_with("/o/tagged") {
            reply = reply.header("Surrogate-Key", "products product-1");
        }
        if r.header("if-none-match") == Some("\"e\"") {
            reply = Reply::status(304, "").header("ETag", "\"e\"");
        }
        reply
    });
    let proxy = proxy_for(&origin);
    let fill = |path: &str| {
        for ae in ["gzip", "br"] {
            Request::get(path)
                .header("Accept-Encoding", ae)
                .send(proxy.addr);
        }
    };
    for p in ["/o/url", "/o/tree/a", "/o/tree/b", "/o/tagged", "/o/soft"] {
        fill(p);
    }

    let unauthorized =
        Request::post("/purge", br#"{"urls": ["http://shop.test/o/url"]}"#).send(proxy.admin);
    assert_eq!(unauthorized.status, 401);
    let wrong = Request::post("/purge", br#"{"urls": []}"#)
        .header("Authorization", "Bearer nope")
        .send(proxy.admin);
    assert_eq!(wrong.status, 401);

    let counts = |r: Response| -> serde_json::Value {
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    };
    let url = counts(purge(&proxy, r#"{"urls": ["http://shop.test/o/url"]}"#));
    assert_eq!(url["purged"]["urls"], 2, "both Vary variants: {url}");
    let prefix = counts(purge(&proxy, r#"{"prefixes": ["shop.test/o/tree/"]}"#));
    assert_eq!(prefix["purged"]["prefixes"], 4);
    let tag = counts(purge(&proxy, r#"{"tags": ["product-1"]}"#));
    assert_eq!(tag["purged"]["tags"], 2);
    let nothing = counts(purge(
        &proxy,
        r#"{"urls": ["http://shop.test/nothing"], "tags": ["nope"]}"#,
    ));
    assert_eq!(nothing["total"], 0);
    assert_eq!(proxy.metric("awning_cache_purged_total{by=\"urls\"}"), 2.0);
    assert_eq!(
        proxy.metric("awning_cache_purged_total{by=\"prefixes\"}"),
        4.0
    );
    assert_eq!(proxy.metric("awning_cache_purged_total{by=\"tags\"}"), 2.0);
    let soft = counts(purge(
        &proxy,
        r#"{"urls": ["shop.test/o/soft"], "soft": true}"#,
    ));
    assert_eq!(soft["purged"]["urls"], 2);

    let before = origin.total();
    fill("/o/url");
    fill("/o/tree/a");
    fill("/o/tagged");
    assert_eq!(
        origin.total() - before,
        6,
        "purged entries come from the origin again"
    );
    let soft_again = Request::get("/o/soft")
        .header("Accept-Encoding", "gzip")
        .send(proxy.addr);
    assert_eq!(soft_again.status, 200);
    assert!(
        status_of(&soft_again).contains("fwd-status=304"),
        "soft purge revalidates: {}",
        status_of(&soft_again)
    );
    assert_eq!(origin.last().header("if-none-match"), Some("\"e\""));

    let bad = purge(&proxy, r#"{"url": "typo"}"#);
    assert_eq!(bad.status, 400);
}

#[test]
fn truncated_upstream_body_is_not_stored() {
    let n = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::ok("only part of it").truncated(10_000)
        } else {
            Reply::ok("complete")
        }
    });
    let proxy = proxy_for(&origin);
    let _ = std::panic::catch_unwind(|| get(proxy.addr, "/o/trunc"));
    let next = get(proxy.addr, "/o/trunc");
    assert_eq!(next.text(), "complete");
    assert_eq!(origin.count("/o/trunc"), 2);
}

#[test]
fn objects_over_max_object_pass_through_unstored() {
    let origin = FakeOrigin::start(|r| match r.path() {
        "/o/big" => Reply::ok("").generated(300_000),
        "/o/big-chunked" => Reply::ok("")
            .generated(300_000)
            .header("Transfer-Encoding", "chunked"),
        _ => Reply::ok("").generated(1000),
    });
    let proxy = proxy_with(&origin, "cache: { memory: 4MiB, max_object: 100KiB }");
    for _ in 0..2 {
        let big = Request::get("/o/big").send_counting(proxy.addr);
        assert_eq!((big.status, big.body_len), (200, 300_000));
        // Without a Content-Length the size shows only while streaming.
        let chunked = Request::get("/o/big-chunked").send_counting(proxy.addr);
        assert_eq!((chunked.status, chunked.body_len), (200, 300_000));
    }
    assert_eq!(origin.count("/o/big"), 2);
    assert_eq!(origin.count("/o/big-chunked"), 2);
    get(proxy.addr, "/o/small");
    get(proxy.addr, "/o/small");
    assert_eq!(origin.count("/o/small"), 1);
}

#[test]
fn memory_bound_holds_under_a_flood_of_distinct_keys() {
    const KEYS: usize = 100_000;
    const THREADS: usize = 4;
    let origin = FakeOrigin::start(|_| Reply::ok("").generated(1024));
    // Keep-alive connections carry 25,000 requests each here.
    let proxy = proxy_with(
        &origin,
        "cache: { memory: 8MiB, max_object: 64KiB }\nclients: { max_requests_per_connection: 100000 }",
    );
    let addr = proxy.addr;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                use std::io::{BufReader, Write};
                let stream = common::client::connect(addr);
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                for i in (t..KEYS).step_by(THREADS) {
                    writer
                        .write_all(
                            format!("GET /o/flood/{i} HTTP/1.1\r\nHost: shop.test\r\n\r\n")
                                .as_bytes(),
                        )
                        .unwrap();
                    let r = common::client::read_response(&mut reader, false, false);
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let capacity = 8 * 1024 * 1024;
    eprintln!("{}", get(proxy.admin, "/readyz").text());
    let stored = eventually("evictions to settle", Duration::from_secs(10), || {
        let doc: serde_json::Value =
            serde_json::from_slice(&get(proxy.admin, "/readyz").body).unwrap();
        let stored = doc["checks"]["cache"]["stored_bytes"].as_u64().unwrap();
        (stored <= capacity).then_some(stored)
    });
    eprintln!("after {KEYS} distinct keys: {stored} bytes stored of {capacity}");
    assert!(
        stored > capacity / 2,
        "the cache should be nearly full, holds {stored}"
    );
    let metrics = get(proxy.metrics, "/metrics").text();
    assert!(metrics.contains("awning_cache_stored_bytes"), "{metrics}");
}

#[test]
fn compression_applies_on_the_way_out_and_the_stored_copy_stays_plain() {
    use std::io::Read;
    let page = "<html>".to_string() + &"<p>summer sale</p>".repeat(200) + "</html>";
    let body = page.clone();
    let origin = FakeOrigin::start(move |r| {
        let ctype = if r.path().ends_with(".png") {
            "image/png"
        } else {
            "text/html; charset=utf-8"
        };
        let mut reply = Reply::ok(&body);
        reply.headers.clear();
        reply.header("Content-Type", ctype)
    });
    let proxy = proxy_for(&origin);

    let gz = Request::get("/z/page")
        .header("Accept-Encoding", "gzip")
        .send(proxy.addr);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, page);
    assert!(
        gz.body.len() < page.len() / 4,
        "gzip body is {} bytes",
        gz.body.len()
    );

    let br = Request::get("/z/page")
        .header("Accept-Encoding", "gzip, deflate, br")
        .send(proxy.addr);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(
        status_of(&br).starts_with("awning; hit"),
        "compressed from the stored copy: {}",
        status_of(&br)
    );
    let mut plain = Vec::new();
    brotli::BrotliDecompress(&mut &br.body[..], &mut plain).expect("a complete brotli stream");
    assert_eq!(String::from_utf8(plain).unwrap(), page);
    assert!(
        br.body.len() < gz.body.len() * 2,
        "brotli body is {} bytes",
        br.body.len()
    );

    let head = Request::new("HEAD", "/z/page")
        .header("Accept-Encoding", "br")
        .send(proxy.addr);
    assert_eq!(head.status, 200);

    let image = Request::get("/z/logo.png")
        .header("Accept-Encoding", "br, gzip")
        .send(proxy.addr);
    assert_eq!(
        image.header("content-encoding"),
        None,
        "images are not compressed"
    );

    let identity = get(proxy.addr, "/z/page");
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.text(), page, "the stored copy is the origin's");
    assert_eq!(origin.count("/z/page"), 1);

    // Routes without `compress` pass bodies as the origin sent them.
    let untouched = Request::get("/o/page")
        .header("Accept-Encoding", "gzip")
        .send(proxy.addr);
    assert_eq!(untouched.header("content-encoding"), None);
}

#[test]
fn purge_command_line_client_uses_the_admin_api() {
    let origin = counting_origin(&[]);
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/o/cli");
    let config = proxy.config_dir().join("proxy.yaml");
    let out = std::process::Command::new(common::proxy::binary())
        .args([
            "purge",
            "-c",
            &config.to_string_lossy(),
            "--url",
            "http://shop.test/o/cli",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["purged"]["urls"], 1);
    assert_eq!(get(proxy.addr, "/o/cli").text(), "/o/cli#2");

    let none = std::process::Command::new(common::proxy::binary())
        .args(["purge", "-c", &config.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
}

#[test]
fn warm_list_fills_the_cache_at_start() {
    let origin = counting_origin(&[]);
    let rules = format!(
        "{ROUTES}\nwarm:\n  - http://shop.test/o/warm-a\n  - http://shop.test/o/warm-b?x=1\n"
    );
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(&rules)
            .extra("cache: { warm_concurrency: 2 }"),
    );
    eventually("the warm requests", Duration::from_secs(10), || {
        (origin.count("/o/warm-a") == 1 && origin.count("/o/warm-b") == 1).then_some(())
    });
    let hit = get(proxy.addr, "/o/warm-a");
    assert!(
        status_of(&hit).starts_with("awning; hit"),
        "{}",
        status_of(&hit)
    );
    assert!(status_of(&get(proxy.addr, "/o/warm-b?x=1")).starts_with("awning; hit"));
    assert_eq!(origin.count("/o/warm-a") + origin.count("/o/warm-b"), 2);
    eventually("the warm summary", Duration::from_secs(5), || {
        proxy.stderr().contains("cache warm done").then_some(())
    });
}

#[test]
fn synthesised_etags_are_not_sent_to_the_origin() {
    let origin = FakeOrigin::start(|_| {
        Reply::ok("page").header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
    });
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/short/lm");
    assert!(get(proxy.addr, "/short/lm").has_header("etag"));
    eventually("a revalidation", Duration::from_secs(5), || {
        get(proxy.addr, "/short/lm");
        (origin.count("/short/lm") == 2).then_some(())
    });
    let seen = origin.last();
    assert_eq!(
        seen.header("if-modified-since"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    assert_eq!(
        seen.header("if-none-match"),
        None,
        "awning's own tag reached the origin"
    );
}

#[test]
fn multipart_ranges_are_served_from_a_hit() {
    let body: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let b = body.clone();
    let origin = FakeOrigin::start(move |_| Reply::ok(&b));
    let proxy = proxy_for(&origin);
    get(proxy.addr, "/o/ranged");
    let single = Request::get("/o/ranged")
        .header("Range", "bytes=100-109")
        .send(proxy.addr);
    assert_eq!(
        (single.status, single.text()),
        (206, body[100..110].to_string())
    );
    let multi = Request::get("/o/ranged")
        .header("Range", "bytes=0-9,100-109")
        .send(proxy.addr);
    assert_eq!(multi.status, 206);
    let text = multi.text();
    assert!(
        text.contains(&body[0..10]) && text.contains(&body[100..110]),
        "{text}"
    );
    assert!(text.contains("bytes 100-109/1000"), "{text}");
    assert_eq!(origin.count("/o/ranged"), 1);
}

#[test]
fn compressed_responses_keep_the_connection_and_ranges_stay_uncompressed() {
    use std::io::{BufReader, Write};
    let page = "<p>summer sale</p>".repeat(100);
    let p = page.clone();
    let origin = FakeOrigin::start(move |_| {
        let mut r = Reply::ok(&p);
        r.headers.clear();
        r.header("Content-Type", "text/html")
    });
    let proxy = proxy_for(&origin);
    let stream = common::client::connect(proxy.addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..3 {
        writer
            .write_all(b"GET /z/keep HTTP/1.1\r\nHost: shop.test\r\nAccept-Encoding: br\r\n\r\n")
            .unwrap();
        let r = common::client::read_response(&mut reader, false, true);
        assert_eq!((r.status, r.header("content-encoding")), (200, Some("br")));
    }
    let ranged = Request::get("/z/keep")
        .header("Accept-Encoding", "gzip")
        .header("Range", "bytes=0-9")
        .send(proxy.addr);
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.header("content-encoding"), None);
    assert_eq!(ranged.text(), page[0..10]);
}
