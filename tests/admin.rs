//! The admin listener: liveness and readiness.

mod common;

use std::time::Duration;

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

#[test]
fn readyz_follows_the_health_of_the_only_upstream_server() {
    let origin = FakeOrigin::fixed("ok");
    let addr = origin.addr();
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream(
                "shop",
                &[addr],
                "health_check: { path: /healthz, interval: 200ms, timeout: 500ms }",
            )
            .rules(ALL_TO_SHOP),
    );
    let status = || get(proxy.admin, "/readyz").status;
    eventually("ready", Duration::from_secs(10), || {
        (status() == 200).then_some(())
    });
    assert!(origin.count("/healthz") >= 1, "the check asked the origin");

    drop(origin);
    eventually(
        "unready while the server is down",
        Duration::from_secs(10),
        || (status() == 503).then_some(()),
    );
    let doc: serde_json::Value = serde_json::from_slice(&get(proxy.admin, "/readyz").body).unwrap();
    assert_eq!(doc["checks"]["upstreams"]["shop"]["healthy"], 0);
    assert_eq!(doc["checks"]["upstreams"]["shop"]["ok"], false);

    let _back = FakeOrigin::start_at(addr, |_| Reply::ok("back"));
    eventually(
        "ready again once it answers",
        Duration::from_secs(10),
        || (status() == 200).then_some(()),
    );
    assert_eq!(get(proxy.addr, "/").text(), "back");
}
