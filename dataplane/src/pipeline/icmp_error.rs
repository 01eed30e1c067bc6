//! An ICMP error to a VIP about one of its flows: destination unreachable (fragmentation
//! needed included), time exceeded or parameter problem. It quotes a packet that the service
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
use crate::wire::icmp_error::{self, Quoted};
use crate::wire::Ipv4Packet;
use std::net::IpAddr;

/// The ICMP error at `frame[l2..]` (to a VIP), toward its flow's backend.
pub fn to_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, l2: usize) -> Result<ToBackend, DropReason> {
    let (header, q) = read(frame.data(), l2)?;
    let snap = cx.snap;
    let si = snap
        .service(ServiceKey::new(Addr::v4(q.src), q.src_port, q.protocol))
        .filter(|_| IpAddr::V4(q.src) == header.dst)
        .ok_or(DropReason::IcmpErrorUnknown)?;
    let svc = snap.services.get(usize::from(si)).ok_or(DropReason::IcmpErrorUnknown)?;
    let (bi, seq_delta) = backend_of(cx, svc, &q).ok_or(DropReason::IcmpErrorUnknown)?;
    if svc.forwarding == Forwarding::Nat {
        translate(frame, l2, svc, bi, seq_delta)?;
    }
    cx.events.icmp_errors += 1;
    Ok(ToBackend { at: l2, inner: header.inner, service: si, backend: bi })
}

/// What the outer header gives the tunnel, and its destination.
struct Header {
    dst: IpAddr,
    inner: crate::encap::Inner,
}

/// The outer header and the quoted flow of the error at `b[l2..]`.
fn read(b: &[u8], l2: usize) -> Result<(Header, Quoted), DropReason> {
    let ip =
        Ipv4Packet::new_checked(b.get(l2..).unwrap_or_default()).map_err(|_| DropReason::Ipv4Truncated)?;
    let e = icmp_error::parse(ip.payload()).map_err(|_| DropReason::IcmpErrorMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::IcmpBadChecksum);
    }
    let inner = inner(ip.total_len(), ip.tos(), ip.ident(), ip.dont_frag());
    Ok((Header { dst: IpAddr::V4(ip.dst()), inner }, e.quoted))
}

/// The backend (an index) of the flow that quoted packet `q` was a reply of, and a SYN-proxied
/// session's sequence offset (0 otherwise).
fn backend_of(cx: &Ctx<'_>, svc: &Service, q: &Quoted) -> Option<(u16, u32)> {
    let key = SessionKey::flow(Addr::v4(q.dst), q.dst_port, svc.id);
    if let Some((_, s)) = cx.sessions.lookup(&key, cx.sessions.hash(&key)) {
        let delta = if s.flags & PROXIED != 0 { s.seq_delta } else { 0 };
        return Some((svc.backend_by_id(s.backend)?, delta));
    }
    let flow = FlowKey {
        src: Addr::v4(q.dst),
        dst: Addr::v4(q.src),
        src_port: q.dst_port,
        dst_port: q.src_port,
        protocol: q.protocol,
    };
    Some((svc.maglev_choice(flow.hash(SELECT_SEED))?, 0))
}

/// `nat`: the error to backend `bi`: its address as the destination, and in the quote, its
/// address and port as the source and the sequence number in its own space.
fn translate<F: Frame>(
    frame: &mut F,
    l2: usize,
    svc: &Service,
    bi: u16,
    seq_delta: u32,
) -> Result<(), DropReason> {
    let backend = svc.backends.get(usize::from(bi)).ok_or(DropReason::NoBackend)?;
    let IpAddr::V4(address) = backend.address else {
        return Err(DropReason::IcmpErrorUnknown);
    };
    let bad = DropReason::IcmpErrorMalformed;
    let mut ip = frame.data_mut().get_mut(l2..).map(Ipv4Packet::new_checked).ok_or(bad)?.map_err(|_| bad)?;
    ip.set_dst(address);
    ip.fill_checksum();
    let m = ip.payload_mut();
    icmp_error::rewrite_quoted(m, End::Src, backend.address, backend.port).map_err(|_| bad)?;
    if seq_delta != 0 {
        icmp_error::shift_quoted_seq(m, seq_delta).map_err(|_| bad)?;
    }
    Ok(())
}
