//! The access log: one JSON line per request, to stdout, stderr or a file.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Where lines go, opened but not yet in use (a reload opens the new sink
/// before it commits to anything).
pub struct Sink(Option<Box<dyn Write + Send>>);

pub struct AccessLogger {
    sink: Mutex<Sink>,
    enabled: AtomicBool,
    query: AtomicBool,
    /// Log one of every `hit_every` successful hits (0: none).
    hit_every: AtomicU64,
    hits: AtomicU64,
}

impl Sink {
    /// Opens the sink; a file is appended to (and created when missing).
    pub fn open(config: &AccessLog) -> std::io::Result<Sink> {
        Ok(Sink(match &config.to {
            LogSink::Off => None,
            LogSink::Stdout => Some(Box::new(std::io::stdout())),
            LogSink::Stderr => Some(Box::new(std::io::stderr())),
            LogSink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        }))
    }
}

impl AccessLogger {
    pub fn new(config: &AccessLog) -> std::io::Result<Self> {
        let me = Self {
            sink: Mutex::new(Sink(None)),
            enabled: AtomicBool::new(false),
            query: AtomicBool::new(false),
            hit_every: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        };
        me.install(Sink::open(config)?, config);
        Ok(me)
    }

    /// Switches to `sink` and `config`'s settings (on reload; a file sink is
    /// reopened each time, so that log rotation needs only a reload).
    pub fn install(&self, sink: Sink, config: &AccessLog) {
        let hit_every = if config.hit_sample <= 0.0 {
            0
        } else {
            (1.0 / config.hit_sample).round().max(1.0) as u64
        };
        self.query.store(config.query, Ordering::Relaxed);
        self.hit_every.store(hit_every, Ordering::Relaxed);
        self.enabled.store(sink.0.is_some(), Ordering::Relaxed);
        *self.sink.lock() = sink;
    }

    /// Whether query strings are logged.
    pub fn logs_query(&self) -> bool {
        self.query.load(Ordering::Relaxed)
    }

    /// Whether this request gets a line: all but the successful hits left
    /// out by sampling.
    pub fn wants(&self, status: u16, cache: &str) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        if cache != "hit" || status >= 400 {
            return true;
        }
        let every = self.hit_every.load(Ordering::Relaxed);
        every != 0 && self.hits.fetch_add(1, Ordering::Relaxed) % every == 0
    }

    /// Writes one line (a failing sink loses the line, never the request).
    pub fn write(&self, entry: &Entry<'_>) {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            if serde_json::to_writer(&mut *line, entry).is_err() {
                return;
            }
            line.push(b'\n');
            let mut sink = self.sink.lock();
            if let Some(w) = sink.0.as_mut() {
                let _ = w.write_all(&line);
                let _ = w.flush();
            }
        });
    }
}

thread_local! {
    /// The line being written, reused: a fresh vector grew (and was copied)
    /// two or three times for every line.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
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
