//! Frames as a client (or a host) sends them: Ethernet + IPv4 + TCP, UDP or ICMP echo, and
//! ARP.
//!
//! [`Packet`] holds the Ethernet and IPv4 fields; its methods add the layer 4 part. By
//! default a packet comes from the router to the external port (see the lab in
//! [`crate::testkit`]), DF set, TTL 64, ident 1, untagged, and every checksum is valid; change
//! a field with struct-update syntax:
//!
//! ```
//! # use sluice_dataplane::testkit::{frame::{tcp, Packet}, client, vip};
//! # use sluice_dataplane::wire::tcp::SYN;
//! let syn = Packet { ident: 9, ..Packet::new(client(1), vip(1)) }.tcp(&tcp((40000, 80), SYN), b"");
//! assert_eq!(syn.len(), 14 + 20 + 20);
//! ```

use super::{EXT_MAC, ROUTER_MAC};
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::{arp, icmp, EthernetRepr, Ipv4Repr, Mac, TcpRepr, UdpRepr};
use std::net::Ipv4Addr;

/// The Ethernet and IPv4 fields of a frame, and whether its layer 4 checksum is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub ttl: u8,
    /// Fill the TCP or UDP checksum (`false`: left zero, as some generators send them).
    pub l4_checksum: bool,
}

impl Packet {
    /// From `src` to `dst`, sent by the router ([`ROUTER_MAC`]) to the external port
    /// ([`EXT_MAC`]): DF, TTL 64, ident 1, tos 0, valid checksums.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Packet {
        Packet {
            dst_mac: EXT_MAC,
            src_mac: ROUTER_MAC,
            src,
            dst,
            tos: 0,
            ident: 1,
            dont_frag: true,
            ttl: 64,
            l4_checksum: true,
        }
    }

    /// The frame of a TCP segment `t` carrying `payload`.
    pub fn tcp(&self, t: &TcpRepr<'_>, payload: &[u8]) -> Vec<u8> {
        ethernet(self.dst_mac, self.src_mac, &self.ip_tcp(t, payload))
    }

    /// The frame of a UDP datagram from `src_port` to `dst_port` carrying `payload`.
    pub fn udp(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; 8];
        l4.extend_from_slice(payload);
        UdpRepr { src_port, dst_port }.emit_v4(&mut l4, self.src, self.dst);
        if !self.l4_checksum {
            l4[6..8].fill(0);
        }
        ethernet(self.dst_mac, self.src_mac, &self.ip(PROTO_UDP, &l4))
    }

    /// The frame of an ICMP echo request (`ident`, `seq`) carrying `payload`.
    pub fn icmp_echo(&self, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; icmp::HEADER_LEN];
        l4.extend_from_slice(payload);
        icmp::emit_echo(&mut l4, icmp::TYPE_ECHO_REQUEST, ident, seq);
        ethernet(self.dst_mac, self.src_mac, &self.ip(PROTO_ICMP, &l4))
    }

    /// The IPv4 packet (no Ethernet header) of a TCP segment `t` carrying `payload`.
    pub fn ip_tcp(&self, t: &TcpRepr<'_>, payload: &[u8]) -> Vec<u8> {
        let hl = t.header_len();
        let mut l4 = vec![0u8; hl + payload.len()];
        l4[hl..].copy_from_slice(payload);
        t.emit_v4(&mut l4, self.src, self.dst);
        if !self.l4_checksum {
            l4[16..18].fill(0);
        }
        self.ip(PROTO_TCP, &l4)
    }

    /// The IPv4 packet (no Ethernet header) carrying `payload` as `protocol`.
    pub fn ip(&self, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        Ipv4Repr {
            src: self.src,
            dst: self.dst,
            protocol,
            payload_len: payload.len(),
            tos: self.tos,
            ident: self.ident,
            dont_frag: self.dont_frag,
            ttl: self.ttl,
        }
        .emit(&mut b);
        b.extend_from_slice(payload);
        b
    }
}

/// TCP from `ports` (source, destination) with `flags`: sequence and acknowledgement numbers
/// 0, window 0, no options. Set the rest with struct-update syntax.
pub fn tcp(ports: (u16, u16), flags: u8) -> TcpRepr<'static> {
    TcpRepr { src_port: ports.0, dst_port: ports.1, seq: 0, ack: 0, flags, window: 0, options: &[] }
}

/// A Linux SYN's options: MSS 1460, SACK-permitted, timestamps (`tsval`, 0), window scale 7
/// (20 bytes).
pub fn linux_syn_options(tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    o
}

/// An untagged Ethernet frame from `src` to `dst` around `payload`, IPv4 or IPv6 by its
/// version.
pub fn ethernet(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 14];
    let v6 = payload.first().is_some_and(|v| v >> 4 == 6);
    let ethertype = if v6 { crate::wire::ethernet::ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    EthernetRepr { dst, src, vlan: None, ethertype }.emit(&mut b);
    b.extend_from_slice(payload);
    b
}

/// An ARP frame (42 bytes, unpadded): Ethernet `eth` (destination, source), operation `op`
/// ([`arp::OP_REQUEST`], [`arp::OP_REPLY`]), `sender` and `target` (MAC, address).
pub fn arp_frame(eth: (Mac, Mac), op: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) -> Vec<u8> {
    let mut b = vec![0u8; 42];
    EthernetRepr { dst: eth.0, src: eth.1, vlan: None, ethertype: ETHERTYPE_ARP }.emit(&mut b);
    arp::emit(&mut b[14..], op, sender.0, sender.1, target.0, target.1);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{hex, vip, ROUTER};
    use crate::wire::{EthernetFrame, IcmpPacket, Ipv4Packet, TcpPacket, UdpPacket};

    /// A SYN from the router to VIP 1 without a TCP checksum, as pipeline_extra.rs sends it
    /// (the IPv4 checksum worked by hand).
    #[test]
    fn a_syn_byte_for_byte() {
        let f = Packet { l4_checksum: false, ..Packet::new(ROUTER, vip(1)) }.tcp(&tcp((1000, 80), 0x02), b"");
        let want = [
            "020000000001020000000099",
            "0800",
            "4500002800014000",
            "4006a4a7",
            "c6120002",
            "c6120a01",
            "03e80050",
            "00000000",
            "00000000",
            "5002",
            "0000",
            "0000",
            "0000",
        ];
        assert_eq!(hex(&f), want.concat());
    }

    #[test]
    fn checksums_verify() {
        let p = Packet::new(ROUTER, vip(1));
        let t = TcpRepr { seq: 7, ack: 9, window: 100, options: &linux_syn_options(5), ..tcp((1, 80), 0x12) };
        let f = p.tcp(&t, b"data");
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        let s = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(s.verify_checksum_v4(p.src, p.dst));
        assert_eq!((s.seq(), s.ack(), s.window(), s.payload()), (7, 9, 100, &b"data"[..]));

        let f = p.udp(5353, 53, b"q");
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_ne!(u.checksum(), 0);
        let f = Packet { l4_checksum: false, ..p }.udp(5353, 53, b"q");
        assert_eq!(UdpPacket::new_checked(&f[34..]).unwrap().checksum(), 0);

        let f = p.icmp_echo(7, 1, b"ping");
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(IcmpPacket::new_checked(ip.payload()).unwrap().verify_checksum());
    }

    #[test]
    fn arp_reply() {
        let f = arp_frame((EXT_MAC, ROUTER_MAC), arp::OP_REPLY, (ROUTER_MAC, ROUTER), (EXT_MAC, vip(1)));
        assert_eq!(f.len(), 42);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.ethertype(), ETHERTYPE_ARP);
        let a = arp::ArpPacket::new_checked(e.payload()).unwrap();
        assert_eq!((a.operation(), a.sender_ip(), a.target_ip()), (arp::OP_REPLY, ROUTER, vip(1)));
    }
}
