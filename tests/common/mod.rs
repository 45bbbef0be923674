//! Test harness shared by the integration tests: a scripted fake origin, a raw
//! HTTP client and the real awning binary on ports picked for it.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod origin;
pub mod proxy;
pub mod redis;

pub use client::{get, send_raw, Request, Response};
pub use origin::{FakeOrigin, Received, Reply};
pub use proxy::{eventually, free_port, ProxyUnderTest, Setup};
pub use redis::RedisServer;

/// Rules sending every request to the upstream `shop`, uncached.
pub const ALL_TO_SHOP: &str =
    "routes:\n  - name: all\n    match: { path: \"/**\" }\n    upstream: shop\n";
