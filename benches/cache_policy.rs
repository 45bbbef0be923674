//! The cache's per-request functions: building the key, the variance, and
//! deciding whether a response may be stored.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use pingora::http::ResponseHeader;

use awning::cache::key::{self, UrlParts};
use awning::cache::policy::{self, RequestFacts};
use awning::config::defaults::DEFAULT_CACHE_STATUSES;
use awning::config::{CacheKeyRules, CacheMode, QueryParam, RouteCache};

fn rules(sorted: bool) -> CacheKeyRules {
    CacheKeyRules {
        sort_query: sorted,
        drop_params: if sorted {
            vec![
                QueryParam::Prefix("utm_".into()),
                QueryParam::Exact("fbclid".into()),
            ]
        } else {
            Vec::new()
        },
        ..CacheKeyRules::default()
    }
}

fn route(mode: CacheMode) -> RouteCache {
    RouteCache {
        mode,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(30),
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(3600),
        statuses: DEFAULT_CACHE_STATUSES.to_vec(),
        ..RouteCache::default()
    }
}

fn bench_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_key");
    let plain = rules(false);
    let sorted = rules(true);
    let url = UrlParts {
        tls: true,
        host: "shop.example.com",
        port: Some(443),
        path: "/api/products/1234",
        query: None,
    };
    g.bench_function("primary_no_query", |b| {
        b.iter(|| key::primary(black_box(url), &plain))
    });
    let with_query = UrlParts {
        query: Some("sort=price&page=2&utm_source=mail&fbclid=abc"),
        path: "/api/search",
        ..url
    };
    g.bench_function("primary_sorted_dropped_query", |b| {
        b.iter(|| key::primary(black_box(with_query), &sorted))
    });
    let mut headers = HeaderMap::new();
    headers.insert("accept-encoding", "gzip, deflate, br".parse().unwrap());
    let vary = vec!["accept-encoding".to_string()];
    g.bench_function("variance_accept_encoding", |b| {
        b.iter(|| key::variance(&plain, black_box(&vary), black_box(&headers)))
    });
    g.finish();
}

fn bench_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_policy");
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("content-type", "application/json")
        .unwrap();
    resp.insert_header(
        "cache-control",
        "public, max-age=0, s-maxage=600, stale-while-revalidate=60",
    )
    .unwrap();
    resp.insert_header("etag", "\"abc\"").unwrap();
    let now = SystemTime::now();
    for (name, mode) in [
        ("origin_mode", CacheMode::Origin),
        ("override_mode", CacheMode::Override),
    ] {
        let policy = route(mode);
        g.bench_function(name, |b| {
            b.iter(|| policy::decide(&policy, RequestFacts::default(), black_box(&resp), now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_key, bench_policy);
criterion_main!(benches);
