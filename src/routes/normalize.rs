//! Path normalisation before matching and keying, so that a path written in
//! another way (`//a`, `/b/../a`, `/%61`, `/a;x.css`, `/%2e%2e/a`) reaches the
//! route and cache entry of the resource it really names. This is what defeats
//! cache-deception paths such as `/account;x.css` posing as a static file.

use std::borrow::Cow;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` needs any work (the common case needs none).
fn is_plain(path: &str) -> bool {
    let b = path.as_bytes();
    !b.contains(&b'%')
        && !b.contains(&b';')
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
}

/// Whether `path` hides a separator: an encoded `/` or `\`, or a raw `\`.
/// Servers disagree on whether such a path has one segment or two (nginx and
/// many frameworks decode and resolve it), so it is refused rather than
/// guessed (`/assets/..%2Faccount` would otherwise pass as a static asset).
fn hides_separator(path: &str) -> bool {
    let b = path.as_bytes();
    b.contains(&b'\\')
        || b.windows(3).any(|w| {
            w[0] == b'%'
                && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                    || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
        })
}

/// The normalised form: percent-encoded unreserved characters decoded, `;`
/// parameters removed from each segment, empty segments merged, `.` and `..`
/// resolved. `None` for a path that hides a separator (refused with 400).
pub fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    normalize_path_with(path, false)
}

/// [`normalize_path`], or with `keep_encoded_slashes` an encoded `/` or `\`
/// stays encoded inside its segment (for shops whose slugs contain them);
/// a raw `\` is refused either way.
pub fn normalize_path_with(path: &str, keep_encoded_slashes: bool) -> Option<Cow<'_, str>> {
    let hidden = if keep_encoded_slashes {
        path.contains('\\')
    } else {
        hides_separator(path)
    };
    if hidden {
        return None;
    }
    if is_plain(path) {
        return Some(Cow::Borrowed(path));
    }
    // Decode unreserved characters; upper-case the hex of what stays encoded.
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                if unreserved(c) {
                    decoded.push(c);
                } else {
                    decoded.extend_from_slice(&[
                        b'%',
                        bytes[i + 1].to_ascii_uppercase(),
                        bytes[i + 2].to_ascii_uppercase(),
                    ]);
                }
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    // Only `%XX` triplets were replaced, by ASCII: still valid UTF-8.
    let decoded = String::from_utf8(decoded)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_ways_one_path_can_be_written() {
        let cases = [
            ("/", "/"),
            ("/api/products/1", "/api/products/1"),
            ("//api///products/", "/api/products/"),
            ("/static/../account", "/account"),
            ("/a/./b/.", "/a/b/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%2e%2e/account", "/account"),
            ("/%2E%2e/%61ccount", "/account"),
            ("/account;x.css", "/account"),
            ("/account;jsessionid=1/orders", "/account/orders"),
            ("/a%20b", "/a%20b"),
            ("/bad%zz", "/bad%zz"),
            ("/end%", "/end%"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn hidden_separators_are_refused() {
        for bad in [
            "/assets/..%2Faccount",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/x/%5c../account",
        ] {
            assert_eq!(normalize_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn encoded_separators_can_be_kept_inside_their_segment() {
        assert_eq!(
            normalize_path_with("/p/ac%2fdc/../x", true).as_deref(),
            Some("/p/x")
        );
        assert_eq!(
            normalize_path_with("/p/ac%2fdc", true).as_deref(),
            Some("/p/ac%2Fdc")
        );
        assert_eq!(normalize_path_with("/a\\b", true), None);
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/api/products/1"),
            Some(Cow::Borrowed(_))
        ));
    }
}
