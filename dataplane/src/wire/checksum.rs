//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// Adds `data` as big-endian 16-bit words to a 32-bit accumulator (odd trailing byte padded).
/// Works four bytes at a time: since 2^16 = 1 (mod 2^16 - 1), summing 32-bit words and
/// folding gives the same ones'-complement sum as summing 16-bit words.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for c in &mut words {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = words.remainder() {
        acc += u64::from(*b) << 8;
    }
    fold64(acc)
}

/// Folds a 64-bit accumulator to 32 bits (ones' complement): two end-around carries suffice.
#[inline]
fn fold64(acc: u64) -> u32 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    ((acc & 0xffff_ffff) + (acc >> 32)) as u32
}

/// Folds a 32-bit accumulator into 16 bits (ones' complement addition): after two end-around
/// carries the value fits in 16 bits.
#[inline]
pub fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

/// The checksum field value for `data` (with the checksum field itself zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Combines partial sums.
pub fn combine(a: u32, b: u32) -> u32 {
    fold64(u64::from(a) + u64::from(b))
}

/// Sum of the IPv4 pseudo-header for TCP/UDP checksums.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u32 {
    let mut acc = u32::from(u16::from_be_bytes([src[0], src[1]]));
    acc += u32::from(u16::from_be_bytes([src[2], src[3]]));
    acc += u32::from(u16::from_be_bytes([dst[0], dst[1]]));
    acc += u32::from(u16::from_be_bytes([dst[2], dst[3]]));
    acc += u32::from(protocol);
    acc += u32::from(length);
    acc
}

/// Sum of the IPv6 pseudo-header (RFC 8200 8.1) for upper-layer checksums: source and
/// destination addresses, the upper-layer packet length as 32 bits, and the next header.
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, length: u32) -> u32 {
    let acc = u64::from(sum(&src))
        + u64::from(sum(&dst))
        + u64::from(length >> 16)
        + u64::from(length & 0xffff)
        + u64::from(next_header);
    fold64(acc)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
///
/// When the data now sums to zero the equation can give 0x0000, which fails verification if
/// the data is all zeros (a receiver sums to +0, not -0); 0xffff verifies in every zero-sum
/// case, so that is what is returned. (Found by the `pipeline` fuzz target: an echo request
/// with id, sequence and data all zero got a reply with checksum 0.)
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// As [`update16`] for a 32-bit field (an IPv4 address, a sequence number).
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// As [`update16`] for a 128-bit field (an IPv6 address), in one step: the old field's sum
/// is subtracted (its ones' complement added) and the new one's added.
pub fn update128(csum: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    let acc = combine(combine(u32::from(!csum), u32::from(!fold(sum(&old)))), sum(&new));
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// Writes `v` at the even offset `at` of `b`, updating the checksum `sum` of a region of
/// `b` that covers it (RFC 1624).
pub fn put16(b: &mut [u8], at: usize, v: u16, sum: &mut u16) {
    *sum = update16(*sum, super::read_u16(b, at), v);
    super::write_u16(b, at, v);
}

/// Adds `delta` to the TCP sequence number at the even offset `seq_at` of an ICMP error
/// message `m` (a quoted segment's), updating the quoted TCP checksum at `tcp_checksum_at`
/// when it is quoted, and the message's own checksum at `msg_checksum_at`.
pub fn shift_seq(
    m: &mut [u8],
    seq_at: usize,
    tcp_checksum_at: Option<usize>,
    msg_checksum_at: usize,
    delta: u32,
) {
    let old = super::read_u32(m, seq_at);
    let new = old.wrapping_add(delta);
    let mut ck = super::read_u16(m, msg_checksum_at);
    put16(m, seq_at, (new >> 16) as u16, &mut ck);
    put16(m, seq_at + 2, new as u16, &mut ck);
    if let Some(at) = tcp_checksum_at {
        let c = update32(super::read_u16(m, at), old, new);
        put16(m, at, c, &mut ck);
    }
    super::write_u16(m, msg_checksum_at, ck);
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header; its checksum is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn update_to_all_zero_data_gives_ffff() {
        // An echo request 08 00 <csum> 00 00 00 00 turned into a reply: all zeros but the
        // checksum, which must then be 0xffff to verify.
        let mut m = [8u8, 0, 0, 0, 0, 0, 0, 0];
        let c = checksum(&m);
        assert_eq!(c, 0xf7ff);
        m[0] = 0;
        let u = update16(c, 0x0800, 0x0000);
        assert_eq!(u, 0xffff);
        m[2..4].copy_from_slice(&u.to_be_bytes());
        assert_eq!(fold(sum(&m)), 0xffff, "verifies");
    }

    #[test]
    fn folds_carry_to_the_end() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xfffe_0002), 0x0001);
        assert_eq!(fold64(u64::MAX), 0xffff_ffff);
        assert_eq!(fold64(0x1_ffff_ffff), 0x1);
    }

    #[test]
    fn ipv6_pseudo_header() {
        // 2001:db8::1 -> 2001:db8::2, next header 17, length 0x1_0008 (a jumbo length shows
        // the upper 16 bits are summed): words 2001 0db8 0001 2001 0db8 0002 0001 0008 0011.
        let (s, d) = (
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        );
        let words = [0x2001u32, 0x0db8, 0x0001, 0x2001, 0x0db8, 0x0002, 0x0001, 0x0008, 0x0011];
        assert_eq!(fold(pseudo_header_v6(s, d, 17, 0x1_0008)), fold(words.iter().sum()));
    }

    proptest::proptest! {
        #[test]
        fn update128_matches_recompute(mut data in proptest::collection::vec(proptest::num::u8::ANY, 40..64),
                                       new in proptest::array::uniform16(proptest::num::u8::ANY)) {
            data[0] = 0; data[1] = 0;
            let c0 = checksum(&data);
            let mut old = [0u8; 16];
            old.copy_from_slice(&data[8..24]);
            data[8..24].copy_from_slice(&new);
            let (inc, full) = (update128(c0, old, new), checksum(&data));
            proptest::prop_assert!(inc == full || (inc ^ full) == 0xffff, "{inc:#x} vs {full:#x}");
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            proptest::prop_assert_eq!(fold(sum(&data)), 0xffff);
        }

        #[test]
        fn incremental_update_matches_recompute(
            mut data in proptest::collection::vec(proptest::num::u8::ANY, 20..64),
            at in 0usize..8, new in proptest::num::u32::ANY,
        ) {
            let at = at * 2; // 16-bit aligned field position, not the checksum at [18..20]
            data[18] = 0; data[19] = 0;
            let c0 = checksum(&data);
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update32(c0, old, new);
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same value in ones' complement.
            proptest::prop_assert!(inc == full || (inc ^ full) == 0xffff, "{inc:#x} vs {full:#x}");
        }
    }
}
