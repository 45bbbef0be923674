//! Response headers: hop-by-hop stripping and the short error pages awning
//! writes itself.

use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora::http::ResponseHeader;

/// Hop-by-hop fields (RFC 9110 §7.6.1) that must not travel past this hop.
/// `Transfer-Encoding` is left to Pingora, which re-frames the body itself.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// Fields a `Connection` token may not remove, because framing depends on them.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// Removes hop-by-hop fields and those the `Connection` header nominates.
/// `Upgrade` survives on a 101, where it is the point of the response.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    let nominated: Vec<String> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !FRAMING.contains(&t.as_str()))
        .collect();
    let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    for name in HOP_BY_HOP {
        if switching && (name == "upgrade" || name == "connection") {
            continue;
        }
        resp.remove_header(name);
    }
    for name in nominated {
        if switching && name == "upgrade" {
            continue;
        }
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            resp.remove_header(&n);
        }
    }
}

/// A short plain-text page for a status awning produces itself: no internals,
/// never cached.
pub fn error_page(status: u16) -> (ResponseHeader, Bytes) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = Bytes::from(format!("{status} {reason}\n"));
    let mut resp = ResponseHeader::build(status, Some(4)).expect("valid status");
    let _ = resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
    let _ = resp.insert_header(
        header::DATE,
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    (resp, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_nominated_fields() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, content-length"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("content-length", "5"),
            ("x-kept", "yes"),
        ] {
            r.append_header(k, v).unwrap();
        }
        strip_hop_by_hop(&mut r);
        let mut left: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["content-length", "x-kept"]);
    }

    #[test]
    fn upgrade_survives_switching_protocols() {
        let mut r = ResponseHeader::build(101, None).unwrap();
        r.append_header("connection", "upgrade").unwrap();
        r.append_header("upgrade", "websocket").unwrap();
        strip_hop_by_hop(&mut r);
        assert!(r.headers.contains_key("upgrade"));
    }

    #[test]
    fn error_pages_are_short_and_uncached() {
        let (h, body) = error_page(502);
        assert_eq!(h.status, 502);
        assert_eq!(&body[..], b"502 Bad Gateway\n");
        assert_eq!(h.headers["cache-control"], "no-store");
        assert_eq!(h.headers["content-length"], body.len().to_string().as_str());
        assert!(!h.headers.contains_key("server"));
    }
}
