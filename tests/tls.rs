//! TLS listeners (rustls) with a certificate generated for the test.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct TestPki {
    dir: tempfile::TempDir,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

fn pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["shop.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
    TestPki {
        dir,
        ca_der: ca.der().clone(),
    }
}

/// A client trusting only the test CA.
fn client_config(pki: &TestPki) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn tls_get(pki: &TestPki, addr: std::net::SocketAddr, path: &str) -> Response {
    let config = client_config(pki);
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "shop.test".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    common::client::read_response(&mut BufReader::new(tls), false, true)
}

/// awning with a TLS listener using the test certificate.
fn tls_proxy(pki: &TestPki, origin: &FakeOrigin, rules: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .rules(rules)
            .tls(
                &pki.dir.path().join("tls.crt"),
                &pki.dir.path().join("tls.key"),
            ),
    )
}

#[test]
fn tls_listener_serves_and_tells_the_origin_the_client_used_https() {
    let pki = pki();
    let origin = FakeOrigin::fixed("secure");
    let proxy = tls_proxy(&pki, &origin, ALL_TO_SHOP);
    let tls_addr = proxy.tls_addr.unwrap();
    let resp = tls_get(&pki, tls_addr, "/checkout");
    assert_eq!((resp.status, resp.text().as_str()), (200, "secure"));
    assert_eq!(origin.last().header("x-forwarded-proto"), Some("https"));

    // The plain listener still says http.
    assert_eq!(get(proxy.addr, "/").status, 200);
    assert_eq!(origin.last().header("x-forwarded-proto"), Some("http"));
}

#[test]
fn tls_listener_offers_h2_by_alpn() {
    let pki = pki();
    let origin = FakeOrigin::fixed("x");
    let proxy = tls_proxy(&pki, &origin, ALL_TO_SHOP);
    let mut config = client_config(&pki);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "shop.test".try_into().unwrap()).unwrap();
    let mut tcp = TcpStream::connect(proxy.tls_addr.unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn unreadable_certificate_is_a_config_error() {
    let origin = FakeOrigin::fixed("x");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  tls:\n    - {{ addr: \"127.0.0.1:{}\", cert: \"{}\", key: \"{}\" }}\nupstreams:\n  shop:\n    servers: [\"{}\"]\nrules: []\n",
            free_port(),
            missing.display(),
            missing.display(),
            origin.addr()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::proxy::binary())
        .args(["check", "-c", &config.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("proxy.yaml:3:") && stderr.contains("listen.tls[0].cert: cannot read"),
        "{stderr}"
    );
}

#[test]
fn https_warm_urls_go_through_the_tls_listener() {
    let pki = pki();
    let origin = FakeOrigin::fixed("warm page");
    let proxy = tls_proxy(
        &pki,
        &origin,
        "routes:\n  - name: all\n    match: { path: \"/**\" }\n    upstream: shop\n    cache: { mode: override, ttl: 10m }\nwarm:\n  - https://shop.test/landing\n",
    );
    eventually(
        "the warm request",
        std::time::Duration::from_secs(10),
        || (origin.count("/landing") == 1).then_some(()),
    );
    assert_eq!(origin.last().header("x-forwarded-proto"), Some("https"));
    let hit = tls_get(&pki, proxy.tls_addr.unwrap(), "/landing");
    assert!(
        hit.header("cache-status")
            .unwrap_or("")
            .starts_with("awning; hit"),
        "{:?}",
        hit.header("cache-status")
    );
    assert_eq!(origin.count("/landing"), 1);
}
