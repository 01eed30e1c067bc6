//! The tunnel-path probe: a packet the worker writes of its own accord, not one it received.
//! A UDP datagram to [`probe::PORT`] carrying a nonce, from the appliance to a backend, put
//! into that backend's tunnel by [`super::egress::tunnel`] exactly as the backend's traffic is
//! (same Ethernet, outer header, GRE key), so the host agent that echoes the nonce has proved
//! the tunnel, not only its management path.
//!
//! The inner packet is of the service's family (the family its tunnel carries): to the
//! backend's own address for a NAT service, to the VIP for a DSR one (what the host gets for
//! that service); from the tunnel's source address, or the VIP when the underlay is of the
//! other family.

use super::context::Ctx;
use super::egress;
use super::outcome::{ToBackend, Verdict};
use crate::io::Frame;
use crate::snapshot::{Backend, Forwarding, Service};
use crate::stats::DropReason;
use crate::wire::probe;
use crate::wire::{ipv4, ipv6, Ipv4Repr, Ipv6Repr, UdpRepr};
use std::net::IpAddr;

/// A probe the control thread asks worker 0 to send: toward backend `backend` (stable id) of
/// service `service` (stable id), carrying `nonce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    pub service: u16,
    pub backend: u32,
    pub nonce: u64,
}

/// The control thread's requests to worker 0: bounded, lock-free; a full queue refuses
/// more (the control thread counts it), and worker 0 takes at most [`PER_POLL`] per poll.
pub type ProbeQueue = crossbeam::queue::ArrayQueue<ProbeRequest>;
/// Room in a [`ProbeQueue`].
pub const QUEUE_LEN: usize = 256;
/// Most probes worker 0 sends in one poll.
pub const PER_POLL: usize = 4;

/// The inner datagram's length: IP header, UDP header, payload.
fn inner_len(v6: bool) -> usize {
    let ip = if v6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN };
    ip + crate::wire::udp::HEADER_LEN + probe::PAYLOAD_LEN
}

/// The inner datagram's source and destination.
fn endpoints(svc: &Service, b: &Backend) -> (IpAddr, IpAddr) {
    let dst = match svc.forwarding {
        Forwarding::Nat => b.address,
        Forwarding::Dsr => svc.vip,
    };
    let src = if b.tunnel_source.is_ipv4() == dst.is_ipv4() { b.tunnel_source } else { svc.vip };
    (src, dst)
}

/// Writes the inner datagram into `b` (exactly its length); false if the addresses' families
/// differ.
fn write_inner(b: &mut [u8], (src, dst): (IpAddr, IpAddr), nonce: u64) -> bool {
    let udp = UdpRepr { src_port: probe::PORT, dst_port: probe::PORT };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (ip, rest) = b.split_at_mut(ipv4::HEADER_LEN);
            let repr = Ipv4Repr {
                src: s,
                dst: d,
                protocol: ipv4::PROTO_UDP,
                payload_len: rest.len(),
                tos: 0,
                ident: 0,
                dont_frag: true,
                ttl: ipv4::DEFAULT_TTL,
            };
            repr.emit(ip);
            probe::emit(&mut rest[crate::wire::udp::HEADER_LEN..], nonce);
            udp.emit_v4(rest, s, d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let (ip, rest) = b.split_at_mut(ipv6::HEADER_LEN);
            let repr = Ipv6Repr {
                src: s,
                dst: d,
                next_header: ipv4::PROTO_UDP,
                payload_len: rest.len(),
                traffic_class: 0,
                flow_label: 0,
                hop_limit: ipv6::DEFAULT_HOP_LIMIT,
            };
            repr.emit(ip);
            probe::emit(&mut rest[crate::wire::udp::HEADER_LEN..], nonce);
            udp.emit_v6(rest, s, d);
        }
        _ => return false,
    }
    true
}

/// Writes probe `req` into `frame`, an empty frame, and puts it into the backend's tunnel: the
/// same verdict as the backend's traffic ([`Verdict::Tunnel`]), or a drop (`NoBackend` if
/// either id is not in the snapshot; the tunnel's own reasons).
pub fn to_backend<F: Frame>(cx: &mut Ctx<'_>, req: &ProbeRequest, frame: &mut F) -> Verdict {
    let snap = cx.snap;
    let found = snap.service_index(req.service).and_then(|si| {
        let svc = snap.services.get(usize::from(si))?;
        let bi = svc.backend_by_id(req.backend)?;
        Some((si, bi, svc, svc.backends.get(usize::from(bi))?))
    });
    let Some((service, backend, svc, b)) = found else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let (src, dst) = endpoints(svc, b);
    let len = inner_len(dst.is_ipv6());
    if !frame.append(len) {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    let start = frame.data().len() - len;
    if !write_inner(&mut frame.data_mut()[start..], (src, dst), req.nonce) {
        return Verdict::Drop(DropReason::NoBackend);
    }
    let inner = egress::inner(len, 0, 0, true);
    egress::tunnel(cx, frame, &ToBackend { at: start, inner, service, backend })
}
