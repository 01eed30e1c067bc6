//! IPv4 (RFC 791).

use super::{checksum, read_u16, write_u16, WireError};
use std::net::Ipv4Addr;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

pub const HEADER_LEN: usize = 20;

/// TTL of packets the appliance originates (tunnel outer headers, replies it builds).
pub const DEFAULT_TTL: u8 = 64;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;

pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;
/// The fragment offset's bits of the flags and fragment offset word (8-byte units).
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The longest header: 15 words.
pub const MAX_HEADER_LEN: usize = 60;

/// A view of an IPv4 packet. The buffer may be longer than the packet (link padding):
/// `total_len()` is authoritative and `payload()` stops there.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version 4, 20 <= header length <= total length <= buffer length.
    /// The checksum is checked separately by [`Ipv4Packet::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(read_u16(b, field::LENGTH));
        if ihl < HEADER_LEN || total < ihl {
            return Err(WireError::Malformed);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// A view without checks, for a buffer the caller has just sized: accessors and setters
    /// panic if it is shorter than the header its fields describe.
    pub(super) fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// True for any fragment (more-fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The flags and fragment offset word as it is (flags in the top 3 bits, offset in 8-byte
    /// units in the low 13).
    pub fn flags_frag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// The fragment offset in bytes (a multiple of 8).
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & FRAG_OFFSET_MASK) * 8
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buffer.as_ref()[..self.header_len()])) == 0xffff
    }

    /// The option bytes: the header past its fixed 20 bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The bytes after the header, up to `total_len()` (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the header length in bytes (version stays 4); `len` is a multiple of 4 from 20
    /// to 60.
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | (len / 4) as u8 & 0x0f;
    }

    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the flags and fragment offset word (see [`Ipv4Packet::flags_frag`]).
    pub fn set_flags_frag(&mut self, word: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG, word);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[h..t]
    }
}

impl<'a> Ipv4Packet<&'a mut [u8]> {
    /// The payload for as long as the buffer is borrowed (to view the next header in place).
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buffer[h..t]
    }
}

/// The header fields the packet path reads, from one bounds check of the fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub header_len: u8,
    pub tos: u8,
    pub total_len: u16,
    pub ident: u16,
    flags_frag: u16,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Whether the header checksum (options included) is right.
    pub checksum_ok: bool,
}

impl Ipv4Header {
    /// The header at the start of `b`, with the checks of [`Ipv4Packet::new_checked`]; the
    /// checksum is verified and the result kept in `checksum_ok`.
    #[inline]
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        let Some(h) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if h[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(h[field::VER_IHL] & 0x0f) * 4;
        let total = u16::from_be_bytes([h[2], h[3]]);
        if ihl < HEADER_LEN || usize::from(total) < ihl {
            return Err(WireError::Malformed);
        }
        if usize::from(total) > b.len() {
            return Err(WireError::Truncated);
        }
        // The ones' complement sum is the same in either byte order up to a final swap
        // (RFC 1071), and all-ones swapped is all-ones: so the fixed header's words are summed
        // as they lie in memory, without byte swaps, for the check below.
        let sum = if ihl == HEADER_LEN {
            // Two 64-bit words and one 32-bit one, added with end-around carry.
            let w8 = |i: usize| h[i..i + 8].try_into().map_or(0, u64::from_ne_bytes);
            let (a, b) = (w8(0), w8(8));
            let c = u64::from(u32::from_ne_bytes([h[16], h[17], h[18], h[19]]));
            let (ab, carry) = a.overflowing_add(b);
            let (acc, carry2) = ab.overflowing_add(c + u64::from(carry));
            let acc = acc + u64::from(carry2);
            let acc = (acc & 0xffff_ffff) + (acc >> 32);
            ((acc & 0xffff_ffff) + (acc >> 32)) as u32
        } else {
            // ihl <= total <= b.len()
            checksum::sum(&b[..ihl])
        };
        Ok(Ipv4Header {
            header_len: ihl as u8,
            tos: h[field::TOS],
            total_len: total,
            ident: u16::from_be_bytes([h[4], h[5]]),
            flags_frag: u16::from_be_bytes([h[6], h[7]]),
            protocol: h[field::PROTOCOL],
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            checksum_ok: checksum::fold(sum) == 0xffff,
        })
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_frag & FLAG_DF != 0
    }

    /// True for any fragment (more-fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.flags_frag & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Offset 0: the whole packet, or a datagram's first fragment (the one with the transport
    /// header).
    pub fn at_offset_zero(&self) -> bool {
        self.flags_frag & FRAG_OFFSET_MASK == 0
    }

    /// Where this fragment's data sits in its datagram, in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag & FRAG_OFFSET_MASK) * 8
    }
}

/// The fields of a 20-byte IPv4 header (no options), for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Length of everything after this header.
    pub payload_len: usize,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Writes the header with a correct checksum into the first 20 bytes of `b`.
    /// The caller ensures `payload_len + 20` fits in 16 bits.
    #[inline]
    pub fn emit(&self, b: &mut [u8]) {
        let words = [
            0x4500 | u16::from(self.tos),
            (HEADER_LEN + self.payload_len) as u16,
            self.ident,
            if self.dont_frag { FLAG_DF } else { 0 },
            u16::from_be_bytes([self.ttl, self.protocol]),
        ];
        let (src, dst) = (u32::from(self.src), u32::from(self.dst));
        // The checksum is summed from the values, not read back from `b`: reading 16-bit
        // words just written as bytes stalls store forwarding (it was most of this function).
        let sum = words.iter().map(|&w| u32::from(w)).sum::<u32>()
            + (src >> 16)
            + (src & 0xffff)
            + (dst >> 16)
            + (dst & 0xffff);
        let b = &mut b[..HEADER_LEN];
        for (i, w) in words.iter().enumerate() {
            write_u16(b, 2 * i, *w);
        }
        write_u16(b, field::CHECKSUM, !checksum::fold(sum));
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
    }
}

/// Headers written from a template, as a tunnel's outer header is: the fixed fields come from
/// the template, and these write the ones that vary per packet.
pub mod template {
    use super::{field, write_u16};

    /// Zeroes the fields [`write_varying`] writes, in the option-less header at the front of `h`.
    pub fn clear_varying(h: &mut [u8]) {
        h[field::TOS] = 0;
        write_u16(h, field::LENGTH, 0);
        write_u16(h, field::IDENT, 0);
        write_u16(h, field::FLAGS_FRAG, 0);
        write_u16(h, field::CHECKSUM, 0);
    }

    /// Writes the per-packet fields of the option-less header at the front of `h`: version
    /// and header length, TOS, total length, identification and flags (fragment offset 0)
    /// as one 8-byte store, and the checksum.
    #[inline(always)]
    pub fn write_varying(h: &mut [u8], tos: u8, total: u16, ident: u16, flags: u16, checksum: u16) {
        let word = 0x45u64 << 56
            | u64::from(tos) << 48
            | u64::from(total) << 32
            | u64::from(ident) << 16
            | u64::from(flags);
        h[field::VER_IHL..field::TTL].copy_from_slice(&word.to_be_bytes());
        write_u16(h, field::CHECKSUM, checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fields_are_the_varying_ones() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(198, 19, 0, 1),
            dst: Ipv4Addr::new(198, 19, 0, 10),
            protocol: PROTO_GRE,
            payload_len: 100,
            tos: 0x10,
            ident: 0x1234,
            dont_frag: true,
            ttl: 64,
        };
        let mut want = [0u8; HEADER_LEN];
        r.emit(&mut want);
        let mut h = want;
        template::clear_varying(&mut h);
        assert_eq!(&h[8..10], &want[8..10], "TTL and protocol stay");
        assert_eq!(&h[12..], &want[12..], "addresses stay");
        assert_eq!(h[0], 0x45, "version and header length stay");
        assert_eq!(h[1..8].iter().chain(&h[10..12]).filter(|&&b| b != 0).count(), 0);
        let c = u16::from_be_bytes([want[10], want[11]]);
        template::write_varying(&mut h, 0x10, 120, 0x1234, FLAG_DF, c);
        assert_eq!(h, want);
    }

    // 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73, DF, TTL 64, checksum 0xb861.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
        0xa8, 0x00, 0xc7,
    ];

    fn packet() -> Vec<u8> {
        let mut p = HEADER.to_vec();
        p.resize(0x73, 0xab);
        p
    }

    #[test]
    fn parse_fields() {
        let p = packet();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.total_len(), 0x73);
        assert!(ip.dont_frag());
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), PROTO_UDP);
        assert_eq!(ip.src(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(ip.dst(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload().len(), 0x73 - 20);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut p = packet();
        p.extend_from_slice(&[0; 6]);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.payload().len(), 0x73 - 20);
    }

    #[test]
    fn refuses_bad_headers() {
        let p = packet();
        assert_eq!(Ipv4Packet::new_checked(&p[..19]).unwrap_err(), WireError::Truncated);
        assert_eq!(Ipv4Packet::new_checked(&p[..0x72]).unwrap_err(), WireError::Truncated);
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]).unwrap_err(), WireError::Malformed);
        let mut ihl4 = p.clone();
        ihl4[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(), WireError::Malformed);
        let mut short_total = p.clone();
        short_total[3] = 19;
        assert_eq!(Ipv4Packet::new_checked(&short_total[..]).unwrap_err(), WireError::Malformed);
        let mut ihl_past_total = p.clone();
        ihl_past_total[0] = 0x4f; // 60-byte header
        ihl_past_total[2] = 0;
        ihl_past_total[3] = 40;
        assert_eq!(Ipv4Packet::new_checked(&ihl_past_total[..]).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn bad_checksum_detected() {
        let mut p = packet();
        p[11] ^= 1;
        assert!(!Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragments() {
        let mut p = packet();
        p[6] = 0x20; // MF
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().is_fragment());
        p[6] = 0x00;
        p[7] = 0x10; // offset 16*8
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().is_fragment());
    }

    #[test]
    fn fragment_fields_and_setters() {
        let mut p = packet();
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!((ip.flags_frag(), ip.more_frags(), ip.frag_offset()), (FLAG_DF, false, 0));
        assert!(ip.options().is_empty());
        ip.set_flags_frag(FLAG_MF | 0x1fff);
        assert_eq!((ip.more_frags(), ip.frag_offset(), ip.dont_frag()), (true, 0x1fff * 8, false));
        ip.set_total_len(0x40);
        ip.set_header_len(24);
        assert_eq!((ip.header_len(), ip.total_len(), ip.options().len()), (24, 0x40, 4));
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        assert_eq!(p[0], 0x46);
    }

    proptest::proptest! {
        #[test]
        fn header_parse_agrees_with_the_view(mut b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                                             fix in proptest::prelude::any::<bool>()) {
            // Half the cases get a plausible header (version 4, a length that fits, the right
            // checksum), so that both the accepting and the refusing paths are exercised.
            if fix && b.len() >= HEADER_LEN {
                b[0] = 0x40 | (b[0] & 0x0f).max(5);
                let ihl = usize::from(b[0] & 0x0f) * 4;
                if ihl <= b.len() {
                    let total = ihl + (usize::from(b[3]) % (b.len() - ihl + 1));
                    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                    b[10..12].fill(0);
                    let c = checksum::checksum(&b[..ihl]);
                    b[10..12].copy_from_slice(&c.to_be_bytes());
                }
            }
            let h = Ipv4Header::parse(&b);
            match Ipv4Packet::new_checked(&b[..]) {
                Err(e) => proptest::prop_assert_eq!(h, Err(e)),
                Ok(p) => {
                    let h = h.unwrap();
                    proptest::prop_assert_eq!(usize::from(h.header_len), p.header_len());
                    proptest::prop_assert_eq!(usize::from(h.total_len), p.total_len());
                    proptest::prop_assert_eq!((h.tos, h.ident, h.protocol), (p.tos(), p.ident(), p.protocol()));
                    proptest::prop_assert_eq!((h.src, h.dst), (p.src(), p.dst()));
                    proptest::prop_assert_eq!((h.dont_frag(), h.is_fragment()), (p.dont_frag(), p.is_fragment()));
                    proptest::prop_assert_eq!(h.checksum_ok, p.verify_checksum());
                    if fix {
                        proptest::prop_assert!(h.checksum_ok);
                    }
                }
            }
        }
    }

    #[test]
    fn emit_matches_literal() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: PROTO_UDP,
            payload_len: 0x73 - 20,
            tos: 0,
            ident: 0,
            dont_frag: true,
            ttl: 64,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b);
        assert_eq!(b, HEADER);
    }
}
