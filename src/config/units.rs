//! Units that appear in the config file: durations (`250ms`, `10s`, `1m`, `1h`, `1d`)
//! and byte sizes (`32KiB`, `1MiB`, or a plain number of bytes).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A duration written with a unit, as in `250ms`, `10s`, `1m`, `1h` or `1d`.
///
/// A bare number is refused: `timeout: 30` could mean seconds or milliseconds,
/// and a config that guesses wrong fails in production, not at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

/// Longest duration a config may hold. Timer deadlines far beyond it leave
/// tokio's timer wheel (about 2.2 years), and arithmetic on them could
/// overflow; nothing in a gateway needs to wait longer than a year.
const MAX: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like 250ms, 10s, 1m, 1h or 1d")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                let duration = humantime::parse_duration(text.trim()).map_err(|_| {
                    E::custom(format!(
                        "invalid duration {text:?}: write a number with a unit, like 250ms, 10s, 1m, 1h or 1d"
                    ))
                })?;
                if duration > MAX {
                    return Err(E::custom(format!(
                        "duration {text:?} is longer than a year: no timeout or interval needs that long"
                    )));
                }
                Ok(Duration(duration))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration {n} has no unit: write it as {n}s or {n}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                self.visit_u64(n.unsigned_abs())
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A number of bytes, written as a plain integer or with a unit (`512KiB`, `1MiB`, `10MB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, like 8192, 32KiB or 1MiB")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|size| ByteSize(size.as_u64()))
                    .map_err(|_| {
                        E::custom(format!(
                            "invalid size {text:?}: write bytes with a unit, like 32KiB, 1MiB or 10MB"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A share written as a percentage: `20%`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Percent {
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
        match parsed {
            Some(n) if (0.0..=100.0).contains(&n) => Ok(Percent(n)),
            _ => Err(de::Error::custom(format!(
                "invalid percentage {text:?}: write a share from 0% to 100%, like 20%"
            ))),
        }
    }
}

// Written back the way a user would write them (`GET /config` shows them).
impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&bytesize::ByteSize(self.0).display().iec())
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}%", self.0))
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address; IPv4-mapped IPv6 is
/// taken as the IPv4 it maps.
pub fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let net = text
        .parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))?
        .trunc();
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok().map(ipnet::IpNet::V4),
            None => Some(net),
        },
        net => Some(net),
    }
}

// The JSON Schema of each unit, for `portico schema`: what an editor checks
// as the user types.
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+\\s*[a-zµ]+\\s*)+$",
            "description": "A duration with a unit: 250ms, 10s, 1m, 1h, 1d.",
        })
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "description": "A number of bytes, or a size with a unit: 32KiB, 1MiB, 10MB.",
        })
    }
}

impl schemars::JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%$",
            "description": "A share from 0% to 100%, like 20%.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(text: &str) -> Result<Duration, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_read_with_units() {
        assert_eq!(duration("250ms").unwrap().get().as_millis(), 250);
        assert_eq!(duration("10s").unwrap().get().as_secs(), 10);
        assert_eq!(duration("1m").unwrap().get().as_secs(), 60);
        assert_eq!(duration("1h").unwrap().get().as_secs(), 3600);
        assert_eq!(duration("1d").unwrap().get().as_secs(), 86400);
    }

    #[test]
    fn absurd_durations_are_refused() {
        assert!(duration("365d").is_ok());
        let err = duration("500000000y").unwrap_err();
        assert!(err.contains("longer than a year"), "{err}");
        assert!(duration("-1s").is_err());
    }

    #[test]
    fn durations_without_unit_are_refused_with_the_fix() {
        let err = duration("30").unwrap_err();
        assert!(err.contains("30s"), "{err}");
        let err = duration("ten seconds").unwrap_err();
        assert!(err.contains("like 250ms"), "{err}");
    }

    #[test]
    fn percentages_need_their_sign_and_a_sane_range() {
        let percent = |t: &str| serde_yaml_ng::from_str::<Percent>(t).map(|p| p.0);
        assert_eq!(percent("20%").unwrap(), 20.0);
        assert_eq!(percent("'2.5 %'").unwrap(), 2.5);
        assert!(percent("20").is_err());
        assert!(percent("150%").is_err());
        assert!(percent("-1%").is_err());
    }

    #[test]
    fn sizes_read_with_and_without_units() {
        let size = |t: &str| serde_yaml_ng::from_str::<ByteSize>(t).map(ByteSize::get);
        assert_eq!(size("8192").unwrap(), 8192);
        assert_eq!(size("32KiB").unwrap(), 32 * 1024);
        assert_eq!(size("1MiB").unwrap(), 1024 * 1024);
        assert_eq!(size("10MB").unwrap(), 10_000_000);
        assert!(size("lots").is_err());
        assert!(size("-1").is_err());
    }
}
