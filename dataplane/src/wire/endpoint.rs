//! A transport endpoint (address and port) of a TCP or UDP packet, rewritten with the
//! incremental checksum updates its headers need (RFC 1624): the NAT translation, for IPv4
//! and IPv6 packets (an address of the other family than the packet's is refused).

use super::ipv4::{self, Ipv4Packet};
use super::ipv6::{self, Ipv6Packet};
use super::{checksum, TcpPacket, UdpPacket, WireError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which end of a packet [`rewrite`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Whether the packet at the start of `b` is IPv6 (by its version).
fn is_v6(b: &[u8]) -> bool {
    b.first().is_some_and(|v| v >> 4 == 6)
}

/// Sets the `end` address and port of the TCP or UDP packet that starts `b` (its IP header),
/// updating the IPv4 header checksum and the TCP/UDP checksum (whose pseudo-header holds the
/// address; an IPv4 UDP checksum of zero, "none", stays zero). Nothing changes on an error.
pub fn rewrite(b: &mut [u8], end: End, addr: IpAddr, port: u16) -> Result<(), WireError> {
    match (addr, is_v6(b)) {
        (IpAddr::V4(a), false) => rewrite_v4(b, end, a, port),
        (IpAddr::V6(a), true) => rewrite_v6(b, end, a, port),
        _ => Err(WireError::Unsupported),
    }
}

/// Sets only the `end` address of the IP packet at the start of `b` (with an IPv4 header's
/// checksum): for a fragment past the first, which has no transport header (the first
/// fragment's transport checksum, over the whole datagram, takes the change).
pub fn rewrite_address(b: &mut [u8], end: End, addr: IpAddr) -> Result<(), WireError> {
    match (addr, is_v6(b)) {
        (IpAddr::V4(a), false) => {
            let mut ip = Ipv4Packet::new_checked(b)?;
            let old = u32::from(ends_v4(&ip, end));
            match end {
                End::Src => ip.set_src(a),
                End::Dst => ip.set_dst(a),
            }
            ip.set_checksum(checksum::update32(ip.checksum(), old, u32::from(a)));
            Ok(())
        }
        (IpAddr::V6(a), true) => {
            let mut ip = Ipv6Packet::new_checked(b)?;
            match end {
                End::Src => ip.set_src(a),
                End::Dst => ip.set_dst(a),
            }
            Ok(())
        }
        _ => Err(WireError::Unsupported),
    }
}

fn ends_v4<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>, end: End) -> Ipv4Addr {
    match end {
        End::Src => ip.src(),
        End::Dst => ip.dst(),
    }
}

/// Sets the `end` port of the TCP or UDP header (IP protocol `protocol`) at the start of `l4`
/// and updates its checksum for that and, with `address`, for the address change in its
/// pseudo-header. `zero_is_none`: a UDP checksum of zero means none and stays (IPv4).
fn rewrite_transport(
    l4: &mut [u8],
    (protocol, end, port): (u8, End, u16),
    address: impl Fn(u16) -> u16,
    zero_is_none: bool,
) -> Result<(), WireError> {
    let pick = |src, dst| if end == End::Src { src } else { dst };
    match protocol {
        ipv4::PROTO_TCP => {
            let mut t = TcpPacket::new_checked(l4)?;
            let old_port = pick(t.src_port(), t.dst_port());
            match end {
                End::Src => t.set_src_port(port),
                End::Dst => t.set_dst_port(port),
            }
            t.set_checksum(checksum::update16(address(t.checksum()), old_port, port));
        }
        ipv4::PROTO_UDP => {
            // Ports and checksum only: a first fragment's length field counts the datagram.
            let mut u = UdpPacket::first_fragment(l4)?;
            let old_port = pick(u.src_port(), u.dst_port());
            match end {
                End::Src => u.set_src_port(port),
                End::Dst => u.set_dst_port(port),
            }
            if !(zero_is_none && u.checksum() == 0) {
                u.set_checksum(checksum::update16(address(u.checksum()), old_port, port));
            }
        }
        _ => return Err(WireError::Unsupported),
    }
    Ok(())
}

fn rewrite_v4(b: &mut [u8], end: End, addr: Ipv4Addr, port: u16) -> Result<(), WireError> {
    let mut ip = Ipv4Packet::new_checked(b)?;
    let (old, new) = (u32::from(ends_v4(&ip, end)), u32::from(addr));
    let protocol = ip.protocol();
    rewrite_transport(ip.payload_mut(), (protocol, end, port), |c| checksum::update32(c, old, new), true)?;
    match end {
        End::Src => ip.set_src(addr),
        End::Dst => ip.set_dst(addr),
    }
    ip.set_checksum(checksum::update32(ip.checksum(), old, new));
    Ok(())
}

/// The IPv6 half of [`rewrite`]: the transport header past any extension headers (not in a
/// fragment past the first, which has none: `Unsupported`).
fn rewrite_v6(b: &mut [u8], end: End, addr: Ipv6Addr, port: u16) -> Result<(), WireError> {
    let upper = ipv6::upper_layer(b)?;
    if upper.fragment.is_some_and(|f| !f.at_offset_zero()) {
        return Err(WireError::Unsupported);
    }
    let ip = Ipv6Packet::new_checked(&*b)?;
    let (total, old) = (ip.total_len(), if end == End::Src { ip.src() } else { ip.dst() });
    let l4 = b.get_mut(upper.offset..total).ok_or(WireError::Truncated)?;
    let (o, n) = (old.octets(), addr.octets());
    rewrite_transport(l4, (upper.protocol, end, port), |c| checksum::update128(c, o, n), false)?;
    let mut ip = Ipv6Packet::new_checked(b)?;
    match end {
        End::Src => ip.set_src(addr),
        End::Dst => ip.set_dst(addr),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Repr, TcpRepr, UdpRepr};
    use proptest::prelude::*;

    fn packet(protocol: u8, payload: usize) -> Vec<u8> {
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 10, 1));
        let l4 = if protocol == ipv4::PROTO_TCP { 20 } else { 8 };
        let mut b = vec![0x5a; ipv4::HEADER_LEN + l4 + payload];
        let ip = Ipv4Repr {
            src,
            dst,
            protocol,
            payload_len: l4 + payload,
            tos: 0,
            ident: 7,
            dont_frag: true,
            ttl: 64,
        };
        ip.emit(&mut b[..ipv4::HEADER_LEN]);
        let body = &mut b[ipv4::HEADER_LEN..];
        if protocol == ipv4::PROTO_TCP {
            let t = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq: 1,
                ack: 2,
                flags: 0x10,
                window: 9,
                options: &[],
            };
            t.emit_v4(body, src, dst);
        } else {
            UdpRepr { src_port: 40000, dst_port: 53 }.emit_v4(body, src, dst);
        }
        b
    }

    /// Whether every checksum in the packet verifies, recomputed from scratch.
    fn valid(b: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(b).unwrap();
        let ok_l4 = match ip.protocol() {
            ipv4::PROTO_TCP => {
                TcpPacket::new_checked(ip.payload()).unwrap().verify_checksum_v4(ip.src(), ip.dst())
            }
            _ => {
                let ph = checksum::pseudo_header_v4(
                    ip.src().octets(),
                    ip.dst().octets(),
                    17,
                    ip.payload().len() as u16,
                );
                checksum::fold(checksum::combine(ph, checksum::sum(ip.payload()))) == 0xffff
            }
        };
        ip.verify_checksum() && ok_l4
    }

    #[test]
    fn rewrites_each_end_of_tcp_and_udp_with_valid_checksums() {
        let to = Ipv4Addr::new(10, 1, 2, 3);
        for proto in [ipv4::PROTO_TCP, ipv4::PROTO_UDP] {
            for end in [End::Src, End::Dst] {
                let mut b = packet(proto, 5);
                rewrite(&mut b, end, to.into(), 8080).unwrap();
                let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
                let ports = &ip.payload()[..4];
                let (addr, port) = match end {
                    End::Src => (ip.src(), u16::from_be_bytes([ports[0], ports[1]])),
                    End::Dst => (ip.dst(), u16::from_be_bytes([ports[2], ports[3]])),
                };
                assert_eq!((addr, port), (to, 8080), "{proto} {end:?}");
                assert!(valid(&b), "{proto} {end:?}");
            }
        }
    }

    #[test]
    fn a_udp_checksum_of_none_stays_none() {
        let mut b = packet(ipv4::PROTO_UDP, 3);
        b[ipv4::HEADER_LEN + 6..ipv4::HEADER_LEN + 8].fill(0);
        rewrite(&mut b, End::Dst, Ipv4Addr::new(10, 0, 0, 1).into(), 1).unwrap();
        assert_eq!(&b[ipv4::HEADER_LEN + 6..ipv4::HEADER_LEN + 8], &[0, 0]);
    }

    #[test]
    fn refuses_without_changing_anything() {
        let icmp = {
            let mut b = packet(ipv4::PROTO_UDP, 0);
            b[9] = ipv4::PROTO_ICMP;
            b
        };
        let short_tcp = packet(ipv4::PROTO_TCP, 0)[..30].to_vec();
        for (mut b, err) in [(icmp, WireError::Unsupported), (short_tcp, WireError::Truncated)] {
            let before = b.clone();
            assert_eq!(rewrite(&mut b, End::Dst, Ipv4Addr::new(10, 0, 0, 1).into(), 1), Err(err));
            assert_eq!(b, before);
        }
        let mut b = packet(ipv4::PROTO_TCP, 0);
        let before = b.clone();
        assert_eq!(rewrite(&mut b, End::Dst, "2001:db8::1".parse().unwrap(), 1), Err(WireError::Unsupported));
        assert_eq!(b, before);
        let mut b6 = packet6(ipv4::PROTO_TCP, &[]);
        let before = b6.clone();
        assert_eq!(
            rewrite(&mut b6, End::Dst, Ipv4Addr::new(10, 0, 0, 1).into(), 1),
            Err(WireError::Unsupported)
        );
        assert_eq!(b6, before);
    }

    /// An IPv6 TCP or UDP packet with the extension headers `ext` (each 8 bytes: next header,
    /// length 0, and padding) in front of the transport header.
    fn packet6(protocol: u8, ext: &[u8]) -> Vec<u8> {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("2001:db8:1::10".parse().unwrap(), "2001:db8:10::1".parse().unwrap());
        let l4 = if protocol == ipv4::PROTO_TCP { 20 } else { 8 };
        let payload = ext.len() * 8 + l4 + 5;
        let mut b = vec![0x5a; ipv6::HEADER_LEN + payload];
        let first = ext.first().copied().unwrap_or(protocol);
        let r = crate::wire::Ipv6Repr {
            src,
            dst,
            next_header: first,
            payload_len: payload,
            traffic_class: 0,
            flow_label: 7,
            hop_limit: 64,
        };
        r.emit(&mut b);
        for (k, _) in ext.iter().enumerate() {
            let at = ipv6::HEADER_LEN + k * 8;
            b[at] = ext.get(k + 1).copied().unwrap_or(protocol);
            b[at + 1] = 0;
        }
        let body = &mut b[ipv6::HEADER_LEN + ext.len() * 8..];
        if protocol == ipv4::PROTO_TCP {
            let t = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq: 1,
                ack: 2,
                flags: 0x10,
                window: 9,
                options: &[],
            };
            t.emit_v6(body, src, dst);
        } else {
            UdpRepr { src_port: 40000, dst_port: 53 }.emit_v6(body, src, dst);
        }
        b
    }

    /// Whether the IPv6 packet's transport checksum verifies, recomputed from scratch.
    fn valid6(b: &[u8]) -> bool {
        let ip = Ipv6Packet::new_checked(b).unwrap();
        let u = ipv6::upper_layer(b).unwrap();
        let l4 = &b[u.offset..ip.total_len()];
        let ph =
            checksum::pseudo_header_v6(ip.src().octets(), ip.dst().octets(), u.protocol, l4.len() as u32);
        checksum::fold(checksum::combine(ph, checksum::sum(l4))) == 0xffff
    }

    #[test]
    fn rewrites_each_end_of_ipv6_tcp_and_udp_past_extension_headers() {
        let to: Ipv6Addr = "2001:db8:c0::a".parse().unwrap();
        for proto in [ipv4::PROTO_TCP, ipv4::PROTO_UDP] {
            for ext in [&[][..], &[ipv6::NEXT_HOP_BY_HOP, ipv6::NEXT_DEST_OPTS][..]] {
                for end in [End::Src, End::Dst] {
                    let mut b = packet6(proto, ext);
                    assert!(valid6(&b));
                    rewrite(&mut b, end, to.into(), 8080).unwrap();
                    let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
                    let at = ipv6::HEADER_LEN + ext.len() * 8;
                    let ports = &b[at..at + 4];
                    let (addr, port) = match end {
                        End::Src => (ip.src(), u16::from_be_bytes([ports[0], ports[1]])),
                        End::Dst => (ip.dst(), u16::from_be_bytes([ports[2], ports[3]])),
                    };
                    assert_eq!((addr, port), (to, 8080), "{proto} {ext:?} {end:?}");
                    assert!(valid6(&b), "{proto} {ext:?} {end:?}");
                }
            }
        }
        let mut b = packet6(ipv4::PROTO_UDP, &[]);
        rewrite_address(&mut b, End::Src, to.into()).unwrap();
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().src(), to);
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_checksums_valid(bytes in proptest::collection::vec(any::<u8>(), 0..80),
                                                   a in any::<u32>(), p in any::<u16>(), src in any::<bool>()) {
            let mut b = bytes;
            let end = if src { End::Src } else { End::Dst };
            let _ = rewrite(&mut b, end, Ipv4Addr::from(a).into(), p);
            for proto in [ipv4::PROTO_TCP, ipv4::PROTO_UDP] {
                let mut b = packet(proto, usize::from(p % 9));
                rewrite(&mut b, end, Ipv4Addr::from(a).into(), p).unwrap();
                prop_assert!(valid(&b));
            }
        }
    }
}
