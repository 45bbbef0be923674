//! The `Cache-Status` response field (RFC 9211) for what the cache did.

use std::time::SystemTime;

use pingora::cache::CachePhase;

/// What the request's cache handling came to, for one `Cache-Status` value.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub phase: CachePhase,
    /// Seconds of freshness left (negative when stale), when a stored object was used.
    pub ttl: Option<i64>,
    /// The response fetched on this request was stored.
    pub stored: bool,
    /// Why it was not looked up or stored.
    pub detail: Option<&'static str>,
    /// The request waited for another request's fill.
    pub collapsed: bool,
}

/// One word for what the cache did, for logs and metric labels.
pub fn label(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "hit",
        CachePhase::StaleUpdating => "stale",
        CachePhase::Stale => "stale_if_error",
        CachePhase::Miss => "miss",
        CachePhase::Expired => "expired",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        _ => "bypass",
    }
}

/// Remaining freshness of an object, in whole seconds.
pub fn ttl_of(fresh_until: SystemTime, now: SystemTime) -> i64 {
    match fresh_until.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// Renders the field value, e.g. `awning; hit; ttl=42` or `awning; fwd=miss; stored`.
pub fn render(o: &Outcome) -> String {
    let mut v = String::from("awning");
    let stale_hit = |v: &mut String, detail: &str| {
        v.push_str("; hit");
        if let Some(t) = o.ttl {
            v.push_str(&format!("; ttl={t}"));
        }
        v.push_str("; detail=");
        v.push_str(detail);
    };
    match o.phase {
        CachePhase::Hit => {
            v.push_str("; hit");
            if let Some(t) = o.ttl {
                v.push_str(&format!("; ttl={t}"));
            }
        }
        CachePhase::StaleUpdating => stale_hit(&mut v, "stale-while-revalidate"),
        CachePhase::Stale => stale_hit(&mut v, "stale-if-error"),
        CachePhase::Miss => v.push_str("; fwd=miss"),
        CachePhase::Expired => v.push_str("; fwd=stale; fwd-status=200"),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            v.push_str("; fwd=stale; fwd-status=304")
        }
        _ => v.push_str("; fwd=bypass"),
    }
    if o.collapsed {
        v.push_str("; collapsed");
    }
    if o.stored {
        v.push_str("; stored");
    }
    let is_stale_hit = matches!(o.phase, CachePhase::StaleUpdating | CachePhase::Stale);
    if let (Some(d), false) = (o.detail, is_stale_hit) {
        v.push_str("; detail=");
        v.push_str(d);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn out(phase: CachePhase) -> Outcome {
        Outcome {
            phase,
            ttl: None,
            stored: false,
            detail: None,
            collapsed: false,
        }
    }

    #[test]
    fn renders_each_phase() {
        let cases = [
            (
                Outcome {
                    ttl: Some(42),
                    ..out(CachePhase::Hit)
                },
                "awning; hit; ttl=42",
            ),
            (
                Outcome {
                    stored: true,
                    ..out(CachePhase::Miss)
                },
                "awning; fwd=miss; stored",
            ),
            (
                Outcome {
                    detail: Some("private"),
                    ..out(CachePhase::Miss)
                },
                "awning; fwd=miss; detail=private",
            ),
            (
                Outcome {
                    stored: true,
                    collapsed: true,
                    ..out(CachePhase::Miss)
                },
                "awning; fwd=miss; collapsed; stored",
            ),
            (
                Outcome {
                    ttl: Some(-3),
                    ..out(CachePhase::StaleUpdating)
                },
                "awning; hit; ttl=-3; detail=stale-while-revalidate",
            ),
            (
                Outcome {
                    ttl: Some(-9),
                    ..out(CachePhase::Stale)
                },
                "awning; hit; ttl=-9; detail=stale-if-error",
            ),
            (
                out(CachePhase::Revalidated),
                "awning; fwd=stale; fwd-status=304",
            ),
            (
                Outcome {
                    stored: true,
                    ..out(CachePhase::Expired)
                },
                "awning; fwd=stale; fwd-status=200; stored",
            ),
            (
                Outcome {
                    detail: Some("bypass-cookie"),
                    ..out(CachePhase::Bypass)
                },
                "awning; fwd=bypass; detail=bypass-cookie",
            ),
        ];
        for (o, want) in cases {
            assert_eq!(render(&o), want);
        }
    }

    #[test]
    fn ttl_is_signed_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(ttl_of(now + Duration::from_secs(30), now), 30);
        assert_eq!(ttl_of(now - Duration::from_millis(2500), now), -3);
    }
}
