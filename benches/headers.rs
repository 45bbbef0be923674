//! Header hardening on every request and answer, with the shipped config:
//! target and bounds checks, untrusted-header stripping, and the security
//! header rules on an origin answer.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::{RequestHeader, ResponseHeader};

use awning::config;
use awning::headers::request::check_target;
use awning::headers::security::{apply_response_rules, check_bounds, strip_untrusted};

/// A browser's request for a product page.
fn browser_request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/products/1234?ref=home", None).unwrap();
    for (name, value) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=4f2a9c0d1e; cart=3"),
        ("referer", "https://shop.example.com/"),
        ("x-forwarded-for", "203.0.113.9"),
    ] {
        req.insert_header(name, value).unwrap();
    }
    req
}

/// A Next.js origin answer, with the headers that must not leak.
fn origin_answer() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "5120"),
        ("cache-control", "public, max-age=60"),
        ("etag", "\"4f2a9c\""),
        ("x-powered-by", "Next.js"),
        ("x-nextjs-cache", "HIT"),
        ("vary", "Accept-Encoding"),
        ("date", "Tue, 24 Nov 2026 08:10:02 GMT"),
    ] {
        resp.insert_header(name, value).unwrap();
    }
    resp
}

fn headers(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = config::load(&root.join("proxy.yaml")).expect("shipped proxy.yaml");
    let req = browser_request();
    let mut g = c.benchmark_group("headers");
    g.bench_function("check_target", |b| {
        b.iter(|| check_target(black_box(&req), false).is_ok())
    });
    g.bench_function("check_bounds", |b| {
        b.iter(|| check_bounds(black_box(&req), &config.requests).is_ok())
    });
    g.bench_function("strip_untrusted", |b| {
        b.iter_batched(
            browser_request,
            |mut r| {
                strip_untrusted(&mut r, &config.requests);
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("apply_response_rules", |b| {
        b.iter_batched(
            origin_answer,
            |mut r| {
                apply_response_rules(&mut r, &config.response_headers, true);
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
