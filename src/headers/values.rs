//! Reading request header values that several modules key or decide on:
//! cookies, content codings, headers split over several lines.

use http::HeaderMap;

/// Every `name=value` pair of the request's `Cookie` headers, in order.
fn cookies(req: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    req.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(req: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookies(req).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// How many times cookie `name` appears in the request.
pub fn cookie_count(req: &HeaderMap, name: &str) -> usize {
    cookies(req).filter(|(k, _)| *k == name).count()
}

/// Every value of header `name`, in order, joined: a header split over
/// several lines (h2 splits `Cookie`) must not count by its first line only.
pub fn all_values(req: &HeaderMap, name: &str) -> Vec<u8> {
    let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b", "
    };
    let mut out = Vec::new();
    for (i, v) in req.get_all(name).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Whether an `Accept-Encoding` value accepts `coding` (named, with q > 0).
pub fn accepts_coding(value: Option<&[u8]>, coding: &str) -> bool {
    let Some(v) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        name.eq_ignore_ascii_case(coding) && !q_zero
    })
}
