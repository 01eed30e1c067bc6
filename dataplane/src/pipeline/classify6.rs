//! The first pass's IPv6 half: what an IPv6 packet is for, once `classify` has checked its
//! Ethernet header. Parses and decides only; nothing here writes the frame.
//!
//! The fixed header is checked, then the extension headers walked to the upper layer
//! (`wire::ipv6::upper_layer`, at most `MAX_EXT_HEADERS` of them). Neighbor discovery goes to
//! `ndisc` (to a port address, a VIP, a solicited-node group or all nodes; `ndisc` checks the
//! rest), an echo request to a VIP or an appliance address to `reply`, a tunneled NAT reply
//! (IPv4 or IPv6 in IPv6, GRE over IPv6) to an appliance address to `nat`, the port's own
//! traffic to its kernel when it has an exception path; TCP and UDP to a service's VIP and
//! port on to `finish` ([`to_service`]).

use super::classify::{routing, Class, Local, Tunneled};
use super::context::{Ctx, Network, ToService};
use crate::stats::DropReason;
use crate::wire::icmpv6::{TYPE_ECHO_REQUEST, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use crate::wire::icmpv6_error;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::ndisc::{self, ALL_NODES};
use crate::wire::WireError;
use std::net::{IpAddr, Ipv6Addr};

/// An IPv6 packet at `data[l2..]`, received on `rx_port`.
pub fn packet(cx: &Ctx<'_>, rx_port: u16, data: &[u8], l2: usize) -> Class {
    let b = data.get(l2..).unwrap_or_default();
    let ip = match Ipv6Packet::new_checked(b) {
        Ok(ip) => ip,
        Err(WireError::Truncated) => return Class::from(DropReason::Ipv6Truncated),
        Err(_) => return Class::from(DropReason::Ipv6Malformed),
    };
    let (src, dst, total) = (ip.src(), ip.dst(), ip.total_len());
    let upper = match ipv6::upper_layer(b) {
        Ok(u) => u,
        Err(WireError::Truncated) => return Class::from(DropReason::Ipv6Truncated),
        Err(_) => return Class::from(DropReason::Ipv6Malformed),
    };
    // No packet comes from a group (RFC 4291 2.7): an answer would go to one.
    if src.is_multicast() {
        return Class::from(DropReason::Ipv6Malformed);
    }
    // Inside the buffer: new_checked checked 40 + payload length against it, and the walk
    // stopped inside the packet.
    let (at, end) = (l2 + upper.offset, l2 + total);
    let message = data.get(at..end).unwrap_or_default();
    let whole = upper.fragment.is_none();
    if whole && upper.protocol == ipv6::NEXT_ICMPV6 {
        if let Some(&(TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT)) = message.first() {
            return ndisc_to(cx, rx_port, dst, Local::Ndisc { l2, at, end });
        }
    }
    // The unspecified source is for neighbor discovery (and multicast listener reports) only.
    if src.is_unspecified() {
        return Class::from(DropReason::Ipv6Malformed);
    }
    let l4 = upper.protocol == ipv6::NEXT_TCP || upper.protocol == ipv6::NEXT_UDP;
    let mut l4_error = None;
    if l4 && whole {
        match to_service(cx, (rx_port, l2), &Network::v6(&ip, upper.protocol), message) {
            Ok(Some(p)) => return Class::Service(p),
            Ok(None) => {}
            Err(e) => l4_error = Some(e),
        }
    }
    let dst = IpAddr::V6(dst);

    // A NAT reply: a backend's host tunnels it to the appliance's address.
    if whole && Tunneled::carries(upper.protocol) && cx.snap.has_nat && cx.snap.is_local(dst) {
        let t = Tunneled { l2, header_len: upper.offset, total, proto: upper.protocol };
        return Class::Local(Local::NatReply(t));
    }

    // The port's own traffic, when it has an exception path: the kernel's.
    let port = cx.snap.ports.get(usize::from(rx_port));
    if let Some(kernel) = port.and_then(|p| p.kernel_for(dst)) {
        let routing = whole && routing(upper.protocol, Some(message));
        return Class::Local(Local::ToKernel { kernel, routing });
    }

    // Everything else.
    let vip = cx.snap.is_vip(dst);
    if !vip && !cx.snap.is_local(dst) {
        return Class::from(DropReason::NotForUs);
    }
    if !whole {
        if vip && l4 {
            return Class::Local(Local::Fragment { l2 });
        }
        return Class::from(DropReason::Ipv6Fragment);
    }
    Class::from(match upper.protocol {
        ipv6::NEXT_ICMPV6 => match message.first() {
            Some(&TYPE_ECHO_REQUEST) => return Class::Local(Local::Echo6 { l2, at }),
            Some(&t) if vip && icmpv6_error::is_error(t) => return Class::Local(Local::IcmpError { l2 }),
            Some(_) => DropReason::Icmpv6Unsupported,
            None => DropReason::IcmpTruncated,
        },
        _ if l4 && vip => match l4_error {
            Some(WireError::Truncated) => DropReason::L4Truncated,
            Some(_) => DropReason::L4Malformed,
            None => DropReason::NoService,
        },
        _ if l4 => DropReason::LocalUnsupported,
        _ => DropReason::ProtocolUnsupported,
    })
}

/// Neighbor discovery to `dst` received on `rx_port`: on to `ndisc` if `dst` is a VIP, an
/// appliance address, the port's kernel's (link-local), a solicited-node group or all nodes
/// (which target the message names is `ndisc`'s to check).
fn ndisc_to(cx: &Ctx<'_>, rx_port: u16, dst: Ipv6Addr, nd: Local) -> Class {
    let kernel = |a| cx.snap.ports.get(usize::from(rx_port)).and_then(|p| p.kernel_for(a)).is_some();
    let to_us = if dst.is_multicast() {
        dst == ALL_NODES || ndisc::is_solicited_node(dst)
    } else {
        let dst = IpAddr::V6(dst);
        cx.snap.is_vip(dst) || cx.snap.is_local(dst) || kernel(dst)
    };
    if to_us {
        Class::Local(nd)
    } else {
        Class::from(DropReason::NotForUs)
    }
}

/// Unfragmented TCP or UDP (`ip`, at `frame[l2..]`, received on `rx_port`), its transport
/// header at the front of `l4`: the packet to a service, if its destination is one (`None` if
/// not; the error if its transport header cannot be read).
#[inline(always)]
fn to_service(
    cx: &Ctx<'_>,
    (rx_port, l2): (u16, usize),
    ip: &Network,
    l4: &[u8],
) -> Result<Option<ToService>, WireError> {
    let ports = super::context::transport(ip.protocol, l4, true)?;
    Ok(ToService::find(cx, (rx_port, l2), ip, ports, false))
}
