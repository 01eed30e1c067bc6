//! Wire formats as zero-copy views over byte buffers (in the style of smoltcp's `wire`).
//!
//! Each `Xxx<T: AsRef<[u8]>>` wraps a buffer. `new_checked` validates the lengths (and the
//! fields that decide lengths) of untrusted bytes; after it succeeds no accessor panics.
//! Setters exist on `T: AsMut<[u8]>`. Field positions are `const` ranges.

pub mod arp;
pub mod checksum;
pub mod endpoint;
pub mod ethernet;
pub mod fragment;
pub mod gre;
pub mod icmp;
pub mod icmp_error;
pub mod icmpv6;
pub mod icmpv6_error;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod probe;
pub mod tcp;
pub mod tcp_options;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use gre::{GrePacket, GreRepr};
pub use icmp::IcmpPacket;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// Why bytes were refused by a checked constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header (or than a length field claims).
    Truncated,
    /// A field has a value this format does not allow (version, header length, ...).
    Malformed,
    /// Well-formed, but a variant we do not handle (ARP for another protocol, GRE routing...).
    Unsupported,
    /// A fragment past the first: it holds no transport header (no ports).
    Fragment,
}

/// A MAC address.
pub type Mac = [u8; 6];

/// Whether a MAC address names a group (multicast or broadcast): the I/G bit of its first octet.
pub fn is_group(m: &Mac) -> bool {
    m[0] & 1 != 0
}

/// Whether two MAC addresses are the same, compared as one 32-bit and one 16-bit word.
#[inline(always)]
pub fn same_mac(a: &Mac, b: &Mac) -> bool {
    let word = |m: &Mac| (u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), u16::from_ne_bytes([m[4], m[5]]));
    word(a) == word(b)
}

/// The broadcast MAC address.
pub const BROADCAST_MAC: Mac = [0xff; 6];

pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The transport layer of the IP packet (IPv4, or IPv6 past its extension headers) at the
/// front of `packet`: its protocol, and where it starts and the packet ends in `packet`. Errors
/// as the headers' checks, and `Fragment` for a fragment past the first (no transport header).
pub fn transport_of(packet: &[u8]) -> Result<(u8, core::ops::Range<usize>), WireError> {
    match packet.first().map(|v| v >> 4) {
        Some(6) => {
            let upper = ipv6::upper_layer(packet)?;
            if upper.fragment.is_some_and(|f| !f.at_offset_zero()) {
                return Err(WireError::Fragment);
            }
            Ok((upper.protocol, upper.offset..Ipv6Packet::new_checked(packet)?.total_len()))
        }
        _ => {
            let ip = Ipv4Packet::new_checked(packet)?;
            if ip.frag_offset() != 0 {
                return Err(WireError::Fragment);
            }
            Ok((ip.protocol(), ip.header_len()..ip.total_len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_mac_compares_all_six_bytes() {
        let a: Mac = [2, 0, 0, 0, 1, 10];
        assert!(same_mac(&a, &a));
        for i in 0..6 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!same_mac(&a, &b), "byte {i}");
        }
    }

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:00:5e:10:aB:ff").unwrap();
        assert_eq!(m, [0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(fmt_mac(&m), "02:00:5e:10:ab:ff");
        for bad in ["", "02:00:5e:10:ab", "02:00:5e:10:ab:ff:00", "2:00:5e:10:ab:ff", "zz:00:5e:10:ab:ff"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn group_addresses() {
        assert!(is_group(&BROADCAST_MAC));
        assert!(is_group(&[0x01, 0x00, 0x5e, 0, 0, 1]), "IPv4 multicast");
        assert!(is_group(&[0x33, 0x33, 0, 0, 0, 1]), "IPv6 multicast");
        assert!(!is_group(&[0x02, 0, 0, 0, 0, 1]));
    }
}
