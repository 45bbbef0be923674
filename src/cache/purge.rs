//! Purge by URL (every variant), by prefix and by tag; hard (delete) or soft
//! (mark stale so the next request revalidates). Used by the admin API and by
//! unsafe requests that change a resource.

use pingora::cache::eviction::{CacheEntryId, EvictionManager};
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::CacheEntryKeyRef;

use super::key::{self, UrlParts};
use super::{store, CacheEngine};
use crate::routes::{RouteTable, Target};

/// What to purge.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Mark stale instead of deleting.
    #[serde(default)]
    pub soft: bool,
}

/// How many stored objects each kind of selector removed (or expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeCounts {
    pub urls: usize,
    pub prefixes: usize,
    pub tags: usize,
}

impl PurgeCounts {
    pub fn total(&self) -> usize {
        self.urls + self.prefixes + self.tags
    }
}

/// A URL an operator wrote: `https://host[:port]/path?query`, or without a
/// scheme (`host/path`), which means both schemes.
struct ParsedUrl {
    schemes: Vec<bool>,
    host: String,
    port: Option<u16>,
    path: String,
    query: Option<String>,
}

fn parse_url(text: &str) -> Option<ParsedUrl> {
    let (schemes, rest) = if let Some(r) = text.strip_prefix("https://") {
        (vec![true], r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (vec![false], r)
    } else {
        (vec![false, true], text)
    };
    let uri: http::Uri = format!("http://{rest}").parse().ok()?;
    Some(ParsedUrl {
        schemes,
        host: uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port: uri.port_u16(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
    })
}

/// The primary-key hashes a URL stands for (one per scheme), with the key
/// rules of the route that serves it.
/// Whether a GET of `text` could be served from the cache (its route caches).
pub fn url_is_cached(routes: &RouteTable, text: &str) -> bool {
    let Some(u) = parse_url(text) else {
        return false;
    };
    routes
        .find(Target {
            host: Some(&u.host),
            path: &u.path,
            method: &http::Method::GET,
        })
        .is_some_and(|(_, r)| r.cache.mode != crate::config::CacheMode::Bypass)
}

pub fn url_primaries(routes: &RouteTable, text: &str) -> Vec<HashBinary> {
    let Some(u) = parse_url(text) else {
        return Vec::new();
    };
    let route = routes.find(Target {
        host: Some(&u.host),
        path: &u.path,
        method: &http::Method::GET,
    });
    let rules = route.map(|(_, r)| r.cache.key.clone()).unwrap_or_default();
    u.schemes
        .iter()
        .map(|tls| {
            let primary = key::primary(
                UrlParts {
                    tls: *tls,
                    host: &u.host,
                    port: u.port,
                    path: &u.path,
                    query: u.query.as_deref(),
                },
                &rules,
            );
            key::cache_key(primary).primary_bin()
        })
        .collect()
}

pub fn prefix_matches(prefix: &str, url: &str) -> bool {
    if prefix.starts_with("http://") || prefix.starts_with("https://") {
        url.starts_with(prefix)
    } else {
        url.split_once("://")
            .is_some_and(|(_, rest)| rest.starts_with(prefix))
    }
}

impl CacheEngine {
    /// Removes (or expires) every entry `pred` selects; returns how many.
    fn purge_where(&self, soft: bool, pred: impl Fn(&store::Entry) -> bool) -> usize {
        let selected = self.store.select(pred);
        self.purge_slots(soft, selected.iter().map(|(slot, e)| (*slot, Some(e.id))))
    }

    /// Removes (or expires) the given slots; returns how many held an entry.
    fn purge_slots(
        &self,
        soft: bool,
        slots: impl IntoIterator<Item = (HashBinary, Option<u64>)>,
    ) -> usize {
        let mut n = 0;
        for (slot, id) in slots {
            if soft {
                n += usize::from(self.store.expire_entry(&slot));
            } else if let Some(entry) = self.store.remove(&slot, id) {
                self.eviction.remove(CacheEntryKeyRef::from_entry_id(
                    &entry.compact,
                    Some(CacheEntryId::new(entry.id)),
                ));
                n += 1;
            }
        }
        n
    }

    /// Every variant of the URLs with these primary keys (an index lookup, no scan).
    fn purge_primaries(&self, soft: bool, primaries: &[HashBinary]) -> usize {
        let slots: Vec<(HashBinary, Option<u64>)> = primaries
            .iter()
            .flat_map(|p| self.store.slots_of(p))
            .map(|slot| (slot, None))
            .collect();
        self.purge_slots(soft, slots)
    }

    /// Applies a purge request.
    pub fn purge(&self, routes: &RouteTable, req: &PurgeRequest) -> PurgeCounts {
        let primaries: Vec<HashBinary> = req
            .urls
            .iter()
            .flat_map(|u| url_primaries(routes, u))
            .collect();
        PurgeCounts {
            urls: self.purge_primaries(req.soft, &primaries),
            prefixes: if req.prefixes.is_empty() {
                0
            } else {
                self.purge_where(req.soft, |e| {
                    req.prefixes.iter().any(|p| prefix_matches(p, &e.url))
                })
            },
            tags: if req.tags.is_empty() {
                0
            } else {
                self.purge_where(req.soft, |e| e.tags.iter().any(|t| req.tags.contains(t)))
            },
        }
    }

    /// Removes everything (a node that may have missed purges).
    pub fn purge_all(&self) -> usize {
        self.purge_where(false, |_| true)
    }

    /// Removes every variant stored under `primary` (an unsafe request changed it).
    pub fn invalidate_primary(&self, primary: &HashBinary) -> usize {
        self.purge_primaries(false, std::slice::from_ref(primary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_urls_parse_with_or_without_scheme() {
        let u = parse_url("https://Shop.Test:8443/a/b?x=1").unwrap();
        assert_eq!(
            (
                u.schemes,
                u.host.as_str(),
                u.port,
                u.path.as_str(),
                u.query.as_deref()
            ),
            (vec![true], "shop.test", Some(8443), "/a/b", Some("x=1"))
        );
        let u = parse_url("http://[::1]:8080/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(8080)));
        let u = parse_url("shop.test/a").unwrap();
        assert_eq!(u.schemes, vec![false, true]);
        assert!(parse_url("/only/a/path").is_none());
    }

    #[test]
    fn prefixes_match_with_or_without_scheme() {
        assert!(prefix_matches(
            "https://shop.test/api/",
            "https://shop.test/api/products/1"
        ));
        assert!(!prefix_matches(
            "https://shop.test/api/",
            "http://shop.test/api/products/1"
        ));
        assert!(prefix_matches("shop.test/api/", "http://shop.test/api/x"));
        assert!(!prefix_matches("shop.test/api/", "https://shop.test/apix"));
    }
}
