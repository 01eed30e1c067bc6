//! ARP for IPv4 over Ethernet (RFC 826).

use super::{read_u16, write_u16, Mac, WireError};
use std::net::Ipv4Addr;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: core::ops::Range<usize> = 8..14;
    pub const SPA: core::ops::Range<usize> = 14..18;
    pub const THA: core::ops::Range<usize> = 18..24;
    pub const TPA: core::ops::Range<usize> = 24..28;
}

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only hardware type Ethernet, protocol IPv4, lengths 6/4, op request or reply.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(b, field::HTYPE) != 1
            || read_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        let op = read_u16(b, field::OPER);
        if op != OP_REQUEST && op != OP_REPLY {
            return Err(WireError::Unsupported);
        }
        Ok(Self { buffer })
    }

    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_mac(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        m
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    pub fn target_mac(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        m
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Writes an Ethernet/IPv4 ARP packet into the first 28 bytes of `b`.
pub fn emit(
    b: &mut [u8],
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) {
    write_u16(b, field::HTYPE, 1);
    write_u16(b, field::PTYPE, 0x0800);
    b[field::HLEN] = 6;
    b[field::PLEN] = 4;
    write_u16(b, field::OPER, op);
    b[field::SHA].copy_from_slice(&sender_mac);
    b[field::SPA].copy_from_slice(&sender_ip.octets());
    b[field::THA].copy_from_slice(&target_mac);
    b[field::TPA].copy_from_slice(&target_ip.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 198.18.0.1? Tell 198.18.0.2 (02:00:00:00:00:02).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0x02, 198, 18, 0, 2, 0, 0, 0, 0, 0,
        0, 198, 18, 0, 1,
    ];

    #[test]
    fn parse_request() {
        let a = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_mac(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(a.sender_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(a.target_ip(), Ipv4Addr::new(198, 18, 0, 1));
    }

    #[test]
    fn emit_matches_literal() {
        let mut b = [0u8; 28];
        emit(
            &mut b,
            OP_REQUEST,
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 0, 2),
            [0; 6],
            Ipv4Addr::new(198, 18, 0, 1),
        );
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn refuses_other_kinds() {
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(), WireError::Truncated);
        let mut ipv6 = REQUEST;
        ipv6[2] = 0x86;
        ipv6[3] = 0xdd;
        assert_eq!(ArpPacket::new_checked(&ipv6[..]).unwrap_err(), WireError::Unsupported);
        let mut rarp = REQUEST;
        rarp[7] = 3;
        assert_eq!(ArpPacket::new_checked(&rarp[..]).unwrap_err(), WireError::Unsupported);
    }
}
