//! The admin listener: liveness and readiness.

mod common;

use common::*;

#[test]
fn healthz_and_readyz_report_the_running_config() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    let health = get(proxy.admin, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    let ready = get(proxy.admin, "/readyz");
    assert_eq!(ready.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(doc["status"], "ready");
    assert_eq!(doc["checks"]["config"]["routes"], 1);
    assert_eq!(doc["checks"]["upstreams"]["shop"]["servers"], 1);

    assert_eq!(get(proxy.admin, "/nope").status, 404);
    assert_eq!(Request::post("/healthz", b"").send(proxy.admin).status, 405);
}

#[test]
fn readyz_is_503_when_no_route_is_configured() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules("routes: []\n"),
    );
    assert_eq!(get(proxy.admin, "/healthz").status, 200);
    let ready = get(proxy.admin, "/readyz");
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("not ready"), "{}", ready.text());
}
