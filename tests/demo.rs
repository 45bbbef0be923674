//! `awning demo`: the sample storefront behind the proxy, with the shipped rules.

mod common;

use common::proxy::repo_root;
use common::*;

fn demo() -> ProxyUnderTest {
    let rules = std::fs::read_to_string(repo_root().join("rules/storefront.yaml")).unwrap();
    // The demo replaces this placeholder with its own storefront.
    let placeholder: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
    ProxyUnderTest::start(
        Setup::new()
            .upstream("storefront", &[placeholder], "")
            .rules(&rules)
            .subcommand(&["demo"]),
    )
}

#[test]
fn demo_serves_the_storefront_pages_and_apis_through_the_proxy() {
    let proxy = demo();
    assert!(
        proxy.stdout().contains("try:"),
        "no hints printed:\n{}",
        proxy.stdout()
    );

    let home = get(proxy.addr, "/");
    assert_eq!(home.status, 200);
    assert!(home
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(home.text().contains("Summer sale"));

    let list = get(proxy.addr, "/api/products");
    assert_eq!(list.status, 200);
    assert!(list
        .header("cache-control")
        .unwrap()
        .contains("s-maxage=600"));
    assert!(list.has_header("etag"));
    let json: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(json["products"].as_array().unwrap().len(), 6);

    let again = get(proxy.addr, "/api/products");
    assert!(
        again
            .header("cache-status")
            .unwrap_or("")
            .starts_with("awning; hit"),
        "the shipped rules cache the product list: {:?}",
        again.header("cache-status")
    );

    let detail = get(proxy.addr, "/api/products/1");
    assert_eq!(detail.status, 200);
    assert!(detail.text().contains("Canvas Awning"));
    assert_eq!(get(proxy.addr, "/api/products/999").status, 404);

    let search = get(proxy.addr, "/api/search?q=lights");
    assert!(search.text().contains("String Lights"), "{}", search.text());

    let asset = get(proxy.addr, "/_next/static/chunks/main-4f2a9c.js");
    assert_eq!(asset.status, 200);
    assert!(asset.header("cache-control").unwrap().contains("immutable"));

    let cart = Request::post("/api/cart", br#"{"product": 3}"#).send(proxy.addr);
    assert_eq!(cart.status, 200, "{}", cart.text());
    let cookie = cart
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(cookie.starts_with("session="));
    assert_eq!(cart.header("cache-control"), Some("private, no-store"));
    let session = cookie.split(';').next().unwrap();
    let again = Request::get("/api/cart")
        .header("Cookie", session)
        .send(proxy.addr);
    assert!(again.text().contains("\"items\":[3]"), "{}", again.text());

    let bad_login = Request::post("/api/auth/login", br#"{"email":"a@b.c","password":"x"}"#)
        .header("Content-Type", "application/json")
        .send(proxy.addr);
    assert_eq!(bad_login.status, 401);
    let login = Request::post(
        "/api/auth/login",
        br#"{"email":"a@b.c","password":"correct horse"}"#,
    )
    .header("Content-Type", "application/json")
    .send(proxy.addr);
    assert_eq!(login.status, 200);

    let missing = get(proxy.addr, "/no-such-page");
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("Page not found"),
        "the storefront, not awning, answers 404 pages"
    );
}

#[test]
fn demo_storefront_answers_conditional_requests() {
    let proxy = demo();
    let first = get(proxy.addr, "/api/categories");
    let etag = first.header("etag").unwrap().to_string();
    let again = Request::get("/api/categories")
        .header("If-None-Match", &etag)
        .send(proxy.addr);
    assert_eq!(again.status, 304);
}

#[test]
fn a_reload_in_the_demo_keeps_sending_to_the_sample_storefront() {
    let proxy = demo();
    assert_eq!(get(proxy.addr, "/api/products").status, 200);
    // proxy.yaml names a placeholder server; a reload reads it again.
    let rules = proxy.config_dir().join("rules/routes.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{text}\n# edited\n")).unwrap();
    eventually(
        "the edit applied",
        std::time::Duration::from_secs(5),
        || (proxy.metric("awning_config_generation") == 2.0).then_some(()),
    );
    // A URL not cached yet: answered by the storefront itself.
    let r = get(proxy.addr, "/api/products/2?after=reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        proxy.metric("awning_upstream_healthy_servers{upstream=\"storefront\"}"),
        1.0
    );
}
