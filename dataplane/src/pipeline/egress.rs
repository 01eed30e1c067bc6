//! The last stage: a packet leaves toward a backend, in its service's tunnel, or toward a
//! client, with Ethernet to the next hop (whose MAC is asked for if it is not known).

use super::context::{Budgets, Ctx};
use super::outcome::{ToBackend, ToClient, Verdict};
use crate::encap::Inner;
use crate::io::Frame;
use crate::stats::DropReason;
use crate::wire::ethernet::{self, EthernetRepr};
use crate::wire::Mac;

/// The outer header's copies of an inner packet's fields, for a packet of `len` bytes (too
/// long for any MTU if it does not fit 16 bits).
#[inline]
pub fn inner(len: usize, tos: u8, ident: u16, dont_frag: bool) -> Inner {
    Inner { len: u16::try_from(len).unwrap_or(u16::MAX), tos, ident, dont_frag, label: 0 }
}

/// Next hop `nhi`'s MAC, asking for it (after the burst) if it is unknown or due a refresh
/// (then the old MAC is still used).
#[inline(always)]
fn next_hop_mac(cx: &mut Ctx<'_>, nhi: u16) -> Option<(Mac, u16)> {
    let nh = cx.snap.nexthops.get(usize::from(nhi))?;
    let mac = nh.mac();
    if nh.claim_request(cx.now_ns) {
        let _ = cx.resolve.try_push(nhi);
    }
    Some((mac?, nh.port))
}

/// Puts the inner packet at `frame[t.at..t.at + t.inner.len]` into the service's tunnel toward
/// the backend: Ethernet to the next hop, outer IPv4 (and GRE), from the backend's
/// [`crate::encap::OuterHeader`]. Anything after the inner packet (link padding) is dropped.
#[inline(always)]
pub fn tunnel<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, t: &ToBackend) -> Verdict {
    let snap = cx.snap;
    let Some(svc) = snap.services.get(usize::from(t.service)) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let Some(backend) = svc.backends.get(usize::from(t.backend)) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let Some((mac, port)) = next_hop_mac(cx, backend.nexthop) else {
        return Verdict::Drop(DropReason::NeighborUnresolved);
    };
    let outer = &backend.outer;
    let inner_len = usize::from(t.inner.len);
    if !outer.fits(inner_len) {
        return Verdict::Drop(DropReason::MtuExceeded);
    }
    // Drop link padding after the inner packet, then make room in front of it.
    let padding = frame.data().len().saturating_sub(t.at + inner_len);
    if !frame.trim(padding) {
        return Verdict::Drop(DropReason::Ipv4Truncated);
    }
    // at <= 18 < 14 + 20
    if !frame.prepend(outer.len() - t.at) {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    if !outer.write(frame.data_mut(), mac, t.inner) {
        return Verdict::Drop(DropReason::Ipv4Truncated);
    }
    let (service_id, backend_id) = (svc.id, backend.id);
    Verdict::Tunnel { port, service: t.service, backend: t.backend, service_id, backend_id }
}

/// Exception path: the frame to the kernel through port `kernel`; unless it is routing (ARP,
/// BGP, BFD), within the worker's rate for it ([`super::context::KERNEL_RATE`]).
pub fn to_kernel(cx: &mut Ctx<'_>, kernel: u16, routing: bool) -> Verdict {
    let now = cx.now_ns;
    let within = |b: &mut Budgets| b.kernel.take(now, super::context::KERNEL_RATE, 1);
    if !routing && cx.budgets.as_deref_mut().is_some_and(|b| !within(b)) {
        return Verdict::Drop(DropReason::KernelLimited);
    }
    Verdict::ToKernel { port: kernel }
}

/// Sends the IP packet (of the client's family) at `frame[c.at..c.at + c.len]` to the client:
/// everything before it but room for Ethernet, and everything after it, goes; Ethernet toward
/// the client's next hop is written.
pub fn client<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, c: &ToClient) -> Verdict {
    let snap = cx.snap;
    let Some(nhi) = snap.route_to(c.client) else {
        return Verdict::Drop(DropReason::NoRouteToClient);
    };
    if snap.nexthops.get(usize::from(nhi)).is_none() {
        return Verdict::Drop(DropReason::NoRouteToClient);
    }
    let Some((mac, port)) = next_hop_mac(cx, nhi) else {
        return Verdict::Drop(DropReason::NeighborUnresolved);
    };
    let Some(out) = snap.ports.get(usize::from(port)) else {
        return Verdict::Drop(DropReason::NoRouteToClient);
    };
    if c.len > usize::from(out.mtu) {
        return Verdict::Drop(DropReason::MtuExceeded);
    }
    let ethertype = if c.client.is_ipv4() { ethernet::ETHERTYPE_IPV4 } else { ethernet::ETHERTYPE_IPV6 };
    let eth = EthernetRepr { dst: mac, src: out.mac, vlan: out.vlan, ethertype };
    let l2_out = eth.header_len();
    if c.at < l2_out {
        if !frame.prepend(l2_out - c.at) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
    } else if !frame.adj(c.at - l2_out) {
        return Verdict::Drop(DropReason::Ipv4Truncated);
    }
    let extra = frame.data().len().saturating_sub(l2_out + c.len);
    if !frame.trim(extra) {
        return Verdict::Drop(DropReason::Ipv4Truncated);
    }
    eth.emit(&mut frame.data_mut()[..l2_out]);
    Verdict::NatReply { port, service: c.service }
}
