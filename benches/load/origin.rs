//! The load bench's origin: deterministic answers, so that both proxies are
//! measured against the same backend.
//!
//! - `/small`: 1 KiB, cacheable for an hour, with an ETag
//! - `/large`: 100 KiB, likewise
//! - `/slow`: 1 KiB after 100 ms, cacheable (the stampede target)
//! - `/nocache`: 1 KiB with `Cache-Control: no-store` (the pass scenario)
//! - `/__stats`: `{"small": N, ...}`, requests seen per path, for counting
//!   what reached the origin
//!
//! The query string never changes the body, so distinct keys are distinct
//! cache entries of the same page. Prints `listening ADDR` once bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SMALL: usize = 1024;
const LARGE: usize = 100 * 1024;
const SLOW_DELAY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Counts {
    small: AtomicU64,
    large: AtomicU64,
    slow: AtomicU64,
    nocache: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn json(&self) -> String {
        format!(
            r#"{{"small":{},"large":{},"slow":{},"nocache":{},"other":{}}}"#,
            self.small.load(Ordering::Relaxed),
            self.large.load(Ordering::Relaxed),
            self.slow.load(Ordering::Relaxed),
            self.nocache.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// A complete response, built once.
struct Canned {
    full: Vec<u8>,
    not_modified: Vec<u8>,
    head_len: usize,
    etag: &'static [u8],
}

impl Canned {
    fn new(size: usize, cache_control: &str, etag: &'static str) -> Canned {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let etag_line = if etag.is_empty() {
            String::new()
        } else {
            format!("ETag: {etag}\r\n")
        };
        let mut full = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {size}\r\n\
             Cache-Control: {cache_control}\r\n{etag_line}\r\n"
        )
        .into_bytes();
        let head_len = full.len();
        full.extend_from_slice(&body);
        let not_modified = format!(
            "HTTP/1.1 304 Not Modified\r\nCache-Control: {cache_control}\r\n{etag_line}\r\n"
        )
        .into_bytes();
        Canned {
            full,
            not_modified,
            head_len,
            etag: etag.as_bytes(),
        }
    }
}

struct Origin {
    small: Canned,
    large: Canned,
    slow: Canned,
    nocache: Canned,
    counts: Counts,
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        println!("listening {}", listener.local_addr()?);
        let origin = Arc::new(Origin {
            small: Canned::new(SMALL, "public, max-age=3600", "\"small-v1\""),
            large: Canned::new(LARGE, "public, max-age=3600", "\"large-v1\""),
            slow: Canned::new(SMALL, "public, max-age=3600", "\"slow-v1\""),
            nocache: Canned::new(SMALL, "no-store", ""),
            counts: Counts::default(),
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, origin.clone()));
        }
    })
}

async fn serve(mut stream: TcpStream, origin: Arc<Origin>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        // A whole request head (GETs only: no bodies to skip).
        let head_len = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(
            request.parse(&buf[..head_len]),
            Ok(httparse::Status::Complete(_))
        ) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        let path = request.path.unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path).to_owned();
        let if_none_match = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("if-none-match"))
            .map(|h| h.value.to_vec());
        let head_only = request.method == Some("HEAD");
        let counts = &origin.counts;
        let canned = match path.as_str() {
            "/small" => (&origin.small, &counts.small),
            "/large" => (&origin.large, &counts.large),
            "/slow" => (&origin.slow, &counts.slow),
            "/nocache" => (&origin.nocache, &counts.nocache),
            "/__stats" => {
                let body = counts.json();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                buf.drain(..head_len);
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            _ => {
                counts.other.fetch_add(1, Ordering::Relaxed);
                buf.drain(..head_len);
                if stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let (canned, count) = canned;
        count.fetch_add(1, Ordering::Relaxed);
        buf.drain(..head_len);
        if path == "/slow" {
            tokio::time::sleep(SLOW_DELAY).await;
        }
        let answer: &[u8] = match if_none_match {
            Some(tag) if !canned.etag.is_empty() && tag == canned.etag => &canned.not_modified,
            _ if head_only => &canned.full[..canned.head_len],
            _ => &canned.full,
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}
