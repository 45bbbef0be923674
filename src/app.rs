//! Composition root: builds the process-lifetime parts from a validated config,
//! registers the services with Pingora and runs until a signal stops it.

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::ShutdownWatch;
use pingora::server::{RunArgs, Server};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::Arc;

use crate::admin::AdminApp;
use crate::cache::shared::{PurgeLog, SharedCache};
use crate::cache::CacheEngine;
use crate::cluster::Cluster;
use crate::config::defaults::{H2_MAX_CONCURRENT_STREAMS, H2_MAX_HEADER_LIST_SIZE};
use crate::config::Config;
use crate::connections::Guarded;
use crate::lifecycle;
use crate::limits::shared::SharedTier;
use crate::limits::Limiter;
use crate::metrics::access_log::AccessLogger;
use crate::proxy::Awning;
use crate::reload::Reloader;
use crate::snapshot::{self, Snapshot};

/// How `run` was asked to start.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Take the listeners over from a running awning (binary upgrade).
    pub upgrade: bool,
    /// Applied to the config at start and to every reloaded one.
    pub adjust: Option<ConfigAdjust>,
}

/// A change made to every loaded config (the demo points the upstreams at
/// its own storefront, on start and on each reload alike).
#[derive(Clone)]
pub struct ConfigAdjust(pub Arc<dyn Fn(&mut Config) + Send + Sync>);

impl std::fmt::Debug for ConfigAdjust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigAdjust")
    }
}

/// Latency budget of one shared-cache call on the request path (at least
/// `redis.timeout`): a slower Redis counts as a miss.
const L2_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// Exit code for a configuration that cannot be used.
pub const EXIT_CONFIG: i32 = 2;

/// Runs the proxy until shutdown. `extra` may add services (the demo storefront).
/// Write buffering of client connections. Pingora's default is one segment
/// (1,460 bytes), so a cached 1 KiB answer left in two `send`s, header and
/// body, each a loopback or NIC round of its own. 4 KiB holds the header and
/// a small body (a 1 KiB page, most API answers); larger writes bypass the
/// buffer. It is allocated per connection, idle ones included, so it stays
/// small: 10,000 keep-alive connections hold 40 MiB of it. Pingora buffers
/// only bodies of known length and flushes them at their end; chunked ones
/// (streamed pages) are flushed chunk by chunk, so a stream is not held back.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().write(CLIENT_WRITE_BUFFER)
}

const CLIENT_WRITE_BUFFER: usize = 4 * 1024;

pub fn run(mut config: Config, opts: RunOptions, extra: impl FnOnce(&mut Server)) -> i32 {
    if let Some(adjust) = &opts.adjust {
        (adjust.0)(&mut config);
    }
    if let Err(e) = lifecycle::install_sighup_handler() {
        tracing::error!("cannot install the SIGHUP handler: {e}");
        return 1;
    }
    let grace = config.shutdown_grace;
    let upgrade_socket = config.upgrade_socket.clone();
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(grace.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.upgrade_socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    let listen = config.listen.clone();
    let config_clients = config.clients.clone();
    let config_access_log = config.access_log.clone();
    let ipv6_prefix = config.limiter.ipv6_prefix;
    let admin_listen = config.admin.listen;
    let metrics_listen = config.metrics.listen;
    crate::metrics::register_build_info();
    crate::metrics::register_process_metrics();
    let cache = CacheEngine::new(&config.cache);
    let limiter = Arc::new(Limiter::new(&config.limiter, config.redis.as_ref()));
    let redis_settings = config.redis.clone();
    let (shared_cache, shared_max_object) =
        (config.cache.shared, config.cache.shared_max_object as usize);
    let mut sampled = crate::metrics::Sampled::new().counter(
        crate::metrics::names::CACHE_EVICTED_BYTES,
        "Bytes the cache evicted to stay within cache.memory.",
        Box::new(move || cache.evicted_bytes() as f64),
    );
    let shared = limiter.shared_tier();
    sampled = sampled.gauge(
        crate::metrics::names::REDIS_CONNECTED,
        "1 while shared rate limits are decided in Redis (0 without redis: in proxy.yaml).",
        Box::new(move || f64::from(u8::from(shared.as_ref().is_some_and(|s| s.is_connected())))),
    );
    sampled.register();
    crate::limits::init_metrics();
    crate::cache::warm::spawn(&config);
    let source = config.source.clone();
    let snapshots = snapshot::shared(Snapshot::compile(config, 1));

    let cluster = match (limiter.shared_tier(), redis_settings) {
        (Some(shared), Some(r)) => {
            let log = Arc::new(PurgeLog::default());
            if shared_cache {
                cache.store.attach_l2(Arc::new(SharedCache::new(
                    shared.link().clone(),
                    log.clone(),
                    r.timeout.max(L2_BUDGET),
                    shared_max_object,
                )));
            }
            Some(Arc::new(Cluster::new(
                r.node_id,
                shared.link().clone(),
                cache,
                snapshots.clone(),
                r.purge_wait,
                log,
            )))
        }
        _ => None,
    };

    let clients = config_clients;
    let access_log = match AccessLogger::new(&config_access_log) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("error: cannot open the access log: {e}");
            return EXIT_CONFIG;
        }
    };
    let mut http_proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Awning::new(
            snapshots.clone(),
            cache,
            limiter.clone(),
            access_log.clone(),
            cluster.clone(),
        ),
    );
    let mut server_options = HttpServerOptions::default();
    // Pingora counts reuses: the first request is not one.
    server_options.keepalive_request_limit = Some(clients.max_requests_per_connection - 1);
    server_options.h2_idle_timeout = Some(clients.keepalive_timeout);
    http_proxy.server_options = Some(server_options);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE);
    http_proxy.h2_options = Some(h2);
    let mut proxy = Service::new(
        "awning proxy".to_string(),
        Guarded::new(http_proxy, clients, snapshots.clone(), ipv6_prefix),
    );
    for addr in &listen.http {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(client_buffers()));
    }
    for tls in &listen.tls {
        let settings =
            TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy());
        match settings {
            Ok(mut settings) => {
                settings.enable_h2();
                proxy.add_listener(
                    ListenerConfig::tcp(tls.addr.to_string())
                        .tls(settings)
                        .l4_buffer(client_buffers()),
                );
            }
            Err(e) => {
                eprintln!(
                    "error: cannot load the TLS certificate {} / key {}: {e}",
                    tls.cert.display(),
                    tls.key.display()
                );
                return EXIT_CONFIG;
            }
        }
    }
    let proxy_handle = server.add_service(proxy);

    let reloader =
        match Reloader::start(&source, snapshots.clone(), access_log, opts.adjust.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the config reloader: {e}");
                return 1;
            }
        };

    let mut admin = Service::new(
        "awning admin".to_string(),
        HttpServer::new_app(AdminApp::new(
            reloader,
            cache,
            limiter.shared_tier(),
            cluster.clone(),
        )),
    );
    admin.add_tcp(&admin_listen.to_string());
    let admin_handle = server.add_service(admin);
    admin_handle.add_dependency(&proxy_handle);

    let mut metrics = crate::metrics::exporter::service();
    metrics.add_tcp(&metrics_listen.to_string());
    server.add_service(metrics);

    crate::health::HealthMetrics::register(snapshots.clone());
    server.add_service(background_service(
        "active health checks",
        crate::health::ActiveChecks::new(snapshots.clone()),
    ));
    if let Some(shared) = limiter.shared_tier() {
        server.add_service(background_service("redis link", RedisLink(shared)));
    }
    if let Some(cluster) = cluster {
        server.add_service(background_service("cluster", ClusterLink(cluster)));
    }

    extra(&mut server);

    // Last: with `--upgrade` this takes the listeners over and the old process
    // starts to leave, so everything that can fail (TLS keys, the access log,
    // the watcher) has been done above, and a failure leaves the old one serving.
    server.bootstrap();

    lifecycle::notify_ready();
    server.run(RunArgs {
        shutdown_signal: Box::new(lifecycle::Signals {
            grace,
            upgrade_socket,
        }),
    });
    0
}

/// Keeps the node's Redis connection alive.
struct RedisLink(Arc<SharedTier>);

/// Heartbeat and purge fan-out.
struct ClusterLink(Arc<Cluster>);

#[async_trait::async_trait]
impl BackgroundService for ClusterLink {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

#[async_trait::async_trait]
impl BackgroundService for RedisLink {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.maintain(shutdown).await;
    }
}
