//! An ICMP or ICMPv6 error to a VIP about one of its flows: destination unreachable
//! (fragmentation needed included), packet too big (ICMPv6), time exceeded or parameter
//! problem. It quotes a packet that the service
//! sent to a client (VIP:port -> client), so it belongs to the flow client -> VIP:port and goes
//! to that flow's backend, by its session (or, without one, by Maglev, as every appliance
//! picks): unchanged in `dsr`, so that the backend's own kernel reads it (and lowers its path
//! MTU); in `nat`, translated to the backend's form (its address as destination, its address
//! and port in the quote, a SYN-proxied segment's sequence number back in the backend's
//! space), like the flow's own packets.

use super::context::Ctx;
use super::egress::inner;
use super::outcome::ToBackend;
use crate::flow::{Addr, FlowKey, SELECT_SEED};
use crate::io::Frame;
use crate::session::{flags::PROXIED, SessionKey};
use crate::snapshot::{Forwarding, Service, ServiceKey};
use crate::stats::DropReason;
use crate::wire::endpoint::End;
use crate::wire::icmpv6::update_checksum_for_address;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::{icmp_error, icmpv6_error, Ipv4Packet};
use std::net::IpAddr;

/// The ICMP or ICMPv6 error at `frame[l2..]` (to a VIP), toward its flow's backend.
pub fn to_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, l2: usize) -> Result<ToBackend, DropReason> {
    let (header, q) = read(frame.data(), l2)?;
    let snap = cx.snap;
    let si = snap
        .service(ServiceKey::new(q.src, q.src_port, q.protocol))
        .filter(|_| q.src.to_ip() == header.dst)
        .ok_or(DropReason::IcmpErrorUnknown)?;
    let svc = snap.services.get(usize::from(si)).ok_or(DropReason::IcmpErrorUnknown)?;
    let (bi, seq_delta) = backend_of(cx, svc, &q).ok_or(DropReason::IcmpErrorUnknown)?;
    if svc.forwarding == Forwarding::Nat {
        translate(frame, (l2, header.message), svc, bi, seq_delta)?;
    }
    cx.events.icmp_errors += 1;
    Ok(ToBackend { at: l2, inner: header.inner, service: si, backend: bi })
}

/// What the outer header gives the tunnel, its destination, and where the ICMP message
/// starts in it (past IPv6 extension headers).
struct Header {
    dst: IpAddr,
    inner: crate::encap::Inner,
    message: usize,
}

/// The flow of a quoted packet (the service's reply to a client), of either family.
struct Quote {
    src: Addr,
    dst: Addr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
}

/// The outer header and the quoted flow of the error at `b[l2..]`.
fn read(b: &[u8], l2: usize) -> Result<(Header, Quote), DropReason> {
    let packet = b.get(l2..).unwrap_or_default();
    if packet.first().is_some_and(|v| v >> 4 == 6) {
        return read_v6(packet);
    }
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::Ipv4Truncated)?;
    let e = icmp_error::parse(ip.payload()).map_err(|_| DropReason::IcmpErrorMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::IcmpBadChecksum);
    }
    let inner = inner(ip.total_len(), ip.tos(), ip.ident(), ip.dont_frag());
    let q = e.quoted;
    let (src, dst) = (Addr::v4(q.src), Addr::v4(q.dst));
    let quote = Quote { src, dst, protocol: q.protocol, src_port: q.src_port, dst_port: q.dst_port };
    Ok((Header { dst: IpAddr::V4(ip.dst()), inner, message: ip.header_len() }, quote))
}

/// [`read`] for an ICMPv6 error (the first pass found it past any extension headers).
fn read_v6(packet: &[u8]) -> Result<(Header, Quote), DropReason> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::Ipv6Truncated)?;
    let at = ipv6::upper_layer(packet).map_err(|_| DropReason::Ipv6Malformed)?.offset;
    let m = packet.get(at..ip.total_len()).unwrap_or_default();
    let e = icmpv6_error::parse(m, ip.src(), ip.dst()).map_err(|_| DropReason::IcmpErrorMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::IcmpBadChecksum);
    }
    let inner = inner(ip.total_len(), ip.traffic_class(), 0, true);
    let q = e.quoted;
    let (src, dst) = (Addr(u128::from(q.src)), Addr(u128::from(q.dst)));
    let quote = Quote { src, dst, protocol: q.protocol, src_port: q.src_port, dst_port: q.dst_port };
    Ok((Header { dst: IpAddr::V6(ip.dst()), inner, message: at }, quote))
}

/// The backend (an index) of the flow that quoted packet `q` was a reply of, and a SYN-proxied
/// session's sequence offset (0 otherwise).
fn backend_of(cx: &Ctx<'_>, svc: &Service, q: &Quote) -> Option<(u16, u32)> {
    let key = SessionKey::flow(q.dst, q.dst_port, svc.id);
    if let Some((_, s)) = cx.sessions.lookup(&key, cx.sessions.hash(&key)) {
        let delta = if s.flags & PROXIED != 0 { s.seq_delta } else { 0 };
        return Some((svc.backend_by_id(s.backend)?, delta));
    }
    let flow =
        FlowKey { src: q.dst, dst: q.src, src_port: q.dst_port, dst_port: q.src_port, protocol: q.protocol };
    Some((svc.maglev_choice(flow.hash(SELECT_SEED))?, 0))
}

/// `nat`: the error (its IP header at `frame[l2..]`, its message at `frame[l2 + message..]`)
/// to backend `bi`: its address as the destination, and in the quote, its address and port as
/// the source and the sequence number in its own space.
fn translate<F: Frame>(
    frame: &mut F,
    (l2, message): (usize, usize),
    svc: &Service,
    bi: u16,
    seq_delta: u32,
) -> Result<(), DropReason> {
    let backend = svc.backends.get(usize::from(bi)).ok_or(DropReason::NoBackend)?;
    let bad = DropReason::IcmpErrorMalformed;
    let packet = frame.data_mut().get_mut(l2..).ok_or(bad)?;
    let m = match backend.address {
        IpAddr::V4(address) => {
            let mut ip = Ipv4Packet::new_checked(&mut packet[..]).map_err(|_| bad)?;
            let end = ip.total_len();
            ip.set_dst(address);
            ip.fill_checksum();
            let m = packet.get_mut(message..end).ok_or(bad)?;
            icmp_error::rewrite_quoted(m, End::Src, backend.address, backend.port).map_err(|_| bad)?;
            m
        }
        IpAddr::V6(address) => {
            let mut ip = Ipv6Packet::new_checked(&mut packet[..]).map_err(|_| bad)?;
            let (old, end) = (ip.dst(), ip.total_len());
            ip.set_dst(address);
            let m = packet.get_mut(message..end).ok_or(bad)?;
            update_checksum_for_address(m, old, address);
            icmpv6_error::rewrite_quoted(m, End::Src, backend.address, backend.port).map_err(|_| bad)?;
            m
        }
    };
    if seq_delta != 0 {
        let shifted = match backend.address {
            IpAddr::V4(_) => icmp_error::shift_quoted_seq(m, seq_delta),
            IpAddr::V6(_) => icmpv6_error::shift_quoted_seq(m, seq_delta),
        };
        shifted.map_err(|_| bad)?;
    }
    Ok(())
}
