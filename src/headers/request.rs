//! Request target checks (Host, absolute-form URIs) and the forwarding headers
//! the storefront relies on.

use std::net::{IpAddr, Ipv6Addr};

use http::header::{HeaderName, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Uri};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

/// Why a request target was refused (always a 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// HTTP/1.1 request without a Host.
    MissingHost,
    /// More than one Host header.
    MultipleHosts,
    /// Host (or URI authority) is not `host[:port]`.
    MalformedHost,
    /// Absolute-form URI naming another host than the Host header.
    ForeignAuthority,
    /// Absolute-form URI with a scheme other than http or https.
    BadScheme,
    /// A request target that is neither origin-form nor a clear absolute-form.
    MalformedTarget,
}

impl TargetError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingHost => "missing Host header",
            Self::MultipleHosts => "more than one Host header",
            Self::MalformedHost => "malformed Host",
            Self::ForeignAuthority => "request URI names a different host",
            Self::BadScheme => "unsupported URI scheme",
            Self::MalformedTarget => "malformed request target",
        }
    }
}

/// The checked target of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckedTarget {
    /// Lower-case host without port, for routing.
    pub host: Option<String>,
    /// Host and port as the client sent them, for `Host`/`X-Forwarded-Host`.
    pub authority: Option<String>,
    /// The port the client named, if any.
    pub port: Option<u16>,
    /// Set when an absolute-form URI must be sent upstream in origin-form.
    pub origin_form: Option<Uri>,
    /// Whether the request had no Host header (absolute-form on HTTP/1.0, or h2).
    pub host_header_missing: bool,
}

/// A parsed `host[:port]`.
#[derive(Debug, PartialEq, Eq)]
struct Authority<'a> {
    host: &'a str,
    port: Option<u16>,
}

fn parse_authority(raw: &str) -> Option<Authority<'_>> {
    if raw.is_empty() || raw.len() > 261 {
        return None;
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&raw[..inside.len() + 2], port)
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    if !host.starts_with('[') {
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        // All digits and dots: an IPv4 literal, which must be a valid one.
        let ipv4_like = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !ok || (ipv4_like && host.parse::<std::net::Ipv4Addr>().is_err()) {
            return None;
        }
    }
    Some(Authority { host, port })
}

fn same_authority(a: &Authority<'_>, b: &Authority<'_>, default_port: u16) -> bool {
    a.host.eq_ignore_ascii_case(b.host)
        && a.port.unwrap_or(default_port) == b.port.unwrap_or(default_port)
}

/// Checks Host and the request URI. `is_h2` requests carry their authority in
/// the URI (`:authority`), which is not an absolute-form request.
pub fn check_target(req: &RequestHeader, is_h2: bool) -> Result<CheckedTarget, TargetError> {
    let mut hosts = req.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::MultipleHosts);
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| TargetError::MalformedHost)?),
        None => None,
    };
    let header_auth = match header {
        Some(h) => Some(parse_authority(h.trim()).ok_or(TargetError::MalformedHost)?),
        None => None,
    };

    // HTTP/1 absolute-form targets stay in the raw request line (the parsed URI
    // holds only the path); h2 carries the authority in the URI (`:authority`).
    let raw = req.raw_path();
    let absolute = if is_h2 {
        req.uri.authority().map(|a| {
            (
                req.uri.scheme_str().unwrap_or("https").as_bytes(),
                a.as_str().as_bytes(),
            )
        })
    } else {
        match raw_target_authority(raw) {
            RawTargetAuthority::Absolute {
                scheme, authority, ..
            } => Some((scheme, authority)),
            RawTargetAuthority::AmbiguousAuthority => return Err(TargetError::MalformedTarget),
            RawTargetAuthority::None if raw.first() == Some(&b'/') || raw == b"*" => None,
            RawTargetAuthority::None => return Err(TargetError::MalformedTarget),
        }
    };
    let mut origin_form = None;
    let chosen = match absolute {
        Some((scheme, raw_auth)) => {
            let default_port = if scheme.eq_ignore_ascii_case(b"http") {
                80
            } else if scheme.eq_ignore_ascii_case(b"https") {
                443
            } else {
                return Err(TargetError::BadScheme);
            };
            let raw_auth = std::str::from_utf8(raw_auth).map_err(|_| TargetError::MalformedHost)?;
            let auth = parse_authority(raw_auth).ok_or(TargetError::MalformedHost)?;
            if let Some(h) = &header_auth {
                if !same_authority(&auth, h, default_port) {
                    return Err(TargetError::ForeignAuthority);
                }
            }
            if !is_h2 {
                let pq = req
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                origin_form = Some(Uri::from(pq));
            }
            Some((raw_auth, auth))
        }
        None => match (header, header_auth) {
            (Some(h), Some(a)) => Some((h.trim(), a)),
            _ => None,
        },
    };
    match chosen {
        Some((raw, auth)) => Ok(CheckedTarget {
            host: Some(
                auth.host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
            ),
            authority: Some(raw.to_string()),
            port: auth.port,
            origin_form,
            host_header_missing: header.is_none(),
        }),
        None if req.version == http::Version::HTTP_10 => Ok(CheckedTarget::default()),
        None => Err(TargetError::MissingHost),
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then
/// the right-most address in `X-Forwarded-For` that is not itself trusted
/// (left of it, anything could be forged).
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An entry that is not an address ends the walk: what stands left of
        // it cannot be attributed to a trusted hop.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry: `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]` or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the storefront is told about the client.
#[derive(Clone, Copy, Debug)]
pub struct Forwarding<'a> {
    /// The connection's peer.
    pub peer: Option<IpAddr>,
    /// The peer is a trusted proxy: its forwarding headers are extended, not replaced.
    pub trusted_peer: bool,
    pub tls: bool,
    pub authority: Option<&'a str>,
    pub host_header_missing: bool,
}

/// Sets `X-Forwarded-For/-Proto/-Host`. From an untrusted peer, a client's own
/// claims are replaced; a trusted proxy's chain is extended with its address
/// and its `-Proto`/`-Host` are kept.
/// Refuses request framing that two parsers could read differently (the
/// ground of request smuggling): `Content-Length` with `Transfer-Encoding`,
/// several or malformed lengths, a transfer coding other than a final
/// `chunked`, `Transfer-Encoding` on HTTP/1.0.
///
/// `raw_head` gives the header section as received: Pingora drops a
/// `Content-Length` that arrives with `Transfer-Encoding` before awning sees
/// the parsed header.
pub fn check_framing(
    req: &RequestHeader,
    raw_head: impl FnOnce() -> bytes::Bytes,
) -> Result<(), &'static str> {
    let lengths: Vec<&http::HeaderValue> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
    let codings: Vec<&http::HeaderValue> = req.headers.get_all(TRANSFER_ENCODING).iter().collect();
    if !codings.is_empty() && (!lengths.is_empty() || has_field(&raw_head(), b"content-length")) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    match lengths.as_slice() {
        [] => {}
        [one] if !one.is_empty() && one.as_bytes().iter().all(u8::is_ascii_digit) => {}
        _ => return Err("several or malformed Content-Length"),
    }
    if !codings.is_empty() {
        if req.version == http::Version::HTTP_10 {
            return Err("Transfer-Encoding on HTTP/1.0");
        }
        let only_chunked = codings.len() == 1
            && codings[0]
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked {
            return Err("a transfer coding other than chunked");
        }
    }
    Ok(())
}

/// Whether a raw header section has a field `name` (lower case).
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// A trusted proxy's `X-Forwarded-Proto` says the client used https.
pub fn forwarded_proto_is_https(headers: &http::HeaderMap) -> bool {
    headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

pub fn set_forwarding(req: &mut RequestHeader, f: Forwarding<'_>) {
    // Other spellings of the same claims, which the storefront might read.
    req.remove_header("forwarded");
    req.remove_header("x-real-ip");
    let incoming: Vec<String> = req
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let chain = match (f.peer, f.trusted_peer && !incoming.is_empty()) {
        (Some(ip), true) => Some(format!("{}, {ip}", incoming.join(", "))),
        (Some(ip), false) => Some(ip.to_string()),
        (None, _) => None,
    };
    match chain {
        Some(v) => {
            let _ = req.insert_header(X_FORWARDED_FOR.clone(), v);
        }
        None => {
            req.remove_header(&X_FORWARDED_FOR);
        }
    }
    let keep_proto = f.trusted_peer && req.headers.contains_key(&X_FORWARDED_PROTO);
    if !keep_proto {
        let _ = req.insert_header(
            X_FORWARDED_PROTO.clone(),
            if f.tls { "https" } else { "http" },
        );
    }
    let keep_host = f.trusted_peer && req.headers.contains_key(&X_FORWARDED_HOST);
    match f.authority {
        Some(a) => {
            if !keep_host {
                let _ = req.insert_header(X_FORWARDED_HOST.clone(), a);
            }
            if f.host_header_missing {
                let _ = req.insert_header(HOST, a);
            }
        }
        None if !keep_host => {
            req.remove_header(&X_FORWARDED_HOST);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_believes_only_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.1.2.3".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip(ip("192.0.2.1"), &h, &trusted),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), &h, &trusted),
            ip("203.0.113.9"),
            "right-most untrusted hop"
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), &http::HeaderMap::new(), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.5"), &h, &trusted),
            ip("203.0.113.9"),
            "dual-stack peer"
        );
        let mut odd = http::HeaderMap::new();
        odd.insert(
            "x-forwarded-for",
            "6.6.6.6, unknown, 10.0.0.9".parse().unwrap(),
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), &odd, &trusted),
            ip("10.0.0.9"),
            "stops at garbage"
        );
        let mut ports = http::HeaderMap::new();
        ports.insert(
            "x-forwarded-for",
            "6.6.6.6, 198.51.100.5:40000".parse().unwrap(),
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), &ports, &trusted),
            ip("198.51.100.5")
        );
        let mut v6 = http::HeaderMap::new();
        v6.insert(
            "x-forwarded-for",
            "6.6.6.6, [2001:db8::1]:443".parse().unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.5"), &v6, &trusted), ip("2001:db8::1"));
    }

    fn req(uri: &str, hosts: &[&str], version: http::Version) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        r.set_version(version);
        for h in hosts {
            r.append_header(HOST, *h).unwrap();
        }
        r
    }

    fn check(uri: &str, hosts: &[&str]) -> Result<CheckedTarget, TargetError> {
        check_target(&req(uri, hosts, http::Version::HTTP_11), false)
    }

    #[test]
    fn framing_rules() {
        let with = |fields: &[(&str, &str)], version| {
            let mut r = RequestHeader::build("POST", b"/", None).unwrap();
            r.set_version(version);
            for (k, v) in fields {
                r.append_header(k.to_string(), *v).unwrap();
            }
            check_framing(&r, || bytes::Bytes::from_static(b"POST / HTTP/1.1\r\n"))
        };
        let v11 = http::Version::HTTP_11;
        assert!(with(&[("content-length", "5")], v11).is_ok());
        assert!(with(&[("transfer-encoding", "chunked")], v11).is_ok());
        assert!(with(&[("transfer-encoding", "Chunked ")], v11).is_ok());
        for bad in [
            vec![("content-length", "5"), ("content-length", "5")],
            vec![("content-length", "5, 5")],
            vec![("content-length", "+5")],
            vec![("transfer-encoding", "gzip, chunked")],
            vec![
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("transfer-encoding", "chunked"), ("content-length", "5")],
        ] {
            assert!(with(&bad, v11).is_err(), "{bad:?}");
        }
        assert!(with(&[("transfer-encoding", "chunked")], http::Version::HTTP_10).is_err());
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.append_header("transfer-encoding", "chunked").unwrap();
        let raw = || {
            bytes::Bytes::from_static(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            )
        };
        assert!(
            check_framing(&r, raw).is_err(),
            "a length the parser dropped"
        );
    }

    #[test]
    fn accepts_ordinary_hosts() {
        for (h, want) in [
            ("shop.example.com", "shop.example.com"),
            ("Shop.Example.COM:8080", "shop.example.com"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("localhost", "localhost"),
        ] {
            let t = check("/", &[h]).unwrap_or_else(|e| panic!("{h}: {e:?}"));
            assert_eq!(t.host.as_deref(), Some(want), "{h}");
            assert_eq!(t.authority.as_deref(), Some(h));
            assert_eq!(t.origin_form, None);
        }
    }

    #[test]
    fn rejects_malformed_hosts() {
        for h in [
            "",
            "shop example",
            "shop.example.com:",
            "shop:99999",
            "a@b",
            "shop:80:80",
            "[::1",
            "[zz]:80",
            "sh/op",
            "999.1.1.1",
        ] {
            assert_eq!(check("/", &[h]), Err(TargetError::MalformedHost), "{h:?}");
        }
        assert_eq!(check("/", &["a", "b"]), Err(TargetError::MultipleHosts));
        assert_eq!(check("/", &[]), Err(TargetError::MissingHost));
        assert!(check_target(&req("/", &[], http::Version::HTTP_10), false).is_ok());
    }

    #[test]
    fn absolute_form_must_name_the_same_host() {
        let t = check("http://shop.test/p?q=1", &["shop.test"]).unwrap();
        assert_eq!(t.origin_form.unwrap().to_string(), "/p?q=1");
        assert!(check("http://shop.test:80/p", &["SHOP.test"]).is_ok());
        assert_eq!(
            check("http://evil.test/p", &["shop.test"]),
            Err(TargetError::ForeignAuthority)
        );
        assert_eq!(
            check("http://shop.test:8080/p", &["shop.test"]),
            Err(TargetError::ForeignAuthority)
        );
        assert_eq!(
            check("ftp://shop.test/p", &["shop.test"]),
            Err(TargetError::BadScheme)
        );
        assert_eq!(
            check("http:/\\evil.test/p", &["shop.test"]),
            Err(TargetError::MalformedTarget)
        );
        let t = check("http://shop.test/", &[]).unwrap();
        assert!(t.host_header_missing);
        assert_eq!(t.host.as_deref(), Some("shop.test"));
    }
}
