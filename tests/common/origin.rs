//! A scripted fake origin on 127.0.0.1:0: answers each request with what the
//! test's handler says (status, headers, body, delay, or a dropped connection)
//! and records what it received, per path.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the origin received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query as sent on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Received {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    /// This many bytes, generated and written in chunks (never held in memory).
    Generated(u64),
}

#[derive(Clone, Debug)]
pub enum Action {
    Respond,
    /// Read the request, then close without answering.
    Close,
}

/// The origin's answer to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub delay: Duration,
    pub action: Action,
    /// Announce this Content-Length but send only the body, then close.
    pub claimed_len: Option<u64>,
}

impl Reply {
    pub fn ok(body: &str) -> Self {
        Self::status(200, body)
    }
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Body::Bytes(body.as_bytes().to_vec()),
            delay: Duration::ZERO,
            action: Action::Respond,
            claimed_len: None,
        }
    }
    /// Claims `len` bytes of body, sends fewer, and closes the connection.
    pub fn truncated(mut self, len: u64) -> Self {
        self.claimed_len = Some(len);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    pub fn generated(mut self, len: u64) -> Self {
        self.body = Body::Generated(len);
        self
    }
    pub fn close() -> Self {
        Self {
            action: Action::Close,
            ..Self::ok("")
        }
    }
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    counts: Mutex<HashMap<String, usize>>,
    stop: AtomicBool,
    /// Open connections, closed when the origin is dropped.
    conns: Mutex<Vec<TcpStream>>,
}

/// The fake origin; stops accepting when dropped.
pub struct FakeOrigin {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeOrigin {
    pub fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake origin");
        Self::serve_on(listener, handler)
    }

    /// An origin on `addr` again (one that was stopped), as soon as the port
    /// can be bound.
    pub fn start_at(
        addr: SocketAddr,
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = super::proxy::eventually(
            "the origin's port to be free",
            std::time::Duration::from_secs(10),
            || TcpListener::bind(addr).ok(),
        );
        Self::serve_on(listener, handler)
    }

    fn serve_on(
        listener: TcpListener,
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    st.conns.lock().unwrap().push(c);
                }
                let (st, handler) = (st.clone(), handler.clone());
                thread::spawn(move || serve(conn, &st, &*handler));
            }
        });
        Self { addr, state }
    }

    /// Answers every request with `200 body`.
    pub fn fixed(body: &'static str) -> Self {
        Self::start(move |_| Reply::ok(body))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received for `path` (without query).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received()
            .last()
            .cloned()
            .expect("the origin received nothing")
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        // Pooled keep-alive connections would keep a "stopped" origin answering.
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(conn: TcpStream, state: &State, handler: &Handler) {
    // Head and body go out in separate writes; without this, Nagle's algorithm
    // and delayed ACKs stall every keep-alive exchange by ~40 ms.
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone().expect("clone stream");
    let mut reader = BufReader::new(conn);
    loop {
        let Some((req, close)) = read_request(&mut reader) else {
            return;
        };
        *state
            .counts
            .lock()
            .unwrap()
            .entry(req.path().to_string())
            .or_default() += 1;
        state.received.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        if let Action::Close = reply.action {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if write_reply(&mut writer, &req, &reply).is_err() || close || reply.claimed_len.is_some() {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Received, bool)> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if head.len() <= 2 {
                head.clear();
                continue;
            }
            break;
        }
        if head.len() > 256 * 1024 {
            return None;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&head).ok()?;
    let headers = owned_headers(parsed.headers);
    let get = |n: &str| header_value(&headers, n);
    // As Node does: a client waiting for permission gets `100 Continue`.
    if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .ok()?;
    }
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body_len = if chunked {
        read_chunked(reader, &mut std::io::sink())?
    } else {
        let len: u64 = get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink()).ok()?
    };
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some((
        Received {
            method: parsed.method?.to_string(),
            target: parsed.path?.to_string(),
            headers,
            body_len,
        },
        close,
    ))
}

/// Header fields as owned (name, value) pairs.
pub fn owned_headers(fields: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The first value of header `name` (case-insensitive).
pub fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Decodes a chunked body into `out`; returns the decoded length.
pub fn read_chunked(reader: &mut impl BufRead, out: &mut impl Write) -> Option<u64> {
    let mut total = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = u64::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer).ok()? == 0 || trailer.trim().is_empty() {
                    return Some(total);
                }
            }
        }
        let copied = std::io::copy(&mut reader.by_ref().take(size), out).ok()?;
        if copied != size {
            return None;
        }
        total += size;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

fn write_reply(w: &mut TcpStream, req: &Received, reply: &Reply) -> std::io::Result<()> {
    let len = match &reply.body {
        Body::Bytes(b) => b.len() as u64,
        Body::Generated(n) => *n,
    };
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = reply
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !chunked
        && !reply
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!(
            "content-length: {}\r\n",
            reply.claimed_len.unwrap_or(len)
        ));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if req.method == "HEAD" || reply.status == 304 || reply.status == 204 {
        return w.flush();
    }
    match &reply.body {
        Body::Bytes(b) => w.write_all(b)?,
        Body::Generated(n) => {
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = *n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if chunked {
                    w.write_all(format!("{k:x}\r\n").as_bytes())?;
                }
                w.write_all(&chunk[..k])?;
                if chunked {
                    w.write_all(b"\r\n")?;
                }
                left -= k as u64;
            }
            if chunked {
                w.write_all(b"0\r\n\r\n")?;
            }
        }
    }
    w.flush()
}
