//! The per-packet decision: parse, classify, rewrite in place, return a verdict.
//!
//! Pure: takes a frame, the snapshot and the time; no I/O, no allocation, no locks, no logging.
//! Every malformed input ends in `Verdict::Drop(reason)`; nothing here panics on any bytes.
//!
//! Each stage is a file and returns what it leaves to the next one; only this file sequences
//! them, so data flows one way (docs/architecture.md draws it):
//!
//! - [`classify`]: Ethernet checks and what the packet is for (IPv6: `classify6`), read only.
//! - [`finish`]: ARP goes to `neighbor`, neighbor discovery to `ndisc`, ICMP and ICMPv6 echo
//!   to `reply` (an ICMP error about a flow of a VIP to `icmp_error`, then `egress`), a
//!   tunneled NAT reply to `nat`; a packet to a service to `forward` (by session, or the
//!   scheduler's choice through `choose`) and, for SYN-proxied services' handshakes, `proxy`;
//!   then `egress` into the backend's tunnel, or `reply` to the client (RST, ICMP unreachable).
//! - a NAT reply: `nat` (an IPv6 one: `nat6`), the SYN proxy's backend side `proxy_backend`,
//!   then `egress`.
//! - not a received packet: `probe` writes a tunnel-path probe into an empty frame, then
//!   `egress`.

mod choose;
mod classify;
mod classify6;
mod context;
mod egress;
mod forward;
mod fragment;
mod icmp_error;
mod nat;
mod nat6;
mod ndisc;
mod neighbor;
mod outcome;
mod probe;
mod proxy;
mod proxy_backend;
mod reply;
mod reply6;
mod segment;

pub use context::{
    Budgets, Ctx, Fragments, Limiter, Resolve, SessionEvents, ToService, FRAGMENT_ENTRIES, KERNEL_RATE,
    TOO_BIG_RATE,
};
pub use neighbor::{announcements, build_announcement, build_neighbor_request, nexthop_ip};
pub use outcome::Verdict;
pub use probe::{to_backend as probe_to_backend, ProbeQueue, ProbeRequest};
/// The tunnel-path probe's queue length and per-poll batch.
pub mod probes {
    pub use super::probe::{PER_POLL, QUEUE_LEN};
}

use crate::io::Frame;
use crate::snapshot::Forwarding;
use crate::stats::DropReason;
use classify::{Class, Local, Tunneled};
use outcome::{FromBackend, FromClient, ToBackend};

/// Most stages one packet passes through after the first pass (the longest chain: forward,
/// proxy, forward again for a released segment, egress). A bound, so that no state of the
/// tables can make a packet go round.
const MAX_STEPS: usize = 6;

/// The outcome of the first pass over a packet: what it is for, read without changing
/// anything, so a worker can classify a whole burst, prefetch every packet's table entries,
/// then finish them in order.
pub type Stage = Class;

/// Decides the fate of one frame received on `rx_port`, rewriting it in place when it is sent:
/// [`classify`] then [`finish`].
pub fn process<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F) -> Verdict {
    let stage = classify(cx, rx_port, frame);
    finish(cx, rx_port, frame, &stage)
}

/// The first pass: parse and classify; find the service and the flow's hash for traffic to
/// a service.
#[inline(always)]
pub fn classify<F: Frame>(cx: &Ctx<'_>, rx_port: u16, frame: &F) -> Stage {
    match classify::frame(cx, rx_port, frame) {
        Class::Ipv6 { l2 } => ipv6(cx, rx_port, frame.data(), l2),
        c => c,
    }
}

/// The first pass's IPv6 half, for an IPv6 packet at `data[l2..]`.
#[inline(never)]
fn ipv6(cx: &Ctx<'_>, rx_port: u16, data: &[u8], l2: usize) -> Stage {
    match classify6::packet(cx, rx_port, data, l2) {
        // classify6 hands nothing back to be read as IPv6 again.
        Class::Ipv6 { .. } => Class::from(DropReason::Ipv6Malformed),
        c => c,
    }
}

/// The second pass: a packet to a service to [`serve`]; answer ARP, neighbor discovery and
/// echo; take NAT replies back to their clients; the rest of the first pass's verdicts.
#[inline(always)]
pub fn finish<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F, stage: &Stage) -> Verdict {
    match stage {
        Class::Service(p) => serve(cx, frame, p),
        Class::Local(l) => local(cx, rx_port, frame, *l),
        Class::Ipv6 { .. } => Verdict::Drop(DropReason::Ipv6Malformed),
    }
}

/// The first pass's packets that are not for a service.
#[inline(never)]
fn local<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F, l: Local) -> Verdict {
    match l {
        Local::Drop(reason) => Verdict::Drop(reason),
        Local::Arp { l2 } => neighbor::arp(cx, rx_port, frame, l2),
        Local::Icmp { l2 } => reply::echo(cx.snap, rx_port, frame, l2),
        Local::Ndisc { l2, at, end } => ndisc::message(cx, rx_port, frame, (l2, at, end)),
        Local::Echo6 { l2, at } => reply6::echo6(cx.snap, rx_port, frame, (l2, at)),
        Local::IcmpError { l2 } => match icmp_error::to_backend(cx, frame, l2) {
            Ok(t) => egress::tunnel(cx, frame, &t),
            Err(reason) => Verdict::Drop(reason),
        },
        Local::NatReply(t) => from_backend(cx, frame, &t),
        Local::Fragment { l2 } => match fragment::to_service(cx, rx_port, frame.data(), l2) {
            Ok(p) => serve(cx, frame, &p),
            Err(reason) => Verdict::Drop(reason),
        },
        Local::ToKernel { kernel, routing } => egress::to_kernel(cx, kernel, routing),
        Local::FromKernel { port } => Verdict::FromKernel { port },
    }
}

/// A packet to a service: its session or a new backend, then its tunnel.
#[inline(always)]
fn serve<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService) -> Verdict {
    match forward::by_session(cx, frame, p) {
        FromClient::Tunnel(t) => to_backend(cx, frame, p, &t),
        next => from_client(cx, frame, p, next),
    }
}

/// A client's packet into its backend's tunnel; if it is too big for it, [`too_big`].
#[inline(always)]
fn to_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, t: &ToBackend) -> Verdict {
    match egress::tunnel(cx, frame, t) {
        Verdict::Drop(DropReason::MtuExceeded) => too_big(cx, frame, p, t),
        v => v,
    }
}

/// A client's packet too big for the tunnel toward backend `t.backend`: with DF set, the
/// client is told the MTU that fits (at most [`TOO_BIG_RATE`] a second per worker), from the
/// packet as it sent it (a `nat` packet's destination put back); without DF it is cut into
/// fragments that fit, each tunneled on its own, so the backend's stack reassembles them.
#[inline(never)]
fn too_big<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, t: &ToBackend) -> Verdict {
    let snap = cx.snap;
    let Some(svc) = snap.services.get(usize::from(t.service)) else {
        return Verdict::Drop(DropReason::NoService);
    };
    let Some(backend) = svc.backends.get(usize::from(t.backend)) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    if !p.dont_frag {
        let port = snap.nexthops.get(usize::from(backend.nexthop)).map(|n| n.port);
        let (Some(port), Ok(at)) = (port, u8::try_from(t.at)) else {
            return Verdict::Drop(DropReason::MtuExceeded);
        };
        return Verdict::Fragment { port, service: t.service, backend: t.backend, at };
    }
    let now = cx.now_ns;
    if cx.budgets.as_deref_mut().is_some_and(|b| !b.too_big.take(now, TOO_BIG_RATE, 1)) {
        return Verdict::Drop(DropReason::TooBigLimited);
    }
    if svc.forwarding == Forwarding::Nat && nat::restore(frame, p.l2(), svc).is_err() {
        return Verdict::Drop(DropReason::MtuExceeded);
    }
    reply::frag_needed(snap, frame, p, backend.outer.max_inner())
}

/// The rest of a client's packet's way, from `next`.
#[inline(never)]
fn from_client<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, mut next: FromClient) -> Verdict {
    for _ in 0..MAX_STEPS {
        next = match next {
            FromClient::Done(v) => return v,
            FromClient::Tunnel(t) => return to_backend(cx, frame, p, &t),
            FromClient::Reset => return reply::reset(cx.snap, frame, p),
            FromClient::NoBackend => {
                let Some(svc) = cx.snap.services.get(usize::from(p.service)) else {
                    return Verdict::Drop(DropReason::NoService);
                };
                return reply::no_backend(cx.snap, svc, frame, p);
            }
            FromClient::Proxy(turn) => proxy::client(cx, frame, p, turn),
            FromClient::Forward => forward::by_session(cx, frame, p),
        };
    }
    Verdict::Drop(DropReason::SynproxyNoSession)
}

/// Fragment `frag` of the IPv4 packet `packet` (translated, bound for backend `backend` of
/// service `service`, as a [`Verdict::Fragment`] left it), written into the empty frame
/// `out` and put into the backend's tunnel.
pub fn fragment_to_backend<F: Frame>(
    cx: &mut Ctx<'_>,
    packet: &[u8],
    frag: &crate::wire::fragment::Fragment,
    (service, backend): (u16, u16),
    out: &mut F,
) -> Verdict {
    let room = frag.payload_len() + crate::wire::ipv4::MAX_HEADER_LEN;
    if !out.append(room) {
        return Verdict::Drop(DropReason::FragmentFailed);
    }
    let Ok(n) = crate::wire::fragment::write_fragment(packet, frag, out.data_mut()) else {
        return Verdict::Drop(DropReason::FragmentFailed);
    };
    if !out.trim(room - n) {
        return Verdict::Drop(DropReason::FragmentFailed);
    }
    let Ok(ip) = crate::wire::ipv4::Ipv4Header::parse(out.data()) else {
        return Verdict::Drop(DropReason::FragmentFailed);
    };
    let inner = egress::inner(n, ip.tos, ip.ident, false);
    egress::tunnel(cx, out, &ToBackend { at: 0, inner, service, backend })
}

/// A tunneled packet to the appliance: a NAT reply's way to its client.
fn from_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, t: &Tunneled) -> Verdict {
    let mut next = nat::reply(cx, frame, t);
    for _ in 0..MAX_STEPS {
        next = match next {
            FromBackend::Done(v) => return v,
            FromBackend::Tunnel(t) => return egress::tunnel(cx, frame, &t),
            FromBackend::Client(c) => return egress::client(cx, frame, &c),
            FromBackend::ProxyAnswer(b) => proxy_backend::answer(cx, frame, &b),
            FromBackend::ProxyAck(b) => proxy_backend::ack(frame, &b),
        };
    }
    Verdict::Drop(DropReason::SynproxyBackendUnexpected)
}
