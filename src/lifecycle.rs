//! Signals: SIGTERM drains in-flight requests and exits as soon as they are
//! done (at the latest after `shutdown_grace`); SIGINT exits at once; SIGQUIT
//! hands the listeners to a new binary already started with `run --upgrade`;
//! SIGUSR2 starts that new binary itself, then hands over; SIGHUP reloads the
//! configuration (and reopens the access log) and never kills the process.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::proxy::inflight_requests;

/// Installs the SIGHUP handler before anything else runs, so that an early
/// SIGHUP cannot take the default action (terminate).
pub fn install_sighup_handler() -> std::io::Result<()> {
    // SIGUSR2 (binary upgrade) is handled once the server runs; until then
    // it must not take its default action, which is to terminate.
    signal_hook::flag::register(
        signal_hook::consts::SIGUSR2,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("awning-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match crate::reload::running() {
                    Some(reloader) => {
                        reloader.request(crate::reload::Trigger::Signal);
                    }
                    None => tracing::warn!("SIGHUP before start-up finished: ignored"),
                }
            }
        })?;
    Ok(())
}

/// Pingora's shutdown watch, plus the early exit once SIGTERM has drained
/// and the in-place binary upgrade on SIGUSR2.
pub struct Signals {
    pub grace: Duration,
    /// Where `run --upgrade` waits for the listeners.
    pub upgrade_socket: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
        loop {
            let upgrade = tokio::select! {
                _ = usr2.recv() => true,
                _ = quit.recv() => return self.upgrade(),
                _ = term.recv() => return self.terminate(),
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    return ShutdownSignal::FastShutdown;
                }
            };
            if upgrade {
                let socket = self.upgrade_socket.clone();
                match tokio::task::spawn_blocking(move || start_successor(&socket)).await {
                    Ok(Ok(pid)) => {
                        tracing::info!(
                            new_pid = pid,
                            "SIGUSR2: the new binary is waiting for the listeners"
                        );
                        return self.upgrade();
                    }
                    Ok(Err(e)) => tracing::error!(
                        "SIGUSR2: binary upgrade abandoned, this process serves on: {e}"
                    ),
                    Err(e) => tracing::error!("SIGUSR2: binary upgrade abandoned: {e}"),
                }
            }
        }
    }
}

impl Signals {
    fn upgrade(&self) -> ShutdownSignal {
        tracing::info!("handing listeners to the new process, then draining");
        ShutdownSignal::GracefulUpgrade
    }

    fn terminate(&self) -> ShutdownSignal {
        tracing::info!(
            grace_ms = self.grace.as_millis() as u64,
            in_flight = inflight_requests(),
            "SIGTERM: draining in-flight requests"
        );
        exit_when_drained(self.grace);
        ShutdownSignal::GracefulTerminate
    }
}

/// Starts this process's command line again with `--upgrade` (the binary
/// found under the same name, so a replaced file is the one started) and
/// waits until it listens on the upgrade socket. Fails, leaving this process
/// in charge, when it is not `awning run` or the new one exits first (a
/// config it rejects, a binary that does not start).
fn start_successor(socket: &Path) -> std::io::Result<u32> {
    if std::process::id() == 1 {
        // The new process would be our child; when we exit, the container
        // (or PID namespace) ends with us. Replace the container instead.
        return Err(std::io::Error::other(
            "running as PID 1 (a container): upgrade by replacing the container",
        ));
    }
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.is_empty() {
        return Err(std::io::Error::other("no command line to start again"));
    }
    let program = args.remove(0);
    if !args.iter().any(|a| a == "run") {
        return Err(std::io::Error::other("only `awning run` upgrades in place"));
    }
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    // A socket left by an earlier upgrade would look like a waiting successor.
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "the new process ({}) exited: {status}",
                Path::new(&program).display()
            )));
        }
        if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(
                "the new process did not reach the upgrade socket within 15s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tells systemd (`Type=notify`) that this process is the service's main
/// process and ready; after an upgrade the new process says so, and systemd
/// follows it. Nothing happens outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::MainPid(std::process::id()),
        sd_notify::NotifyState::Ready,
    ]);
}

/// Pingora sleeps for the whole grace period even when nothing is in flight;
/// this exits as soon as no request has been in flight for a short while.
fn exit_when_drained(grace: Duration) {
    let deadline = Instant::now() + grace;
    let quiet_for = Duration::from_millis(200);
    let _ = std::thread::Builder::new()
        .name("awning-drain".into())
        .spawn(move || {
            let mut quiet_since: Option<Instant> = None;
            while Instant::now() < deadline {
                if inflight_requests() == 0 {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= quiet_for {
                        tracing::info!("drained: exiting");
                        std::process::exit(0);
                    }
                } else {
                    quiet_since = None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::warn!(
                in_flight = inflight_requests(),
                "shutdown grace over: exiting with requests in flight"
            );
            std::process::exit(0);
        });
}
