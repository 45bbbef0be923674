//! `impl ProxyHttp`: each phase calls into `headers`, `routes` and `upstreams`.

use std::time::SystemTime;

use async_trait::async_trait;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::{CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::ctx::RequestCtx;
use super::{errors, peer};
use crate::cache::{self, key, policy, status, CacheEngine};
use crate::cluster::Cluster;
use crate::compression;
use crate::headers::security::{self, Refusal};
use crate::headers::{request, response};
use crate::limits::{self, KeySource, Limiter, Verdict};
use crate::metrics::{self, access_log, access_log::AccessLogger};
use crate::routes::Target;
use crate::snapshot::SharedSnapshot;

/// The proxy application.
pub struct Awning {
    snapshots: SharedSnapshot,
    cache: &'static CacheEngine,
    limiter: std::sync::Arc<Limiter>,
    access_log: std::sync::Arc<AccessLogger>,
    /// The other nodes, told of invalidations (with `redis:`).
    cluster: Option<std::sync::Arc<Cluster>>,
}

impl Awning {
    pub fn new(
        snapshots: SharedSnapshot,
        cache: &'static CacheEngine,
        limiter: std::sync::Arc<Limiter>,
        access_log: std::sync::Arc<AccessLogger>,
        cluster: Option<std::sync::Arc<Cluster>>,
    ) -> Self {
        Self {
            snapshots,
            cache,
            limiter,
            access_log,
            cluster,
        }
    }

    /// Applies the route's limit policies of one kind (all requests, or only
    /// those going to the origin); returns the first enforced denial.
    /// Background revalidations and warming are never counted.
    async fn check_limits(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        misses: bool,
    ) -> Option<(usize, Verdict)> {
        if session.is_subrequest() || cache::warm::is_warm_request(session.req_header()) {
            return None;
        }
        let snapshot = ctx.snapshot.clone();
        let route = ctx.route.and_then(|i| snapshot.routes.get(i))?;
        let src = KeySource {
            client_ip: ctx.client_ip,
            route: &route.name,
            headers: &session.req_header().headers,
        };
        for &i in &route.limits {
            let policy = &snapshot.config.limits[i];
            if policy.misses_only != misses {
                continue;
            }
            let v = self.limiter.decide(policy, src).await;
            let d = v.decision;
            let result = limits::decision_label(&d, policy.shadow);
            if !d.allowed || ctx.limit_outcome.is_none() {
                ctx.limit_outcome = Some((i, result));
            }
            // The strictest policy speaks, across both checks of a request.
            let stricter = ctx
                .limit_headers
                .as_ref()
                .is_none_or(|(_, _, left)| d.remaining <= *left);
            if (policy.headers_always || !d.allowed) && stricter {
                let (policy_value, limit_value) = limits::header_values(&policy.name, v.quota, &d);
                ctx.limit_headers = Some((policy_value, limit_value, d.remaining));
            }
            if !d.allowed {
                if policy.shadow {
                    log::info!("rate limit {} would deny (shadow mode)", policy.name);
                } else {
                    // Later policies are not charged for a request refused anyway.
                    return Some((i, v));
                }
            }
        }
        None
    }

    /// Answers 429 with `Retry-After` and the `RateLimit` fields.
    async fn deny(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        policy: usize,
        v: Verdict,
    ) -> Result<bool> {
        let config = &ctx.snapshot.config;
        let (header, body) =
            limits::denial(&config.limits[policy].name, &v, config.limiter.json_body);
        respond_with(session, ctx, header, body, false).await
    }
}

/// The cache key's URL parts for this request.
fn url_parts<'a>(ctx: &'a RequestCtx, req: &'a RequestHeader) -> key::UrlParts<'a> {
    key::UrlParts {
        tls: ctx.tls,
        host: ctx.target.host.as_deref().unwrap_or(""),
        port: ctx.target.port,
        path: req.uri.path(),
        query: req.uri.query(),
    }
}

/// gzip level for routes with `compress: true`: most of the gain for
/// little CPU.
const COMPRESSION_LEVEL: u32 = 5;

/// What the compression module is shown of a client that accepts gzip.
static GZIP_ONLY: std::sync::LazyLock<RequestHeader> = std::sync::LazyLock::new(|| {
    let mut h = RequestHeader::build("GET", b"/", None).expect("static request");
    h.insert_header(http::header::ACCEPT_ENCODING, "gzip")
        .expect("static header");
    h
});

static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

impl Awning {
    /// A successful unsafe request invalidates the stored URL and the
    /// same-host `Location` / `Content-Location` (RFC 9111 §4.4).
    fn invalidate_after_write(&self, ctx: &RequestCtx, req: &RequestHeader, resp: &ResponseHeader) {
        let Some(host) = ctx.target.authority.as_deref() else {
            return;
        };
        let scheme = if ctx.tls { "https" } else { "http" };
        // Keyed by the route that serves (and caches) GETs of the URL, which
        // may not be the route of this write.
        let own = format!(
            "{scheme}://{host}{}",
            req.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut urls = vec![own];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(v) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let url = if v.starts_with('/') && !v.starts_with("//") {
                format!("{scheme}://{host}{v}")
            } else if v.split_once("://").is_some_and(|(_, rest)| {
                rest.split(['/', '?'])
                    .next()
                    .is_some_and(|h| h.eq_ignore_ascii_case(host))
            }) {
                v.to_string()
            } else {
                continue;
            };
            urls.push(url);
        }
        // Writes to URLs no route caches (a cart, a login) concern no cache.
        urls.retain(|u| cache::purge::url_is_cached(&ctx.snapshot.routes, u));
        if urls.is_empty() {
            return;
        }
        let changed = cache::purge::PurgeRequest {
            urls,
            ..Default::default()
        };
        // The other nodes (and their shared-cache reads) learn of it too.
        let hold = self.cluster.as_ref().map(|c| c.hold(&changed));
        for url in &changed.urls {
            for primary in cache::purge::url_primaries(&ctx.snapshot.routes, url) {
                self.cache.invalidate_primary(&primary);
            }
        }
        if let (Some(cluster), Some(hold)) = (&self.cluster, hold) {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let _ = cluster.publish(&changed, hold).await;
            });
        }
    }
}

/// Writes one of awning's own short responses. The connection is closed when
/// the request was malformed or may carry an unread body.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    close: bool,
) -> Result<bool> {
    let (header, body) = response::error_page(status);
    respond_with(session, ctx, header, body, close).await
}

/// Refuses a request that breaks a bound or the route's `allow`: counted,
/// logged once, answered with its status.
async fn refuse(session: &mut Session, ctx: &RequestCtx, refusal: Refusal) -> Result<bool> {
    let (mut header, body) = response::error_page(refusal.status());
    if refusal == Refusal::MethodNotAllowed {
        if let Some(route) = ctx.route() {
            let _ = header.insert_header(http::header::ALLOW, security::allow_value(&route.allow));
        }
    }
    metrics::rejected(refusal.reason());
    log::info!(
        "refused {} {}: {}",
        session.req_header().method,
        ctx.route().map_or("-", |r| r.name.as_str()),
        refusal.reason()
    );
    respond_with(session, ctx, header, body, false).await
}

/// The security headers and request id every answer carries, awning's own
/// included.
fn finish_response(ctx: &RequestCtx, header: &mut ResponseHeader) {
    let rules = ctx
        .route()
        .map_or(&ctx.snapshot.config.response_headers, |r| {
            &r.response_headers
        });
    security::finish_answer(header, rules, ctx.client_https, ctx.request_id.as_ref());
}

/// Writes a complete answer of awning's own; the connection is closed when
/// asked, or when the request may carry a body nobody read.
async fn respond_with(
    session: &mut Session,
    ctx: &RequestCtx,
    mut header: ResponseHeader,
    body: bytes::Bytes,
    close: bool,
) -> Result<bool> {
    finish_response(ctx, &mut header);
    let req = session.req_header();
    let has_body = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers.contains_key(http::header::TRANSFER_ENCODING);
    if close || has_body {
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Turns on Pingora's gzip module for this response. The module read the
/// request while it was off, and picks the client's first coding: it is shown
/// a request that accepts gzip alone.
fn enable_gzip(session: &mut Session) {
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_algorithm_level(Algorithm::Gzip, COMPRESSION_LEVEL);
        c.request_filter(&GZIP_ONLY);
    }
}

/// The request URI with its path normalised, when that changes it;
/// `Err` for a path that hides a separator.
fn normalized_uri(
    uri: &http::Uri,
    keep_encoded_slashes: bool,
) -> std::result::Result<Option<http::Uri>, ()> {
    let path = uri.path();
    let normal = crate::routes::normalize_path_with(path, keep_encoded_slashes).ok_or(())?;
    if normal == path {
        return Ok(None);
    }
    Ok(with_path_and_query(&normal, uri.query()))
}

/// The request URI with the query a cached route's key was built from, when
/// that differs: the origin must answer exactly what gets stored, so a
/// parameter the key ignores never reaches it (no parameter cloaking).
fn keyed_uri(uri: &http::Uri, rules: &crate::config::CacheKeyRules) -> Option<http::Uri> {
    let keyed = key::normalize_query(uri.query(), rules);
    if keyed.as_deref() == uri.query().filter(|q| !q.is_empty()) {
        return None;
    }
    with_path_and_query(uri.path(), keyed.as_deref())
}

fn with_path_and_query(path: &str, query: Option<&str>) -> Option<http::Uri> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    http::Uri::builder().path_and_query(pq).build().ok()
}

/// The connection's peer; an IPv4 client of a dual-stack listener
/// (`::ffff:a.b.c.d`) is its IPv4 address.
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())
}

fn downstream_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Awning {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.snapshots.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let framing =
            request::check_framing(session.req_header(), || session.as_downstream().to_h1_raw());
        if let Err(why) = framing {
            metrics::rejected("ambiguous_framing");
            log::info!("refused a request with ambiguous framing: {why}");
            return respond(session, ctx, 400, true).await;
        }
        let target = match request::check_target(session.req_header(), session.is_http2()) {
            Ok(t) => t,
            Err(e) => {
                metrics::rejected("bad_target");
                log::info!("refused a request target: {}", e.reason());
                return respond(session, ctx, 400, true).await;
            }
        };
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let allowed = local.and_then(|l| ctx.snapshot.config.listen.hosts_for(l));
        if let Some(hosts) = allowed {
            let known = target
                .host
                .as_deref()
                .is_some_and(|h| hosts.iter().any(|m| crate::routes::host_matches(m, h)));
            if !known {
                metrics::rejected("unknown_host");
                log::info!("refused a request for a host this listener does not serve");
                let status = ctx.snapshot.config.requests.unknown_host;
                return respond(session, ctx, status, true).await;
            }
        }
        let peer = peer_ip(session);
        let config = &ctx.snapshot.config;
        ctx.trusted_peer =
            peer.is_some_and(|p| config.trusted_proxies.iter().any(|n| n.contains(&p)));
        ctx.tls = downstream_tls(session);
        ctx.client_https = ctx.tls
            || (ctx.trusted_peer
                && request::forwarded_proto_is_https(&session.req_header().headers));
        let clients = &config.clients;
        session.set_read_timeout(Some(clients.body_timeout));
        session.set_write_timeout(Some(clients.write_timeout));
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(clients.keepalive_timeout.as_secs().max(1)));
        }
        let id = security::request_id(session.req_header(), ctx.trusted_peer);
        if let Err(refusal) = security::check_bounds(session.req_header(), &config.requests) {
            ctx.request_id = Some(id);
            return refuse(session, ctx, refusal).await;
        }
        if !ctx.trusted_peer {
            security::strip_untrusted(session.req_header_mut(), &ctx.snapshot.config.requests);
        }
        // Sent to the origin in `upstream_request_filter`: a cache hit never
        // goes there, and Pingora's request-header insert is not cheap.
        ctx.request_id = Some(id);
        if let Some(uri) = target.origin_form.clone() {
            session.req_header_mut().set_uri(uri);
        }
        // Routing, the cache key and the origin all see the normalised path.
        let keep_slashes = ctx.snapshot.config.requests.keep_encoded_slashes;
        match normalized_uri(&session.req_header().uri, keep_slashes) {
            Ok(Some(uri)) => session.req_header_mut().set_uri(uri),
            Ok(None) => {}
            Err(()) => {
                metrics::rejected("hidden_separator");
                log::info!("refused a path with an encoded separator");
                return respond(session, ctx, 400, true).await;
            }
        }
        let req = session.req_header();
        let found = ctx.snapshot.routes.find(Target {
            host: target.host.as_deref(),
            path: req.uri.path(),
            method: &req.method,
        });
        ctx.target = target;
        ctx.client_ip = request::client_ip(
            peer,
            &session.req_header().headers,
            &ctx.snapshot.config.trusted_proxies,
        );
        match found {
            Some((index, route)) => {
                if route.compress {
                    match compression::choose_for(session.req_header()) {
                        compression::Coding::Brotli => ctx.brotli_wanted = true,
                        compression::Coding::Gzip => enable_gzip(session),
                        compression::Coding::Identity => {}
                    }
                }
                ctx.route = Some(index);
                if let Err(refusal) = security::check_allow(session.req_header(), &route.allow) {
                    return refuse(session, ctx, refusal).await;
                }
                match self.check_limits(session, ctx, false).await {
                    Some((policy, v)) => self.deny(session, ctx, policy, v).await,
                    None => Ok(false),
                }
            }
            None => respond(session, ctx, 404, false).await,
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        match cache::admit_request(&route.cache, session.req_header()) {
            Ok(()) => {
                // Only requests the cache may serve are reshaped to their key.
                if let Some(uri) = keyed_uri(&session.req_header().uri, &route.cache.key) {
                    session.req_header_mut().set_uri(uri);
                }
                session.cache.enable(
                    self.cache.store,
                    Some(self.cache.eviction),
                    None,
                    Some(self.cache.lock),
                    Some(CacheEngine::options()),
                );
                session.cache.set_max_file_size_bytes(self.cache.max_object);
            }
            Err(reason) => ctx.cache_detail = Some(reason),
        }
        Ok(())
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut RequestCtx) {
        session.cache.cache_miss();
        if self.cache.store.l2().is_some() {
            ctx.missed_key = Some(session.cache.cache_key().combined_bin());
        }
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let route = ctx
            .route()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let primary = key::primary(url_parts(ctx, session.req_header()), &route.cache.key);
        Ok(key::cache_key(primary))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let route = ctx.route()?;
        key::variance(
            &route.cache.key,
            &key::vary_names(meta.headers()),
            &req.headers,
        )
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let revalidated = ctx.revalidated_headers.take();
        let snapshot = ctx.snapshot.clone();
        let Some(route) = ctx.route.and_then(|i| snapshot.routes.get(i)) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "no-route",
            )));
        };
        let facts = policy::RequestFacts {
            authorization: session
                .req_header()
                .headers
                .contains_key(http::header::AUTHORIZATION),
        };
        let now = SystemTime::now();
        let updated;
        let resp = match revalidated {
            Some(fields) => {
                updated = cache::apply_304_fields(resp, &fields);
                &updated
            }
            None => resp,
        };
        let decision = policy::decide(&route.cache, facts, resp, now);
        Ok(match cache::meta_for(&decision, resp, now) {
            Some(meta) => {
                ctx.cache_stored = true;
                RespCacheable::Cacheable(meta)
            }
            None => {
                let reason = match decision {
                    policy::Decision::Skip(r) => r,
                    policy::Decision::Store { .. } => "store",
                };
                ctx.cache_detail = Some(reason);
                RespCacheable::Uncacheable(NoCacheReason::Custom(reason))
            }
        })
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // None: stale-while-revalidate. Some: stale-if-error, for origin
        // failures (connect, timeout, 5xx) only.
        error.is_none_or(|e| {
            e.esource() == &ErrorSource::Upstream
                || matches!(e.etype(), ErrorType::HTTPStatus(code) if *code >= 500)
        })
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // Runs only for requests the cache did not answer: `count: misses`
        // policies protect the origin without charging cache hits.
        match self.check_limits(session, ctx, true).await {
            Some((policy, v)) => {
                self.deny(session, ctx, policy, v).await?;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .and_then(|i| ctx.snapshot.routes.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let group = &ctx.snapshot.upstreams[route.upstream];
        let server = group.pick(&ctx.tried).ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectError,
                "every server of the upstream failed",
            )
            .into_up()
        })?;
        ctx.tried.add(server);
        ctx.server = Some(server);
        Ok(Box::new(peer::build(group, server)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the origin, so another server may take the request,
        // whatever its method.
        if let (Some(route), Some(server)) = (
            ctx.route.and_then(|i| ctx.snapshot.routes.get(i)),
            ctx.server,
        ) {
            let group = &ctx.snapshot.upstreams[route.upstream];
            group.mark_failed(server);
            log::warn!(
                "upstream {} server {} failed to connect: {}",
                group.name(),
                group.server(server).label,
                e.etype().as_str()
            );
            e.set_retry(group.has_untried(&ctx.tried));
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        request::set_forwarding(
            upstream_request,
            request::Forwarding {
                peer: peer_ip(session),
                trusted_peer: ctx.trusted_peer,
                tls: ctx.tls,
                authority: ctx.target.authority.as_deref(),
                host_header_missing: ctx.target.host_header_missing,
            },
        );
        if session.cache.enabled() {
            cache::prepare_upstream_request(session.req_header(), upstream_request);
        }
        upstream_request.remove_header(cache::warm::WARM_HEADER);
        if let Some(id) = &ctx.request_id {
            let _ = upstream_request.insert_header(security::X_REQUEST_ID.clone(), id.clone());
        }
        ctx.upstream_sent = Some(std::time::Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::strip_hop_by_hop(upstream_response);
        ctx.upstream_ttfb = ctx.upstream_sent.map(|t| t.elapsed());
        if let (Some(route), Some(ttfb)) = (ctx.route(), ctx.upstream_ttfb) {
            let upstream = ctx.snapshot.upstreams[route.upstream].name();
            metrics::upstream_answered(&route.name, upstream, ttfb);
        }
        if upstream_response.status == http::StatusCode::NOT_MODIFIED
            && session.cache.maybe_cache_meta().is_some()
        {
            ctx.revalidated_headers = Some(upstream_response.headers.clone());
        }
        if let (Some(route), Some(server)) = (
            ctx.route.and_then(|i| ctx.snapshot.routes.get(i)),
            ctx.server,
        ) {
            ctx.snapshot.upstreams[route.upstream].mark_ok(server);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = SystemTime::now();
        let phase = session.cache.phase();
        let ttl = session
            .cache
            .maybe_cache_meta()
            .map(|m| status::ttl_of(m.fresh_until(), now));
        let outcome = status::Outcome {
            phase,
            ttl,
            stored: ctx.cache_stored,
            detail: ctx.cache_detail,
            collapsed: session.cache.lock_duration().is_some(),
        };
        let _ = upstream_response.insert_header(CACHE_STATUS.clone(), status::render(&outcome));
        if !session.is_subrequest() {
            if outcome.collapsed {
                metrics::cache_event("coalesced");
            }
            match phase {
                CachePhase::StaleUpdating => metrics::cache_event("stale_while_revalidate"),
                CachePhase::Stale => metrics::cache_event("stale_if_error"),
                _ => {}
            }
        }
        if ctx.brotli_wanted {
            ctx.brotli = compression::start_brotli(upstream_response);
        }
        if let Some((policy, limit, _)) = &ctx.limit_headers {
            limits::add_headers(upstream_response, policy, limit);
        }
        finish_response(ctx, upstream_response);

        let req = session.req_header();
        if cache::is_unsafe(&req.method) && (200..400).contains(&upstream_response.status.as_u16())
        {
            self.invalidate_after_write(ctx, req, upstream_response);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Content-Length was checked before; this catches chunked bodies and
        // bodies longer than they said.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        match ctx.route().and_then(|r| r.allow.max_body) {
            Some(max) if ctx.body_bytes > max => {
                metrics::rejected(Refusal::BodyTooLarge.reason());
                Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body larger than max_body",
                )
            }
            _ => Ok(()),
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(stream) = ctx.brotli.as_mut() {
            let encoded = stream.encode(body.as_deref(), end_of_stream);
            *body = (!encoded.is_empty()).then_some(encoded);
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // A miss that went to the origin for an answer that could not be
        // stored (or whose fill broke off before it was written) ends its
        // cluster-wide fill here, so other nodes stop waiting.
        let fetched = matches!(
            session.cache.phase(),
            CachePhase::Disabled(_) | CachePhase::Miss
        );
        if let (Some(key), true, Some(l2)) = (ctx.missed_key.take(), fetched, self.cache.store.l2())
        {
            if !l2.writing(&key) {
                l2.release(&key).await;
            }
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let cache = status::label(session.cache.phase());
        let took = ctx.started.elapsed();
        let req = session.req_header();
        let route = ctx.route();
        let route_label = route.map_or(metrics::UNMATCHED, |r| r.name.as_str());
        metrics::request_done(
            route_label,
            req.method.as_str(),
            status,
            cache,
            took,
            session.body_bytes_sent() as u64,
        );
        if let Some(r) = route {
            let level = if took >= r.slow.critical {
                Some("critical")
            } else if took >= r.slow.warn {
                Some("warn")
            } else {
                None
            };
            if let Some(level) = level {
                metrics::slow_request(&r.name, level);
                log::warn!(
                    "slow request ({level}): route {} {} {} took {:?} (origin first byte {:?}, cache {cache}, status {status}, request id {})",
                    r.name,
                    req.method,
                    req.uri.path(),
                    took,
                    ctx.upstream_ttfb,
                    ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                );
            }
        }
        if !self.access_log.wants(status, cache) {
            return;
        }
        let upstream = route.zip(ctx.server).map(|(r, server)| {
            ctx.snapshot.upstreams[r.upstream]
                .server(server)
                .addr
                .to_string()
        });
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let limit = ctx.limit_outcome.map(|(policy, decision)| {
            format!("{}:{decision}", ctx.snapshot.config.limits[policy].name)
        });
        let entry = access_log::Entry {
            time: access_log::now(),
            request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
            client_ip: ctx.client_ip,
            method: req.method.as_str(),
            host: ctx.target.host.as_deref(),
            path: req.uri.path(),
            query: req.uri.query().filter(|_| self.access_log.logs_query()),
            status,
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            duration_ms: ms(took),
            upstream_ms: ctx.upstream_ttfb.map(ms),
            route: route.map(|r| r.name.as_str()),
            cache,
            limit: limit.as_deref(),
            upstream,
        };
        self.access_log.write(&entry);
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let (ErrorSource::Upstream, Some(route)) = (e.esource(), ctx.route()) {
            let upstream = ctx.snapshot.upstreams[route.upstream].name();
            metrics::upstream_failed(upstream, e.etype().as_str());
        }
        if e.esource() == &ErrorSource::Downstream {
            match e.etype() {
                ErrorType::WriteTimedout => metrics::rejected("client_write_timeout"),
                ErrorType::ReadTimedout => metrics::rejected("client_read_timeout"),
                _ => {}
            }
        }
        let status = errors::status_for(e);
        if status > 0 {
            let (mut header, body) = response::error_page(status);
            finish_response(ctx, &mut header);
            if let Err(write_err) = session
                .as_downstream_mut()
                .write_error_response(header, body)
                .await
            {
                log::debug!("could not send {status} to the client: {write_err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }
}
