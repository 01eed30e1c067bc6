//! Neighbours: ARP answered for VIPs and port addresses, next hops' MACs learned from what
//! the wire says about them; and what the worker sends of its own accord: the requests that
//! ask for next hops (ARP, or neighbor solicitations for IPv6), and unsolicited neighbor
//! advertisements of IPv6 addresses. (Neighbor discovery received is `ndisc`'s.)

use super::context::Ctx;
use super::outcome::Verdict;
use crate::io::Frame;
use crate::snapshot::{Port, Snapshot};
use crate::stats::DropReason;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::ndisc::{self, NeighborAdvert, NeighborSolicit};
use crate::wire::{self, Mac, WireError, BROADCAST_MAC};
use std::net::{IpAddr, Ipv6Addr};

/// An ARP packet at `frame[l2..]`, received on `rx_port`: a request for one of our addresses
/// is answered in place; a next hop's MAC is learned from its reply, its request to us or its
/// announcement.
pub fn arp<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F, l2: usize) -> Verdict {
    let Some(port) = cx.snap.ports.get(usize::from(rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let (op, sha, spa, tpa) = match ArpPacket::new_checked(&frame.data()[l2..]) {
        Ok(a) => (a.operation(), a.sender_mac(), a.sender_ip(), a.target_ip()),
        Err(WireError::Truncated) => return Verdict::Drop(DropReason::ArpTruncated),
        Err(_) => return Verdict::Drop(DropReason::ArpUnsupported),
    };
    let for_us = port.has_address(tpa.into()) || cx.snap.is_vip(tpa.into());
    let gratuitous = spa == tpa;
    // Learn only next hops we already send to, only from plausible unicast senders, and only
    // from a reply, a request aimed at us, or an announcement: bytes from the wire never
    // create entries.
    let mut learned = false;
    if !wire::is_group(&sha) && sha != [0; 6] && (op == arp::OP_REPLY || for_us || gratuitous) {
        if let Some(nh) = cx.snap.nexthop(rx_port, spa.into()) {
            learned = true;
            if nh.learn(sha, cx.now_ns) {
                cx.learned += 1;
            }
        }
    }
    // With an exception path, the port's address is the kernel's: it answers for it and
    // learns its own neighbours (the router it peers with).
    if let Some(kernel) = port.kernel.filter(|_| port.has_address(tpa.into())) {
        return Verdict::ToKernel { port: kernel };
    }
    if op == arp::OP_REQUEST && for_us && !gratuitous {
        let b = frame.data_mut();
        if let Ok(mut eth) = EthernetFrame::new_checked(&mut b[..]) {
            eth.set_dst(sha);
            eth.set_src(port.mac);
        }
        arp::emit(&mut b[l2..], arp::OP_REPLY, port.mac, tpa, sha, spa);
        return Verdict::ArpReply { port: rx_port };
    }
    if learned {
        Verdict::Consumed
    } else {
        Verdict::Drop(DropReason::ArpNotForUs)
    }
}

/// Writes the request asking for next hop `nh`'s MAC into an empty frame, from the port's
/// address of its family: an ARP request, broadcast (IPv4); a neighbor solicitation with our
/// link-layer address, to the next hop's solicited-node group (IPv6, RFC 4861 7.2.2). The port
/// to send it from; `None` if the frame has no room, the next hop does not exist, or its port
/// has no address of its family.
pub fn build_neighbor_request<F: Frame>(snap: &Snapshot, nh: u16, frame: &mut F) -> Option<u16> {
    let nh = snap.nexthops.get(usize::from(nh))?;
    let port = snap.ports.get(usize::from(nh.port))?;
    match (port.address_like(nh.ip)?, nh.ip) {
        (IpAddr::V4(ours), IpAddr::V4(theirs)) => {
            let b = start(frame, port, (BROADCAST_MAC, ethernet::ETHERTYPE_ARP), arp::PACKET_LEN)?;
            arp::emit(b, arp::OP_REQUEST, port.mac, ours, [0; 6], theirs);
        }
        (IpAddr::V6(ours), IpAddr::V6(theirs)) => {
            let (ns, group) = NeighborSolicit::resolve(theirs, port.mac);
            let to = (ndisc::multicast_mac(group), ethernet::ETHERTYPE_IPV6);
            let b = start(frame, port, to, ndisc::PACKET_LEN)?;
            if ns.emit_packet(b, ours, group) == 0 {
                return None;
            }
        }
        _ => return None,
    }
    Some(nh.port)
}

/// Writes an unsolicited neighbor advertisement of `addr` (a VIP or the port's address) at
/// port `port`'s MAC into an empty frame, to all nodes (RFC 4861 7.2.6), so that neighbors
/// that knew it elsewhere update. The port to send it from; `None` if the frame has no room or
/// the port does not exist.
pub fn build_announcement<F: Frame>(
    snap: &Snapshot,
    (port, addr): (u16, Ipv6Addr),
    frame: &mut F,
) -> Option<u16> {
    let p = snap.ports.get(usize::from(port))?;
    let (na, to) = NeighborAdvert::unsolicited(addr, p.mac);
    let b = start(frame, p, (ndisc::multicast_mac(to), ethernet::ETHERTYPE_IPV6), ndisc::PACKET_LEN)?;
    (na.emit_packet(b, addr, to) > 0).then_some(port)
}

/// The IPv6 addresses the appliance announces, as (port, address), sorted: on each port with
/// an IPv6 address, that address (unless the port has an exception path: then it is the
/// kernel's to announce) and every IPv6 VIP.
pub fn announcements(snap: &Snapshot) -> Vec<(u16, Ipv6Addr)> {
    let mut vips: Vec<Ipv6Addr> = (snap.services.iter())
        .filter_map(|s| match s.vip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
        .collect();
    vips.sort_unstable();
    vips.dedup();
    let mut out = Vec::new();
    for (pi, port) in snap.ports.iter().enumerate() {
        let Some(own) = port.ipv6() else { continue };
        if port.kernel.is_none() {
            out.push((pi as u16, own));
        }
        out.extend(vips.iter().map(|&v| (pi as u16, v)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Starts a frame the appliance sends of its own accord from `port`: the Ethernet header to
/// `(dst, ethertype)`, room for `len` bytes after it (the frame padded to Ethernet's 60-byte
/// minimum ourselves: virtual NICs do not). The bytes after the header; `None` if no room.
fn start<'f, F: Frame>(
    frame: &'f mut F,
    port: &Port,
    (dst, ethertype): (Mac, u16),
    len: usize,
) -> Option<&'f mut [u8]> {
    let eth = EthernetRepr { dst, src: port.mac, vlan: port.vlan, ethertype };
    let want = (eth.header_len() + len).max(60);
    let have = frame.data().len();
    if have < want && !frame.append(want - have) {
        return None;
    }
    let b = frame.data_mut();
    eth.emit(b);
    b.get_mut(eth.header_len()..)
}

/// The address a next hop is asked for, for tests and logs.
pub fn nexthop_ip(snap: &Snapshot, nh: u16) -> Option<IpAddr> {
    snap.nexthops.get(usize::from(nh)).map(|n| n.ip)
}
