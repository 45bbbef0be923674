//! The compiled route table: host, path (exact, prefix, glob) and method select
//! the first matching route, in the order the rule files list them.

mod normalize;

use http::Method;

pub use normalize::{normalize_path, normalize_path_with};

use crate::config::{HostMatch, PathMatch, Route};

/// What a request offers for matching. `host` is lower-case without a port.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
}

/// Routes in match order.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route that matches, with its index.
    pub fn find(&self, target: Target<'_>) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| route_matches(r, target))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn route_matches(route: &Route, t: Target<'_>) -> bool {
    if let Some(methods) = &route.methods {
        if !methods.iter().any(|m| m == t.method) {
            return false;
        }
    }
    if let Some(host) = &route.host {
        let Some(req_host) = t.host else {
            return false;
        };
        if !host_matches(host, req_host) {
            return false;
        }
    }
    path_matches(&route.path, t.path)
}

/// Whether `host` is what `pattern` names.
pub fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
        HostMatch::Suffix(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
    }
}

fn path_matches(pattern: &PathMatch, path: &str) -> bool {
    match pattern {
        PathMatch::Any => true,
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        PathMatch::Glob { matcher, .. } => matcher.is_match(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_host_match, parse_path_match};

    fn route(name: &str, host: Option<&str>, path: &str, methods: Option<&[&str]>) -> Route {
        Route {
            name: name.into(),
            host: host.map(|h| parse_host_match(h).unwrap()),
            path: if let Some(p) = path.strip_prefix("prefix:") {
                PathMatch::Prefix(p.into())
            } else if path.is_empty() {
                PathMatch::Any
            } else {
                parse_path_match(path).unwrap()
            },
            methods: methods.map(|ms| {
                ms.iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                    .collect()
            }),
            upstream: 0,
            defined_at: String::new(),
            cache: Default::default(),
            compress: false,
            limits: Vec::new(),
            response_headers: Default::default(),
            allow: Default::default(),
            slow: Default::default(),
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("admin-host", Some("admin.shop.test"), "", None),
            route("tenants", Some("*.shops.test"), "", None),
            route("static", None, "/_next/static/**", None),
            route(
                "product-write",
                None,
                "/api/products/*",
                Some(&["PUT", "DELETE"]),
            ),
            route("products", None, "/api/products/**", Some(&["GET", "HEAD"])),
            route("cart", None, "/cart", None),
            route("api", None, "prefix:/api/", None),
            route("pages", None, "/**", None),
        ])
    }

    fn find<'a>(
        t: &'a RouteTable,
        host: Option<&str>,
        method: &str,
        path: &str,
    ) -> Option<&'a str> {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        t.find(Target {
            host,
            path,
            method: &m,
        })
        .map(|(_, r)| r.name.as_str())
    }

    #[test]
    fn first_match_wins_across_host_path_and_method() {
        let t = table();
        let shop = Some("shop.test");
        let cases: &[(Option<&str>, &str, &str, Option<&str>)] = &[
            (
                Some("admin.shop.test"),
                "GET",
                "/api/products/1",
                Some("admin-host"),
            ),
            (Some("ADMIN.shop.test"), "GET", "/", Some("admin-host")),
            (Some("eu.shops.test"), "GET", "/cart", Some("tenants")),
            (Some("shops.test"), "GET", "/cart", Some("cart")),
            (shop, "GET", "/_next/static/chunks/main.js", Some("static")),
            (shop, "PUT", "/api/products/7", Some("product-write")),
            (shop, "GET", "/api/products/7", Some("products")),
            (shop, "GET", "/api/products/7/reviews", Some("products")),
            (shop, "GET", "/api/products", Some("products")),
            (shop, "GET", "/api/products/", Some("products")),
            (shop, "GET", "/api/productsX", Some("api")),
            (shop, "POST", "/api/products/7", Some("api")),
            (shop, "GET", "/cart", Some("cart")),
            (shop, "GET", "/cart/items", Some("pages")),
            (None, "GET", "/api/search", Some("api")),
            (shop, "GET", "/", Some("pages")),
        ];
        for (host, method, path, want) in cases {
            assert_eq!(
                find(&t, *host, method, path),
                *want,
                "{host:?} {method} {path}"
            );
        }
    }

    #[test]
    fn no_route_is_none() {
        let t = RouteTable::new(vec![route("only", None, "/only", Some(&["GET"]))]);
        assert_eq!(find(&t, None, "GET", "/other"), None);
        assert_eq!(find(&t, None, "POST", "/only"), None);
    }

    #[test]
    fn glob_star_stays_in_one_segment() {
        let t = RouteTable::new(vec![route("one", None, "/a/*", None)]);
        assert_eq!(find(&t, None, "GET", "/a/b"), Some("one"));
        assert_eq!(find(&t, None, "GET", "/a/b/c"), None);
    }
}
