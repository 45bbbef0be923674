//! awning: an edge proxy for online shops, on Pingora.
//!
//! Dependency direction: `config` <- domain modules (`routes`, `upstreams`,
//! `headers`) <- `snapshot` <- `proxy`, `admin`, `reload` <- `app` <- `cli`.

pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod connections;
pub mod demo;
pub mod headers;
pub mod health;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod redis_link;
pub mod reload;
pub mod routes;
pub mod snapshot;
pub mod upstreams;
pub mod watch;
