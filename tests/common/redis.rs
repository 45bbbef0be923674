//! A real `redis-server` on a port picked for it, killed on drop. Missing
//! redis-server fails the test with how to install it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::proxy::{eventually, free_port};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// A config file to start from (Sentinel needs one it can rewrite).
    config: Option<String>,
    args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    fn start_with(config: Option<String>, args: &[String]) -> Self {
        let mut me = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            config,
            args: args.to_vec(),
        };
        me.restart();
        me
    }

    /// A Redis Cluster of `n` primaries (no replicas), formed and serving.
    pub fn cluster(n: usize) -> Vec<RedisServer> {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let args = [
                    "--cluster-enabled".to_string(),
                    "yes".to_string(),
                    "--cluster-port".to_string(),
                    free_port().to_string(),
                ];
                Self::start_with(None, &args)
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (apt-get install redis-tools) to form the cluster");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for node in &nodes {
            eventually("the cluster to be formed", Duration::from_secs(20), || {
                let info = node.command_full(&["CLUSTER", "INFO"]).ok()?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        nodes
    }

    /// A Sentinel watching `master` under the name `mymaster`.
    pub fn sentinel_for(master: &RedisServer) -> Self {
        let config = format!(
            "sentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\n",
            master.port
        );
        Self::start_with(Some(config), &["--sentinel".to_string()])
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis:` for proxy.yaml, with extra settings (e.g. `expected_nodes: 2`).
    pub fn yaml(&self, settings: &str) -> String {
        format!("redis: {{ url: \"{}\"{settings} }}\n", self.url())
    }

    /// Stops the server (SIGKILL: a crash, not a polite shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            let path = self.dir.path().join("redis.conf");
            std::fs::write(&path, config).unwrap();
            command.arg(path);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it: `apt-get install redis-server` (or `make deps`)"
                )
            });
        self.child = Some(child);
        eventually("redis-server to answer", Duration::from_secs(10), || {
            (self.command(&["PING"]).ok()? == "+PONG").then_some(())
        });
    }

    /// Sends one command; the whole answer as text (up to 64 KiB).
    pub fn command_full(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(encode(args).as_bytes())?;
        let mut buf = vec![0u8; 65536];
        let n = std::io::Read::read(&mut s, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends one command; the first line of the answer.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(encode(args).as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command in RESP.
fn encode(args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    req
}
