//! Brotli on the way out, for routes with `compress: true` (gzip goes through
//! Pingora's compression module). Pingora 0.9.1's own brotli encoder flushes
//! but never finishes its streams, so awning encodes brotli itself.

use std::io::Write;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;

/// brotli quality: most of the size gain for a fraction of the CPU of 11.
const QUALITY: u32 = 5;
const WINDOW_BITS: u32 = 20;

/// The coding a client gets from a compressing route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
    Identity,
}

/// brotli when the client takes it (smaller), else gzip, else none.
pub fn choose(accept_encoding: Option<&[u8]>) -> Coding {
    if crate::headers::values::accepts_coding(accept_encoding, "br") {
        Coding::Brotli
    } else if crate::headers::values::accepts_coding(accept_encoding, "gzip") {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// The coding for the answer to `req` on a compressing route. A range of a
/// compressed body is not a range of the stored one, so ranges stay plain;
/// brotli needs a body and chunked framing, so not for HEAD or HTTP/1.0.
pub fn choose_for(req: &pingora::http::RequestHeader) -> Coding {
    if req.headers.contains_key(header::RANGE) {
        return Coding::Identity;
    }
    match choose(
        req.headers
            .get(header::ACCEPT_ENCODING)
            .map(|v| v.as_bytes()),
    ) {
        Coding::Brotli
            if req.method == http::Method::HEAD || req.version == http::Version::HTTP_10 =>
        {
            Coding::Identity
        }
        coding => coding,
    }
}

/// Whether responses of this content type are worth compressing.
pub fn compressible(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/manifest+json"
                | "application/ld+json"
                | "image/svg+xml"
        )
}

/// If `resp` should be brotli-encoded, rewrites its header for the encoded
/// body and returns the encoder for the body.
pub fn start_brotli(resp: &mut ResponseHeader) -> Option<BrotliStream> {
    if resp.status != http::StatusCode::OK || resp.headers.contains_key(header::CONTENT_ENCODING) {
        return None;
    }
    let ct = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !compressible(ct) {
        return None;
    }
    resp.remove_header(&header::CONTENT_LENGTH);
    // Without a length the body must be chunked, or the connection cannot be kept.
    let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
    let _ = resp.insert_header(header::CONTENT_ENCODING, "br");
    let varies = resp
        .headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding"))
        });
    if !varies {
        let _ = resp.append_header(header::VARY, "Accept-Encoding");
    }
    // The encoded body is another representation: its validator is weak.
    if let Some(tag) = resp.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !tag.starts_with("W/") {
            let weak = format!("W/{tag}");
            let _ = resp.insert_header(header::ETAG, weak);
        }
    }
    Some(BrotliStream {
        encoder: Some(Box::new(brotli::CompressorWriter::new(
            Vec::new(),
            4096,
            QUALITY,
            WINDOW_BITS,
        ))),
    })
}

/// A brotli encoder fed body chunk by chunk.
pub struct BrotliStream {
    // Boxed: the encoder's state is 5.6 KB, and every request's context
    // (moved with Pingora's per-request futures) would carry it inline.
    encoder: Option<Box<brotli::CompressorWriter<Vec<u8>>>>,
}

impl BrotliStream {
    /// Encodes `chunk`; at `end`, finishes the stream. Returns what is ready.
    pub fn encode(&mut self, chunk: Option<&[u8]>, end: bool) -> Bytes {
        let Some(enc) = self.encoder.as_mut() else {
            return Bytes::new();
        };
        if let Some(data) = chunk {
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(data);
        }
        if end {
            let rest = self
                .encoder
                .take()
                .map(|e| e.into_inner())
                .unwrap_or_default();
            return Bytes::from(rest);
        }
        Bytes::from(std::mem::take(enc.get_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_complete_brotli_streams() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("content-type", "text/html; charset=utf-8")
            .unwrap();
        resp.insert_header("content-length", "100").unwrap();
        resp.insert_header("etag", "\"abc\"").unwrap();
        let mut stream = start_brotli(&mut resp).expect("compressible");
        assert_eq!(resp.headers["content-encoding"], "br");
        assert_eq!(resp.headers["vary"], "Accept-Encoding");
        assert_eq!(resp.headers["etag"], "W/\"abc\"");
        assert!(!resp.headers.contains_key("content-length"));

        let page = "<p>summer sale</p>".repeat(500);
        let mut out = Vec::new();
        for chunk in page.as_bytes().chunks(1000) {
            out.extend_from_slice(&stream.encode(Some(chunk), false));
        }
        out.extend_from_slice(&stream.encode(None, true));
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &out[..], &mut plain).expect("a finished brotli stream");
        assert_eq!(plain, page.as_bytes());
    }

    #[test]
    fn prefers_brotli_then_gzip() {
        assert_eq!(choose(Some(b"gzip, deflate, br")), Coding::Brotli);
        assert_eq!(choose(Some(b"gzip, br;q=0")), Coding::Gzip);
        assert_eq!(choose(Some(b"deflate")), Coding::Identity);
        assert_eq!(choose(None), Coding::Identity);
    }

    #[test]
    fn ranges_head_and_http10_get_what_they_can_take() {
        let req = |method: &str, version, range: bool| {
            let mut r = pingora::http::RequestHeader::build(method, b"/", None).unwrap();
            r.set_version(version);
            r.insert_header("accept-encoding", "gzip, br").unwrap();
            if range {
                r.insert_header("range", "bytes=0-9").unwrap();
            }
            r
        };
        assert_eq!(
            choose_for(&req("GET", http::Version::HTTP_11, false)),
            Coding::Brotli
        );
        assert_eq!(
            choose_for(&req("GET", http::Version::HTTP_11, true)),
            Coding::Identity
        );
        assert_eq!(
            choose_for(&req("HEAD", http::Version::HTTP_11, false)),
            Coding::Identity
        );
        assert_eq!(
            choose_for(&req("GET", http::Version::HTTP_10, false)),
            Coding::Identity
        );
    }

    #[test]
    fn leaves_alone_what_is_not_worth_it() {
        for (status, ct, ce) in [
            (200, "image/png", None),
            (206, "text/html", None),
            (200, "text/html", Some("gzip")),
        ] {
            let mut resp = ResponseHeader::build(status, None).unwrap();
            resp.insert_header("content-type", ct).unwrap();
            if let Some(ce) = ce {
                resp.insert_header("content-encoding", ce).unwrap();
            }
            assert!(start_brotli(&mut resp).is_none(), "{status} {ct} {ce:?}");
        }
        assert!(compressible(Some("application/json; charset=utf-8")));
        assert!(!compressible(None));
    }
}
