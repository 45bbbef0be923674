//! Timeouts and caps toward clients: slowloris, slow readers, idle
//! keep-alive, requests per connection, connections per address/listener.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn proxy(origin: &FakeOrigin, clients: &str, extra: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP)
            .extra(&format!("clients: {{ {clients} }}\n{extra}")),
    )
}

/// Reads until the server closes the connection (or 10 s pass: a failure).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("connection still open: {e}"),
        }
    }
}

fn keepalive_request(s: &mut TcpStream, path: &str) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n").as_bytes())
        .unwrap();
}

#[test]
fn a_slowloris_client_is_cut_at_the_header_deadline_while_others_are_served() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "header_timeout: 1s", "");
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    let head = b"GET /slow HTTP/1.1\r\nHost: shop.test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 100 ms: each read is quick, the whole header is not.
    for byte in head.iter() {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        assert_eq!(
            get(proxy.addr, "/normal").status,
            200,
            "others are served meanwhile"
        );
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let answer = read_to_close(&mut slow);
    assert!(sent < head.len(), "the whole slow header was accepted");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200"),
        "the slow request was served"
    );
    assert_eq!(origin.count("/slow"), 0);
    assert_eq!(proxy.rejected("header_timeout"), 1);
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_write_timeout_without_memory_growth() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let origin = FakeOrigin::start(|_| Reply::ok("").generated(SIZE));
    let proxy = proxy(&origin, "write_timeout: 1s", "");
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    // A small receive window, and nothing read: awning's writes stall.
    s.write_all(b"GET /big HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    eventually(
        "awning to give up on the reader",
        Duration::from_secs(20),
        || (proxy.rejected("client_write_timeout") == 1).then_some(()),
    );
    let grown_kb = rss().saturating_sub(before);
    assert!(grown_kb < 20 * 1024, "awning grew by {grown_kb} KiB");
    let received = read_to_close(&mut s).len() as u64;
    assert!(
        received < SIZE,
        "the whole body was delivered ({received} bytes)"
    );
    assert_eq!(get(proxy.addr, "/after").status, 200, "still serving");
}

#[test]
fn idle_keepalive_connections_are_closed_after_the_keepalive_timeout() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "keepalive_timeout: 1s", "");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    keepalive_request(&mut s, "/a");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    assert_eq!(
        common::client::read_response(&mut reader, false, true).status,
        200
    );
    let started = Instant::now();
    let rest = read_to_close(&mut s);
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_connection_serves_at_most_max_requests_per_connection() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "max_requests_per_connection: 3", "");
    let s = TcpStream::connect(proxy.addr).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    let mut served = 0;
    for i in 0..5 {
        if writer
            .write_all(format!("GET /r{i} HTTP/1.1\r\nHost: shop.test\r\n\r\n").as_bytes())
            .is_err()
        {
            break;
        }
        // Closed by awning: nothing more to read.
        if std::io::BufRead::fill_buf(&mut reader).map_or(true, |b| b.is_empty()) {
            break;
        }
        let r = common::client::read_response(&mut reader, false, true);
        assert_eq!(r.status, 200);
        served += 1;
        if r.header("connection") == Some("close") {
            break;
        }
    }
    assert_eq!(served, 3);
}

#[test]
fn connections_per_client_address_are_capped() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "max_connections_per_ip: 2", "");
    let open = || {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        keepalive_request(&mut s, "/hold");
        let mut reader = BufReader::new(s.try_clone().unwrap());
        (
            s,
            common::client::read_response(&mut reader, false, true).status,
        )
    };
    let (a, status_a) = open();
    let (_b, status_b) = open();
    assert_eq!((status_a, status_b), (200, 200));
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    let refused = String::from_utf8_lossy(&read_to_close(&mut c)).into_owned();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert_eq!(proxy.rejected("too_many_connections"), 1);
    drop(a);
    eventually("a place to free up", Duration::from_secs(5), || {
        (get(proxy.addr, "/again").status == 200).then_some(())
    });
}

#[test]
fn trusted_proxies_are_not_capped_per_address_but_the_listener_is() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(
        &origin,
        "max_connections_per_ip: 1, max_connections: 3",
        "trusted_proxies: [\"127.0.0.1\"]",
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        keepalive_request(&mut s, "/hold");
        let mut reader = BufReader::new(s.try_clone().unwrap());
        assert_eq!(
            common::client::read_response(&mut reader, false, true).status,
            200
        );
        held.push(s);
    }
    let mut over = TcpStream::connect(proxy.addr).unwrap();
    let refused = String::from_utf8_lossy(&read_to_close(&mut over)).into_owned();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
}

#[test]
fn blank_lines_before_a_request_do_not_stop_the_header_deadline() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "header_timeout: 1s", "");
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    // Parsers skip leading blank lines; they must not count as a header end.
    slow.write_all(b"\r\n\r\n\r\nGET /slow HTTP/1.1\r\n")
        .unwrap();
    let started = Instant::now();
    for byte in b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    read_to_close(&mut slow);
    assert_eq!(origin.count("/slow"), 0);
    assert_eq!(proxy.rejected("header_timeout"), 1);
}

#[test]
fn a_body_slower_than_the_header_deadline_is_not_cut() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = proxy(&origin, "header_timeout: 1s", "");
    let s = TcpStream::connect(proxy.addr).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    // The second request on the connection, with `Expect: 100-continue`: the
    // interim answer must not restart the header clock on the body.
    keepalive_request(&mut writer, "/first");
    assert_eq!(
        common::client::read_response(&mut reader, false, true).status,
        200
    );
    writer
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\nContent-Length: 20\r\nConnection: close\r\n\r\n")
        .unwrap();
    let interim = common::client::read_response(&mut reader, false, true);
    assert_eq!(interim.status, 100);
    for _ in 0..20 {
        writer.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = common::client::read_response(&mut reader, false, true);
    assert_eq!(done.status, 200, "a 2 s body under a 1 s header deadline");
    assert_eq!(proxy.rejected("header_timeout"), 0);
}
