//! TCP (RFC 9293): header fields and checksum.

use super::{checksum, read_u16, read_u32, write_u16, write_u32, WireError};
use std::net::{Ipv4Addr, Ipv6Addr};

pub const HEADER_LEN: usize = 20;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A view of a TCP segment (the whole IP payload).
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The source and destination ports and the flags of the segment at the start of `b`, with
/// the checks of [`TcpPacket::new_checked`]: the first pass's one read of the fixed header.
#[inline(always)]
pub fn ports_and_flags(b: &[u8]) -> Result<(u16, u16, u8), WireError> {
    let Some(h) = b.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    let off = usize::from(h[field::OFFSET] >> 4) * 4;
    if off < HEADER_LEN {
        return Err(WireError::Malformed);
    }
    if off > b.len() {
        return Err(WireError::Truncated);
    }
    Ok((u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]), h[field::FLAGS]))
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks that the fixed header fits and that 20 <= data offset <= segment length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = usize::from(b[field::OFFSET] >> 4) * 4;
        if off < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if off > b.len() {
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

    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFFSET] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The option bytes, between the fixed header and the data.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Verifies the checksum over the IPv4 pseudo-header and the whole segment.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src.octets(), dst.octets(), 6, b.len() as u16);
        checksum::fold(checksum::combine(ph, checksum::sum(b))) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header (RFC 8200 8.1: `dst` is the final
    /// destination when a routing header is present) and the whole segment.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src.octets(), dst.octets(), 6, b.len() as u32);
        checksum::fold(checksum::combine(ph, checksum::sum(b))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    pub fn set_dst_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    pub fn set_seq(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ, v);
    }

    pub fn set_ack(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::ACK, v);
    }

    pub fn set_window(&mut self, w: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, w);
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// The option bytes, between the fixed header and the data.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    /// Recomputes the checksum over the IPv4 pseudo-header and the whole segment.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src.octets(), dst.octets(), 6, b.len() as u16);
        let c = !checksum::fold(checksum::combine(ph, checksum::sum(b)));
        self.set_checksum(c);
    }

    /// Recomputes the checksum over the IPv6 pseudo-header and the whole segment.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src.octets(), dst.octets(), 6, b.len() as u32);
        let c = !checksum::fold(checksum::combine(ph, checksum::sum(b)));
        self.set_checksum(c);
    }
}

/// The fields of a TCP header, for building a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes; padded with end-of-options to a multiple of 4 when emitted.
    pub options: &'a [u8],
}

impl TcpRepr<'_> {
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len().div_ceil(4) * 4
    }

    /// Writes the header into `b`, whose bytes after `header_len()` are the payload, and fills
    /// the checksum over the whole of `b`. Options longer than 40 bytes are the caller's error.
    pub fn emit_v4(&self, b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
        self.emit_header(b);
        if let Ok(mut p) = TcpPacket::new_checked(b) {
            p.fill_checksum_v4(src, dst);
        }
    }

    /// As [`TcpRepr::emit_v4`], the checksum over the IPv6 pseudo-header.
    pub fn emit_v6(&self, b: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
        self.emit_header(b);
        if let Ok(mut p) = TcpPacket::new_checked(b) {
            p.fill_checksum_v6(src, dst);
        }
    }

    /// Writes the header with a zero checksum.
    fn emit_header(&self, b: &mut [u8]) {
        let hl = self.header_len();
        write_u16(b, field::SRC_PORT, self.src_port);
        write_u16(b, field::DST_PORT, self.dst_port);
        write_u32(b, field::SEQ, self.seq);
        write_u32(b, field::ACK, self.ack);
        b[field::OFFSET] = ((hl / 4) as u8) << 4;
        b[field::FLAGS] = self.flags;
        write_u16(b, field::WINDOW, self.window);
        write_u16(b, field::CHECKSUM, 0);
        write_u16(b, field::CHECKSUM + 2, 0);
        b[HEADER_LEN..HEADER_LEN + self.options.len()].copy_from_slice(self.options);
        b[HEADER_LEN + self.options.len()..hl].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: TCP(sport=40000, dport=80, seq=0x01020304, ack=0x0a0b0c0d, flags="SA",
    // window=29200, options=[MSS 1460, NOP, WScale 7]) / "hi", 198.18.0.2 -> 198.18.10.1
    const SYNACK: [u8; 30] = [
        0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x70, 0x12, 0x72, 0x10, 0x5c,
        0xb6, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07, 0x68, 0x69,
    ];

    #[test]
    fn ports_and_flags_reads_and_refuses_as_the_view_does() {
        assert_eq!(ports_and_flags(&SYNACK), Ok((40000, 80, 0x12)));
        for len in 0..=SYNACK.len() {
            for offset_byte in [0x00, 0x40, 0x50, 0x70, 0x80, 0xf0] {
                let mut b = SYNACK;
                b[field::OFFSET] = offset_byte;
                let view = TcpPacket::new_checked(&b[..len]).map(|t| (t.src_port(), t.dst_port(), t.flags()));
                assert_eq!(ports_and_flags(&b[..len]), view, "{len} bytes, offset byte {offset_byte:#x}");
            }
        }
    }

    #[test]
    fn emit_matches_scapy() {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            flags: SYN | ACK,
            window: 29200,
            options: &[0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07],
        };
        let mut b = [0u8; 30];
        b[28..].copy_from_slice(b"hi");
        r.emit_v4(&mut b, Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 10, 1));
        assert_eq!(b, SYNACK);
        // Odd-length options are padded.
        let short = TcpRepr { options: &[0x01, 0x01, 0x01, 0x01, 0x01], ..r };
        assert_eq!(short.header_len(), 28);
    }

    #[test]
    fn emit_v6_matches_scapy() {
        // scapy: raw(IPv6(src='2001:db8::1', dst='2001:db8:0:1::80')/TCP(sport=40000, dport=80,
        //     seq=0x01020304, ack=0x0a0b0c0d, flags="SA", window=29200, options=[('MSS', 1440),
        //     ('NOP', None), ('WScale', 7)])/"hi")[40:]
        let want = [
            0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x70, 0x12, 0x72, 0x10,
            0x96, 0xfe, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x01, 0x03, 0x03, 0x07, 0x68, 0x69,
        ];
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("2001:db8::1".parse().unwrap(), "2001:db8:0:1::80".parse().unwrap());
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            flags: SYN | ACK,
            window: 29200,
            options: &[0x02, 0x04, 0x05, 0xa0, 0x01, 0x03, 0x03, 0x07],
        };
        let mut b = [0u8; 30];
        b[28..].copy_from_slice(b"hi");
        r.emit_v6(&mut b, src, dst);
        assert_eq!(b, want);
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_checksum_v6(src, dst));
        assert!(!p.verify_checksum_v6("2001:db8::2".parse().unwrap(), dst));
        p.set_checksum(0x1234);
        p.fill_checksum_v6(src, dst);
        assert_eq!(b, want);
    }

    // 198.18.0.2:40000 -> 198.18.10.1:80 SYN, seq 1, window 64240, no options.
    fn syn() -> Vec<u8> {
        let mut s = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0xfa, 0xf0, 0, 0, 0, 0];
        let mut p = TcpPacket::new_checked(&mut s[..]).unwrap();
        p.fill_checksum_v4(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 10, 1));
        s
    }

    #[test]
    fn fields() {
        let s = syn();
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!(p.seq(), 1);
        assert_eq!(p.flags(), SYN);
        assert_eq!(p.window(), 64240);
        assert!(p.verify_checksum_v4(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 10, 1)));
        assert!(!p.verify_checksum_v4(Ipv4Addr::new(198, 18, 0, 3), Ipv4Addr::new(198, 18, 10, 1)));
    }

    #[test]
    fn setters_write_their_fields_only() {
        let mut s = SYNACK;
        let mut p = TcpPacket::new_checked(&mut s[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq(3);
        p.set_ack(4);
        p.set_window(5);
        p.set_checksum(6);
        p.options_mut()[0] = KIND_NOP_FOR_TEST;
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq(), p.ack()), (1, 2, 3, 4));
        assert_eq!((p.window(), p.checksum(), p.flags(), p.header_len()), (5, 6, SYN | ACK, 28));
        assert_eq!(p.options(), &[1, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07]);
        assert_eq!(p.payload(), b"hi");
    }

    const KIND_NOP_FOR_TEST: u8 = 1;

    #[test]
    fn refuses_bad_offsets() {
        let s = syn();
        assert_eq!(TcpPacket::new_checked(&s[..19]).unwrap_err(), WireError::Truncated);
        let mut small = s.clone();
        small[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&small[..]).unwrap_err(), WireError::Malformed);
        let mut big = s.clone();
        big[12] = 0x60; // 24 bytes claimed, 20 present
        assert_eq!(TcpPacket::new_checked(&big[..]).unwrap_err(), WireError::Truncated);
    }
}
