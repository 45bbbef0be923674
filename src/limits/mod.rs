//! Rate limiting: per-policy keys (client IP, route, header, cookie), an exact
//! GCRA decision in a bounded in-process table, and the `RateLimit` /
//! `RateLimit-Policy` / `Retry-After` fields clients are told.

pub mod gcra;
pub mod lockout;

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::{LimitKey, LimitPolicy};
pub use gcra::{Decision, Quota, Table};

/// Keys held across all local policies unless configured otherwise.
pub const DEFAULT_TABLE_SIZE: usize = 1_000_000;

/// The local (in-process) tier.
pub struct Limiter {
    table: Table,
    lockouts: lockout::Lockouts,
    epoch: Instant,
    hasher: std::collections::hash_map::RandomState,
}

/// What a request brings to key a policy.
#[derive(Clone, Copy, Debug)]
pub struct KeySource<'a> {
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub headers: &'a HeaderMap,
}

/// The client address as a key: IPv6 clients are grouped by /64, the block a
/// single customer usually holds.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

impl Limiter {
    pub fn new(table_size: usize) -> Self {
        Self {
            table: Table::new(table_size),
            lockouts: lockout::Lockouts::new(table_size / 4),
            epoch: Instant::now(),
            hasher: Default::default(),
        }
    }

    /// Keys held.
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// The hashed key of a request for `policy`. Key values are hashed with a
    /// per-process seed, never kept or logged. A missing header or cookie
    /// falls back to the client address, never to "unlimited".
    pub fn key(&self, policy: &LimitPolicy, src: KeySource<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        policy.name.hash(&mut h);
        let ip = src.client_ip.map(ip_key);
        for part in &policy.key {
            match part {
                LimitKey::ClientIp => ("ip", ip).hash(&mut h),
                LimitKey::Route => ("route", src.route).hash(&mut h),
                LimitKey::Header(name) => match src.headers.get(name) {
                    Some(v) => ("header", v.as_bytes()).hash(&mut h),
                    None => ("ip", ip).hash(&mut h),
                },
                LimitKey::Cookie(name) => {
                    match crate::headers::values::cookie_value(src.headers, name) {
                        Some(v) => ("cookie", v).hash(&mut h),
                        None => ("ip", ip).hash(&mut h),
                    }
                }
            }
        }
        h.finish()
    }

    /// Takes one request from `policy`'s bucket for `key`. A key locked out
    /// is refused without touching its bucket; a denial may start a lockout.
    pub fn check(&self, policy: &LimitPolicy, key: u64) -> Decision {
        let now = self.epoch.elapsed().as_nanos() as u64;
        if policy.lockout.is_some() {
            if let Some(left) = self.lockouts.locked(key, now) {
                return Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after: left,
                    reset_after: left,
                };
            }
        }
        let quota = Quota {
            interval: policy.window / policy.limit.max(1),
            burst: policy.burst,
        };
        let d = self.table.check(key, quota, now);
        match policy.lockout {
            Some(rule) if !d.allowed => match self.lockouts.deny(key, rule, now) {
                Some(length) => Decision {
                    retry_after: length,
                    reset_after: length,
                    ..d
                },
                None => d,
            },
            _ => d,
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
pub fn header_values(policy: &LimitPolicy, d: &Decision) -> (String, String) {
    let interval = policy.window / policy.limit.max(1);
    let window = ceil_secs(interval.saturating_mul(policy.burst)).max(1);
    (
        format!("\"{}\";q={};w={}", policy.name, policy.burst, window),
        format!(
            "\"{}\";r={};t={}",
            policy.name,
            d.remaining,
            ceil_secs(d.reset_after)
        ),
    )
}

/// `Retry-After` in whole seconds, never 0 for a denial.
pub fn retry_after_secs(d: &Decision) -> u64 {
    ceil_secs(d.retry_after).max(1)
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
        }
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn missing_key_parts_fall_back_to_the_client() {
        let l = Limiter::new(1000);
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
    fn headers_follow_the_draft_syntax() {
        let p = policy(vec![LimitKey::ClientIp]);
        let d = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_millis(11_200),
            reset_after: Duration::from_secs(60),
        };
        assert_eq!(
            header_values(&p, &d),
            (
                "\"auth\";q=5;w=60".to_string(),
                "\"auth\";r=0;t=60".to_string()
            )
        );
        assert_eq!(retry_after_secs(&d), 12);
    }
}
