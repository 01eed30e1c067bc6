//! The packet logic, pure: decapsulating what appliances tunnel to this host, choosing the TUN
//! it goes to, reading what the kernel sends back out of a TUN (the 5-tuple its flow is found
//! by: its own, or for an ICMP error the one of the packet it quotes; for a fragment past the
//! first, its datagram), and building the GRE payload that carries it back.
//!
//! Both families, in both places. The underlay (the outer header) is IPv4 or IPv6; each
//! carries IP in IP (an IPv4 packet as protocol 4, an IPv6 one as protocol 41) or GRE (47,
//! protocol type 0x0800 or 0x86DD). What raw sockets hand over differs by family: an IPv4 raw
//! socket reads the whole packet, outer header included ([`decap`]); an IPv6 raw socket reads
//! only what follows the outer header and its extension headers, which the kernel has already
//! processed (hop-by-hop, routing, destination options, and fragments reassembled), with the
//! source address beside it from recvfrom ([`decap_v6`]). Inner packets and replies are
//! IPv4 or IPv6 whatever the underlay, and a flow is remembered by a family-neutral
//! [`FiveTuple`].
//!
//! Every function takes bytes and returns a result or a [`DropReason`]; none does I/O and
//! none panics on any input (the property tests at the bottom feed them arbitrary bytes).

use sluice_dataplane::flow::Addr;
use sluice_dataplane::fragments::{FragKey, Ports};
use sluice_dataplane::wire::ipv6::{self, UpperLayer};
use sluice_dataplane::wire::{icmp_error, icmpv6, icmpv6_error, ipv4, probe, GrePacket, GreRepr, IcmpPacket};
use sluice_dataplane::wire::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, WireError};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// GRE protocol type of an IPv4 payload.
pub const GRE_PROTO_IPV4: u16 = 0x0800;
/// GRE protocol type of an IPv6 payload.
pub const GRE_PROTO_IPV6: u16 = 0x86dd;
/// The GRE version bits (RFC 2784: must be 0).
const GRE_VERSION_MASK: u16 = 0x0007;
/// IP protocol (and IPv6 next header) of IPv6 in IP (RFC 2473, RFC 4213).
pub const PROTO_IPV6: u8 = ipv6::NEXT_IPV6;
/// The outer protocols tunnels come by, over either underlay: IPv4 in IP, IPv6 in IP, GRE.
pub const PROTOCOLS: [u8; 3] = [ipv4::PROTO_IPIP, PROTO_IPV6, ipv4::PROTO_GRE];

/// An IP family: of an underlay, or of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The family of the IP packet `p` by its version nibble; `None` for neither 4 nor 6.
    pub fn of_packet(p: &[u8]) -> Option<Family> {
        match p.first().map(|v| v >> 4) {
            Some(4) => Some(Family::V4),
            Some(6) => Some(Family::V6),
            _ => None,
        }
    }

    /// The GRE protocol type of a packet of this family.
    pub fn gre_protocol(self) -> u16 {
        match self {
            Family::V4 => GRE_PROTO_IPV4,
            Family::V6 => GRE_PROTO_IPV6,
        }
    }
}

/// How a packet came in, and so how its replies go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IP in IP: protocol 4 for an IPv4 packet, 41 for an IPv6 one.
    Ipip,
    /// GRE (protocol 47), with the key if it had one.
    Gre { key: Option<u32> },
}

impl Encap {
    /// The outer IP protocol that carries a packet of `inner` family this way.
    pub fn protocol(self, inner: Family) -> u8 {
        match (self, inner) {
            (Encap::Ipip, Family::V4) => ipv4::PROTO_IPIP,
            (Encap::Ipip, Family::V6) => PROTO_IPV6,
            (Encap::Gre { .. }, _) => ipv4::PROTO_GRE,
        }
    }
}

/// A TCP or UDP flow's addresses, ports and protocol, as seen in one direction; both
/// addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FiveTuple {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FiveTuple {
        FiveTuple {
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }
}

/// Why a packet was dropped. Labels are the `reason` of `sluice_agent_drops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Tunneled packet shorter than its IPv4 header or than its total length.
    OuterTruncated,
    /// Tunneled packet whose outer header is not IPv4 or has a bad header length.
    OuterMalformed,
    /// Outer IPv4 header checksum wrong.
    OuterChecksum,
    /// Outer packet is a fragment (the kernel reassembles before raw sockets, so unexpected).
    OuterFragment,
    /// Outer protocol neither IPIP (4 or 41) nor GRE.
    OuterProtocol,
    /// GRE header (with its optional words) longer than the packet.
    GreTruncated,
    /// GRE version other than 0.
    GreVersion,
    /// GRE routing or other RFC 1701 bits set.
    GreFlags,
    /// GRE protocol type other than IPv4 (0x0800) or IPv6 (0x86DD).
    GreProtocol,
    /// GRE checksum present and wrong.
    GreChecksum,
    /// Inner packet shorter than its IP header, its total (or payload) length, its IPv6
    /// extension headers or its TCP/UDP header.
    InnerTruncated,
    /// Inner IPv4 header or TCP/UDP header with impossible lengths, or an IPv6 extension
    /// header chain out of order (hop-by-hop not first, two fragment headers, more than 8).
    InnerMalformed,
    /// Inner packet is not IPv4, but the tunnel says it is (protocol 4, GRE type 0x0800).
    InnerNotIpv4,
    /// Tunneled packet from a sender outside `--appliance`: not an appliance, maybe a spoofer.
    NotAppliance,
    /// GRE key for which no VPC TUN is configured.
    UnknownVpc,
    /// IPIP or keyless GRE, but no physical TUN configured.
    NoPhysicalTun,
    /// Writing the inner packet into its TUN failed.
    TunWriteFailed,
    /// Packet out of a TUN that is neither IPv4 nor IPv6 (by its version nibble).
    ReplyNotIp,
    /// Packet out of a TUN with a bad IPv4 or IPv6 header, IPv6 extension header chain, or
    /// TCP or UDP header.
    ReplyMalformed,
    /// Packet out of a TUN that is neither TCP, UDP, ICMP nor ICMPv6, or a fragment of neither
    /// TCP nor UDP (only their fragments are followed: an ICMP error fits in 576 bytes, an
    /// ICMPv6 one in 1280). Among them IPv6's MLD reports.
    ReplyNotTcpUdp,
    /// ICMP or ICMPv6 out of a TUN that is not an error (ICMP types 3, 11, 12; ICMPv6 types 1
    /// to 4): echo replies, router solicitations and the like.
    ReplyIcmpNotError,
    /// ICMP or ICMPv6 error out of a TUN that cannot be followed: too short, a wrong checksum,
    /// or a quote that is not the start of a TCP or UDP packet.
    ReplyIcmpMalformed,
    /// Packet out of a TUN for a flow that did not come in through a tunnel (or expired).
    NoFlow,
    /// ICMP error out of a TUN about a packet of no remembered flow.
    IcmpNoFlow,
    /// A fragment past the first out of a TUN whose first fragment did not come within the
    /// fragment timeout (2 s), or came while the TUN's hold for early fragments was full.
    ReplyFragmentOrphan,
    /// Sending a reply back through the tunnel failed.
    SendFailed,
    /// Inner packet is not IPv6, but the tunnel says it is (protocol 41, GRE type 0x86DD).
    InnerNotIpv6,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 27] = [
        DropReason::OuterTruncated,
        DropReason::OuterMalformed,
        DropReason::OuterChecksum,
        DropReason::OuterFragment,
        DropReason::OuterProtocol,
        DropReason::GreTruncated,
        DropReason::GreVersion,
        DropReason::GreFlags,
        DropReason::GreProtocol,
        DropReason::GreChecksum,
        DropReason::InnerTruncated,
        DropReason::InnerMalformed,
        DropReason::InnerNotIpv4,
        DropReason::NotAppliance,
        DropReason::UnknownVpc,
        DropReason::NoPhysicalTun,
        DropReason::TunWriteFailed,
        DropReason::ReplyNotIp,
        DropReason::ReplyMalformed,
        DropReason::ReplyNotTcpUdp,
        DropReason::ReplyIcmpNotError,
        DropReason::ReplyIcmpMalformed,
        DropReason::NoFlow,
        DropReason::IcmpNoFlow,
        DropReason::ReplyFragmentOrphan,
        DropReason::SendFailed,
        DropReason::InnerNotIpv6,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::OuterTruncated => "outer_truncated",
            DropReason::OuterMalformed => "outer_malformed",
            DropReason::OuterChecksum => "outer_checksum",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::OuterProtocol => "outer_protocol",
            DropReason::GreTruncated => "gre_truncated",
            DropReason::GreVersion => "gre_version",
            DropReason::GreFlags => "gre_flags",
            DropReason::GreProtocol => "gre_protocol",
            DropReason::GreChecksum => "gre_checksum",
            DropReason::InnerTruncated => "inner_truncated",
            DropReason::InnerMalformed => "inner_malformed",
            DropReason::InnerNotIpv4 => "inner_not_ipv4",
            DropReason::NotAppliance => "not_appliance",
            DropReason::UnknownVpc => "unknown_vpc",
            DropReason::NoPhysicalTun => "no_physical_tun",
            DropReason::TunWriteFailed => "tun_write_failed",
            DropReason::ReplyNotIp => "reply_not_ip",
            DropReason::ReplyMalformed => "reply_malformed",
            DropReason::ReplyNotTcpUdp => "reply_not_tcp_udp",
            DropReason::ReplyIcmpNotError => "reply_icmp_not_error",
            DropReason::ReplyIcmpMalformed => "reply_icmp_malformed",
            DropReason::NoFlow => "no_flow",
            DropReason::IcmpNoFlow => "icmp_no_flow",
            DropReason::ReplyFragmentOrphan => "reply_fragment_orphan",
            DropReason::SendFailed => "send_failed",
            DropReason::InnerNotIpv6 => "inner_not_ipv6",
        }
    }
}

/// A decapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decap<'a> {
    /// Outer source: the appliance that tunneled it (its family is the underlay's).
    pub appliance: IpAddr,
    pub encap: Encap,
    /// The inner IPv4 or IPv6 packet, exactly its total length.
    pub inner: &'a [u8],
    /// The inner TCP/UDP 5-tuple; `None` for other protocols and for fragments past the
    /// first, which are delivered but not remembered.
    pub tuple: Option<FiveTuple>,
}

/// Strips the tunnel from a whole IPv4 packet as a raw socket reads it (outer header
/// included): IP in IP (protocol 4 around IPv4, 41 around IPv6), or GRE version 0 carrying
/// IPv4 or IPv6 with optional checksum (verified), key and sequence number. The inner packet
/// may be of any protocol and may be a fragment (the appliance cuts big inner packets before
/// encapsulating them; ICMP errors it translated for a flow, such as fragmentation needed):
/// all are delivered, only whole TCP/UDP ones and first fragments with a 5-tuple to remember.
pub fn decap(packet: &[u8]) -> Result<Decap<'_>, DropReason> {
    let outer = Ipv4Packet::new_checked(packet).map_err(|e| match e {
        WireError::Truncated => DropReason::OuterTruncated,
        _ => DropReason::OuterMalformed,
    })?;
    if !outer.verify_checksum() {
        return Err(DropReason::OuterChecksum);
    }
    // A tunnel packet fragmented on its way arrives here whole: IPv4 reassembles in
    // ip_local_deliver, before raw sockets see a packet, and the reassembled header has a
    // fragment word of 0 (or DF alone) and its checksum recomputed (ip_frag_reasm). Checked on
    // Linux 6.18: two IPIP fragments sent to a raw IPIP socket are read as one 3,120-byte
    // packet, flags and offset 0, checksum right. So a fragment here is not expected.
    if outer.is_fragment() {
        return Err(DropReason::OuterFragment);
    }
    let payload = &packet[outer.header_len()..outer.total_len()];
    tunneled(outer.src().into(), outer.protocol(), payload)
}

/// Strips the tunnel from what an IPv6 raw socket of `protocol` (4, 41 or 47) reads: the
/// payload after the outer IPv6 header and its extension headers, sent by `appliance` (the
/// source recvfrom gives). The kernel removed the outer header; it also processed the
/// extension headers before raw delivery (so none is seen here, and a hop-by-hop or routing
/// header it refuses never arrives) and reassembled a fragmented outer packet (checked on
/// Linux 6.18: a destination options header before protocol 4 is skipped, and a 3,048-byte
/// GRE packet sent in fragments is read whole). Otherwise as [`decap`].
pub fn decap_v6(appliance: Ipv6Addr, protocol: u8, payload: &[u8]) -> Result<Decap<'_>, DropReason> {
    tunneled(appliance.into(), protocol, payload)
}

/// The tunnel header of `protocol` at the start of `payload`, and the inner packet after it.
fn tunneled(appliance: IpAddr, protocol: u8, payload: &[u8]) -> Result<Decap<'_>, DropReason> {
    let (encap, family, inner) = match protocol {
        ipv4::PROTO_IPIP => (Encap::Ipip, Family::V4, payload),
        PROTO_IPV6 => (Encap::Ipip, Family::V6, payload),
        ipv4::PROTO_GRE => {
            let gre = gre(payload)?;
            let family = if gre.protocol() == GRE_PROTO_IPV6 { Family::V6 } else { Family::V4 };
            (Encap::Gre { key: gre.key() }, family, &payload[gre.header_len()..])
        }
        _ => return Err(DropReason::OuterProtocol),
    };
    let (inner, tuple) = match family {
        Family::V4 => inner_packet(inner)?,
        Family::V6 => inner_packet_v6(inner)?,
    };
    Ok(Decap { appliance, encap, inner, tuple })
}

fn gre(payload: &[u8]) -> Result<GrePacket<&[u8]>, DropReason> {
    if payload.len() < 2 {
        return Err(DropReason::GreTruncated);
    }
    if u16::from_be_bytes([payload[0], payload[1]]) & GRE_VERSION_MASK != 0 {
        return Err(DropReason::GreVersion);
    }
    let gre = GrePacket::new_checked(payload).map_err(|e| match e {
        WireError::Truncated => DropReason::GreTruncated,
        _ => DropReason::GreFlags,
    })?;
    if gre.protocol() != GRE_PROTO_IPV4 && gre.protocol() != GRE_PROTO_IPV6 {
        return Err(DropReason::GreProtocol);
    }
    if !gre.verify_checksum() {
        return Err(DropReason::GreChecksum);
    }
    Ok(gre)
}

/// An inner packet's wire error as a drop reason.
fn inner_error(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::InnerTruncated,
        _ => DropReason::InnerMalformed,
    }
}

/// Checks the inner IPv4 packet, trims what follows its total length, reads its 5-tuple.
fn inner_packet(b: &[u8]) -> Result<(&[u8], Option<FiveTuple>), DropReason> {
    match Family::of_packet(b) {
        None if b.is_empty() => return Err(DropReason::InnerTruncated),
        Some(Family::V4) => {}
        _ => return Err(DropReason::InnerNotIpv4),
    }
    let ip = Ipv4Packet::new_checked(b).map_err(inner_error)?;
    let tuple = five_tuple(&ip).map_err(inner_error)?;
    Ok((&b[..ip.total_len()], tuple))
}

/// Checks the inner IPv6 packet and its extension header chain, trims what follows its
/// payload length, reads its 5-tuple.
fn inner_packet_v6(b: &[u8]) -> Result<(&[u8], Option<FiveTuple>), DropReason> {
    match Family::of_packet(b) {
        None if b.is_empty() => return Err(DropReason::InnerTruncated),
        Some(Family::V6) => {}
        _ => return Err(DropReason::InnerNotIpv6),
    }
    let ip = Ipv6Packet::new_checked(b).map_err(inner_error)?;
    let b = &b[..ip.total_len()];
    let u = ipv6::upper_layer(b).map_err(inner_error)?;
    let tuple = five_tuple_v6(&ip, b, &u).map_err(inner_error)?;
    Ok((b, tuple))
}

/// The TCP/UDP 5-tuple of an unfragmented packet or a first fragment; `None` for later
/// fragments and other protocols.
fn five_tuple(ip: &Ipv4Packet<&[u8]>) -> Result<Option<FiveTuple>, WireError> {
    if ip.frag_offset() != 0 {
        return Ok(None);
    }
    let ports = ports(ip.protocol(), ip.payload(), ip.more_frags())?;
    Ok(ports.map(|(src_port, dst_port)| FiveTuple {
        src: ip.src().into(),
        src_port,
        dst: ip.dst().into(),
        dst_port,
        protocol: ip.protocol(),
    }))
}

/// The same for an IPv6 packet `b` whose upper layer is `u`.
fn five_tuple_v6(ip: &Ipv6Packet<&[u8]>, b: &[u8], u: &UpperLayer) -> Result<Option<FiveTuple>, WireError> {
    if u.fragment.is_some_and(|f| !f.at_offset_zero()) {
        return Ok(None);
    }
    let first = u.fragment.is_some_and(|f| f.more);
    let ports = ports(u.protocol, &b[u.offset..], first)?;
    Ok(ports.map(|(src_port, dst_port)| FiveTuple {
        src: ip.src().into(),
        src_port,
        dst: ip.dst().into(),
        dst_port,
        protocol: u.protocol,
    }))
}

/// The ports of the TCP or UDP header starting `l4` (a first fragment's if `first`); `None`
/// for other protocols. TCP and UDP share their protocol numbers across both families.
fn ports(protocol: u8, l4: &[u8], first: bool) -> Result<Option<(u16, u16)>, WireError> {
    Ok(Some(match protocol {
        ipv4::PROTO_TCP => {
            let t = TcpPacket::new_checked(l4)?;
            (t.src_port(), t.dst_port())
        }
        // A first fragment's length field counts the whole datagram, not what it holds.
        ipv4::PROTO_UDP if first => {
            let u = UdpPacket::first_fragment(l4)?;
            (u.src_port(), u.dst_port())
        }
        ipv4::PROTO_UDP => {
            let u = UdpPacket::new_checked(l4)?;
            (u.src_port(), u.dst_port())
        }
        _ => return Ok(None),
    }))
}

/// The nonce of a tunnel-path probe (`sluice_dataplane::wire::probe`): a whole UDP datagram
/// to the probe port whose payload is the probe's. Such a packet is the appliance's, not a
/// client's: the agent consumes it rather than delivering it.
pub fn probe_nonce(d: &Decap<'_>) -> Option<u64> {
    let t = d.tuple?;
    if t.protocol != ipv4::PROTO_UDP || t.dst_port != probe::PORT {
        return None;
    }
    let l4 = match Family::of_packet(d.inner)? {
        Family::V4 => {
            let ip = Ipv4Packet::new_checked(d.inner).ok()?;
            if ip.is_fragment() {
                return None;
            }
            d.inner.get(ip.header_len()..ip.total_len())?
        }
        Family::V6 => {
            let u = ipv6::upper_layer(d.inner).ok()?;
            if u.fragment.is_some() {
                return None;
            }
            d.inner.get(u.offset..)?
        }
    };
    probe::parse(UdpPacket::new_checked(l4).ok()?.payload())
}

/// A datagram whose fragments come out of a TUN: what its fragments share (RFC 791 3.2,
/// RFC 8200 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// The identification: 16 bits in IPv4, 32 in IPv6's fragment header.
    pub ident: u32,
}

impl Datagram {
    fn of(ip: &Ipv4Packet<&[u8]>) -> Datagram {
        Datagram {
            src: ip.src().into(),
            dst: ip.dst().into(),
            protocol: ip.protocol(),
            ident: u32::from(ip.ident()),
        }
    }

    /// Its key in a fragment table.
    pub fn key(&self) -> FragKey {
        FragKey {
            src: Addr::from(self.src),
            dst: Addr::from(self.dst),
            protocol: self.protocol,
            ident: self.ident,
        }
    }

    /// Its 5-tuple, with the ports its first fragment carried.
    pub fn tuple(&self, ports: Ports) -> FiveTuple {
        FiveTuple {
            src: self.src,
            src_port: ports.src,
            dst: self.dst,
            dst_port: ports.dst,
            protocol: self.protocol,
        }
    }
}

/// What a packet out of a TUN is, and so how its flow is found. Every 5-tuple here is in the
/// direction of the reply (the backend's end as source), the way flows are remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Unfragmented TCP or UDP: its own 5-tuple.
    Whole(FiveTuple),
    /// The first fragment of a TCP or UDP datagram: its own 5-tuple, and its datagram (whose
    /// later fragments carry no ports).
    First(FiveTuple, Datagram),
    /// A later fragment of a TCP or UDP datagram: no ports, only its datagram.
    Later(Datagram),
    /// An ICMP error (types 3, 11, 12) or ICMPv6 error (types 1 to 4) about a packet the
    /// backend received: the 5-tuple of that quoted packet reversed (it went client ->
    /// backend, the flow's forward direction).
    IcmpError(FiveTuple),
}

/// A packet the kernel sent out of a TUN, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The packet, trimmed to its total length.
    pub packet: &'a [u8],
    pub kind: ReplyKind,
}

/// Reads a packet the kernel sent out of a TUN (IPv4 or IPv6, by its version nibble: a TUN
/// without packet information carries both): TCP or UDP (whole or a fragment) or an ICMP or
/// ICMPv6 error; anything else is dropped.
pub fn reply(packet: &[u8]) -> Result<Reply<'_>, DropReason> {
    match Family::of_packet(packet) {
        Some(Family::V4) => reply_v4(packet),
        Some(Family::V6) => reply_v6(packet),
        None if packet.is_empty() => Err(DropReason::ReplyMalformed),
        None => Err(DropReason::ReplyNotIp),
    }
}

fn reply_v4(packet: &[u8]) -> Result<Reply<'_>, DropReason> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::ReplyMalformed)?;
    let packet = &packet[..ip.total_len()];
    let kind = match ip.protocol() {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => transport(&ip, packet)?,
        ipv4::PROTO_ICMP if !ip.is_fragment() => ReplyKind::IcmpError(quoted_flow(ip.payload())?),
        _ => return Err(DropReason::ReplyNotTcpUdp),
    };
    Ok(Reply { packet, kind })
}

/// An IPv6 packet out of a TUN: read past its extension headers to TCP, UDP or ICMPv6.
fn reply_v6(packet: &[u8]) -> Result<Reply<'_>, DropReason> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::ReplyMalformed)?;
    let packet = &packet[..ip.total_len()];
    let u = ipv6::upper_layer(packet).map_err(|_| DropReason::ReplyMalformed)?;
    // An atomic fragment (offset 0, no more) is a whole packet.
    let fragment = u.fragment.filter(|f| !f.at_offset_zero() || f.more);
    let kind = match u.protocol {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => match fragment {
            None => match five_tuple_v6(&ip, packet, &u) {
                Ok(Some(t)) => ReplyKind::Whole(t),
                _ => return Err(DropReason::ReplyMalformed),
            },
            Some(f) => {
                let d = Datagram {
                    src: ip.src().into(),
                    dst: ip.dst().into(),
                    protocol: u.protocol,
                    ident: f.ident,
                };
                if !f.at_offset_zero() {
                    ReplyKind::Later(d)
                } else {
                    // Ports read as an ICMPv6 error's quote is: 8 bytes past the chain.
                    let q = icmpv6_error::Quoted::parse(packet).map_err(|_| DropReason::ReplyMalformed)?;
                    ReplyKind::First(
                        quoted_tuple(q.src.into(), q.dst.into(), q.protocol, (q.src_port, q.dst_port)),
                        d,
                    )
                }
            }
        },
        ipv6::NEXT_ICMPV6 if fragment.is_none() => {
            ReplyKind::IcmpError(quoted_flow_v6(&packet[u.offset..], ip.src(), ip.dst())?)
        }
        _ => return Err(DropReason::ReplyNotTcpUdp),
    };
    Ok(Reply { packet, kind })
}

/// A 5-tuple from its parts (a quote's, or a first fragment's read as a quote).
fn quoted_tuple(src: IpAddr, dst: IpAddr, protocol: u8, (src_port, dst_port): (u16, u16)) -> FiveTuple {
    FiveTuple { src, src_port, dst, dst_port, protocol }
}

/// A TCP or UDP packet out of a TUN (`packet` is `ip`'s bytes, trimmed).
fn transport(ip: &Ipv4Packet<&[u8]>, packet: &[u8]) -> Result<ReplyKind, DropReason> {
    if !ip.is_fragment() {
        return match five_tuple(ip) {
            Ok(Some(t)) => Ok(ReplyKind::Whole(t)),
            _ => Err(DropReason::ReplyMalformed),
        };
    }
    if ip.frag_offset() != 0 {
        return Ok(ReplyKind::Later(Datagram::of(ip)));
    }
    // A first fragment holds the start of the transport header, not all of the datagram its
    // length fields describe: its ports are read the way an ICMP error's quote is read.
    let q = icmp_error::Quoted::parse(packet).map_err(|_| DropReason::ReplyMalformed)?;
    let t = quoted_tuple(q.src.into(), q.dst.into(), q.protocol, (q.src_port, q.dst_port));
    Ok(ReplyKind::First(t, Datagram::of(ip)))
}

/// The reply-direction 5-tuple of the flow an ICMP message (the IP payload) is about, if it is
/// an error with a right checksum quoting the start of a TCP or UDP packet.
fn quoted_flow(icmp: &[u8]) -> Result<FiveTuple, DropReason> {
    let msg_type = IcmpPacket::new_checked(icmp).map_err(|_| DropReason::ReplyIcmpMalformed)?.msg_type();
    if !icmp_error::is_error(msg_type) {
        return Err(DropReason::ReplyIcmpNotError);
    }
    let e = icmp_error::parse(icmp).map_err(|_| DropReason::ReplyIcmpMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::ReplyIcmpMalformed);
    }
    let q = e.quoted;
    Ok(quoted_tuple(q.src.into(), q.dst.into(), q.protocol, (q.src_port, q.dst_port)).reversed())
}

/// The same for an ICMPv6 message (the upper layer of its packet) carried from `src` to `dst`
/// (its checksum covers them): an error of types 1 to 4.
fn quoted_flow_v6(icmp: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<FiveTuple, DropReason> {
    let m = icmpv6::Icmpv6Packet::new_checked(icmp).map_err(|_| DropReason::ReplyIcmpMalformed)?;
    if !icmpv6_error::is_error(m.msg_type()) {
        return Err(DropReason::ReplyIcmpNotError);
    }
    let e = icmpv6_error::parse(icmp, src, dst).map_err(|_| DropReason::ReplyIcmpMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::ReplyIcmpMalformed);
    }
    let q = e.quoted;
    Ok(quoted_tuple(q.src.into(), q.dst.into(), q.protocol, (q.src_port, q.dst_port)).reversed())
}

/// Writes into `out` (cleared first) the GRE payload that carries `inner` back: the GRE header
/// (no checksum, no sequence number, the key if any, protocol type of `family`: IPv4 or
/// IPv6) then `inner`. The raw socket adds the outer IPv4 or IPv6 header.
pub fn encap_gre(key: Option<u32>, family: Family, inner: &[u8], out: &mut Vec<u8>) {
    let gre = GreRepr { protocol: family.gre_protocol(), key };
    out.clear();
    out.resize(gre.header_len(), 0);
    gre.emit(out);
    out.extend_from_slice(inner);
}

/// Which TUN each way of arriving goes to: the physical TUN for IPIP and keyless GRE, the
/// VPC's TUN for GRE with a key, whatever the underlay's or the inner packet's family. Values
/// are indexes into the agent's TUN list.
#[derive(Debug, Clone, Default)]
pub struct TunMap {
    pub physical: Option<usize>,
    pub vpcs: HashMap<u32, usize>,
}

impl TunMap {
    pub fn select(&self, encap: Encap) -> Result<usize, DropReason> {
        match encap {
            Encap::Ipip | Encap::Gre { key: None } => self.physical.ok_or(DropReason::NoPhysicalTun),
            Encap::Gre { key: Some(k) } => self.vpcs.get(&k).copied().ok_or(DropReason::UnknownVpc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpkt;
    use sluice_dataplane::wire::checksum;
    use sluice_dataplane::wire::{Ipv4Repr, TcpRepr, UdpRepr};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
    const APPLIANCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1);

    /// A UDP packet CLIENT:40000 -> VIP:53 carrying "query".
    fn udp_inner() -> Vec<u8> {
        let mut p = vec![0u8; 20 + 8 + 5];
        p[28..].copy_from_slice(b"query");
        UdpRepr { src_port: 40000, dst_port: 53 }.emit_v4(&mut p[20..], CLIENT, VIP);
        ip_header(CLIENT, VIP, ipv4::PROTO_UDP, 13).emit(&mut p);
        p
    }

    /// A TCP SYN CLIENT:40001 -> VIP:80.
    fn tcp_inner() -> Vec<u8> {
        let mut p = vec![0u8; 40];
        let tcp = TcpRepr {
            src_port: 40001,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: 0x02,
            window: 1000,
            options: &[],
        };
        tcp.emit_v4(&mut p[20..], CLIENT, VIP);
        ip_header(CLIENT, VIP, ipv4::PROTO_TCP, 20).emit(&mut p);
        p
    }

    fn ip_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> Ipv4Repr {
        Ipv4Repr { src, dst, protocol, payload_len, tos: 0, ident: 7, dont_frag: true, ttl: 64 }
    }

    /// The outer packet APPLIANCE -> HOST with `protocol` around `payload`.
    fn outer(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        ip_header(APPLIANCE, HOST, protocol, payload.len()).emit(&mut p);
        p.extend_from_slice(payload);
        p
    }

    fn gre_packet(key: Option<u32>, inner: &[u8]) -> Vec<u8> {
        let mut g = Vec::new();
        encap_gre(key, Family::V4, inner, &mut g);
        outer(ipv4::PROTO_GRE, &g)
    }

    fn udp_tuple() -> FiveTuple {
        FiveTuple {
            src: CLIENT.into(),
            src_port: 40000,
            dst: VIP.into(),
            dst_port: 53,
            protocol: ipv4::PROTO_UDP,
        }
    }

    /// Rewrites the outer header checksum after a test changed a field in it.
    fn refill_outer_checksum(p: &mut [u8]) {
        Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
    }

    #[test]
    fn decap_ipip() {
        let inner = udp_inner();
        let p = outer(ipv4::PROTO_IPIP, &inner);
        let d = decap(&p).unwrap();
        assert_eq!(
            d,
            Decap {
                appliance: APPLIANCE.into(),
                encap: Encap::Ipip,
                inner: &inner,
                tuple: Some(udp_tuple())
            }
        );
    }

    #[test]
    fn decap_gre_keyed_and_keyless() {
        let inner = tcp_inner();
        for key in [Some(100), None] {
            let p = gre_packet(key, &inner);
            let d = decap(&p).unwrap();
            assert_eq!(d.encap, Encap::Gre { key });
            assert_eq!(d.appliance, IpAddr::from(APPLIANCE));
            assert_eq!(d.inner, &inner[..]);
            let t = d.tuple.unwrap();
            assert_eq!(
                (t.src, t.src_port, t.dst, t.dst_port, t.protocol),
                (CLIENT.into(), 40001, VIP.into(), 80, 6)
            );
        }
    }

    #[test]
    fn decap_gre_with_checksum_and_sequence() {
        let inner = udp_inner();
        // C, K and S: checksum word, key 7, sequence 9.
        let mut g = vec![0xb0, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9];
        g.extend_from_slice(&inner);
        let c = checksum::checksum(&g);
        g[4..6].copy_from_slice(&c.to_be_bytes());
        let p = outer(ipv4::PROTO_GRE, &g);
        let d = decap(&p).unwrap();
        assert_eq!((d.encap, d.inner, d.tuple), (Encap::Gre { key: Some(7) }, &inner[..], Some(udp_tuple())));

        let mut bad = g.clone();
        bad[5] ^= 0x01;
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &bad)), Err(DropReason::GreChecksum));
    }

    #[test]
    fn non_tcp_udp_and_fragments_are_delivered_without_a_tuple() {
        // ICMP echo request: 8 bytes, checksum irrelevant here.
        let mut icmp = vec![0u8; 28];
        ip_header(CLIENT, VIP, 1, 8).emit(&mut icmp);
        icmp[20] = 8;
        let p = outer(ipv4::PROTO_IPIP, &icmp);
        let d = decap(&p).unwrap();
        assert_eq!((d.inner, d.tuple), (&icmp[..], None));

        // A later fragment of UDP: no ports in it.
        let mut frag = udp_inner();
        frag[6] = 0x00;
        frag[7] = 0x10;
        Ipv4Packet::new_checked(&mut frag[..]).unwrap().fill_checksum();
        let p = outer(ipv4::PROTO_IPIP, &frag);
        let d = decap(&p).unwrap();
        assert_eq!(d.tuple, None);
    }

    #[test]
    fn trailing_bytes_after_inner_are_trimmed() {
        let inner = udp_inner();
        let mut padded = inner.clone();
        padded.extend_from_slice(&[0; 6]);
        let p = outer(ipv4::PROTO_IPIP, &padded);
        let d = decap(&p).unwrap();
        assert_eq!(d.inner, &inner[..]);
    }

    #[test]
    fn outer_drops() {
        let p = outer(ipv4::PROTO_IPIP, &udp_inner());
        assert_eq!(decap(&p[..19]), Err(DropReason::OuterTruncated));
        assert_eq!(decap(&p[..p.len() - 1]), Err(DropReason::OuterTruncated));
        assert_eq!(decap(&[]), Err(DropReason::OuterTruncated));

        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(decap(&v6), Err(DropReason::OuterMalformed));

        let mut bad_sum = p.clone();
        bad_sum[10] ^= 0x40;
        assert_eq!(decap(&bad_sum), Err(DropReason::OuterChecksum));

        let mut frag = p.clone();
        frag[6] |= 0x20; // more fragments
        refill_outer_checksum(&mut frag);
        assert_eq!(decap(&frag), Err(DropReason::OuterFragment));

        let mut udp = p.clone();
        udp[9] = ipv4::PROTO_UDP;
        refill_outer_checksum(&mut udp);
        assert_eq!(decap(&udp), Err(DropReason::OuterProtocol));
    }

    #[test]
    fn gre_drops() {
        let inner = udp_inner();
        let keyed = {
            let mut g = Vec::new();
            encap_gre(Some(5), Family::V4, &inner, &mut g);
            g
        };
        // Too short for the base header, and for the key word the K bit announces.
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &keyed[..1])), Err(DropReason::GreTruncated));
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &keyed[..6])), Err(DropReason::GreTruncated));

        let mut v1 = keyed.clone();
        v1[1] |= 0x01;
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &v1)), Err(DropReason::GreVersion));

        let mut routing = keyed.clone();
        routing[0] |= 0x40;
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &routing)), Err(DropReason::GreFlags));

        let mut ethernet = keyed.clone();
        ethernet[2..4].copy_from_slice(&0x6558u16.to_be_bytes());
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &ethernet)), Err(DropReason::GreProtocol));
        // Type IPv6 around an IPv4 packet, and IPv4 around an IPv6 one.
        let mut ipv6 = keyed.clone();
        ipv6[2..4].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &ipv6)), Err(DropReason::InnerNotIpv6));
        let mut v4_type = testpkt::gre6(Some(5), &testpkt::udp6((CLIENT6, 1), (VIP6, 53), 4));
        v4_type[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(decap_v6(APPLIANCE6, ipv4::PROTO_GRE, &v4_type), Err(DropReason::InnerNotIpv4));
    }

    #[test]
    fn inner_drops() {
        let inner = udp_inner();
        // Nothing after the tunnel header.
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &[])), Err(DropReason::InnerTruncated));
        assert_eq!(decap(&gre_packet(Some(1), &[])), Err(DropReason::InnerTruncated));
        // Shorter than the inner header, and than the inner total length.
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &inner[..12])), Err(DropReason::InnerTruncated));
        assert_eq!(decap(&gre_packet(None, &inner[..inner.len() - 1])), Err(DropReason::InnerTruncated));
        // An inner UDP header cut short (total length says 24 bytes).
        let mut short_udp = inner[..24].to_vec();
        short_udp[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &short_udp)), Err(DropReason::InnerTruncated));

        let mut v6 = inner.clone();
        v6[0] = 0x60;
        assert_eq!(decap(&gre_packet(Some(1), &v6)), Err(DropReason::InnerNotIpv4));

        let mut ihl = inner.clone();
        ihl[0] = 0x44;
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &ihl)), Err(DropReason::InnerMalformed));
        let mut udp_len = inner.clone();
        udp_len[24..26].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &udp_len)), Err(DropReason::InnerMalformed));
    }

    #[test]
    fn tun_selection() {
        let map = TunMap { physical: Some(0), vpcs: HashMap::from([(100, 1), (200, 2)]) };
        assert_eq!(map.select(Encap::Ipip), Ok(0));
        assert_eq!(map.select(Encap::Gre { key: None }), Ok(0));
        assert_eq!(map.select(Encap::Gre { key: Some(200) }), Ok(2));
        assert_eq!(map.select(Encap::Gre { key: Some(300) }), Err(DropReason::UnknownVpc));

        let vpc_only = TunMap { physical: None, vpcs: HashMap::from([(100, 0)]) };
        assert_eq!(vpc_only.select(Encap::Ipip), Err(DropReason::NoPhysicalTun));
        assert_eq!(vpc_only.select(Encap::Gre { key: None }), Err(DropReason::NoPhysicalTun));
        assert_eq!(vpc_only.select(Encap::Gre { key: Some(100) }), Ok(0));
    }

    #[test]
    fn encap_round_trip() {
        let inner = udp_inner();
        let mut out = vec![0xee; 3]; // cleared first
        for key in [Some(7), Some(0xffff_ffff), None] {
            encap_gre(key, Family::V4, &inner, &mut out);
            assert_eq!(out.len(), inner.len() + if key.is_some() { 8 } else { 4 });
            let p = outer(ipv4::PROTO_GRE, &out);
            let d = decap(&p).unwrap();
            assert_eq!((d.encap, d.inner, d.tuple), (Encap::Gre { key }, &inner[..], Some(udp_tuple())));
        }
    }

    #[test]
    fn reply_reads_its_own_tuple() {
        // The answer VIP:53 -> CLIENT:40000, with trailing bytes to trim.
        let mut p = vec![0u8; 20 + 8 + 2];
        UdpRepr { src_port: 53, dst_port: 40000 }.emit_v4(&mut p[20..], VIP, CLIENT);
        ip_header(VIP, CLIENT, ipv4::PROTO_UDP, 10).emit(&mut p);
        let want = p.clone();
        p.push(0);
        let r = reply(&p).unwrap();
        assert_eq!(r.packet, &want[..]);
        assert_eq!(r.kind, ReplyKind::Whole(udp_tuple().reversed()));
    }

    #[test]
    fn reply_fragments_carry_their_datagram_and_the_first_its_ports() {
        let big = testpkt::udp((VIP, 53), (CLIENT, 40000), 4000, 0x4242, false);
        let frags = testpkt::fragments(&big, 1500);
        assert_eq!(frags.len(), 3);
        let d = Datagram { src: VIP.into(), dst: CLIENT.into(), protocol: ipv4::PROTO_UDP, ident: 0x4242 };
        assert_eq!(reply(&frags[0]).unwrap().kind, ReplyKind::First(udp_tuple().reversed(), d));
        for f in &frags[1..] {
            let r = reply(f).unwrap();
            assert_eq!((r.packet, r.kind), (&f[..], ReplyKind::Later(d)));
        }
        assert_eq!(d.tuple(Ports { src: 53, dst: 40000 }), udp_tuple().reversed());
        // A first fragment too short for the ports.
        let mut short = frags[0][..24].to_vec();
        testpkt::ip(VIP, CLIENT, ipv4::PROTO_UDP, 4, 0x4242, false).emit(&mut short);
        let mut view = Ipv4Packet::new_checked(&mut short[..]).unwrap();
        view.set_flags_frag(ipv4::FLAG_MF);
        view.fill_checksum();
        assert_eq!(reply(&short), Err(DropReason::ReplyMalformed));
    }

    #[test]
    fn reply_icmp_errors_carry_the_quoted_flow_reversed() {
        // The backend (VIP here) got CLIENT:40000 -> VIP:53 and answers port unreachable.
        let quoted = udp_inner();
        for (t, c) in [(3, 3), (3, 4), (11, 0), (12, 0)] {
            let e = testpkt::icmp_error(VIP, CLIENT, t, c, [0; 4], &quoted);
            let r = reply(&e).unwrap();
            assert_eq!((r.packet, r.kind), (&e[..], ReplyKind::IcmpError(udp_tuple().reversed())), "{t}/{c}");
        }
        // Quoting TCP: the same, with TCP's ports.
        let e = testpkt::icmp_error(VIP, CLIENT, 3, 3, [0; 4], &tcp_inner());
        let want = FiveTuple {
            src: VIP.into(),
            src_port: 80,
            dst: CLIENT.into(),
            dst_port: 40001,
            protocol: ipv4::PROTO_TCP,
        };
        assert_eq!(reply(&e).unwrap().kind, ReplyKind::IcmpError(want));
    }

    #[test]
    fn reply_icmp_drops() {
        let quoted = udp_inner();
        // An echo reply: not an error.
        let mut echo = vec![0u8; 28];
        ip_header(VIP, CLIENT, ipv4::PROTO_ICMP, 8).emit(&mut echo);
        assert_eq!(reply(&echo), Err(DropReason::ReplyIcmpNotError));
        // Shorter than an ICMP header; a quote shorter than IP header + 8 bytes.
        let mut tiny = vec![0u8; 24];
        ip_header(VIP, CLIENT, ipv4::PROTO_ICMP, 4).emit(&mut tiny);
        assert_eq!(reply(&tiny), Err(DropReason::ReplyIcmpMalformed));
        let short = testpkt::icmp_error(VIP, CLIENT, 3, 3, [0; 4], &quoted[..27]);
        assert_eq!(reply(&short), Err(DropReason::ReplyIcmpMalformed));
        // A wrong ICMP checksum.
        let mut bad = testpkt::icmp_error(VIP, CLIENT, 3, 3, [0; 4], &quoted);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert_eq!(reply(&bad), Err(DropReason::ReplyIcmpMalformed));
        // Quoting an ICMP echo request: no flow to follow.
        let mut ping = vec![0u8; 28];
        ip_header(CLIENT, VIP, ipv4::PROTO_ICMP, 8).emit(&mut ping);
        ping[20] = 8;
        let about_ping = testpkt::icmp_error(VIP, CLIENT, 3, 1, [0; 4], &ping);
        assert_eq!(reply(&about_ping), Err(DropReason::ReplyIcmpMalformed));
        // A fragment of ICMP (the errors fit in 576 bytes): not followed.
        let mut frag = testpkt::icmp_error(VIP, CLIENT, 3, 3, [0; 4], &quoted);
        frag[6] = 0x20;
        Ipv4Packet::new_checked(&mut frag[..]).unwrap().fill_checksum();
        assert_eq!(reply(&frag), Err(DropReason::ReplyNotTcpUdp));
    }

    #[test]
    fn a_reassembled_outer_packet_is_an_ordinary_one() {
        // What the raw socket reads after the kernel reassembled a fragmented tunnel packet:
        // one packet, fragment word 0, around a big inner datagram.
        let inner = testpkt::udp((CLIENT, 40000), (VIP, 53), 3000, 5, false);
        let p = testpkt::ipip(APPLIANCE, HOST, &inner);
        let d = decap(&p).unwrap();
        assert_eq!((d.inner, d.tuple), (&inner[..], Some(udp_tuple())));
    }

    #[test]
    fn inner_fragments_and_icmp_errors_are_delivered_the_first_fragment_with_its_tuple() {
        let big = testpkt::udp((CLIENT, 40000), (VIP, 53), 4000, 9, false);
        for (i, f) in testpkt::fragments(&big, 1400).iter().enumerate() {
            let p = testpkt::gre(APPLIANCE, HOST, Some(7), f);
            let d = decap(&p).unwrap();
            let tuple = (i == 0).then(udp_tuple);
            assert_eq!((d.inner, d.tuple), (&f[..], tuple));
        }
        // Fragmentation needed, MTU 1400, about VIP:53 -> CLIENT:40000 (a packet the backend sent).
        let sent = testpkt::udp((VIP, 53), (CLIENT, 40000), 1600, 3, true);
        let e = testpkt::icmp_error(CLIENT, VIP, 3, 4, [0, 0, 0x05, 0x78], &sent);
        let p = testpkt::ipip(APPLIANCE, HOST, &e);
        let d = decap(&p).unwrap();
        assert_eq!((d.inner, d.tuple), (&e[..], None));
    }

    #[test]
    fn reply_drops() {
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        assert_eq!(reply(&v6), Err(DropReason::ReplyMalformed), "no payload for UDP");
        let mut v5 = v6.clone();
        v5[0] = 0x50;
        assert_eq!(reply(&v5), Err(DropReason::ReplyNotIp));
        assert_eq!(reply(&[]), Err(DropReason::ReplyMalformed));
        assert_eq!(reply(&udp_inner()[..10]), Err(DropReason::ReplyMalformed));

        // Another protocol, whole or a fragment (GRE out of a TUN).
        let mut gre = vec![0u8; 28];
        ip_header(VIP, CLIENT, ipv4::PROTO_GRE, 8).emit(&mut gre);
        assert_eq!(reply(&gre), Err(DropReason::ReplyNotTcpUdp));
        gre[6] = 0x20;
        assert_eq!(reply(&gre), Err(DropReason::ReplyNotTcpUdp));

        // UDP header cut short: protocol UDP, 4 bytes of payload.
        let mut short = vec![0u8; 24];
        ip_header(VIP, CLIENT, ipv4::PROTO_UDP, 4).emit(&mut short);
        assert_eq!(reply(&short), Err(DropReason::ReplyMalformed));
    }

    /// UDP CLIENT6:40000 -> VIP6:53 with 5 bytes.
    fn udp6_inner() -> Vec<u8> {
        testpkt::udp6((CLIENT6, 40000), (VIP6, 53), 5)
    }

    fn udp6_tuple() -> FiveTuple {
        FiveTuple {
            src: CLIENT6.into(),
            src_port: 40000,
            dst: VIP6.into(),
            dst_port: 53,
            protocol: ipv4::PROTO_UDP,
        }
    }

    #[test]
    fn decap_over_an_ipv6_underlay_with_either_inner_family() {
        // What an IPv6 raw socket of each protocol reads: the payload, the sender beside it.
        let (v4, v6) = (udp_inner(), udp6_inner());
        type Case<'a> = (u8, Vec<u8>, Encap, &'a [u8], FiveTuple);
        let cases: [Case; 5] = [
            (ipv4::PROTO_IPIP, v4.clone(), Encap::Ipip, &v4, udp_tuple()),
            (PROTO_IPV6, v6.clone(), Encap::Ipip, &v6, udp6_tuple()),
            (ipv4::PROTO_GRE, testpkt::gre6(Some(7), &v4), Encap::Gre { key: Some(7) }, &v4, udp_tuple()),
            (ipv4::PROTO_GRE, testpkt::gre6(Some(7), &v6), Encap::Gre { key: Some(7) }, &v6, udp6_tuple()),
            (ipv4::PROTO_GRE, testpkt::gre6(None, &v6), Encap::Gre { key: None }, &v6, udp6_tuple()),
        ];
        for (protocol, payload, encap, inner, tuple) in cases {
            let d = decap_v6(APPLIANCE6, protocol, &payload).unwrap();
            let want = Decap { appliance: APPLIANCE6.into(), encap, inner, tuple: Some(tuple) };
            assert_eq!(d, want, "protocol {protocol}");
        }
        // The socket's protocol is one of the three; anything else is refused.
        assert_eq!(decap_v6(APPLIANCE6, ipv4::PROTO_UDP, &v6), Err(DropReason::OuterProtocol));
    }

    #[test]
    fn decap_ipv6_inner_over_an_ipv4_underlay() {
        let v6 = udp6_inner();
        let p = testpkt::ipip(APPLIANCE, HOST, &v6);
        let d = decap(&p).unwrap();
        assert_eq!(
            (d.appliance, d.encap, d.inner, d.tuple),
            (APPLIANCE.into(), Encap::Ipip, &v6[..], Some(udp6_tuple()))
        );
        let p = testpkt::gre(APPLIANCE, HOST, Some(9), &v6);
        let d = decap(&p).unwrap();
        assert_eq!((d.encap, d.inner, d.tuple), (Encap::Gre { key: Some(9) }, &v6[..], Some(udp6_tuple())));
        let syn = testpkt::tcp6((CLIENT6, 40001), (VIP6, 80));
        let t = decap(&testpkt::ipip(APPLIANCE, HOST, &syn)).unwrap().tuple.unwrap();
        assert_eq!(
            (t.src, t.src_port, t.dst, t.dst_port, t.protocol),
            (CLIENT6.into(), 40001, VIP6.into(), 80, 6)
        );
    }

    #[test]
    fn the_inner_family_must_be_the_one_the_tunnel_names() {
        let (v4, v6) = (udp_inner(), udp6_inner());
        // Protocol 4 around IPv6, protocol 41 around IPv4, over either underlay.
        assert_eq!(decap(&outer(ipv4::PROTO_IPIP, &v6)), Err(DropReason::InnerNotIpv4));
        assert_eq!(decap(&outer(PROTO_IPV6, &v4)), Err(DropReason::InnerNotIpv6));
        assert_eq!(decap_v6(APPLIANCE6, ipv4::PROTO_IPIP, &v6), Err(DropReason::InnerNotIpv4));
        assert_eq!(decap_v6(APPLIANCE6, PROTO_IPV6, &v4), Err(DropReason::InnerNotIpv6));
        assert_eq!(decap_v6(APPLIANCE6, PROTO_IPV6, &[]), Err(DropReason::InnerTruncated));
        assert_eq!(decap_v6(APPLIANCE6, PROTO_IPV6, &[0x00]), Err(DropReason::InnerNotIpv6));
    }

    #[test]
    fn ipv6_inner_drops_and_trimming() {
        let v6 = udp6_inner();
        fn ipv6(b: &[u8]) -> Result<Decap<'_>, DropReason> {
            decap_v6(APPLIANCE6, PROTO_IPV6, b)
        }
        // Shorter than the fixed header, than its payload length, than its UDP header.
        assert_eq!(ipv6(&v6[..39]), Err(DropReason::InnerTruncated));
        assert_eq!(ipv6(&v6[..v6.len() - 1]), Err(DropReason::InnerTruncated));
        let mut short_udp = v6[..44].to_vec();
        short_udp[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(ipv6(&short_udp), Err(DropReason::InnerTruncated));
        // A UDP length shorter than its header.
        let mut udp_len = v6.clone();
        udp_len[44..46].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(ipv6(&udp_len), Err(DropReason::InnerMalformed));
        // An extension header chain out of order: hop-by-hop after destination options.
        let mut chain = testpkt::udp6((CLIENT6, 40000), (VIP6, 53), 16);
        chain[6] = ipv6::NEXT_DEST_OPTS;
        chain[40] = ipv6::NEXT_HOP_BY_HOP;
        chain[41] = 0;
        chain[48] = ipv4::PROTO_UDP;
        chain[49] = 0;
        assert_eq!(ipv6(&chain), Err(DropReason::InnerMalformed));
        // An extension header running past the packet.
        let mut long_ext = v6.clone();
        long_ext[6] = ipv6::NEXT_DEST_OPTS;
        long_ext[41] = 9;
        assert_eq!(ipv6(&long_ext), Err(DropReason::InnerTruncated));
        // Trailing bytes are trimmed; a protocol without ports is delivered without a tuple.
        let mut padded = v6.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(ipv6(&padded).unwrap().inner, &v6[..]);
        let echo = testpkt::icmpv6_error(CLIENT6, VIP6, 128, 0, [0; 4], &[]);
        let d = ipv6(&echo).unwrap();
        assert_eq!((d.inner, d.tuple), (&echo[..], None));
    }

    #[test]
    fn ipv6_inner_fragments_are_delivered_the_first_with_its_tuple() {
        let big = testpkt::udp6((CLIENT6, 40000), (VIP6, 53), 3000);
        let frags = testpkt::fragments6(&big, 1280, 0xabcd_0001);
        assert_eq!(frags.len(), 3);
        for (i, f) in frags.iter().enumerate() {
            let g = testpkt::gre6(Some(7), f);
            let d = decap_v6(APPLIANCE6, ipv4::PROTO_GRE, &g).unwrap();
            assert_eq!((d.inner, d.tuple), (&f[..], (i == 0).then(udp6_tuple)), "fragment {i}");
        }
    }

    #[test]
    fn ipv6_replies_read_their_own_tuple() {
        let mut answer = testpkt::udp6((VIP6, 53), (CLIENT6, 40000), 10);
        let want = answer.clone();
        answer.push(0);
        let r = reply(&answer).unwrap();
        assert_eq!((r.packet, r.kind), (&want[..], ReplyKind::Whole(udp6_tuple().reversed())));
        let synack = testpkt::tcp6((VIP6, 80), (CLIENT6, 40001));
        let t =
            FiveTuple { src: VIP6.into(), src_port: 80, dst: CLIENT6.into(), dst_port: 40001, protocol: 6 };
        assert_eq!(reply(&synack).unwrap().kind, ReplyKind::Whole(t));
    }

    #[test]
    fn ipv6_reply_fragments_carry_their_datagram_and_the_first_its_ports() {
        let big = testpkt::udp6((VIP6, 53), (CLIENT6, 40000), 4000);
        let frags = testpkt::fragments6(&big, 1500, 0x1234_5678);
        assert_eq!(frags.len(), 3);
        let d =
            Datagram { src: VIP6.into(), dst: CLIENT6.into(), protocol: ipv4::PROTO_UDP, ident: 0x1234_5678 };
        assert_eq!(reply(&frags[0]).unwrap().kind, ReplyKind::First(udp6_tuple().reversed(), d));
        for f in &frags[1..] {
            let r = reply(f).unwrap();
            assert_eq!((r.packet, r.kind), (&f[..], ReplyKind::Later(d)));
        }
        assert_eq!(d.tuple(Ports { src: 53, dst: 40000 }), udp6_tuple().reversed());
        // The key of an IPv6 datagram is not the IPv4 one with the same ident.
        let d4 = Datagram { src: VIP.into(), dst: CLIENT.into(), ..d };
        assert_ne!(d.key(), d4.key());
        // A first fragment too short for the ports: the fragment header, then 4 bytes.
        let mut short = frags[0][..52].to_vec();
        short[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(reply(&short), Err(DropReason::ReplyMalformed));
        // An atomic fragment (offset 0, no more) is a whole packet.
        let mut atomic =
            testpkt::fragments6(&testpkt::udp6((VIP6, 53), (CLIENT6, 40000), 10), 1500, 5).remove(0);
        assert_eq!(atomic[43] & 1, 0);
        assert_eq!(reply(&atomic).unwrap().kind, ReplyKind::Whole(udp6_tuple().reversed()));
        // ICMPv6 in fragments is not followed.
        let e = testpkt::icmpv6_error(VIP6, CLIENT6, 1, 4, [0; 4], &udp6_inner());
        let mut frag = testpkt::fragments6(&e, 1500, 6).remove(0);
        frag[43] |= 1;
        assert_eq!(reply(&frag), Err(DropReason::ReplyNotTcpUdp));
        atomic[40] = 47;
        assert_eq!(reply(&atomic), Err(DropReason::ReplyNotTcpUdp));
    }

    #[test]
    fn ipv6_reply_icmpv6_errors_carry_the_quoted_flow_reversed() {
        // The backend (VIP6) got CLIENT6:40000 -> VIP6:53 and answers with an error.
        for (t, c) in [(1, 4), (1, 1), (2, 0), (3, 0), (4, 1)] {
            let e = testpkt::icmpv6_error(VIP6, CLIENT6, t, c, [0, 0, 5, 0], &udp6_inner());
            let r = reply(&e).unwrap();
            assert_eq!(
                (r.packet, r.kind),
                (&e[..], ReplyKind::IcmpError(udp6_tuple().reversed())),
                "{t}/{c}"
            );
        }
        // Not errors: an echo reply, a router solicitation.
        for t in [129, 133] {
            let m = testpkt::icmpv6_error(VIP6, CLIENT6, t, 0, [0; 4], &[]);
            assert_eq!(reply(&m), Err(DropReason::ReplyIcmpNotError), "{t}");
        }
        // A wrong checksum; a quote of ICMPv6 (no flow); a quote too short; under 8 bytes.
        let mut bad = testpkt::icmpv6_error(VIP6, CLIENT6, 1, 4, [0; 4], &udp6_inner());
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(reply(&bad), Err(DropReason::ReplyIcmpMalformed));
        let ping = testpkt::icmpv6_error(CLIENT6, VIP6, 128, 0, [0; 4], &[]);
        let about_ping = testpkt::icmpv6_error(VIP6, CLIENT6, 1, 4, [0; 4], &ping);
        assert_eq!(reply(&about_ping), Err(DropReason::ReplyIcmpMalformed));
        let short = testpkt::icmpv6_error(VIP6, CLIENT6, 1, 4, [0; 4], &udp6_inner()[..47]);
        assert_eq!(reply(&short), Err(DropReason::ReplyIcmpMalformed));
        let mut tiny = testpkt::udp6((VIP6, 53), (CLIENT6, 40000), 0)[..44].to_vec();
        tiny[4..6].copy_from_slice(&4u16.to_be_bytes());
        tiny[6] = ipv6::NEXT_ICMPV6;
        assert_eq!(reply(&tiny), Err(DropReason::ReplyIcmpMalformed));
    }

    #[test]
    fn ipv6_reply_drops() {
        let answer = testpkt::udp6((VIP6, 53), (CLIENT6, 40000), 10);
        assert_eq!(reply(&answer[..39]), Err(DropReason::ReplyMalformed));
        assert_eq!(reply(&answer[..answer.len() - 1]), Err(DropReason::ReplyMalformed));
        let mut gre = answer.clone();
        gre[6] = ipv4::PROTO_GRE;
        assert_eq!(reply(&gre), Err(DropReason::ReplyNotTcpUdp));
        let mut no_next = answer.clone();
        no_next[6] = ipv6::NEXT_NO_NEXT;
        assert_eq!(reply(&no_next), Err(DropReason::ReplyNotTcpUdp));
        let mut udp_len = answer.clone();
        udp_len[44..46].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(reply(&udp_len), Err(DropReason::ReplyMalformed));
    }

    #[test]
    fn ipv6_encap_round_trip() {
        let v6 = udp6_inner();
        let mut out = Vec::new();
        for key in [Some(7), None] {
            encap_gre(key, Family::V6, &v6, &mut out);
            assert_eq!(out[2..4], GRE_PROTO_IPV6.to_be_bytes());
            let d = decap_v6(APPLIANCE6, ipv4::PROTO_GRE, &out).unwrap();
            assert_eq!((d.encap, d.inner), (Encap::Gre { key }, &v6[..]));
            let p = outer(ipv4::PROTO_GRE, &out);
            let d = decap(&p).unwrap();
            assert_eq!((d.encap, d.inner), (Encap::Gre { key }, &v6[..]));
        }
        assert_eq!((Encap::Ipip.protocol(Family::V4), Encap::Ipip.protocol(Family::V6)), (4, 41));
        assert_eq!(Encap::Gre { key: None }.protocol(Family::V6), 47);
    }

    #[test]
    fn all_is_in_declaration_order() {
        // Counters are indexed by `reason as usize`.
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = decap(&b);
            let _ = reply(&b);
            for protocol in [ipv4::PROTO_IPIP, PROTO_IPV6, ipv4::PROTO_GRE, ipv4::PROTO_UDP] {
                let _ = decap_v6(APPLIANCE6, protocol, &b);
            }
        }

        /// Arbitrary bytes behind a valid IPv6 fixed header (any next header, extension
        /// headers among them), inside each tunnel of each underlay and out of a TUN: the
        /// extension walk, fragment and ICMPv6 paths are reached.
        #[test]
        fn never_panics_behind_a_valid_ipv6_header(
            next in proptest::sample::select(vec![0u8, 6, 17, 43, 44, 47, 58, 59, 60, 4, 41]),
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..160),
            extra in 0usize..3,
            key in proptest::option::of(proptest::num::u32::ANY),
        ) {
            let mut p = vec![0u8; 40];
            testpkt::ip6(VIP6, CLIENT6, next, rest.len()).emit(&mut p);
            p.extend_from_slice(&rest);
            p.extend(std::iter::repeat_n(0u8, extra));
            let _ = reply(&p);
            let gre = testpkt::gre6(key, &p);
            let decapped = [decap_v6(APPLIANCE6, PROTO_IPV6, &p), decap_v6(APPLIANCE6, ipv4::PROTO_GRE, &gre)];
            for d in decapped.into_iter().flatten() {
                proptest::prop_assert!(d.inner.len() == 40 + rest.len());
            }
            let over_v4 = testpkt::ipip(APPLIANCE, HOST, &p);
            if let Ok(d) = decap(&over_v4) {
                proptest::prop_assert_eq!(d.encap, Encap::Ipip);
            }
        }

        /// Arbitrary bytes behind a valid outer header and a GRE or IPIP header, so that the
        /// inner parsing and GRE option paths are reached, not just the outer checks.
        #[test]
        fn never_panics_behind_valid_headers(
            gre_flags in proptest::num::u16::ANY,
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..96),
            ipip in proptest::bool::ANY,
        ) {
            let payload = if ipip {
                rest.clone()
            } else {
                let mut g = gre_flags.to_be_bytes().to_vec();
                g.extend_from_slice(&[0x08, 0x00]);
                g.extend_from_slice(&rest);
                g
            };
            let p = outer(if ipip { ipv4::PROTO_IPIP } else { ipv4::PROTO_GRE }, &payload);
            if let Ok(d) = decap(&p) {
                proptest::prop_assert!(d.inner.len() <= rest.len());
            }
            let _ = reply(&rest);
        }
    }
}
