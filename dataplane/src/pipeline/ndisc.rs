//! Neighbor discovery (RFC 4861) on the data ports: solicitations for VIPs and port addresses
//! answered in place, next hops' MACs learned from what solicitations and advertisements say
//! about them. The appliance answers as a host (router flag clear). With an exception path,
//! neighbor discovery for the port's own address is the kernel's, and never held back.

use super::context::Ctx;
use super::outcome::Verdict;
use crate::io::Frame;
use crate::snapshot::Port;
use crate::stats::DropReason;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::icmpv6::TYPE_NEIGHBOR_SOLICIT;
use crate::wire::ndisc::{self, NeighborAdvert, NeighborSolicit};
use crate::wire::{self, Ipv6Packet, Mac};
use std::net::{IpAddr, Ipv6Addr};

/// A solicitation or advertisement received on `rx_port`, its IPv6 header at `frame[l2..]`
/// and the message at `frame[at..end]` (as `classify6` found them): checked (RFC 4861 7.1),
/// then a solicitation for one of our addresses is answered in place; a next hop's MAC is
/// learned from a solicitation to us or an advertisement.
pub fn message<F: Frame>(
    cx: &mut Ctx<'_>,
    rx_port: u16,
    frame: &mut F,
    (l2, at, end): (usize, usize, usize),
) -> Verdict {
    let data = frame.data();
    let (Some(Ok(ip)), Some(m)) = (data.get(l2..).map(Ipv6Packet::new_checked), data.get(at..end)) else {
        return Verdict::Drop(DropReason::Ipv6Truncated);
    };
    let (src, dst, hop_limit) = (ip.src(), ip.dst(), ip.hop_limit());
    if m.first() == Some(&TYPE_NEIGHBOR_SOLICIT) {
        match ndisc::parse_ns(m, src, dst, hop_limit) {
            Ok(ns) => solicit(cx, rx_port, frame, (l2, src), &ns),
            Err(_) => Verdict::Drop(DropReason::NdInvalid),
        }
    } else {
        match ndisc::parse_na(m, src, dst, hop_limit) {
            Ok(na) => advert(cx, rx_port, dst, &na),
            Err(_) => Verdict::Drop(DropReason::NdInvalid),
        }
    }
}

/// A valid solicitation `ns` from `src`: answered if its target is a VIP or the port's address;
/// to the kernel if the port has an exception path and the target is the port's address or
/// link-local (the kernel's); the sender's MAC learned if it is a next hop.
fn solicit<F: Frame>(
    cx: &mut Ctx<'_>,
    rx_port: u16,
    frame: &mut F,
    (l2, src): (usize, Ipv6Addr),
    ns: &NeighborSolicit,
) -> Verdict {
    let snap = cx.snap;
    let Some(port) = snap.ports.get(usize::from(rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let kernel = port.kernel_for(IpAddr::V6(ns.target));
    let own = kernel.is_some() || port.has_address(IpAddr::V6(ns.target));
    if !own && !snap.is_vip(IpAddr::V6(ns.target)) {
        return Verdict::Drop(DropReason::NdNotForUs);
    }
    // A solicitation aimed at us says where its sender is (RFC 4861 7.2.3). From the
    // unspecified address (duplicate address detection) it carries no link-layer option.
    if let Some(mac) = ns.source_mac {
        learn(cx, rx_port, src, mac, true);
    }
    if let Some(kernel) = kernel {
        return Verdict::ToKernel { port: kernel };
    }
    answer(port, rx_port, frame, (l2, src), ns)
}

/// Rewrites the frame carrying solicitation `ns` from `src` (IPv6 header at `frame[l2..]`)
/// into the advertisement answering it: from the target, back to the sender (all nodes for
/// duplicate address detection), at its link-layer address (the option's, else the frame's
/// source), from the port's MAC. The frame is cut or grown to the advertisement's length.
fn answer<F: Frame>(
    port: &Port,
    rx_port: u16,
    frame: &mut F,
    (l2, src): (usize, Ipv6Addr),
    ns: &NeighborSolicit,
) -> Verdict {
    let (na, to) = NeighborAdvert::answer(ns, src, port.mac);
    let (want, have) = (l2 + ndisc::PACKET_LEN, frame.data().len());
    let sized = if have < want { frame.append(want - have) } else { frame.trim(have - want) };
    if !sized {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    let b = frame.data_mut();
    let Ok(mut eth) = EthernetFrame::new_checked(&mut b[..]) else {
        return Verdict::Drop(DropReason::EthTruncated);
    };
    let dst_mac = if to.is_multicast() {
        ndisc::multicast_mac(to)
    } else {
        ns.source_mac.filter(unicast).unwrap_or(eth.src())
    };
    eth.set_dst(dst_mac);
    eth.set_src(port.mac);
    if na.emit_packet(&mut b[l2..], ns.target, to) == 0 {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    Verdict::NeighborAdvert { port: rx_port }
}

/// A valid advertisement `na` to `dst`: the target's MAC learned if it is a next hop (an
/// advertisement without the override flag does not replace a MAC already known, RFC 4861
/// 7.2.5); to the kernel if it is addressed to the port's own address or a link-local one with
/// an exception path (an answer to the kernel's solicitation).
fn advert(cx: &mut Ctx<'_>, rx_port: u16, dst: Ipv6Addr, na: &NeighborAdvert) -> Verdict {
    let snap = cx.snap;
    let Some(port) = snap.ports.get(usize::from(rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let learned = na.target_mac.is_some_and(|mac| learn(cx, rx_port, na.target, mac, na.override_flag));
    if let Some(kernel) = port.kernel_for(IpAddr::V6(dst)) {
        return Verdict::ToKernel { port: kernel };
    }
    if learned {
        Verdict::Consumed
    } else {
        Verdict::Drop(DropReason::NdNotForUs)
    }
}

/// Whether `mac` is a plausible neighbor's: unicast, not all zeros.
fn unicast(mac: &Mac) -> bool {
    !wire::is_group(mac) && *mac != [0; 6]
}

/// Learns `mac` for the next hop `ip` on `rx_port` if the appliance sends to it (bytes from
/// the wire never create entries) and `mac` is a plausible unicast address; a MAC already
/// known is replaced only if `replace`. Whether `ip` is a next hop that `mac` could be.
fn learn(cx: &mut Ctx<'_>, rx_port: u16, ip: Ipv6Addr, mac: Mac, replace: bool) -> bool {
    if !unicast(&mac) {
        return false;
    }
    let Some(nh) = cx.snap.nexthop(rx_port, IpAddr::V6(ip)) else {
        return false;
    };
    if !replace && nh.mac().is_some_and(|known| known != mac) {
        return true;
    }
    if nh.learn(mac, cx.now_ns) {
        cx.learned += 1;
    }
    true
}
