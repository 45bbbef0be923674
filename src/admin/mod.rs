//! The admin listener: liveness, readiness, cache purge, reload, rollback
//! and the config view. Everything that changes state or shows the config
//! needs the bearer token from `admin.token_file`.

pub mod client;

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::cache::purge::PurgeRequest;
use crate::cache::CacheEngine;
use crate::cluster::Cluster;
use crate::limits::shared::SharedTier;
use crate::reload::{Reloader, Status, Trigger};
use crate::snapshot::SharedSnapshot;

/// Largest admin request body read.
const MAX_ADMIN_BODY: usize = 1024 * 1024;

pub struct AdminApp {
    snapshots: SharedSnapshot,
    reloader: Arc<Reloader>,
    cache: &'static CacheEngine,
    shared_limits: Option<Arc<SharedTier>>,
    cluster: Option<Arc<Cluster>>,
}

impl AdminApp {
    pub fn new(
        reloader: Arc<Reloader>,
        cache: &'static CacheEngine,
        shared_limits: Option<Arc<SharedTier>>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            snapshots: reloader.snapshots().clone(),
            reloader,
            cache,
            shared_limits,
            cluster,
        }
    }

    /// The readiness document: config generation, cache and per-upstream
    /// health; `verbose` adds the config's hash, files and load time.
    pub fn readiness(&self, verbose: bool) -> (bool, serde_json::Value) {
        let snap = self.snapshots.load();
        // A group no route uses cannot make the node unready.
        let used: Vec<usize> = snap.config.routes.iter().map(|r| r.upstream).collect();
        let mut upstreams_ok = true;
        let upstreams: serde_json::Map<String, serde_json::Value> = snap
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let healthy = g.healthy_count();
                let ok = healthy > 0 || !used.contains(&i);
                upstreams_ok &= ok;
                (
                    g.name().to_string(),
                    serde_json::json!({ "ok": ok, "servers": g.len(), "healthy": healthy }),
                )
            })
            .collect();
        // Redis counts only when a shared policy cannot do without it
        // (`on_redis_error: closed`); with `local` or `open` the node serves
        // on, and taking every node out of the balancer when Redis fails
        // would turn a Redis outage into a shop outage.
        let needs_redis = snap
            .config
            .limits
            .iter()
            .any(|p| p.shared && p.on_redis_error == crate::config::RedisFallback::Closed);
        let (redis_ok, redis) = match &self.shared_limits {
            Some(t) => {
                let connected = t.is_connected();
                let ok = connected || !needs_redis;
                (ok, serde_json::json!({ "ok": ok, "connected": connected }))
            }
            None => (true, serde_json::Value::Null),
        };
        let ready = !snap.routes.is_empty() && upstreams_ok && redis_ok;
        let mut doc = serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "checks": {
                "config": { "ok": true, "generation": snap.generation, "routes": snap.routes.len() },
                "routes": { "ok": !snap.routes.is_empty() },
                "cache": {
                    "stored_bytes": self.cache.store.stored_bytes(),
                    "stored_objects": self.cache.store.stored_objects(),
                    "capacity_bytes": self.cache.capacity,
                    "evicted_bytes": self.cache.evicted_bytes(),
                    "lru_tracked_bytes": pingora::cache::eviction::EvictionManager::total_size(self.cache.eviction),
                },
                "upstreams": upstreams,
                "redis": redis,
            }
        });
        if verbose {
            doc["pid"] = std::process::id().into();
            doc["version"] = env!("CARGO_PKG_VERSION").into();
            doc["checks"]["config"]["hash"] = snap.hash.clone().into();
            doc["checks"]["config"]["loaded_at"] =
                humantime::format_rfc3339_seconds(snap.loaded_at)
                    .to_string()
                    .into();
            doc["checks"]["config"]["files"] = snap
                .config
                .sources
                .iter()
                .map(|f| f.path.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .into();
            doc["checks"]["config"]["previous_hash"] = self.reloader.previous_hash().into();
            if let Some(c) = &self.cluster {
                doc["cluster"] = serde_json::json!({
                    "node_id": c.node_id(),
                    "live_nodes": c.live_nodes(),
                    "purge_applied": c.applied().map(|id| id.to_string()),
                });
            }
        }
        (ready, doc)
    }

    /// The bearer token from `admin.token_file`, read per request so that a
    /// rotated file takes effect without a restart.
    /// The refusal to send when the request lacks the token, if it does.
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let snap = self.snapshots.load();
        let Some(path) = snap.config.admin.token_file.as_ref() else {
            return Some(text(
                403,
                "403 Forbidden: set admin.token_file to enable this endpoint\n",
            ));
        };
        let expected = std::fs::read_to_string(path).unwrap_or_default();
        let expected = expected.trim();
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if expected.is_empty() || !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            let mut r = text(401, "401 Unauthorized\n");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return Some(r);
        }
        None
    }

    /// Reloads now and answers the outcome: 200 applied or unchanged, 422
    /// rejected (with every error).
    async fn reload(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if let Some(r) = self.refusal(session) {
            return r;
        }
        let reloader = Arc::clone(&self.reloader);
        let waited = tokio::task::spawn_blocking(move || {
            let ticket = reloader.request(Trigger::Admin);
            reloader.wait(ticket)
        })
        .await;
        match waited {
            Ok(Some(outcome)) => {
                let status = if outcome.outcome == Status::Rejected {
                    422
                } else {
                    200
                };
                json(status, &serde_json::to_value(&*outcome).unwrap_or_default())
            }
            _ => text(
                503,
                "503 Service Unavailable: the reload did not finish in time\n",
            ),
        }
    }

    async fn rollback(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if let Some(r) = self.refusal(session) {
            return r;
        }
        let reloader = Arc::clone(&self.reloader);
        match tokio::task::spawn_blocking(move || reloader.rollback()).await {
            Ok(Some(outcome)) => json(200, &serde_json::to_value(&outcome).unwrap_or_default()),
            Ok(None) => json(
                409,
                &serde_json::json!({ "error": "no previous configuration to roll back to" }),
            ),
            Err(_) => text(500, "500 Internal Server Error\n"),
        }
    }

    /// The running config: a digest of what is in force and the files it
    /// came from, secrets redacted.
    fn config_view(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if let Some(r) = self.refusal(session) {
            return r;
        }
        let snap = self.snapshots.load();
        json(
            200,
            &serde_json::json!({
                "generation": snap.generation,
                "hash": snap.hash,
                "loaded_at": humantime::format_rfc3339_seconds(snap.loaded_at).to_string(),
                "effective": crate::config::view::effective(&snap.config),
                "files": crate::config::view::files(&snap.config),
            }),
        )
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(r) = self.refusal(session) {
            return r;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_ADMIN_BODY {
                        return text(413, "413 Payload Too Large\n");
                    }
                }
                Ok(None) => break,
                Err(_) => return text(400, "400 Bad Request: unreadable body\n"),
            }
        }
        let req: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return json(
                    400,
                    &serde_json::json!({ "error": format!("invalid purge request: {e}") }),
                )
            }
        };
        // Held before the local purge: no shared-cache copy may come back
        // into memory before the purge is in the stream.
        let hold = self.cluster.as_ref().map(|c| c.hold(&req));
        let snap = self.snapshots.load();
        let counts = self.cache.purge(&snap.routes, &req);
        crate::metrics::purged("urls", counts.urls as u64);
        crate::metrics::purged("prefixes", counts.prefixes as u64);
        crate::metrics::purged("tags", counts.tags as u64);
        tracing::info!(
            urls = counts.urls,
            prefixes = counts.prefixes,
            tags = counts.tags,
            soft = req.soft,
            "cache purge"
        );
        let mut doc =
            serde_json::json!({ "purged": counts, "total": counts.total(), "soft": req.soft });
        if let (Some(cluster), Some(hold)) = (&self.cluster, hold) {
            doc["nodes"] =
                serde_json::to_value(cluster.fan_out(&req, hold).await).unwrap_or_default();
        }
        json(200, &doc)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

fn json(status: u16, doc: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(doc).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let read = req.method == http::Method::GET || req.method == http::Method::HEAD;
        let post = req.method == http::Method::POST;
        match req.uri.path() {
            "/healthz" if read => text(200, "ok\n"),
            "/readyz" if read => {
                let verbose = req.uri.query().is_some_and(|q| {
                    q.split('&')
                        .any(|p| p == "verbose" || p.starts_with("verbose="))
                });
                let (ready, doc) = self.readiness(verbose);
                json(if ready { 200 } else { 503 }, &doc)
            }
            "/purge" if post => self.purge(session).await,
            "/reload" if post => self.reload(session).await,
            "/config/rollback" if post => self.rollback(session).await,
            "/config" if read => self.config_view(session),
            "/healthz" | "/readyz" | "/purge" | "/reload" | "/config" | "/config/rollback" => {
                text(405, "405 Method Not Allowed\n")
            }
            _ => text(404, "404 Not Found\n"),
        }
    }
}
