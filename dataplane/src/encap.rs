//! The tunnel headers toward a backend, built once with the snapshot.
//!
//! Everything in front of the inner packet is fixed for a backend but a few fields: the next
//! hop's MAC (learned by ARP or ND, so read per packet) and what the outer IP header copies
//! from the inner packet. An IPv4 outer header takes its total length, TOS, identification and
//! DF bit from it, and [`OuterHeader`] keeps the checksum's sum over its fixed words; an IPv6
//! outer header (RFC 2473) takes its payload length, traffic class and a flow label derived
//! from the inner flow. So a packet's headers are two fixed-size copies and a few stores, not
//! a header built field by field. Either family of inner packet goes in either family of
//! underlay: IPIP is IP protocol 4 for an IPv4 inner packet and 41 for IPv6; GRE carries the
//! inner packet's ethertype.

use crate::flow::Family;
use crate::wire::checksum;
use crate::wire::ethernet::{self, EthernetRepr};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Repr};
use crate::wire::{GreRepr, Mac};
use std::net::IpAddr;

/// The longest header: Ethernet with a VLAN tag (18), IPv6 (40), GRE with a key (8).
pub const MAX_LEN: usize = 66;
/// IPv4 underlays: from Ethernet (14) and IPv4 (20), an IPIP tunnel, to 18 + 20 + 8.
const MIN_LEN: usize = 34;
const MAX_LEN_V4: usize = 46;
/// The two copies that write any IPv4 underlay's length from `MIN_LEN` to `MAX_LEN_V4`: the
/// first `HEAD` bytes, and the last `TAIL` bytes ending at the header's length. They overlap,
/// which is harmless: both write the template's bytes.
const HEAD: usize = 32;
const TAIL: usize = 16;
const _: () = assert!(HEAD <= MIN_LEN && HEAD + TAIL >= MAX_LEN_V4 && TAIL <= MIN_LEN);
/// The same for IPv6 underlays: 54 (14 + 40) to 66 bytes.
const MIN_LEN_V6: usize = 54;
const HEAD_V6: usize = 48;
const TAIL_V6: usize = 18;
const _: () = assert!(HEAD_V6 <= MIN_LEN_V6 && HEAD_V6 + TAIL_V6 >= MAX_LEN && TAIL_V6 <= MIN_LEN_V6);

/// The tunnel toward backends' hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Gre { key: Option<u32> },
}

impl Tunnel {
    /// The VPC a NAT service's backends are in: its GRE key (`None`: the physical network).
    #[inline]
    pub fn vpc(self) -> Option<u32> {
        match self {
            Tunnel::Gre { key } => key,
            Tunnel::Ipip => None,
        }
    }

    /// Bytes of tunnel header after the outer IP header.
    pub fn overhead(self) -> usize {
        match self {
            Tunnel::Ipip => 0,
            Tunnel::Gre { key } => GreRepr { protocol: 0, key }.header_len(),
        }
    }
}

/// The inner packet's fields the outer header copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// The inner packet's whole length.
    pub len: u16,
    /// Its TOS (IPv4) or traffic class (IPv6).
    pub tos: u8,
    /// IPv4 underlays: the identification and DF bit.
    pub ident: u16,
    pub dont_frag: bool,
    /// IPv6 underlays: the flow label (low 20 bits), the same for every packet of a flow.
    pub label: u32,
}

/// Ethernet, the outer IP header and (for GRE) the GRE header toward one backend, less the
/// per-packet fields; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    /// The header, with zeros where the destination MAC and the per-packet fields go.
    bytes: [u8; MAX_LEN],
    /// Its length: Ethernet's header plus the tunnel's.
    len: u8,
    /// Where the IP header starts (14, or 18 with a VLAN tag).
    ip: u8,
    /// An IPv6 underlay.
    v6: bool,
    /// IPv4 underlays: the ones'-complement sum of the header's fixed 16-bit words.
    sum: u32,
    /// The longest inner packet that fits the port's MTU with this tunnel.
    max_inner: u16,
}

impl OuterHeader {
    /// The header out of a port with MAC `src_mac`, VLAN `vlan` and MTU `mtu`, tunneling
    /// `inner` packets from `source` to `host` with `tunnel`. `None` if `source` and `host`
    /// are of different families.
    pub fn new(
        (src_mac, vlan, mtu): (Mac, Option<u16>, u16),
        source: IpAddr,
        host: IpAddr,
        tunnel: Tunnel,
        inner: Family,
    ) -> Option<Self> {
        let ethertype = match Family::of(source) {
            Family::V4 => ethernet::ETHERTYPE_IPV4,
            Family::V6 => ethernet::ETHERTYPE_IPV6,
        };
        let eth = EthernetRepr { dst: [0; 6], src: src_mac, vlan, ethertype };
        let (ip_proto, gre_proto) = match inner {
            Family::V4 => (ipv4::PROTO_IPIP, ethernet::ETHERTYPE_IPV4),
            Family::V6 => (ipv6::NEXT_IPV6, ethernet::ETHERTYPE_IPV6),
        };
        let gre = match tunnel {
            Tunnel::Ipip => None,
            Tunnel::Gre { key } => Some(GreRepr { protocol: gre_proto, key }),
        };
        let protocol = if gre.is_some() { ipv4::PROTO_GRE } else { ip_proto };
        let mut bytes = [0u8; MAX_LEN];
        let ip = eth.header_len();
        eth.emit(&mut bytes[..ip]);
        let (ip_len, sum) = match (source, host) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (ipv4::HEADER_LEN, v4_template(&mut bytes[ip..], s, d, protocol))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let fixed = Ipv6Repr {
                    src: s,
                    dst: d,
                    next_header: protocol,
                    payload_len: 0,
                    traffic_class: 0,
                    flow_label: 0,
                    hop_limit: ipv6::DEFAULT_HOP_LIMIT,
                };
                fixed.emit(&mut bytes[ip..]);
                (ipv6::HEADER_LEN, 0)
            }
            _ => return None,
        };
        let tunnel_len = ip_len + gre.map_or(0, |g| g.header_len());
        if let Some(g) = gre {
            g.emit(&mut bytes[ip + ip_len..ip + tunnel_len]);
        }
        Some(OuterHeader {
            bytes,
            len: (ip + tunnel_len) as u8,
            ip: ip as u8,
            v6: source.is_ipv6(),
            sum,
            max_inner: mtu.saturating_sub(tunnel_len as u16),
        })
    }

    /// Bytes in front of the inner packet.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never: a header has at least Ethernet and IP.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The longest inner packet the tunnel carries out of its port (the path MTU that a
    /// too-big message gives).
    pub fn max_inner(&self) -> u16 {
        self.max_inner
    }

    /// True if an inner packet of `len` bytes fits the port's MTU in this tunnel.
    #[inline]
    pub fn fits(&self, len: usize) -> bool {
        len <= usize::from(self.max_inner)
    }

    /// Writes the header to `b[..self.len()]` toward `dst_mac`, for `inner`. False, with
    /// nothing written, if `b` is shorter than the longest header of the underlay's family
    /// (a tunneled packet is always longer: the header and at least an inner IP header).
    /// What follows the header in `b` is left as it was.
    #[inline]
    pub fn write(&self, b: &mut [u8], dst_mac: Mac, inner: Inner) -> bool {
        if self.v6 {
            return self.write_v6(b, dst_mac, inner);
        }
        let Some(h) = b.get_mut(..MAX_LEN_V4) else { return false };
        // `new` keeps both in these ranges; saying so lets the compiler drop the bounds
        // checks below.
        let len = self.len().clamp(MIN_LEN, MAX_LEN_V4);
        let ip = usize::from(self.ip).min(18);
        h[..HEAD].copy_from_slice(&self.bytes[..HEAD]);
        h[len - TAIL..len].copy_from_slice(&self.bytes[len - TAIL..len]);
        ethernet::write_dst(h, dst_mac);
        // The outer IPv4 header, the GRE header if any, and the inner packet.
        let total = (len - ip) as u32 + u32::from(inner.len);
        let flags = if inner.dont_frag { ipv4::FLAG_DF } else { 0 };
        let sum = self.sum + u32::from(inner.tos) + total + u32::from(inner.ident) + u32::from(flags);
        ipv4::template::write_varying(
            &mut h[ip..],
            inner.tos,
            total as u16,
            inner.ident,
            flags,
            !checksum::fold(sum),
        );
        true
    }

    /// [`OuterHeader::write`] for an IPv6 underlay.
    #[inline(never)]
    fn write_v6(&self, b: &mut [u8], dst_mac: Mac, inner: Inner) -> bool {
        let Some(h) = b.get_mut(..MAX_LEN) else { return false };
        let len = self.len().clamp(MIN_LEN_V6, MAX_LEN);
        let ip = usize::from(self.ip).min(18);
        h[..HEAD_V6].copy_from_slice(&self.bytes[..HEAD_V6]);
        h[len - TAIL_V6..len].copy_from_slice(&self.bytes[len - TAIL_V6..len]);
        ethernet::write_dst(h, dst_mac);
        // Everything after the fixed header: GRE if any, and the inner packet.
        let payload = (len - ip - ipv6::HEADER_LEN) as u32 + u32::from(inner.len);
        ipv6::template::write_varying(&mut h[ip..], inner.tos, inner.label, payload as u16);
        true
    }
}

/// Writes the IPv4 header from `source` to `host` carrying `protocol` at the front of `h`,
/// with zeros in the per-packet fields; returns the checksum's sum over its fixed words.
fn v4_template(h: &mut [u8], source: std::net::Ipv4Addr, host: std::net::Ipv4Addr, protocol: u8) -> u32 {
    let fixed = Ipv4Repr {
        src: source,
        dst: host,
        protocol,
        payload_len: 0,
        tos: 0,
        ident: 0,
        dont_frag: false,
        ttl: ipv4::DEFAULT_TTL,
    };
    fixed.emit(&mut h[..ipv4::HEADER_LEN]);
    ipv4::template::clear_varying(h);
    let (s, d) = (u32::from(source), u32::from(host));
    0x4500
        + u32::from(u16::from_be_bytes([fixed.ttl, protocol]))
        + (s >> 16)
        + (s & 0xffff)
        + (d >> 16)
        + (d & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// The header as the field-by-field builders write it.
    fn built(
        (src, vlan): (Mac, Option<u16>),
        source: IpAddr,
        host: IpAddr,
        (t, inner): (Tunnel, Family),
        dst: Mac,
        i: Inner,
    ) -> Vec<u8> {
        let ethertype = if source.is_ipv4() { ethernet::ETHERTYPE_IPV4 } else { ethernet::ETHERTYPE_IPV6 };
        let eth = EthernetRepr { dst, src, vlan, ethertype };
        let (ipip, inner_type) = match inner {
            Family::V4 => (ipv4::PROTO_IPIP, ethernet::ETHERTYPE_IPV4),
            Family::V6 => (ipv6::NEXT_IPV6, ethernet::ETHERTYPE_IPV6),
        };
        let gre = match t {
            Tunnel::Ipip => None,
            Tunnel::Gre { key } => Some(GreRepr { protocol: inner_type, key }),
        };
        let protocol = if gre.is_some() { ipv4::PROTO_GRE } else { ipip };
        let ip_len = if source.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
        let tl = ip_len + gre.map_or(0, |g| g.header_len());
        let mut b = vec![0u8; eth.header_len() + tl];
        let l2 = eth.header_len();
        eth.emit(&mut b[..l2]);
        let payload_len = tl - ip_len + usize::from(i.len);
        match (source, host) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ipv4Repr {
                src,
                dst,
                protocol,
                payload_len,
                tos: i.tos,
                ident: i.ident,
                dont_frag: i.dont_frag,
                ttl: ipv4::DEFAULT_TTL,
            }
            .emit(&mut b[l2..l2 + ip_len]),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ipv6Repr {
                src,
                dst,
                next_header: protocol,
                payload_len,
                traffic_class: i.tos,
                flow_label: i.label,
                hop_limit: ipv6::DEFAULT_HOP_LIMIT,
            }
            .emit(&mut b[l2..l2 + ip_len]),
            _ => unreachable!("one family"),
        }
        if let Some(g) = gre {
            g.emit(&mut b[l2 + ip_len..]);
        }
        b
    }

    fn families() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    fn tunnels() -> impl Strategy<Value = Tunnel> {
        prop_oneof![
            Just(Tunnel::Ipip),
            Just(Tunnel::Gre { key: None }),
            any::<u32>().prop_map(|k| Tunnel::Gre { key: Some(k) }),
        ]
    }

    proptest! {
        #[test]
        fn writes_what_the_builders_write(
            src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), vlan in proptest::option::of(0u16..4096),
            source in any::<u32>(), host in any::<u32>(), t in tunnels(), family in families(),
            len in 20u16..9000, tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>(),
        ) {
            let (source, host) = (IpAddr::from(Ipv4Addr::from(source)), IpAddr::from(Ipv4Addr::from(host)));
            let inner = Inner { len, tos, ident, dont_frag: df, label: 0 };
            let want = built((src, vlan), source, host, (t, family), dst, inner);
            let h = OuterHeader::new((src, vlan, 9100), source, host, t, family).unwrap();
            prop_assert_eq!(h.len(), want.len());
            // The packet after the header is left alone.
            let mut b = vec![0xa5u8; h.len() + usize::from(len)];
            prop_assert!(h.write(&mut b, dst, inner));
            prop_assert_eq!(&b[..h.len()], &want[..]);
            prop_assert!(b[h.len()..].iter().all(|&x| x == 0xa5));
            let l2 = if vlan.is_some() { 18 } else { 14 };
            let ip = Ipv4Packet::new_checked(&b[l2..]).unwrap();
            prop_assert!(ip.verify_checksum());
        }

        #[test]
        fn writes_what_the_builders_write_over_ipv6(
            src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), vlan in proptest::option::of(0u16..4096),
            source in any::<u128>(), host in any::<u128>(), t in tunnels(), family in families(),
            len in 20u16..9000, tos in any::<u8>(), label in any::<u32>(),
        ) {
            let (source, host) = (IpAddr::from(Ipv6Addr::from(source)), IpAddr::from(Ipv6Addr::from(host)));
            let inner = Inner { len, tos, ident: 0, dont_frag: true, label };
            let want = built((src, vlan), source, host, (t, family), dst, Inner { label: label & 0xfffff, ..inner });
            let h = OuterHeader::new((src, vlan, 9100), source, host, t, family).unwrap();
            prop_assert_eq!(h.len(), want.len());
            let mut b = vec![0xa5u8; h.len() + usize::from(len)];
            prop_assert!(h.write(&mut b, dst, inner));
            prop_assert_eq!(&b[..h.len()], &want[..]);
            prop_assert!(b[h.len()..].iter().all(|&x| x == 0xa5));
        }
    }

    #[test]
    fn refuses_a_buffer_shorter_than_any_packet_it_tunnels() {
        let h = OuterHeader::new(([2; 6], None, 1500), LOCAL, LOCAL, Tunnel::Ipip, Family::V4).unwrap();
        let inner = Inner { len: 20, tos: 0, ident: 0, dont_frag: false, label: 0 };
        let mut b = [7u8; MAX_LEN_V4 - 1];
        assert!(!h.write(&mut b, [1; 6], inner));
        assert!(b.iter().all(|&x| x == 7));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let h = OuterHeader::new(([2; 6], None, 1500), v6, v6, Tunnel::Ipip, Family::V4).unwrap();
        let mut b = [7u8; MAX_LEN - 1];
        assert!(!h.write(&mut b, [1; 6], inner));
        assert!(b.iter().all(|&x| x == 7));
    }

    #[test]
    fn the_mtu_counts_the_tunnel() {
        let new = |vlan, src, dst, t, f| OuterHeader::new(([2; 6], vlan, 1500), src, dst, t, f).unwrap();
        let ipip = new(None, LOCAL, LOCAL, Tunnel::Ipip, Family::V6);
        assert!(ipip.fits(1480) && !ipip.fits(1481));
        let gre = new(Some(5), LOCAL, LOCAL, Tunnel::Gre { key: Some(1) }, Family::V4);
        assert!(gre.fits(1472) && !gre.fits(1473));
        assert_eq!(gre.len(), 18 + 20 + 8);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let ip6ip6 = new(None, v6, v6, Tunnel::Ipip, Family::V6);
        assert!(ip6ip6.fits(1460) && !ip6ip6.fits(1461));
        let gre6 = new(Some(5), v6, v6, Tunnel::Gre { key: Some(1) }, Family::V4);
        assert!(gre6.fits(1452) && !gre6.fits(1453));
        assert_eq!(gre6.len(), MAX_LEN);
    }

    #[test]
    fn a_tunnel_is_of_one_family() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let new = |s, d| OuterHeader::new(([2; 6], None, 1500), s, d, Tunnel::Ipip, Family::V4);
        assert!(new(v6, LOCAL).is_none() && new(LOCAL, v6).is_none());
    }
}
