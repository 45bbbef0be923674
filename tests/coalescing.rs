//! Request coalescing, in its own test binary so that no other test competes
//! for the two cores while latencies are measured.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ROUTES: &str = r#"
routes:
  - name: override
    match: { prefix: "/o/" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: pages
    match: { path: "/**" }
    upstream: shop
    cache: { mode: origin }
"#;

fn proxy_for(origin: &FakeOrigin) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ROUTES),
    )
}

#[test]
fn concurrent_misses_send_one_request_upstream() {
    const CLIENTS: usize = 200;
    const ORIGIN_TIME: Duration = Duration::from_millis(500);
    let origin = FakeOrigin::start(|_| Reply::ok("popular").delay(ORIGIN_TIME));
    let proxy = proxy_for(&origin);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let addr = proxy.addr;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let stream = common::client::connect(addr);
                barrier.wait();
                let started = Instant::now();
                let mut stream = stream;
                std::io::Write::write_all(
                    &mut stream,
                    b"GET /o/hot HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
                let resp = common::client::read_response(
                    &mut std::io::BufReader::new(stream),
                    false,
                    true,
                );
                (resp.status, resp.text(), started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = results.iter().map(|r| r.2).max().unwrap();
    for (status, body, _) in &results {
        assert_eq!((*status, body.as_str()), (200, "popular"));
    }
    assert_eq!(origin.count("/o/hot"), 1, "coalescing failed");
    eprintln!("{CLIENTS} concurrent misses: slowest answer after {slowest:?} (origin takes {ORIGIN_TIME:?})");
    // Waiters are answered from the one fill, not after a fetch of their own
    // (which would take a second origin time); how fast is the bench's job.
    assert!(
        slowest < ORIGIN_TIME * 2,
        "slowest client waited {slowest:?}"
    );
    assert!(
        proxy.metric("awning_cache_events_total{event=\"coalesced\"}") >= 1.0,
        "waiters are counted"
    );
}

#[test]
fn waiters_do_not_share_an_uncacheable_response() {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = FakeOrigin::start(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::ok(&format!("private {i}"))
            .header("Cache-Control", "private")
            .delay(Duration::from_millis(300))
    });
    let proxy = proxy_for(&origin);
    let barrier = Arc::new(Barrier::new(10));
    let addr = proxy.addr;
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                get(addr, "/account").text()
            })
        })
        .collect();
    let mut bodies: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        10,
        "a waiter received a response fetched for someone else: {bodies:?}"
    );
    assert_eq!(origin.count("/account"), 10);
}
