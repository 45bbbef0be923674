//! Request smuggling defences, byte for byte: every ambiguous framing is
//! answered 400 and the connection closed, and the request hidden behind it
//! (`GET /canary`) never reaches the origin.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const CANARY: &str = "GET /canary HTTP/1.1\r\nHost: shop.test\r\n\r\n";

/// Writes `bytes` on a new connection and reads until the server closes it;
/// panics if it keeps the connection open for 5 s.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may close before reading everything; that is fine.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "connection left open after {:?}: {e}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Statuses of the responses in `raw`, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn setup() -> (FakeOrigin, ProxyUnderTest) {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(ALL_TO_SHOP),
    );
    (origin, proxy)
}

/// `head` (ending in the blank line) followed by `body`, then the canary.
fn smuggle(head: &str, body: &str) -> Vec<u8> {
    format!("{head}{body}{CANARY}").into_bytes()
}

fn assert_refused(name: &str, head: &str, body: &str) {
    let (origin, proxy) = setup();
    let raw = exchange(proxy.addr, &smuggle(head, body));
    assert_eq!(statuses(&raw), vec![400], "{name}: {raw:?}");
    assert_eq!(
        proxy.metric("awning_http_requests_rejected_total{"),
        1.0,
        "{name}: counted once"
    );
    assert_eq!(
        origin.count("/canary"),
        0,
        "{name}: the canary reached the origin"
    );
    assert_eq!(
        origin.count("/x"),
        0,
        "{name}: the ambiguous request reached the origin"
    );
    assert_eq!(
        get(proxy.addr, "/after").status,
        200,
        "{name}: still serving"
    );
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    assert_refused(
        "CL.TE",
        "POST /x HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0\r\n\r\n",
    );
    assert_refused(
        "TE.CL",
        "POST /x HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n",
        "0\r\n\r\n",
    );
}

#[test]
fn duplicate_or_malformed_content_length_is_refused() {
    for (name, value) in [
        ("two values", "Content-Length: 5\r\nContent-Length: 38"),
        ("a list", "Content-Length: 5, 38"),
        ("a sign", "Content-Length: +5"),
        ("hex", "Content-Length: 0x5"),
        ("empty", "Content-Length: "),
    ] {
        assert_refused(
            name,
            &format!("POST /x HTTP/1.1\r\nHost: shop.test\r\n{value}\r\n\r\n"),
            "hello",
        );
    }
}

#[test]
fn transfer_codings_other_than_a_final_chunked_are_refused() {
    for (name, value) in [
        ("gzip only", "Transfer-Encoding: gzip"),
        ("chunked not last", "Transfer-Encoding: chunked, gzip"),
        ("unknown", "Transfer-Encoding: xchunked"),
        (
            "two fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        ),
        ("identity", "Transfer-Encoding: identity"),
    ] {
        assert_refused(
            name,
            &format!("POST /x HTTP/1.1\r\nHost: shop.test\r\n{value}\r\n\r\n"),
            "0\r\n\r\n",
        );
    }
}

#[test]
fn transfer_encoding_on_http_1_0_is_refused() {
    assert_refused(
        "HTTP/1.0 TE",
        "POST /x HTTP/1.0\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0\r\n\r\n",
    );
}

#[test]
fn obs_fold_space_before_colon_and_control_bytes_are_refused() {
    for (name, field) in [
        ("obs-fold", "X-Note: a\r\n b"),
        ("space before colon", "Content-Length : 0"),
        ("tab before colon", "X-Note\t: a"),
        ("bare CR", "X-Note: a\rb"),
        ("NUL", "X-Note: a\0b"),
        ("bare LF inside", "X-Note: a\nb"),
    ] {
        assert_refused(
            name,
            &format!("GET /x HTTP/1.1\r\nHost: shop.test\r\n{field}\r\n\r\n"),
            "",
        );
    }
}

#[test]
fn a_body_sent_to_a_request_awning_answers_itself_is_never_a_request() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(
                "routes:\n  - name: only\n    match: { prefix: \"/x\" }\n    upstream: shop\n    allow: { methods: [GET] }\n",
            ),
    );
    // 404 (no route) and 405 (allow), each with a body that is a request.
    for head in ["POST /nowhere HTTP/1.1", "POST /x HTTP/1.1"] {
        let bytes = format!(
            "{head}\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n{CANARY}",
            CANARY.len()
        );
        let raw = exchange(proxy.addr, bytes.as_bytes());
        assert_eq!(statuses(&raw).len(), 1, "{head}: one answer only: {raw:?}");
        assert_eq!(origin.count("/canary"), 0, "{head}");
    }
}

#[test]
fn a_body_sent_with_a_request_answered_from_cache_is_never_a_request() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(
                "routes:\n  - name: cached\n    match: { prefix: \"/c\" }\n    upstream: shop\n    cache: { mode: override, ttl: 10m }\n",
            ),
    );
    assert_eq!(get(proxy.addr, "/c").status, 200);
    let bytes = format!(
        "GET /c HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n{CANARY}",
        CANARY.len()
    );
    let raw = exchange_or_idle(proxy.addr, bytes.as_bytes());
    assert_eq!(statuses(&raw), vec![200], "one answer only: {raw:?}");
    assert_eq!(origin.count("/canary"), 0);
    assert_eq!(origin.count("/c"), 1, "answered from the cache");
}

/// Like [`exchange`], but a connection kept open after the answer is fine:
/// what matters is that no second answer comes.
fn exchange_or_idle(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
