//! Trace and span ids as newtypes with one parser each (hex, case-insensitive; the base64 form
//! Tempo's trace-by-id JSON uses; zero-trimmed search ids), and W3C `traceparent`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {len} bytes ({hex} hex digits), got {got} bytes")]
    Length {
        kind: &'static str,
        len: usize,
        hex: usize,
        got: usize,
    },
    #[error("{kind} is not hex: {value:?}")]
    NotHex { kind: &'static str, value: String },
    #[error("{kind} is not base64: {value:?}")]
    NotBase64 { kind: &'static str, value: String },
    #[error("{kind} must not be all zeros")]
    Zero { kind: &'static str },
    #[error("traceparent {value:?} is malformed: {reason}")]
    Traceparent { value: String, reason: &'static str },
}

macro_rules! id_type {
    ($name:ident, $len:expr, $kind:expr) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            const KIND: &'static str = $kind;

            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// From the raw bytes of an OTLP message; rejects wrong lengths and all-zero ids,
            /// which the W3C spec calls invalid.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] = bytes.try_into().map_err(|_| IdError::Length {
                    kind: Self::KIND,
                    len: $len,
                    hex: $len * 2,
                    got: bytes.len(),
                })?;
                if array.iter().all(|b| *b == 0) {
                    return Err(IdError::Zero { kind: Self::KIND });
                }
                Ok(Self(array))
            }

            /// Hex of exactly the right length, upper or lower case.
            pub fn from_hex(hex: &str) -> Result<Self, IdError> {
                if hex.len() != $len * 2 {
                    return Err(IdError::Length {
                        kind: Self::KIND,
                        len: $len,
                        hex: $len * 2,
                        got: hex.len() / 2,
                    });
                }
                Self::from_slice(&decode_hex(hex).ok_or_else(|| IdError::NotHex {
                    kind: Self::KIND,
                    value: hex.to_string(),
                })?)
            }

            /// Hex with leading zeros trimmed, as Tempo's search returns trace ids.
            pub fn from_trimmed_hex(hex: &str) -> Result<Self, IdError> {
                if hex.len() > $len * 2 {
                    return Self::from_hex(hex);
                }
                Self::from_hex(&format!("{:0>width$}", hex, width = $len * 2))
            }

            /// Standard base64, as Tempo's trace-by-id JSON carries ids.
            pub fn from_base64(text: &str) -> Result<Self, IdError> {
                let bytes = BASE64.decode(text).map_err(|_| IdError::NotBase64 {
                    kind: Self::KIND,
                    value: text.to_string(),
                })?;
                Self::from_slice(&bytes)
            }

            pub fn random() -> Self {
                loop {
                    let bytes: [u8; $len] = rand::random();
                    if bytes.iter().any(|b| *b != 0) {
                        return Self(bytes);
                    }
                }
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                crate::encode::hex(&self.0)
            }

            pub fn to_base64(&self) -> String {
                BASE64.encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::from_hex(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::from_hex(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(TraceId, 16, "trace id");
id_type!(SpanId, 8, "span id");

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// A W3C trace context (`traceparent`, version 00): the span a child should name as its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceContext {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`. Per the W3C spec, a higher version may carry more
    /// fields after the fourth, and version `ff` is invalid.
    pub fn parse_traceparent(value: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError::Traceparent {
            value: value.to_string(),
            reason,
        };
        let value_trimmed = value.trim();
        let parts: Vec<&str> = value_trimmed.split('-').collect();
        if parts.len() < 4 {
            return Err(bad("expected version-traceid-spanid-flags"));
        }
        let version = parts[0];
        if version.len() != 2 || decode_hex(version).is_none() {
            return Err(bad("version must be two hex digits"));
        }
        if version.eq_ignore_ascii_case("ff") {
            return Err(bad("version ff is invalid"));
        }
        if version == "00" && parts.len() != 4 {
            return Err(bad("version 00 has exactly four fields"));
        }
        if parts[1].chars().any(|c| c.is_ascii_uppercase())
            || parts[2].chars().any(|c| c.is_ascii_uppercase())
        {
            return Err(bad("ids must be lowercase hex"));
        }
        let trace_id = TraceId::from_hex(parts[1]).map_err(|_| bad("invalid trace id"))?;
        let span_id = SpanId::from_hex(parts[2]).map_err(|_| bad("invalid parent id"))?;
        let flags = decode_hex(parts[3])
            .filter(|f| f.len() == 1)
            .ok_or_else(|| bad("flags must be two hex digits"))?;
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_case_insensitive_and_round_trips_lowercase() {
        let id = TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C").unwrap();
        assert_eq!(id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(TraceId::from_hex(&id.to_hex()).unwrap(), id);
    }

    #[test]
    fn wrong_length_zero_and_non_hex_are_rejected() {
        assert!(matches!(
            SpanId::from_hex("abc"),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            SpanId::from_hex("0000000000000000"),
            Err(IdError::Zero { .. })
        ));
        assert!(matches!(
            SpanId::from_hex("zz00000000000001"),
            Err(IdError::NotHex { .. })
        ));
    }

    #[test]
    fn tempo_forms_decode_to_the_same_id() {
        let id = TraceId::from_hex("00000000000000000000000000abcdef").unwrap();
        assert_eq!(TraceId::from_trimmed_hex("abcdef").unwrap(), id);
        assert_eq!(TraceId::from_base64(&id.to_base64()).unwrap(), id);
    }

    #[test]
    fn traceparent_round_trip_and_rejections() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx = TraceContext::parse_traceparent(tp).unwrap();
        assert!(ctx.sampled);
        assert_eq!(ctx.to_traceparent(), tp);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(TraceContext::parse_traceparent(bad).is_err(), "{bad}");
        }
    }
}
