//! Active health checks: each upstream group with `health_check:` has every
//! server asked `GET path` each interval; a server that does not answer
//! 2xx/3xx within the timeout is skipped (and counts against readiness)
//! until a check passes again. TLS groups are checked by connecting only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::proto::MetricFamily;
use pingora_prometheus::prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::metrics::names;
use crate::snapshot::{SharedSnapshot, Snapshot};

pub struct ActiveChecks {
    snapshots: SharedSnapshot,
}

impl ActiveChecks {
    pub fn new(snapshots: SharedSnapshot) -> Self {
        Self { snapshots }
    }
}

/// Whether the server at `addr` answers `GET path` with 2xx/3xx in time
/// (for TLS groups: accepts a connection in time).
async fn probe(addr: SocketAddr, host: &str, path: &str, tls: bool, timeout: Duration) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        if tls {
            return Some(true);
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: awning-health-check\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&status))
    };
    matches!(
        tokio::time::timeout(timeout, exchange).await,
        Ok(Some(true))
    )
}

/// Checks one group forever.
async fn check_group(snapshot: Arc<Snapshot>, group: usize) {
    let g = &snapshot.upstreams[group];
    let Some(check) = g.settings.health_check.clone() else {
        return;
    };
    let host = g.settings.sni.clone();
    loop {
        for server in 0..g.len() {
            let state = g.server(server);
            let ok = probe(
                state.addr,
                &host,
                &check.path,
                g.settings.tls,
                check.timeout,
            )
            .await;
            if g.record_check(server, ok) {
                if ok {
                    log::warn!(
                        "upstream {} server {}: health check passes again",
                        g.name(),
                        state.label
                    );
                } else {
                    log::warn!(
                        "upstream {} server {}: health check failed; taken out",
                        g.name(),
                        state.label
                    );
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}

#[async_trait]
impl BackgroundService for ActiveChecks {
    /// Checks the groups of the running snapshot; after a reload, those of
    /// the new one (servers a reload kept share their state, so nothing
    /// flaps).
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.snapshots.load_full();
            let tasks: Vec<_> = (0..snapshot.upstreams.len())
                .filter(|g| snapshot.upstreams[*g].settings.health_check.is_some())
                .map(|g| tokio::spawn(check_group(snapshot.clone(), g)))
                .collect();
            let reloaded = async {
                while Arc::ptr_eq(&snapshot, &self.snapshots.load()) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                _ = reloaded => false,
            };
            for t in tasks {
                t.abort();
            }
            if stop {
                return;
            }
        }
    }
}

/// Upstream health and the config generation, read from the running
/// snapshot when Prometheus scrapes.
pub struct HealthMetrics {
    snapshots: SharedSnapshot,
    healthy: IntGaugeVec,
    servers: IntGaugeVec,
    generation: IntGauge,
}

impl HealthMetrics {
    pub fn register(snapshots: SharedSnapshot) {
        let me = Self {
            snapshots,
            healthy: IntGaugeVec::new(
                Opts::new(
                    names::UPSTREAM_HEALTHY_SERVERS,
                    "Servers of an upstream group considered up (passive failures and health checks).",
                ),
                &["upstream"],
            )
            .expect("valid metric"),
            servers: IntGaugeVec::new(
                Opts::new(names::UPSTREAM_SERVERS, "Servers of an upstream group."),
                &["upstream"],
            )
            .expect("valid metric"),
            generation: IntGauge::new(
                names::CONFIG_GENERATION,
                "The running configuration's generation.",
            )
            .expect("valid metric"),
        };
        let _ = pingora_prometheus::prometheus::register(Box::new(me));
    }
}

impl Collector for HealthMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.healthy.desc();
        d.extend(self.servers.desc());
        d.extend(self.generation.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.snapshots.load();
        self.healthy.reset();
        self.servers.reset();
        for g in snap.upstreams.iter() {
            self.healthy
                .with_label_values(&[g.name()])
                .set(g.healthy_count() as i64);
            self.servers
                .with_label_values(&[g.name()])
                .set(g.len() as i64);
        }
        self.generation.set(snap.generation as i64);
        let mut out = self.healthy.collect();
        out.extend(self.servers.collect());
        out.extend(self.generation.collect());
        out
    }
}
