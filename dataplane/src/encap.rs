//! The tunnel headers toward a backend, built once with the snapshot.
//!
//! Everything in front of the inner packet is fixed for a backend but five fields: the next
//! hop's MAC (learned by ARP, so read per packet) and the outer IPv4 header's total length,
//! TOS, identification and DF bit (copied from the inner packet). [`OuterHeader`] holds the
//! rest as bytes, with the IPv4 checksum's sum over the fixed words, so that a packet's
//! headers are two fixed-size copies and five stores, not a header built field by field.

use crate::wire::checksum;
use crate::wire::ethernet::{self, EthernetRepr};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::{GreRepr, Mac};
use std::net::IpAddr;

/// The longest header: Ethernet with a VLAN tag (18), IPv4 (20), GRE with a key (8).
pub const MAX_LEN: usize = 46;
/// The shortest: Ethernet (14) and IPv4 (20), an IPIP tunnel.
const MIN_LEN: usize = 34;
/// The two copies that write any length from `MIN_LEN` to `MAX_LEN`: the first `HEAD`
/// bytes, and the last `TAIL` bytes ending at the header's length. They overlap, which is
/// harmless: both write the template's bytes.
const HEAD: usize = 32;
const TAIL: usize = 16;
const _: () = assert!(HEAD <= MIN_LEN && HEAD + TAIL >= MAX_LEN && TAIL <= MIN_LEN);

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

    /// Bytes of tunnel header after the outer IPv4 header.
    pub fn overhead(self) -> usize {
        match self {
            Tunnel::Ipip => 0,
            Tunnel::Gre { key } => GreRepr { protocol: 0, key }.header_len(),
        }
    }
}

/// The inner packet's fields the outer IPv4 header copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// The inner packet's total length (its IPv4 total length).
    pub len: u16,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

/// Ethernet, outer IPv4 and (for GRE) the GRE header toward one backend, less the per-packet
/// fields; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    /// The header, with zeros where the destination MAC, total length, TOS, identification,
    /// flags and checksum go.
    bytes: [u8; MAX_LEN],
    /// Its length: Ethernet's header plus the tunnel's.
    len: u8,
    /// Where the IPv4 header starts (14, or 18 with a VLAN tag).
    ip: u8,
    /// The ones'-complement sum of the IPv4 header's fixed 16-bit words.
    sum: u32,
    /// The longest inner packet that fits the port's MTU with this tunnel.
    max_inner: u16,
}

impl OuterHeader {
    /// The header out of a port with MAC `src_mac`, VLAN `vlan` and MTU `mtu`, tunneling from
    /// `source` to `host` with `tunnel`. `None` for an underlay it cannot build: IPv6, so far.
    pub fn new(
        src_mac: Mac,
        vlan: Option<u16>,
        mtu: u16,
        source: IpAddr,
        host: IpAddr,
        tunnel: Tunnel,
    ) -> Option<Self> {
        let (IpAddr::V4(source), IpAddr::V4(host)) = (source, host) else {
            return None;
        };
        let eth = EthernetRepr { dst: [0; 6], src: src_mac, vlan, ethertype: ethernet::ETHERTYPE_IPV4 };
        let gre = match tunnel {
            Tunnel::Ipip => None,
            Tunnel::Gre { key } => Some(GreRepr { protocol: ethernet::ETHERTYPE_IPV4, key }),
        };
        let ip = eth.header_len();
        let tunnel_len = ipv4::HEADER_LEN + gre.map_or(0, |g| g.header_len());
        let protocol = if gre.is_some() { ipv4::PROTO_GRE } else { ipv4::PROTO_IPIP };
        let mut bytes = [0u8; MAX_LEN];
        eth.emit(&mut bytes[..ip]);
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
        fixed.emit(&mut bytes[ip..ip + ipv4::HEADER_LEN]);
        ipv4::template::clear_varying(&mut bytes[ip..]);
        if let Some(g) = gre {
            g.emit(&mut bytes[ip + ipv4::HEADER_LEN..ip + tunnel_len]);
        }
        let (s, d) = (u32::from(source), u32::from(host));
        let sum = 0x4500
            + u32::from(u16::from_be_bytes([fixed.ttl, protocol]))
            + (s >> 16)
            + (s & 0xffff)
            + (d >> 16)
            + (d & 0xffff);
        Some(OuterHeader {
            bytes,
            len: (ip + tunnel_len) as u8,
            ip: ip as u8,
            sum,
            max_inner: mtu.saturating_sub(tunnel_len as u16),
        })
    }

    /// Bytes in front of the inner packet.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never: a header has at least Ethernet and IPv4.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True if an inner packet of `len` bytes fits the port's MTU in this tunnel.
    #[inline]
    /// The longest inner packet the tunnel carries out of its port (the path MTU that a
    /// too-big message gives).
    pub fn max_inner(&self) -> u16 {
        self.max_inner
    }

    pub fn fits(&self, len: usize) -> bool {
        len <= usize::from(self.max_inner)
    }

    /// Writes the header to `b[..self.len()]` toward `dst_mac`, for `inner`. False, with
    /// nothing written, if `b` is shorter than [`MAX_LEN`] (a tunneled packet is always
    /// longer: the header and at least an inner IPv4 header). What follows the header in `b`
    /// is left as it was.
    #[inline]
    pub fn write(&self, b: &mut [u8], dst_mac: Mac, inner: Inner) -> bool {
        let Some(h) = b.get_mut(..MAX_LEN) else { return false };
        // `new` keeps both in these ranges; saying so lets the compiler drop the bounds
        // checks below.
        let len = self.len().clamp(MIN_LEN, MAX_LEN);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// The header as the field-by-field builders write it.
    fn built(
        src: Mac,
        vlan: Option<u16>,
        source: Ipv4Addr,
        host: Ipv4Addr,
        t: Tunnel,
        dst: Mac,
        i: Inner,
    ) -> Vec<u8> {
        let eth = EthernetRepr { dst, src, vlan, ethertype: ethernet::ETHERTYPE_IPV4 };
        let gre = match t {
            Tunnel::Ipip => None,
            Tunnel::Gre { key } => Some(GreRepr { protocol: ethernet::ETHERTYPE_IPV4, key }),
        };
        let tl = ipv4::HEADER_LEN + gre.map_or(0, |g| g.header_len());
        let mut b = vec![0u8; eth.header_len() + tl];
        let l2 = eth.header_len();
        eth.emit(&mut b[..l2]);
        Ipv4Repr {
            src: source,
            dst: host,
            protocol: if gre.is_some() { ipv4::PROTO_GRE } else { ipv4::PROTO_IPIP },
            payload_len: tl - ipv4::HEADER_LEN + usize::from(i.len),
            tos: i.tos,
            ident: i.ident,
            dont_frag: i.dont_frag,
            ttl: ipv4::DEFAULT_TTL,
        }
        .emit(&mut b[l2..l2 + ipv4::HEADER_LEN]);
        if let Some(g) = gre {
            g.emit(&mut b[l2 + ipv4::HEADER_LEN..]);
        }
        b
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
            source in any::<u32>(), host in any::<u32>(), t in tunnels(),
            len in 20u16..9000, tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>(),
        ) {
            let (source, host) = (Ipv4Addr::from(source), Ipv4Addr::from(host));
            let inner = Inner { len, tos, ident, dont_frag: df };
            let want = built(src, vlan, source, host, t, dst, inner);
            let h = OuterHeader::new(src, vlan, 9100, source.into(), host.into(), t).unwrap();
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
    }

    #[test]
    fn refuses_a_buffer_shorter_than_any_packet_it_tunnels() {
        let h = OuterHeader::new([2; 6], None, 1500, LOCAL, LOCAL, Tunnel::Ipip).unwrap();
        let mut b = [7u8; MAX_LEN - 1];
        assert!(!h.write(&mut b, [1; 6], Inner { len: 20, tos: 0, ident: 0, dont_frag: false }));
        assert!(b.iter().all(|&x| x == 7));
    }

    #[test]
    fn the_mtu_counts_the_tunnel() {
        let ipip = OuterHeader::new([2; 6], None, 1500, LOCAL, LOCAL, Tunnel::Ipip).unwrap();
        assert!(ipip.fits(1480) && !ipip.fits(1481));
        let gre =
            OuterHeader::new([2; 6], Some(5), 1500, LOCAL, LOCAL, Tunnel::Gre { key: Some(1) }).unwrap();
        assert!(gre.fits(1472) && !gre.fits(1473));
        assert_eq!(gre.len(), 18 + 20 + 8);
    }

    #[test]
    fn an_ipv6_underlay_is_not_built_yet() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(OuterHeader::new([2; 6], None, 1500, v6, LOCAL, Tunnel::Ipip).is_none());
        assert!(OuterHeader::new([2; 6], None, 1500, LOCAL, v6, Tunnel::Ipip).is_none());
    }
}
