//! GRE (RFC 2784) with the key and sequence extensions (RFC 2890).

use super::{checksum, read_u16, read_u32, write_u16, write_u32, WireError};

const FLAG_C: u16 = 0x8000;
const FLAG_R: u16 = 0x4000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
const VERSION_MASK: u16 = 0x0007;
/// Strict source route and recursion control bits (RFC 1701), which RFC 2784 retired.
const LEGACY_MASK: u16 = 0x0800 | 0x0700;

pub const BASE_LEN: usize = 4;

fn header_len(flags: u16) -> usize {
    BASE_LEN
        + if flags & FLAG_C != 0 { 4 } else { 0 }
        + if flags & FLAG_K != 0 { 4 } else { 0 }
        + if flags & FLAG_S != 0 { 4 } else { 0 }
}

/// A view of a GRE header and payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Accepts version 0 without the RFC 1701 routing fields; checks that the optional
    /// checksum, key and sequence words fit.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < BASE_LEN {
            return Err(WireError::Truncated);
        }
        let flags = read_u16(b, 0);
        if flags & VERSION_MASK != 0 || flags & (FLAG_R | LEGACY_MASK) != 0 {
            return Err(WireError::Unsupported);
        }
        if header_len(flags) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 0)
    }

    pub fn has_checksum(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    pub fn protocol(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    fn key_offset(&self) -> usize {
        if self.has_checksum() {
            8
        } else {
            4
        }
    }

    pub fn key(&self) -> Option<u32> {
        (self.flags() & FLAG_K != 0).then(|| read_u32(self.buffer.as_ref(), self.key_offset()))
    }

    pub fn sequence(&self) -> Option<u32> {
        let f = self.flags();
        (f & FLAG_S != 0).then(|| {
            let at = self.key_offset() + if f & FLAG_K != 0 { 4 } else { 0 };
            read_u32(self.buffer.as_ref(), at)
        })
    }

    pub fn header_len(&self) -> usize {
        header_len(self.flags())
    }

    /// With the C bit set, the checksum covers the GRE header and payload.
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// The GRE header Sluice sends: no checksum, no sequence, an optional key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreRepr {
    pub protocol: u16,
    pub key: Option<u32>,
}

impl GreRepr {
    pub fn header_len(&self) -> usize {
        BASE_LEN + if self.key.is_some() { 4 } else { 0 }
    }

    pub fn emit(&self, b: &mut [u8]) {
        write_u16(b, 0, if self.key.is_some() { FLAG_K } else { 0 });
        write_u16(b, 2, self.protocol);
        if let Some(k) = self.key {
            write_u32(b, 4, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_keyed() {
        let plain = [0x00, 0x00, 0x08, 0x00, 0x45];
        let g = GrePacket::new_checked(&plain[..]).unwrap();
        assert_eq!((g.protocol(), g.key(), g.header_len()), (0x0800, None, 4));
        assert_eq!(g.payload(), &[0x45]);

        let keyed = [0x20, 0x00, 0x08, 0x00, 0x00, 0x00, 0x03, 0xe9, 0x45];
        let g = GrePacket::new_checked(&keyed[..]).unwrap();
        assert_eq!((g.key(), g.header_len()), (Some(1001), 8));
        assert_eq!(g.payload(), &[0x45]);
    }

    #[test]
    fn checksum_key_sequence() {
        // C, K and S set: checksum word, key 7, sequence 9, then payload.
        let mut b = vec![0xb0, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0x45, 0x00];
        let c = checksum::checksum(&b);
        b[4..6].copy_from_slice(&c.to_be_bytes());
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!((g.key(), g.sequence(), g.header_len()), (Some(7), Some(9), 16));
        assert!(g.verify_checksum());
        b[17] = 1;
        assert!(!GrePacket::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn refuses() {
        assert_eq!(GrePacket::new_checked(&[0x20, 0, 8, 0, 0][..]).unwrap_err(), WireError::Truncated);
        assert_eq!(GrePacket::new_checked(&[0x00, 0x01, 8, 0][..]).unwrap_err(), WireError::Unsupported);
        assert_eq!(GrePacket::new_checked(&[0x40, 0x00, 8, 0][..]).unwrap_err(), WireError::Unsupported);
    }

    #[test]
    fn emit_round_trip() {
        for key in [None, Some(0xdead_beef)] {
            let r = GreRepr { protocol: 0x0800, key };
            let mut b = [0u8; 8];
            r.emit(&mut b);
            let g = GrePacket::new_checked(&b[..r.header_len()]).unwrap();
            assert_eq!((g.protocol(), g.key(), g.header_len()), (0x0800, key, r.header_len()));
        }
    }
}
