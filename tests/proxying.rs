//! Routing and forwarding through the real binary against fake origins.

mod common;

use std::time::Duration;

use common::*;

fn single(origin: &FakeOrigin, settings: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], settings)
            .rules(ALL_TO_SHOP),
    )
}

#[test]
fn routes_by_host_path_and_method() {
    let pages = FakeOrigin::fixed("pages");
    let api = FakeOrigin::fixed("api");
    let writes = FakeOrigin::fixed("writes");
    let admin = FakeOrigin::fixed("admin");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("pages", &[pages.addr()], "")
            .upstream("api", &[api.addr()], "")
            .upstream("writes", &[writes.addr()], "")
            .upstream("admin", &[admin.addr()], "")
            .rules(
                r#"
routes:
  - name: backoffice
    match: { host: "admin.shop.test" }
    upstream: admin
  - name: api-read
    match: { path: "/api/**", methods: [GET, HEAD] }
    upstream: api
  - name: api-write
    match: { prefix: "/api/", methods: [POST, PUT] }
    upstream: writes
  - name: exact
    match: { path: "/about" }
    upstream: pages
"#,
            ),
    );
    let cases = [
        (Request::get("/api/products/1"), 200, "api"),
        (Request::post("/api/cart", b"{}"), 200, "writes"),
        (Request::get("/about"), 200, "pages"),
        (
            Request::get("/api/products/1").host(Some("Admin.Shop.Test:8080")),
            200,
            "admin",
        ),
        (
            Request::new("DELETE", "/api/products/1"),
            404,
            "404 Not Found\n",
        ),
        (Request::get("/about/team"), 404, "404 Not Found\n"),
    ];
    for (req, status, body) in cases {
        let resp = req.send(proxy.addr);
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (status, body),
            "{} {}",
            req.method,
            req.target
        );
    }
    assert_eq!(
        (api.total(), writes.total(), pages.total(), admin.total()),
        (1, 1, 1, 1)
    );
}

#[test]
fn unknown_route_is_404_and_reaches_no_origin() {
    let origin = FakeOrigin::fixed("x");
    let proxy = ProxyUnderTest::start(Setup::new().upstream("shop", &[origin.addr()], "").rules(
        r#"
routes:
  - name: only
    match: { path: "/only" }
    upstream: shop
"#,
    ));
    let resp = get(proxy.addr, "/elsewhere");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.text(), "404 Not Found\n");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(origin.total(), 0);
}

#[test]
fn refused_upstream_is_502_without_internals() {
    let closed: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[closed], "")
            .rules(ALL_TO_SHOP),
    );
    let resp = get(proxy.addr, "/");
    assert_eq!(resp.status, 502);
    assert_eq!(resp.text(), "502 Bad Gateway\n");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(!resp.has_header("server"), "{:?}", resp.headers);
    let all = format!("{:?} {}", resp.headers, resp.text()).to_ascii_lowercase();
    for leak in ["pingora", "127.0.0.1", "refused"] {
        assert!(!all.contains(leak), "error response leaks {leak}: {all}");
    }
    // The proxy stays healthy for the next client.
    assert_eq!(get(proxy.admin, "/healthz").status, 200);
}

#[test]
fn slow_upstream_is_504() {
    let origin = FakeOrigin::start(|_| Reply::ok("late").delay(Duration::from_secs(3)));
    let proxy = single(&origin, "read_timeout: 300ms");
    let resp = get(proxy.addr, "/slow");
    assert_eq!(resp.status, 504);
    assert_eq!(resp.text(), "504 Gateway Timeout\n");
}

#[test]
fn forwarding_headers_replace_client_claims_and_host_passes_through() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = single(&origin, "");
    let resp = Request::get("/p?q=1")
        .host(Some("Shop.Test:8080"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.test")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "for=6.6.6.6;proto=https")
        .header("X-Real-IP", "6.6.6.6")
        .send(proxy.addr);
    assert_eq!(resp.status, 200);
    let seen = origin.last();
    assert_eq!(seen.target, "/p?q=1");
    assert_eq!(seen.header("host"), Some("Shop.Test:8080"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("Shop.Test:8080"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways() {
    let origin = FakeOrigin::start(|_| {
        Reply::ok("ok")
            .header("Connection", "X-Internal-Debug")
            .header("X-Internal-Debug", "db=primary")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("X-Kept", "yes")
    });
    let proxy = single(&origin, "");
    let resp = Request::get("/")
        .header("Connection", "close, X-Client-Secret")
        .header("X-Client-Secret", "s3cret")
        .header("Keep-Alive", "300")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "trailers")
        .header("X-Client-Kept", "yes")
        .send(proxy.addr);
    assert_eq!(resp.status, 200);
    for gone in ["x-internal-debug", "keep-alive", "proxy-connection"] {
        assert!(
            !resp.has_header(gone),
            "response still has {gone}: {:?}",
            resp.headers
        );
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
    let seen = origin.last();
    for gone in ["x-client-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(
            seen.header(gone).is_none(),
            "origin received {gone}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-client-kept"), Some("yes"));
}

#[test]
fn post_is_not_retried_when_the_upstream_drops_the_connection() {
    let first = FakeOrigin::start(|_| Reply::close());
    let second = FakeOrigin::start(|_| Reply::close());
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[first.addr(), second.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    let resp = Request::post("/api/orders", b"{\"sku\": 1}").send(proxy.addr);
    assert_eq!(resp.status, 502);
    assert_eq!(
        first.count("/api/orders") + second.count("/api/orders"),
        1,
        "the POST was sent more than once"
    );
}

#[test]
fn round_robin_skips_a_server_that_refuses() {
    let a = FakeOrigin::fixed("a");
    let b = FakeOrigin::fixed("b");
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[dead, a.addr(), b.addr()], "fail_timeout: 30s")
            .rules(ALL_TO_SHOP),
    );
    for i in 0..9 {
        let resp = Request::post("/", format!("{i}").as_bytes()).send(proxy.addr);
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(a.total() + b.total(), 9);
    assert!(
        a.total() >= 3 && b.total() >= 3,
        "uneven spread: a={} b={}",
        a.total(),
        b.total()
    );
    assert!(proxy.stderr().contains("failed to connect"));
}

#[test]
fn malformed_host_and_foreign_absolute_uri_are_400_and_never_forwarded() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = single(&origin, "");
    let bad = [
        b"GET / HTTP/1.1\r\nHost: shop test\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: shop.test:99999\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET http://evil.test/admin HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
            .to_vec(),
        b"GET ftp://shop.test/ HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    for raw in &bad {
        let resp = send_raw(proxy.addr, raw, false);
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(origin.total(), 0, "a rejected request reached the origin");

    let ok = send_raw(
        proxy.addr,
        b"GET http://shop.test/p?x=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        origin.last().target,
        "/p?x=1",
        "absolute-form is sent upstream in origin-form"
    );
}

#[test]
fn keep_alive_connection_serves_several_requests() {
    use std::io::{BufReader, Write};
    let origin = FakeOrigin::fixed("ok");
    let proxy = single(&origin, "");
    let stream = common::client::connect(proxy.addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..3 {
        writer
            .write_all(format!("GET /k{i} HTTP/1.1\r\nHost: shop.test\r\n\r\n").as_bytes())
            .unwrap();
        let resp = common::client::read_response(&mut reader, false, true);
        assert_eq!(resp.status, 200);
    }
    assert_eq!(origin.total(), 3);
}
