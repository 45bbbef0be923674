//! Whether and how long a response may be stored: RFC 9111 for a shared cache
//! in `origin` mode, the route's TTL in `override` mode, and the rules that
//! keep one customer's response from reaching another in every mode.

use std::time::{Duration, SystemTime};

use http::header;
use pingora::cache::cache_control::CacheControl;
use pingora::http::ResponseHeader;

use crate::config::{CacheMode, RouteCache};

/// The outcome for one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Store {
        /// Already subtracted the upstream `Age`; zero means stored stale
        /// (revalidated before each use).
        fresh_for: Duration,
        stale_while_revalidate: Duration,
        stale_if_error: Duration,
        /// The route opted in to storing a response with `Set-Cookie`: the
        /// stored copy loses it.
        strip_set_cookie: bool,
    },
    /// Not stored, with the reason (for `Cache-Status: detail=`).
    Skip(&'static str),
}

/// Request facts that matter for storing.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts {
    pub authorization: bool,
}

/// The field aimed at caches like awning: `CDN-Cache-Control`, else
/// `Surrogate-Control`. When present it wins over `Cache-Control` (RFC 9213).
fn cdn_targeted(resp: &ResponseHeader) -> Option<CacheControl> {
    CacheControl::from_resp_headers_named("cdn-cache-control", resp)
        .or_else(|| CacheControl::from_resp_headers_named("surrogate-control", resp))
}

fn header_time(resp: &ResponseHeader, name: header::HeaderName) -> Option<Result<SystemTime, ()>> {
    let v = resp.headers.get(name)?;
    Some(
        v.to_str()
            .map_err(|_| ())
            .and_then(|s| httpdate::parse_http_date(s.trim()).map_err(|_| ())),
    )
}

/// The upstream `Age` in seconds; an invalid value is ignored (RFC 9111 §5.1).
fn upstream_age(resp: &ResponseHeader) -> Duration {
    resp.headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn secs(v: u32) -> Duration {
    Duration::from_secs(u64::from(v))
}

/// Freshness lifetime from the origin's headers: `s-maxage`, `max-age`, then
/// `Expires` (an invalid `Expires` is already expired). `None`: no explicit
/// freshness (awning applies no heuristic).
fn origin_lifetime(
    cc: Option<&CacheControl>,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(cc) = cc {
        // An invalid delta is treated as stale rather than ignored.
        match cc.s_maxage() {
            Ok(Some(s)) => return Some(secs(s)),
            Ok(None) => {}
            Err(_) => return Some(Duration::ZERO),
        }
        match cc.max_age() {
            Ok(Some(s)) => return Some(secs(s)),
            Ok(None) => {}
            Err(_) => return Some(Duration::ZERO),
        }
    }
    match header_time(resp, header::EXPIRES)? {
        Err(()) => Some(Duration::ZERO),
        Ok(expires) => {
            let date = match header_time(resp, header::DATE) {
                Some(Ok(d)) => d,
                _ => now,
            };
            Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
        }
    }
}

/// Whether any `Vary` value is `*`.
pub fn vary_star(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim() == "*")
}

/// Decides whether `resp` may be stored under `policy`.
pub fn decide(
    policy: &RouteCache,
    req: RequestFacts,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Decision {
    if policy.mode == CacheMode::Bypass {
        return Decision::Skip("bypass");
    }
    if !policy.statuses.contains(&resp.status.as_u16()) {
        return Decision::Skip("status");
    }
    if vary_star(resp) {
        return Decision::Skip("vary-star");
    }
    let general = CacheControl::from_resp_headers(resp);
    let for_cdn = cdn_targeted(resp);
    let cc = for_cdn.as_ref().or(general.as_ref());
    // `private` anywhere (also in Cache-Control when a CDN field is present)
    // marks a customer's own response.
    let private_anywhere = [&general, &for_cdn]
        .iter()
        .any(|c| c.as_ref().is_some_and(|c| c.private()));
    let set_cookie = resp.headers.contains_key(header::SET_COOKIE);
    if !policy.store_private {
        if cc.is_some_and(|c| c.no_store()) {
            return Decision::Skip("no-store");
        }
        if private_anywhere {
            return Decision::Skip("private");
        }
        if set_cookie {
            return Decision::Skip("set-cookie");
        }
    }
    if req.authorization {
        let allowed = cc.is_some_and(|c| {
            c.public() || c.must_revalidate() || matches!(c.s_maxage(), Ok(Some(_)))
        });
        if !allowed {
            return Decision::Skip("authorization");
        }
    }

    let negative = matches!(resp.status.as_u16(), 404 | 410);
    let (fresh_for, swr, sie) = match policy.mode {
        CacheMode::Override => {
            let ttl = if negative {
                policy.negative_ttl.min(policy.ttl)
            } else {
                policy.ttl
            };
            (ttl, policy.stale_while_revalidate, policy.stale_if_error)
        }
        CacheMode::Origin => {
            let Some(lifetime) = origin_lifetime(cc, resp, now) else {
                return Decision::Skip("no-freshness");
            };
            let no_cache = cc.is_some_and(|c| c.no_cache());
            let fresh = if no_cache {
                Duration::ZERO
            } else {
                lifetime.saturating_sub(upstream_age(resp))
            };
            // must-revalidate, proxy-revalidate and s-maxage forbid serving stale.
            let strict = cc.is_some_and(|c| {
                c.must_revalidate() || c.proxy_revalidate() || matches!(c.s_maxage(), Ok(Some(_)))
            });
            if strict || no_cache {
                (fresh, Duration::ZERO, Duration::ZERO)
            } else {
                let directive = |v: pingora::Result<Option<u32>>| v.ok().flatten().map(secs);
                let swr = cc
                    .as_ref()
                    .and_then(|c| directive(c.stale_while_revalidate()));
                let sie = cc.and_then(|c| directive(c.stale_if_error()));
                (
                    fresh,
                    swr.unwrap_or(policy.stale_while_revalidate),
                    sie.unwrap_or(policy.stale_if_error),
                )
            }
        }
        CacheMode::Bypass => unreachable!("handled above"),
    };
    Decision::Store {
        fresh_for,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        strip_set_cookie: set_cookie,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults::DEFAULT_CACHE_STATUSES;

    fn policy(mode: CacheMode) -> RouteCache {
        RouteCache {
            mode,
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(30),
            stale_while_revalidate: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(3600),
            statuses: DEFAULT_CACHE_STATUSES.to_vec(),
            ..RouteCache::default()
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh(d: &Decision) -> Option<u64> {
        match d {
            Decision::Store { fresh_for, .. } => Some(fresh_for.as_secs()),
            Decision::Skip(_) => None,
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn date(offset: i64) -> String {
        httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs((NOW as i64 + offset) as u64),
        )
    }

    #[test]
    fn origin_mode_freshness_follows_rfc_9111() {
        let p = policy(CacheMode::Origin);
        let no_auth = RequestFacts::default();
        let d = |h: &[(&str, &str)]| decide(&p, no_auth, &resp(200, h), now());
        assert_eq!(fresh(&d(&[("cache-control", "max-age=60")])), Some(60));
        assert_eq!(
            fresh(&d(&[("cache-control", "max-age=60, s-maxage=300")])),
            Some(300)
        );
        assert_eq!(
            fresh(&d(&[("cache-control", "max-age=60"), ("age", "20")])),
            Some(40)
        );
        assert_eq!(
            fresh(&d(&[("cache-control", "max-age=60"), ("age", "junk")])),
            Some(60)
        );
        assert_eq!(
            fresh(&d(&[("cache-control", "max-age=10"), ("age", "99")])),
            Some(0)
        );
        assert_eq!(
            fresh(&d(&[("expires", &date(120)), ("date", &date(0))])),
            Some(120)
        );
        assert_eq!(
            fresh(&d(&[("expires", "0")])),
            Some(0),
            "invalid Expires is already expired"
        );
        assert_eq!(fresh(&d(&[("cache-control", "max-age=abc")])), Some(0));
        assert_eq!(
            fresh(&d(&[("cache-control", "no-cache, max-age=600")])),
            Some(0)
        );
        assert_eq!(
            d(&[]),
            Decision::Skip("no-freshness"),
            "no heuristic freshness"
        );
        assert_eq!(
            d(&[("cache-control", "public")]),
            Decision::Skip("no-freshness")
        );
        assert_eq!(
            fresh(&d(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=30")
            ])),
            Some(30),
            "CDN-Cache-Control wins over Cache-Control"
        );
        assert_eq!(
            fresh(&d(&[
                ("cache-control", "max-age=5"),
                ("surrogate-control", "max-age=90")
            ])),
            Some(90)
        );
        assert_eq!(
            d(&[
                ("cdn-cache-control", "no-store"),
                ("cache-control", "max-age=60")
            ]),
            Decision::Skip("no-store")
        );
    }

    #[test]
    fn stale_windows_from_directives_or_route() {
        let p = policy(CacheMode::Origin);
        let d = |h: &[(&str, &str)]| decide(&p, RequestFacts::default(), &resp(200, h), now());
        let windows = |dec: Decision| match dec {
            Decision::Store {
                stale_while_revalidate,
                stale_if_error,
                ..
            } => (stale_while_revalidate.as_secs(), stale_if_error.as_secs()),
            Decision::Skip(r) => panic!("skipped: {r}"),
        };
        assert_eq!(
            windows(d(&[(
                "cache-control",
                "max-age=60, stale-while-revalidate=5, stale-if-error=7"
            )])),
            (5, 7)
        );
        assert_eq!(
            windows(d(&[("cache-control", "max-age=60")])),
            (60, 3600),
            "route defaults"
        );
        assert_eq!(
            windows(d(&[("cache-control", "max-age=60, must-revalidate")])),
            (0, 0)
        );
        assert_eq!(
            windows(d(&[("cache-control", "max-age=60, proxy-revalidate")])),
            (0, 0)
        );
        assert_eq!(
            windows(d(&[(
                "cache-control",
                "s-maxage=60, stale-while-revalidate=30"
            )])),
            (0, 0)
        );
    }

    #[test]
    fn never_stores_what_belongs_to_one_customer() {
        for mode in [CacheMode::Origin, CacheMode::Override] {
            let p = policy(mode);
            let d = |h: &[(&str, &str)], auth: bool| {
                decide(
                    &p,
                    RequestFacts {
                        authorization: auth,
                    },
                    &resp(200, h),
                    now(),
                )
            };
            assert_eq!(
                d(&[("cache-control", "private, max-age=60")], false),
                Decision::Skip("private")
            );
            assert_eq!(
                d(&[("cache-control", "no-store")], false),
                Decision::Skip("no-store")
            );
            assert_eq!(
                d(
                    &[("cache-control", "max-age=60"), ("set-cookie", "session=1")],
                    false
                ),
                Decision::Skip("set-cookie")
            );
            assert_eq!(
                d(
                    &[
                        ("cdn-cache-control", "max-age=60"),
                        ("cache-control", "private")
                    ],
                    false
                ),
                Decision::Skip("private"),
                "private in Cache-Control still counts"
            );
            assert_eq!(
                d(&[("cache-control", "max-age=60")], true),
                Decision::Skip("authorization")
            );
            assert!(fresh(&d(&[("cache-control", "public, max-age=60")], true)).is_some());
            assert!(fresh(&d(&[("cache-control", "s-maxage=60")], true)).is_some());
            assert_eq!(
                d(
                    &[("cache-control", "max-age=60"), ("vary", "Accept, *")],
                    false
                ),
                Decision::Skip("vary-star")
            );
        }
    }

    #[test]
    fn opting_in_stores_private_responses_without_their_cookie() {
        let mut p = policy(CacheMode::Override);
        p.store_private = true;
        let d = decide(
            &p,
            RequestFacts::default(),
            &resp(200, &[("set-cookie", "a=1"), ("cache-control", "private")]),
            now(),
        );
        assert!(
            matches!(
                d,
                Decision::Store {
                    strip_set_cookie: true,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn override_mode_uses_route_ttls_and_statuses() {
        let p = policy(CacheMode::Override);
        let d = |status: u16, h: &[(&str, &str)]| {
            decide(&p, RequestFacts::default(), &resp(status, h), now())
        };
        assert_eq!(fresh(&d(200, &[("cache-control", "max-age=5")])), Some(600));
        assert_eq!(fresh(&d(200, &[])), Some(600));
        assert_eq!(fresh(&d(404, &[])), Some(30));
        assert_eq!(fresh(&d(410, &[])), Some(30));
        assert_eq!(
            d(500, &[("cache-control", "max-age=60")]),
            Decision::Skip("status")
        );
        assert_eq!(d(206, &[]), Decision::Skip("status"));
        assert_eq!(
            decide(
                &policy(CacheMode::Bypass),
                RequestFacts::default(),
                &resp(200, &[]),
                now()
            ),
            Decision::Skip("bypass")
        );
    }
}
