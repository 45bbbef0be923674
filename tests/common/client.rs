//! A small HTTP/1.1 client over a raw socket: tests need exact control of the
//! bytes sent (bad Host, absolute-form URIs, hop-by-hop headers) and must read
//! large bodies without holding them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::origin::{header_value, owned_headers};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body length, also when the body was counted rather than kept.
    pub body_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.into(),
            target: target.into(),
            headers: vec![("Host".into(), "shop.test".into())],
            body: Vec::new(),
        }
    }
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }
    pub fn post(target: &str, body: &[u8]) -> Self {
        let mut r = Self::new("POST", target);
        r.body = body.to_vec();
        r
    }
    /// Replaces the Host header (`None` sends none).
    pub fn host(mut self, host: Option<&str>) -> Self {
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
        if let Some(h) = host {
            self.headers.insert(0, ("Host".into(), h.into()));
        }
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn head_bytes(&self, body_len: Option<u64>) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = body_len {
            if !self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            {
                s.push_str(&format!("Content-Length: {n}\r\n"));
            }
        }
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
        {
            s.push_str("Connection: close\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// Sends the request on a new connection and reads the whole response.
    pub fn send(&self, addr: SocketAddr) -> Response {
        let body_len = if self.body.is_empty() && self.method == "GET" {
            None
        } else {
            Some(self.body.len() as u64)
        };
        let mut bytes = self.head_bytes(body_len);
        bytes.extend_from_slice(&self.body);
        send_raw(addr, &bytes, self.method == "HEAD")
    }

    /// Sends `len` generated body bytes without holding them; the response
    /// body is counted, not kept.
    pub fn send_streaming_upload(&self, addr: SocketAddr, len: u64) -> Response {
        let mut stream = connect(addr);
        stream.write_all(&self.head_bytes(Some(len))).unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..k]).expect("upload write");
            left -= k as u64;
        }
        read_response(&mut BufReader::new(stream), false, false)
    }

    /// Sends the request; the response body is counted, not kept.
    pub fn send_counting(&self, addr: SocketAddr) -> Response {
        let mut stream = connect(addr);
        stream.write_all(&self.head_bytes(None)).unwrap();
        read_response(&mut BufReader::new(stream), false, false)
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes raw bytes and reads one response.
pub fn send_raw(addr: SocketAddr, bytes: &[u8], head_request: bool) -> Response {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(stream), head_request, true)
}

pub fn get(addr: SocketAddr, target: &str) -> Response {
    Request::get(target).send(addr)
}

/// Reads one response from `reader`; `keep` says whether to keep the body.
pub fn read_response(reader: &mut impl BufRead, head_request: bool, keep: bool) -> Response {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response (got {:?})",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(&head).expect("parse response head");
    let status = parsed.code.unwrap();
    let headers = owned_headers(parsed.headers);
    let get = |n: &str| header_value(&headers, n);
    let mut body = Vec::new();
    let mut sink = std::io::sink();
    let out: &mut dyn Write = if keep { &mut body } else { &mut sink };
    let body_len = if head_request || status == 304 || status == 204 || (100..200).contains(&status)
    {
        0
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        super::origin::read_chunked(reader, &mut WriteRef(out)).expect("chunked body")
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        let n = std::io::copy(&mut reader.take(len), &mut WriteRef(out)).expect("body");
        assert_eq!(n, len, "body shorter than Content-Length");
        n
    } else {
        std::io::copy(reader, &mut WriteRef(out)).expect("body to close")
    };
    Response {
        status,
        headers,
        body,
        body_len,
    }
}

struct WriteRef<'a>(&'a mut dyn Write);

impl Write for WriteRef<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
