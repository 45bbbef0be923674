//! Loads `proxy.yaml` and its rule files into a [`Config`], collecting every
//! error (with file, line, column and YAML path) instead of stopping at the first.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::defaults::*;
use super::error::{ConfigError, ConfigErrors, Position, YamlPath};
use super::file::*;
use super::locate::Locator;
use super::units::HumanDuration;
use super::{
    Admin, Cache, CacheKeyRules, CacheMode, Config, HostMatch, LimiterSettings, Listen, Metrics,
    PathMatch, QueryParam, Redis, RedisFallback, RedisServers, Route,
};
use super::{Allow, HealthCheck, ResponseHeaderRules, SlowThresholds, TlsListener, Upstream};
use super::{LimitKey, LimitPolicy, LockoutRule, ReloadSettings, RouteCache, SourceFile, WarmUrl};

/// Reads and validates the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Vec::new();
    let config = load_into(path, &mut errs);
    // Report file by file, top to bottom.
    let mut files: Vec<PathBuf> = Vec::new();
    for e in &errs {
        if !files.contains(&e.file) {
            files.push(e.file.clone());
        }
    }
    errs.sort_by_key(|e| {
        let rank = files.iter().position(|f| *f == e.file);
        (rank, e.position.map(|p| (p.line, p.column)))
    });
    match config {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(ConfigErrors(errs)),
    }
}

/// One parsed YAML file with the positions of its nodes.
pub(super) struct Doc {
    file: PathBuf,
    text: String,
    locator: Locator,
    value: Value,
}

impl Doc {
    fn parse(file: &Path, errs: &mut Vec<ConfigError>) -> Option<Doc> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::file(file, format!("cannot read file: {e}")));
                return None;
            }
        };
        let value: Value = match serde_yaml::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let mut message = e.to_string();
                if let Some(l) = e.location() {
                    let suffix = format!(" at line {} column {}", l.line(), l.column());
                    if let Some(stripped) = message.strip_suffix(&suffix) {
                        message = stripped.to_string();
                    }
                }
                errs.push(ConfigError {
                    file: file.to_path_buf(),
                    position: e.location().map(|l| Position {
                        line: l.line(),
                        column: l.column(),
                    }),
                    path: None,
                    message: format!("invalid YAML: {message}"),
                });
                return None;
            }
        };
        Some(Doc {
            file: file.to_path_buf(),
            locator: Locator::new(&text),
            text,
            value,
        })
    }

    /// An error located at the key (or item) `path` names.
    pub(super) fn at(&self, path: &YamlPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: self.locator.find(path),
            path: Some(path.clone()),
            message: message.into(),
        }
    }

    /// An error located at the value under `path`.
    pub(super) fn at_value(&self, path: &YamlPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            position: self.locator.value(path).or_else(|| self.locator.find(path)),
            ..self.at(path, message)
        }
    }

    pub(super) fn de<T: DeserializeOwned>(
        &self,
        value: &Value,
        at: &YamlPath,
        errs: &mut Vec<ConfigError>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut path = at.clone();
                for seg in e.path().iter() {
                    use serde_path_to_error::Segment;
                    path = match seg {
                        Segment::Seq { index } => path.index(*index),
                        Segment::Map { key } => path.key(key.as_str()),
                        Segment::Enum { variant } => path.key(variant.as_str()),
                        Segment::Unknown => path,
                    };
                }
                let message = e.into_inner().to_string();
                if let Some(field) = unknown_field(&message) {
                    if path.0.last() != Some(&super::error::Seg::Key(field.to_string())) {
                        path = path.key(field);
                    }
                }
                errs.push(self.at(&path, message));
                None
            }
        }
    }

    /// The top-level mapping's entries, reporting keys not in `allowed`.
    fn sections(&self, allowed: &[&str], errs: &mut Vec<ConfigError>) -> HashMap<String, Value> {
        let root = YamlPath::root();
        let mut out = HashMap::new();
        match &self.value {
            Value::Null => {}
            Value::Mapping(map) => {
                for (k, v) in map {
                    let Some(key) = k.as_str() else {
                        errs.push(self.at(&root, "top-level keys must be strings"));
                        continue;
                    };
                    if allowed.contains(&key) {
                        out.insert(key.to_string(), v.clone());
                    } else {
                        errs.push(self.at(
                            &root.key(key),
                            format!("unknown key `{key}`, expected one of {}", list(allowed)),
                        ));
                    }
                }
            }
            _ => errs.push(self.at(&root, "expected a mapping of settings")),
        }
        out
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn load_into(path: &Path, errs: &mut Vec<ConfigError>) -> Option<Config> {
    let doc = Doc::parse(path, errs)?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = YamlPath::root();
    let sections = doc.sections(PROXY_KEYS, errs);
    let section = |name: &str| sections.get(name).filter(|v| !v.is_null());

    let threads = match section("threads") {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(v) => match doc.de::<usize>(v, &root.key("threads"), errs) {
            Some(n) if (1..=256).contains(&n) => n,
            Some(n) => {
                errs.push(doc.at(&root.key("threads"), format!("{n} threads: use 1 to 256")));
                1
            }
            None => 1,
        },
    };

    let mut taken: Vec<(SocketAddr, YamlPath)> = Vec::new();
    let listen = check_listen(&doc, &base, section("listen"), &mut taken, errs);
    let (upstreams, declared) = check_upstreams(&doc, section("upstreams"), errs);
    let admin = check_admin(&doc, &base, section("admin"), &mut taken, errs);
    let metrics = check_metrics(&doc, section("metrics"), &mut taken, errs);
    let cache = check_cache(&doc, section("cache"), errs);
    let redis = section("redis").and_then(|v| check_redis(&doc, &base, v, errs));
    if cache.shared && section("redis").is_none() {
        errs.push(doc.at_value(
            &root.key("cache").key("shared"),
            "cache.shared: redis needs a `redis:` section naming the Redis the nodes share",
        ));
    }
    let limiter = check_limiter(&doc, section("limiter"), errs);
    let response_headers =
        super::hardening::check_response_headers(&doc, section("response_headers"), errs);
    let requests = super::hardening::check_requests(
        &doc,
        section("requests"),
        section("request_headers"),
        errs,
    );
    let clients = super::hardening::check_clients(&doc, section("clients"), errs);
    let access_log = super::hardening::check_access_log(&doc, &base, section("access_log"), errs);
    let shutdown_grace = match section("shutdown_grace") {
        None => DEFAULT_SHUTDOWN_GRACE,
        Some(v) => {
            let at = root.key("shutdown_grace");
            match doc.de::<HumanDuration>(v, &at, errs) {
                Some(d) if d.0 <= Duration::from_secs(3600) => d.0,
                Some(_) => {
                    errs.push(doc.at(&at, "shutdown_grace above 1h; pick something shorter"));
                    DEFAULT_SHUTDOWN_GRACE
                }
                None => DEFAULT_SHUTDOWN_GRACE,
            }
        }
    };

    let mut trusted_proxies = Vec::new();
    if let Some(v) = section("trusted_proxies") {
        let at = root.key("trusted_proxies");
        let list: Vec<String> = doc.de(v, &at, errs).unwrap_or_default();
        for (i, text) in list.iter().enumerate() {
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => errs.push(doc.at_value(
                    &at.index(i),
                    format!("`{text}` is not an address or CIDR block like 10.0.0.0/8"),
                )),
            }
        }
    }

    let patterns: Vec<String> = match section("rules") {
        None => vec![DEFAULT_RULES.to_string()],
        Some(v) => doc.de(v, &root.key("rules"), errs).unwrap_or_default(),
    };
    let explicit = section("rules").is_some();
    let rule_files = expand_rules(&doc, &base, &patterns, explicit, errs);

    let mut routes = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut warm = Vec::new();
    let docs: Vec<Doc> = rule_files
        .iter()
        .filter_map(|f| Doc::parse(f, errs))
        .collect();
    let mut limits = Vec::new();
    let mut declared_limits = Vec::new();
    for rule_doc in &docs {
        check_limits(
            rule_doc,
            section("redis").is_some(),
            &mut limits,
            &mut declared_limits,
            errs,
        );
    }
    let refs = PolicyRefs {
        valid: &limits,
        declared: &declared_limits,
    };
    for rule_doc in &docs {
        check_rule_file(
            rule_doc,
            &response_headers,
            &upstreams,
            &declared,
            &refs,
            &mut names,
            &mut routes,
            errs,
        );
        check_warm(rule_doc, &listen, &mut warm, errs);
    }

    for route in &mut routes {
        route.allow.max_body.get_or_insert(requests.max_body);
    }

    let reload = check_reload(&doc, section("reload"), errs);
    let upgrade_socket = match section("upgrade_socket") {
        None => PathBuf::from(DEFAULT_UPGRADE_SOCKET),
        Some(v) => {
            let at = root.key("upgrade_socket");
            let p: PathBuf = doc.de(v, &at, errs).unwrap_or_default();
            // sun_path holds 108 bytes with its terminating NUL.
            let p = resolve(&base, &p);
            if p.as_os_str().len() > 100 {
                errs.push(doc.at_value(
                    &at,
                    "socket path longer than 100 bytes; Unix sockets cannot use it",
                ));
            }
            p
        }
    };
    let sources = std::iter::once(&doc)
        .chain(docs.iter())
        .map(|d| SourceFile {
            path: d.file.clone(),
            text: d.text.clone(),
        })
        .collect();

    Some(Config {
        source: path.to_path_buf(),
        rule_files,
        threads,
        listen,
        upstreams,
        admin: admin?,
        metrics: metrics?,
        cache,
        redis,
        limiter,
        response_headers,
        requests,
        clients,
        access_log,
        shutdown_grace,
        trusted_proxies,
        routes,
        warm,
        limits,
        reload,
        upgrade_socket,
        sources,
    })
}

fn parse_addr(
    doc: &Doc,
    text: &str,
    at: &YamlPath,
    taken: &mut Vec<(SocketAddr, YamlPath)>,
    errs: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(addr) => {
            if let Some((_, first)) = taken.iter().find(|(a, _)| *a == addr) {
                errs.push(doc.at_value(at, format!("{addr} is already used by {first}")));
            } else {
                taken.push((addr, at.clone()));
            }
            Some(addr)
        }
        Err(_) => {
            errs.push(doc.at_value(
                at,
                format!("`{text}` is not a listen address like 0.0.0.0:8080 or [::]:8080"),
            ));
            None
        }
    }
}

fn check_readable(doc: &Doc, path: &Path, at: &YamlPath, errs: &mut Vec<ConfigError>) -> bool {
    match std::fs::File::open(path) {
        Ok(_) => true,
        Err(e) => {
            errs.push(doc.at_value(at, format!("cannot read {}: {e}", path.display())));
            false
        }
    }
}

fn check_listen(
    doc: &Doc,
    base: &Path,
    value: Option<&Value>,
    taken: &mut Vec<(SocketAddr, YamlPath)>,
    errs: &mut Vec<ConfigError>,
) -> Listen {
    let at = YamlPath::root().key("listen");
    let Some(value) = value else {
        errs.push(doc.at(
            &YamlPath::root(),
            "missing `listen`: add `listen: { http: [\"0.0.0.0:8080\"] }`",
        ));
        return Listen::default();
    };
    let Some(file): Option<FileListen> = doc.de(value, &at, errs) else {
        return Listen::default();
    };
    let mut listen = Listen::default();
    for (i, entry) in file.http.iter().enumerate() {
        let item = at.key("http").index(i);
        let (text, hosts, aat) = match entry {
            FileHttpListener::Addr(a) => (a, None, item.clone()),
            FileHttpListener::Full(f) => (&f.addr, f.hosts.as_ref(), item.key("addr")),
        };
        if let Some(a) = parse_addr(doc, text, &aat, taken, errs) {
            listen.http.push(a);
            if let Some(hosts) = hosts {
                let allowed = listener_hosts(doc, hosts, &item.key("hosts"), errs);
                listen.allowed_hosts.push((a, allowed));
            }
        }
    }
    for (i, tls) in file.tls.iter().enumerate() {
        let item = at.key("tls").index(i);
        let addr = parse_addr(doc, &tls.addr, &item.key("addr"), taken, errs);
        let cert = resolve(base, &tls.cert);
        let key = resolve(base, &tls.key);
        let readable = check_readable(doc, &cert, &item.key("cert"), errs)
            & check_readable(doc, &key, &item.key("key"), errs);
        if readable {
            if let Err(e) = super::tls::check_pair(&cert, &key) {
                errs.push(doc.at_value(&item.key("cert"), e));
            }
        }
        if let Some(addr) = addr {
            listen.tls.push(TlsListener { addr, cert, key });
            if let Some(hosts) = &tls.hosts {
                let allowed = listener_hosts(doc, hosts, &item.key("hosts"), errs);
                listen.allowed_hosts.push((addr, allowed));
            }
        }
    }
    if file.http.is_empty() && file.tls.is_empty() {
        errs.push(doc.at(
            &at,
            "no listener: add `http: [\"0.0.0.0:8080\"]` or a `tls` entry",
        ));
    }
    listen
}

/// A listener's `hosts:` list.
fn listener_hosts(
    doc: &Doc,
    hosts: &[String],
    at: &YamlPath,
    errs: &mut Vec<ConfigError>,
) -> Vec<HostMatch> {
    if hosts.is_empty() {
        errs.push(doc.at(at, "an empty host list answers no request; remove `hosts`"));
    }
    let mut out = Vec::new();
    for (j, h) in hosts.iter().enumerate() {
        match parse_host_match(h) {
            Ok(m) => out.push(m),
            Err(msg) => errs.push(doc.at_value(&at.index(j), msg)),
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The valid upstreams, and the names of every upstream declared (valid or
/// not), so that a route naming a broken upstream is not reported twice.
fn check_upstreams(
    doc: &Doc,
    value: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> (Vec<Upstream>, Vec<String>) {
    let at = YamlPath::root().key("upstreams");
    let mut out = Vec::new();
    let mut declared = Vec::new();
    let Some(value) = value else {
        errs.push(doc.at(
            &YamlPath::root(),
            "missing `upstreams`: name at least one origin group",
        ));
        return (out, declared);
    };
    let Value::Mapping(map) = value else {
        errs.push(doc.at(&at, "expected a mapping of upstream names to settings"));
        return (out, declared);
    };
    for (k, v) in map {
        let name = k.as_str().unwrap_or_default().to_string();
        declared.push(name.clone());
        let item = at.key(name.as_str());
        if !valid_name(&name) {
            errs.push(doc.at(
                &item,
                "upstream names use letters, digits, `-`, `_` and `.`",
            ));
            continue;
        }
        let Some(file): Option<FileUpstream> = doc.de(v, &item, errs) else {
            continue;
        };
        if file.servers.is_empty() {
            errs.push(doc.at(
                &item.key("servers"),
                "an upstream needs at least one server",
            ));
        }
        let mut servers = Vec::new();
        for (i, server) in file.servers.iter().enumerate() {
            let sat = item.key("servers").index(i);
            if !has_port(server) {
                errs.push(doc.at_value(&sat, format!("`{server}` has no port: write host:port")));
                continue;
            }
            match server.to_socket_addrs() {
                Ok(addrs) => {
                    let before = servers.len();
                    for addr in addrs {
                        if !servers.iter().any(|(_, a)| *a == addr) {
                            servers.push((server.clone(), addr));
                        }
                    }
                    if servers.len() == before {
                        errs.push(doc.at_value(&sat, format!("`{server}` resolved to no address")));
                    }
                }
                Err(e) => errs.push(doc.at_value(&sat, format!("cannot resolve `{server}`: {e}"))),
            }
        }
        let mut timeout = |key: &str, v: Option<HumanDuration>, default: Duration| {
            let d = v.map_or(default, |d| d.0);
            if d.is_zero() {
                errs.push(doc.at(&item.key(key), format!("{key} must be above zero")));
            }
            d
        };
        let connect_timeout = timeout(
            "connect_timeout",
            file.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        );
        let read_timeout = timeout("read_timeout", file.read_timeout, DEFAULT_READ_TIMEOUT);
        let write_timeout = timeout("write_timeout", file.write_timeout, DEFAULT_WRITE_TIMEOUT);
        let idle_timeout = timeout("idle_timeout", file.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let fail_timeout = timeout("fail_timeout", file.fail_timeout, DEFAULT_FAIL_TIMEOUT);
        let sni = file.sni.clone().unwrap_or_else(|| {
            file.servers
                .first()
                .map(|s| host_of(s).to_string())
                .unwrap_or_default()
        });
        let health_check = file.health_check.as_ref().and_then(|h| {
            let hat = item.key("health_check");
            if !h.path.starts_with('/') || h.path.contains(char::is_whitespace) {
                errs.push(doc.at_value(
                    &hat.key("path"),
                    format!("`{}` is not a path like /healthz", h.path),
                ));
                return None;
            }
            let interval = h.interval.map_or(DEFAULT_HEALTH_INTERVAL, |d| d.0);
            let check_timeout = h.timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0);
            if interval < Duration::from_millis(100) || check_timeout.is_zero() {
                errs.push(doc.at(
                    &hat,
                    "health_check: `interval` of at least 100ms and a `timeout` above zero",
                ));
                return None;
            }
            Some(HealthCheck {
                path: h.path.clone(),
                interval,
                timeout: check_timeout,
            })
        });
        out.push(Upstream {
            name,
            servers,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            fail_timeout,
            tls: file.tls,
            sni,
            health_check,
        });
    }
    (out, declared)
}

fn has_port(server: &str) -> bool {
    match server.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn check_admin(
    doc: &Doc,
    base: &Path,
    value: Option<&Value>,
    taken: &mut Vec<(SocketAddr, YamlPath)>,
    errs: &mut Vec<ConfigError>,
) -> Option<Admin> {
    let at = YamlPath::root().key("admin");
    let file: FileAdmin = match value {
        None => FileAdmin::default(),
        Some(v) => doc.de(v, &at, errs)?,
    };
    let text = file.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen = parse_addr(doc, text, &at.key("listen"), taken, errs)?;
    let token_file = file.token_file.map(|p| resolve(base, &p));
    if let Some(p) = &token_file {
        match std::fs::read_to_string(p) {
            Ok(t) if t.trim().is_empty() => {
                errs.push(doc.at_value(&at.key("token_file"), format!("{} is empty", p.display())))
            }
            Ok(_) => {}
            Err(e) => errs.push(doc.at_value(
                &at.key("token_file"),
                format!("cannot read {}: {e}", p.display()),
            )),
        }
    }
    Some(Admin { listen, token_file })
}

fn check_metrics(
    doc: &Doc,
    value: Option<&Value>,
    taken: &mut Vec<(SocketAddr, YamlPath)>,
    errs: &mut Vec<ConfigError>,
) -> Option<Metrics> {
    let at = YamlPath::root().key("metrics");
    let file: FileMetrics = match value {
        None => FileMetrics::default(),
        Some(v) => doc.de(v, &at, errs)?,
    };
    let text = file.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
    let listen = parse_addr(doc, text, &at.key("listen"), taken, errs)?;
    Some(Metrics { listen })
}

fn check_cache(doc: &Doc, value: Option<&Value>, errs: &mut Vec<ConfigError>) -> Cache {
    let at = YamlPath::root().key("cache");
    let file: FileCache = value.and_then(|v| doc.de(v, &at, errs)).unwrap_or_default();
    let memory = file.memory.map_or(DEFAULT_CACHE_MEMORY, |s| s.0);
    let max_object = file.max_object.map_or(DEFAULT_CACHE_MAX_OBJECT, |s| s.0);
    if max_object > memory {
        errs.push(doc.at(&at.key("max_object"), "max_object is larger than memory"));
    }
    let names: Vec<String> = file
        .tag_headers
        .unwrap_or_else(|| DEFAULT_TAG_HEADERS.iter().map(|s| s.to_string()).collect());
    let mut tag_headers = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => tag_headers.push(h),
            Err(_) => errs.push(doc.at_value(
                &at.key("tag_headers").index(i),
                format!("`{n}` is not a header name"),
            )),
        }
    }
    let warm_concurrency = file.warm_concurrency.unwrap_or(DEFAULT_WARM_CONCURRENCY);
    if !(1..=64).contains(&warm_concurrency) {
        errs.push(doc.at(&at.key("warm_concurrency"), "warm_concurrency: use 1 to 64"));
    }
    let shared = file.shared == Some(FileSharedCache::Redis);
    let shared_max_object = file
        .shared_max_object
        .map_or(DEFAULT_SHARED_MAX_OBJECT, |s| s.0);
    if shared_max_object > 64 * 1024 * 1024 {
        errs.push(doc.at_value(
            &at.key("shared_max_object"),
            "shared_max_object above 64MiB: Redis is not a store for large objects",
        ));
    }
    Cache {
        memory,
        max_object,
        tag_headers,
        warm_concurrency,
        shared,
        shared_max_object: shared_max_object.min(max_object),
    }
}

fn expand_rules(
    doc: &Doc,
    base: &Path,
    patterns: &[String],
    explicit: bool,
    errs: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let at = YamlPath::root().key("rules").index(i);
        let full = resolve(base, Path::new(pattern));
        let is_glob = pattern.contains(['*', '?', '[']);
        let found: Vec<PathBuf> = if is_glob {
            match glob::glob(&full.to_string_lossy()) {
                Ok(paths) => {
                    let mut v: Vec<PathBuf> = paths
                        .filter_map(Result::ok)
                        .filter(|p| p.is_file())
                        .collect();
                    v.sort();
                    v
                }
                Err(e) => {
                    errs.push(doc.at_value(&at, format!("invalid pattern `{pattern}`: {e}")));
                    continue;
                }
            }
        } else {
            vec![full]
        };
        if found.is_empty() && explicit {
            errs.push(doc.at_value(&at, format!("`{pattern}` matches no file")));
        }
        for f in found {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    files
}

/// The rate-limit policies routes may name.
struct PolicyRefs<'a> {
    valid: &'a [LimitPolicy],
    /// Every policy name declared, valid or not (no second error for a broken one).
    declared: &'a [String],
}

#[allow(clippy::too_many_arguments)]
fn check_rule_file(
    doc: &Doc,
    response_headers: &ResponseHeaderRules,
    upstreams: &[Upstream],
    declared: &[String],
    policies: &PolicyRefs<'_>,
    names: &mut HashMap<String, String>,
    routes: &mut Vec<Route>,
    errs: &mut Vec<ConfigError>,
) {
    let sections = doc.sections(RULE_KEYS, errs);
    let Some(value) = sections.get("routes").filter(|v| !v.is_null()) else {
        return;
    };
    let at = YamlPath::root().key("routes");
    let Value::Sequence(items) = value else {
        errs.push(doc.at(&at, "expected a list of routes"));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let rat = at.index(i);
        let Some(file): Option<FileRoute> = doc.de(item, &rat, errs) else {
            continue;
        };
        let defined_at = match doc.locator.find(&rat) {
            Some(p) => format!("{}:{}", doc.file.display(), p.line),
            None => doc.file.display().to_string(),
        };
        if !valid_name(&file.name) {
            errs.push(doc.at_value(
                &rat.key("name"),
                "route names use letters, digits, `-`, `_` and `.` (at most 64)",
            ));
        } else if let Some(first) = names.get(&file.name) {
            errs.push(doc.at_value(
                &rat.key("name"),
                format!(
                    "duplicate route name `{}` (first defined at {first})",
                    file.name
                ),
            ));
        } else {
            names.insert(file.name.clone(), defined_at.clone());
        }
        let upstream = upstreams.iter().position(|u| u.name == file.upstream);
        if upstream.is_none() && !declared.contains(&file.upstream) {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            errs.push(doc.at_value(
                &rat.key("upstream"),
                format!(
                    "unknown upstream `{}` (defined: {})",
                    file.upstream,
                    list(&known)
                ),
            ));
        }
        let mat = rat.key("match");
        let host = file
            .matcher
            .host
            .as_deref()
            .and_then(|h| match parse_host_match(h) {
                Ok(m) => Some(m),
                Err(msg) => {
                    errs.push(doc.at_value(&mat.key("host"), msg));
                    None
                }
            });
        let path = match (&file.matcher.path, &file.matcher.prefix) {
            (Some(_), Some(_)) => {
                errs.push(doc.at(
                    &mat.key("prefix"),
                    "use either `path` or `prefix`, not both",
                ));
                None
            }
            (Some(p), None) => parse_path_match(p)
                .map_err(|m| errs.push(doc.at_value(&mat.key("path"), m)))
                .ok(),
            (None, Some(p)) if p.starts_with('/') => Some(PathMatch::Prefix(p.clone())),
            (None, Some(p)) => {
                errs.push(doc.at_value(
                    &mat.key("prefix"),
                    format!("prefix `{p}` must start with `/`"),
                ));
                None
            }
            (None, None) => Some(PathMatch::Any),
        };
        let methods = file.matcher.methods.as_ref().map(|list| {
            let mut out = Vec::new();
            for (j, m) in list.iter().enumerate() {
                let valid = !m.is_empty()
                    && m.bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
                match http::Method::from_bytes(m.as_bytes()) {
                    Ok(method) if valid => out.push(method),
                    _ => errs.push(doc.at_value(
                        &mat.key("methods").index(j),
                        format!("`{m}` is not an HTTP method (write it in capitals, like GET)"),
                    )),
                }
            }
            out
        });
        let mut limits = Vec::new();
        for (j, name) in file.limits.iter().enumerate() {
            match policies.valid.iter().position(|p| p.name == *name) {
                Some(i) => limits.push(i),
                None if policies.declared.contains(name) => {}
                None => {
                    let known: Vec<&str> = policies.valid.iter().map(|p| p.name.as_str()).collect();
                    errs.push(doc.at_value(
                        &rat.key("limits").index(j),
                        format!("unknown limit policy `{name}` (defined: {})", list(&known)),
                    ));
                }
            }
        }
        let cache = match &file.cache {
            None => Some(RouteCache::default()),
            Some(c) => check_route_cache(doc, c, &rat.key("cache"), errs),
        };
        let route_headers = match &file.response_headers {
            Some(f) => super::hardening::response_rules(
                doc,
                response_headers,
                f,
                &rat.key("response_headers"),
                false,
                errs,
            ),
            None => response_headers.clone(),
        };
        let mut slow = SlowThresholds::default();
        if let Some(f) = &file.slow {
            slow.warn = f.warn.map_or(slow.warn, |d| d.0);
            slow.critical = f.critical.map_or(slow.critical, |d| d.0);
            if slow.warn.is_zero() || slow.critical < slow.warn {
                errs.push(doc.at(
                    &rat.key("slow"),
                    "slow thresholds: `warn` above zero and `critical` at least `warn`",
                ));
            }
        }
        let allow = file.allow.as_ref().map_or_else(Allow::default, |a| {
            super::hardening::check_allow(doc, a, &rat.key("allow"), errs)
        });
        if let (Some(upstream), Some(path), Some(cache)) = (upstream, path, cache) {
            routes.push(Route {
                name: file.name,
                host,
                path,
                methods,
                upstream,
                defined_at,
                cache,
                compress: file.compress,
                limits,
                response_headers: route_headers,
                allow,
                slow,
            });
        }
    }
}

/// `5/min`, `30/s`, `1000/h`, `10000/d`: requests per window.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let err = || format!("`{text}` is not a rate; write it like 5/min, 30/s, 1000/h or 10000/d");
    let (n, unit) = text.trim().split_once('/').ok_or_else(err)?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    if n == 0 {
        return Err(format!(
            "`{text}`: a rate of zero admits nothing; remove the route instead"
        ));
    }
    let window = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86400),
        _ => return Err(err()),
    };
    Ok((n, window))
}

/// `redis:` in proxy.yaml: exactly one of `url`, `cluster`, `sentinel`.
fn check_redis(doc: &Doc, base: &Path, v: &Value, errs: &mut Vec<ConfigError>) -> Option<Redis> {
    let at = YamlPath::root().key("redis");
    let r: FileRedis = doc.de(v, &at, errs)?;
    let before = errs.len();
    let mut check_url = |url: &str, uat: YamlPath| {
        if url.starts_with("rediss://") {
            errs.push(doc.at_value(
                &uat,
                "TLS to Redis (rediss://) is not supported yet; reach Redis over a private network or a local TLS tunnel",
            ));
            return;
        }
        let scheme_ok = ["redis://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok || redis::IntoConnectionInfo::into_connection_info(url).is_err() {
            errs.push(doc.at_value(
                &uat,
                format!("`{url}` is not a Redis URL like redis://host:6379 or unix:///path"),
            ));
        }
    };
    let servers = match (&r.url, &r.cluster, &r.sentinel) {
        (Some(url), None, None) => {
            check_url(url, at.key("url"));
            RedisServers::Standalone(url.clone())
        }
        (None, Some(nodes), None) if !nodes.is_empty() => {
            for (i, url) in nodes.iter().enumerate() {
                check_url(url, at.key("cluster").index(i));
            }
            RedisServers::Cluster(nodes.clone())
        }
        (None, None, Some(s)) if !s.nodes.is_empty() && !s.master.is_empty() => {
            for (i, url) in s.nodes.iter().enumerate() {
                check_url(url, at.key("sentinel").key("nodes").index(i));
            }
            RedisServers::Sentinel {
                master: s.master.clone(),
                nodes: s.nodes.clone(),
            }
        }
        _ => {
            errs.push(doc.at(
                &at,
                "give exactly one of `url: redis://host:6379`, `cluster: [urls]` or `sentinel: { master: NAME, nodes: [urls] }`",
            ));
            return None;
        }
    };
    let timeout = match r.timeout {
        None => DEFAULT_REDIS_TIMEOUT,
        Some(t) if t.0 >= Duration::from_micros(100) && t.0 <= Duration::from_secs(1) => t.0,
        Some(_) => {
            errs.push(doc.at_value(
                &at.key("timeout"),
                "the latency budget of a decision must be between 100us and 1s",
            ));
            DEFAULT_REDIS_TIMEOUT
        }
    };
    let expected_nodes = match r.expected_nodes {
        None => 1,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            errs.push(doc.at_value(
                &at.key("expected_nodes"),
                format!("expected_nodes {n}: use 1 to 1000"),
            ));
            1
        }
    };
    let key_seed = match &r.key_secret_file {
        None => 0,
        Some(p) => {
            let path = resolve(base, p);
            match std::fs::read(&path) {
                Ok(secret) if !secret.trim_ascii().is_empty() => {
                    xxhash_rust::xxh3::xxh3_64(secret.trim_ascii())
                }
                Ok(_) => {
                    errs.push(doc.at_value(
                        &at.key("key_secret_file"),
                        format!("{} is empty", path.display()),
                    ));
                    0
                }
                Err(e) => {
                    errs.push(doc.at_value(
                        &at.key("key_secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    0
                }
            }
        }
    };
    let node_id = match &r.node_id {
        None => default_node_id(),
        Some(id)
            if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.clone()
        }
        Some(_) => {
            errs.push(doc.at_value(
                &at.key("node_id"),
                "node_id: 1 to 64 visible ASCII characters, no spaces",
            ));
            String::new()
        }
    };
    let purge_wait = match r.purge_wait {
        None => DEFAULT_PURGE_WAIT,
        Some(t) if t.0 <= Duration::from_secs(30) => t.0,
        Some(_) => {
            errs.push(doc.at_value(&at.key("purge_wait"), "purge_wait above 30s"));
            DEFAULT_PURGE_WAIT
        }
    };
    (errs.len() == before).then_some(Redis {
        servers,
        timeout,
        expected_nodes,
        key_seed,
        node_id,
        purge_wait,
    })
}

/// `HOSTNAME:PID`: unique among the nodes of a shop, readable in `/readyz`.
fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "awning".to_string()
    };
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(48)
        .collect();
    format!("{host}:{}", std::process::id())
}

/// `limiter:` in proxy.yaml.
fn check_limiter(doc: &Doc, v: Option<&Value>, errs: &mut Vec<ConfigError>) -> LimiterSettings {
    let mut out = LimiterSettings {
        table_size: DEFAULT_LIMITER_TABLE_SIZE,
        ipv6_prefix: DEFAULT_IPV6_PREFIX,
        json_body: false,
    };
    let at = YamlPath::root().key("limiter");
    let Some(file) = v.and_then(|v| doc.de::<FileLimiter>(v, &at, errs)) else {
        return out;
    };
    match file.table_size {
        None => {}
        Some(n) if (1_000..=100_000_000).contains(&n) => out.table_size = n as usize,
        Some(n) => errs.push(doc.at_value(
            &at.key("table_size"),
            format!("table_size {n}: use 1000 to 100000000 keys"),
        )),
    }
    match file.ipv6_prefix {
        None => {}
        Some(n) if (16..=128).contains(&n) => out.ipv6_prefix = n as u8,
        Some(n) => errs.push(doc.at_value(
            &at.key("ipv6_prefix"),
            format!("ipv6_prefix {n}: use 16 to 128"),
        )),
    }
    out.json_body = file.body == Some(FileDenyBody::Json);
    out
}

fn check_reload(doc: &Doc, v: Option<&Value>, errs: &mut Vec<ConfigError>) -> ReloadSettings {
    let mut out = ReloadSettings {
        watch: true,
        debounce: DEFAULT_RELOAD_DEBOUNCE,
    };
    let at = YamlPath::root().key("reload");
    let Some(file) = v.and_then(|v| doc.de::<FileReload>(v, &at, errs)) else {
        return out;
    };
    out.watch = file.watch.unwrap_or(true);
    match file.debounce {
        None => {}
        Some(d) if d.0 <= Duration::from_secs(5) => out.debounce = d.0,
        Some(_) => errs.push(doc.at_value(
            &at.key("debounce"),
            "debounce above 5s: changes would wait too long to apply",
        )),
    }
    out
}

/// `limits: { name: policy }` in a rule file.
fn check_limits(
    doc: &Doc,
    has_redis: bool,
    out: &mut Vec<LimitPolicy>,
    declared: &mut Vec<String>,
    errs: &mut Vec<ConfigError>,
) {
    let Value::Mapping(root) = &doc.value else {
        return;
    };
    let Some(value) = root.get("limits").filter(|v| !v.is_null()) else {
        return;
    };
    let at = YamlPath::root().key("limits");
    let Value::Mapping(map) = value else {
        errs.push(doc.at(&at, "expected a mapping of policy names to policies"));
        return;
    };
    for (k, v) in map {
        let name = k.as_str().unwrap_or_default().to_string();
        let pat = at.key(name.as_str());
        if !valid_name(&name) {
            errs.push(doc.at(&pat, "policy names use letters, digits, `-`, `_` and `.`"));
            continue;
        }
        if declared.contains(&name) {
            errs.push(doc.at(&pat, format!("limit policy `{name}` is defined twice")));
            continue;
        }
        declared.push(name.clone());
        let Some(file): Option<FileLimit> = doc.de(v, &pat, errs) else {
            continue;
        };
        let before = errs.len();
        let (limit, window) = match parse_rate(&file.rate) {
            Ok(r) => r,
            Err(m) => {
                errs.push(doc.at_value(&pat.key("rate"), m));
                (1, Duration::from_secs(1))
            }
        };
        let burst = match file.burst {
            None => limit,
            Some(b) if (1..=1_000_000).contains(&b) => b as u32,
            Some(b) => {
                errs.push(doc.at_value(&pat.key("burst"), format!("burst {b}: use 1 to 1000000")));
                1
            }
        };
        let shared = file.scope == FileLimitScope::Shared;
        if shared && !has_redis {
            errs.push(doc.at_value(
                &pat.key("scope"),
                "scope `shared` needs `redis:` in proxy.yaml",
            ));
        }
        if !shared && file.on_redis_error.is_some() {
            errs.push(doc.at_value(
                &pat.key("on_redis_error"),
                "on_redis_error applies to `scope: shared` policies only",
            ));
        }
        let mut key = Vec::new();
        for (j, part) in file.key.iter().enumerate() {
            let kat = pat.key("key").index(j);
            let parsed = match part {
                Value::String(s) if s == "client_ip" => Ok(LimitKey::ClientIp),
                Value::String(s) if s == "route" => Ok(LimitKey::Route),
                Value::Mapping(m) if m.len() == 1 => {
                    let (kind, val) = m.iter().next().expect("one entry");
                    match (kind.as_str(), val.as_str()) {
                        (Some("header"), Some(h)) => http::HeaderName::from_bytes(h.as_bytes())
                            .map(LimitKey::Header)
                            .map_err(|_| format!("`{h}` is not a header name")),
                        (Some("cookie"), Some(c))
                            if !c.is_empty() && !c.contains([';', '=', ' ']) =>
                        {
                            Ok(LimitKey::Cookie(c.to_string()))
                        }
                        _ => Err("expected `header: NAME` or `cookie: NAME`".to_string()),
                    }
                }
                _ => Err(
                    "key parts are client_ip, route, `header: NAME` or `cookie: NAME`".to_string(),
                ),
            };
            match parsed {
                Ok(p) => key.push(p),
                Err(m) => errs.push(doc.at_value(&kat, m)),
            }
        }
        if key.is_empty() {
            key.push(LimitKey::ClientIp);
        }
        let lockout = file.lockout.as_ref().and_then(|l| {
            let lat = pat.key("lockout");
            if !(1..=1_000_000).contains(&l.after) {
                errs.push(doc.at_value(
                    &lat.key("after"),
                    format!("after {}: use 1 to 1000000", l.after),
                ));
                return None;
            }
            let max = l.max.map_or(l.duration.0, |m| m.0);
            if l.duration.0.is_zero() || max < l.duration.0 {
                errs.push(doc.at(
                    &lat,
                    "lockout `for` must be above zero and `max` at least `for`",
                ));
                return None;
            }
            Some(LockoutRule {
                after: l.after as u32,
                base: l.duration.0,
                max,
            })
        });
        if errs.len() > before {
            continue;
        }
        let mut policy = LimitPolicy {
            lockout,
            name,
            limit,
            window,
            burst,
            key,
            shadow: file.mode == FileLimitMode::Shadow,
            misses_only: file.count == FileLimitCount::Misses,
            headers_always: file.headers == FileLimitHeaders::Always,
            shared,
            on_redis_error: match file.on_redis_error.unwrap_or_default() {
                FileRedisFallback::Local => RedisFallback::Local,
                FileRedisFallback::Open => RedisFallback::Open,
                FileRedisFallback::Closed => RedisFallback::Closed,
            },
            definition: 0,
        };
        policy.definition = policy.fingerprint();
        out.push(policy);
    }
}

/// `warm: [urls]` in a rule file.
fn check_warm(doc: &Doc, listen: &Listen, out: &mut Vec<WarmUrl>, errs: &mut Vec<ConfigError>) {
    let Value::Mapping(map) = &doc.value else {
        return;
    };
    let Some(value) = map.get("warm").filter(|v| !v.is_null()) else {
        return;
    };
    let at = YamlPath::root().key("warm");
    let Some(urls): Option<Vec<String>> = doc.de(value, &at, errs) else {
        return;
    };
    for (i, text) in urls.iter().enumerate() {
        let uat = at.index(i);
        let parsed = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.host().is_some());
        let Some(uri) = parsed else {
            errs.push(doc.at_value(
                &uat,
                format!("`{text}` is not an absolute URL like https://shop.example.com/"),
            ));
            continue;
        };
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                errs.push(doc.at_value(
                    &uat,
                    format!("`{text}`: warm URLs start with http:// or https://"),
                ));
                continue;
            }
        };
        if tls && listen.tls.is_empty() {
            errs.push(doc.at_value(
                &uat,
                "an https URL is warmed through a TLS listener, and there is none",
            ));
            continue;
        }
        if !tls && listen.http.is_empty() {
            errs.push(doc.at_value(
                &uat,
                "an http URL is warmed through an http listener, and there is none",
            ));
            continue;
        }
        out.push(WarmUrl {
            tls,
            authority: uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            host: uri.host().unwrap_or_default().to_ascii_lowercase(),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        });
    }
}

fn query_param(text: &str) -> QueryParam {
    match text.strip_suffix('*') {
        Some(prefix) => QueryParam::Prefix(prefix.to_string()),
        None => QueryParam::Exact(text.to_string()),
    }
}

fn check_route_cache(
    doc: &Doc,
    c: &FileRouteCache,
    at: &YamlPath,
    errs: &mut Vec<ConfigError>,
) -> Option<RouteCache> {
    let before = errs.len();
    let mode = match c.mode {
        FileCacheMode::Origin => CacheMode::Origin,
        FileCacheMode::Override => CacheMode::Override,
        FileCacheMode::Bypass => CacheMode::Bypass,
    };
    let ttl = c.ttl.map(|d| d.0);
    if mode == CacheMode::Override && ttl.is_none_or(|t| t.is_zero()) {
        errs.push(doc.at(at, "mode `override` needs a `ttl` above zero"));
    }
    if mode != CacheMode::Override && ttl.is_some() {
        errs.push(doc.at(
            &at.key("ttl"),
            "`ttl` applies to mode `override` only (in `origin` mode the origin's headers decide)",
        ));
    }
    let statuses = c
        .statuses
        .clone()
        .unwrap_or_else(|| DEFAULT_CACHE_STATUSES.to_vec());
    for (i, s) in statuses.iter().enumerate() {
        if !(100..=599).contains(s) || (100..200).contains(s) || *s == 206 || *s == 304 {
            errs.push(doc.at_value(
                &at.key("statuses").index(i),
                format!("status {s} cannot be stored"),
            ));
        }
    }
    let k = &c.key;
    if k.only_params.is_some() && !k.drop_params.is_empty() {
        errs.push(doc.at(
            &at.key("key").key("only_params"),
            "use either `only_params` or `drop_params`, not both",
        ));
    }
    let mut headers = Vec::new();
    for (i, h) in k.headers.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => headers.push(n),
            Err(_) => errs.push(doc.at_value(
                &at.key("key").key("headers").index(i),
                format!("`{h}` is not a header name"),
            )),
        }
    }
    for (i, cookie) in k.cookies.iter().chain(c.bypass_cookies.iter()).enumerate() {
        if cookie.is_empty() || cookie.contains([';', '=', ' ', ',']) {
            let field = if i < k.cookies.len() {
                at.key("key").key("cookies").index(i)
            } else {
                at.key("bypass_cookies").index(i - k.cookies.len())
            };
            errs.push(doc.at_value(&field, format!("`{cookie}` is not a cookie name")));
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(RouteCache {
        mode,
        ttl: ttl.unwrap_or_default(),
        negative_ttl: c.negative_ttl.map_or(DEFAULT_NEGATIVE_TTL, |d| d.0),
        stale_while_revalidate: c.stale_while_revalidate.map_or(Duration::ZERO, |d| d.0),
        stale_if_error: c.stale_if_error.map_or(Duration::ZERO, |d| d.0),
        statuses,
        key: CacheKeyRules {
            sort_query: matches!(k.query, FileQueryMode::Sorted),
            drop_params: k.drop_params.iter().map(|p| query_param(p)).collect(),
            only_params: k
                .only_params
                .as_ref()
                .map(|o| o.iter().map(|p| query_param(p)).collect()),
            headers,
            cookies: k.cookies.clone(),
        },
        bypass_cookies: c.bypass_cookies.clone(),
        store_private: c.store_private,
    })
}

/// `shop.example.com` or `*.example.com`; case-insensitive, no port.
pub fn parse_host_match(text: &str) -> Result<HostMatch, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !valid {
        return Err(format!(
            "`{text}` is not a host name (write shop.example.com or *.example.com, without port)"
        ));
    }
    Ok(if wild {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// An exact path, or a glob when it contains `*`, `?`, `[` or `{`
/// (`*` stays within one segment, `**` spans segments).
pub fn parse_path_match(text: &str) -> Result<PathMatch, String> {
    if !text.starts_with('/') {
        return Err(format!("path `{text}` must start with `/`"));
    }
    if !text.contains(['*', '?', '[', '{']) {
        return Ok(PathMatch::Exact(text.to_string()));
    }
    // `/api/products/**` also matches `/api/products` itself, as routers do.
    let expanded;
    let source = match text.strip_suffix("/**") {
        Some(dir) if !dir.is_empty() && !text.contains(['{', '}']) => {
            expanded = format!("{{{dir},{text}}}");
            expanded.as_str()
        }
        _ => text,
    };
    let glob = globset::GlobBuilder::new(source)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid glob `{text}`: {}", e.kind()))?;
    Ok(PathMatch::Glob {
        pattern: text.to_string(),
        matcher: glob.compile_matcher(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_match("Shop.Example.com"),
            Ok(HostMatch::Exact("shop.example.com".into()))
        );
        assert_eq!(
            parse_host_match("*.example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        for bad in [
            "",
            "shop.example.com:8080",
            "a b",
            "*.",
            "ex*ample.com",
            ".x",
        ] {
            assert!(parse_host_match(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_patterns() {
        assert!(matches!(parse_path_match("/cart"), Ok(PathMatch::Exact(p)) if p == "/cart"));
        assert!(matches!(
            parse_path_match("/api/**"),
            Ok(PathMatch::Glob { .. })
        ));
        assert!(parse_path_match("cart").is_err());
        let err = parse_path_match("/api/[").unwrap_err();
        assert!(err.contains("invalid glob"), "{err}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5/min"), Ok((5, Duration::from_secs(60))));
        assert_eq!(parse_rate("30/s"), Ok((30, Duration::from_secs(1))));
        assert_eq!(
            parse_rate(" 1000 / h "),
            Ok((1000, Duration::from_secs(3600)))
        );
        assert_eq!(parse_rate("7/d"), Ok((7, Duration::from_secs(86400))));
        for bad in ["0/min", "-1/s", "5", "5/week", "x/s", "5/"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_addresses_need_ports() {
        assert!(has_port("127.0.0.1:3000"));
        assert!(has_port("[::1]:3000"));
        assert!(has_port("storefront.internal:3000"));
        assert!(!has_port("storefront.internal"));
        assert!(!has_port("::1"));
        assert_eq!(host_of("[::1]:3000"), "::1");
        assert_eq!(host_of("shop.internal:443"), "shop.internal");
    }
}
