//! What a config's dataplane tables will take in memory, estimated from the config alone, so
//! that a config too large for its budget (`budget.memory`) is refused before anything is built.
//!
//! The estimate is of one snapshot. An apply holds two at its peak (the running one and the
//! new one), and the session table is separate (`sessions.capacity`, bounded on its own).

use sluice_dataplane::snapshot::{Backend, Service};
use std::mem::size_of;

/// `budget.memory` when the config gives none: 2 GiB, room for 200 services at the largest
/// table size or 16,000 at the default one.
pub const DEFAULT_MEMORY: u64 = 2 << 30;
/// Smallest `budget.memory`: 1 MiB.
pub const MIN_MEMORY: u64 = 1 << 20;
/// Largest `budget.memory`: 1 TiB.
pub const MAX_MEMORY: u64 = 1 << 40;

/// Bytes per Maglev slot: the table's 16-bit backend index, and one bit of the bitmap of
/// taken slots that the build keeps while it fills the table (rounded up to a byte).
const SLOT_BYTES: u64 = 2 + 1;
/// Bytes per backend: its entry, its Maglev identity, its place in the id index and maps.
const BACKEND_BYTES: u64 = size_of::<Backend>() as u64 + 128;
/// Bytes per service besides its table and backends: its entry, the round-robin sequence
/// (at most 4096 16-bit turns) and its map entries.
const SERVICE_BYTES: u64 = size_of::<Service>() as u64 + 4096 * 2 + 256;

/// The estimated bytes of one service of `table_size` slots and `backends` backends.
pub fn service_bytes(table_size: u32, backends: usize) -> u64 {
    let backends = u64::try_from(backends).unwrap_or(u64::MAX);
    SERVICE_BYTES
        .saturating_add(u64::from(table_size).saturating_mul(SLOT_BYTES))
        .saturating_add(backends.saturating_mul(BACKEND_BYTES))
}

/// `2GiB`, `512 MiB`, `4096`: bytes, or `None` if not a size or beyond `u64`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// `bytes` for people: `1.5 GiB`, `64.0 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if bytes >= 1 << shift {
            return format!("{:.1} {name}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_dominates_a_large_service() {
        let b = service_bytes(4_194_301, 10);
        assert!(b >= 4_194_301 * 3, "{b}");
        assert!(b < 4_194_301 * 3 + (1 << 20), "{b}");
        // 1000 such services are far beyond the default budget.
        assert!(1000 * b > DEFAULT_MEMORY);
    }

    #[test]
    fn no_overflow_at_the_extremes() {
        assert_eq!(service_bytes(u32::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn sizes_parse_with_or_without_a_unit() {
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size(" 512 MiB "), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "2 GB", "-1", "1.5GiB", "GiB", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(2 << 30), "2.0 GiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
        assert_eq!(human(100), "100 B");
    }
}
