//! The per-packet decision: parse, classify, rewrite in place, return a verdict.
//!
//! Pure: takes a frame, the snapshot and the time; no I/O, no allocation, no locks, no logging.
//! Every malformed input ends in `Verdict::Drop(reason)`; nothing here panics on any bytes.

use crate::flow::{Addr, FlowKey, SELECT_SEED};
use crate::io::Frame;
use crate::snapshot::{Port, ServiceKey, Snapshot, Tunnel};
use crate::stats::DropReason;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::{checksum, GreRepr, TcpPacket, UdpPacket, WireError, BROADCAST_MAC};
use arrayvec::ArrayVec;
use std::net::Ipv4Addr;

/// TTL of packets the appliance originates (tunnel outer headers, echo replies).
pub const DEFAULT_TTL: u8 = 64;

/// What to do with a packet after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ARP reply, built in place; send it out of `port`.
    ArpReply {
        port: u16,
    },
    /// An ICMP echo reply, built in place; send it out of `port`.
    EchoReply {
        port: u16,
    },
    /// Encapsulated toward a backend of a service; send it out of `port`.
    Tunnel {
        port: u16,
        service: u16,
        backend: u16,
    },
    /// Used up with nothing to send (an ARP reply or announcement the appliance learned from).
    Consumed,
    Drop(DropReason),
}

/// Next hops whose MAC a worker should ask for after the burst (ARP requests).
pub type Resolve = ArrayVec<u16, 16>;

/// Per-call context: the snapshot loaded for this burst, the time, and side requests.
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub now_ns: u64,
    pub resolve: &'a mut Resolve,
    /// Number of next-hop MACs learned during this call.
    pub learned: u32,
}

use Verdict::Drop;

/// A packet bound for a service, as the first pass left it: enough to finish it without
/// parsing again.
#[derive(Debug, Clone, Copy)]
pub struct ToService {
    pub flow: FlowKey,
    /// The flow's backend-selection hash.
    pub hash: u64,
    pub service: u16,
    l2: u8,
    inner_len: u16,
    tos: u8,
    ident: u16,
    dont_frag: bool,
}

/// The outcome of the first pass over a packet.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Decided (and rewritten, if it is sent).
    Done(Verdict),
    /// For a service: the backend choice and encapsulation are left to [`finish`], so a worker
    /// can classify a whole burst, prefetch every packet's table entries, then finish them.
    Service(ToService),
}

/// Decides the fate of one frame received on `rx_port`, rewriting it in place when it is sent:
/// [`classify`] then [`finish`].
pub fn process<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F) -> Verdict {
    match classify(cx, rx_port, frame) {
        Stage::Done(v) => v,
        Stage::Service(p) => finish(cx, frame, &p),
    }
}

/// The first pass: parse and classify; answer ARP and echo; find the service and the flow's
/// hash for traffic to a service.
pub fn classify<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F) -> Stage {
    use Stage::Done;
    if !frame.is_contiguous() {
        return Done(Drop(DropReason::MultiSegment));
    }
    let Some(port) = cx.snap.ports.get(usize::from(rx_port)) else {
        return Done(Drop(DropReason::NotForUs));
    };
    let (l2_len, ethertype) = {
        let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
            return Done(Drop(DropReason::EthTruncated));
        };
        let dst = eth.dst();
        // Unicast must be ours; broadcast and multicast go on (ARP, then not_for_us).
        if dst != port.mac && dst[0] & 1 == 0 {
            return Done(Drop(DropReason::ForeignMac));
        }
        if eth.vlan() != port.vlan {
            return Done(Drop(DropReason::VlanMismatch));
        }
        (eth.header_len(), eth.ethertype())
    };
    match ethertype {
        ethernet::ETHERTYPE_ARP => Done(handle_arp(cx, rx_port, port, frame, l2_len)),
        ethernet::ETHERTYPE_IPV4 => handle_ipv4(cx, rx_port, port, frame, l2_len),
        _ => Done(Drop(DropReason::EthertypeUnsupported)),
    }
}

fn handle_arp<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Verdict {
    let (op, sha, spa, tpa) = match ArpPacket::new_checked(&frame.data()[l2..]) {
        Ok(a) => (a.operation(), a.sender_mac(), a.sender_ip(), a.target_ip()),
        Err(WireError::Truncated) => return Drop(DropReason::ArpTruncated),
        Err(_) => return Drop(DropReason::ArpUnsupported),
    };
    let for_us = tpa == port.address || cx.snap.is_vip(tpa);
    let gratuitous = spa == tpa;
    // Learn only next hops we already send to, only from plausible unicast senders, and only
    // from a reply, a request aimed at us, or an announcement: bytes from the wire never
    // create entries.
    let mut learned = false;
    if sha[0] & 1 == 0 && sha != [0; 6] && (op == arp::OP_REPLY || for_us || gratuitous) {
        if let Some(nh) = cx.snap.nexthop(rx_port, spa) {
            learned = true;
            if nh.learn(sha, cx.now_ns) {
                cx.learned += 1;
            }
        }
    }
    if op == arp::OP_REQUEST && for_us && !gratuitous {
        let b = frame.data_mut();
        b[0..6].copy_from_slice(&sha);
        b[6..12].copy_from_slice(&port.mac);
        arp::emit(&mut b[l2..], arp::OP_REPLY, port.mac, tpa, sha, spa);
        return Verdict::ArpReply { port: rx_port };
    }
    if learned {
        Verdict::Consumed
    } else {
        Drop(DropReason::ArpNotForUs)
    }
}

fn handle_ipv4<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Stage {
    use Stage::Done;
    let ip = match Ipv4Packet::new_checked(&frame.data()[l2..]) {
        Ok(ip) => ip,
        Err(WireError::Truncated) => return Done(Drop(DropReason::Ipv4Truncated)),
        Err(_) => return Done(Drop(DropReason::Ipv4Malformed)),
    };
    if !ip.verify_checksum() {
        return Done(Drop(DropReason::Ipv4BadChecksum));
    }
    let (dst, proto) = (ip.dst(), ip.protocol());
    let l4 = proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP;

    // Fast path: unfragmented TCP/UDP to a service, found with one lookup.
    let mut l4_error = None;
    if l4 && !ip.is_fragment() {
        let ports = if proto == ipv4::PROTO_TCP {
            TcpPacket::new_checked(ip.payload()).map(|t| (t.src_port(), t.dst_port()))
        } else {
            UdpPacket::new_checked(ip.payload()).map(|u| (u.src_port(), u.dst_port()))
        };
        match ports {
            Ok((src_port, dst_port)) => {
                if let Some(service) = cx.snap.service(ServiceKey::new(Addr::v4(dst), dst_port, proto)) {
                    let flow = FlowKey {
                        src: Addr::v4(ip.src()),
                        dst: Addr::v4(dst),
                        src_port,
                        dst_port,
                        protocol: proto,
                    };
                    return Stage::Service(ToService {
                        flow,
                        hash: flow.hash(SELECT_SEED),
                        service,
                        l2: l2 as u8,
                        inner_len: ip.total_len() as u16,
                        tos: ip.tos(),
                        ident: ip.ident(),
                        dont_frag: ip.dont_frag(),
                    });
                }
            }
            Err(e) => l4_error = Some(e),
        }
    }

    // Everything else.
    let vip = cx.snap.is_vip(dst);
    if !vip && !cx.snap.is_local(dst) {
        return Done(Drop(DropReason::NotForUs));
    }
    if ip.is_fragment() {
        return Done(Drop(DropReason::Ipv4Fragment));
    }
    Done(match proto {
        ipv4::PROTO_ICMP => echo_reply(rx_port, port, frame, l2),
        _ if l4 && vip => match l4_error {
            Some(WireError::Truncated) => Drop(DropReason::L4Truncated),
            Some(_) => Drop(DropReason::L4Malformed),
            None => Drop(DropReason::NoService),
        },
        _ if l4 => Drop(DropReason::LocalUnsupported),
        _ => Drop(DropReason::ProtocolUnsupported),
    })
}

fn echo_reply<F: Frame>(rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Verdict {
    let b = frame.data_mut();
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut b[l2..]) else {
        return Drop(DropReason::Ipv4Malformed);
    };
    {
        let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) else {
            return Drop(DropReason::IcmpTruncated);
        };
        if icmp.msg_type() != icmp::TYPE_ECHO_REQUEST || icmp.code() != 0 {
            return Drop(DropReason::IcmpUnsupported);
        }
        if !icmp.verify_checksum() {
            return Drop(DropReason::IcmpBadChecksum);
        }
    }
    let (src, dst, ttl) = (ip.src(), ip.dst(), ip.ttl());
    // Swapping addresses leaves the header sum unchanged; only the TTL word changes.
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(DEFAULT_TTL);
    let word = |t: u8| u16::from_be_bytes([t, ipv4::PROTO_ICMP]);
    let c = checksum::update16(ip.checksum(), word(ttl), word(DEFAULT_TTL));
    ip.set_checksum(c);
    if let Ok(mut icmp) = IcmpPacket::new_checked(ip.payload_mut()) {
        icmp.make_echo_reply();
    }
    let (dst_mac, src_mac) = (b[6..12].try_into().unwrap_or(BROADCAST_MAC), port.mac);
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&src_mac);
    Verdict::EchoReply { port: rx_port }
}

/// The second pass for a packet to a service: choose the backend, encapsulate.
pub fn finish<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService) -> Verdict {
    let snap = cx.snap;
    let (l2, inner_len) = (usize::from(p.l2), usize::from(p.inner_len));
    let Some(svc) = snap.services.get(usize::from(p.service)) else {
        return Drop(DropReason::NoService);
    };
    let Some(bi) = svc.select(&p.flow, p.hash) else {
        return Drop(DropReason::NoBackend);
    };
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return Drop(DropReason::NoBackend);
    };
    let Some(nh) = snap.nexthops.get(usize::from(backend.nexthop)) else {
        return Drop(DropReason::NeighborUnresolved);
    };
    let mac = nh.mac();
    if nh.claim_request(cx.now_ns) {
        // Unknown, or known but due for a refresh (then the old MAC is still used).
        let _ = cx.resolve.try_push(backend.nexthop);
    }
    let Some(mac) = mac else {
        return Drop(DropReason::NeighborUnresolved);
    };
    let Some(out) = snap.ports.get(usize::from(nh.port)) else {
        return Drop(DropReason::NeighborUnresolved);
    };

    let gre = match svc.tunnel {
        Tunnel::Ipip => None,
        Tunnel::Gre { key } => Some(GreRepr { protocol: ethernet::ETHERTYPE_IPV4, key }),
    };
    let tunnel_len = ipv4::HEADER_LEN + gre.map_or(0, |g| g.header_len());
    if inner_len + tunnel_len > usize::from(out.mtu) {
        return Drop(DropReason::MtuExceeded);
    }
    let eth = EthernetRepr { dst: mac, src: out.mac, vlan: out.vlan, ethertype: ethernet::ETHERTYPE_IPV4 };
    let l2_out = eth.header_len();

    // Drop link padding after the inner packet, then make room in front of it.
    let padding = frame.data().len() - (l2 + inner_len);
    if !frame.trim(padding) {
        return Drop(DropReason::Ipv4Truncated);
    }
    let grow = l2_out + tunnel_len - l2; // >= 14 + 20 - 18 > 0
    if !frame.prepend(grow) {
        // Put the padding back? It carries no data; the frame is dropped anyway.
        return Drop(DropReason::NoHeadroom);
    }
    let b = frame.data_mut();
    eth.emit(&mut b[..l2_out]);
    let outer = Ipv4Repr {
        src: backend.tunnel_source,
        dst: backend.address,
        protocol: if gre.is_some() { ipv4::PROTO_GRE } else { ipv4::PROTO_IPIP },
        payload_len: tunnel_len - ipv4::HEADER_LEN + inner_len,
        tos: p.tos,
        ident: p.ident,
        dont_frag: p.dont_frag,
        ttl: DEFAULT_TTL,
    };
    outer.emit(&mut b[l2_out..l2_out + ipv4::HEADER_LEN]);
    if let Some(g) = gre {
        g.emit(&mut b[l2_out + ipv4::HEADER_LEN..l2_out + tunnel_len]);
    }
    Verdict::Tunnel { port: nh.port, service: p.service, backend: bi }
}

/// Writes an ARP request for next hop `nh` into an empty frame. False if the frame has no room
/// or the next hop does not exist.
pub fn build_arp_request<F: Frame>(snap: &Snapshot, nh: u16, frame: &mut F) -> Option<u16> {
    let nh = snap.nexthops.get(usize::from(nh))?;
    let port = snap.ports.get(usize::from(nh.port))?;
    let eth = EthernetRepr {
        dst: BROADCAST_MAC,
        src: port.mac,
        vlan: port.vlan,
        ethertype: ethernet::ETHERTYPE_ARP,
    };
    let len = eth.header_len() + arp::PACKET_LEN;
    // Pad to the 60-byte Ethernet minimum ourselves (virtual NICs do not).
    let want = len.max(60);
    let have = frame.data().len();
    if have < want && !frame.append(want - have) {
        return None;
    }
    let b = frame.data_mut();
    eth.emit(b);
    arp::emit(&mut b[eth.header_len()..], arp::OP_REQUEST, port.mac, port.address, [0; 6], nh.ip);
    Some(nh.port)
}

/// The address a next hop is asked for, for tests and logs.
pub fn nexthop_ip(snap: &Snapshot, nh: u16) -> Option<Ipv4Addr> {
    snap.nexthops.get(usize::from(nh)).map(|n| n.ip)
}
