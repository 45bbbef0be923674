//! `awning purge`: the command-line client of the admin API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cache::purge::PurgeRequest;
use crate::config::Config;

/// Sends `request` to the admin API named by `config`; prints the answer.
/// Returns the exit code: 0 on success, 1 otherwise.
pub fn purge(config: &Config, request: &PurgeRequest) -> i32 {
    if request.urls.is_empty() && request.prefixes.is_empty() && request.tags.is_empty() {
        eprintln!("error: name at least one --url, --prefix or --tag");
        return 2;
    }
    let Some(token_file) = &config.admin.token_file else {
        eprintln!(
            "error: admin.token_file is not set in {}: the admin API refuses purges",
            config.source.display()
        );
        return 1;
    };
    let token = match std::fs::read_to_string(token_file) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", token_file.display());
            return 1;
        }
    };
    let body = serde_json::to_vec(request).expect("serialisable");
    let addr = crate::config::reachable(config.admin.listen);
    let result = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "POST /purge HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match result {
        Ok(answer) => {
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            let ok = head.split(' ').nth(1) == Some("200");
            if ok {
                print!("{body}");
                0
            } else {
                eprintln!(
                    "purge refused: {}\n{body}",
                    head.lines().next().unwrap_or("")
                );
                1
            }
        }
        Err(e) => {
            eprintln!("error: cannot reach the admin API at {addr}: {e}");
            1
        }
    }
}
