//! Neighbours: ARP answered for VIPs and port addresses, next hops' MACs learned from what
//! the wire says about them, and the requests that ask for them.

use super::context::Ctx;
use super::outcome::Verdict;
use crate::io::Frame;
use crate::snapshot::Snapshot;
use crate::stats::DropReason;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::{self, WireError, BROADCAST_MAC};
use std::net::IpAddr;

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

/// Writes an ARP request for next hop `nh` into an empty frame: the port to send it from.
/// `None` if the frame has no room or the next hop does not exist.
pub fn build_arp_request<F: Frame>(snap: &Snapshot, nh: u16, frame: &mut F) -> Option<u16> {
    let nh = snap.nexthops.get(usize::from(nh))?;
    let port = snap.ports.get(usize::from(nh.port))?;
    let eth = EthernetRepr {
        dst: BROADCAST_MAC,
        src: port.mac,
        vlan: port.vlan,
        ethertype: ethernet::ETHERTYPE_ARP,
    };
    // ARP asks for IPv4 addresses, from the port's.
    let (Some(ours), IpAddr::V4(theirs)) = (port.ipv4(), nh.ip) else {
        return None;
    };
    let len = eth.header_len() + arp::PACKET_LEN;
    // Pad to the 60-byte Ethernet minimum ourselves (virtual NICs do not).
    let want = len.max(60);
    let have = frame.data().len();
    if have < want && !frame.append(want - have) {
        return None;
    }
    let b = frame.data_mut();
    eth.emit(b);
    arp::emit(&mut b[eth.header_len()..], arp::OP_REQUEST, port.mac, ours, [0; 6], theirs);
    Some(nh.port)
}

/// The address a next hop is asked for, for tests and logs.
pub fn nexthop_ip(snap: &Snapshot, nh: u16) -> Option<IpAddr> {
    snap.nexthops.get(usize::from(nh)).map(|n| n.ip)
}
