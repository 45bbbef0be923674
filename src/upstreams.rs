//! Upstream groups at run time: round-robin over a group's servers, skipping
//! servers that recently failed to connect (passive health, like nginx's
//! `max_fails=1 fail_timeout=10s`), and servers whose active health check
//! failed (see `health.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::config::Upstream;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// One origin server and when it may be tried again after a failure.
#[derive(Debug)]
pub struct ServerState {
    pub addr: SocketAddr,
    /// The server as the operator wrote it (for logs).
    pub label: String,
    down_until_ms: AtomicU64,
    /// The last active health check failed.
    check_failed: AtomicBool,
}

impl ServerState {
    fn is_down(&self, now: u64) -> bool {
        self.check_failed.load(Ordering::Relaxed)
            || self.down_until_ms.load(Ordering::Relaxed) > now
    }
}

/// A named group of origin servers.
#[derive(Debug)]
pub struct UpstreamGroup {
    pub settings: Upstream,
    /// Shared with the previous generation's group for servers a reload
    /// did not change, so their health carries over.
    servers: Vec<Arc<ServerState>>,
    next: AtomicUsize,
}

/// The servers one request has tried, so retries go elsewhere.
#[derive(Clone, Debug, Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn add(&mut self, server: usize) {
        if !self.0.contains(&server) {
            self.0.push(server);
        }
    }
    pub fn contains(&self, server: usize) -> bool {
        self.0.contains(&server)
    }
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl UpstreamGroup {
    pub fn new(settings: Upstream) -> Self {
        Self::succeeding(settings, None)
    }

    /// The group for a new configuration generation: a server that `previous`
    /// (the same group in the running generation) also has keeps its state
    /// (down after failures, failed health check).
    pub fn succeeding(settings: Upstream, previous: Option<&UpstreamGroup>) -> Self {
        let servers = settings
            .servers
            .iter()
            .map(|(label, addr)| {
                let kept = previous.and_then(|p| {
                    p.servers
                        .iter()
                        .find(|s| s.addr == *addr && s.label == *label)
                });
                match kept {
                    Some(s) => {
                        // Nothing checks the group any more: a failed check
                        // must not keep the server out for good.
                        if settings.health_check.is_none() {
                            s.check_failed.store(false, Ordering::Relaxed);
                        }
                        Arc::clone(s)
                    }
                    None => Arc::new(ServerState {
                        addr: *addr,
                        label: label.clone(),
                        down_until_ms: AtomicU64::new(0),
                        check_failed: AtomicBool::new(false),
                    }),
                }
            })
            .collect();
        Self {
            settings,
            servers,
            next: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn server(&self, index: usize) -> &ServerState {
        &self.servers[index]
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The next server in round-robin order that this request has not tried,
    /// preferring healthy ones; a down server is still tried when nothing else is left.
    pub fn pick(&self, tried: &Tried) -> Option<usize> {
        let n = self.servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let mut fallback = None;
        for i in 0..n {
            let idx = (start + i) % n;
            if tried.contains(idx) {
                continue;
            }
            if !self.servers[idx].is_down(now) {
                return Some(idx);
            }
            fallback.get_or_insert(idx);
        }
        fallback
    }

    /// Whether a server remains for a retry.
    pub fn has_untried(&self, tried: &Tried) -> bool {
        tried.count() < self.servers.len()
    }

    /// Skip `server` for the group's `fail_timeout`.
    pub fn mark_failed(&self, server: usize) {
        let until = now_ms() + self.settings.fail_timeout.as_millis() as u64;
        self.servers[server]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// A successful exchange brings a server back at once.
    pub fn mark_ok(&self, server: usize) {
        let s = &self.servers[server];
        if s.down_until_ms.load(Ordering::Relaxed) != 0 {
            s.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Records an active health check; returns whether the server's state changed.
    pub fn record_check(&self, server: usize, ok: bool) -> bool {
        self.servers[server]
            .check_failed
            .swap(!ok, Ordering::Relaxed)
            == ok
    }

    /// Servers currently considered up.
    pub fn healthy_count(&self) -> usize {
        let now = now_ms();
        self.servers.iter().filter(|s| !s.is_down(now)).count()
    }

    pub fn fail_timeout(&self) -> Duration {
        self.settings.fail_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: usize) -> UpstreamGroup {
        UpstreamGroup::new(Upstream {
            name: "g".into(),
            servers: (0..n)
                .map(|i| {
                    (
                        format!("s{i}"),
                        SocketAddr::from(([127, 0, 0, 1], 3000 + i as u16)),
                    )
                })
                .collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            fail_timeout: Duration::from_secs(60),
            tls: false,
            sni: String::new(),
            health_check: None,
        })
    }

    #[test]
    fn a_failed_health_check_takes_a_server_out_until_one_passes() {
        let g = group(2);
        assert!(g.record_check(0, false), "up -> down is a change");
        assert!(!g.record_check(0, false));
        assert_eq!(g.healthy_count(), 1);
        let picks: Vec<usize> = (0..4).map(|_| g.pick(&Tried::default()).unwrap()).collect();
        assert!(picks.iter().all(|p| *p == 1), "{picks:?}");
        assert!(g.record_check(0, true));
        assert_eq!(g.healthy_count(), 2);
    }

    #[test]
    fn a_reloaded_group_keeps_the_state_of_servers_it_still_has() {
        let old = group(2);
        old.mark_failed(0);
        assert!(old.record_check(1, false));
        let mut settings = old.settings.clone();
        settings.servers[1].1 = SocketAddr::from(([127, 0, 0, 1], 4000));
        let new = UpstreamGroup::succeeding(settings, Some(&old));
        assert_eq!(
            new.healthy_count(),
            1,
            "server 0 is still down, the new server 1 is up"
        );
        let picks: Vec<usize> = (0..3)
            .map(|_| new.pick(&Tried::default()).unwrap())
            .collect();
        assert!(picks.iter().all(|p| *p == 1), "{picks:?}");
        new.mark_ok(0);
        assert_eq!(
            old.healthy_count(),
            1,
            "one state, seen by both generations"
        );
    }

    #[test]
    fn a_server_failed_by_a_check_comes_back_when_the_check_is_removed() {
        let mut checked = group(1).settings;
        checked.health_check = Some(crate::config::HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        });
        let old = UpstreamGroup::new(checked.clone());
        assert!(old.record_check(0, false));
        let still_checked = UpstreamGroup::succeeding(checked.clone(), Some(&old));
        assert_eq!(still_checked.healthy_count(), 0);
        checked.health_check = None;
        let unchecked = UpstreamGroup::succeeding(checked, Some(&still_checked));
        assert_eq!(unchecked.healthy_count(), 1);
    }

    #[test]
    fn round_robin_visits_every_server() {
        let g = group(3);
        let picks: Vec<usize> = (0..6).map(|_| g.pick(&Tried::default()).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn failed_servers_are_skipped_until_nothing_else_is_left() {
        let g = group(3);
        g.mark_failed(1);
        for _ in 0..6 {
            assert_ne!(g.pick(&Tried::default()), Some(1));
        }
        let mut tried = Tried::default();
        tried.add(0);
        tried.add(2);
        assert_eq!(g.pick(&tried), Some(1), "a down server is better than none");
        tried.add(1);
        assert_eq!(g.pick(&tried), None);
        assert!(!g.has_untried(&tried));
        g.mark_ok(1);
        assert_eq!(g.healthy_count(), 3);
    }
}
