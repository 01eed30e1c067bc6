//! A transport endpoint (address and port) of a TCP or UDP packet, rewritten with the
//! incremental checksum updates both headers need (RFC 1624): the NAT translation. IPv4 so
//! far; an IPv6 packet or address is refused as unsupported.

use super::ipv4::{self, Ipv4Packet};
use super::{checksum, TcpPacket, UdpPacket, WireError};
use std::net::{IpAddr, Ipv4Addr};

/// Which end of a packet [`rewrite`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Sets the `end` address and port of the TCP or UDP packet that starts `b` (its IP header),
/// updating the IP checksum and the TCP/UDP checksum (whose pseudo-header holds the address;
/// a UDP checksum of zero, "none", stays zero). Nothing changes on an error.
pub fn rewrite(b: &mut [u8], end: End, addr: IpAddr, port: u16) -> Result<(), WireError> {
    match addr {
        IpAddr::V4(a) => rewrite_v4(b, end, a, port),
        IpAddr::V6(_) => Err(WireError::Unsupported),
    }
}

/// Sets only the `end` address of the IPv4 packet at the start of `b`, with its header
/// checksum: for a fragment past the first, which has no transport header (the first
/// fragment's transport checksum, over the whole datagram, takes the change).
pub fn rewrite_address(b: &mut [u8], end: End, addr: IpAddr) -> Result<(), WireError> {
    let IpAddr::V4(addr) = addr else {
        return Err(WireError::Unsupported);
    };
    let mut ip = Ipv4Packet::new_checked(b)?;
    let old = u32::from(match end {
        End::Src => ip.src(),
        End::Dst => ip.dst(),
    });
    match end {
        End::Src => ip.set_src(addr),
        End::Dst => ip.set_dst(addr),
    }
    ip.set_checksum(checksum::update32(ip.checksum(), old, u32::from(addr)));
    Ok(())
}

fn rewrite_v4(b: &mut [u8], end: End, addr: Ipv4Addr, port: u16) -> Result<(), WireError> {
    let mut ip = Ipv4Packet::new_checked(b)?;
    let old = u32::from(match end {
        End::Src => ip.src(),
        End::Dst => ip.dst(),
    });
    let new = u32::from(addr);
    match ip.protocol() {
        ipv4::PROTO_TCP => {
            let mut t = TcpPacket::new_checked(ip.payload_mut())?;
            let old_port = match end {
                End::Src => t.src_port(),
                End::Dst => t.dst_port(),
            };
            match end {
                End::Src => t.set_src_port(port),
                End::Dst => t.set_dst_port(port),
            }
            t.set_checksum(checksum::update16(checksum::update32(t.checksum(), old, new), old_port, port));
        }
        ipv4::PROTO_UDP => {
            // Ports and checksum only: a first fragment's length field counts the datagram.
            let mut u = UdpPacket::first_fragment(ip.payload_mut())?;
            let old_port = match end {
                End::Src => u.src_port(),
                End::Dst => u.dst_port(),
            };
            match end {
                End::Src => u.set_src_port(port),
                End::Dst => u.set_dst_port(port),
            }
            if u.checksum() != 0 {
                u.set_checksum(checksum::update16(
                    checksum::update32(u.checksum(), old, new),
                    old_port,
                    port,
                ));
            }
        }
        _ => return Err(WireError::Unsupported),
    }
    match end {
        End::Src => ip.set_src(addr),
        End::Dst => ip.set_dst(addr),
    }
    ip.set_checksum(checksum::update32(ip.checksum(), old, new));
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
