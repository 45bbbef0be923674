//! `awning demo`: the sample storefront on loopback with the proxy in front.

mod storefront;

use std::net::{SocketAddr, TcpListener};

use pingora::apps::http_app::HttpServer;
use pingora::services::listening::Service;

use crate::config::Config;
pub use storefront::Storefront;

/// The upstream group the demo points at its storefront.
pub const DEMO_UPSTREAM: &str = "storefront";

/// A free loopback port for the storefront (the OS picks; the listener is
/// released just before the storefront binds it).
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Points the `storefront` upstream (or, when there is none, every upstream)
/// at `addr`.
pub fn point_upstreams_at(config: &mut Config, addr: SocketAddr) {
    let named = config.upstreams.iter().any(|u| u.name == DEMO_UPSTREAM);
    for u in &mut config.upstreams {
        if !named || u.name == DEMO_UPSTREAM {
            u.servers = vec![(addr.to_string(), addr)];
            u.tls = false;
        }
    }
}

/// The storefront as a Pingora service on `addr`.
pub fn storefront_service(addr: SocketAddr) -> Service<HttpServer<Storefront>> {
    let mut service = Service::new(
        "awning demo storefront".to_string(),
        HttpServer::new_app(Storefront::default()),
    );
    service.add_tcp(&addr.to_string());
    service
}

/// What to try once the demo is up.
pub fn hints(config: &Config, storefront: SocketAddr) -> String {
    let base = config
        .listen
        .http
        .first()
        .map(|a| format!("http://{a}"))
        .or_else(|| {
            config
                .listen
                .tls
                .first()
                .map(|t| format!("https://{}", t.addr))
        })
        .unwrap_or_default()
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!(
        "awning demo: storefront on http://{storefront}, awning in front of it on {base}\n\
         try:\n\
         \x20 curl -i {base}/\n\
         \x20 curl -i {base}/api/products\n\
         \x20 curl -i {base}/api/products/1\n\
         \x20 curl -i '{base}/api/search?q=lights'\n\
         \x20 curl -i {base}/_next/static/chunks/main-4f2a9c.js\n\
         \x20 curl -i -c /tmp/awning-demo.cookies -b /tmp/awning-demo.cookies -X POST -d '{{\"product\": 3}}' {base}/api/cart\n\
         \x20 curl -i -H 'Content-Type: application/json' -d '{{\"email\":\"a@b.c\",\"password\":\"correct horse\"}}' {base}/api/auth/login\n\
         \x20 curl -i {base}/no-such-page\n\
         \x20 curl -s http://{}/readyz\n\
         stop with Ctrl-C\n",
        config.admin.listen
    )
}
