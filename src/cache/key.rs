//! Cache keys. The primary key is the normalised URL (scheme, lower-case host,
//! non-default port, path, query as the route's rules shape it); purge builds
//! it with the same function. Per-route extra parts (a header, a cookie) and
//! the origin's `Vary` go into the variance, so a purge by URL reaches every
//! variant.

use http::HeaderMap;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::CacheKey;
use pingora::cache::VarianceBuilder;

use crate::config::{CacheKeyRules, QueryParam};
use crate::headers::values::{accepts_coding, all_values, cookie_value};

/// What identifies a resource.
#[derive(Clone, Copy, Debug)]
pub struct UrlParts<'a> {
    pub tls: bool,
    /// Lower-case, without port.
    pub host: &'a str,
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

fn param_matches(pattern: &QueryParam, name: &str) -> bool {
    match pattern {
        QueryParam::Exact(p) => p == name,
        QueryParam::Prefix(p) => name.starts_with(p.as_str()),
    }
}

/// The query string as the route's rules shape it (`None` when empty).
pub fn normalize_query(query: Option<&str>, rules: &CacheKeyRules) -> Option<String> {
    let query = query.filter(|q| !q.is_empty())?;
    if !rules.sort_query && rules.drop_params.is_empty() && rules.only_params.is_none() {
        return Some(query.to_string());
    }
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            let dropped = rules.drop_params.iter().any(|d| param_matches(d, name));
            let kept = rules
                .only_params
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| param_matches(o, name)));
            kept && !dropped
        })
        .collect();
    if rules.sort_query {
        // By name only, and stable: repeated names (`ids[]=3&ids[]=1`) keep
        // their order, which the origin may depend on.
        pairs.sort_by(|a, b| a.split('=').next().cmp(&b.split('=').next()));
    }
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// The cache key of a primary key, carrying its hash: Pingora and the store
/// each ask for it on every request, and without the override each would run
/// blake2 again (about 2k instructions a time).
pub fn cache_key(primary: String) -> CacheKey {
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(key.primary_bin());
    key
}

/// The primary key: `scheme://host[:port]path[?query]`.
pub fn primary(url: UrlParts<'_>, rules: &CacheKeyRules) -> String {
    let scheme = if url.tls { "https" } else { "http" };
    let default_port = if url.tls { 443 } else { 80 };
    let mut key =
        String::with_capacity(16 + url.host.len() + url.path.len() + url.query.map_or(0, str::len));
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(url.host);
    if let Some(p) = url.port.filter(|p| *p != default_port) {
        key.push(':');
        key.push_str(&p.to_string());
    }
    key.push_str(url.path);
    if let Some(q) = normalize_query(url.query, rules) {
        key.push('?');
        key.push_str(&q);
    }
    key
}

/// `Accept-Encoding` reduced to what a variant can differ by.
pub fn accept_encoding_bucket(value: Option<&[u8]>) -> &'static str {
    if accepts_coding(value, "br") {
        "br"
    } else if accepts_coding(value, "gzip") {
        "gzip"
    } else {
        "identity"
    }
}

/// The variance of a request: the route's extra key parts plus the request
/// headers the stored response's `Vary` names. `None` when nothing varies.
pub fn variance(rules: &CacheKeyRules, vary: &[String], req: &HeaderMap) -> Option<HashBinary> {
    if rules.headers.is_empty() && rules.cookies.is_empty() && vary.is_empty() {
        return None;
    }
    let mut b = VarianceBuilder::new();
    for name in &rules.headers {
        b.add_owned_name_value(
            format!("key-header:{}", name.as_str()),
            all_values(req, name.as_str()),
        );
    }
    for cookie in &rules.cookies {
        let v = cookie_value(req, cookie).unwrap_or("").as_bytes().to_vec();
        b.add_owned_name_value(format!("key-cookie:{cookie}"), v);
    }
    for name in vary {
        let value = all_values(req, name);
        let v = if name == "accept-encoding" {
            let present = req.contains_key(name.as_str());
            accept_encoding_bucket(present.then_some(&value[..]))
                .as_bytes()
                .to_vec()
        } else {
            value
        };
        b.add_owned_name_value(format!("vary:{name}"), v);
    }
    b.finalize()
}

/// The header names a response's `Vary` lists, lower-case, sorted, deduplicated.
/// `*` is returned as is (such responses are never stored).
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::values::cookie_count;

    fn rules(sort: bool, drop: &[&str], only: Option<&[&str]>) -> CacheKeyRules {
        let p = |s: &&str| match s.strip_suffix('*') {
            Some(prefix) => QueryParam::Prefix(prefix.to_string()),
            None => QueryParam::Exact(s.to_string()),
        };
        CacheKeyRules {
            sort_query: sort,
            drop_params: drop.iter().map(p).collect(),
            only_params: only.map(|o| o.iter().map(p).collect()),
            headers: Vec::new(),
            cookies: Vec::new(),
        }
    }

    fn url<'a>(
        tls: bool,
        host: &'a str,
        port: Option<u16>,
        path: &'a str,
        query: Option<&'a str>,
    ) -> UrlParts<'a> {
        UrlParts {
            tls,
            host,
            port,
            path,
            query,
        }
    }

    #[test]
    fn primary_keys_normalise_scheme_host_and_port() {
        let r = CacheKeyRules::default();
        let cases = [
            (
                url(false, "shop.test", None, "/a", None),
                "http://shop.test/a",
            ),
            (
                url(false, "shop.test", Some(80), "/a", None),
                "http://shop.test/a",
            ),
            (
                url(true, "shop.test", Some(443), "/a", Some("x=1")),
                "https://shop.test/a?x=1",
            ),
            (
                url(true, "shop.test", Some(8443), "/a", Some("")),
                "https://shop.test:8443/a",
            ),
            (
                url(false, "shop.test", Some(443), "/a", None),
                "http://shop.test:443/a",
            ),
        ];
        for (u, want) in cases {
            assert_eq!(primary(u, &r), want);
        }
    }

    #[test]
    fn query_rules_sort_drop_and_keep_only() {
        let q = Some("utm_source=x&b=2&a=1&fbclid=z&utm_medium=y");
        assert_eq!(normalize_query(q, &rules(false, &[], None)).as_deref(), q);
        assert_eq!(
            normalize_query(q, &rules(true, &[], None)).as_deref(),
            Some("a=1&b=2&fbclid=z&utm_medium=y&utm_source=x")
        );
        assert_eq!(
            normalize_query(q, &rules(true, &["utm_*", "fbclid"], None)).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            normalize_query(q, &rules(false, &[], Some(&["b"]))).as_deref(),
            Some("b=2")
        );
        assert_eq!(
            normalize_query(Some("utm_x=1"), &rules(false, &["utm_*"], None)),
            None
        );
    }

    #[test]
    fn sorting_keeps_repeated_parameters_in_order() {
        let q = Some("ids[]=3&b=1&ids[]=1&a=x");
        assert_eq!(
            normalize_query(q, &rules(true, &[], None)).as_deref(),
            Some("a=x&b=1&ids[]=3&ids[]=1")
        );
    }

    #[test]
    fn accept_encoding_buckets() {
        let cases: [(Option<&str>, &str); 6] = [
            (None, "identity"),
            (Some("gzip, deflate, br"), "br"),
            (Some("gzip"), "gzip"),
            (Some("GZIP;q=0.5"), "gzip"),
            (Some("br;q=0, gzip"), "gzip"),
            (Some("deflate, *"), "identity"),
        ];
        for (v, want) in cases {
            assert_eq!(accept_encoding_bucket(v.map(str::as_bytes)), want, "{v:?}");
        }
    }

    #[test]
    fn variance_follows_vary_and_extra_parts() {
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", "gzip, br".parse().unwrap());
        a.insert("cookie", "currency=EUR; session=abc".parse().unwrap());
        let mut b = a.clone();
        b.insert("accept-encoding", "br".parse().unwrap());
        let vary = vec!["accept-encoding".to_string()];
        let none = CacheKeyRules::default();
        assert_eq!(variance(&none, &[], &a), None);
        assert_eq!(
            variance(&none, &vary, &a),
            variance(&none, &vary, &b),
            "same bucket"
        );
        let mut c = a.clone();
        c.insert("accept-encoding", "gzip".parse().unwrap());
        assert_ne!(variance(&none, &vary, &a), variance(&none, &vary, &c));

        let mut by_cookie = CacheKeyRules::default();
        by_cookie.cookies.push("currency".into());
        let mut usd = a.clone();
        usd.insert("cookie", "currency=USD; session=abc".parse().unwrap());
        assert_ne!(
            variance(&by_cookie, &[], &a),
            variance(&by_cookie, &[], &usd)
        );
        let mut other_session = a.clone();
        other_session.insert("cookie", "currency=EUR; session=zzz".parse().unwrap());
        assert_eq!(
            variance(&by_cookie, &[], &a),
            variance(&by_cookie, &[], &other_session)
        );
    }

    #[test]
    fn every_line_of_a_varied_header_counts() {
        let vary = vec!["cookie".to_string()];
        let none = CacheKeyRules::default();
        let mut a = HeaderMap::new();
        a.append("cookie", "consent=1".parse().unwrap());
        a.append("cookie", "user=alice".parse().unwrap());
        let mut b = HeaderMap::new();
        b.append("cookie", "consent=1".parse().unwrap());
        b.append("cookie", "user=bob".parse().unwrap());
        assert_ne!(variance(&none, &vary, &a), variance(&none, &vary, &b));
        assert_eq!(cookie_count(&a, "user"), 1);
        let mut dup = HeaderMap::new();
        dup.append("cookie", "currency=EUR; currency=USD".parse().unwrap());
        assert_eq!(cookie_count(&dup, "currency"), 2);
    }

    #[test]
    fn vary_names_are_normalised() {
        let mut h = HeaderMap::new();
        h.append("vary", "Accept-Encoding, Accept-Language".parse().unwrap());
        h.append("vary", "accept-encoding".parse().unwrap());
        assert_eq!(vary_names(&h), vec!["accept-encoding", "accept-language"]);
    }
}
