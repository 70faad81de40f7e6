//! Encodings several modules share, written once: lowercase hex (ids on the wire and in
//! queries), FNV-1a (Argo's node ids, the Docker stack's spec label) and unix nanoseconds
//! (OTLP's timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// FNV-1a, 32 bits: Argo hashes node names with it to form node ids.
pub fn fnv32a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// FNV-1a, 64 bits: stable across builds and machines, unlike `DefaultHasher`.
pub fn fnv64a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Nanoseconds since the unix epoch; 0 for a time before it.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The current time in unix nanoseconds.
pub fn now_unix_nanos() -> u64 {
    unix_nanos(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    /// The FNV-1a reference values (Fowler, Noll, Vo): the empty input is the offset basis.
    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv32a(*b""), 0x811c_9dc5);
        assert_eq!(fnv32a(*b"a"), 0xe40c_292c);
        assert_eq!(fnv64a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn unix_nanos_counts_from_the_epoch() {
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_500);
        assert_eq!(unix_nanos(t), 1_500);
        assert_eq!(
            unix_nanos(UNIX_EPOCH - std::time::Duration::from_secs(1)),
            0
        );
        assert!(now_unix_nanos() > 1_700_000_000_000_000_000);
    }
}
