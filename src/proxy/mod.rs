//! The Pingora glue: per-request state and the `ProxyHttp` phases, each a few
//! lines calling into the domain modules.

pub mod ctx;
pub mod errors;
mod peer;
mod phases;

pub use ctx::{inflight_requests, RequestCtx};
pub use phases::Awning;
