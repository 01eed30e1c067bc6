//! Packets for the unit tests, built with the dataplane's wire views: UDP, ICMP errors quoting a
//! packet, the fragments of a packet, and tunnels around a packet.

use crate::tunnel::encap_gre;
use sluice_dataplane::wire::fragment::{plan, write_fragment};
use sluice_dataplane::wire::icmp_error;
use sluice_dataplane::wire::{ipv4, Ipv4Packet, Ipv4Repr, UdpRepr};
use std::net::Ipv4Addr;

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

/// `inner` in GRE (key `key`) from `from` to `to`, as a raw socket reads it.
pub fn gre(from: Ipv4Addr, to: Ipv4Addr, key: Option<u32>, inner: &[u8]) -> Vec<u8> {
    let mut g = Vec::new();
    encap_gre(key, inner, &mut g);
    let mut p = vec![0u8; 20];
    ip(from, to, ipv4::PROTO_GRE, g.len(), 1, true).emit(&mut p);
    p.extend_from_slice(&g);
    p
}

/// `inner` in IPIP from `from` to `to`.
pub fn ipip(from: Ipv4Addr, to: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    ip(from, to, ipv4::PROTO_IPIP, inner.len(), 1, true).emit(&mut p);
    p.extend_from_slice(inner);
    p
}
