//! `ProxyUnderTest`: the real awning binary with a generated config on ports
//! picked for it, started and awaited with a deadline, stopped on drop. Its
//! stderr is shown when the test fails.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::client;

/// A port the OS considers free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `N` distinct free ports: each is held until all are picked, so the OS
/// cannot hand the same one out twice (it did, to admin and metrics).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_awning")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What to put in the generated config.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    upstreams: Vec<(String, Vec<String>, String)>,
    rules: String,
    extra: String,
    subcommand: Vec<String>,
    tls: Option<(PathBuf, PathBuf)>,
    token_file: Option<PathBuf>,
    listener_hosts: Option<Vec<String>>,
}

impl Setup {
    pub fn new() -> Self {
        Self::default()
    }
    /// An upstream group; `settings` is extra YAML (indented 4) under it.
    pub fn upstream(mut self, name: &str, servers: &[SocketAddr], settings: &str) -> Self {
        self.upstreams.push((
            name.into(),
            servers.iter().map(|s| s.to_string()).collect(),
            settings.into(),
        ));
        self
    }
    /// The rule file's text.
    pub fn rules(mut self, yaml: &str) -> Self {
        self.rules = yaml.into();
        self
    }
    /// Extra top-level YAML for proxy.yaml.
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self.extra.push('\n');
        self
    }
    /// The HTTP listener answers only for these hosts.
    pub fn listener_hosts(mut self, hosts: &[&str]) -> Self {
        self.listener_hosts = Some(hosts.iter().map(|h| h.to_string()).collect());
        self
    }
    /// Protects the admin API with this token file.
    pub fn admin_token_file(mut self, path: &Path) -> Self {
        self.token_file = Some(path.to_path_buf());
        self
    }
    /// Adds a TLS listener with this PEM certificate and key.
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }
    /// Run another subcommand than `run` (e.g. `demo`).
    pub fn subcommand(mut self, args: &[&str]) -> Self {
        self.subcommand = args.iter().map(|s| s.to_string()).collect();
        self
    }
}

pub struct ProxyUnderTest {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// The TLS listener, when the setup asked for one.
    pub tls_addr: Option<SocketAddr>,
    child: Child,
    exit: Option<ExitStatus>,
}

impl ProxyUnderTest {
    pub fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [http, admin, metrics, tls] = free_ports::<4>();
        let addr: SocketAddr = ([127, 0, 0, 1], http).into();
        let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], metrics).into();
        let tls_addr: Option<SocketAddr> = setup.tls.as_ref().map(|_| ([127, 0, 0, 1], tls).into());
        let tls_yaml = match (&setup.tls, tls_addr) {
            (Some((cert, key)), Some(a)) => format!(
                "  tls:\n    - {{ addr: \"{a}\", cert: \"{}\", key: \"{}\" }}\n",
                cert.display(),
                key.display()
            ),
            _ => String::new(),
        };
        let token_yaml = setup
            .token_file
            .as_ref()
            .map(|p| format!("  token_file: \"{}\"\n", p.display()))
            .unwrap_or_default();
        let http_yaml = match &setup.listener_hosts {
            Some(hosts) => format!(
                "{{ addr: \"{addr}\", hosts: [{}] }}",
                hosts
                    .iter()
                    .map(|h| format!("\"{h}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("\"{addr}\""),
        };
        let mut yaml = format!(
            "threads: 2\nlisten:\n  http: [{http_yaml}]\n{tls_yaml}admin:\n  listen: \"{admin}\"\n{token_yaml}metrics:\n  listen: \"{metrics}\"\nshutdown_grace: 5s\nrules: [\"rules/*.yaml\"]\nupstreams:\n"
        );
        for (name, servers, settings) in &setup.upstreams {
            let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
            yaml.push_str(&format!("  {name}:\n    servers: [{}]\n", list.join(", ")));
            for line in settings.lines().filter(|l| !l.trim().is_empty()) {
                yaml.push_str(&format!("    {}\n", line.trim()));
            }
        }
        yaml.push_str(&setup.extra);
        fs::write(dir.path().join("proxy.yaml"), yaml).unwrap();
        fs::create_dir(dir.path().join("rules")).unwrap();
        fs::write(dir.path().join("rules/routes.yaml"), &setup.rules).unwrap();

        let config = dir.path().join("proxy.yaml");
        let mut args: Vec<String> = if setup.subcommand.is_empty() {
            vec!["run".into()]
        } else {
            setup.subcommand.clone()
        };
        args.push("-c".into());
        args.push(config.to_string_lossy().into_owned());
        let child = Command::new(binary())
            .args(&args)
            .env("AWNING_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("start awning");
        let mut me = Self {
            dir,
            addr,
            admin,
            metrics,
            tls_addr,
            child,
            exit: None,
        };
        me.wait_ready(Duration::from_secs(30));
        me
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let admin = self.admin;
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "awning exited before it was ready ({status}):\n{}",
                    self.stderr()
                );
            }
            // Alive, and the proxy listener accepts (readiness is tested on its own).
            if std::net::TcpStream::connect(admin).is_ok()
                && client::get(admin, "/healthz").status == 200
                && std::net::TcpStream::connect(self.addr).is_ok()
            {
                return;
            }
            if Instant::now() > end {
                panic!("awning not ready after {deadline:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of the exported samples whose series starts with `prefix`
    /// (a name, or a name and its first labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        client::get(self.metrics, "/metrics")
            .text()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The `/readyz?verbose` document.
    pub fn readiness(&self) -> serde_json::Value {
        serde_json::from_slice(&client::get(self.admin, "/readyz?verbose").body)
            .expect("/readyz answers JSON")
    }

    /// Requests refused for `reason` (`awning_http_requests_rejected_total`).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.metric(&format!(
            "awning_http_requests_rejected_total{{reason=\"{reason}\"}}"
        )) as u64
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let status = eventually("awning to exit", deadline, || {
            self.child.try_wait().unwrap()
        });
        self.exit = Some(status);
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Resident memory of the proxy process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }
}

pub fn rss_bytes(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- awning stderr ----\n{}\n---- end of awning stderr ----",
                self.stderr()
            );
        }
    }
}
