//! Signals: SIGTERM drains, SIGHUP does not kill, SIGINT exits fast.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_lets_a_slow_in_flight_request_finish_then_exits() {
    let origin = FakeOrigin::start(|r| {
        if r.path() == "/slow" {
            Reply::ok("finished").delay(Duration::from_millis(1500))
        } else {
            Reply::ok("fast")
        }
    });
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    let addr = proxy.addr;
    let in_flight = thread::spawn(move || get(addr, "/slow"));
    eventually(
        "the slow request to reach the origin",
        Duration::from_secs(10),
        || (origin.count("/slow") == 1).then_some(()),
    );

    proxy.signal(libc::SIGTERM);
    let resp = in_flight.join().unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "finished"));

    let status = proxy.wait_exit(Duration::from_secs(4));
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn sigterm_with_nothing_in_flight_exits_well_before_the_grace_period() {
    let origin = FakeOrigin::fixed("ok");
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    assert_eq!(get(proxy.addr, "/").status, 200);
    let asked = Instant::now();
    proxy.signal(libc::SIGTERM);
    // The configured grace is 5 s; an idle proxy must not sit it out.
    let status = proxy.wait_exit(Duration::from_secs(4));
    assert!(status.success(), "exit status {status}");
    assert!(asked.elapsed() < Duration::from_secs(4));
}

#[test]
fn sighup_does_not_kill_the_process() {
    let origin = FakeOrigin::fixed("ok");
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    for _ in 0..3 {
        proxy.signal(libc::SIGHUP);
    }
    // SIGHUP reloads; the files did not change.
    eventually(
        "the SIGHUP reload to be logged",
        Duration::from_secs(5),
        || {
            proxy
                .stderr()
                .contains("config reload: files unchanged")
                .then_some(())
        },
    );
    assert!(
        proxy.is_running(),
        "SIGHUP killed awning:\n{}",
        proxy.stderr()
    );
    assert_eq!(get(proxy.addr, "/").status, 200);
}

#[test]
fn sigint_exits_at_once() {
    let origin = FakeOrigin::fixed("ok");
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    proxy.signal(libc::SIGINT);
    proxy.wait_exit(Duration::from_secs(3));
}
