//! One compiled configuration generation. Each request loads the current
//! snapshot once and keeps it to the end, so a reload never changes the rules
//! under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::routes::RouteTable;
use crate::upstreams::UpstreamGroup;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Indexed like `config.upstreams`; routes refer to them by index.
    pub upstreams: Vec<Arc<UpstreamGroup>>,
    pub generation: u64,
}

impl Snapshot {
    pub fn compile(config: Config, generation: u64) -> Self {
        let upstreams = config
            .upstreams
            .iter()
            .cloned()
            .map(|u| Arc::new(UpstreamGroup::new(u)))
            .collect();
        let routes = RouteTable::new(config.routes.clone());
        Self {
            config: Arc::new(config),
            routes,
            upstreams,
            generation,
        }
    }
}

/// The current snapshot, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub fn shared(snapshot: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(snapshot))
}
