//! The command-line clients of the admin API: `awning purge`, `awning reload`
//! and `awning health` (a container health check needing no shell tools).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::cache::purge::PurgeRequest;
use crate::config::Config;

/// One request to the admin API: the status and body of the answer.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The admin token named by `config`, or the exit code after saying why not.
fn token(config: &Config, action: &str) -> Result<String, i32> {
    let Some(token_file) = &config.admin.token_file else {
        eprintln!(
            "error: admin.token_file is not set in {}: the admin API refuses {action}",
            config.source.display()
        );
        return Err(1);
    };
    std::fs::read_to_string(token_file)
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            eprintln!("error: cannot read {}: {e}", token_file.display());
            1
        })
}

/// Sends `request` to the admin API named by `config`; prints the answer.
/// Returns the exit code: 0 on success, 1 otherwise.
pub fn purge(config: &Config, request: &PurgeRequest) -> i32 {
    if request.urls.is_empty() && request.prefixes.is_empty() && request.tags.is_empty() {
        eprintln!("error: name at least one --url, --prefix or --tag");
        return 2;
    }
    let token = match token(config, "purges") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let body = serde_json::to_vec(request).expect("serialisable");
    let addr = crate::config::reachable(config.admin.listen);
    match exchange(
        addr,
        "POST",
        "/purge",
        Some(&token),
        &body,
        Duration::from_secs(30),
    ) {
        Ok((200, body)) => {
            print!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!("purge refused: {status}\n{body}");
            1
        }
        Err(e) => {
            eprintln!("error: cannot reach the admin API at {addr}: {e}");
            1
        }
    }
}

/// Asks the running awning to reload; prints the outcome. 0 when applied or
/// unchanged, 2 when the new config was rejected, 1 when awning is unreachable.
pub fn reload(config: &Config) -> i32 {
    let token = match token(config, "reloads") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let addr = crate::config::reachable(config.admin.listen);
    match exchange(
        addr,
        "POST",
        "/reload",
        Some(&token),
        b"",
        Duration::from_secs(35),
    ) {
        Ok((200, body)) => {
            print!("{body}");
            0
        }
        Ok((422, body)) => {
            eprint!("{body}");
            crate::app::EXIT_CONFIG
        }
        Ok((status, body)) => {
            eprintln!("reload refused: {status}\n{body}");
            1
        }
        Err(e) => {
            eprintln!("error: cannot reach the admin API at {addr}: {e}");
            1
        }
    }
}

/// Exit 0 when the admin API answers `/healthz` (or, with `ready`, `/readyz`)
/// with 200 within two seconds, 1 otherwise.
pub fn health(admin: SocketAddr, ready: bool) -> i32 {
    let addr = crate::config::reachable(admin);
    let path = if ready { "/readyz" } else { "/healthz" };
    match exchange(addr, "GET", path, None, b"", Duration::from_secs(2)) {
        Ok((200, _)) => 0,
        Ok((status, body)) => {
            eprintln!("{path}: {status}\n{body}");
            1
        }
        Err(e) => {
            eprintln!("{path}: cannot reach {addr}: {e}");
            1
        }
    }
}
