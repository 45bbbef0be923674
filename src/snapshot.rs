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
    /// Content hash of the files it was read from (16 hex digits).
    pub hash: String,
    pub loaded_at: std::time::SystemTime,
}

impl Snapshot {
    pub fn compile(config: Config, generation: u64) -> Self {
        Self::succeeding(config, generation, None)
    }

    /// The snapshot replacing `previous`: upstream servers it shares with it
    /// keep their health state.
    pub fn succeeding(config: Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let upstreams = config
            .upstreams
            .iter()
            .cloned()
            .map(|u| {
                let old = previous.and_then(|p| p.upstreams.iter().find(|g| g.name() == u.name));
                Arc::new(UpstreamGroup::succeeding(u, old.map(|g| &**g)))
            })
            .collect();
        let routes = RouteTable::new(config.routes.clone());
        Self {
            hash: Self::content_hash(&config),
            config: Arc::new(config),
            routes,
            upstreams,
            generation,
            loaded_at: std::time::SystemTime::now(),
        }
    }

    /// A hash of the files `config` was read from, names and contents, and
    /// of the addresses its upstream host names resolved to: equal hashes
    /// mean the same configuration (a name that now resolves elsewhere is a
    /// change).
    pub fn content_hash(config: &Config) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(0);
        let mut part = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for f in &config.sources {
            part(f.path.to_string_lossy().as_bytes());
            part(f.text.as_bytes());
        }
        for u in &config.upstreams {
            for (_, addr) in &u.servers {
                part(addr.to_string().as_bytes());
            }
        }
        format!("{:016x}", h.digest())
    }
}

/// The current snapshot, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub fn shared(snapshot: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(snapshot))
}
