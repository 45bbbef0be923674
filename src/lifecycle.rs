//! Signals: SIGTERM drains in-flight requests and exits as soon as they are
//! done (at the latest after `shutdown_grace`); SIGINT exits at once; SIGQUIT
//! hands the listeners to a new binary (`run --upgrade`); SIGHUP reloads the
//! configuration (and reopens the access log) and never kills the process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::proxy::inflight_requests;

/// Installs the SIGHUP handler before anything else runs, so that an early
/// SIGHUP cannot take the default action (terminate).
pub fn install_sighup_handler() -> std::io::Result<()> {
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

/// Pingora's shutdown watch, plus the early exit once SIGTERM has drained.
pub struct Signals {
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing listeners to the new process, then draining");
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                tracing::info!(grace_ms = self.grace.as_millis() as u64, in_flight = inflight_requests(), "SIGTERM: draining in-flight requests");
                exit_when_drained(self.grace);
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                ShutdownSignal::FastShutdown
            }
        }
    }
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
