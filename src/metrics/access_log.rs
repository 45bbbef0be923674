//! The access log: one JSON line per request, to stdout, stderr or a file.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{AccessLog, LogSink};

/// One request as logged. The query string is left out unless configured:
/// it often carries e-mail addresses, search terms and tokens.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub request_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// Time to the origin's first response byte.
    pub upstream_ms: Option<f64>,
    pub route: Option<&'a str>,
    /// hit, stale, stale_if_error, miss, expired, revalidated or bypass.
    pub cache: &'static str,
    /// `policy:result` of the rate limit that spoke, if any.
    pub limit: Option<&'a str>,
    /// The origin server that answered.
    pub upstream: Option<String>,
}

pub struct AccessLogger {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    query: bool,
    /// Log one of every `hit_every` successful hits (0: none).
    hit_every: u64,
    hits: AtomicU64,
}

impl AccessLogger {
    /// Opens the sink; a file is appended to.
    pub fn new(config: &AccessLog) -> std::io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match &config.to {
            LogSink::Off => None,
            LogSink::Stdout => Some(Box::new(std::io::stdout())),
            LogSink::Stderr => Some(Box::new(std::io::stderr())),
            LogSink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(Self {
            sink: sink.map(Mutex::new),
            query: config.query,
            hit_every: if config.hit_sample <= 0.0 {
                0
            } else {
                (1.0 / config.hit_sample).round().max(1.0) as u64
            },
            hits: AtomicU64::new(0),
        })
    }

    /// Whether query strings are logged.
    pub fn logs_query(&self) -> bool {
        self.query
    }

    /// Whether this request gets a line: all but the successful hits left
    /// out by sampling.
    pub fn wants(&self, status: u16, cache: &str) -> bool {
        if self.sink.is_none() {
            return false;
        }
        if cache != "hit" || status >= 400 {
            return true;
        }
        self.hit_every != 0 && self.hits.fetch_add(1, Ordering::Relaxed) % self.hit_every == 0
    }

    /// Writes one line (a failing sink loses the line, never the request).
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let mut sink = sink.lock();
        let _ = sink.write_all(&line);
        let _ = sink.flush();
    }
}

/// RFC 3339 time with milliseconds, UTC.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(hit_sample: f64) -> AccessLogger {
        AccessLogger::new(&AccessLog {
            to: LogSink::Stderr,
            query: false,
            hit_sample,
        })
        .unwrap()
    }

    #[test]
    fn samples_only_successful_hits() {
        let l = logger(0.25);
        let kept = (0..100).filter(|_| l.wants(200, "hit")).count();
        assert_eq!(kept, 25);
        assert!((0..10).all(|_| l.wants(200, "miss")));
        assert!((0..10).all(|_| l.wants(404, "hit")));
        let none = logger(0.0);
        assert!(!none.wants(200, "hit"));
        assert!(none.wants(502, "bypass"));
    }
}
