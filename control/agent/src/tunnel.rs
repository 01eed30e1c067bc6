//! The packet logic, pure: decapsulating what appliances tunnel to this host, choosing the TUN
//! it goes to, reading what the kernel sends back out of a TUN (the 5-tuple its flow is found
//! by: its own, or for an ICMP error the one of the packet it quotes; for a fragment past the
//! first, its datagram), and building the GRE payload that carries it back.
//!
//! Every function takes bytes and returns a result or a [`DropReason`]; none does I/O and
//! none panics on any input (the property test at the bottom feeds them arbitrary bytes).

use sluice_dataplane::flow::Addr;
use sluice_dataplane::fragments::{FragKey, Ports};
use sluice_dataplane::wire::{icmp_error, ipv4, GrePacket, GreRepr, IcmpPacket, Ipv4Packet, TcpPacket};
use sluice_dataplane::wire::{UdpPacket, WireError};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// GRE protocol type of an IPv4 payload.
pub const GRE_PROTO_IPV4: u16 = 0x0800;
/// The GRE version bits (RFC 2784: must be 0).
const GRE_VERSION_MASK: u16 = 0x0007;

/// How a packet came in, and so how its replies go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IP in IP (protocol 4).
    Ipip,
    /// GRE (protocol 47), with the key if it had one.
    Gre { key: Option<u32> },
}

impl Encap {
    /// The outer IP protocol.
    pub fn protocol(self) -> u8 {
        match self {
            Encap::Ipip => ipv4::PROTO_IPIP,
            Encap::Gre { .. } => ipv4::PROTO_GRE,
        }
    }
}

/// A TCP or UDP flow's addresses, ports and protocol, as seen in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
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
    /// Outer protocol neither IPIP nor GRE.
    OuterProtocol,
    /// GRE header (with its optional words) longer than the packet.
    GreTruncated,
    /// GRE version other than 0.
    GreVersion,
    /// GRE routing or other RFC 1701 bits set.
    GreFlags,
    /// GRE protocol type other than IPv4 (0x0800).
    GreProtocol,
    /// GRE checksum present and wrong.
    GreChecksum,
    /// Inner packet shorter than its IPv4 header, its total length or its TCP/UDP header.
    InnerTruncated,
    /// Inner IPv4 header or TCP/UDP header with impossible lengths.
    InnerMalformed,
    /// Inner packet is not IPv4.
    InnerNotIpv4,
    /// Tunneled packet from a sender outside `--appliance`: not an appliance, maybe a spoofer.
    NotAppliance,
    /// GRE key for which no VPC TUN is configured.
    UnknownVpc,
    /// IPIP or keyless GRE, but no physical TUN configured.
    NoPhysicalTun,
    /// Writing the inner packet into its TUN failed.
    TunWriteFailed,
    /// Packet out of a TUN that is not IPv4 (IPv6 router solicitations and the like).
    ReplyNotIpv4,
    /// Packet out of a TUN with a bad IPv4, TCP or UDP header.
    ReplyMalformed,
    /// Packet out of a TUN that is neither TCP, UDP nor ICMP, or a fragment of neither TCP nor
    /// UDP (only their fragments are followed: an ICMP error fits in 576 bytes).
    ReplyNotTcpUdp,
    /// ICMP out of a TUN that is not an error (types 3, 11, 12): echo replies and the like.
    ReplyIcmpNotError,
    /// ICMP error out of a TUN that cannot be followed: too short, a wrong checksum, or a quote
    /// that is not the start of a TCP or UDP packet.
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
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 26] = [
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
        DropReason::ReplyNotIpv4,
        DropReason::ReplyMalformed,
        DropReason::ReplyNotTcpUdp,
        DropReason::ReplyIcmpNotError,
        DropReason::ReplyIcmpMalformed,
        DropReason::NoFlow,
        DropReason::IcmpNoFlow,
        DropReason::ReplyFragmentOrphan,
        DropReason::SendFailed,
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
            DropReason::ReplyNotIpv4 => "reply_not_ipv4",
            DropReason::ReplyMalformed => "reply_malformed",
            DropReason::ReplyNotTcpUdp => "reply_not_tcp_udp",
            DropReason::ReplyIcmpNotError => "reply_icmp_not_error",
            DropReason::ReplyIcmpMalformed => "reply_icmp_malformed",
            DropReason::NoFlow => "no_flow",
            DropReason::IcmpNoFlow => "icmp_no_flow",
            DropReason::ReplyFragmentOrphan => "reply_fragment_orphan",
            DropReason::SendFailed => "send_failed",
        }
    }
}

/// A decapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decap<'a> {
    /// Outer source: the appliance that tunneled it.
    pub appliance: Ipv4Addr,
    pub encap: Encap,
    /// The inner IPv4 packet, exactly its total length.
    pub inner: &'a [u8],
    /// The inner TCP/UDP 5-tuple; `None` for other protocols and for fragments, which are
    /// delivered but not remembered.
    pub tuple: Option<FiveTuple>,
}

/// Strips the tunnel from a whole IPv4 packet as a raw socket reads it (outer header
/// included): IPIP, or GRE version 0 carrying IPv4 with optional checksum (verified), key and
/// sequence number. The inner packet may be of any protocol and may be a fragment (the
/// appliance cuts big inner packets before encapsulating them; ICMP errors it translated for a
/// flow, such as fragmentation needed): all are delivered, only whole TCP/UDP ones with a
/// 5-tuple to remember.
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
    let appliance = outer.src();
    let payload = &packet[outer.header_len()..outer.total_len()];
    let (encap, inner) = match outer.protocol() {
        ipv4::PROTO_IPIP => (Encap::Ipip, payload),
        ipv4::PROTO_GRE => {
            let gre = gre(payload)?;
            (Encap::Gre { key: gre.key() }, &payload[gre.header_len()..])
        }
        _ => return Err(DropReason::OuterProtocol),
    };
    let (inner, tuple) = inner_packet(inner)?;
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
    if gre.protocol() != GRE_PROTO_IPV4 {
        return Err(DropReason::GreProtocol);
    }
    if !gre.verify_checksum() {
        return Err(DropReason::GreChecksum);
    }
    Ok(gre)
}

/// Checks the inner IPv4 packet, trims what follows its total length, reads its 5-tuple.
fn inner_packet(b: &[u8]) -> Result<(&[u8], Option<FiveTuple>), DropReason> {
    match b.first() {
        None => return Err(DropReason::InnerTruncated),
        Some(v) if v >> 4 != 4 => return Err(DropReason::InnerNotIpv4),
        Some(_) => {}
    }
    let ip = Ipv4Packet::new_checked(b).map_err(|e| match e {
        WireError::Truncated => DropReason::InnerTruncated,
        _ => DropReason::InnerMalformed,
    })?;
    let tuple = five_tuple(&ip).map_err(|e| match e {
        WireError::Truncated => DropReason::InnerTruncated,
        _ => DropReason::InnerMalformed,
    })?;
    Ok((&b[..ip.total_len()], tuple))
}

/// The TCP/UDP 5-tuple of an unfragmented packet or a first fragment; `None` for later
/// fragments and other protocols.
fn five_tuple(ip: &Ipv4Packet<&[u8]>) -> Result<Option<FiveTuple>, WireError> {
    if ip.frag_offset() != 0 {
        return Ok(None);
    }
    let (src_port, dst_port) = match ip.protocol() {
        ipv4::PROTO_TCP => {
            let t = TcpPacket::new_checked(ip.payload())?;
            (t.src_port(), t.dst_port())
        }
        // A first fragment's length field counts the whole datagram, not what it holds.
        ipv4::PROTO_UDP if ip.more_frags() => {
            let u = UdpPacket::first_fragment(ip.payload())?;
            (u.src_port(), u.dst_port())
        }
        ipv4::PROTO_UDP => {
            let u = UdpPacket::new_checked(ip.payload())?;
            (u.src_port(), u.dst_port())
        }
        _ => return Ok(None),
    };
    Ok(Some(FiveTuple { src: ip.src(), src_port, dst: ip.dst(), dst_port, protocol: ip.protocol() }))
}

/// A datagram whose fragments come out of a TUN: what its fragments share (RFC 791 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

impl Datagram {
    fn of(ip: &Ipv4Packet<&[u8]>) -> Datagram {
        Datagram { src: ip.src(), dst: ip.dst(), protocol: ip.protocol(), ident: ip.ident() }
    }

    /// Its key in a fragment table.
    pub fn key(&self) -> FragKey {
        FragKey {
            src: Addr::v4(self.src),
            dst: Addr::v4(self.dst),
            protocol: self.protocol,
            ident: u32::from(self.ident),
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
    /// An ICMP error (types 3, 11, 12) about a packet the backend received: the 5-tuple of that
    /// quoted packet reversed (it went client -> backend, the flow's forward direction).
    IcmpError(FiveTuple),
}

/// A packet the kernel sent out of a TUN, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The packet, trimmed to its total length.
    pub packet: &'a [u8],
    pub kind: ReplyKind,
}

/// Reads a packet the kernel sent out of a TUN: TCP or UDP (whole or a fragment) or an ICMP
/// error; anything else is dropped.
pub fn reply(packet: &[u8]) -> Result<Reply<'_>, DropReason> {
    if packet.first().is_some_and(|v| v >> 4 != 4) {
        return Err(DropReason::ReplyNotIpv4);
    }
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::ReplyMalformed)?;
    let packet = &packet[..ip.total_len()];
    let kind = match ip.protocol() {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => transport(&ip, packet)?,
        ipv4::PROTO_ICMP if !ip.is_fragment() => ReplyKind::IcmpError(quoted_flow(ip.payload())?),
        _ => return Err(DropReason::ReplyNotTcpUdp),
    };
    Ok(Reply { packet, kind })
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
    let t = FiveTuple {
        src: q.src,
        src_port: q.src_port,
        dst: q.dst,
        dst_port: q.dst_port,
        protocol: q.protocol,
    };
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
    let forward = FiveTuple {
        src: q.src,
        src_port: q.src_port,
        dst: q.dst,
        dst_port: q.dst_port,
        protocol: q.protocol,
    };
    Ok(forward.reversed())
}

/// Writes into `out` (cleared first) the GRE payload that carries `inner` back: the GRE header
/// (no checksum, no sequence number, the key if any, protocol IPv4) then `inner`. The raw
/// socket adds the outer IPv4 header.
pub fn encap_gre(key: Option<u32>, inner: &[u8], out: &mut Vec<u8>) {
    let gre = GreRepr { protocol: GRE_PROTO_IPV4, key };
    out.clear();
    out.resize(gre.header_len(), 0);
    gre.emit(out);
    out.extend_from_slice(inner);
}

/// Which TUN each way of arriving goes to: the physical TUN for IPIP and keyless GRE, the
/// VPC's TUN for GRE with a key. Values are indexes into the agent's TUN list.
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

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);

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
        encap_gre(key, inner, &mut g);
        outer(ipv4::PROTO_GRE, &g)
    }

    fn udp_tuple() -> FiveTuple {
        FiveTuple { src: CLIENT, src_port: 40000, dst: VIP, dst_port: 53, protocol: ipv4::PROTO_UDP }
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
            Decap { appliance: APPLIANCE, encap: Encap::Ipip, inner: &inner, tuple: Some(udp_tuple()) }
        );
    }

    #[test]
    fn decap_gre_keyed_and_keyless() {
        let inner = tcp_inner();
        for key in [Some(100), None] {
            let p = gre_packet(key, &inner);
            let d = decap(&p).unwrap();
            assert_eq!(d.encap, Encap::Gre { key });
            assert_eq!(d.appliance, APPLIANCE);
            assert_eq!(d.inner, &inner[..]);
            let t = d.tuple.unwrap();
            assert_eq!((t.src, t.src_port, t.dst, t.dst_port, t.protocol), (CLIENT, 40001, VIP, 80, 6));
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
            encap_gre(Some(5), &inner, &mut g);
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

        let mut ipv6 = keyed.clone();
        ipv6[2..4].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(decap(&outer(ipv4::PROTO_GRE, &ipv6)), Err(DropReason::GreProtocol));
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
            encap_gre(key, &inner, &mut out);
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
        let d = Datagram { src: VIP, dst: CLIENT, protocol: ipv4::PROTO_UDP, ident: 0x4242 };
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
        let want =
            FiveTuple { src: VIP, src_port: 80, dst: CLIENT, dst_port: 40001, protocol: ipv4::PROTO_TCP };
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
        assert_eq!(reply(&v6), Err(DropReason::ReplyNotIpv4));
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
