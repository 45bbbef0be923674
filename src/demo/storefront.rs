//! A small sample shop backend with the endpoints and headers of a Next.js
//! storefront: catalogue APIs with shared-cache headers, a per-session cart,
//! a login, hashed static assets and HTML pages. `awning demo` runs it behind
//! the proxy; tests use it as a realistic origin.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

struct Product {
    id: u32,
    slug: &'static str,
    name: &'static str,
    category: &'static str,
    price_cents: u32,
}

const CATALOGUE: &[Product] = &[
    Product {
        id: 1,
        slug: "canvas-awning",
        name: "Canvas Awning",
        category: "outdoor",
        price_cents: 12900,
    },
    Product {
        id: 2,
        slug: "patio-umbrella",
        name: "Patio Umbrella",
        category: "outdoor",
        price_cents: 8900,
    },
    Product {
        id: 3,
        slug: "deck-chair",
        name: "Deck Chair",
        category: "furniture",
        price_cents: 5900,
    },
    Product {
        id: 4,
        slug: "garden-table",
        name: "Garden Table",
        category: "furniture",
        price_cents: 19900,
    },
    Product {
        id: 5,
        slug: "string-lights",
        name: "String Lights",
        category: "lighting",
        price_cents: 2400,
    },
    Product {
        id: 6,
        slug: "solar-lantern",
        name: "Solar Lantern",
        category: "lighting",
        price_cents: 1900,
    },
];

const DEMO_PASSWORD: &str = "correct horse";
const MAX_BODY: usize = 64 * 1024;

/// The sample storefront.
#[derive(Default)]
pub struct Storefront {
    carts: Mutex<HashMap<String, Vec<u32>>>,
    sessions: AtomicU64,
}

struct Reply {
    status: u16,
    content_type: &'static str,
    cache_control: &'static str,
    body: Vec<u8>,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, cache_control: &'static str, value: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json; charset=utf-8",
            cache_control,
            body: serde_json::to_vec(&value).unwrap_or_default(),
            extra: Vec::new(),
        }
    }
    fn html(status: u16, cache_control: &'static str, title: &str, main: &str) -> Self {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Awning Shop</title>\
             <script src=\"/_next/static/chunks/main-4f2a9c.js\" defer></script></head>\
             <body><header><a href=\"/\">Awning Shop</a></header><main>{main}</main></body></html>\n"
        );
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            cache_control,
            body: page.into_bytes(),
            extra: Vec::new(),
        }
    }
    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
}

fn product_json(p: &Product) -> serde_json::Value {
    json!({ "id": p.id, "slug": p.slug, "name": p.name, "category": p.category, "price": { "amount": p.price_cents, "currency": "EUR" } })
}

fn etag(body: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

fn cookie<'a>(session: &'a ServerSession, name: &str) -> Option<&'a str> {
    crate::headers::values::cookie_value(&session.req_header().headers, name)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Storefront {
    fn new_session_id(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (n, std::time::SystemTime::now()).hash(&mut h);
        format!("{:016x}{:04x}", h.finish(), n & 0xffff)
    }

    async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BODY {
                        return None;
                    }
                }
                Ok(None) => return Some(body),
                Err(_) => return None,
            }
        }
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let get = method == Method::GET || method == Method::HEAD;
        match (get, method.as_str(), segments.as_slice()) {
            (true, _, [""]) => {
                let items: String = CATALOGUE
                    .iter()
                    .map(|p| {
                        format!(
                            "<li><a href=\"/products/{}\">{}</a> €{}.{:02}</li>",
                            p.slug,
                            p.name,
                            p.price_cents / 100,
                            p.price_cents % 100
                        )
                    })
                    .collect();
                Reply::html(
                    200,
                    "public, s-maxage=60, stale-while-revalidate=30",
                    "Home",
                    &format!("<h1>Summer sale</h1><ul>{items}</ul>"),
                )
                .with("x-nextjs-cache", "MISS")
            }
            (true, _, ["products", slug]) => match CATALOGUE.iter().find(|p| p.slug == *slug) {
                Some(p) => Reply::html(
                    200,
                    "public, s-maxage=600, stale-while-revalidate=60",
                    p.name,
                    &format!(
                        "<h1>{}</h1><p>€{}.{:02}</p>",
                        p.name,
                        p.price_cents / 100,
                        p.price_cents % 100
                    ),
                )
                .with("surrogate-key", format!("products product-{}", p.id)),
                None => Reply::html(
                    404,
                    "public, s-maxage=30",
                    "Not found",
                    "<h1>Product not found</h1>",
                ),
            },
            (true, _, ["api", "products"]) => {
                let list: Vec<_> = CATALOGUE.iter().map(product_json).collect();
                Reply::json(
                    200,
                    "public, max-age=0, s-maxage=600, stale-while-revalidate=60",
                    json!({ "products": list }),
                )
                .with("surrogate-key", "products")
            }
            (true, _, ["api", "products", id]) => match CATALOGUE
                .iter()
                .find(|p| p.id.to_string() == *id || p.slug == *id)
            {
                Some(p) => Reply::json(
                    200,
                    "public, max-age=0, s-maxage=1200, stale-while-revalidate=60",
                    product_json(p),
                )
                .with("surrogate-key", format!("products product-{}", p.id)),
                None => Reply::json(
                    404,
                    "public, s-maxage=30",
                    json!({ "error": "product not found" }),
                ),
            },
            (true, _, ["api", "categories"]) => {
                let mut cats: Vec<&str> = CATALOGUE.iter().map(|p| p.category).collect();
                cats.dedup();
                Reply::json(
                    200,
                    "public, max-age=0, s-maxage=1800",
                    json!({ "categories": cats }),
                )
            }
            (true, _, ["api", "search"]) => {
                let q = query_param(query.as_deref(), "q")
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let hits: Vec<_> = CATALOGUE
                    .iter()
                    .filter(|p| {
                        !q.is_empty()
                            && (p.name.to_ascii_lowercase().contains(&q) || p.category.contains(&q))
                    })
                    .map(product_json)
                    .collect();
                Reply::json(
                    200,
                    "public, max-age=0, s-maxage=300",
                    json!({ "query": q, "results": hits }),
                )
            }
            (true, _, ["api", "inventory", id]) => {
                match CATALOGUE.iter().find(|p| p.id.to_string() == *id) {
                    Some(p) => Reply::json(
                        200,
                        "public, max-age=0, s-maxage=60",
                        json!({ "id": p.id, "in_stock": 10 + p.id * 3 }),
                    ),
                    None => Reply::json(
                        404,
                        "public, s-maxage=30",
                        json!({ "error": "product not found" }),
                    ),
                }
            }
            (_, "GET" | "POST", ["api", "cart"]) => {
                self.cart(session, method == Method::POST).await
            }
            (_, "POST", ["api", "auth", "login"]) => self.login(session).await,
            (true, _, ["_next", "static", ..]) if path.ends_with(".js") => Reply {
                status: 200,
                content_type: "application/javascript; charset=utf-8",
                cache_control: "public, max-age=31536000, immutable",
                body: b"document.documentElement.dataset.shop='awning';\n".to_vec(),
                extra: Vec::new(),
            },
            (false, _, ["api", ..]) => {
                Reply::json(405, "no-store", json!({ "error": "method not allowed" }))
            }
            _ => Reply::html(
                404,
                "public, s-maxage=30",
                "Not found",
                "<h1>Page not found</h1>",
            ),
        }
    }

    async fn cart(&self, session: &mut ServerSession, add: bool) -> Reply {
        let (id, fresh) = match cookie(session, "session") {
            Some(id) if !id.is_empty() => (id.to_string(), false),
            _ => (self.new_session_id(), true),
        };
        if add {
            let Some(body) = Self::read_body(session).await else {
                return Reply::json(413, "no-store", json!({ "error": "body too large" }));
            };
            let product = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("product").and_then(|p| p.as_u64()))
                .and_then(|p| CATALOGUE.iter().find(|c| u64::from(c.id) == p));
            let Some(product) = product else {
                return Reply::json(
                    400,
                    "no-store",
                    json!({ "error": "send {\"product\": <id>}" }),
                );
            };
            self.carts
                .lock()
                .expect("cart lock")
                .entry(id.clone())
                .or_default()
                .push(product.id);
        }
        let items = self
            .carts
            .lock()
            .expect("cart lock")
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let total: u32 = items
            .iter()
            .filter_map(|i| CATALOGUE.iter().find(|p| p.id == *i))
            .map(|p| p.price_cents)
            .sum();
        let reply = Reply::json(
            200,
            "private, no-store",
            json!({ "items": items, "total": { "amount": total, "currency": "EUR" } }),
        );
        if fresh {
            reply.with(
                "set-cookie",
                format!("session={id}; Path=/; HttpOnly; SameSite=Lax"),
            )
        } else {
            reply
        }
    }

    async fn login(&self, session: &mut ServerSession) -> Reply {
        let Some(body) = Self::read_body(session).await else {
            return Reply::json(413, "no-store", json!({ "error": "body too large" }));
        };
        let creds: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let password = creds.get("password").and_then(|p| p.as_str()).unwrap_or("");
        if password == DEMO_PASSWORD {
            let id = self.new_session_id();
            Reply::json(200, "no-store", json!({ "ok": true })).with(
                "set-cookie",
                format!("session={id}; Path=/; HttpOnly; SameSite=Lax"),
            )
        } else {
            Reply::json(
                401,
                "no-store",
                json!({ "ok": false, "error": "invalid credentials" }),
            )
        }
    }
}

#[async_trait]
impl ServeHttp for Storefront {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = self.route(session).await;
        let tag = etag(&reply.body);
        let not_modified = reply.status == 200
            && session
                .req_header()
                .headers
                .get(http::header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|inm| inm.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
        let mut builder = Response::builder()
            .status(if not_modified { 304 } else { reply.status })
            .header("content-type", reply.content_type)
            .header("cache-control", reply.cache_control)
            .header("x-powered-by", "Next.js")
            .header(
                "date",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
            );
        if reply.status == 200 && !reply.cache_control.contains("no-store") {
            builder = builder.header("etag", tag.as_str());
        }
        for (name, value) in &reply.extra {
            builder = builder.header(*name, value.as_str());
        }
        let body = if not_modified || session.req_header().method == Method::HEAD {
            builder = builder.header("content-length", reply.body.len().to_string());
            Vec::new()
        } else {
            builder = builder.header("content-length", reply.body.len().to_string());
            reply.body
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
