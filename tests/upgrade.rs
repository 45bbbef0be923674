//! Binary upgrade: `awning run --upgrade` takes the listeners of the running
//! awning (SIGQUIT to it); no connection is refused and requests in flight
//! on the old process complete.

mod common;

use std::fs;
use std::io::{BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::read_response;
use common::proxy::binary;
use common::*;

/// The new process, stopped by PID when the test ends.
struct NewProcess(Child);

impl Drop for NewProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// A process the old awning started (SIGUSR2), stopped by PID when the
/// test ends, passed or not.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process our own child started.
        unsafe { libc::kill(self.0, libc::SIGINT) };
    }
}

/// The child of process `parent`, from /proc.
fn child_of(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "PID (COMM) STATE PPID ...": COMM may hold spaces, so after the last ')'.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// How the new binary is started.
#[derive(Clone, Copy, Debug, PartialEq)]
enum How {
    /// `awning run --upgrade` by hand, then SIGQUIT to the old process.
    Quit,
    /// SIGUSR2 to the old process, which starts the new one itself.
    Usr2,
}

#[test]
fn run_upgrade_and_sigquit_hand_the_listeners_over_without_refusing_a_connection() {
    hand_over(How::Quit);
}

#[test]
fn sigusr2_upgrades_in_place_without_refusing_a_connection() {
    hand_over(How::Usr2);
}

fn hand_over(how: How) {
    let origin = FakeOrigin::start(|r| match r.path() {
        "/slow" => Reply::ok("slow but complete").delay(Duration::from_secs(2)),
        _ => Reply::ok("ok"),
    });
    let mut old = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .extra("upgrade_socket: upgrade.sock")
            .rules(ALL_TO_SHOP),
    );
    let addr = old.addr;

    // A client opening a new connection for every request, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let client = {
        let (stop, ok, refused, failed) =
            (stop.clone(), ok.clone(), refused.clone(), failed.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let stream = match std::net::TcpStream::connect(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("connect: {e}");
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut reader = BufReader::new(stream);
                    reader
                        .get_mut()
                        .write_all(
                            b"GET /p HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
                        )
                        .expect("write");
                    read_response(&mut reader, false, true)
                }));
                match answer {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    eventually("the client is running", Duration::from_secs(5), || {
        (ok.load(Ordering::Relaxed) > 10).then_some(())
    });

    // A request in flight on the old process when the upgrade starts.
    let in_flight = thread::spawn(move || get(addr, "/slow"));
    eventually(
        "the slow request reached the origin",
        Duration::from_secs(5),
        || (origin.count("/slow") == 1).then_some(()),
    );

    let old_pid = old.pid();
    let config = old.config_dir().join("proxy.yaml");
    let new = match how {
        How::Quit => {
            let new = NewProcess(
                Command::new(binary())
                    .args(["run", "--upgrade", "-c"])
                    .arg(&config)
                    .env("AWNING_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(old.config_dir().join("new-stderr.log")).unwrap())
                    .spawn()
                    .expect("start the new awning"),
            );
            old.signal(libc::SIGQUIT);
            Some(new)
        }
        How::Usr2 => {
            old.signal(libc::SIGUSR2);
            None
        }
    };
    let successor = (how == How::Usr2).then(|| {
        Successor(eventually(
            "the old process starts its successor",
            Duration::from_secs(10),
            || child_of(old_pid),
        ))
    });
    let handed_over = Instant::now();

    let slow = in_flight.join().unwrap();
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (200, "slow but complete"),
        "the request in flight on the old process completed"
    );
    let status = old.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "the old process exits cleanly: {status}");
    eprintln!("old process gone {:?} after SIGQUIT", handed_over.elapsed());
    let before = ok.load(Ordering::Relaxed);
    eventually(
        "the new process answers alone",
        Duration::from_secs(10),
        || (ok.load(Ordering::Relaxed) > before + 20).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let (ok, refused, failed) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let new_log = fs::read_to_string(old.config_dir().join("new-stderr.log")).unwrap_or_default();
    eprintln!("{ok} answered, {refused} refused, {failed} failed across the upgrade");
    assert_eq!(
        refused, 0,
        "connections refused during the hand-off\n{new_log}"
    );
    assert_eq!(failed, 0, "requests failed during the hand-off\n{new_log}");
    assert_eq!(
        get(old.admin, "/healthz").status,
        200,
        "the admin listener moved too"
    );
    assert_eq!(
        get(old.metrics, "/metrics").status,
        200,
        "and the metrics listener"
    );
    let ready = old.readiness();
    let new_pid = ready["pid"].as_i64().unwrap() as i32;
    assert_ne!(new_pid, old_pid, "another process answers");
    match new {
        Some(new) => assert_eq!(new_pid, new.0.id() as i32),
        None => {
            assert_eq!(Some(new_pid), successor.as_ref().map(|s| s.0));
            // Started by the old process: stopped by the PID it reports.
            drop(successor);
            eventually("the new process stops", Duration::from_secs(10), || {
                std::net::TcpStream::connect(addr).is_err().then_some(())
            });
        }
    }
}

#[test]
fn sigusr2_with_a_broken_config_keeps_the_old_process_serving() {
    let origin = FakeOrigin::fixed("ok");
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .extra("upgrade_socket: upgrade.sock\nreload: { watch: false }")
            .rules(ALL_TO_SHOP),
    );
    fs::write(
        proxy.config_dir().join("rules/routes.yaml"),
        "routes: [ { name: x } ]\n",
    )
    .unwrap();
    upgrade_is_abandoned(&mut proxy);
}

#[test]
fn sigusr2_with_an_unusable_certificate_keeps_the_old_process_serving() {
    let origin = FakeOrigin::fixed("ok");
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["shop.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .extra("upgrade_socket: upgrade.sock")
            .tls(&cert_path, &key_path)
            .rules(ALL_TO_SHOP),
    );
    // A renewal gone wrong: the file is there and readable but holds no
    // usable certificate. The new process's config check refuses it before
    // it takes the listeners.
    fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    upgrade_is_abandoned(&mut proxy);
}

/// SIGUSR2 to `proxy`, whose successor cannot start: the upgrade is
/// abandoned and the old process serves on.
fn upgrade_is_abandoned(proxy: &mut ProxyUnderTest) {
    proxy.signal(libc::SIGUSR2);
    eventually("the upgrade is abandoned", Duration::from_secs(20), || {
        proxy
            .stderr()
            .contains("binary upgrade abandoned")
            .then_some(())
    });
    assert!(proxy.is_running());
    assert_eq!(
        get(proxy.addr, "/").status,
        200,
        "the old process serves on"
    );
    let ready = proxy.readiness();
    assert_eq!(ready["pid"].as_i64(), Some(proxy.pid() as i64));
}
