//! A session region's header page and identity map on arbitrary bytes (what a restarted
//! sluiced reads from a file another process, a torn write or anyone with access left).
//!
//! The bytes go to `Header::parse` (for the slot count they name and for another), to the
//! cookie-key reader, to `IdMap::decode`, and, as the two copies of the map area, to
//! `read_ids` and `next_copy`. Asserts: no panic; a header that parses encodes back to the
//! same header; a map that decodes encodes back to the same bytes; `next_copy` never
//! picks the copy `read_ids` read the newest map from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::region::{self, Header, IdMap, HEADER_BYTES, IDS_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; HEADER_BYTES];
    page[..data.len().min(HEADER_BYTES)].copy_from_slice(&data[..data.len().min(HEADER_BYTES)]);
    let slots = u64::from_le_bytes(page[16..24].try_into().unwrap_or_default());
    if let Ok(h) = Header::parse(&page, slots) {
        let mut again = vec![0u8; HEADER_BYTES];
        h.encode(&mut again);
        assert_eq!(Header::parse(&again, slots), Ok(h), "a parsed header encodes back");
        let _ = Header::file_bytes(h.slots);
    }
    let _ = Header::parse(&page, slots.wrapping_add(1));
    let _ = Header::parse(data, 64);
    let _ = region::decode_cookie(data);
    if let Ok(m) = IdMap::decode(data) {
        assert_eq!(m.encode().as_deref(), Ok(data), "a decoded map encodes back");
    }
    // As the map area: each copy's prefix then payload, the second copy from the bytes' middle.
    let mut areas = vec![0u8; 2 * IDS_BYTES];
    let half = data.len() / 2;
    areas[..half].copy_from_slice(&data[..half]);
    areas[IDS_BYTES..IDS_BYTES + data.len() - half].copy_from_slice(&data[half..]);
    let newest = region::read_ids(&areas);
    let (copy, seq) = region::next_copy(&areas);
    assert!(copy < 2 && seq > 0);
    if newest.is_some() {
        let other = region::read_copy(&areas[(1 - copy) * IDS_BYTES..(2 - copy) * IDS_BYTES]);
        assert!(other.is_some(), "the copy kept is a whole one");
    }
});
