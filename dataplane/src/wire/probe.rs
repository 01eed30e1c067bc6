//! The tunnel-path probe's payload: what the appliance puts in a UDP datagram to
//! [`PORT`] inside a backend's tunnel, and what the host agent looks for after decapsulating.
//!
//! | offset | size | field                           |
//! |-------:|-----:|---------------------------------|
//! |      0 |    8 | magic `SLPROBE1`                |
//! |      8 |    8 | nonce, big-endian               |
//!
//! Declared here once for both ends: the dataplane builds it (`pipeline/probe.rs`), the agent
//! recognises it (`control/agent/src/tunnel.rs`).

/// The reserved UDP destination port of a probe. The agent consumes every datagram to it that
/// carries [`MAGIC`]; a VM never sees one.
pub const PORT: u16 = 7948;
/// The payload's first bytes.
pub const MAGIC: [u8; 8] = *b"SLPROBE1";
/// The payload's length: the magic and the nonce.
pub const PAYLOAD_LEN: usize = 16;

/// Writes the payload carrying `nonce` into `b[..PAYLOAD_LEN]`; false, nothing written, if
/// `b` is shorter.
pub fn emit(b: &mut [u8], nonce: u64) -> bool {
    let Some(p) = b.get_mut(..PAYLOAD_LEN) else { return false };
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&nonce.to_be_bytes());
    true
}

/// The nonce of a probe's UDP payload: exactly [`PAYLOAD_LEN`] bytes starting with [`MAGIC`].
pub fn parse(payload: &[u8]) -> Option<u64> {
    let p: &[u8; PAYLOAD_LEN] = payload.try_into().ok()?;
    if p[..8] != MAGIC {
        return None;
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&p[8..]);
    Some(u64::from_be_bytes(nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_and_anything_else_is_not_a_probe() {
        let mut b = [0u8; PAYLOAD_LEN];
        assert!(emit(&mut b, 0x0102_0304_0506_0708));
        assert_eq!(&b, b"SLPROBE1\x01\x02\x03\x04\x05\x06\x07\x08");
        assert_eq!(parse(&b), Some(0x0102_0304_0506_0708));
        assert!(!emit(&mut [0u8; PAYLOAD_LEN - 1], 1));
        assert_eq!(parse(&b[..PAYLOAD_LEN - 1]), None, "short");
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(parse(&long), None, "long");
        b[0] ^= 1;
        assert_eq!(parse(&b), None, "wrong magic");
    }
}
