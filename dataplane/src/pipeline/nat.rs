//! A backend's reply to a `nat` service's client, tunneled back to the appliance by the
//! backend's host: out of the tunnel, matched to its session, given the VIP and service port
//! as its source. SYN-proxied sessions' handshakes are left to the proxy stage.

use super::classify::Tunneled;
use super::context::Ctx;
use super::outcome::{dropped, BackendSegment, FromBackend, ToClient};
use super::segment;
use crate::flow::Addr;
use crate::fragments::{FragKey, Ports};
use crate::io::Frame;
use crate::session::{self, flags, Session, SessionKey, TcpState};
use crate::snapshot::Service;
use crate::stats::DropReason;
use crate::synproxy;
use crate::wire::endpoint::{self, End};
use crate::wire::ethernet;
use crate::wire::icmp_error;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::{tcp, GrePacket, TcpPacket, UdpPacket};
use std::net::{IpAddr, Ipv4Addr};

/// The reply inside the tunnel.
struct Reply {
    /// Where its IPv4 header starts in the frame, and its length.
    at: usize,
    len: usize,
    vpc: Option<u32>,
    backend: Ipv4Addr,
    client: Ipv4Addr,
    bport: u16,
    cport: u16,
    protocol: u8,
    /// TCP flags (`None` for UDP).
    flags: Option<u8>,
    /// An ICMP error the backend sent about the flow (the rest is its quote's flow).
    icmp: bool,
    /// A fragment past the first (no transport header: its ports are its first's).
    later_fragment: bool,
}

/// The session a reply answers: found in service `service` (an index), whose backend
/// `backend` (an index) sent it.
struct Found<'a> {
    service: u16,
    svc: &'a Service,
    backend: u16,
    key: SessionKey,
    hash: u64,
    slot: usize,
    s: Session,
}

/// A tunneled packet to the appliance: the NAT reply in it, toward its client.
pub fn reply<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, t: &Tunneled) -> FromBackend {
    let r = match open(frame.data(), t) {
        Ok(r) => r,
        Err(reason) => return dropped(reason),
    };
    let r = match fragment_ports(cx, r, frame.data()) {
        Ok(r) => r,
        Err(reason) => return dropped(reason),
    };
    let Some(f) = session_of(cx, &r) else {
        return dropped(DropReason::NatNoSession);
    };
    if r.icmp {
        let out = icmp_to_client(frame, &r, &f);
        if matches!(out, FromBackend::Client(_)) {
            cx.events.icmp_errors += 1;
        }
        return out;
    }
    let seg = BackendSegment {
        at: r.at,
        service: f.service,
        backend: f.backend,
        key: f.key,
        slot: f.slot,
        hash: f.hash,
        s: f.s,
    };
    if f.s.state == TcpState::Connecting {
        return FromBackend::ProxyAnswer(seg);
    }
    cx.sessions.touch(f.slot, &f.s, session::tick(cx.now_ns), TcpState::after_reply(f.s.state, r.flags));
    if f.s.flags & flags::PROXIED != 0 {
        if r.later_fragment {
            // Its sequence numbers are in a header it does not carry.
            return dropped(DropReason::SynproxyMalformed);
        }
        let fl = r.flags.unwrap_or(0);
        if fl & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN | tcp::ACK {
            // The backend did not get the ACK that completed its handshake: again.
            return FromBackend::ProxyAck(seg);
        }
        let client_ws = f.s.flags & flags::CLIENT_WSCALE != 0;
        let scales = client_ws.then(|| (synproxy::backend_wscale(f.s.flags), synproxy::WSCALE));
        let b = frame.data_mut();
        if synproxy::backend_to_client(b, r.at, f.s.seq_delta, f.s.ts_delta, scales).is_err() {
            return dropped(DropReason::SynproxyMalformed);
        }
    }
    if r.flags.is_some_and(|f| f & tcp::SYN != 0) {
        // A SYN-ACK: the client's segments to the backend go through the tunnel too.
        if f.svc.mss_clamp.is_some_and(|m| segment::clamp_mss(frame.data_mut(), r.at, m)) {
            cx.events.mss_clamped += 1;
        }
    }
    let rewritten = match frame.data_mut().get_mut(r.at..) {
        Some(ip) if r.later_fragment => endpoint::rewrite_address(ip, End::Src, f.svc.vip),
        Some(ip) => endpoint::rewrite(ip, End::Src, f.svc.vip, f.svc.port),
        None => return dropped(DropReason::NatReplyMalformed),
    };
    if rewritten.is_err() {
        return dropped(DropReason::NatReplyMalformed);
    }
    FromBackend::Client(ToClient { at: r.at, len: r.len, client: r.client.into(), service: f.service })
}

/// A client's packet at `frame[l2..]` that `forward` gave a backend's address and port: the
/// VIP and service port back as its destination (to quote it to the client as it was sent).
pub fn restore<F: Frame>(frame: &mut F, l2: usize, svc: &Service) -> Result<(), DropReason> {
    let ip = frame.data_mut().get_mut(l2..).ok_or(DropReason::L4Truncated)?;
    endpoint::rewrite(ip, End::Dst, svc.vip, svc.port).map_err(|_| DropReason::L4Truncated)
}

/// The tunnel (GRE's key is the VPC; IPIP is the physical network) and the reply in it:
/// backend -> client, TCP or UDP, whole.
fn open(data: &[u8], t: &Tunneled) -> Result<Reply, DropReason> {
    let outer = data.get(t.l2..t.l2 + t.total).ok_or(DropReason::Ipv4Truncated)?;
    let (vpc, tunnel_len) = if t.proto == ipv4::PROTO_GRE {
        let g = GrePacket::new_checked(&outer[t.ihl..]).map_err(|_| DropReason::TunnelMalformed)?;
        if g.protocol() != ethernet::ETHERTYPE_IPV4 || !g.verify_checksum() {
            return Err(DropReason::TunnelMalformed);
        }
        (g.key(), t.ihl + g.header_len())
    } else {
        (None, t.ihl)
    };
    let bad = DropReason::NatReplyMalformed;
    let ip = Ipv4Packet::new_checked(&outer[tunnel_len..]).map_err(|_| bad)?;
    if !ip.verify_checksum() {
        return Err(bad);
    }
    if ip.protocol() == ipv4::PROTO_ICMP && !ip.is_fragment() {
        return icmp_error(&ip, t.l2 + tunnel_len, vpc);
    }
    if ip.frag_offset() != 0 {
        return later_fragment(&ip, t.l2 + tunnel_len, vpc);
    }
    let (bport, cport, flags) = match ip.protocol() {
        ipv4::PROTO_TCP => {
            TcpPacket::new_checked(ip.payload()).map(|t| (t.src_port(), t.dst_port(), Some(t.flags())))
        }
        ipv4::PROTO_UDP if ip.more_frags() => {
            UdpPacket::first_fragment(ip.payload()).map(|u| (u.src_port(), u.dst_port(), None))
        }
        ipv4::PROTO_UDP => UdpPacket::new_checked(ip.payload()).map(|u| (u.src_port(), u.dst_port(), None)),
        _ => return Err(bad),
    }
    .map_err(|_| bad)?;
    Ok(Reply {
        at: t.l2 + tunnel_len,
        len: ip.total_len(),
        vpc,
        backend: ip.src(),
        client: ip.dst(),
        bport,
        cport,
        protocol: ip.protocol(),
        flags,
        icmp: false,
        later_fragment: false,
    })
}

/// A fragment past the first of a reply: its addresses now, its ports from its first fragment
/// ([`fragment_ports`]).
fn later_fragment(ip: &Ipv4Packet<&[u8]>, at: usize, vpc: Option<u32>) -> Result<Reply, DropReason> {
    let protocol = ip.protocol();
    if protocol != ipv4::PROTO_TCP && protocol != ipv4::PROTO_UDP {
        return Err(DropReason::NatReplyMalformed);
    }
    Ok(Reply {
        at,
        len: ip.total_len(),
        vpc,
        backend: ip.src(),
        client: ip.dst(),
        bport: 0,
        cport: 0,
        protocol,
        // Neither opening nor closing: no flags.
        flags: (protocol == ipv4::PROTO_TCP).then_some(0),
        icmp: false,
        later_fragment: true,
    })
}

/// A fragmented reply: its first fragment's ports learned in the worker's fragment table, a
/// later one's found there (`fragment_no_first` if they are not).
fn fragment_ports(cx: &mut Ctx<'_>, mut r: Reply, data: &[u8]) -> Result<Reply, DropReason> {
    let Some(ip) = data.get(r.at..).and_then(|b| Ipv4Packet::new_checked(b).ok()) else {
        return Ok(r);
    };
    if r.icmp || !ip.is_fragment() {
        return Ok(r);
    }
    let key = FragKey {
        src: Addr::v4(r.backend),
        dst: Addr::v4(r.client),
        protocol: r.protocol,
        ident: ip.ident().into(),
    };
    let now = cx.now_ns;
    if r.later_fragment {
        let ports =
            cx.fragments.as_deref().and_then(|t| t.lookup(&key, now)).ok_or(DropReason::FragmentNoFirst)?;
        (r.bport, r.cport) = (ports.src, ports.dst);
    } else if let Some(table) = cx.fragments.as_deref_mut() {
        table.learn(&key, Ports { src: r.bport, dst: r.cport }, now);
    }
    Ok(r)
}

/// An ICMP error from a backend about a packet it got from a client (client -> backend:port,
/// quoted): the reply of that flow it is, at `at` in the frame.
fn icmp_error(ip: &Ipv4Packet<&[u8]>, at: usize, vpc: Option<u32>) -> Result<Reply, DropReason> {
    let e = icmp_error::parse(ip.payload()).map_err(|_| DropReason::IcmpErrorMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::IcmpBadChecksum);
    }
    let q = e.quoted;
    if q.dst != ip.src() {
        return Err(DropReason::IcmpErrorUnknown);
    }
    Ok(Reply {
        at,
        len: ip.total_len(),
        vpc,
        backend: q.dst,
        client: q.src,
        bport: q.dst_port,
        cport: q.src_port,
        protocol: q.protocol,
        flags: None,
        icmp: true,
        later_fragment: false,
    })
}

/// A backend's ICMP error about its flow `f`, to the client in the VIP's form: from the VIP,
/// quoting the client's packet as it was sent (to VIP:port).
fn icmp_to_client<F: Frame>(frame: &mut F, r: &Reply, f: &Found<'_>) -> FromBackend {
    let IpAddr::V4(vip) = f.svc.vip else {
        return dropped(DropReason::IcmpErrorUnknown);
    };
    let bad = DropReason::IcmpErrorMalformed;
    let Some(Ok(mut ip)) = frame.data_mut().get_mut(r.at..).map(Ipv4Packet::new_checked) else {
        return dropped(bad);
    };
    ip.set_src(vip);
    ip.fill_checksum();
    if icmp_error::rewrite_quoted(ip.payload_mut(), End::Dst, f.svc.vip, f.svc.port).is_err() {
        return dropped(bad);
    }
    FromBackend::Client(ToClient { at: r.at, len: r.len, client: r.client.into(), service: f.service })
}

/// The reply's session: one of the services this backend serves, keyed by the client. When
/// two services share the backend, a client may have had a session with each from the same
/// port (two VIPs, one backend: one 4-tuple at the backend, which holds one connection on
/// it), so the newest session is the one the backend answers for; among equally new ones a
/// live state beats a closing one.
fn session_of<'a>(cx: &Ctx<'a>, r: &Reply) -> Option<Found<'a>> {
    let snap = cx.snap;
    let rank = |s: &Session| (s.created, !matches!(s.state, TcpState::Closing | TcpState::Closed));
    let mut found: Option<Found<'a>> = None;
    for &si in snap.nat_services(r.vpc, Addr::v4(r.backend), r.bport, r.protocol) {
        let Some(svc) = snap.services.get(usize::from(si)) else { continue };
        let key = SessionKey::flow(Addr::v4(r.client), r.cport, svc.id);
        let hash = cx.sessions.hash(&key);
        let Some((slot, s)) = cx.sessions.lookup(&key, hash) else { continue };
        let owner = svc.backend_by_id(s.backend);
        let serves = owner
            .and_then(|i| svc.backends.get(usize::from(i)))
            .is_some_and(|b| b.address == IpAddr::V4(r.backend) && b.port == r.bport);
        if serves && found.as_ref().is_none_or(|f| rank(&s) > rank(&f.s)) {
            found = Some(Found { service: si, svc, backend: owner.unwrap_or(0), key, hash, slot, s });
        }
    }
    found
}
