//! Route matching on the shipped rules: the per-request cost of picking a route.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;

use awning::config;
use awning::routes::{RouteTable, Target};

fn shipped_table() -> RouteTable {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = config::load(&root.join("proxy.yaml")).expect("shipped proxy.yaml");
    RouteTable::new(config.routes)
}

fn route_match(c: &mut Criterion) {
    let table = shipped_table();
    let get = Method::GET;
    let post = Method::POST;
    let cases = [
        (
            "first_route_static_asset",
            "/_next/static/chunks/main-4f2a9c.js",
            &get,
        ),
        ("glob_product_detail", "/api/products/1234", &get),
        ("exact_cart_post", "/api/cart", &post),
        ("fallthrough_html_page", "/collections/summer/outdoor", &get),
    ];
    let mut group = c.benchmark_group("route_match");
    for (name, path, method) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                table.find(black_box(Target {
                    host: Some("shop.example.com"),
                    path,
                    method,
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
