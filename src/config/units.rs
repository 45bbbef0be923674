//! Human units in config files: durations (`500ms`, `2s`, `10m`, `365d`) and sizes
//! (`64KiB`, `256MiB`). Parsing is delegated to `humantime` and `bytesize`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written with a unit, e.g. `2s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like 500ms, 2s, 10m, 1h or 365d")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: write a duration like {v}s or {v}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `500ms`, `2s`, `10m`, `1h`, `365d` (and combinations such as `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like 500ms, 2s, 10m, 1h or 365d")
    })?;
    if d > MAX_DURATION {
        return Err(format!("`{text}` is longer than 10 years"));
    }
    Ok(d)
}

/// The longest duration a setting may have; keeps time arithmetic far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86400);

/// A size in bytes, written `64KiB`, `256MiB` or as a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 64KiB or 256MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanSize, E> {
                parse_size(v).map(HumanSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanSize, E> {
                Ok(HumanSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanSize, E> {
                u64::try_from(v)
                    .map(HumanSize)
                    .map_err(|_| E::custom(format!("size `{v}` is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `64KiB`, `256MiB`, `1GiB`, `512` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{text}` is not a size; write it like 64KiB or 256MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_operator_units() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("365d", Duration::from_secs(365 * 86400)),
            ("1h 30m", Duration::from_secs(5400)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "2", "fast", "2 parsecs", "-1s", "300000000000y", "11y"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn sizes_in_operator_units() {
        let cases = [
            ("64KiB", 64 * 1024),
            ("256MiB", 256 * 1024 * 1024),
            ("1GiB", 1 << 30),
            ("512", 512),
            ("1kB", 1000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "lots", "12 parsecs"] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn bare_numbers_are_not_durations() {
        let err = serde_yaml::from_str::<HumanDuration>("30").unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        let ok: HumanDuration = serde_yaml::from_str("30s").unwrap();
        assert_eq!(ok.0, Duration::from_secs(30));
    }
}
