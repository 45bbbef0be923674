//! Cache warming: at start, the configured URLs are fetched through awning's
//! own listeners, so they fill the cache by the very path customers take
//! (routes, keys, policy), with bounded concurrency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{reachable, Config, WarmUrl};

/// Marks awning's own warm requests (with a per-process secret) so that rate
/// limits do not spend the origin's budget on them; removed before the origin.
pub const WARM_HEADER: &str = "x-awning-warm";

fn warm_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let a = h.finish();
        let b = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("{a:016x}{b:016x}")
    })
}

/// Whether a request is one of this process's warm requests.
pub fn is_warm_request(req: &pingora::http::RequestHeader) -> bool {
    req.headers
        .get(WARM_HEADER)
        .is_some_and(|v| v.as_bytes() == warm_token().as_bytes())
}

/// How long warming waits for the listeners to come up.
const LISTENER_WAIT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts warming in the background when the config lists URLs.
pub fn spawn(config: &Config) {
    if config.warm.is_empty() {
        return;
    }
    let urls = config.warm.clone();
    let http = config.listen.http.first().copied().map(reachable);
    let tls = config.listen.tls.first().map(|t| reachable(t.addr));
    let workers = config.cache.warm_concurrency.min(urls.len()).max(1);
    let _ = std::thread::Builder::new()
        .name("awning-warm".into())
        .spawn(move || run(urls, http, tls, workers));
}

fn run(urls: Vec<WarmUrl>, http: Option<SocketAddr>, tls: Option<SocketAddr>, workers: usize) {
    let started = Instant::now();
    for addr in [http, tls].into_iter().flatten() {
        let deadline = Instant::now() + LISTENER_WAIT;
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                tracing::warn!(%addr, "cache warm: listener not up, warming skipped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let total = urls.len();
    let queue = Arc::new(Mutex::new(urls));
    let failed = Arc::new(Mutex::new(0usize));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, failed) = (queue.clone(), failed.clone());
            std::thread::spawn(move || loop {
                let Some(url) = queue.lock().expect("warm queue").pop() else { break };
                let addr = if url.tls { tls } else { http };
                let result = addr.ok_or_else(|| "no listener".to_string()).and_then(|a| fetch(&url, a));
                match result {
                    Ok(status) if status < 400 => {}
                    Ok(status) => {
                        *failed.lock().expect("warm count") += 1;
                        tracing::warn!(url = %url.path_and_query, host = %url.authority, status, "cache warm: unexpected status");
                    }
                    Err(e) => {
                        *failed.lock().expect("warm count") += 1;
                        tracing::warn!(url = %url.path_and_query, host = %url.authority, error = %e, "cache warm failed");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let failed = *failed.lock().expect("warm count");
    tracing::info!(
        urls = total,
        failed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cache warm done"
    );
}

/// Sends one GET and reads the answer to the end; returns its status.
fn fetch(url: &WarmUrl, addr: SocketAddr) -> Result<u16, String> {
    let tcp = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: awning-warm\r\nAccept-Encoding: gzip\r\n{WARM_HEADER}: {}\r\nConnection: close\r\n\r\n",
        url.path_and_query,
        url.authority,
        warm_token()
    );
    let mut answer = Vec::new();
    if url.tls {
        let name = ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(tls_config(), name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        read_all(&mut stream, &mut answer)?;
    } else {
        let mut stream = tcp;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        read_all(&mut stream, &mut answer)?;
    }
    let status_line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "no HTTP status in the answer".to_string())
}

fn read_all(stream: &mut impl Read, out: &mut Vec<u8>) -> Result<(), String> {
    match stream.read_to_end(out) {
        Ok(_) => Ok(()),
        // A peer closing TLS without close_notify still delivered the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// TLS to our own listener on loopback: the certificate is the operator's, for
/// the public name; there is nothing to verify against here.
fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(OwnListener(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct OwnListener(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for OwnListener {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
