//! The configuration as `GET /config` shows it: the files as read (parsed,
//! secrets redacted) and a digest of what they resolved to.

use serde_json::{json, Value};

use super::{CacheMode, Config, RedisServers};

const REDACTED: &str = "<redacted>";

/// Keys whose values are secrets wherever they appear.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "password" || k == "token" || k == "secret" || k.ends_with("_password")
}

/// `redis://user:pass@host` -> `redis://user:<redacted>@host`.
fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:{REDACTED}@{host}{tail}")
        }
        None => text.to_string(),
    }
}

fn redact(value: &mut Value) {
    match value {
        Value::String(s) => *s = redact_url(s),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        _ => {}
    }
}

/// Each file of `config` as JSON, secrets redacted.
pub fn files(config: &Config) -> Vec<Value> {
    config
        .sources
        .iter()
        .map(|f| {
            let mut doc = serde_yaml::from_str::<Value>(&f.text).unwrap_or(Value::Null);
            redact(&mut doc);
            json!({ "path": f.path, "content": doc })
        })
        .collect()
}

/// What the files resolved to, defaults included: listeners, upstream
/// addresses, routes in match order, limit policies.
pub fn effective(config: &Config) -> Value {
    let redis = config.redis.as_ref().map(|r| match &r.servers {
        RedisServers::Standalone(url) => json!({ "url": redact_url(url) }),
        RedisServers::Cluster(urls) => {
            json!({ "cluster": urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>() })
        }
        RedisServers::Sentinel { master, nodes } => json!({
            "sentinel": { "master": master, "nodes": nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>() }
        }),
    });
    json!({
        "threads": config.threads,
        "listen": {
            "http": config.listen.http,
            "tls": config.listen.tls.iter().map(|t| t.addr).collect::<Vec<_>>(),
        },
        "admin": config.admin.listen,
        "metrics": config.metrics.listen,
        "cache": { "memory": config.cache.memory, "max_object": config.cache.max_object },
        "redis": redis,
        "upstreams": config.upstreams.iter().map(|u| json!({
            "name": u.name,
            "servers": u.servers.iter().map(|(label, addr)| json!({ "server": label, "addr": addr })).collect::<Vec<_>>(),
            "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
            "read_timeout_ms": u.read_timeout.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "routes": config.routes.iter().map(|r| json!({
            "name": r.name,
            "defined_at": r.defined_at,
            "upstream": config.upstreams.get(r.upstream).map(|u| u.name.as_str()),
            "cache": match r.cache.mode {
                CacheMode::Origin => "origin",
                CacheMode::Override => "override",
                CacheMode::Bypass => "bypass",
            },
            "ttl_s": r.cache.ttl.as_secs_f64(),
            "limits": r.limits.iter().filter_map(|i| config.limits.get(*i)).map(|p| p.name.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "limits": config.limits.iter().map(|p| json!({
            "name": p.name,
            "limit": p.limit,
            "window_s": p.window.as_secs_f64(),
            "burst": p.burst,
            "shared": p.shared,
            "shadow": p.shadow,
        })).collect::<Vec<_>>(),
        "reload": { "watch": config.reload.watch, "debounce_ms": config.reload.debounce.as_millis() as u64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_and_secret_keys_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:<redacted>@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:pw@redis.internal"),
            "rediss://app:<redacted>@redis.internal"
        );
        assert_eq!(redact_url("redis://10.0.0.5:6379"), "redis://10.0.0.5:6379");
        assert_eq!(redact_url("/shop/*"), "/shop/*");
        let mut doc = json!({
            "redis": { "url": "redis://u:p@h", "password": "x" },
            "admin": { "token_file": "/etc/awning/token" },
            "list": ["redis://:s@h:1"]
        });
        redact(&mut doc);
        assert_eq!(doc["redis"]["url"], "redis://u:<redacted>@h");
        assert_eq!(doc["redis"]["password"], REDACTED);
        assert_eq!(doc["admin"]["token_file"], "/etc/awning/token");
        assert_eq!(doc["list"][0], "redis://:<redacted>@h:1");
    }
}
