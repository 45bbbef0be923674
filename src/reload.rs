//! One reload path for SIGHUP, the file watcher and `POST /reload`: load ->
//! validate everything -> compile -> swap the snapshot. A config with any
//! error changes nothing. Requests in flight keep the snapshot they started
//! with. Triggers that arrive while a reload runs are answered by the next
//! one, which reads the files as they are then (a storm of triggers makes at
//! most two reloads).

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use pingora_prometheus::prometheus::{Gauge, IntCounterVec, IntGaugeVec, Opts};
use serde::Serialize;

use crate::app::ConfigAdjust;
use crate::config::{self, Config, ConfigError};
use crate::metrics::access_log::{AccessLogger, Sink};
use crate::metrics::{self, names};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Signal,
    Watch,
    Admin,
    Rollback,
}

/// How a reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A new generation runs.
    Applied,
    /// The files are the ones running: nothing changed (the access log was reopened).
    Unchanged,
    /// The files have errors: the running config is untouched.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Unchanged => "unchanged",
            Status::Rejected => "rejected",
        }
    }
}

/// One config error, as `POST /reload` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorReport {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: Option<String>,
    pub message: String,
}

impl From<&ConfigError> for ErrorReport {
    fn from(e: &ConfigError) -> Self {
        Self {
            file: e.file.clone(),
            line: e.position.map(|p| p.line),
            column: e.position.map(|p| p.column),
            path: e.path.as_ref().map(|p| p.to_string()),
            message: e.message.clone(),
        }
    }
}

/// The outcome of one reload (or rollback).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub outcome: Status,
    pub trigger: Trigger,
    /// The generation running after it.
    pub generation: u64,
    /// Content hash of the running config after it.
    pub hash: String,
    /// Settings that changed in the files but apply only after a restart
    /// (the old values stay in force).
    pub needs_restart: Vec<&'static str>,
    pub errors: Vec<ErrorReport>,
    pub took_ms: f64,
}

static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        names::CONFIG_RELOADS,
        "Configuration reloads by outcome (applied, unchanged, rejected).",
        &["outcome"],
    )
});

static LAST_SUCCESS: LazyLock<Gauge> = LazyLock::new(|| {
    let g = Gauge::with_opts(Opts::new(
        names::CONFIG_LAST_RELOAD_SUCCESS,
        "Unix time of the last successful config load (start, reload or rollback).",
    ))
    .expect("valid metric");
    let _ = pingora_prometheus::prometheus::register(Box::new(g.clone()));
    g
});

static INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new(
            names::CONFIG_INFO,
            "1, labelled with the content hash of the running configuration.",
        ),
        &["hash"],
    )
    .expect("valid metric");
    let _ = pingora_prometheus::prometheus::register(Box::new(g.clone()));
    g
});

/// Exports the running config's hash and load time; called at start and after each swap.
fn export_running(hash: &str) {
    INFO.reset();
    INFO.with_label_values(&[hash]).set(1);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    LAST_SUCCESS.set(now.as_secs_f64());
}

/// The settings read once at start. A reload that changes them reports each
/// by name and keeps the running value, so that the snapshot shows what is
/// really in force.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if running.$($field)+ != new.$($field)+ {
                changed.push($name);
                new.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    keep!("threads", threads);
    keep!("listen.http", listen.http);
    keep!("listen.tls", listen.tls);
    keep!("admin.listen", admin.listen);
    keep!("metrics.listen", metrics.listen);
    keep!("cache.memory", cache.memory);
    keep!("cache.max_object", cache.max_object);
    keep!("cache.tag_headers", cache.tag_headers);
    keep!("cache.shared", cache.shared);
    keep!("cache.shared_max_object", cache.shared_max_object);
    keep!("redis", redis);
    keep!("limiter.table_size", limiter.table_size);
    keep!("limiter.ipv6_prefix", limiter.ipv6_prefix);
    keep!("clients", clients);
    keep!("shutdown_grace", shutdown_grace);
    keep!("upgrade_socket", upgrade_socket);
    keep!("reload.watch", reload.watch);
    keep!("reload.debounce", reload.debounce);
    changed
}

struct Tickets {
    /// Reloads asked for so far.
    requested: u64,
    /// Asks answered: a reload answers every ask made before it started.
    answered: u64,
    last_trigger: Trigger,
    last: Option<Arc<Outcome>>,
}

/// Owns reloading. Built once at start; SIGHUP, the watcher and the admin
/// API go through [`Reloader::request`].
pub struct Reloader {
    path: PathBuf,
    snapshots: SharedSnapshot,
    access_log: Arc<AccessLogger>,
    adjust: Option<ConfigAdjust>,
    tickets: Mutex<Tickets>,
    wake: Condvar,
    /// Held while a new snapshot is built and swapped (reload or rollback).
    applying: Mutex<Previous>,
    /// Its hash, readable without waiting for a reload in progress.
    previous_hash: Mutex<Option<String>>,
}

/// The last good generation before the running one, for rollback.
#[derive(Default)]
struct Previous(Option<Arc<Snapshot>>);

static RUNNING: OnceLock<Arc<Reloader>> = OnceLock::new();

/// The process's reloader, once `start` ran.
pub fn running() -> Option<&'static Arc<Reloader>> {
    RUNNING.get()
}

impl Reloader {
    /// Starts the reload worker (and the file watcher when `reload.watch`).
    pub fn start(
        path: &Path,
        snapshots: SharedSnapshot,
        access_log: Arc<AccessLogger>,
        adjust: Option<ConfigAdjust>,
    ) -> std::io::Result<Arc<Reloader>> {
        for r in [Status::Applied, Status::Unchanged, Status::Rejected] {
            RELOADS.with_label_values(&[r.as_str()]);
        }
        let snap = snapshots.load_full();
        export_running(&snap.hash);
        let me = Arc::new(Reloader {
            path: path.to_path_buf(),
            snapshots,
            access_log,
            adjust,
            tickets: Mutex::new(Tickets {
                requested: 0,
                answered: 0,
                last_trigger: Trigger::Signal,
                last: None,
            }),
            wake: Condvar::new(),
            applying: Mutex::new(Previous::default()),
            previous_hash: Mutex::new(None),
        });
        let worker = Arc::clone(&me);
        std::thread::Builder::new()
            .name("awning-reload".into())
            .spawn(move || worker.work())?;
        if snap.config.reload.watch {
            crate::watch::spawn(Arc::clone(&me), snap.config.reload.debounce)?;
        }
        let _ = RUNNING.set(Arc::clone(&me));
        Ok(me)
    }

    pub fn snapshots(&self) -> &SharedSnapshot {
        &self.snapshots
    }

    /// Asks for a reload; returns a ticket for [`Reloader::wait`].
    pub fn request(&self, trigger: Trigger) -> u64 {
        let mut t = self.tickets.lock();
        t.requested += 1;
        t.last_trigger = trigger;
        self.wake.notify_all();
        t.requested
    }

    /// The outcome of the reload that answered `ticket`, blocking until it
    /// ran (`None` after [`WAIT_LIMIT`]).
    pub fn wait(&self, ticket: u64) -> Option<Arc<Outcome>> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut t = self.tickets.lock();
        loop {
            if t.answered >= ticket {
                if let Some(o) = &t.last {
                    return Some(Arc::clone(o));
                }
            }
            if self.wake.wait_until(&mut t, deadline).timed_out() {
                return None;
            }
        }
    }

    fn work(&self) {
        loop {
            let (target, trigger) = {
                let mut t = self.tickets.lock();
                while t.requested == t.answered {
                    self.wake.wait(&mut t);
                }
                (t.requested, t.last_trigger)
            };
            // A bug in one reload must not end reloading for the process.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload(trigger)))
                    .unwrap_or_else(|_| self.panicked(trigger));
            let outcome = Arc::new(outcome);
            let mut t = self.tickets.lock();
            t.answered = target;
            t.last = Some(outcome);
            self.wake.notify_all();
        }
    }

    /// Loads, validates and, when everything is valid, swaps in the files'
    /// configuration.
    fn reload(&self, trigger: Trigger) -> Outcome {
        let started = Instant::now();
        let mut previous = self.applying.lock();
        let running = self.snapshots.load_full();
        let outcome = match config::load(&self.path) {
            Err(errors) => {
                self.reopen_access_log(&running);
                for e in &errors.0 {
                    tracing::error!(trigger = ?trigger, "config reload rejected: {e}");
                }
                tracing::error!(
                    errors = errors.0.len(),
                    generation = running.generation,
                    "config reload rejected; the running configuration is unchanged"
                );
                self.outcome(
                    Status::Rejected,
                    trigger,
                    &running,
                    Vec::new(),
                    errors.0.iter().map(ErrorReport::from).collect(),
                    started,
                )
            }
            Ok(mut new) => {
                if let Some(adjust) = &self.adjust {
                    (adjust.0)(&mut new);
                }
                let needs_restart = keep_restart_only(&running.config, &mut new);
                match Sink::open(&new.access_log) {
                    Err(e) => {
                        let error = ConfigError::file(
                            &new.source,
                            format!("access_log: cannot open {:?}: {e}", new.access_log.to),
                        );
                        tracing::error!("config reload rejected: {error}");
                        self.reopen_access_log(&running);
                        self.outcome(
                            Status::Rejected,
                            trigger,
                            &running,
                            needs_restart,
                            vec![ErrorReport::from(&error)],
                            started,
                        )
                    }
                    Ok(sink) => {
                        let unchanged = Snapshot::content_hash(&new) == running.hash;
                        self.access_log.install(sink, &new.access_log);
                        if unchanged {
                            tracing::info!(
                                generation = running.generation,
                                trigger = ?trigger,
                                "config reload: files unchanged"
                            );
                            self.outcome(
                                Status::Unchanged,
                                trigger,
                                &running,
                                needs_restart,
                                Vec::new(),
                                started,
                            )
                        } else {
                            let warm_changed = new.warm != running.config.warm;
                            let next = Arc::new(Snapshot::succeeding(
                                new,
                                running.generation + 1,
                                Some(&running),
                            ));
                            self.snapshots.store(Arc::clone(&next));
                            previous.0 = Some(Arc::clone(&running));
                            *self.previous_hash.lock() = Some(running.hash.clone());
                            export_running(&next.hash);
                            if warm_changed {
                                crate::cache::warm::spawn(&next.config);
                            }
                            for setting in &needs_restart {
                                tracing::warn!(setting, "config reload: this setting changed but applies only after a restart");
                            }
                            tracing::info!(generation = next.generation, hash = %next.hash, trigger = ?trigger, "config reload applied");
                            self.outcome(
                                Status::Applied,
                                trigger,
                                &next,
                                needs_restart,
                                Vec::new(),
                                started,
                            )
                        }
                    }
                }
            }
        };
        RELOADS.with_label_values(&[outcome.outcome.as_str()]).inc();
        outcome
    }

    /// Reopens the running config's access log (the new config was not
    /// applied, but a SIGHUP from logrotate must still move to the new file).
    fn reopen_access_log(&self, running: &Snapshot) {
        match Sink::open(&running.config.access_log) {
            Ok(sink) => self.access_log.install(sink, &running.config.access_log),
            Err(e) => tracing::error!("cannot reopen the access log: {e}"),
        }
    }

    /// The outcome of a reload that panicked: nothing was applied.
    fn panicked(&self, trigger: Trigger) -> Outcome {
        let running = self.snapshots.load_full();
        let error = ConfigError::file(
            &self.path,
            "internal error during the reload (see the log); nothing was applied",
        );
        tracing::error!("config reload failed: {error}");
        RELOADS
            .with_label_values(&[Status::Rejected.as_str()])
            .inc();
        self.outcome(
            Status::Rejected,
            trigger,
            &running,
            Vec::new(),
            vec![ErrorReport::from(&error)],
            Instant::now(),
        )
    }

    /// Puts the previous good generation back (as a new generation); the one
    /// running becomes the previous. `None` when there is nothing to go back to.
    pub fn rollback(&self) -> Option<Outcome> {
        let started = Instant::now();
        let mut previous = self.applying.lock();
        let back = previous.0.take()?;
        let running = self.snapshots.load_full();
        if let Ok(sink) = Sink::open(&back.config.access_log) {
            self.access_log.install(sink, &back.config.access_log);
        }
        let next = Arc::new(Snapshot::succeeding(
            (*back.config).clone(),
            running.generation + 1,
            Some(&running),
        ));
        self.snapshots.store(Arc::clone(&next));
        *self.previous_hash.lock() = Some(running.hash.clone());
        previous.0 = Some(running);
        export_running(&next.hash);
        tracing::warn!(generation = next.generation, hash = %next.hash, "config rolled back to the previous generation");
        RELOADS.with_label_values(&[Status::Applied.as_str()]).inc();
        Some(self.outcome(
            Status::Applied,
            Trigger::Rollback,
            &next,
            Vec::new(),
            Vec::new(),
            started,
        ))
    }

    /// The hash of the generation a rollback would restore.
    pub fn previous_hash(&self) -> Option<String> {
        self.previous_hash.lock().clone()
    }

    fn outcome(
        &self,
        outcome: Status,
        trigger: Trigger,
        running: &Snapshot,
        needs_restart: Vec<&'static str>,
        errors: Vec<ErrorReport>,
        started: Instant,
    ) -> Outcome {
        Outcome {
            outcome,
            trigger,
            generation: running.generation,
            hash: running.hash.clone(),
            needs_restart,
            errors,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// How long a trigger may wait for its reload (a reload is milliseconds; this
/// only bounds a stuck file system).
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(proxy: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("proxy.yaml"), proxy).unwrap();
        std::fs::write(
            dir.path().join("rules/r.yaml"),
            "routes:\n  - { name: all, match: { path: \"/\" }, upstream: shop }\n",
        )
        .unwrap();
        config::load(&dir.path().join("proxy.yaml")).unwrap()
    }

    const BASE: &str = "listen: { http: [\"127.0.0.1:1\"] }\nadmin: { listen: \"127.0.0.1:2\" }\nmetrics: { listen: \"127.0.0.1:3\" }\nupstreams: { shop: { servers: [\"127.0.0.1:4\"] } }\n";

    #[test]
    fn settings_read_at_start_are_reported_and_keep_their_running_value() {
        let running = load(&format!("{BASE}cache: {{ memory: 64MiB }}\n"));
        let mut new = load(
            &format!("{BASE}cache: {{ memory: 128MiB }}\ntrusted_proxies: [\"10.0.0.0/8\"]\n")
                .replace("127.0.0.1:1", "127.0.0.1:5"),
        );
        let changed = keep_restart_only(&running, &mut new);
        assert_eq!(changed, vec!["listen.http", "cache.memory"]);
        assert_eq!(new.listen.http, running.listen.http);
        assert_eq!(new.cache.memory, 64 * 1024 * 1024);
        assert_eq!(new.trusted_proxies.len(), 1, "reloadable settings apply");
        let mut same = load(&format!("{BASE}cache: {{ memory: 64MiB }}\n"));
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }

    #[test]
    fn the_hash_changes_when_a_host_name_resolves_elsewhere() {
        let config = load(BASE);
        let mut moved = config.clone();
        moved.upstreams[0].servers[0].1 = "127.0.0.1:5".parse().unwrap();
        assert_eq!(
            Snapshot::content_hash(&config),
            Snapshot::content_hash(&config.clone())
        );
        assert_ne!(
            Snapshot::content_hash(&config),
            Snapshot::content_hash(&moved)
        );
    }
}
