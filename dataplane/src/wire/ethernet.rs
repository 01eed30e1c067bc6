//! Ethernet II frames, with an optional 802.1Q tag.

use super::{read_u16, write_u16, Mac, WireError};
use core::ops::Range;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    /// With an 802.1Q tag: TCI at 14, the inner EtherType at 16.
    pub const TCI: usize = 14;
    pub const INNER_TYPE: usize = 16;
}

pub const HEADER_LEN: usize = 14;
pub const VLAN_HEADER_LEN: usize = 18;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Validates that the header (and the 802.1Q tag, if any) fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(b, field::TYPE) == ETHERTYPE_VLAN && b.len() < VLAN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn dst(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        m
    }

    pub fn src(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        m
    }

    /// The VLAN id when the frame carries an 802.1Q tag.
    pub fn vlan(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        (read_u16(b, field::TYPE) == ETHERTYPE_VLAN).then(|| read_u16(b, field::TCI) & 0x0fff)
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        match read_u16(b, field::TYPE) {
            ETHERTYPE_VLAN => read_u16(b, field::INNER_TYPE),
            t => t,
        }
    }

    pub fn header_len(&self) -> usize {
        if self.vlan().is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    pub fn payload_range(&self) -> Range<usize> {
        self.header_len()..self.buffer.as_ref().len()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, m: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m);
    }

    pub fn set_src(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m);
    }

    /// Addresses the frame back to its sender, from `mac` (the VLAN tag and EtherType stay).
    #[inline]
    pub fn reply_to_sender(&mut self, mac: Mac) {
        let sender = self.src();
        self.set_dst(sender);
        self.set_src(mac);
    }
}

/// Addresses the frame at the front of `b` back to its sender, from `mac` (nothing if `b` is
/// shorter than an Ethernet header).
pub fn turn_around(b: &mut [u8], mac: Mac) {
    if let Ok(mut eth) = EthernetFrame::new_checked(b) {
        eth.reply_to_sender(mac);
    }
}

/// Writes the destination MAC of the frame at the front of `b` (headers built from a template).
#[inline(always)]
pub fn write_dst(b: &mut [u8], m: Mac) {
    b[field::DST].copy_from_slice(&m);
}

/// The fields of an Ethernet header, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Option<u16>,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header to the front of `b`, which must hold at least `header_len()` bytes.
    #[inline]
    pub fn emit(&self, b: &mut [u8]) {
        b[field::DST].copy_from_slice(&self.dst);
        b[field::SRC].copy_from_slice(&self.src);
        match self.vlan {
            Some(vid) => {
                write_u16(b, field::TYPE, ETHERTYPE_VLAN);
                write_u16(b, field::TCI, vid & 0x0fff);
                write_u16(b, field::INNER_TYPE, self.ethertype);
            }
            None => write_u16(b, field::TYPE, self.ethertype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, 0xaa, 0xbb];
    const TAGGED: [u8; 20] =
        [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x81, 0x00, 0x20, 0x64, 0x08, 0x06, 0xaa, 0xbb];

    #[test]
    fn untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), [0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(f.src(), [0x02, 0, 0, 0, 0, 0x02]);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn tagged_masks_priority_bits() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.vlan(), Some(100)); // TCI 0x2064: PCP 1, VID 100
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn reply_to_sender_swaps_in_our_mac() {
        let mut b = TAGGED;
        EthernetFrame::new_checked(&mut b[..]).unwrap().reply_to_sender([0x02, 0, 0, 0, 0, 0x09]);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst(), [0x02, 0, 0, 0, 0, 0x02]);
        assert_eq!(f.src(), [0x02, 0, 0, 0, 0, 0x09]);
        assert_eq!(&b[12..], &TAGGED[12..], "tag, EtherType and payload untouched");
    }

    #[test]
    fn truncated() {
        assert_eq!(EthernetFrame::new_checked(&UNTAGGED[..13]).unwrap_err(), WireError::Truncated);
        assert_eq!(EthernetFrame::new_checked(&TAGGED[..17]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn emit_round_trip() {
        for vlan in [None, Some(100)] {
            let r = EthernetRepr { dst: [1; 6], src: [2; 6], vlan, ethertype: ETHERTYPE_IPV4 };
            let mut b = [0u8; 18];
            r.emit(&mut b);
            let f = EthernetFrame::new_checked(&b[..]).unwrap();
            assert_eq!((f.dst(), f.src(), f.vlan(), f.ethertype()), (r.dst, r.src, vlan, r.ethertype));
            assert_eq!(f.header_len(), r.header_len());
        }
    }
}
