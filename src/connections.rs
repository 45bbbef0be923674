//! Client connections before HTTP: caps on concurrent connections per
//! listener and per client address, and a total deadline for each request's
//! header section (slowloris). Pingora times out each read, not the whole
//! header, so a client sending one byte a second would hold a connection
//! forever; awning wraps every accepted stream to bound the total.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::ClientLimits;
use crate::metrics;
use crate::snapshot::SharedSnapshot;

/// Connections held open right now, per listener port and per client.
#[derive(Default)]
struct Counts {
    per_listener: Mutex<HashMap<u16, usize>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases a connection's places in [`Counts`] when the connection ends.
struct Slot {
    counts: Arc<Counts>,
    listener: Option<u16>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::connection_change(-1);
        if let Some(port) = self.listener {
            release(&mut self.counts.per_listener.lock(), port);
        }
        if let Some(ip) = self.ip {
            release(&mut self.counts.per_ip.lock(), ip);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Wraps an application (the proxy) with connection caps and header deadlines.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: ClientLimits,
    /// Read per connection: `trusted_proxies` follows reloads.
    snapshots: SharedSnapshot,
    /// IPv6 clients are counted per prefix, as the rate limiter keys them.
    ipv6_prefix: u8,
    counts: Arc<Counts>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: ClientLimits, snapshots: SharedSnapshot, ipv6_prefix: u8) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            snapshots,
            ipv6_prefix,
            counts: Arc::default(),
        }
    }

    /// A place for a new connection, or `None` when a cap is reached. Trusted
    /// proxies carry many customers on few addresses: no per-address cap.
    fn admit(&self, listener: Option<u16>, ip: Option<IpAddr>) -> Option<Slot> {
        let ip = ip.map(|ip| ip.to_canonical());
        let capped_ip = ip
            .filter(|ip| {
                let snap = self.snapshots.load();
                !snap.config.trusted_proxies.iter().any(|n| n.contains(ip))
            })
            .map(|ip| crate::limits::ip_key(ip, self.ipv6_prefix));
        {
            let mut per_listener = self.counts.per_listener.lock();
            if let Some(port) = listener {
                if per_listener.get(&port).copied().unwrap_or(0) >= self.limits.max_connections {
                    return None;
                }
            }
            if let Some(ip) = capped_ip {
                let mut per_ip = self.counts.per_ip.lock();
                let n = per_ip.entry(ip).or_insert(0);
                if *n >= self.limits.max_connections_per_ip {
                    if *n == 0 {
                        per_ip.remove(&ip);
                    }
                    return None;
                }
                *n += 1;
            }
            if let Some(port) = listener {
                *per_listener.entry(port).or_insert(0) += 1;
            }
        }
        metrics::connection_change(1);
        Some(Slot {
            counts: self.counts.clone(),
            listener,
            ip: capped_ip,
        })
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 24\r\nretry-after: 1\r\nconnection: close\r\n\r\n503 Service Unavailable\n";

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A reused keep-alive connection comes back already wrapped.
        let stream = if stream.as_any().is::<GuardedStream>() {
            stream
        } else {
            let digest = stream.get_socket_digest();
            let peer = digest
                .as_ref()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(SocketAddr::ip));
            let listener = digest.as_ref().and_then(|d| {
                d.local_addr()
                    .and_then(|a| a.as_inet())
                    .map(SocketAddr::port)
            });
            let h2 = stream.selected_alpn_proto() == Some(ALPN::H2);
            let Some(slot) = self.admit(listener, peer) else {
                metrics::rejected("too_many_connections");
                log::info!("refused a connection: connection cap reached");
                let mut stream = stream;
                if !h2 {
                    let _ = stream.write_all(TOO_MANY).await;
                }
                Shutdown::shutdown(&mut *stream).await;
                return None;
            };
            let deadline = Some(self.limits.header_timeout);
            let mut guarded = GuardedStream::new(stream, slot, deadline, h2);
            // The first bytes are read before the proxy sees the connection:
            // a proxy shutting down (binary upgrade) drops connections whose
            // request it has not read yet, but serves buffered ones, so a
            // connection accepted just before the hand-over is not lost.
            if !guarded.prime().await {
                return None;
            }
            Box::new(guarded) as Stream
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where a connection is in its request cycle, as far as bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a header section: the deadline runs.
    Header,
    /// The header is complete; body bytes and the answer flow.
    Rest,
    /// An answer was written; the next byte read starts a new header.
    Idle,
}

/// The accepted stream with the header deadline.
pub struct GuardedStream {
    inner: Stream,
    _slot: Slot,
    header_timeout: Option<Duration>,
    /// HTTP/2 (by ALPN): only its preface, which ends in a blank line, is
    /// held to the deadline; after it, frames flow and h2's own idle timeout
    /// applies.
    h2: bool,
    phase: Phase,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    header_end: HeaderEnd,
    /// Bytes read ahead by [`GuardedStream::prime`], handed out first.
    primed: bytes::Bytes,
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("phase", &self.phase)
            .finish()
    }
}

impl GuardedStream {
    fn new(inner: Stream, slot: Slot, header_timeout: Option<Duration>, h2: bool) -> Self {
        let mut me = Self {
            inner,
            _slot: slot,
            header_timeout,
            h2,
            phase: Phase::Header,
            timer: None,
            header_end: HeaderEnd::default(),
            primed: bytes::Bytes::new(),
        };
        // A new connection must send its first header within the deadline.
        me.arm();
        me
    }

    fn arm(&mut self) {
        self.phase = Phase::Header;
        self.header_end = HeaderEnd::default();
        let Some(timeout) = self.header_timeout else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // The connection's one timer is moved, not replaced: a new one per
        // request would be an allocation and a timer-wheel entry each time.
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Reads the connection's first bytes (under the header deadline) and
    /// keeps them for the proxy. `false`: the client closed or sent nothing
    /// in time.
    async fn prime(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        // Most request heads fit; the rest is read as usual.
        let mut first = vec![0u8; 4 * 1024];
        match self.read(&mut first).await {
            Ok(n) if n > 0 => {
                first.truncate(n);
                self.primed = bytes::Bytes::from(first);
                true
            }
            _ => false,
        }
    }

    /// Ends the header phase when `bytes` complete the header section.
    fn scan(&mut self, bytes: &[u8]) {
        if self.header_end.feed(bytes) {
            // The timer is kept for the next request (it is polled only
            // in the header phase; at worst it wakes the task once, idle).
            self.phase = Phase::Rest;
        }
    }
}

/// Finds the blank line that ends a header section in bytes read in pieces,
/// without keeping or copying them.
#[derive(Debug, Default)]
struct HeaderEnd {
    /// A byte other than CR/LF was seen: before one, blank lines are skipped
    /// (as the parser does) and end nothing.
    started: bool,
    /// The last bytes seen, for an end split across reads.
    tail: [u8; 3],
    tail_len: usize,
}

impl HeaderEnd {
    /// Feeds the next bytes read; whether the header section ended in them.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let bytes = if self.started {
            bytes
        } else {
            match bytes.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(first) => {
                    self.started = true;
                    &bytes[first..]
                }
                None => return false,
            }
        };
        // The seam: the kept tail joined to this read's first bytes.
        let head = bytes.len().min(3);
        let mut seam = [0u8; 6];
        seam[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        seam[self.tail_len..self.tail_len + head].copy_from_slice(&bytes[..head]);
        if ends_header(&seam[..self.tail_len + head]) || ends_header(bytes) {
            return true;
        }
        let joined = &seam[..self.tail_len + head];
        let (keep_from, source): (usize, &[u8]) = if bytes.len() >= 3 {
            (bytes.len() - 3, bytes)
        } else {
            (joined.len().saturating_sub(3), joined)
        };
        let kept = &source[keep_from..];
        self.tail[..kept.len()].copy_from_slice(kept);
        self.tail_len = kept.len();
        false
    }
}

/// Whether `bytes` hold the blank line that ends a header section.
fn ends_header(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

impl GuardedStream {
    /// An answer starts: the next request's header comes after it. Interim
    /// answers (`100 Continue`) come before the body, not after it.
    fn on_write(&mut self, buf: &[u8]) {
        if self.h2 || self.phase == Phase::Idle {
            return;
        }
        let interim =
            buf.len() > 9 && (buf.starts_with(b"HTTP/1.1 1") || buf.starts_with(b"HTTP/1.0 1"));
        if interim {
            return;
        }
        count_parser_refusal(buf);
        self.phase = Phase::Idle;
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.primed.is_empty() {
            // Already scanned when they were read.
            let n = me.primed.len().min(buf.remaining());
            buf.put_slice(&me.primed.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if me.phase == Phase::Header {
            if let Some(timer) = me.timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    metrics::rejected("header_timeout");
                    log::info!("closed a connection: request header not complete in time");
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request header deadline",
                    )));
                }
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let filled = &buf.filled()[before..];
            if !filled.is_empty() {
                if me.phase == Phase::Idle {
                    me.arm();
                }
                if me.phase == Phase::Header && me.header_timeout.is_some() {
                    me.scan(filled);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        me.on_write(buf);
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            me.on_write(first);
        }
        Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Pingora answers a header its parser refuses (obs-fold, a space before a
/// colon, control bytes in a value, ...) with a bare 400 before awning sees
/// the request. awning's own answers always carry `X-Content-Type-Options`,
/// so a 400 without it, as the first write of an answer, is the parser's.
fn count_parser_refusal(head: &[u8]) {
    let is_400 = head.starts_with(b"HTTP/1.1 400 ") || head.starts_with(b"HTTP/1.0 400 ");
    if is_400 {
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(head.len());
        let ours = head[..end]
            .windows(22)
            .any(|w| w.eq_ignore_ascii_case(b"x-content-type-options"));
        if !ours {
            metrics::rejected("malformed_header");
            log::info!("refused a request whose header does not parse");
        }
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends_within(pieces: &[&[u8]]) -> Option<usize> {
        let mut h = HeaderEnd::default();
        pieces.iter().position(|p| h.feed(p))
    }

    #[test]
    fn finds_the_header_end_however_the_bytes_are_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..head.len() {
            assert_eq!(
                ends_within(&[&head[..cut], &head[cut..]]),
                Some(1),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(
            ends_within(&bytes),
            Some(head.len() - 1),
            "a byte at a time"
        );
        assert_eq!(ends_within(&[b"GET / HTTP/1.1\nHost: a\n", b"\n"]), Some(1));
        assert_eq!(ends_within(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
    }

    #[test]
    fn blank_lines_before_a_request_end_nothing() {
        assert_eq!(
            ends_within(&[b"\r\n\r\n", b"\r\n", b"GET / HTTP/1.1\r\n"]),
            None
        );
        assert_eq!(
            ends_within(&[b"\r\n\r\nGET / HTTP/1.1\r\n", b"\r\n"]),
            Some(1)
        );
    }
}
