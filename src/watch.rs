//! The file watcher: reloads when `proxy.yaml` or a rule file changes.
//!
//! Directories are watched, not files: editors save by writing a new file and
//! renaming it over the old one, and Kubernetes swaps a ConfigMap by
//! repointing a `..data` symlink, and both would leave a watch on the old
//! file blind. Events are debounced (an editor's save is several writes), and
//! reads are ignored (the reload reading the files must not trigger itself).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;

use crate::config::Config;
use crate::reload::{Reloader, Trigger};

/// A burst of events that never pauses still reloads after this long.
const MAX_DELAY: Duration = Duration::from_millis(600);

/// How often the watched directories are matched to the running config
/// after a reload the watcher did not trigger.
const REFOLLOW: Duration = Duration::from_secs(1);

/// Whether an event on `path` can change the configuration: one of its files
/// (by name), any YAML file (a new rule file matching a pattern), or a
/// Kubernetes `..data` swap.
fn relevant(path: &Path, names: &BTreeSet<OsString>) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    if names.contains(name) {
        return true;
    }
    let name = name.to_string_lossy();
    name.starts_with("..") || name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The directories holding the config's files, and where their symlinks point.
fn directories(config: &Config) -> (BTreeSet<PathBuf>, BTreeSet<OsString>) {
    let mut dirs = BTreeSet::new();
    let mut names = BTreeSet::new();
    for file in std::iter::once(&config.source).chain(config.rule_files.iter()) {
        for path in [Some(file.clone()), std::fs::canonicalize(file).ok()]
            .into_iter()
            .flatten()
        {
            if let Some(name) = path.file_name() {
                names.insert(name.to_os_string());
            }
            match path.parent() {
                Some(p) if p.as_os_str().is_empty() => {
                    dirs.insert(PathBuf::from("."));
                }
                Some(p) => {
                    dirs.insert(p.to_path_buf());
                }
                None => {}
            }
        }
    }
    (dirs, names)
}

/// Starts watching; each debounced change asks `reloader` for a reload.
pub fn spawn(reloader: Arc<Reloader>, debounce: Duration) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let names: Arc<Mutex<BTreeSet<OsString>>> = Arc::default();
    let filter = Arc::clone(&names);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let names = filter.lock();
        if event.paths.iter().any(|p| relevant(p, &names)) {
            let _ = tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    let mut watched = BTreeSet::new();
    follow(
        &mut watcher,
        &mut watched,
        &names,
        &reloader.snapshots().load().config,
    );
    std::thread::Builder::new()
        .name("awning-watch".into())
        .spawn(move || {
            let mut followed = reloader.snapshots().load().generation;
            loop {
                match rx.recv_timeout(REFOLLOW) {
                    Ok(()) => {
                        let until = Instant::now() + MAX_DELAY;
                        while Instant::now() < until && rx.recv_timeout(debounce).is_ok() {}
                        let ticket = reloader.request(Trigger::Watch);
                        let _ = reloader.wait(ticket);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                // A reload (by any trigger) may have moved rule files to
                // other directories.
                let snap = reloader.snapshots().load_full();
                if snap.generation != followed {
                    followed = snap.generation;
                    follow(&mut watcher, &mut watched, &names, &snap.config);
                }
            }
        })?;
    Ok(())
}

/// Watches the directories `config` needs and no others.
fn follow(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    names: &Mutex<BTreeSet<OsString>>,
    config: &Config,
) {
    let (dirs, wanted_names) = directories(config);
    *names.lock() = wanted_names;
    for gone in watched.difference(&dirs).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&gone);
        watched.remove(&gone);
    }
    for dir in dirs {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "cannot watch the config directory ({e}); reload with SIGHUP or POST /reload"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_files_and_configmap_swaps_count() {
        let names: BTreeSet<OsString> = ["proxy.yaml", "shop.rules"]
            .iter()
            .map(OsString::from)
            .collect();
        for yes in [
            "/etc/awning/proxy.yaml",
            "/etc/awning/rules/sale.yaml",
            "/etc/awning/rules/x.yml",
            "/etc/awning/shop.rules",
            "/etc/awning/..data",
            "/etc/awning/..2026_11_24_09_00_00.123",
        ] {
            assert!(relevant(Path::new(yes), &names), "{yes}");
        }
        for no in [
            "/etc/awning/access.log",
            "/etc/awning/.proxy.yaml.swp",
            "/etc/awning/proxy.yaml~",
            "/",
        ] {
            assert!(!relevant(Path::new(no), &names), "{no}");
        }
    }
}
