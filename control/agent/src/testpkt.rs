//! Packets for the unit tests, built with the dataplane's wire views: UDP (and TCP) of both
//! families, ICMP and ICMPv6 errors quoting a packet, the fragments of a packet, and tunnels
//! around a packet over either underlay.

use crate::tunnel::{encap_gre, Family, PROTO_IPV6};
use sluice_dataplane::wire::fragment::{plan, write_fragment};
use sluice_dataplane::wire::{icmp_error, icmpv6_error, ipv6};
use sluice_dataplane::wire::{ipv4, Ipv4Packet, Ipv4Repr, Ipv6Repr, TcpRepr, UdpRepr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 header with TTL 64, identification `ident`.
pub fn ip(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize, ident: u16, df: bool) -> Ipv4Repr {
    Ipv4Repr { src, dst, protocol, payload_len, tos: 0, ident, dont_frag: df, ttl: 64 }
}

/// A UDP datagram `src:sport -> dst:dport` with `len` payload bytes (a pattern), checksummed,
/// identification `ident`, DF as `df`.
pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), len: usize, ident: u16, df: bool) -> Vec<u8> {
    let mut p = vec![0u8; 28 + len];
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    UdpRepr { src_port: src.1, dst_port: dst.1 }.emit_v4(&mut p[20..], src.0, dst.0);
    ip(src.0, dst.0, ipv4::PROTO_UDP, 8 + len, ident, df).emit(&mut p);
    p
}

/// An ICMP error `from -> to` of `msg_type`/`code` (`rest`: its header bytes 4..8) quoting
/// the start of `quoted`.
pub fn icmp_error(
    from: Ipv4Addr,
    to: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut m = vec![0u8; 600];
    let n = icmp_error::emit(&mut m, msg_type, code, rest, quoted);
    m.truncate(n);
    let mut p = vec![0u8; 20];
    ip(from, to, ipv4::PROTO_ICMP, n, 99, false).emit(&mut p);
    p.extend_from_slice(&m);
    p
}

/// The fragments of `packet` (DF clear) at `mtu`, in order.
pub fn fragments(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    plan(ip.total_len(), ip.header_len(), mtu)
        .unwrap()
        .map(|f| {
            let mut out = vec![0u8; mtu];
            let n = write_fragment(packet, &f, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

/// The family of an inner packet built here.
fn family(inner: &[u8]) -> Family {
    Family::of_packet(inner).unwrap_or(Family::V4)
}

/// `inner` in GRE (key `key`, protocol type by `inner`'s version) from `from` to `to`, as an
/// IPv4 raw socket reads it.
pub fn gre(from: Ipv4Addr, to: Ipv4Addr, key: Option<u32>, inner: &[u8]) -> Vec<u8> {
    let g = gre6(key, inner);
    let mut p = vec![0u8; 20];
    ip(from, to, ipv4::PROTO_GRE, g.len(), 1, true).emit(&mut p);
    p.extend_from_slice(&g);
    p
}

/// `inner` in IP in IP from `from` to `to` (protocol 4 for an IPv4 `inner`, 41 for IPv6).
pub fn ipip(from: Ipv4Addr, to: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let protocol = if family(inner) == Family::V6 { PROTO_IPV6 } else { ipv4::PROTO_IPIP };
    let mut p = vec![0u8; 20];
    ip(from, to, protocol, inner.len(), 1, true).emit(&mut p);
    p.extend_from_slice(inner);
    p
}

/// `inner` in GRE (key `key`) as an IPv6 raw socket reads it: the GRE header and `inner`, the
/// outer header gone.
pub fn gre6(key: Option<u32>, inner: &[u8]) -> Vec<u8> {
    let mut g = Vec::new();
    encap_gre(key, family(inner), inner, &mut g);
    g
}

/// An IPv6 header with hop limit 64.
pub fn ip6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload_len: usize) -> Ipv6Repr {
    Ipv6Repr { src, dst, next_header, payload_len, traffic_class: 0, flow_label: 0, hop_limit: 64 }
}

/// A UDP datagram over IPv6 `src:sport -> dst:dport` with `len` payload bytes (a pattern),
/// checksummed.
pub fn udp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 48 + len];
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = i as u8;
    }
    UdpRepr { src_port: src.1, dst_port: dst.1 }.emit_v6(&mut p[40..], src.0, dst.0);
    ip6(src.0, dst.0, ipv6::NEXT_UDP, 8 + len).emit(&mut p);
    p
}

/// A TCP SYN over IPv6 `src:sport -> dst:dport`.
pub fn tcp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    let syn =
        TcpRepr { src_port: src.1, dst_port: dst.1, seq: 1, ack: 0, flags: 0x02, window: 1000, options: &[] };
    syn.emit_v6(&mut p[40..], src.0, dst.0);
    ip6(src.0, dst.0, ipv6::NEXT_TCP, 20).emit(&mut p);
    p
}

/// An ICMPv6 error `from -> to` of `msg_type`/`code` (`rest`: its header bytes 4..8) quoting
/// the start of `quoted`.
pub fn icmpv6_error(
    from: Ipv6Addr,
    to: Ipv6Addr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut m = vec![0u8; 1232];
    let n = icmpv6_error::emit(&mut m, msg_type, code, rest, quoted, from, to);
    m.truncate(n);
    let mut p = vec![0u8; 40];
    ip6(from, to, ipv6::NEXT_ICMPV6, n).emit(&mut p);
    p.extend_from_slice(&m);
    p
}

/// The fragments of the IPv6 `packet` (a fixed header, no extension headers) at `mtu`, in
/// order, each with a fragment header of identification `ident` (RFC 8200 4.5).
pub fn fragments6(packet: &[u8], mtu: usize, ident: u32) -> Vec<Vec<u8>> {
    let fixed = Ipv6Repr::parse(&sluice_dataplane::wire::Ipv6Packet::new_checked(packet).unwrap());
    let data = &packet[40..];
    let step = (mtu - 48) / 8 * 8;
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(step).enumerate() {
        let offset = (i * step) as u16;
        let more = u16::from((i + 1) * step < data.len());
        let mut f = vec![0u8; 48];
        Ipv6Repr { next_header: ipv6::NEXT_FRAGMENT, payload_len: 8 + chunk.len(), ..fixed }.emit(&mut f);
        f[40] = fixed.next_header;
        f[42..44].copy_from_slice(&(offset | more).to_be_bytes());
        f[44..48].copy_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(chunk);
        out.push(f);
    }
    out
}
