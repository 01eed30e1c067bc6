//! Minimal pcap file writing and reading for tests (classic format, Ethernet link type).
//! Reads both microsecond and nanosecond files; tolerates a last record still being written.

use std::io::Write;

pub fn write(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    f.write_all(&h).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        let mut r = Vec::new();
        r.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        r.extend_from_slice(&(i as u32).to_le_bytes());
        r.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        r.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        r.extend_from_slice(fr);
        f.write_all(&r).unwrap();
    }
}

/// The complete records in the file (none if the header is not there yet).
pub fn read(path: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(b) = std::fs::read(path) else { return Vec::new() };
    if b.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d, "not a little-endian pcap: {magic:#x}");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 16 + incl > b.len() {
            break;
        }
        out.push(b[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    out
}
