//! Edge hardening through the real binary: security headers on hits and
//! misses, leak stripping, client header hygiene, request ids, bounds and
//! per-route `allow`.

mod common;

use common::*;

const RULES: &str = r#"
routes:
  - name: cached
    match: { prefix: "/cached/" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: strict-csp
    match: { prefix: "/checkout" }
    upstream: shop
    response_headers:
      set: { Content-Security-Policy: "default-src 'self'" }
      remove: [X-Frame-Options]
  - name: login
    match: { prefix: "/api/auth/" }
    upstream: shop
    allow: { methods: [GET, POST], max_body: 1KiB, content_types: [application/json, "application/x-www-form-urlencoded"] }
  - name: pages
    match: { path: "/**" }
    upstream: shop
"#;

/// An origin that leaks what it runs on and sets some headers of its own.
fn leaky_origin() -> FakeOrigin {
    FakeOrigin::start(|_| {
        Reply::ok("page")
            .header("Server", "nginx/1.18.0 (Ubuntu)")
            .header("X-Powered-By", "Next.js")
            .header("X-Nextjs-Cache", "HIT")
            .header("x-middleware-rewrite", "/internal/page")
            .header("X-Frame-Options", "DENY")
            .header("Content-Security-Policy", "script-src 'self'")
    })
}

fn proxy(origin: &FakeOrigin, extra: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(RULES)
            .extra(extra),
    )
}

#[test]
fn security_headers_and_leak_stripping_apply_to_misses_and_hits_alike() {
    let origin = leaky_origin();
    let proxy = proxy(&origin, "");
    let miss = get(proxy.addr, "/cached/p");
    let hit = get(proxy.addr, "/cached/p");
    assert_eq!(origin.count("/cached/p"), 1, "the second answer is a hit");
    for r in [&miss, &hit] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("x-frame-options"),
            Some("DENY"),
            "the origin's value wins"
        );
        assert_eq!(
            r.header("content-security-policy"),
            Some("script-src 'self'"),
            "set_if_absent keeps the origin's CSP"
        );
        assert_eq!(
            r.header("referrer-policy"),
            Some("strict-origin-when-cross-origin")
        );
        assert!(r.header("permissions-policy").is_some());
        assert_eq!(
            r.header("cross-origin-opener-policy"),
            Some("same-origin-allow-popups")
        );
        for leak in [
            "server",
            "x-powered-by",
            "x-nextjs-cache",
            "x-middleware-rewrite",
        ] {
            assert!(!r.has_header(leak), "{leak} leaked");
        }
        assert!(
            !r.has_header("strict-transport-security"),
            "no HSTS over plain http"
        );
    }
    let (a, b) = (miss.header("x-request-id"), hit.header("x-request-id"));
    assert!(a.is_some_and(|id| id.len() == 32));
    assert_ne!(a, b, "each request gets its own id");
}

#[test]
fn a_route_sets_and_removes_its_own_headers() {
    let origin = leaky_origin();
    let proxy = proxy(&origin, "");
    let r = get(proxy.addr, "/checkout");
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'"),
        "set replaces the origin's"
    );
    assert!(!r.has_header("x-frame-options"), "removed on this route");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn operators_add_headers_and_leaks_for_all_routes() {
    let origin = FakeOrigin::start(|_| Reply::ok("x").header("X-Debug-Sql", "select 1"));
    let proxy = proxy(
        &origin,
        "response_headers:\n  set: { X-Robots-Tag: noindex }\n  remove: [Cross-Origin-Opener-Policy]\n  strip: [\"X-Debug-*\"]\n",
    );
    let r = get(proxy.addr, "/anything");
    assert_eq!(r.header("x-robots-tag"), Some("noindex"));
    assert!(!r.has_header("cross-origin-opener-policy"));
    assert!(!r.has_header("x-debug-sql"));
}

#[test]
fn awnings_own_answers_carry_the_headers_too() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "");
    let r = Request::new("DELETE", "/api/auth/login").send(proxy.addr);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn hsts_only_for_https_clients_as_a_trusted_proxy_reports_them() {
    let origin = leaky_origin();
    let trusting = proxy(&origin, "trusted_proxies: [\"127.0.0.1\"]\n");
    let https = Request::get("/p")
        .header("X-Forwarded-Proto", "https")
        .send(trusting.addr);
    assert_eq!(
        https.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let plain = Request::get("/p")
        .header("X-Forwarded-Proto", "http")
        .send(trusting.addr);
    assert!(!plain.has_header("strict-transport-security"));

    let untrusting = proxy(&origin, "");
    let spoofed = Request::get("/p")
        .header("X-Forwarded-Proto", "https")
        .send(untrusting.addr);
    assert!(
        !spoofed.has_header("strict-transport-security"),
        "an untrusted client's claim is ignored"
    );
}

#[test]
fn headers_the_storefront_trusts_are_stripped_from_untrusted_clients() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "request_headers: { strip: [X-Internal-User] }\n");
    let r = Request::get("/page")
        .header(
            "X-Middleware-Subrequest",
            "middleware:middleware:middleware",
        )
        .header("X-Forwarded-Port", "443")
        .header("X-Forwarded-Prefix", "/admin")
        .header("X-Real-IP", "10.0.0.1")
        .header("X-Request-Id", "attacker-chosen")
        .header("X-Internal-User", "admin")
        .header("X-Shop-Locale", "de")
        .send(proxy.addr);
    assert_eq!(r.status, 200);
    let seen = origin.last();
    for name in [
        "x-middleware-subrequest",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-internal-user",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the origin");
    }
    assert_eq!(seen.header("x-shop-locale"), Some("de"), "others pass");
    let id = seen.header("x-request-id").expect("an id for the origin");
    assert_ne!(id, "attacker-chosen");
    assert_eq!(r.header("x-request-id"), Some(id), "the same id both ways");
}

#[test]
fn a_trusted_proxys_request_id_and_headers_are_kept() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "trusted_proxies: [\"127.0.0.0/8\"]\n");
    let r = Request::get("/page")
        .header("X-Request-Id", "edge-7f3a")
        .header("X-Middleware-Subrequest", "set-by-our-cdn")
        .send(proxy.addr);
    assert_eq!(r.header("x-request-id"), Some("edge-7f3a"));
    let seen = origin.last();
    assert_eq!(seen.header("x-request-id"), Some("edge-7f3a"));
    assert_eq!(
        seen.header("x-middleware-subrequest"),
        Some("set-by-our-cdn")
    );
}

#[test]
fn a_route_refuses_other_methods_bodies_too_large_and_foreign_types() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "");
    let json = |body: &[u8]| {
        Request::post("/api/auth/login", body).header("Content-Type", "application/json")
    };

    let r = Request::new("PUT", "/api/auth/login").send(proxy.addr);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));

    let r = json(&[b'x'; 2048]).send(proxy.addr);
    assert_eq!(r.status, 413, "Content-Length above max_body");

    let r = Request::post("/api/auth/login", b"<a/>")
        .header("Content-Type", "application/xml")
        .send(proxy.addr);
    assert_eq!(r.status, 415);

    let r = json(b"{\"user\":\"a\"}").send(proxy.addr);
    assert_eq!(r.status, 200, "a proper request still passes");
    assert_eq!(origin.count("/api/auth/login"), 1, "only the proper one");

    assert_eq!(proxy.rejected("method_not_allowed"), 1);
    assert_eq!(proxy.rejected("body_too_large"), 1);
    assert_eq!(proxy.rejected("unsupported_media_type"), 1);
}

#[test]
fn a_chunked_body_beyond_max_body_is_cut_with_413() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "");
    let mut raw = b"POST /api/auth/login HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'x'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(proxy.addr, &raw, false);
    assert_eq!(r.status, 413);
    assert!(
        origin.received().iter().all(|q| q.body_len <= 1024),
        "the origin never got more than max_body"
    );
    assert_eq!(
        get(proxy.addr, "/api/auth/login").status,
        200,
        "still serving"
    );
}

#[test]
fn long_uris_and_oversized_header_sections_are_refused_before_routing() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "requests: { max_uri: 1KiB, max_headers: 20 }\n");

    let long = format!("/search?q={}", "a".repeat(1100));
    assert_eq!(get(proxy.addr, &long).status, 414);

    let mut many = Request::get("/page");
    for i in 0..25 {
        many = many.header(&format!("X-Filler-{i}"), "1");
    }
    assert_eq!(many.send(proxy.addr).status, 431);

    let big = Request::get("/page").header("Cookie", &"c".repeat(9000));
    assert_eq!(big.send(proxy.addr).status, 431, "over the 8 KiB default");

    assert_eq!(origin.total(), 0, "none reached the origin");
    assert_eq!(get(proxy.addr, "/page").status, 200, "still serving");
    assert_eq!(proxy.rejected("uri_too_long"), 1);
    assert_eq!(proxy.rejected("too_many_headers"), 1);
    assert_eq!(proxy.rejected("headers_too_large"), 1);
}

#[test]
fn a_listener_answers_only_for_its_hosts() {
    let origin = FakeOrigin::fixed("ok");
    let start = |extra: &str| {
        ProxyUnderTest::start(
            Setup::new()
                .upstream("shop", &[origin.addr()], "")
                .rules(ALL_TO_SHOP)
                .listener_hosts(&["shop.example.com", "*.shop.example.com"])
                .extra(extra),
        )
    };
    let proxy = start("");
    let to = |host: &str| Request::get("/").host(Some(host)).send(proxy.addr).status;
    assert_eq!(to("shop.example.com"), 200);
    assert_eq!(to("www.shop.example.com:8080"), 200);
    assert_eq!(to("evil.example.net"), 421);
    assert_eq!(
        origin.total(),
        2,
        "the unknown host never reached the origin"
    );
    assert_eq!(proxy.rejected("unknown_host"), 1);

    let strict_400 = start("requests: { unknown_host: 400 }\n");
    let r = Request::get("/")
        .host(Some("evil.example.net"))
        .send(strict_400.addr);
    assert_eq!(r.status, 400);
}

#[test]
fn encoded_slashes_are_refused_unless_kept() {
    let origin = FakeOrigin::fixed("ok");
    let refusing = proxy(&origin, "");
    assert_eq!(get(refusing.addr, "/p/ac%2Fdc").status, 400);
    assert_eq!(refusing.rejected("hidden_separator"), 1);
    let keeping = proxy(&origin, "requests: { encoded_slashes: keep }\n");
    assert_eq!(get(keeping.addr, "/p/ac%2fdc/./x/..").status, 200);
    assert_eq!(
        origin.last().target,
        "/p/ac%2Fdc/",
        "normalised, still encoded"
    );
}

#[test]
fn bodies_are_bounded_by_default_on_every_route() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "requests: { max_body: 64KiB }\n");
    let r = Request::post("/upload", &[b'x'; 65 * 1024]).send(proxy.addr);
    assert_eq!(r.status, 413);
    let r = Request::post("/upload", &[b'x'; 60 * 1024]).send(proxy.addr);
    assert_eq!(r.status, 200);
}
