//! The IPv6 half of [`super::reply`]: ICMPv6 echo replies, and what the appliance sends back
//! to an IPv6 client of a service, built in place from the client's packet: a TCP RST, ICMPv6
//! destination unreachable (port unreachable, RFC 4443 3.1) and packet too big (3.2), from
//! the VIP.

use super::context::ToService;
use super::outcome::Verdict;
use crate::io::Frame;
use crate::snapshot::Snapshot;
use crate::stats::DropReason;
use crate::wire::ethernet::turn_around;
use crate::wire::icmpv6::{self, Icmpv6Packet, TYPE_DEST_UNREACHABLE, TYPE_PACKET_TOO_BIG};
use crate::wire::icmpv6_error::{self, QUOTE_MAX};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr, DEFAULT_HOP_LIMIT};
use crate::wire::{tcp, TcpPacket, TcpRepr};
use std::net::Ipv6Addr;

/// An ICMPv6 echo request to a VIP or an appliance address, received on `rx_port`, its IPv6
/// header at `frame[l2..]` and the message at `frame[at..]` (after any extension headers):
/// answered in place. The reply has no extension headers: the message moves up behind the
/// fixed header, and the frame then ends with it.
pub fn echo6<F: Frame>(snap: &Snapshot, rx_port: u16, frame: &mut F, (l2, at): (usize, usize)) -> Verdict {
    let Some(port) = snap.ports.get(usize::from(rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let (src, dst, end) = match frame.data().get(l2..).map(Ipv6Packet::new_checked) {
        Some(Ok(ip)) => (ip.src(), ip.dst(), l2 + ip.total_len()),
        _ => return Verdict::Drop(DropReason::Ipv6Truncated),
    };
    {
        let Some(Ok(icmp)) = frame.data().get(at..end).map(Icmpv6Packet::new_checked) else {
            return Verdict::Drop(DropReason::IcmpTruncated);
        };
        if icmp.msg_type() != icmpv6::TYPE_ECHO_REQUEST || icmp.code() != 0 {
            return Verdict::Drop(DropReason::Icmpv6Unsupported);
        }
        if !icmp.verify_checksum(src, dst) {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
    }
    let (len, fixed_end) = (end - at, l2 + ipv6::HEADER_LEN);
    let b = frame.data_mut();
    if let Ok(mut ip) = Ipv6Packet::new_checked(&mut b[l2..]) {
        // Shorter than it was: still inside the buffer.
        ip.set_payload_len(len as u16);
        ip.set_next_header(ipv6::NEXT_ICMPV6);
        ip.set_src(dst);
        ip.set_dst(src);
        ip.set_hop_limit(DEFAULT_HOP_LIMIT);
    }
    if at > fixed_end {
        b.copy_within(at..end, fixed_end);
    }
    if let Ok(mut ip) = Ipv6Packet::new_checked(&mut b[l2..]) {
        // Swapping the addresses leaves the pseudo-header's sum as it was, and the message's
        // length is the same.
        if let Ok(mut icmp) = Icmpv6Packet::new_checked(ip.payload_mut()) {
            icmp.make_echo_reply();
        }
    }
    turn_around(b, port.mac);
    // Extension headers gone, the frame ends with the message.
    let extra = b.len() - (fixed_end + len);
    if at > fixed_end && !frame.trim(extra) {
        return Verdict::Drop(DropReason::Ipv6Truncated);
    }
    Verdict::EchoReply { port: rx_port }
}

/// The client and the VIP of an IPv6 packet to a service; `None` for IPv4.
pub fn ends(snap: &Snapshot, p: &ToService) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let flow = p.flow_in(snap)?;
    if flow.src.as_v4().is_some() || flow.dst.as_v4().is_some() {
        return None;
    }
    Some((Ipv6Addr::from(flow.src.0), Ipv6Addr::from(flow.dst.0)))
}

/// The IPv6 header of a reply from `vip` to `client` carrying `payload_len` bytes of
/// `next_header`.
fn header(vip: Ipv6Addr, client: Ipv6Addr, next_header: u8, payload_len: usize) -> Ipv6Repr {
    Ipv6Repr {
        src: vip,
        dst: client,
        next_header,
        payload_len,
        traffic_class: 0,
        flow_label: 0,
        hop_limit: DEFAULT_HOP_LIMIT,
    }
}

/// Turns the client's packet into the ICMPv6 error `(type, code, rest)` from the VIP, quoting
/// as much of the packet as keeps the error within the minimum MTU. False if the frame
/// cannot hold it.
fn error<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService, kind: (u8, u8, [u8; 4])) -> bool {
    let (Some(port), Some((client, vip))) = (snap.ports.get(usize::from(p.rx_port)), ends(snap, p)) else {
        return false;
    };
    let (l2, head) = (p.l2(), ipv6::HEADER_LEN + icmpv6::HEADER_LEN);
    let quote = usize::from(p.inner_len).min(QUOTE_MAX);
    // Room for the new IPv6 and ICMPv6 headers between Ethernet and the packet they quote.
    if !frame.prepend(head) {
        return false;
    }
    let total = l2 + head + quote;
    let len = frame.data().len();
    if len < total || !frame.trim(len - total) {
        return false;
    }
    let b = frame.data_mut();
    b.copy_within(head..head + l2, 0);
    turn_around(b, port.mac);
    header(vip, client, ipv6::NEXT_ICMPV6, icmpv6::HEADER_LEN + quote).emit(&mut b[l2..]);
    let (msg_type, code, rest) = kind;
    icmpv6_error::write_header(&mut b[l2 + ipv6::HEADER_LEN..total], msg_type, code, rest, vip, client);
    true
}

/// [`super::reply::unreachable`] for an IPv6 client: ICMPv6 port unreachable.
pub fn unreachable<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService) -> Verdict {
    match error(snap, frame, p, (TYPE_DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE, [0; 4])) {
        true => Verdict::Unreachable { port: p.rx_port },
        false => Verdict::Drop(DropReason::NoBackend),
    }
}

/// [`super::reply::frag_needed`] for an IPv6 client: ICMPv6 packet too big with `mtu`.
pub fn too_big<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService, mtu: u16) -> Verdict {
    let rest = u32::from(mtu).to_be_bytes();
    match error(snap, frame, p, (TYPE_PACKET_TOO_BIG, 0, rest)) {
        true => Verdict::TooBig { port: p.rx_port },
        false => Verdict::Drop(DropReason::MtuExceeded),
    }
}

/// [`super::reply::reset`] for an IPv6 client: the RST's sequence and acknowledgment numbers
/// and flags `(seq, ack, flags)` are the caller's; Ethernet, a fixed IPv6 header and a 20-byte
/// TCP header are written, the rest of the packet goes.
pub fn reset<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService, rst: (u32, u32, u8)) -> Verdict {
    let fail = Verdict::Drop(DropReason::BackendRemoved);
    let (Some(port), Some((client, vip))) = (snap.ports.get(usize::from(p.rx_port)), ends(snap, p)) else {
        return fail;
    };
    let l2 = p.l2();
    let keep = l2 + ipv6::HEADER_LEN + tcp::HEADER_LEN;
    if frame.data().len() < keep {
        return fail;
    }
    let b = frame.data_mut();
    turn_around(b, port.mac);
    header(vip, client, ipv6::NEXT_TCP, tcp::HEADER_LEN).emit(&mut b[l2..]);
    let (seq, ack, flags) = rst;
    let seg =
        TcpRepr { src_port: p.dst_port, dst_port: p.src_port, seq, ack, flags, window: 0, options: &[] };
    seg.emit_v6(&mut b[l2 + ipv6::HEADER_LEN..keep], vip, client);
    let len = frame.data().len();
    if !frame.trim(len - keep) {
        return fail;
    }
    Verdict::Reset { port: p.rx_port }
}

/// The client's TCP segment at `b[l2..]` (IPv6, headers checked by the first pass): its
/// sequence and acknowledgment numbers and its length in sequence space but for SYN and FIN.
pub fn segment(b: &[u8], l2: usize) -> Option<(u32, u32, u32)> {
    let packet = b.get(l2..)?;
    let at = ipv6::upper_layer(packet).ok()?.offset;
    let end = ipv6::Ipv6Packet::new_checked(packet).ok()?.total_len();
    let t = TcpPacket::new_checked(packet.get(at..end)?).ok()?;
    Some((t.seq(), t.ack(), t.payload().len() as u32))
}
