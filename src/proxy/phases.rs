//! `impl ProxyHttp`: each phase calls into `headers`, `routes` and `upstreams`.

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::ctx::RequestCtx;
use super::{errors, peer};
use crate::headers::{request, response};
use crate::routes::Target;
use crate::snapshot::SharedSnapshot;

/// The proxy application.
pub struct Awning {
    snapshots: SharedSnapshot,
}

impl Awning {
    pub fn new(snapshots: SharedSnapshot) -> Self {
        Self { snapshots }
    }
}

/// Writes one of awning's own short responses. The connection is closed when
/// the request was malformed or may carry an unread body.
async fn respond(session: &mut Session, status: u16, close: bool) -> Result<bool> {
    let (header, body) = response::error_page(status);
    let has_body = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING);
    if close || has_body {
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
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
        let target = match request::check_target(session.req_header(), session.is_http2()) {
            Ok(t) => t,
            Err(e) => {
                log::debug!("rejected request target: {}", e.reason());
                return respond(session, 400, true).await;
            }
        };
        if let Some(uri) = target.origin_form.clone() {
            session.req_header_mut().set_uri(uri);
        }
        let req = session.req_header();
        let found = ctx.snapshot.routes.find(Target {
            host: target.host.as_deref(),
            path: req.uri.path(),
            method: &req.method,
        });
        ctx.target = target;
        match found {
            Some((index, _)) => {
                ctx.route = Some(index);
                Ok(false)
            }
            None => respond(session, 404, false).await,
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
                client_ip: client_ip(session),
                tls: downstream_tls(session),
                authority: ctx.target.authority.as_deref(),
                host_header_missing: ctx.target.host_header_missing,
            },
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::strip_hop_by_hop(upstream_response);
        if let (Some(route), Some(server)) = (
            ctx.route.and_then(|i| ctx.snapshot.routes.get(i)),
            ctx.server,
        ) {
            ctx.snapshot.upstreams[route.upstream].mark_ok(server);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status = errors::status_for(e);
        if status > 0 {
            let (header, body) = response::error_page(status);
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
