//! Rate limiting: per-policy keys (client IP, route, header, cookie), exact
//! GCRA decisions in a bounded in-process table (`local`) or in Redis across
//! nodes (`shared`, falling back to local when Redis fails), and the
//! `RateLimit` / `RateLimit-Policy` / `Retry-After` fields clients are told.

pub mod gcra;
pub mod local;
pub mod lockout;
pub mod shared;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use pingora::http::ResponseHeader;
use pingora_prometheus::prometheus::IntCounterVec;

use crate::config::{LimitKey, LimitPolicy, LimiterSettings, Redis, RedisFallback};
use crate::metrics::{self, names};
pub use gcra::{Decision, Quota, Table};
use local::LocalTier;
use shared::SharedTier;

/// Where a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Local,
    Shared,
    /// A shared policy decided without Redis (`on_redis_error`).
    Fallback,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Shared => "shared",
            Tier::Fallback => "fallback",
        }
    }
}

/// A decision and the quota it was made against (smaller than the policy's
/// when a node decides a shared policy alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub quota: Quota,
    pub tier: Tier,
}

/// Both tiers, and how requests are keyed.
pub struct Limiter {
    local: LocalTier,
    shared: Option<Arc<SharedTier>>,
    expected_nodes: u32,
    key_seed: u64,
    ipv6_prefix: u8,
    hasher: std::collections::hash_map::RandomState,
}

/// What a request brings to key a policy.
#[derive(Clone, Copy, Debug)]
pub struct KeySource<'a> {
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub headers: &'a HeaderMap,
}

/// The client address as a key: IPv6 clients are grouped by `v6_prefix`
/// bits (default /64, the block a single customer usually holds).
pub fn ip_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let host_bits = 128 - u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        names::RATELIMIT_DECISIONS,
        "Rate-limit decisions by policy, tier (local, shared, fallback) and decision (allow, deny, shadow_deny, lockout).",
        &["policy", "tier", "decision"],
    )
});

static REDIS_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        names::RATELIMIT_REDIS_FAILURES,
        "Shared rate-limit decisions Redis could not make, by reason (unavailable, timeout, error).",
        &["reason"],
    )
});

/// Creates the Redis failure series at zero (dashboards see them before the
/// first failure).
pub fn init_metrics() {
    for reason in ["unavailable", "timeout", "error"] {
        REDIS_FAILURES.with_label_values(&[reason]);
    }
}

/// The word for a decision in metrics and the access log: `allow`, `deny`,
/// `shadow_deny` (shadow mode let it pass) or `lockout` (refused by a
/// brute-force lockout).
pub fn decision_label(d: &Decision, shadow: bool) -> &'static str {
    match (d.allowed, shadow, d.locked) {
        (true, _, _) => "allow",
        (false, true, _) => "shadow_deny",
        (false, false, true) => "lockout",
        (false, false, false) => "deny",
    }
}

/// The policy's bucket: `burst` at once, one more every `window / limit`.
pub fn policy_quota(policy: &LimitPolicy) -> Quota {
    Quota {
        interval: policy.window / policy.limit.max(1),
        burst: policy.burst,
    }
}

/// One node's share of a quota meant for `nodes` nodes together.
pub fn node_share(quota: Quota, nodes: u32) -> Quota {
    let nodes = nodes.max(1);
    Quota {
        interval: quota.interval.saturating_mul(nodes),
        burst: (quota.burst / nodes).max(1),
    }
}

impl Limiter {
    pub fn new(settings: &LimiterSettings, redis: Option<&Redis>) -> Self {
        Self {
            local: LocalTier::new(settings.table_size),
            shared: redis.map(|r| Arc::new(SharedTier::new(r))),
            expected_nodes: redis.map_or(1, |r| r.expected_nodes),
            key_seed: redis.map_or(0, |r| r.key_seed),
            ipv6_prefix: settings.ipv6_prefix,
            hasher: Default::default(),
        }
    }

    /// The shared tier, whose connection a background task keeps.
    pub fn shared_tier(&self) -> Option<Arc<SharedTier>> {
        self.shared.clone()
    }

    /// Keys held by the local tier.
    pub fn keys(&self) -> usize {
        self.local.keys()
    }

    /// Takes one request from `policy`'s bucket for the request's key, in
    /// Redis for shared policies (falling back as the policy says when Redis
    /// cannot decide in time), in process otherwise. Counted in metrics.
    pub async fn decide(&self, policy: &LimitPolicy, src: KeySource<'_>) -> Verdict {
        let quota = policy_quota(policy);
        let verdict = match (&self.shared, policy.shared) {
            (Some(shared), true) => {
                let key = self.shared_key(policy, src);
                match shared
                    .check(&policy.name, &key, quota, policy.lockout)
                    .await
                {
                    Ok(decision) => Verdict {
                        decision,
                        quota,
                        tier: Tier::Shared,
                    },
                    Err(failure) => {
                        REDIS_FAILURES.with_label_values(&[failure.as_str()]).inc();
                        self.fallback(policy, src, quota)
                    }
                }
            }
            _ => Verdict {
                decision: self
                    .local
                    .check(self.key(policy, src), quota, policy.lockout),
                quota,
                tier: Tier::Local,
            },
        };
        DECISIONS
            .with_label_values(&[
                policy.name.as_str(),
                verdict.tier.as_str(),
                decision_label(&verdict.decision, policy.shadow),
            ])
            .inc();
        verdict
    }

    /// A local decision, in the same tables and with the same key as local
    /// policies use.
    pub fn decide_locally(&self, policy: &LimitPolicy, src: KeySource<'_>) -> Decision {
        self.local
            .check(self.key(policy, src), policy_quota(policy), policy.lockout)
    }

    fn fallback(&self, policy: &LimitPolicy, src: KeySource<'_>, quota: Quota) -> Verdict {
        let share = node_share(quota, self.expected_nodes);
        let decision = match policy.on_redis_error {
            RedisFallback::Local => self
                .local
                .check(self.key(policy, src), share, policy.lockout),
            RedisFallback::Open => Decision {
                allowed: true,
                remaining: share.burst,
                retry_after: Duration::ZERO,
                reset_after: Duration::ZERO,
                locked: false,
            },
            RedisFallback::Closed => Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_secs(1),
                reset_after: Duration::from_secs(1),
                locked: false,
            },
        };
        Verdict {
            decision,
            quota: share,
            tier: Tier::Fallback,
        }
    }

    /// The hashed key of a request for `policy`, seeded per process: key
    /// values are never kept or logged.
    pub fn key(&self, policy: &LimitPolicy, src: KeySource<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        self.write_key(policy, src, &mut h);
        h.finish()
    }

    /// The key a shared policy uses in Redis: the same on every node (a
    /// 128-bit hash, hex, seeded by `redis.key_secret_file`), never the raw
    /// values.
    pub fn shared_key(&self, policy: &LimitPolicy, src: KeySource<'_>) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.key_seed);
        self.write_key(policy, src, &mut h);
        format!("{:032x}", h.digest128())
    }

    /// Feeds the policy's key parts to `h`, each length-prefixed so that no
    /// two different keys feed the same bytes. A missing header or cookie
    /// falls back to the client address, never to "unlimited".
    fn write_key(&self, policy: &LimitPolicy, src: KeySource<'_>, h: &mut impl Hasher) {
        fn part(h: &mut impl Hasher, kind: u8, value: &[u8]) {
            h.write_u8(kind);
            h.write(&(value.len() as u64).to_le_bytes());
            h.write(value);
        }
        let ip = src.client_ip.map(|ip| ip_key(ip, self.ipv6_prefix));
        let ip_bytes = match ip {
            Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
            Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
            None => Vec::new(),
        };
        part(h, b'p', policy.name.as_bytes());
        // A changed policy starts with fresh buckets; an unchanged one keeps
        // its counters across a reload.
        h.write_u64(policy.definition);
        for k in &policy.key {
            match k {
                LimitKey::ClientIp => part(h, b'i', &ip_bytes),
                LimitKey::Route => part(h, b'r', src.route.as_bytes()),
                LimitKey::Header(name) => match src.headers.get(name) {
                    Some(v) => part(h, b'h', v.as_bytes()),
                    None => part(h, b'i', &ip_bytes),
                },
                LimitKey::Cookie(name) => {
                    match crate::headers::values::cookie_value(src.headers, name) {
                        Some(v) => part(h, b'c', v.as_bytes()),
                        None => part(h, b'i', &ip_bytes),
                    }
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `RateLimit-Policy` and `RateLimit` values (draft-ietf-httpapi-ratelimit-headers):
/// `"auth";q=5;w=60` and `"auth";r=0;t=12`. The quota advertised is the bucket:
/// `burst` requests per the time it takes to earn `burst` back, so `r` never
/// exceeds `q`.
pub fn header_values(name: &str, quota: Quota, d: &Decision) -> (String, String) {
    let window = ceil_secs(quota.interval.saturating_mul(quota.burst)).max(1);
    (
        format!("\"{}\";q={};w={}", name, quota.burst, window),
        format!(
            "\"{}\";r={};t={}",
            name,
            d.remaining,
            ceil_secs(d.reset_after)
        ),
    )
}

/// `Retry-After` in whole seconds, never 0 for a denial.
pub fn retry_after_secs(d: &Decision) -> u64 {
    ceil_secs(d.retry_after).max(1)
}

static RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
static RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// Adds the `RateLimit-Policy` and `RateLimit` fields to an answer.
pub fn add_headers(resp: &mut ResponseHeader, policy_value: &str, limit_value: &str) {
    let _ = resp.insert_header(RATELIMIT_POLICY.clone(), policy_value);
    let _ = resp.insert_header(RATELIMIT.clone(), limit_value);
}

/// The 429 for a denial by `policy`: `Retry-After`, the `RateLimit` fields
/// and a short text or JSON body.
pub fn denial(policy: &str, v: &Verdict, json: bool) -> (ResponseHeader, Bytes) {
    let retry = retry_after_secs(&v.decision);
    let (mut resp, body) = crate::headers::response::error_page(429);
    let body = if json {
        let body = Bytes::from(
            serde_json::json!({
                "error": "rate_limited",
                "policy": policy,
                "retry_after": retry,
            })
            .to_string(),
        );
        let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        body
    } else {
        body
    };
    let _ = resp.insert_header(http::header::RETRY_AFTER, retry.to_string());
    let (policy_value, limit_value) = header_values(policy, v.quota, &v.decision);
    add_headers(&mut resp, &policy_value, &limit_value);
    (resp, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: Vec<LimitKey>) -> LimitPolicy {
        LimitPolicy {
            name: "auth".into(),
            limit: 5,
            window: Duration::from_secs(60),
            burst: 5,
            key,
            shadow: false,
            misses_only: false,
            headers_always: false,
            lockout: None,
            shared: false,
            on_redis_error: RedisFallback::Local,
            definition: 0,
        }
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a, 64), ip_key(b, 64));
        assert_ne!(ip_key(a, 64), ip_key(c, 64));
        assert_eq!(ip_key(a, 48), ip_key(c, 48));
        assert_eq!(ip_key(a, 128), a);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped, 64), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn missing_key_parts_fall_back_to_the_client() {
        let l = Limiter::new(
            &LimiterSettings {
                table_size: 1000,
                ipv6_prefix: 64,
                json_body: false,
            },
            None,
        );
        let p = policy(vec![LimitKey::Cookie("session".into())]);
        let mut with = HeaderMap::new();
        with.insert("cookie", "session=abc".parse().unwrap());
        let none = HeaderMap::new();
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let k = |ip, h| {
            l.key(
                &p,
                KeySource {
                    client_ip: Some(ip),
                    route: "r",
                    headers: h,
                },
            )
        };
        assert_eq!(
            k(ip1, &with),
            k(ip2, &with),
            "one session from two addresses"
        );
        assert_ne!(k(ip1, &none), k(ip2, &none), "no session: per address");
    }

    #[test]
    fn a_million_distinct_clients_stay_within_the_configured_table() {
        let settings = LimiterSettings {
            table_size: 10_000,
            ipv6_prefix: 64,
            json_body: false,
        };
        let l = Limiter::new(&settings, None);
        let p = policy(vec![LimitKey::ClientIp]);
        let headers = HeaderMap::new();
        for n in 0..1_000_000u32 {
            let src = KeySource {
                client_ip: Some(IpAddr::from(n.to_be_bytes())),
                route: "r",
                headers: &headers,
            };
            assert!(l.decide_locally(&p, src).allowed, "a new client is allowed");
        }
        assert!(l.keys() <= settings.table_size, "{} keys held", l.keys());
    }

    #[test]
    fn shared_keys_agree_across_nodes_and_depend_on_the_secret() {
        let settings = LimiterSettings {
            table_size: 1000,
            ipv6_prefix: 64,
            json_body: false,
        };
        let redis = |key_seed| Redis {
            servers: crate::config::RedisServers::Standalone("redis://x".into()),
            timeout: Duration::from_millis(5),
            expected_nodes: 1,
            key_seed,
            node_id: "n".into(),
            purge_wait: Duration::from_secs(1),
        };
        let headers = HeaderMap::new();
        let src = KeySource {
            client_ip: Some("192.0.2.1".parse().unwrap()),
            route: "r",
            headers: &headers,
        };
        let p = policy(vec![LimitKey::ClientIp]);
        let key = |seed| Limiter::new(&settings, Some(&redis(seed))).shared_key(&p, src);
        assert_eq!(key(7), key(7), "two nodes, one secret: one key");
        assert_ne!(key(7), key(8));
        assert_eq!(key(7).len(), 32);
    }

    #[test]
    fn a_node_alone_allows_its_share() {
        let q = Quota {
            interval: Duration::from_secs(6),
            burst: 10,
        };
        assert_eq!(
            node_share(q, 2),
            Quota {
                interval: Duration::from_secs(12),
                burst: 5
            }
        );
        assert_eq!(node_share(q, 1), q);
        assert_eq!(node_share(q, 50).burst, 1, "never zero");
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let p = policy(vec![LimitKey::ClientIp]);
        let d = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_millis(11_200),
            reset_after: Duration::from_secs(60),
            locked: false,
        };
        assert_eq!(
            header_values(&p.name, policy_quota(&p), &d),
            (
                "\"auth\";q=5;w=60".to_string(),
                "\"auth\";r=0;t=60".to_string()
            )
        );
        assert_eq!(retry_after_secs(&d), 12);
    }
}
