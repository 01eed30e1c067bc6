//! UDP (RFC 768).

use super::{checksum, read_u16, write_u16, WireError};
use std::net::{Ipv4Addr, Ipv6Addr};

pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram (the whole IP payload).
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The source and destination ports of the datagram at the start of `b`, with the checks of
/// [`UdpPacket::new_checked`] if `whole`, else of [`UdpPacket::first_fragment`]: the first
/// pass's one read of the header.
#[inline(always)]
pub fn ports(b: &[u8], whole: bool) -> Result<(u16, u16), WireError> {
    let Some(h) = b.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    if whole {
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
    }
    Ok((u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])))
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks that 8 <= length field <= buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(read_u16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The header of a datagram's first fragment: 8 bytes at least, the length field (which
    /// counts the whole datagram, not this fragment) not checked; `payload` is then empty
    /// if it does not fit.
    pub fn first_fragment(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..self.len()).unwrap_or_default()
    }

    /// Verifies the checksum over the IPv6 pseudo-header and the datagram (its length field's
    /// worth). A checksum of zero fails: over IPv6 it is mandatory (RFC 8200 8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let Some(d) = self.buffer.as_ref().get(..self.len()) else {
            return false;
        };
        let ph = checksum::pseudo_header_v6(src.octets(), dst.octets(), 17, d.len() as u32);
        self.checksum() != 0 && checksum::fold(checksum::combine(ph, checksum::sum(d))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    pub fn set_dst_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

/// The fields of a UDP header, for building a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Writes the header into `b`, whose bytes after the 8-byte header are the payload, with
    /// the length of all of `b` and a checksum over it (0 is sent as 0xffff, RFC 768).
    pub fn emit_v4(&self, b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
        let len = b.len() as u16;
        write_u16(b, field::SRC_PORT, self.src_port);
        write_u16(b, field::DST_PORT, self.dst_port);
        write_u16(b, field::LENGTH, len);
        write_u16(b, field::CHECKSUM, 0);
        let ph = checksum::pseudo_header_v4(src.octets(), dst.octets(), 17, len);
        let c = !checksum::fold(checksum::combine(ph, checksum::sum(b)));
        write_u16(b, field::CHECKSUM, if c == 0 { 0xffff } else { c });
    }

    /// As [`UdpRepr::emit_v4`], the checksum over the IPv6 pseudo-header (mandatory there: a
    /// computed 0 is sent as 0xffff, RFC 8200 8.1).
    pub fn emit_v6(&self, b: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
        let len = b.len() as u16;
        write_u16(b, field::SRC_PORT, self.src_port);
        write_u16(b, field::DST_PORT, self.dst_port);
        write_u16(b, field::LENGTH, len);
        write_u16(b, field::CHECKSUM, 0);
        let ph = checksum::pseudo_header_v6(src.octets(), dst.octets(), 17, u32::from(len));
        let c = !checksum::fold(checksum::combine(ph, checksum::sum(b)));
        write_u16(b, field::CHECKSUM, if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_reads_and_refuses_as_the_view_does() {
        let mut b = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0x04, 0xa6, 0x71, 0x75, 0x65, 0x72, 0x79];
        assert_eq!(ports(&b, true), Ok((5353, 53)));
        for field_len in [0u8, 7, 8, 13, 14, 255] {
            b[5] = field_len;
            for len in 0..=b.len() {
                let whole = UdpPacket::new_checked(&b[..len]).map(|u| (u.src_port(), u.dst_port()));
                assert_eq!(ports(&b[..len], true), whole, "{len} bytes, length field {field_len}");
                let first = UdpPacket::first_fragment(&b[..len]).map(|u| (u.src_port(), u.dst_port()));
                assert_eq!(ports(&b[..len], false), first, "{len} bytes, length field {field_len}");
            }
        }
    }

    #[test]
    fn emit_matches_scapy() {
        // scapy: UDP(sport=5353, dport=53) / "query", 198.18.0.2 -> 198.18.10.1
        let want = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0x04, 0xa6, 0x71, 0x75, 0x65, 0x72, 0x79];
        let mut b = [0u8; 13];
        b[8..].copy_from_slice(b"query");
        UdpRepr { src_port: 5353, dst_port: 53 }.emit_v4(
            &mut b,
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 10, 1),
        );
        assert_eq!(b, want);
    }

    fn v6() -> (Ipv6Addr, Ipv6Addr) {
        ("2001:db8::1".parse().unwrap(), "2001:db8:0:1::80".parse().unwrap())
    }

    #[test]
    fn emit_v6_matches_scapy() {
        // scapy: raw(IPv6(src='2001:db8::1', dst='2001:db8:0:1::80')/UDP(sport=5353, dport=53)
        //     /"query")[40:]
        let want = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0x3e, 0xda, 0x71, 0x75, 0x65, 0x72, 0x79];
        let (src, dst) = v6();
        let mut b = [0u8; 13];
        b[8..].copy_from_slice(b"query");
        UdpRepr { src_port: 5353, dst_port: 53 }.emit_v6(&mut b, src, dst);
        assert_eq!(b, want);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(u.verify_checksum_v6(src, dst));
        assert!(!u.verify_checksum_v6("2001:db8::2".parse().unwrap(), dst));
        // With link padding after the datagram: the length field decides.
        let mut padded = b.to_vec();
        padded.extend_from_slice(&[1, 2, 3]);
        assert!(UdpPacket::new_checked(&padded[..]).unwrap().verify_checksum_v6(src, dst));
    }

    #[test]
    fn v6_checksum_zero_is_sent_as_ffff_and_refused() {
        // scapy: raw(IPv6(src='2001:db8::1', dst='2001:db8:0:1::80')/UDP(sport=1, dport=2)
        //     /b'\xa3\xe3')[40:]: the sum is zero, the checksum field 0xffff
        let want = [0x00, 0x01, 0x00, 0x02, 0x00, 0x0a, 0xff, 0xff, 0xa3, 0xe3];
        let (src, dst) = v6();
        let mut b = [0u8; 10];
        b[8..].copy_from_slice(&[0xa3, 0xe3]);
        UdpRepr { src_port: 1, dst_port: 2 }.emit_v6(&mut b, src, dst);
        assert_eq!(b, want);
        assert!(UdpPacket::new_checked(&b[..]).unwrap().verify_checksum_v6(src, dst));
        b[6..8].fill(0);
        assert!(!UdpPacket::new_checked(&b[..]).unwrap().verify_checksum_v6(src, dst), "0 means none");
    }

    const DGRAM: [u8; 12] = [0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g'];

    #[test]
    fn fields() {
        let u = UdpPacket::new_checked(&DGRAM[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (40000, 53, 12));
        assert_eq!(u.payload(), b"ping");
    }

    #[test]
    fn setters_write_their_fields_only() {
        let mut d = DGRAM;
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.set_src_port(7);
        u.set_dst_port(8);
        u.set_checksum(9);
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.checksum(), u.len()), (7, 8, 9, 12));
        assert_eq!(u.payload(), b"ping");
    }

    #[test]
    fn refuses_bad_lengths() {
        assert_eq!(UdpPacket::new_checked(&DGRAM[..7]).unwrap_err(), WireError::Truncated);
        assert_eq!(UdpPacket::new_checked(&DGRAM[..11]).unwrap_err(), WireError::Truncated);
        let mut short = DGRAM;
        short[5] = 7;
        assert_eq!(UdpPacket::new_checked(&short[..]).unwrap_err(), WireError::Malformed);
    }
}
