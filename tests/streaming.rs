//! Bodies stream through: 100 MiB each way with flat proxy memory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::proxy::rss_bytes;
use common::*;

const MIB: u64 = 1024 * 1024;
const BODY: u64 = 100 * MIB;
const MAX_GROWTH: u64 = 32 * MIB;

/// Samples the proxy's RSS until stopped; returns the peak.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Self {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

fn warmed_proxy(origin: &FakeOrigin) -> ProxyUnderTest {
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP)
            // Above the 16 MiB default for the 100 MiB upload.
            .extra("requests: { max_body: 1GiB }"),
    );
    // Warm up buffers and pools so the baseline is the steady state.
    for _ in 0..3 {
        assert_eq!(
            Request::post("/upload", &[b'w'; 256 * 1024])
                .send(proxy.addr)
                .status,
            200
        );
        assert_eq!(get(proxy.addr, "/warm").status, 200);
    }
    proxy
}

#[test]
fn hundred_mib_upload_streams_with_flat_memory() {
    let origin = FakeOrigin::fixed("stored");
    let proxy = warmed_proxy(&origin);
    let baseline = proxy.rss_bytes();
    let watch = RssWatch::start(proxy.pid());
    let resp = Request::new("PUT", "/upload/big").send_streaming_upload(proxy.addr, BODY);
    let peak = watch.peak();
    assert_eq!(resp.status, 200);
    let seen = origin
        .received()
        .into_iter()
        .find(|r| r.target == "/upload/big")
        .expect("upload reached origin");
    assert_eq!(seen.body_len, BODY);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "upload: baseline RSS {} KiB, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(baseline > 0 && peak > 0, "RSS not readable");
    assert!(
        growth < MAX_GROWTH,
        "RSS grew by {} MiB during a 100 MiB upload",
        growth / MIB
    );
}

#[test]
fn hundred_mib_download_streams_with_flat_memory() {
    let origin = FakeOrigin::start(|r| {
        if r.path() == "/download/big" {
            Reply::ok("")
                .generated(BODY)
                .header("content-type", "application/octet-stream")
        } else {
            Reply::ok("ok")
        }
    });
    let proxy = warmed_proxy(&origin);
    let baseline = proxy.rss_bytes();
    let watch = RssWatch::start(proxy.pid());
    let resp = Request::get("/download/big").send_counting(proxy.addr);
    let peak = watch.peak();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_len, BODY);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "download: baseline RSS {} KiB, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(baseline > 0 && peak > 0, "RSS not readable");
    assert!(
        growth < MAX_GROWTH,
        "RSS grew by {} MiB during a 100 MiB download",
        growth / MIB
    );
}
