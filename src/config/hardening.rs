//! The edge-hardening settings: response security headers and leak
//! stripping, request header hygiene, request bounds and per-route `allow`,
//! client timeouts and caps, and the access log.

use serde_yaml::Value;

use super::defaults::*;
use super::error::{ConfigError, YamlPath};
use super::file::{
    FileAccessLog, FileAllow, FileClients, FileHeaderRules, FileRequestHeaders, FileRequests,
};
use super::validate::Doc;
use super::{
    AccessLog, Allow, ClientLimits, HeaderMode, HeaderRule, LogSink, NamePattern, RequestBounds,
    ResponseHeaderRules,
};

/// `x-powered-by` or `x-nextjs-*`.
fn name_pattern(text: &str) -> Result<NamePattern, String> {
    let lower = text.trim().to_ascii_lowercase();
    let err = || format!("`{text}` is not a header name (or a prefix ending in `*`)");
    match lower.strip_suffix('*') {
        Some(prefix) if !prefix.is_empty() => {
            http::HeaderName::from_bytes(prefix.as_bytes()).map_err(|_| err())?;
            Ok(NamePattern::Prefix(prefix.to_string()))
        }
        Some(_) => Err(err()),
        None => http::HeaderName::from_bytes(lower.as_bytes())
            .map(NamePattern::Exact)
            .map_err(|_| err()),
    }
}

fn patterns(
    doc: &Doc,
    names: &[String],
    at: &YamlPath,
    errs: &mut Vec<ConfigError>,
) -> Vec<NamePattern> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match name_pattern(n) {
            Ok(p) => out.push(p),
            Err(m) => errs.push(doc.at_value(&at.index(i), m)),
        }
    }
    out
}

/// The built-in security headers and leak list.
pub fn default_response_rules() -> ResponseHeaderRules {
    ResponseHeaderRules {
        rules: DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(name, value, if_absent)| {
                HeaderRule::new(
                    http::HeaderName::from_static(name),
                    Some(http::HeaderValue::from_static(value)),
                    if *if_absent {
                        HeaderMode::SetIfAbsent
                    } else {
                        HeaderMode::Set
                    },
                )
            })
            .collect(),
        strip: DEFAULT_STRIP_RESPONSE
            .iter()
            .map(|n| name_pattern(n).expect("valid default"))
            .collect(),
    }
}

/// `base` with the rules of `file` on top: a header named again replaces
/// the earlier rule, whatever its mode.
pub fn response_rules(
    doc: &Doc,
    base: &ResponseHeaderRules,
    file: &FileHeaderRules,
    at: &YamlPath,
    allow_strip: bool,
    errs: &mut Vec<ConfigError>,
) -> ResponseHeaderRules {
    let mut out = base.clone();
    let mut put = |rule: HeaderRule| {
        out.rules.retain(|r| r.name != rule.name);
        out.rules.push(rule);
    };
    for (mode, key, map) in [
        (HeaderMode::Set, "set", &file.set),
        (
            HeaderMode::SetIfAbsent,
            "set_if_absent",
            &file.set_if_absent,
        ),
    ] {
        for (name, value) in map {
            let nat = at.key(key).key(name.as_str());
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                errs.push(doc.at(&nat, format!("`{name}` is not a header name")));
                continue;
            };
            let Ok(value) = http::HeaderValue::from_str(value) else {
                errs.push(doc.at_value(&nat, "not a valid header value"));
                continue;
            };
            put(HeaderRule::new(name, Some(value), mode));
        }
    }
    for (i, name) in file.remove.iter().enumerate() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => put(HeaderRule::new(name, None, HeaderMode::Remove)),
            Err(_) => errs.push(doc.at_value(
                &at.key("remove").index(i),
                format!("`{name}` is not a header name"),
            )),
        }
    }
    if !file.strip.is_empty() {
        if allow_strip {
            out.strip
                .extend(patterns(doc, &file.strip, &at.key("strip"), errs));
        } else {
            errs.push(doc.at(
                &at.key("strip"),
                "`strip` is set for all routes in proxy.yaml; on a route use `remove`",
            ));
        }
    }
    out
}

/// `response_headers:` in proxy.yaml over the built-in defaults.
pub fn check_response_headers(
    doc: &Doc,
    value: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> ResponseHeaderRules {
    let base = default_response_rules();
    let at = YamlPath::root().key("response_headers");
    match value.and_then(|v| doc.de::<FileHeaderRules>(v, &at, errs)) {
        Some(file) => response_rules(doc, &base, &file, &at, true, errs),
        None => base,
    }
}

/// `requests:` and `request_headers:` in proxy.yaml.
pub fn check_requests(
    doc: &Doc,
    requests: Option<&Value>,
    request_headers: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> RequestBounds {
    let at = YamlPath::root().key("requests");
    let file: FileRequests = requests
        .and_then(|v| doc.de(v, &at, errs))
        .unwrap_or_default();
    let unknown_host = match file.unknown_host {
        None | Some(421) => 421,
        Some(400) => 400,
        Some(n) => {
            errs.push(doc.at_value(
                &at.key("unknown_host"),
                format!("unknown_host {n}: use 421 or 400"),
            ));
            421
        }
    };
    let mut bounds = RequestBounds {
        unknown_host,
        keep_encoded_slashes: file.encoded_slashes == Some(super::file::FileEncodedSlashes::Keep),
        max_body: file.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0),
        max_uri: DEFAULT_MAX_URI,
        max_headers: DEFAULT_MAX_HEADERS,
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        strip: DEFAULT_STRIP_REQUEST
            .iter()
            .map(|n| name_pattern(n).expect("valid default"))
            .collect(),
    };
    if let Some(size) = file.max_uri {
        if (256..=64 * 1024).contains(&size.0) {
            bounds.max_uri = size.0 as usize;
        } else {
            errs.push(doc.at_value(&at.key("max_uri"), "max_uri: use 256B to 64KiB"));
        }
    }
    if let Some(n) = file.max_headers {
        if (8..=256).contains(&n) {
            bounds.max_headers = n as usize;
        } else {
            errs.push(doc.at_value(&at.key("max_headers"), "max_headers: use 8 to 256"));
        }
    }
    if let Some(size) = file.max_header_bytes {
        if (1024..=64 * 1024).contains(&size.0) {
            bounds.max_header_bytes = size.0 as usize;
        } else {
            errs.push(doc.at_value(
                &at.key("max_header_bytes"),
                "max_header_bytes: use 1KiB to 64KiB",
            ));
        }
    }
    let hat = YamlPath::root().key("request_headers");
    if let Some(file) = request_headers.and_then(|v| doc.de::<FileRequestHeaders>(v, &hat, errs)) {
        bounds
            .strip
            .extend(patterns(doc, &file.strip, &hat.key("strip"), errs));
    }
    bounds
}

/// A route's `allow:`.
pub fn check_allow(
    doc: &Doc,
    file: &FileAllow,
    at: &YamlPath,
    errs: &mut Vec<ConfigError>,
) -> Allow {
    let methods = file.methods.as_ref().map(|list| {
        let mut out = Vec::new();
        for (j, m) in list.iter().enumerate() {
            let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            match http::Method::from_bytes(m.as_bytes()) {
                Ok(method) if valid => out.push(method),
                _ => errs.push(doc.at_value(
                    &at.key("methods").index(j),
                    format!("`{m}` is not an HTTP method (write it in capitals, like POST)"),
                )),
            }
        }
        out
    });
    let content_types = file.content_types.as_ref().map(|list| {
        let mut out = Vec::new();
        for (j, t) in list.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            let valid = match t.split_once('/') {
                Some((a, b)) => {
                    !a.is_empty() && !b.is_empty() && !t.contains([';', ' ', ',']) && a != "*"
                }
                None => false,
            };
            if valid {
                out.push(t);
            } else {
                errs.push(doc.at_value(
                    &at.key("content_types").index(j),
                    format!("`{t}` is not a media type like application/json or text/*"),
                ));
            }
        }
        out
    });
    Allow {
        methods,
        max_body: file.max_body.map(|s| s.0),
        content_types,
    }
}

/// `clients:` in proxy.yaml.
pub fn check_clients(
    doc: &Doc,
    value: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> ClientLimits {
    let at = YamlPath::root().key("clients");
    let file: FileClients = value.and_then(|v| doc.de(v, &at, errs)).unwrap_or_default();
    let mut duration =
        |v: Option<super::units::HumanDuration>, key: &str, default, max_secs| match v {
            None => default,
            Some(d)
                if d.0 >= std::time::Duration::from_millis(100)
                    && d.0 <= std::time::Duration::from_secs(max_secs) =>
            {
                d.0
            }
            Some(_) => {
                errs.push(doc.at_value(&at.key(key), format!("{key}: use 100ms to {max_secs}s")));
                default
            }
        };
    let header_timeout = duration(
        file.header_timeout,
        "header_timeout",
        DEFAULT_HEADER_TIMEOUT,
        300,
    );
    let body_timeout = duration(
        file.body_timeout,
        "body_timeout",
        DEFAULT_BODY_TIMEOUT,
        3600,
    );
    let write_timeout = duration(
        file.write_timeout,
        "write_timeout",
        DEFAULT_WRITE_TIMEOUT_CLIENT,
        3600,
    );
    let keepalive_timeout = duration(
        file.keepalive_timeout,
        "keepalive_timeout",
        DEFAULT_KEEPALIVE_TIMEOUT,
        3600,
    );
    let mut count = |v: Option<i64>, key: &str, default: usize, max: i64| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n as usize,
        Some(n) => {
            errs.push(doc.at_value(&at.key(key), format!("{key} {n}: use 1 to {max}")));
            default
        }
    };
    ClientLimits {
        header_timeout,
        body_timeout,
        write_timeout,
        keepalive_timeout,
        max_requests_per_connection: count(
            file.max_requests_per_connection,
            "max_requests_per_connection",
            DEFAULT_MAX_REQUESTS_PER_CONNECTION as usize,
            1_000_000,
        ) as u32,
        max_connections: count(
            file.max_connections,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
            1_000_000,
        ),
        max_connections_per_ip: count(
            file.max_connections_per_ip,
            "max_connections_per_ip",
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            100_000,
        ),
    }
}

/// `access_log:` in proxy.yaml (default: stdout, no query, every hit).
pub fn check_access_log(
    doc: &Doc,
    base: &std::path::Path,
    value: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> AccessLog {
    let at = YamlPath::root().key("access_log");
    let file: FileAccessLog = value.and_then(|v| doc.de(v, &at, errs)).unwrap_or_default();
    let to = match file.to.as_deref() {
        None | Some("stdout") => LogSink::Stdout,
        Some("stderr") => LogSink::Stderr,
        Some("off") => LogSink::Off,
        Some(path) => {
            let path = base.join(path);
            let writable = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            if let Err(e) = writable {
                errs.push(doc.at_value(
                    &at.key("to"),
                    format!("cannot write {}: {e}", path.display()),
                ));
            }
            LogSink::File(path)
        }
    };
    let hit_sample = match file.hit_sample {
        None => 1.0,
        Some(r) if (0.0..=1.0).contains(&r) => r,
        Some(r) => {
            errs.push(doc.at_value(
                &at.key("hit_sample"),
                format!("hit_sample {r}: use a share from 0.0 to 1.0"),
            ));
            1.0
        }
    };
    AccessLog {
        to,
        query: file.query.unwrap_or(false),
        hit_sample,
    }
}
