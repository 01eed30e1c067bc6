//! ICMPv4 error messages (RFC 792; fragmentation needed with the next-hop MTU, RFC 1191) and
//! the packet they quote: the quoted flow read, one quoted endpoint rewritten for NAT, and a
//! message built.
//!
//! An error message is the 8-byte ICMP header (type, code, checksum, four bytes whose meaning
//! depends on the type) and then the quote: the start of the packet that caused the error, its
//! IP header and at least 8 bytes after it (RFC 792); many stacks quote more (RFC 1812 4.3.2.3:
//! as much as fits in a 576-byte datagram), some more still. Every quoted byte present is
//! accepted, up to the end of the message.

use super::endpoint::End;
use super::icmp::{HEADER_LEN, TYPE_DEST_UNREACHABLE};
use super::ipv4::{self, FRAG_OFFSET_MASK};
use super::{checksum, read_u16, read_u32, write_u16, WireError};
use std::net::{IpAddr, Ipv4Addr};

pub const TYPE_TIME_EXCEEDED: u8 = 11;
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;
/// Destination unreachable, fragmentation needed and DF set: bytes 6..8 hold the next-hop MTU.
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Fewest bytes a quote holds: an IP header without options and 8 bytes of transport header.
pub const QUOTE_MIN: usize = ipv4::HEADER_LEN + 8;
/// Most bytes [`emit`] quotes: what fits in a 576-byte datagram after its IP and ICMP headers.
pub const QUOTE_MAX: usize = 576 - ipv4::HEADER_LEN - HEADER_LEN;

mod field {
    /// In the ICMP header: the checksum, and the next-hop MTU of fragmentation needed.
    pub const CHECKSUM: usize = 2;
    pub const REST: core::ops::Range<usize> = 4..8;
    /// In the quoted IP header.
    pub const IP_FLAGS_FRAG: usize = 6;
    pub const IP_PROTOCOL: usize = 9;
    pub const IP_CHECKSUM: usize = 10;
    pub const IP_SRC: usize = 12;
    pub const IP_DST: usize = 16;
    /// In the quoted TCP or UDP header.
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const TCP_SEQ: usize = 4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_CHECKSUM: usize = 16;
}

/// Whether an ICMP type is one of the errors this module reads: destination unreachable, time
/// exceeded or parameter problem.
pub fn is_error(msg_type: u8) -> bool {
    matches!(msg_type, TYPE_DEST_UNREACHABLE | TYPE_TIME_EXCEEDED | TYPE_PARAMETER_PROBLEM)
}

/// The flow of a quoted TCP or UDP packet, as that packet was sent (so its source is the end
/// that the error message is addressed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Length of the quoted IP header, options included.
    pub ihl: usize,
    /// Quoted bytes present, from the quoted IP header to the end of the message.
    pub len: usize,
}

impl Quoted {
    /// Reads a quote (the bytes after the ICMP header). It must hold an IPv4 header (version 4,
    /// header length at least 20, all of it present) of a TCP or UDP packet that is not a
    /// fragment past the first, and 8 bytes after that header. Errors: `Truncated` for a short
    /// quote, `Malformed` for a bad version or header length, `Fragment` for a non-zero fragment
    /// offset, `Unsupported` for another protocol.
    pub fn parse(q: &[u8]) -> Result<Self, WireError> {
        let Some(h) = q.first_chunk::<{ ipv4::HEADER_LEN }>() else {
            return Err(WireError::Truncated);
        };
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < ipv4::HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if read_u16(h, field::IP_FLAGS_FRAG) & FRAG_OFFSET_MASK != 0 {
            return Err(WireError::Fragment);
        }
        let protocol = h[field::IP_PROTOCOL];
        if protocol != ipv4::PROTO_TCP && protocol != ipv4::PROTO_UDP {
            return Err(WireError::Unsupported);
        }
        let Some(l4) = q.get(ihl..ihl + 8) else {
            return Err(WireError::Truncated);
        };
        Ok(Quoted {
            src: Ipv4Addr::from(read_u32(h, field::IP_SRC)),
            dst: Ipv4Addr::from(read_u32(h, field::IP_DST)),
            protocol,
            src_port: read_u16(l4, field::SRC_PORT),
            dst_port: read_u16(l4, field::DST_PORT),
            ihl,
            len: q.len(),
        })
    }

    /// Offset in the quote of the transport checksum, when the quote holds it: UDP's always
    /// (bytes 6..8), TCP's when bytes 16..18 of its header are quoted.
    fn l4_checksum_at(&self) -> Option<usize> {
        let at = self.ihl
            + match self.protocol {
                ipv4::PROTO_UDP => field::UDP_CHECKSUM,
                _ => field::TCP_CHECKSUM,
            };
        (at + 2 <= self.len).then_some(at)
    }
}

/// An error message as [`parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub msg_type: u8,
    pub code: u8,
    /// Header bytes 4..8: unused, the parameter problem's pointer (first byte), or the
    /// fragmentation needed's next-hop MTU (last two).
    pub rest: [u8; 4],
    /// Whether the ICMP checksum over the whole message is right.
    pub checksum_ok: bool,
    pub quoted: Quoted,
}

impl IcmpError {
    /// The next-hop MTU of a fragmentation needed message (RFC 1191); zero from a router older
    /// than it. `None` for other messages.
    pub fn next_hop_mtu(&self) -> Option<u16> {
        (self.msg_type == TYPE_DEST_UNREACHABLE && self.code == CODE_FRAG_NEEDED)
            .then(|| u16::from_be_bytes([self.rest[2], self.rest[3]]))
    }
}

/// Reads an ICMP error message (the IP payload, from the ICMP header). Errors: `Truncated`
/// under 8 bytes, `Unsupported` for a type that [`is_error`] refuses, and those of
/// [`Quoted::parse`]. The checksum is checked and the result kept in `checksum_ok`.
pub fn parse(m: &[u8]) -> Result<IcmpError, WireError> {
    let Some(h) = m.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    if !is_error(h[0]) {
        return Err(WireError::Unsupported);
    }
    Ok(IcmpError {
        msg_type: h[0],
        code: h[1],
        rest: [h[4], h[5], h[6], h[7]],
        checksum_ok: checksum::fold(checksum::sum(m)) == 0xffff,
        quoted: Quoted::parse(&m[HEADER_LEN..])?,
    })
}

/// Sets the `end` address and port of the packet quoted by the error message `m` (the IP
/// payload, from the ICMP header), as a NAT translates it. Updates incrementally (RFC 1624):
/// the quoted IP header checksum; the quoted transport checksum when quoted (a UDP checksum of
/// zero, "none", stays zero), which covers unquoted data and so can only be updated; and the
/// ICMP checksum. Errors as [`parse`], and `Unsupported` for an IPv6 address; nothing changes
/// on an error.
pub fn rewrite_quoted(m: &mut [u8], end: End, addr: IpAddr, port: u16) -> Result<(), WireError> {
    let IpAddr::V4(addr) = addr else {
        return Err(WireError::Unsupported);
    };
    let q = parse(m)?.quoted;
    let (ip, l4) = (HEADER_LEN, HEADER_LEN + q.ihl);
    let (addr_at, port_at) = match end {
        End::Src => (ip + field::IP_SRC, l4 + field::SRC_PORT),
        End::Dst => (ip + field::IP_DST, l4 + field::DST_PORT),
    };
    let (old_addr, new_addr) = (read_u32(m, addr_at), u32::from(addr));
    let old_port = read_u16(m, port_at);
    let mut ck = read_u16(m, field::CHECKSUM);
    checksum::put16(m, addr_at, (new_addr >> 16) as u16, &mut ck);
    checksum::put16(m, addr_at + 2, new_addr as u16, &mut ck);
    checksum::put16(m, port_at, port, &mut ck);
    let ip_ck = checksum::update32(read_u16(m, ip + field::IP_CHECKSUM), old_addr, new_addr);
    checksum::put16(m, ip + field::IP_CHECKSUM, ip_ck, &mut ck);
    if let Some(at) = q.l4_checksum_at().map(|at| HEADER_LEN + at) {
        let c = read_u16(m, at);
        if !(q.protocol == ipv4::PROTO_UDP && c == 0) {
            let c = checksum::update16(checksum::update32(c, old_addr, new_addr), old_port, port);
            checksum::put16(m, at, c, &mut ck);
        }
    }
    write_u16(m, field::CHECKSUM, ck);
    Ok(())
}

/// Adds `delta` to the sequence number of the TCP segment quoted by the error message `m` (a
/// SYN proxy's translation undone), updating the quoted TCP checksum (when quoted) and the
/// ICMP checksum incrementally. Errors as [`parse`], and `Unsupported` for a UDP quote;
/// nothing changes on an error.
pub fn shift_quoted_seq(m: &mut [u8], delta: u32) -> Result<(), WireError> {
    let q = parse(m)?.quoted;
    if q.protocol != ipv4::PROTO_TCP {
        return Err(WireError::Unsupported);
    }
    let tcp_checksum_at = q.l4_checksum_at().map(|a| HEADER_LEN + a);
    checksum::shift_seq(m, HEADER_LEN + q.ihl + field::TCP_SEQ, tcp_checksum_at, field::CHECKSUM, delta);
    Ok(())
}

/// Writes an error message into `out`: type, code, the four bytes `rest`, the quote and the
/// checksum. The quote is the start of `packet` (the offending packet from its IP header,
/// without link padding): as much as fits in `out` and in [`QUOTE_MAX`]. Returns the bytes
/// written, 0 if `out` cannot hold the 8-byte header. The caller writes the IP header.
pub fn emit(out: &mut [u8], msg_type: u8, code: u8, rest: [u8; 4], packet: &[u8]) -> usize {
    let Some(room) = out.len().checked_sub(HEADER_LEN) else {
        return 0;
    };
    let n = packet.len().min(QUOTE_MAX).min(room);
    let m = &mut out[..HEADER_LEN + n];
    m[HEADER_LEN..].copy_from_slice(&packet[..n]);
    write_header(m, msg_type, code, rest);
    m.len()
}

/// Writes the header of the error message `m` (at least [`HEADER_LEN`] bytes), whose quote
/// is already in place after it, with the checksum over the whole message.
pub fn write_header(m: &mut [u8], msg_type: u8, code: u8, rest: [u8; 4]) {
    if m.len() < HEADER_LEN {
        return;
    }
    m[0] = msg_type;
    m[1] = code;
    write_u16(m, field::CHECKSUM, 0);
    m[field::REST].copy_from_slice(&rest);
    let c = checksum::checksum(m);
    write_u16(m, field::CHECKSUM, c);
}

/// [`emit`] for fragmentation needed (type 3 code 4) with the next-hop MTU `mtu`.
pub fn emit_frag_needed(out: &mut [u8], packet: &[u8], mtu: u16) -> usize {
    let [hi, lo] = mtu.to_be_bytes();
    emit(out, TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED, [0, 0, hi, lo], packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpRepr};
    use proptest::prelude::*;

    // The headers of the two packets quoted below, made by scapy with PAT = bytes(range(256))*3:
    // raw(IP(src='198.51.100.7', dst='192.0.2.1', id=0x1c46, flags='DF', ttl=64)/TCP(sport=443,
    //     dport=40000, seq=0x01020304, ack=0x0a0b0c0d, flags='PA', window=502)/Raw(PAT))[:40]
    const TCP_HEADERS: [u8; 40] = [
        0x45, 0x00, 0x03, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x2f, 0x4e, 0xc6, 0x33, 0x64, 0x07, 0xc0,
        0x00, 0x02, 0x01, 0x01, 0xbb, 0x9c, 0x40, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x50, 0x18,
        0x01, 0xf6, 0xc5, 0xc1, 0x00, 0x00,
    ];
    // raw(IP(src='198.51.100.7', dst='192.0.2.1', id=0x1c47, ttl=64)/UDP(sport=53, dport=40001)
    //     /Raw(PAT))[:28]
    const UDP_HEADERS: [u8; 28] = [
        0x45, 0x00, 0x03, 0x1c, 0x1c, 0x47, 0x00, 0x00, 0x40, 0x11, 0x6f, 0x4e, 0xc6, 0x33, 0x64, 0x07, 0xc0,
        0x00, 0x02, 0x01, 0x00, 0x35, 0x9c, 0x41, 0x03, 0x08, 0x30, 0x6c,
    ];

    /// A packet above, whole: its headers and PAT.
    fn packet(tcp: bool) -> Vec<u8> {
        let mut p = if tcp { TCP_HEADERS.to_vec() } else { UDP_HEADERS.to_vec() };
        p.extend((0..768).map(|i| i as u8));
        p
    }

    /// (type, code, rest, whether TCP (else UDP), quoted bytes, ICMP header).
    type Row = (u8, u8, [u8; 4], bool, usize, [u8; 8]);

    // The first 8 bytes of scapy's raw(I/Raw(raw(P)[:N])), for I each of ICMP(type=3, code=4,
    // nexthopmtu=1400), ICMP(type=3, code=3), ICMP(type=11, code=0) and ICMP(type=12, code=0,
    // ptr=8) in this order, P the TCP or UDP packet above and N quoted bytes; the bytes after
    // them are raw(P)[:N] (as [`message`] builds).
    #[rustfmt::skip]
    const GOLDEN: [Row; 24] = [
        (3, 4, [0, 0, 5, 0x78], true, 28, [0x03, 0x04, 0x55, 0x82, 0x00, 0x00, 0x05, 0x78]),
        (3, 4, [0, 0, 5, 0x78], true, 48, [0x03, 0x04, 0x1b, 0x8a, 0x00, 0x00, 0x05, 0x78]),
        (3, 4, [0, 0, 5, 0x78], true, 548, [0x03, 0x04, 0xa3, 0x18, 0x00, 0x00, 0x05, 0x78]),
        (3, 4, [0, 0, 5, 0x78], false, 28, [0x03, 0x04, 0x27, 0x99, 0x00, 0x00, 0x05, 0x78]),
        (3, 4, [0, 0, 5, 0x78], false, 48, [0x03, 0x04, 0xcd, 0x34, 0x00, 0x00, 0x05, 0x78]),
        (3, 4, [0, 0, 5, 0x78], false, 548, [0x03, 0x04, 0x9b, 0x09, 0x00, 0x00, 0x05, 0x78]),
        (3, 3, [0; 4], true, 28, [0x03, 0x03, 0x5a, 0xfb, 0x00, 0x00, 0x00, 0x00]),
        (3, 3, [0; 4], true, 48, [0x03, 0x03, 0x21, 0x03, 0x00, 0x00, 0x00, 0x00]),
        (3, 3, [0; 4], true, 548, [0x03, 0x03, 0xa8, 0x91, 0x00, 0x00, 0x00, 0x00]),
        (3, 3, [0; 4], false, 28, [0x03, 0x03, 0x2d, 0x12, 0x00, 0x00, 0x00, 0x00]),
        (3, 3, [0; 4], false, 48, [0x03, 0x03, 0xd2, 0xad, 0x00, 0x00, 0x00, 0x00]),
        (3, 3, [0; 4], false, 548, [0x03, 0x03, 0xa0, 0x82, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], true, 28, [0x0b, 0x00, 0x52, 0xfe, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], true, 48, [0x0b, 0x00, 0x19, 0x06, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], true, 548, [0x0b, 0x00, 0xa0, 0x94, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], false, 28, [0x0b, 0x00, 0x25, 0x15, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], false, 48, [0x0b, 0x00, 0xca, 0xb0, 0x00, 0x00, 0x00, 0x00]),
        (11, 0, [0; 4], false, 548, [0x0b, 0x00, 0x98, 0x85, 0x00, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], true, 28, [0x0c, 0x00, 0x49, 0xfe, 0x08, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], true, 48, [0x0c, 0x00, 0x10, 0x06, 0x08, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], true, 548, [0x0c, 0x00, 0x97, 0x94, 0x08, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], false, 28, [0x0c, 0x00, 0x1c, 0x15, 0x08, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], false, 48, [0x0c, 0x00, 0xc1, 0xb0, 0x08, 0x00, 0x00, 0x00]),
        (12, 0, [8, 0, 0, 0], false, 548, [0x0c, 0x00, 0x8f, 0x85, 0x08, 0x00, 0x00, 0x00]),
    ];

    /// A golden message: its header, then the first `n` bytes of the packet.
    fn message(header: &[u8; 8], tcp: bool, n: usize) -> Vec<u8> {
        let mut m = header.to_vec();
        m.extend_from_slice(&packet(tcp)[..n]);
        m
    }

    /// A golden message by type, code, protocol and quoted bytes.
    fn golden(msg_type: u8, code: u8, tcp: bool, n: usize) -> Vec<u8> {
        let row = GOLDEN.iter().find(|r| (r.0, r.1, r.3, r.4) == (msg_type, code, tcp, n)).unwrap();
        message(&row.5, tcp, n)
    }

    #[test]
    fn emits_what_scapy_builds() {
        for (t, c, rest, tcp, n, header) in GOLDEN {
            let want = message(&header, tcp, n);
            let mut out = [0xeeu8; 700];
            // The whole packet is offered: the quote stops at n (548 = QUOTE_MAX).
            let p = packet(tcp);
            let offered = if n == QUOTE_MAX { &p[..] } else { &p[..n] };
            let w = emit(&mut out, t, c, rest, offered);
            assert_eq!(&out[..w], &want[..], "{t}/{c} {tcp} {n}");
            if (t, c) == (3, 4) {
                let w = emit_frag_needed(&mut out, offered, 1400);
                assert_eq!(&out[..w], &want[..]);
            }
        }
    }

    #[test]
    fn reads_what_scapy_builds() {
        for (t, c, rest, tcp, n, header) in GOLDEN {
            let e = parse(&message(&header, tcp, n)).unwrap();
            let (protocol, src_port, dst_port) =
                if tcp { (ipv4::PROTO_TCP, 443, 40000) } else { (ipv4::PROTO_UDP, 53, 40001) };
            let quoted = Quoted {
                src: Ipv4Addr::new(198, 51, 100, 7),
                dst: Ipv4Addr::new(192, 0, 2, 1),
                protocol,
                src_port,
                dst_port,
                ihl: 20,
                len: n,
            };
            assert_eq!(e, IcmpError { msg_type: t, code: c, rest, checksum_ok: true, quoted });
            assert_eq!(e.next_hop_mtu(), ((t, c) == (3, 4)).then_some(1400));
            assert!(is_error(t));
        }
        assert!(!is_error(0) && !is_error(8) && !is_error(5));
    }

    #[test]
    fn emit_stops_at_the_end_of_out() {
        let p = packet(true);
        assert_eq!(emit_frag_needed(&mut [0; 7], &p, 1400), 0);
        let mut out = [0u8; 40];
        assert_eq!(emit_frag_needed(&mut out, &p, 1400), 40);
        assert_eq!(&out[8..], &p[..32]);
        assert!(parse(&out).unwrap().checksum_ok);
    }

    // After rewriting the quoted source to 10.0.0.5:8443, scapy's message with the quoted
    // packet built with src='10.0.0.5' and sport=8443 (its checksums recomputed), otherwise as
    // the golden one: raw(ICMP(type=3, code=4, nexthopmtu=1400)/Raw(raw(P')[:N])).
    // TCP, 48 bytes quoted (the TCP checksum among them).
    const TCP_48_REWRITTEN: [u8; 56] = [
        0x03, 0x04, 0xfb, 0x53, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x03, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40,
        0x06, 0x4f, 0x84, 0x0a, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x02, 0x01, 0x20, 0xfb, 0x9c, 0x40, 0x01, 0x02,
        0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x50, 0x18, 0x01, 0xf6, 0xc6, 0xb7, 0x00, 0x00, 0x00, 0x01, 0x02,
        0x03, 0x04, 0x05, 0x06, 0x07,
    ];
    // TCP, 28 bytes quoted (no TCP checksum).
    const TCP_28_REWRITTEN: [u8; 36] = [
        0x03, 0x04, 0x36, 0x42, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x03, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40,
        0x06, 0x4f, 0x84, 0x0a, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x02, 0x01, 0x20, 0xfb, 0x9c, 0x40, 0x01, 0x02,
        0x03, 0x04,
    ];
    // UDP, 48 bytes quoted.
    const UDP_48_REWRITTEN: [u8; 56] = [
        0x03, 0x04, 0xac, 0xfe, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x03, 0x1c, 0x1c, 0x47, 0x00, 0x00, 0x40,
        0x11, 0x8f, 0x84, 0x0a, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x02, 0x01, 0x20, 0xfb, 0x9c, 0x41, 0x03, 0x08,
        0x2f, 0xdc, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13,
    ];
    // UDP with checksum 0 (UDP(..., chksum=0)), 48 bytes quoted; before the rewrite the
    // message's header is 03 04 fd a0 00 00 05 78.
    const UDP_NO_CHECKSUM_48_REWRITTEN: [u8; 56] = [
        0x03, 0x04, 0xdc, 0xda, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x03, 0x1c, 0x1c, 0x47, 0x00, 0x00, 0x40,
        0x11, 0x8f, 0x84, 0x0a, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x02, 0x01, 0x20, 0xfb, 0x9c, 0x41, 0x03, 0x08,
        0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13,
    ];

    #[test]
    fn rewrites_the_quoted_source_as_scapy_recomputes() {
        let mut udp_no_checksum = message(&[0x03, 0x04, 0xfd, 0xa0, 0x00, 0x00, 0x05, 0x78], false, 48);
        udp_no_checksum[8 + 26..8 + 28].fill(0);
        for (mut m, want) in [
            (golden(3, 4, true, 48), &TCP_48_REWRITTEN[..]),
            (golden(3, 4, true, 28), &TCP_28_REWRITTEN[..]),
            (golden(3, 4, false, 48), &UDP_48_REWRITTEN[..]),
            (udp_no_checksum, &UDP_NO_CHECKSUM_48_REWRITTEN[..]),
        ] {
            assert!(parse(&m).unwrap().checksum_ok);
            rewrite_quoted(&mut m, End::Src, Ipv4Addr::new(10, 0, 0, 5).into(), 8443).unwrap();
            assert_eq!(m, want);
            let q = parse(&m).unwrap().quoted;
            assert_eq!((q.src, q.src_port), (Ipv4Addr::new(10, 0, 0, 5), 8443));
        }
    }

    #[test]
    fn refuses_malformed_quotes() {
        let tcp = golden(3, 4, true, 48);
        let with = |at: usize, v: u8| {
            let mut m = tcp.clone();
            m[at] = v;
            m
        };
        let cases = [
            (tcp[..7].to_vec(), WireError::Truncated),
            (tcp[..8 + 19].to_vec(), WireError::Truncated), // IP header cut
            (tcp[..8 + 27].to_vec(), WireError::Truncated), // one byte short of the ports' 8
            (with(8, 0x44), WireError::Malformed),          // IHL 4
            (with(8, 0x65), WireError::Malformed),          // version 6
            (with(8, 0x4f), WireError::Truncated),          // IHL 15: 60 + 8 bytes not there
            (with(8 + 7, 0x01), WireError::Fragment),       // offset 8 bytes
            (with(8 + 6, 0x5f), WireError::Fragment),       // DF, MF, offset 0x1f00
            (with(8 + 9, ipv4::PROTO_ICMP), WireError::Unsupported),
            (with(0, 0), WireError::Unsupported), // an echo reply
            (with(0, 5), WireError::Unsupported), // a redirect
        ];
        for (mut m, err) in cases {
            assert_eq!(parse(&m), Err(err), "{m:x?}");
            let before = m.clone();
            let to = Ipv4Addr::new(10, 0, 0, 5).into();
            assert_eq!(rewrite_quoted(&mut m, End::Dst, to, 1), Err(err));
            assert_eq!(m, before);
        }
        let mut m = tcp.clone();
        let v6 = "2001:db8::1".parse().unwrap();
        assert_eq!(rewrite_quoted(&mut m, End::Src, v6, 1), Err(WireError::Unsupported));
        assert_eq!(m, tcp);
    }

    #[test]
    fn first_fragments_and_bad_checksums_are_read() {
        let mf = {
            let mut m = golden(11, 0, false, 28);
            m[8 + 6] = 0x20; // more fragments, offset 0: the first fragment has the ports
            m
        };
        let e = parse(&mf).unwrap();
        assert_eq!((e.quoted.src_port, e.quoted.dst_port), (53, 40001));
        assert!(!e.checksum_ok, "the flag was set without updating the checksum");
        let mut bad = golden(3, 3, true, 548);
        bad[300] ^= 0x40;
        assert!(!parse(&bad).unwrap().checksum_ok);
    }

    /// A small TCP or UDP packet, whole, with valid checksums.
    fn small_packet(tcp: bool, udp_checksum: bool) -> Vec<u8> {
        let (src, dst) = (Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(192, 0, 2, 1));
        let (protocol, l4) = if tcp { (ipv4::PROTO_TCP, 20) } else { (ipv4::PROTO_UDP, 8) };
        let mut b = vec![0x5a; 20 + l4 + 9];
        let ip =
            Ipv4Repr { src, dst, protocol, payload_len: l4 + 9, tos: 0, ident: 1, dont_frag: true, ttl: 9 };
        ip.emit(&mut b);
        if tcp {
            let t = TcpRepr {
                src_port: 443,
                dst_port: 40000,
                seq: 5,
                ack: 6,
                flags: 0x18,
                window: 9,
                options: &[],
            };
            t.emit_v4(&mut b[20..], src, dst);
        } else {
            UdpRepr { src_port: 53, dst_port: 40001 }.emit_v4(&mut b[20..], src, dst);
            if !udp_checksum {
                b[26..28].fill(0);
            }
        }
        b
    }

    /// Whether the quoted packet's IP and transport checksums and the ICMP checksum verify,
    /// each recomputed from scratch (the quote holds the whole packet).
    fn all_verify(m: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&m[8..]).unwrap();
        let l4 = ip.payload();
        let l4_ok = if ip.protocol() == ipv4::PROTO_TCP {
            TcpPacket::new_checked(l4).unwrap().verify_checksum_v4(ip.src(), ip.dst())
        } else {
            let ph = checksum::pseudo_header_v4(ip.src().octets(), ip.dst().octets(), 17, l4.len() as u16);
            read_u16(l4, 6) == 0 || checksum::fold(checksum::combine(ph, checksum::sum(l4))) == 0xffff
        };
        ip.verify_checksum() && l4_ok && parse(m).unwrap().checksum_ok
    }

    proptest! {
        #[test]
        fn shifting_the_quoted_sequence_keeps_every_checksum_right(delta in any::<u32>(), tcp in any::<bool>()) {
            let p = small_packet(tcp, true);
            let mut m = [0u8; 80];
            let n = emit(&mut m, TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED, [0, 0, 5, 0], &p);
            let m = &mut m[..n];
            let before = m.to_vec();
            let r = shift_quoted_seq(m, delta);
            if tcp {
                prop_assert_eq!(r, Ok(()));
                prop_assert!(all_verify(m));
                prop_assert_eq!(read_u32(m, 8 + 20 + 4), 5u32.wrapping_add(delta));
            } else {
                prop_assert_eq!(r, Err(WireError::Unsupported));
                prop_assert_eq!(&m[..], &before[..]);
            }
        }

        #[test]
        fn rewriting_keeps_every_checksum_right(tcp in any::<bool>(), udp_checksum in any::<bool>(),
                                                src in any::<bool>(), a in any::<u32>(), port in any::<u16>()) {
            let p = small_packet(tcp, udp_checksum);
            let mut m = [0u8; 80];
            let n = emit(&mut m, TYPE_TIME_EXCEEDED, 0, [0; 4], &p);
            let m = &mut m[..n];
            prop_assert!(all_verify(m));
            let end = if src { End::Src } else { End::Dst };
            rewrite_quoted(m, end, Ipv4Addr::from(a).into(), port).unwrap();
            prop_assert!(all_verify(m));
            let q = parse(m).unwrap().quoted;
            let got = if src { (q.src, q.src_port) } else { (q.dst, q.dst_port) };
            prop_assert_eq!(got, (Ipv4Addr::from(a), port));
            prop_assert_eq!(!udp_checksum && !tcp, read_u16(m, 8 + 20 + 6) == 0);
        }

        #[test]
        fn never_panics_and_keeps_checksum_status(bytes in proptest::collection::vec(any::<u8>(), 0..90),
                                                  a in any::<u32>(), port in any::<u16>(), src in any::<bool>()) {
            let mut m = bytes;
            // Most get an error type and a plausible quoted header (no fragment offset, TCP or
            // UDP), so that rewrites happen; the checksums stay arbitrary.
            if m.len() >= QUOTE_MIN + HEADER_LEN && m[1] != 0 {
                m[0] = [3, 11, 12][usize::from(m[1]) % 3];
                m[8] = 0x45 + (m[8] & 1) * 2; // IHL 5 or 7
                m[8 + 6] &= 0xe0;
                m[8 + 7] = 0;
                m[8 + 9] = if m[8 + 1] & 1 == 0 { ipv4::PROTO_TCP } else { ipv4::PROTO_UDP };
            }
            let before = parse(&m);
            let end = if src { End::Src } else { End::Dst };
            let r = rewrite_quoted(&mut m, end, Ipv4Addr::from(a).into(), port);
            prop_assert_eq!(r, before.map(|_| ()));
            if let Ok(e) = before {
                prop_assert_eq!(parse(&m).unwrap().checksum_ok, e.checksum_ok);
            }
            emitted_message_verifies(&m, port);
        }
    }

    fn emitted_message_verifies(packet: &[u8], mtu: u16) {
        let mut out = [0u8; 64];
        let n = emit_frag_needed(&mut out, packet, mtu);
        assert_eq!(n, (packet.len() + 8).min(64));
        assert_eq!(checksum::fold(checksum::sum(&out[..n])), 0xffff);
    }
}
