//! A backend's reply to a `nat` service's client, tunneled back to the appliance by the
//! backend's host: out of the tunnel, matched to its session, given the VIP and service port
//! as its source. SYN-proxied sessions' handshakes are left to the proxy stage.
//!
//! Either family inside either underlay (IPIP: protocol 4 for IPv4, 41 for IPv6; GRE by its
//! protocol type): an IPv6 reply (NAT66) is read by `nat6`, this stage's IPv6 half.

use super::classify::Tunneled;
use super::context::Ctx;
use super::nat6::{self, Reply};
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
use crate::wire::ipv6;
use crate::wire::{tcp, GrePacket, TcpPacket, UdpPacket};
use std::net::{IpAddr, Ipv4Addr};

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
    let r = match fragment_ports(cx, r) {
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
    FromBackend::Client(ToClient { at: r.at, len: r.len, client: r.client, service: f.service })
}

/// A client's packet at `frame[l2..]` that `forward` gave a backend's address and port: the
/// VIP and service port back as its destination (to quote it to the client as it was sent).
pub fn restore<F: Frame>(frame: &mut F, l2: usize, svc: &Service) -> Result<(), DropReason> {
    let ip = frame.data_mut().get_mut(l2..).ok_or(DropReason::L4Truncated)?;
    endpoint::rewrite(ip, End::Dst, svc.vip, svc.port).map_err(|_| DropReason::L4Truncated)
}

/// The tunnel (GRE's key is the VPC; IPIP is the physical network) and the reply in it:
/// backend -> client, TCP or UDP (or an ICMP error about such a flow), of either family.
fn open(data: &[u8], t: &Tunneled) -> Result<Reply, DropReason> {
    let outer = data.get(t.l2..t.l2 + t.total).ok_or(DropReason::Ipv4Truncated)?;
    let (vpc, tunnel_len, v6) = match t.proto {
        ipv4::PROTO_GRE => {
            let gre = outer.get(t.header_len..).unwrap_or_default();
            let g = GrePacket::new_checked(gre).map_err(|_| DropReason::TunnelMalformed)?;
            let v6 = match g.protocol() {
                ethernet::ETHERTYPE_IPV4 => false,
                ethernet::ETHERTYPE_IPV6 => true,
                _ => return Err(DropReason::TunnelMalformed),
            };
            if !g.verify_checksum() {
                return Err(DropReason::TunnelMalformed);
            }
            (g.key(), t.header_len + g.header_len(), v6)
        }
        p => (None, t.header_len, p == ipv6::NEXT_IPV6),
    };
    let (at, inner) = (t.l2 + tunnel_len, outer.get(tunnel_len..).unwrap_or_default());
    if v6 {
        return nat6::open(inner, at, vpc);
    }
    open_v4(inner, at, vpc)
}

/// An IPv4 reply at `b` (`frame[at..]`), from a tunnel of VPC `vpc`.
fn open_v4(b: &[u8], at: usize, vpc: Option<u32>) -> Result<Reply, DropReason> {
    let bad = DropReason::NatReplyMalformed;
    let ip = Ipv4Packet::new_checked(b).map_err(|_| bad)?;
    if !ip.verify_checksum() {
        return Err(bad);
    }
    if ip.protocol() == ipv4::PROTO_ICMP && !ip.is_fragment() {
        return icmp_error(&ip, at, vpc);
    }
    if ip.frag_offset() != 0 {
        return later_fragment(&ip, at, vpc);
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
        at,
        len: ip.total_len(),
        vpc,
        backend: ip.src().into(),
        client: ip.dst().into(),
        bport,
        cport,
        protocol: ip.protocol(),
        flags,
        icmp: false,
        later_fragment: false,
        fragment: ip.more_frags().then(|| ip.ident().into()),
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
        backend: ip.src().into(),
        client: ip.dst().into(),
        bport: 0,
        cport: 0,
        protocol,
        // Neither opening nor closing: no flags.
        flags: (protocol == ipv4::PROTO_TCP).then_some(0),
        icmp: false,
        later_fragment: true,
        fragment: Some(ip.ident().into()),
    })
}

/// A fragmented reply: its first fragment's ports learned in the worker's fragment table, a
/// later one's found there (`fragment_no_first` if they are not).
fn fragment_ports(cx: &mut Ctx<'_>, mut r: Reply) -> Result<Reply, DropReason> {
    let Some(ident) = r.fragment.filter(|_| !r.icmp) else {
        return Ok(r);
    };
    let key = FragKey { src: Addr::from(r.backend), dst: Addr::from(r.client), protocol: r.protocol, ident };
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
        backend: q.dst.into(),
        client: q.src.into(),
        bport: q.dst_port,
        cport: q.src_port,
        protocol: q.protocol,
        flags: None,
        icmp: true,
        later_fragment: false,
        fragment: None,
    })
}

/// A backend's ICMP error about its flow `f`, to the client in the VIP's form: from the VIP,
/// quoting the client's packet as it was sent (to VIP:port).
fn icmp_to_client<F: Frame>(frame: &mut F, r: &Reply, f: &Found<'_>) -> FromBackend {
    let Some(b) = frame.data_mut().get_mut(r.at..) else {
        return dropped(DropReason::IcmpErrorMalformed);
    };
    let done = match f.svc.vip {
        IpAddr::V4(vip) => icmp_to_client_v4(b, vip, f.svc.port),
        IpAddr::V6(vip) => nat6::icmp_to_client(b, vip, f.svc.port),
    };
    match done {
        Ok(()) => {
            FromBackend::Client(ToClient { at: r.at, len: r.len, client: r.client, service: f.service })
        }
        Err(reason) => dropped(reason),
    }
}

/// [`icmp_to_client`] for the IPv4 ICMP error at the start of `b`.
fn icmp_to_client_v4(b: &mut [u8], vip: Ipv4Addr, port: u16) -> Result<(), DropReason> {
    let bad = DropReason::IcmpErrorMalformed;
    let mut ip = Ipv4Packet::new_checked(b).map_err(|_| bad)?;
    if icmp_error::rewrite_quoted(ip.payload_mut(), End::Dst, vip.into(), port).is_err() {
        return Err(bad);
    }
    ip.set_src(vip);
    ip.fill_checksum();
    Ok(())
}

/// The reply's session: one of the services this backend serves, keyed by the client. When
/// two services share the backend, a client may have had a session with each from the same
/// port (two VIPs, one backend: one 4-tuple at the backend, which holds one connection on
/// it), so the newest session is the one the backend answers for; among equally new ones a
/// live state beats a closing one.
fn session_of<'a>(cx: &Ctx<'a>, r: &Reply) -> Option<Found<'a>> {
    let snap = cx.snap;
    let rank = |s: &Session| (s.created, !s.state.is_closing());
    let mut found: Option<Found<'a>> = None;
    for &si in snap.nat_services(r.vpc, Addr::from(r.backend), r.bport, r.protocol) {
        let Some(svc) = snap.services.get(usize::from(si)) else { continue };
        let key = SessionKey::flow(Addr::from(r.client), r.cport, svc.id);
        let hash = cx.sessions.hash(&key);
        let Some((slot, s)) = cx.sessions.lookup(&key, hash) else { continue };
        let owner = svc.backend_by_id(s.backend);
        let serves = owner
            .and_then(|i| svc.backends.get(usize::from(i)))
            .is_some_and(|b| b.address == r.backend && b.port == r.bport);
        if serves && found.as_ref().is_none_or(|f| rank(&s) > rank(&f.s)) {
            found = Some(Found { service: si, svc, backend: owner.unwrap_or(0), key, hash, slot, s });
        }
    }
    found
}
