//! The load bench's own load generator, for what wrk cannot do:
//!
//! - `rate ADDR PATH --rps N --seconds S --connections C`: open-loop load at
//!   a fixed rate. Each request has an intended start time; its latency is
//!   measured from that time, not from when a connection became free, so a
//!   stall shows in the tail instead of slowing the load down (the
//!   "coordinated omission" wrk's closed loop has).
//! - `stampede ADDR PATH --clients N`: N connections opened first, then one
//!   request on each, written back to back, and each client's latency.
//!
//! Prints one JSON object. Keep-alive HTTP/1.1 over plain TCP; responses
//! must carry Content-Length (both proxies' do, for the bench's origin).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

struct Args {
    mode: String,
    addr: SocketAddr,
    path: String,
    rps: u64,
    seconds: u64,
    connections: usize,
    clients: usize,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: loadgen (rate|stampede) ADDR PATH [--rps N] [--seconds S] [--connections C] [--clients N]";
    if argv.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let flag = |name: &str, default: u64| -> u64 {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} wants a number"))
            })
            .unwrap_or(default)
    };
    Args {
        mode: argv[0].clone(),
        addr: argv[1].parse().expect("ADDR is host:port"),
        path: argv[2].clone(),
        rps: flag("--rps", 5000),
        seconds: flag("--seconds", 10),
        connections: flag("--connections", 64) as usize,
        clients: flag("--clients", 200) as usize,
    }
}

/// One keep-alive connection that sends a GET and reads the whole answer.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr, path: &str) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            request: format!(
                "GET {path} HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: awning-loadgen\r\n\r\n"
            )
            .into_bytes(),
            buf: Vec::with_capacity(8192),
        })
    }

    async fn send(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.request).await
    }

    /// Reads one response; returns its status.
    async fn receive(&mut self) -> std::io::Result<u16> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response
                .parse(&self.buf)
                .map_err(|_| bad("unparseable response"))?
            {
                let status = response.code.unwrap_or(0);
                let length = if status == 304 || status == 204 {
                    0
                } else {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .ok_or_else(|| bad("response without Content-Length"))?
                };
                while self.buf.len() < head + length {
                    self.fill().await?;
                }
                self.buf.drain(..head + length);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + 65536, 0);
        let n = self.stream.read(&mut self.buf[start..]).await?;
        self.buf.truncate(start + n);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn fixed_rate(args: &Args) -> String {
    let total = args.rps * args.seconds;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let mut client = Client::connect(args.addr, &args.path)
            .await
            .expect("connect");
        let rx = rx.clone();
        let (addr, path) = (args.addr, args.path.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let Some(intended) = rx.lock().await.recv().await else {
                    break;
                };
                let ok = async {
                    client.send().await?;
                    client.receive().await
                }
                .await;
                match ok {
                    Ok(200) => latencies.push(intended.elapsed().as_micros() as u64),
                    _ => {
                        errors += 1;
                        // A broken connection is replaced; the request counts as failed.
                        if ok.is_err() {
                            match Client::connect(addr, &path).await {
                                Ok(fresh) => client = fresh,
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    // The schedule runs on its own thread: tokio's timer has 1 ms ticks,
    // which would send the requests in bursts.
    let interval = Duration::from_nanos(1_000_000_000 / args.rps);
    let start = Instant::now() + Duration::from_millis(20);
    let producer = std::thread::spawn(move || {
        for i in 0..total {
            let intended = start + interval * i as u32;
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send(intended).is_err() {
                break;
            }
        }
    });
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    producer.join().expect("producer");
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    format!(
        r#"{{"mode":"rate","target_rps":{},"sent":{},"ok":{},"errors":{},"achieved_rps":{:.0},"p50_us":{},"p99_us":{},"p999_us":{},"max_us":{}}}"#,
        args.rps,
        total,
        latencies.len(),
        errors,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
    )
}

async fn stampede(args: &Args) -> String {
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(
            Client::connect(args.addr, &args.path)
                .await
                .expect("connect"),
        );
    }
    let mut waiting = Vec::with_capacity(args.clients);
    for mut client in clients {
        let sent = Instant::now();
        let written = client.send().await;
        waiting.push(tokio::spawn(async move {
            written?;
            let status = client.receive().await?;
            Ok::<_, std::io::Error>((status, sent.elapsed().as_micros() as u64))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in waiting {
        match w.await.expect("client") {
            Ok((200, us)) => latencies.push(us),
            _ => errors += 1,
        }
    }
    latencies.sort_unstable();
    format!(
        r#"{{"mode":"stampede","clients":{},"ok":{},"errors":{},"min_us":{},"p50_us":{},"max_us":{}}}"#,
        args.clients,
        latencies.len(),
        errors,
        latencies.first().copied().unwrap_or(0),
        percentile(&latencies, 50.0),
        latencies.last().copied().unwrap_or(0),
    )
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(async {
        match args.mode.as_str() {
            "rate" => fixed_rate(&args).await,
            "stampede" => stampede(&args).await,
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        }
    });
    println!("{report}");
}
