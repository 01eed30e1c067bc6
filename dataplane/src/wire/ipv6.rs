//! IPv6 (RFC 8200): the fixed header, and the walk over extension headers to the upper layer.

use super::{read_u16, read_u32, write_u16, write_u32, WireError};
use std::net::Ipv6Addr;

mod field {
    use core::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    /// In a fragment header: next header, reserved, offset and flags word, identification.
    pub const FRAG_NEXT: usize = 0;
    pub const FRAG_OFFSET_FLAGS: usize = 2;
    pub const FRAG_IDENT: usize = 4;
}

pub const HEADER_LEN: usize = 40;

/// The smallest MTU every IPv6 link has (RFC 8200 5).
pub const MIN_MTU: usize = 1280;

/// Hop limit of packets the appliance originates (tunnel outer headers, replies it builds).
pub const DEFAULT_HOP_LIMIT: u8 = 64;

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_IPV4: u8 = 4;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_IPV6: u8 = 41;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_GRE: u8 = 47;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NO_NEXT: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;

/// Length of a fragment header (RFC 8200 4.5).
pub const FRAG_HEADER_LEN: usize = 8;
/// The more-fragments flag of a fragment header's offset and flags word.
pub const FRAG_M: u16 = 0x0001;
/// The fragment offset's bits of that word (8-byte units, in its top 13 bits).
pub const FRAG_OFFSET_MASK: u16 = 0xfff8;

/// Most extension headers [`upper_layer`] walks before it refuses a packet as malformed.
pub const MAX_EXT_HEADERS: usize = 8;

/// A view of an IPv6 packet. The buffer may be longer than the packet (link padding):
/// `40 + payload_len()` is authoritative and `payload()` stops there.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks version 6 and 40 + payload length <= buffer length. A payload length of zero
    /// is an empty payload (jumbograms, RFC 2675, are not read).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if HEADER_LEN + usize::from(read_u16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN))
    }

    /// The header and its payload: `40 + payload_len()`.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::SRC]))
    }

    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::DST]))
    }

    /// The bytes after the fixed header, up to `total_len()` (link padding excluded):
    /// extension headers, if any, and the upper layer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let w = read_u16(b, field::VER_TC_FLOW) & 0xf00f | u16::from(tc) << 4;
        write_u16(b, field::VER_TC_FLOW, w);
    }

    /// Sets the flow label to the low 20 bits of `label`.
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let w = read_u32(b, field::VER_TC_FLOW) & 0xfff0_0000 | label & 0x000f_ffff;
        write_u32(b, field::VER_TC_FLOW, w);
    }

    /// Sets the payload length; the caller keeps it within the buffer, which `payload()`
    /// relies on.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = nh;
    }

    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let t = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..t]
    }
}

impl<'a> Ipv6Packet<&'a mut [u8]> {
    /// The payload for as long as the buffer is borrowed (to view the next header in place).
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let t = self.total_len();
        &mut self.buffer[HEADER_LEN..t]
    }
}

/// Sixteen bytes from a slice of sixteen.
fn addr(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a
}

/// The fields of an IPv6 fixed header, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    /// Length of everything after this header (extension headers included).
    pub payload_len: usize,
    pub traffic_class: u8,
    /// The flow label: its low 20 bits are written.
    pub flow_label: u32,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// The fields of a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            hop_limit: p.hop_limit(),
        }
    }

    /// Writes the header into the first 40 bytes of `b`. The caller ensures `payload_len`
    /// fits in 16 bits.
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..HEADER_LEN];
        let word = 6 << 28 | u32::from(self.traffic_class) << 20 | self.flow_label & 0x000f_ffff;
        write_u32(b, field::VER_TC_FLOW, word);
        write_u16(b, field::PAYLOAD_LEN, self.payload_len as u16);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
    }
}

/// A fixed header written once as a template and completed per packet (tunnels' outer
/// headers): [`write_varying`](template::write_varying) writes what changes.
pub mod template {
    use super::{field, write_u16, write_u32};

    /// Writes the per-packet fields of the header at the front of `h`: version, traffic class
    /// and flow label (its low 20 bits) as one word, and the payload length.
    #[inline(always)]
    pub fn write_varying(h: &mut [u8], traffic_class: u8, flow_label: u32, payload_len: u16) {
        write_u32(h, field::VER_TC_FLOW, 6 << 28 | u32::from(traffic_class) << 20 | flow_label & 0x000f_ffff);
        write_u16(h, field::PAYLOAD_LEN, payload_len);
    }
}

/// A fragment header (RFC 8200 4.5) as [`upper_layer`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Where the fragment header starts in the packet.
    pub at: usize,
    /// Where this fragment's data sits in its packet's fragmentable part, in bytes.
    pub offset: usize,
    /// The M flag: more fragments follow.
    pub more: bool,
    pub ident: u32,
}

impl FragmentHeader {
    /// Offset 0: the whole packet (an atomic fragment) or its first fragment, which holds the
    /// upper-layer header.
    pub fn at_offset_zero(&self) -> bool {
        self.offset == 0
    }
}

/// Where the upper layer of an IPv6 packet starts, past its extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol: the last next header of the chain. [`NEXT_NO_NEXT`] when the
    /// chain says nothing follows; for a fragment past the first, the protocol named by the
    /// fragment header (the bytes at `offset` are then the middle of its data).
    pub protocol: u8,
    /// Where the upper layer starts in the packet (the packet's end for no next header).
    pub offset: usize,
    /// Where the byte naming `protocol` is in the packet: 6 (the fixed header's) or the first
    /// byte of the last extension header.
    pub next_header_at: usize,
    /// The fragment header, if the packet has one.
    pub fragment: Option<FragmentHeader>,
}

/// Walks the extension headers of the IPv6 packet `packet` (from its fixed header; link
/// padding after it allowed) to its upper layer: hop-by-hop options (first only, RFC 8200
/// 4.1), routing and destination options headers are skipped ((length + 1) * 8 bytes each)
/// and a fragment header is read; any other next header is the upper layer. Past a fragment
/// header of non-zero offset the walk stops: the rest is data. Errors: those of
/// [`Ipv6Packet::new_checked`]; `Truncated` for a header running past the payload;
/// `Malformed` for hop-by-hop options not first, a second fragment header, or more than
/// [`MAX_EXT_HEADERS`] extension headers.
pub fn upper_layer(packet: &[u8]) -> Result<UpperLayer, WireError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    walk(&packet[..ip.total_len()])
}

/// [`upper_layer`] over `b`, whose fixed header is known to be present, with `b` ending at the
/// end of the (possibly quoted, so cut) packet.
pub(super) fn walk(b: &[u8]) -> Result<UpperLayer, WireError> {
    let mut next = b[field::NEXT_HEADER];
    let (mut at, mut next_at) = (HEADER_LEN, field::NEXT_HEADER);
    let mut fragment = None;
    for n in 0..=MAX_EXT_HEADERS {
        let len = match next {
            NEXT_HOP_BY_HOP if n > 0 => return Err(WireError::Malformed),
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => match b.get(at + 1) {
                Some(&l) => (usize::from(l) + 1) * 8,
                None => return Err(WireError::Truncated),
            },
            NEXT_FRAGMENT if fragment.is_some() => return Err(WireError::Malformed),
            NEXT_FRAGMENT => FRAG_HEADER_LEN,
            _ => break,
        };
        if n == MAX_EXT_HEADERS {
            return Err(WireError::Malformed);
        }
        let Some(h) = b.get(at..at + len) else {
            return Err(WireError::Truncated);
        };
        if next == NEXT_FRAGMENT {
            let word = read_u16(h, field::FRAG_OFFSET_FLAGS);
            let f = FragmentHeader {
                at,
                offset: usize::from(word & FRAG_OFFSET_MASK),
                more: word & FRAG_M != 0,
                ident: read_u32(h, field::FRAG_IDENT),
            };
            fragment = Some(f);
            if !f.at_offset_zero() {
                return Ok(UpperLayer {
                    protocol: h[field::FRAG_NEXT],
                    offset: at + len,
                    next_header_at: at,
                    fragment,
                });
            }
        }
        (next, next_at, at) = (h[0], at, at + len);
    }
    if next == NEXT_NO_NEXT {
        at = b.len();
    }
    Ok(UpperLayer { protocol: next, offset: at, next_header_at: next_at, fragment })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // scapy: raw(IPv6(src='2001:db8::1', dst='2001:db8:0:1::80', tc=0xb8, fl=0x12345,
    //     hlim=63, nh=17, plen=12)) + b'payload!' + 4 bytes of zero (so 40 + 12 = 52 bytes),
    //     and 4 bytes of link padding
    const HEADER: [u8; 40] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x3f, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
    ];

    fn src() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:db8:0:1::80".parse().unwrap()
    }

    fn packet() -> Vec<u8> {
        let mut p = HEADER.to_vec();
        p.extend_from_slice(b"payload!\0\0\0\0");
        p.extend_from_slice(&[0xee; 4]);
        p
    }

    #[test]
    fn parse_fields() {
        let p = packet();
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!((ip.traffic_class(), ip.flow_label(), ip.payload_len()), (0xb8, 0x12345, 12));
        assert_eq!((ip.next_header(), ip.hop_limit(), ip.total_len()), (NEXT_UDP, 63, 52));
        assert_eq!((ip.src(), ip.dst()), (src(), dst()));
        assert_eq!(ip.payload(), b"payload!\0\0\0\0", "the link padding is not payload");
    }

    #[test]
    fn emit_matches_scapy_and_round_trips() {
        let r = Ipv6Repr {
            src: src(),
            dst: dst(),
            next_header: NEXT_UDP,
            payload_len: 12,
            traffic_class: 0xb8,
            flow_label: 0xfff1_2345, // the bits above 20 are dropped
            hop_limit: 63,
        };
        let mut b = [0u8; 40];
        r.emit(&mut b);
        assert_eq!(b, HEADER);
        let p = packet();
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&ip), Ipv6Repr { flow_label: 0x12345, ..r });
    }

    #[test]
    fn setters_write_their_fields_only() {
        let mut p = packet();
        let mut ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        ip.set_traffic_class(0x04);
        ip.set_flow_label(0xabcde);
        ip.set_payload_len(8);
        ip.set_next_header(NEXT_TCP);
        ip.set_hop_limit(1);
        ip.set_src(dst());
        ip.set_dst(src());
        ip.payload_mut()[0] = b'P';
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!((ip.traffic_class(), ip.flow_label(), ip.payload_len()), (0x04, 0xabcde, 8));
        assert_eq!((ip.next_header(), ip.hop_limit()), (NEXT_TCP, 1));
        assert_eq!((ip.src(), ip.dst()), (dst(), src()));
        assert_eq!(ip.payload(), b"Payload!");
        assert_eq!(p[0] >> 4, 6, "version stays");
        let mut ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        ip.set_traffic_class(0xff);
        ip.set_flow_label(u32::MAX);
        assert_eq!(&p[..4], &[0x6f, 0xff, 0xff, 0xff]);
        let ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!(ip.into_payload_mut().len(), 8);
    }

    #[test]
    fn refuses_bad_headers() {
        let p = packet();
        assert_eq!(Ipv6Packet::new_checked(&p[..39]).unwrap_err(), WireError::Truncated);
        assert_eq!(Ipv6Packet::new_checked(&p[..51]).unwrap_err(), WireError::Truncated);
        assert!(Ipv6Packet::new_checked(&p[..52]).is_ok());
        for v in [0x4b, 0x0b, 0xfb] {
            let mut bad = p.clone();
            bad[0] = v;
            assert_eq!(Ipv6Packet::new_checked(&bad[..]).unwrap_err(), WireError::Malformed);
        }
    }

    // S = '2001:db8::1', D = '2001:db8:0:1::80'
    // raw(IPv6(src=S, dst=D, hlim=64)/IPv6ExtHdrHopByHop()
    //     /IPv6ExtHdrDestOpt(options=[PadN(optdata=b'\0'*4)])
    //     /IPv6ExtHdrRouting(addresses=['2001:db8::99'])
    //     /IPv6ExtHdrFragment(offset=0, m=1, id=0x01020304)
    //     /TCP(sport=40000, dport=443, flags='S', seq=1))
    const CHAIN: [u8; 108] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x44, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x01,
        0x04, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99, 0x06, 0x00, 0x00, 0x01, 0x01,
        0x02, 0x03, 0x04, 0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02,
        0x20, 0x00, 0x95, 0xda, 0x00, 0x00,
    ];
    // raw(IPv6(src=S, dst=D)/IPv6ExtHdrFragment(offset=185, m=0, id=0xdeadbeef, nh=17)
    //     /Raw(b'\xab'*16))
    const LATER_FRAGMENT: [u8; 64] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x2c, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x11, 0x00, 0x05, 0xc8, 0xde, 0xad, 0xbe, 0xef, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];
    // raw(IPv6(src=S, dst=D)/IPv6ExtHdrDestOpt()/IPv6ExtHdrHopByHop()/UDP(sport=1, dport=2))
    const HBH_SECOND: [u8; 64] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x3c, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x01,
        0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x08, 0xa3, 0xe7,
    ];
    // raw(IPv6(src=S, dst=D)/IPv6ExtHdrDestOpt()/.../IPv6ExtHdrDestOpt()/UDP(sport=1, dport=2)),
    // nine destination options headers
    const NINE: [u8; 120] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x50, 0x3c, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01,
        0x04, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04,
        0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00,
        0x00, 0x00, 0x11, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x08, 0xa3,
        0xe7,
    ];
    // raw(IPv6(src=S, dst=D, nh=59)/Raw(b'junk'))
    const NO_NEXT: [u8; 44] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x04, 0x3b, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x6a, 0x75, 0x6e, 0x6b,
    ];

    #[test]
    fn walks_a_chain_to_tcp() {
        let u = upper_layer(&CHAIN).unwrap();
        let frag = FragmentHeader { at: 80, offset: 0, more: true, ident: 0x0102_0304 };
        assert_eq!(
            u,
            UpperLayer { protocol: NEXT_TCP, offset: 88, next_header_at: 80, fragment: Some(frag) }
        );
        assert_eq!(&CHAIN[u.offset..u.offset + 4], &[0x9c, 0x40, 0x01, 0xbb], "the ports");
        assert!(frag.at_offset_zero());
        // Link padding does not change the walk.
        let mut padded = CHAIN.to_vec();
        padded.extend_from_slice(&[0x2c; 10]);
        assert_eq!(upper_layer(&padded), Ok(u));
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let u = upper_layer(&LATER_FRAGMENT).unwrap();
        let frag = FragmentHeader { at: 40, offset: 185 * 8, more: false, ident: 0xdead_beef };
        assert_eq!(
            u,
            UpperLayer { protocol: NEXT_UDP, offset: 48, next_header_at: 40, fragment: Some(frag) }
        );
        assert!(!frag.at_offset_zero());
    }

    #[test]
    fn no_extension_headers_and_no_next_header() {
        let p = packet();
        let u = UpperLayer { protocol: NEXT_UDP, offset: 40, next_header_at: 6, fragment: None };
        assert_eq!(upper_layer(&p), Ok(u));
        let u = UpperLayer { protocol: NEXT_NO_NEXT, offset: 44, next_header_at: 6, fragment: None };
        assert_eq!(upper_layer(&NO_NEXT), Ok(u));
    }

    #[test]
    fn refuses_bad_chains() {
        assert_eq!(upper_layer(&HBH_SECOND), Err(WireError::Malformed));
        assert_eq!(upper_layer(&NINE), Err(WireError::Malformed));
        // Eight are walked: drop the first of the nine (40..48) and shorten the payload.
        let mut eight = NINE.to_vec();
        eight.drain(40..48);
        eight[5] -= 8;
        let u = upper_layer(&eight).unwrap();
        assert_eq!((u.protocol, u.offset, u.next_header_at), (NEXT_UDP, 104, 96));
        // A second fragment header.
        let mut two = LATER_FRAGMENT.to_vec();
        two[42..44].fill(0); // offset 0: the walk goes on
        two[40] = NEXT_FRAGMENT;
        assert_eq!(upper_layer(&two), Err(WireError::Malformed));
        // The routing header (56..80) cut by the payload length, then by the buffer.
        let mut cut = CHAIN.to_vec();
        cut[5] = 56 + 23 - 40;
        assert_eq!(upper_layer(&cut[..]), Err(WireError::Truncated));
        assert_eq!(upper_layer(&CHAIN[..79]), Err(WireError::Truncated));
        cut[5] = 56 - 40 + 1; // the routing header's length byte not there
        assert_eq!(upper_layer(&cut[..]), Err(WireError::Truncated));
        // The fragment header (80..88) cut.
        cut[5] = 87 - 40;
        assert_eq!(upper_layer(&cut[..]), Err(WireError::Truncated));
        // The fixed header refused.
        assert_eq!(upper_layer(&CHAIN[..39]), Err(WireError::Truncated));
        let mut v4 = CHAIN;
        v4[0] = 0x45;
        assert_eq!(upper_layer(&v4), Err(WireError::Malformed));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120), fix in any::<bool>()) {
            let mut b = b;
            if fix && b.len() >= HEADER_LEN {
                b[0] = 0x60 | (b[0] & 0x0f);
                let plen = usize::from(b[5]) % (b.len() - HEADER_LEN + 1);
                b[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            }
            if let Ok(ip) = Ipv6Packet::new_checked(&b[..]) {
                let r = Ipv6Repr::parse(&ip);
                prop_assert_eq!(ip.payload().len(), r.payload_len);
                let mut out = [0u8; HEADER_LEN];
                r.emit(&mut out);
                prop_assert_eq!(&out[..], &b[..HEADER_LEN]);
            }
            if let Ok(u) = upper_layer(&b) {
                prop_assert!(u.offset <= b.len() && u.next_header_at < u.offset);
            }
        }
    }
}
