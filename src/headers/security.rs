//! Edge hygiene: the security headers answers get, origin headers that must
//! not leak, client headers the storefront must be able to trust, request
//! bounds, per-route `allow`, and the request id.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, STRICT_TRANSPORT_SECURITY, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::{Allow, HeaderMode, NamePattern, RequestBounds, ResponseHeaderRules};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Strips leaking origin headers and applies the security header rules.
/// HSTS only reaches clients that used https: browsers ignore it over http,
/// and a shop reachable over plain http on purpose must not be pinned.
pub fn apply_response_rules(resp: &mut ResponseHeader, rules: &ResponseHeaderRules, https: bool) {
    finish_answer(resp, rules, https, None);
}

/// The response rules and the request id, in one pass over the header map.
pub fn finish_answer(
    resp: &mut ResponseHeader,
    rules: &ResponseHeaderRules,
    https: bool,
    request_id: Option<&HeaderValue>,
) {
    edit_headers(resp, |headers| {
        apply_rules_to(headers, rules, https);
        if let Some(id) = request_id {
            headers.insert(X_REQUEST_ID.clone(), id.clone());
        }
    });
}

/// Runs `edit` on the answer's header map itself. Pingora's `insert_header`
/// parses the name again and writes a second, case-preserving map on every
/// call; this hit-path work was a tenth of a cached answer's instructions
/// (benches/PROFILE.md). The map is handed back without the case map, so the
/// names go out as `http` spells them (field names are case-insensitive; h2
/// sends them in lower case anyway), and the reason phrase is the standard one.
fn edit_headers(resp: &mut ResponseHeader, edit: impl FnOnce(&mut http::HeaderMap)) {
    let placeholder = ResponseHeader::build_no_case(resp.status, Some(0))
        .expect("a status taken from a response header is valid");
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
}

fn apply_rules_to(headers: &mut http::HeaderMap, rules: &ResponseHeaderRules, https: bool) {
    for name in matching_names(headers, &rules.strip) {
        headers.remove(&name);
    }
    for rule in &rules.rules {
        match (rule.mode, &rule.value) {
            (HeaderMode::Remove, _) | (_, None) => {
                headers.remove(&rule.name);
            }
            _ if rule.name == STRICT_TRANSPORT_SECURITY && !https => {}
            (HeaderMode::SetIfAbsent, _) if headers.contains_key(&rule.name) => {}
            (HeaderMode::Set | HeaderMode::SetIfAbsent, Some(value)) => {
                headers.insert(rule.name.clone(), value.clone());
            }
        }
    }
}

/// Removes the headers clients may not send unless they are trusted proxies.
pub fn strip_untrusted(req: &mut RequestHeader, bounds: &RequestBounds) {
    for name in matching_names(&req.headers, &bounds.strip) {
        req.remove_header(&name);
    }
}

/// The names in `headers` that one of `patterns` matches (collected: the
/// map is changed after).
fn matching_names(headers: &http::HeaderMap, patterns: &[NamePattern]) -> Vec<HeaderName> {
    if patterns.is_empty() {
        return Vec::new();
    }
    headers
        .keys()
        .filter(|n| patterns.iter().any(|p| p.matches(n)))
        .cloned()
        .collect()
}

/// Why a request was refused before reaching the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    UriTooLong,
    TooManyHeaders,
    HeadersTooLarge,
    MethodNotAllowed,
    BodyTooLarge,
    UnsupportedMediaType,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::UriTooLong => 414,
            Refusal::TooManyHeaders | Refusal::HeadersTooLarge => 431,
            Refusal::MethodNotAllowed => 405,
            Refusal::BodyTooLarge => 413,
            Refusal::UnsupportedMediaType => 415,
        }
    }

    /// The `reason` label of the rejection metric and log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UriTooLong => "uri_too_long",
            Refusal::TooManyHeaders => "too_many_headers",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

/// The bounds every request must keep, before routing.
pub fn check_bounds(req: &RequestHeader, bounds: &RequestBounds) -> Result<(), Refusal> {
    if req.raw_path().len() > bounds.max_uri {
        return Err(Refusal::UriTooLong);
    }
    if req.headers.len() > bounds.max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    // As on the wire: `name: value\r\n`.
    let bytes: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if bytes > bounds.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// The declared body length, if the request declares one.
pub fn declared_body(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn has_body(req: &RequestHeader) -> bool {
    declared_body(req).is_some_and(|n| n > 0) || req.headers.contains_key(TRANSFER_ENCODING)
}

/// What a route allows: method, declared body size, body media type.
pub fn check_allow(req: &RequestHeader, allow: &Allow) -> Result<(), Refusal> {
    if let Some(methods) = &allow.methods {
        // HEAD is GET without the body: allowed wherever GET is.
        let head_as_get = req.method == http::Method::HEAD && methods.contains(&http::Method::GET);
        if !methods.contains(&req.method) && !head_as_get {
            return Err(Refusal::MethodNotAllowed);
        }
    }
    if let (Some(max), Some(len)) = (allow.max_body, declared_body(req)) {
        if len > max {
            return Err(Refusal::BodyTooLarge);
        }
    }
    if let Some(types) = &allow.content_types {
        if has_body(req) {
            let media = req
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            let accepted = types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => media.starts_with(prefix) && media.len() > prefix.len(),
                None => *t == media,
            });
            if !accepted {
                return Err(Refusal::UnsupportedMediaType);
            }
        }
    }
    Ok(())
}

/// The `Allow` value for a 405.
pub fn allow_value(allow: &Allow) -> String {
    let methods = allow.methods.as_deref().unwrap_or_default();
    let mut names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
    if methods.contains(&http::Method::GET) && !methods.contains(&http::Method::HEAD) {
        names.insert(
            names.iter().position(|m| *m == "GET").map_or(0, |i| i + 1),
            "HEAD",
        );
    }
    names.join(", ")
}

/// The request's id: a trusted proxy's `X-Request-Id` when it is sane (so
/// one id follows the request through every hop), else a new one.
pub fn request_id(req: &RequestHeader, trusted_peer: bool) -> HeaderValue {
    let given = req.headers.get(&X_REQUEST_ID).filter(|v| {
        trusted_peer
            && (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    match given {
        Some(v) => v.clone(),
        None => {
            let id = uuid::Uuid::new_v4();
            let mut buf = uuid::Uuid::encode_buffer();
            HeaderValue::from_str(id.simple().encode_lower(&mut buf)).expect("hex is a valid value")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderRule, NamePattern};

    fn rules() -> ResponseHeaderRules {
        let rule = |name: &'static str, value: Option<&'static str>, mode| {
            HeaderRule::new(
                HeaderName::from_static(name),
                value.map(HeaderValue::from_static),
                mode,
            )
        };
        ResponseHeaderRules {
            rules: vec![
                rule("x-content-type-options", Some("nosniff"), HeaderMode::Set),
                rule(
                    "x-frame-options",
                    Some("SAMEORIGIN"),
                    HeaderMode::SetIfAbsent,
                ),
                rule(
                    "strict-transport-security",
                    Some("max-age=60"),
                    HeaderMode::Set,
                ),
                rule("x-debug", None, HeaderMode::Remove),
            ],
            strip: vec![
                NamePattern::Exact(HeaderName::from_static("x-powered-by")),
                NamePattern::Prefix("x-nextjs-".into()),
            ],
        }
    }

    fn origin() -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("x-content-type-options", "sniff-away"),
            ("x-frame-options", "DENY"),
            ("x-debug", "1"),
            ("x-powered-by", "Next.js"),
            ("x-nextjs-cache", "HIT"),
            ("content-type", "text/html"),
        ] {
            r.insert_header(k, v).unwrap();
        }
        r
    }

    #[test]
    fn modes_set_keep_and_remove() {
        let mut r = origin();
        apply_response_rules(&mut r, &rules(), false);
        let h = &r.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "set replaces");
        assert_eq!(h["x-frame-options"], "DENY", "the origin's value wins");
        assert!(!h.contains_key("x-debug"), "removed");
        assert!(!h.contains_key("x-powered-by") && !h.contains_key("x-nextjs-cache"));
        assert!(
            !h.contains_key("strict-transport-security"),
            "not over http"
        );
        assert_eq!(h["content-type"], "text/html");
        let mut r = origin();
        apply_response_rules(&mut r, &rules(), true);
        assert_eq!(r.headers["strict-transport-security"], "max-age=60");
    }

    #[test]
    fn a_finished_answer_keeps_its_status_and_headers_and_gets_the_request_id() {
        let mut r = origin();
        r.set_status(404).unwrap();
        r.append_header("set-cookie", "a=1").unwrap();
        r.append_header("set-cookie", "b=2").unwrap();
        let id = HeaderValue::from_static("0123abcd");
        finish_answer(&mut r, &rules(), false, Some(&id));
        assert_eq!(r.status, 404);
        assert_eq!(r.headers["x-request-id"], "0123abcd");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["content-type"], "text/html");
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            cookies,
            ["a=1", "b=2"],
            "repeated headers all kept, in order"
        );
        // What goes on the wire is the edited map.
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap().to_ascii_lowercase();
        assert!(wire.contains("x-request-id: 0123abcd\r\n"), "{wire}");
        assert!(!wire.contains("x-powered-by"), "{wire}");
    }

    #[test]
    fn allow_checks_method_size_and_type() {
        let allow = Allow {
            methods: Some(vec![http::Method::GET, http::Method::POST]),
            max_body: Some(100),
            content_types: Some(vec!["application/json".into(), "text/*".into()]),
        };
        let req = |method: &str, len: Option<&str>, ctype: Option<&str>| {
            let mut r = RequestHeader::build(method, b"/", None).unwrap();
            if let Some(l) = len {
                r.insert_header("content-length", l).unwrap();
            }
            if let Some(c) = ctype {
                r.insert_header("content-type", c).unwrap();
            }
            check_allow(&r, &allow)
        };
        assert_eq!(req("GET", None, None), Ok(()));
        assert_eq!(req("PUT", None, None), Err(Refusal::MethodNotAllowed));
        assert_eq!(req("HEAD", None, None), Ok(()), "HEAD goes with GET");
        assert_eq!(
            req("POST", Some("101"), Some("application/json")),
            Err(Refusal::BodyTooLarge)
        );
        assert_eq!(
            req("POST", Some("10"), Some("Application/JSON; charset=utf-8")),
            Ok(())
        );
        assert_eq!(req("POST", Some("10"), Some("text/plain")), Ok(()));
        assert_eq!(
            req("POST", Some("10"), Some("application/xml")),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            req("POST", Some("10"), None),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(req("POST", Some("0"), None), Ok(()), "no body, no type");
        assert_eq!(allow_value(&allow), "GET, HEAD, POST");
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-request-id", "edge-42").unwrap();
        assert_eq!(request_id(&r, true), "edge-42");
        let fresh = request_id(&r, false);
        assert_ne!(fresh, "edge-42");
        assert_eq!(fresh.len(), 32);
        r.insert_header("x-request-id", "a b").unwrap();
        assert_ne!(request_id(&r, true), "a b", "not sane: replaced");
    }
}
