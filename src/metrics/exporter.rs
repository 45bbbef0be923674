//! The metrics listener: `GET /metrics` in the Prometheus text format, and
//! nothing else.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use pingora_prometheus::prometheus::{self, Encoder, TextEncoder};

pub struct Exporter;

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body.as_bytes().to_vec())
        .expect("static response")
}

#[async_trait]
impl ServeHttp for Exporter {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() != "/metrics" {
            return text(404, "404 Not Found: metrics are at /metrics\n");
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            let mut r = text(405, "405 Method Not Allowed\n");
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        // One gather: a consistent snapshot of every family, whatever
        // happens meanwhile.
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        if let Err(e) = encoder.encode(&prometheus::gather(), &mut body) {
            log::error!("cannot encode metrics: {e}");
            return text(500, "500 Internal Server Error\n");
        }
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, encoder.format_type())
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("valid response")
    }
}

/// The metrics service, ready for listeners.
pub fn service() -> Service<HttpServer<Exporter>> {
    Service::new("awning metrics".to_string(), HttpServer::new_app(Exporter))
}
