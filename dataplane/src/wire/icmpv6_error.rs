//! ICMPv6 error messages (RFC 4443: destination unreachable, packet too big, time exceeded,
//! parameter problem) and the packet they quote: the quoted flow read (past the quoted
//! extension headers), one quoted endpoint rewritten for NAT66, and a message built.
//!
//! An error message is the 8-byte ICMPv6 header (type, code, checksum, four bytes whose meaning
//! depends on the type) and then the quote: as much of the offending packet as fits in the
//! IPv6 minimum MTU (RFC 4443 2.4 (c)). Every quoted byte present is accepted, up to the end of
//! the message. The checksum covers the IPv6 pseudo-header, so reading and writing it needs
//! the addresses of the packet carrying the message.

use super::endpoint::End;
use super::icmpv6::{self, HEADER_LEN, TYPE_PACKET_TOO_BIG};
use super::ipv6::{self, NEXT_TCP, NEXT_UDP};
use super::{checksum, read_u16, write_u16, WireError};
use std::net::{IpAddr, Ipv6Addr};

/// Fewest bytes a quote holds: an IPv6 header and 8 bytes of transport header.
pub const QUOTE_MIN: usize = ipv6::HEADER_LEN + 8;
/// Most bytes [`emit`] quotes: what fits in a 1280-byte packet after its IPv6 and ICMPv6
/// headers.
pub const QUOTE_MAX: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN;

mod field {
    /// In the ICMPv6 header.
    pub const CHECKSUM: usize = 2;
    pub const REST: core::ops::Range<usize> = 4..8;
    /// In the quoted IPv6 header.
    pub const IP_SRC: usize = 8;
    pub const IP_DST: usize = 24;
    /// In the quoted TCP or UDP header.
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const TCP_SEQ: usize = 4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_CHECKSUM: usize = 16;
}

/// Whether an ICMPv6 type is one of the errors this module reads: destination unreachable,
/// packet too big, time exceeded or parameter problem.
pub fn is_error(msg_type: u8) -> bool {
    (icmpv6::TYPE_DEST_UNREACHABLE..=icmpv6::TYPE_PARAMETER_PROBLEM).contains(&msg_type)
}

/// The flow of a quoted TCP or UDP packet, as that packet was sent (so its source is the end
/// that the error message is addressed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Where the quoted transport header starts in the quote: past the IPv6 header and the
    /// quoted extension headers.
    pub l4_at: usize,
    /// Quoted bytes present, from the quoted IPv6 header to the end of the message.
    pub len: usize,
}

impl Quoted {
    /// Reads a quote (the bytes after the ICMPv6 header). It must hold an IPv6 header (version
    /// 6) and its extension headers (walked as [`ipv6::upper_layer`] does, to the end of the
    /// quote or of the quoted packet's payload, whichever comes first) of a TCP or UDP packet
    /// that is not a fragment past the first, and 8 bytes after them. Errors: `Truncated` for
    /// a short quote, `Malformed` for a bad version or extension chain, `Fragment` for a
    /// non-zero fragment offset, `Unsupported` for another protocol (or no next header).
    pub fn parse(q: &[u8]) -> Result<Self, WireError> {
        let Some(h) = q.first_chunk::<{ ipv6::HEADER_LEN }>() else {
            return Err(WireError::Truncated);
        };
        if h[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let end = q.len().min(ipv6::HEADER_LEN + usize::from(read_u16(h, 4)));
        let q = &q[..end];
        let u = ipv6::walk(q)?;
        if u.fragment.is_some_and(|f| !f.at_offset_zero()) {
            return Err(WireError::Fragment);
        }
        if u.protocol != NEXT_TCP && u.protocol != NEXT_UDP {
            return Err(WireError::Unsupported);
        }
        let Some(l4) = q.get(u.offset..u.offset + 8) else {
            return Err(WireError::Truncated);
        };
        Ok(Quoted {
            src: read_addr(h, field::IP_SRC),
            dst: read_addr(h, field::IP_DST),
            protocol: u.protocol,
            src_port: read_u16(l4, field::SRC_PORT),
            dst_port: read_u16(l4, field::DST_PORT),
            l4_at: u.offset,
            len: end,
        })
    }

    /// Offset in the quote of the transport checksum, when the quote holds it: UDP's always
    /// (bytes 6..8), TCP's when bytes 16..18 of its header are quoted.
    fn l4_checksum_at(&self) -> Option<usize> {
        let at = self.l4_at
            + match self.protocol {
                NEXT_UDP => field::UDP_CHECKSUM,
                _ => field::TCP_CHECKSUM,
            };
        (at + 2 <= self.len).then_some(at)
    }
}

/// The IPv6 address at `at` in `b` (16 bytes there).
fn read_addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// An error message as [`parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Error {
    pub msg_type: u8,
    pub code: u8,
    /// Header bytes 4..8: unused, packet too big's MTU, or a parameter problem's pointer.
    pub rest: [u8; 4],
    /// Whether the ICMPv6 checksum over the pseudo-header and the whole message is right.
    pub checksum_ok: bool,
    pub quoted: Quoted,
}

impl Icmpv6Error {
    /// The MTU of a packet too big message; `None` for other messages.
    pub fn mtu(&self) -> Option<u32> {
        (self.msg_type == TYPE_PACKET_TOO_BIG).then(|| u32::from_be_bytes(self.rest))
    }
}

/// Reads an ICMPv6 error message (the upper layer of its packet, exactly: no link padding)
/// carried from `src` to `dst`. Errors: `Truncated` under 8 bytes, `Unsupported` for a type
/// that [`is_error`] refuses, and those of [`Quoted::parse`]. The checksum is checked and the
/// result kept in `checksum_ok`.
pub fn parse(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Icmpv6Error, WireError> {
    let quoted = quote_of(m)?;
    Ok(Icmpv6Error {
        msg_type: m[0],
        code: m[1],
        rest: [m[4], m[5], m[6], m[7]],
        checksum_ok: icmpv6::verify(m, src, dst),
        quoted,
    })
}

/// The quote of the error message `m`, as [`parse`] checks it.
fn quote_of(m: &[u8]) -> Result<Quoted, WireError> {
    let Some(h) = m.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    if !is_error(h[0]) {
        return Err(WireError::Unsupported);
    }
    Quoted::parse(&m[HEADER_LEN..])
}

/// Sets the `end` address and port of the packet quoted by the error message `m` (from the
/// ICMPv6 header), as a NAT66 translates it. Updates incrementally (RFC 1624) the quoted
/// transport checksum when quoted (a UDP checksum of zero stays zero), which covers unquoted
/// data and so can only be updated, and the ICMPv6 checksum for the quote's change. A change
/// of the carrying packet's addresses, which the ICMPv6 checksum also covers, is the caller's:
/// [`icmpv6::update_checksum_for_address`]. A quoted routing header's final destination is
/// not looked at. Errors as [`parse`], and `Unsupported` for an IPv4 address; nothing changes
/// on an error.
pub fn rewrite_quoted(m: &mut [u8], end: End, addr: IpAddr, port: u16) -> Result<(), WireError> {
    let IpAddr::V6(addr) = addr else {
        return Err(WireError::Unsupported);
    };
    let q = quote_of(m)?;
    let l4 = HEADER_LEN + q.l4_at;
    let (addr_at, port_at) = match end {
        End::Src => (HEADER_LEN + field::IP_SRC, l4 + field::SRC_PORT),
        End::Dst => (HEADER_LEN + field::IP_DST, l4 + field::DST_PORT),
    };
    let (old_addr, new_addr) = (read_addr(m, addr_at).octets(), addr.octets());
    let old_port = read_u16(m, port_at);
    let mut ck = checksum::update128(read_u16(m, field::CHECKSUM), old_addr, new_addr);
    m[addr_at..addr_at + 16].copy_from_slice(&new_addr);
    checksum::put16(m, port_at, port, &mut ck);
    if let Some(at) = q.l4_checksum_at().map(|at| HEADER_LEN + at) {
        let c = read_u16(m, at);
        if !(q.protocol == NEXT_UDP && c == 0) {
            let c = checksum::update16(checksum::update128(c, old_addr, new_addr), old_port, port);
            checksum::put16(m, at, c, &mut ck);
        }
    }
    write_u16(m, field::CHECKSUM, ck);
    Ok(())
}

/// Adds `delta` to the sequence number of the TCP segment quoted by the error message `m` (a
/// SYN proxy's translation undone), updating the quoted TCP checksum (when quoted) and the
/// ICMPv6 checksum incrementally. Errors as [`parse`], and `Unsupported` for a UDP quote;
/// nothing changes on an error.
pub fn shift_quoted_seq(m: &mut [u8], delta: u32) -> Result<(), WireError> {
    let q = quote_of(m)?;
    if q.protocol != NEXT_TCP {
        return Err(WireError::Unsupported);
    }
    let tcp_checksum_at = q.l4_checksum_at().map(|a| HEADER_LEN + a);
    checksum::shift_seq(m, HEADER_LEN + q.l4_at + field::TCP_SEQ, tcp_checksum_at, field::CHECKSUM, delta);
    Ok(())
}

/// Writes an error message into `out`: type, code, the four bytes `rest`, the quote and the
/// checksum for a message carried from `src` (the appliance) to `dst` (the offending packet's
/// source). The quote is the start of `packet` (the offending packet from its IPv6 header,
/// without link padding): as much as fits in `out` and in [`QUOTE_MAX`], so that the whole
/// error fits in the minimum MTU. Returns the bytes written, 0 if `out` cannot hold the
/// 8-byte header. The caller writes the IPv6 header (next header 58).
pub fn emit(
    out: &mut [u8],
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    packet: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> usize {
    let Some(room) = out.len().checked_sub(HEADER_LEN) else {
        return 0;
    };
    let n = packet.len().min(QUOTE_MAX).min(room);
    let m = &mut out[..HEADER_LEN + n];
    m[HEADER_LEN..].copy_from_slice(&packet[..n]);
    write_header(m, msg_type, code, rest, src, dst);
    m.len()
}

/// Writes the header of the error message `m` (at least [`HEADER_LEN`] bytes), whose quote is
/// already in place after it, with the checksum over the pseudo-header and the message.
pub fn write_header(m: &mut [u8], msg_type: u8, code: u8, rest: [u8; 4], src: Ipv6Addr, dst: Ipv6Addr) {
    if m.len() < HEADER_LEN {
        return;
    }
    m[0] = msg_type;
    m[1] = code;
    m[field::REST].copy_from_slice(&rest);
    icmpv6::fill_checksum(m, src, dst);
}

/// [`emit`] for packet too big (type 2 code 0) with the MTU `mtu`.
pub fn emit_packet_too_big(out: &mut [u8], packet: &[u8], mtu: u32, src: Ipv6Addr, dst: Ipv6Addr) -> usize {
    emit(out, TYPE_PACKET_TOO_BIG, 0, mtu.to_be_bytes(), packet, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr};
    use proptest::prelude::*;

    // B = '2001:db8:b::7' (the offending packet's source), C = '2001:db8:c::1' (its
    // destination), R = '2001:db8:ffff::1' (who reports the error), X = '2001:db8:aaaa::5'.
    fn b() -> Ipv6Addr {
        "2001:db8:b::7".parse().unwrap()
    }
    fn c() -> Ipv6Addr {
        "2001:db8:c::1".parse().unwrap()
    }
    fn r() -> Ipv6Addr {
        "2001:db8:ffff::1".parse().unwrap()
    }
    fn x() -> Ipv6Addr {
        "2001:db8:aaaa::5".parse().unwrap()
    }

    // The headers of the two 1500-byte packets quoted below, made by scapy with
    // PAT = bytes(range(256))*6:
    // raw(IPv6(src=B, dst=C, hlim=64, fl=0x5a5a5)/TCP(sport=443, dport=40000, seq=0x01020304,
    //     ack=0x0a0b0c0d, flags='PA', window=502)/Raw(PAT[:1440]))[:60]
    const TCP_HEADERS: [u8; 60] = [
        0x60, 0x05, 0xa5, 0xa5, 0x05, 0xb4, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0b, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0xbb, 0x9c, 0x40, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c,
        0x0d, 0x50, 0x18, 0x01, 0xf6, 0x0a, 0x35, 0x00, 0x00,
    ];
    // raw(IPv6(src=B, dst=C, hlim=64)/UDP(sport=53, dport=40001)/Raw(PAT[:1452]))[:48]
    const UDP_HEADERS: [u8; 48] = [
        0x60, 0x00, 0x00, 0x00, 0x05, 0xb4, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0b, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x35, 0x9c, 0x41, 0x05, 0xb4, 0x90, 0x3f,
    ];

    /// A 1500-byte packet above, whole: its headers and PAT.
    fn packet(tcp: bool) -> Vec<u8> {
        let mut p = if tcp { TCP_HEADERS.to_vec() } else { UDP_HEADERS.to_vec() };
        let n = 1500 - p.len();
        p.extend((0..n).map(|i| i as u8));
        p
    }

    type Row = (u8, u8, [u8; 4], bool, usize, [u8; 8]);
    // (type, code, rest, tcp, N, header): the header of raw(IPv6(src=R, dst=B)/I/Raw(raw(P)[:N]))
    // [40:], I each of ICMPv6PacketTooBig(mtu=1400), ICMPv6PacketTooBig(mtu=1280),
    // ICMPv6DestUnreach(code=4), ICMPv6TimeExceeded(code=0), ICMPv6ParamProblem(code=0, ptr=6)
    // and ICMPv6DestUnreach(code=0), P the TCP or UDP packet above and N quoted bytes; the bytes
    // after them are raw(P)[:N] (as [`message`] builds).
    #[rustfmt::skip]
    const GOLDEN: [Row; 6] = [
        (2, 0, [0, 0, 5, 120], true, 1232, [0x02, 0x00, 0xe5, 0xea, 0x00, 0x00, 0x05, 0x78]),
        (2, 0, [0, 0, 5, 0], false, 1232, [0x02, 0x00, 0xc9, 0x60, 0x00, 0x00, 0x05, 0x00]),
        (1, 4, [0, 0, 0, 0], false, 48, [0x01, 0x04, 0x9e, 0x14, 0x00, 0x00, 0x00, 0x00]),
        (3, 0, [0, 0, 0, 0], true, 60, [0x03, 0x00, 0x1f, 0x6f, 0x00, 0x00, 0x00, 0x00]),
        (4, 0, [0, 0, 0, 6], true, 1232, [0x04, 0x00, 0xe9, 0x5c, 0x00, 0x00, 0x00, 0x06]),
        (1, 0, [0, 0, 0, 0], true, 56, [0x01, 0x00, 0x2b, 0xa8, 0x00, 0x00, 0x00, 0x00]),
    ];

    /// A golden message: its header, then the first `n` bytes of the packet.
    fn message(header: &[u8; 8], tcp: bool, n: usize) -> Vec<u8> {
        let mut m = header.to_vec();
        m.extend_from_slice(&packet(tcp)[..n]);
        m
    }

    #[test]
    fn emits_what_scapy_builds() {
        for (t, code, rest, tcp, n, header) in GOLDEN {
            let want = message(&header, tcp, n);
            let mut out = [0xeeu8; 1500];
            // The whole packet is offered when the quote is cut at QUOTE_MAX.
            let p = packet(tcp);
            let offered = if n == QUOTE_MAX { &p[..] } else { &p[..n] };
            let w = emit(&mut out, t, code, rest, offered, r(), b());
            assert_eq!(&out[..w], &want[..], "{t}/{code} {tcp} {n}");
            if t == TYPE_PACKET_TOO_BIG {
                assert_eq!(w, ipv6::MIN_MTU - ipv6::HEADER_LEN, "the error fits in the minimum MTU");
                let w = emit_packet_too_big(&mut out, offered, u32::from_be_bytes(rest), r(), b());
                assert_eq!(&out[..w], &want[..]);
            }
        }
    }

    #[test]
    fn reads_what_scapy_builds() {
        for (t, code, rest, tcp, n, header) in GOLDEN {
            let e = parse(&message(&header, tcp, n), r(), b()).unwrap();
            let (protocol, src_port, dst_port) =
                if tcp { (NEXT_TCP, 443, 40000) } else { (NEXT_UDP, 53, 40001) };
            let quoted = Quoted { src: b(), dst: c(), protocol, src_port, dst_port, l4_at: 40, len: n };
            assert_eq!(e, Icmpv6Error { msg_type: t, code, rest, checksum_ok: true, quoted });
            assert_eq!(e.mtu(), (t == 2).then_some(u32::from_be_bytes(rest)));
            assert!(is_error(t));
            // The pseudo-header counts: other addresses, a wrong checksum.
            assert!(!parse(&message(&header, tcp, n), r(), c()).unwrap().checksum_ok);
        }
        assert!(!is_error(0) && !is_error(5) && !is_error(128) && !is_error(135));
    }

    // raw(IPv6(src=R, dst=B)/ICMPv6TimeExceeded(code=1)/Raw(raw(IPv6(src=B, dst=C, hlim=64)
    //     /IPv6ExtHdrDestOpt()/IPv6ExtHdrFragment(offset=0, m=1, id=7)/UDP(sport=53, dport=40001)
    //     /Raw(bytes(range(40))))))[40:]
    const EXT_QUOTE: [u8; 112] = [
        0x03, 0x01, 0xc6, 0x83, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x40, 0x3c, 0x40, 0x20,
        0x01, 0x0d, 0xb8, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x20, 0x01,
        0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x01,
        0x04, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x00, 0x35, 0x9c, 0x41,
        0x00, 0x30, 0x89, 0xf5, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
        0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
    ];

    #[test]
    fn reads_past_quoted_extension_headers() {
        let e = parse(&EXT_QUOTE, r(), b()).unwrap();
        let quoted = Quoted {
            src: b(),
            dst: c(),
            protocol: NEXT_UDP,
            src_port: 53,
            dst_port: 40001,
            l4_at: 56,
            len: 104,
        };
        assert_eq!(e, Icmpv6Error { msg_type: 3, code: 1, rest: [0; 4], checksum_ok: true, quoted });
        // Rewriting there updates the UDP checksum at 56 + 6 and keeps the message right.
        let mut m = EXT_QUOTE;
        rewrite_quoted(&mut m, End::Dst, x().into(), 9).unwrap();
        let e = parse(&m, r(), b()).unwrap();
        assert!(e.checksum_ok);
        assert_eq!((e.quoted.dst, e.quoted.dst_port), (x(), 9));
        let udp = UdpPacket::new_checked(&m[8 + 56..]).unwrap();
        assert!(udp.verify_checksum_v6(b(), x()));
        // Cut inside the fragment header; a later fragment.
        assert_eq!(parse(&EXT_QUOTE[..8 + 60], r(), b()), Err(WireError::Truncated));
        let mut later = EXT_QUOTE;
        later[8 + 50] = 0x01; // offset 32 bytes
        assert_eq!(parse(&later, r(), b()), Err(WireError::Fragment));
    }

    // After rewriting the quoted source to X port 8443, the header of scapy's message with the
    // quoted packet built with src=X and sport=8443 (its checksums recomputed), otherwise as the
    // golden one, then with also the outer destination B changed to X:
    // (tcp, N, UDP checksum 0, header before, quote's transport checksum after, header after
    // the quote's rewrite, header after the outer one's too).
    type Rewritten = (bool, usize, bool, [u8; 8], u16, [u8; 8], [u8; 8]);
    #[rustfmt::skip]
    const REWRITTEN: [Rewritten; 4] = [
        (true, 1232, false, [0x02, 0x00, 0xe5, 0xea, 0x00, 0x00, 0x05, 0x78], 0x4057,
         [0x02, 0x00, 0xe5, 0xea, 0x00, 0x00, 0x05, 0x78], [0x02, 0x00, 0x3b, 0x4d, 0x00, 0x00, 0x05, 0x78]),
        (true, 56, false, [0x02, 0x00, 0x25, 0x30, 0x00, 0x00, 0x05, 0x78], 0,
         [0x02, 0x00, 0x5b, 0x52, 0x00, 0x00, 0x05, 0x78], [0x02, 0x00, 0xb0, 0xb4, 0x00, 0x00, 0x05, 0x78]),
        (false, 48, false, [0x01, 0x04, 0x9e, 0x14, 0x00, 0x00, 0x00, 0x00], 0xc4db,
         [0x01, 0x04, 0x9e, 0x14, 0x00, 0x00, 0x00, 0x00], [0x01, 0x04, 0xf3, 0x76, 0x00, 0x00, 0x00, 0x00]),
        (false, 48, true, [0x01, 0x04, 0x2e, 0x54, 0x00, 0x00, 0x00, 0x00], 0,
         [0x01, 0x04, 0x62, 0xf0, 0x00, 0x00, 0x00, 0x00], [0x01, 0x04, 0xb8, 0x52, 0x00, 0x00, 0x00, 0x00]),
    ];

    #[test]
    fn rewrites_as_scapy_recomputes() {
        for (tcp, n, no_udp_checksum, before, l4_checksum, quote_only, outer) in REWRITTEN {
            let mut m = message(&before, tcp, n);
            if no_udp_checksum {
                m[8 + 46..8 + 48].fill(0);
            }
            assert!(parse(&m, r(), b()).unwrap().checksum_ok);
            let mut want = m.clone();
            want[..8].copy_from_slice(&quote_only);
            want[8 + 8..8 + 24].copy_from_slice(&x().octets());
            want[8 + 40..8 + 42].copy_from_slice(&8443u16.to_be_bytes());
            let ck_at = 8 + 40 + if tcp { 16 } else { 6 };
            if ck_at + 2 <= m.len() {
                want[ck_at..ck_at + 2].copy_from_slice(&l4_checksum.to_be_bytes());
            }
            rewrite_quoted(&mut m, End::Src, x().into(), 8443).unwrap();
            assert_eq!(m, want, "{tcp} {n}");
            icmpv6::update_checksum_for_address(&mut m, b(), x());
            want[..8].copy_from_slice(&outer);
            assert_eq!(m, want, "{tcp} {n} outer");
            assert!(parse(&m, r(), x()).unwrap().checksum_ok);
        }
    }

    #[test]
    fn refuses_malformed_quotes() {
        let tcp = message(&GOLDEN[3].5, true, 60);
        let with = |at: usize, v: u8| {
            let mut m = tcp.clone();
            m[at] = v;
            m
        };
        let mut payload_len_4 = tcp.clone();
        payload_len_4[8 + 4..8 + 6].copy_from_slice(&[0, 4]);
        let cases = [
            (tcp[..7].to_vec(), WireError::Truncated),
            (tcp[..8 + 39].to_vec(), WireError::Truncated), // IPv6 header cut
            (tcp[..8 + 47].to_vec(), WireError::Truncated), // one byte short of the ports' 8
            (with(8, 0x45), WireError::Malformed),          // version 4
            (with(8 + 6, ipv6::NEXT_ICMPV6), WireError::Unsupported),
            (with(8 + 6, ipv6::NEXT_NO_NEXT), WireError::Unsupported),
            (with(8 + 6, ipv6::NEXT_ROUTING), WireError::Truncated), // 0x01bb...: 16 bytes, then 0x01
            (payload_len_4, WireError::Truncated),                   // no room for the ports
            (with(0, 128), WireError::Unsupported),                  // an echo request
            (with(0, 135), WireError::Unsupported),                  // a neighbor solicitation
        ];
        for (mut m, err) in cases {
            assert_eq!(parse(&m, r(), b()), Err(err), "{m:x?}");
            let before = m.clone();
            assert_eq!(rewrite_quoted(&mut m, End::Dst, x().into(), 1), Err(err));
            assert_eq!(shift_quoted_seq(&mut m, 1), Err(err));
            assert_eq!(m, before);
        }
        let mut m = tcp.clone();
        assert_eq!(
            rewrite_quoted(&mut m, End::Src, "10.0.0.5".parse().unwrap(), 1),
            Err(WireError::Unsupported)
        );
        assert_eq!(m, tcp);
    }

    #[test]
    fn emit_stops_at_the_end_of_out() {
        let p = packet(true);
        assert_eq!(emit_packet_too_big(&mut [0; 7], &p, 1400, r(), b()), 0);
        let mut out = [0u8; 64];
        assert_eq!(emit_packet_too_big(&mut out, &p, 1400, r(), b()), 64);
        assert_eq!(&out[8..], &p[..56]);
        assert!(parse(&out, r(), b()).unwrap().checksum_ok);
    }

    /// A small TCP or UDP packet from B to C, whole, with valid checksums.
    fn small_packet(tcp: bool, udp_checksum: bool) -> Vec<u8> {
        let (l4, next_header) = if tcp { (20, NEXT_TCP) } else { (8, NEXT_UDP) };
        let mut p = vec![0x5a; 40 + l4 + 9];
        let ip = Ipv6Repr {
            src: b(),
            dst: c(),
            next_header,
            payload_len: l4 + 9,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 9,
        };
        ip.emit(&mut p);
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
            t.emit_v6(&mut p[40..], b(), c());
        } else {
            UdpRepr { src_port: 53, dst_port: 40001 }.emit_v6(&mut p[40..], b(), c());
            if !udp_checksum {
                p[46..48].fill(0);
            }
        }
        p
    }

    /// Whether the quoted packet's transport checksum and the ICMPv6 checksum (carried from R to
    /// `to`) verify, each recomputed from scratch (the quote holds the whole packet).
    fn all_verify(m: &[u8], to: Ipv6Addr) -> bool {
        let ip = Ipv6Packet::new_checked(&m[8..]).unwrap();
        let l4 = ip.payload();
        let l4_ok = if ip.next_header() == NEXT_TCP {
            TcpPacket::new_checked(l4).unwrap().verify_checksum_v6(ip.src(), ip.dst())
        } else {
            let u = UdpPacket::new_checked(l4).unwrap();
            u.checksum() == 0 || u.verify_checksum_v6(ip.src(), ip.dst())
        };
        l4_ok && parse(m, r(), to).unwrap().checksum_ok
    }

    proptest! {
        #[test]
        fn rewriting_keeps_every_checksum_right(tcp in any::<bool>(), udp_checksum in any::<bool>(),
                                                src in any::<bool>(), a in any::<u128>(), port in any::<u16>()) {
            let p = small_packet(tcp, udp_checksum);
            let mut m = [0u8; 128];
            let n = emit(&mut m, icmpv6::TYPE_TIME_EXCEEDED, 0, [0; 4], &p, r(), b());
            let m = &mut m[..n];
            prop_assert!(all_verify(m, b()));
            let (end, new) = (if src { End::Src } else { End::Dst }, Ipv6Addr::from(a));
            rewrite_quoted(m, end, new.into(), port).unwrap();
            prop_assert!(all_verify(m, b()));
            // The outer destination follows the quoted source, as a NAT66 translates both.
            icmpv6::update_checksum_for_address(m, b(), new);
            prop_assert!(all_verify(m, new));
            let q = parse(m, r(), new).unwrap().quoted;
            let got = if src { (q.src, q.src_port) } else { (q.dst, q.dst_port) };
            prop_assert_eq!(got, (new, port));
            prop_assert_eq!(!udp_checksum && !tcp, read_u16(m, 8 + 40 + 6) == 0);
        }

        #[test]
        fn shifting_the_quoted_sequence_keeps_every_checksum_right(delta in any::<u32>(), tcp in any::<bool>()) {
            let p = small_packet(tcp, true);
            let mut m = [0u8; 128];
            let n = emit_packet_too_big(&mut m, &p, 1280, r(), b());
            let m = &mut m[..n];
            let before = m.to_vec();
            let res = shift_quoted_seq(m, delta);
            if tcp {
                prop_assert_eq!(res, Ok(()));
                prop_assert!(all_verify(m, b()));
                prop_assert_eq!(crate::wire::read_u32(m, 8 + 40 + 4), 5u32.wrapping_add(delta));
            } else {
                prop_assert_eq!(res, Err(WireError::Unsupported));
                prop_assert_eq!(&m[..], &before[..]);
            }
        }

        #[test]
        fn never_panics_and_keeps_checksum_status(bytes in proptest::collection::vec(any::<u8>(), 0..140),
                                                  a in any::<u128>(), port in any::<u16>(), src in any::<bool>()) {
            let mut m = bytes;
            // Most get an error type and a plausible quoted header (version 6, TCP, UDP or an
            // extension header next), so that rewrites happen; the checksums stay arbitrary.
            if m.len() >= QUOTE_MIN + HEADER_LEN && m[1] != 0 {
                m[0] = 1 + m[1] % 4;
                m[8] = 0x60;
                m[8 + 6] = [NEXT_TCP, NEXT_UDP, ipv6::NEXT_DEST_OPTS, ipv6::NEXT_FRAGMENT][usize::from(m[9]) % 4];
            }
            let before = parse(&m, r(), b());
            let end = if src { End::Src } else { End::Dst };
            let res = rewrite_quoted(&mut m, end, Ipv6Addr::from(a).into(), port);
            prop_assert_eq!(res, before.map(|_| ()));
            if let Ok(e) = before {
                prop_assert_eq!(parse(&m, r(), b()).unwrap().checksum_ok, e.checksum_ok);
            }
            let mut out = [0u8; 160];
            let n = emit_packet_too_big(&mut out, &m, u32::from(port), r(), b());
            prop_assert_eq!(n, (m.len() + 8).min(160));
            prop_assert!(icmpv6::verify(&out[..n], r(), b()));
        }
    }
}
