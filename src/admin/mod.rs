//! The admin listener: liveness and readiness for orchestrators (reload,
//! purge and the config view arrive with their issues).

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::snapshot::SharedSnapshot;

pub struct AdminApp {
    snapshots: SharedSnapshot,
}

impl AdminApp {
    pub fn new(snapshots: SharedSnapshot) -> Self {
        Self { snapshots }
    }

    /// The readiness document: config generation and per-upstream health.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let snap = self.snapshots.load();
        let upstreams: serde_json::Map<String, serde_json::Value> = snap
            .upstreams
            .iter()
            .map(|g| {
                (
                    g.name().to_string(),
                    serde_json::json!({ "servers": g.len(), "healthy": g.healthy_count() }),
                )
            })
            .collect();
        let ready = !snap.routes.is_empty();
        let doc = serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "checks": {
                "config": { "ok": true, "generation": snap.generation, "routes": snap.routes.len() },
                "routes": { "ok": ready },
                "upstreams": upstreams,
            }
        });
        (ready, doc)
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response")
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
        match req.uri.path() {
            "/healthz" if method_ok => text(200, "ok\n"),
            "/readyz" if method_ok => {
                let (ready, doc) = self.readiness();
                let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                body.push(b'\n');
                reply(if ready { 200 } else { 503 }, "application/json", body)
            }
            "/healthz" | "/readyz" => text(405, "405 Method Not Allowed\n"),
            _ => text(404, "404 Not Found\n"),
        }
    }
}
