//! Replies the appliance builds in place and sends back to a packet's sender: ICMP echo
//! replies, and for a service's client a TCP RST, ICMP port unreachable or fragmentation
//! needed (IPv6's are [`super::reply6`]'s).

use super::context::ToService;
use super::outcome::Verdict;
use super::reply6;
use crate::io::Frame;
use crate::snapshot::{NoBackend, Service, Snapshot};
use crate::stats::DropReason;
use crate::wire::ethernet::turn_around;
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::icmp_error;
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr, DEFAULT_TTL};
use crate::wire::{checksum, tcp, TcpPacket, TcpRepr};
use std::net::Ipv4Addr;

/// An ICMP message at `frame[l2..]` to a VIP or an appliance address, received on
/// `rx_port`: an echo request is answered in place.
pub fn echo<F: Frame>(snap: &Snapshot, rx_port: u16, frame: &mut F, l2: usize) -> Verdict {
    let Some(port) = snap.ports.get(usize::from(rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let b = frame.data_mut();
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut b[l2..]) else {
        return Verdict::Drop(DropReason::Ipv4Malformed);
    };
    {
        let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) else {
            return Verdict::Drop(DropReason::IcmpTruncated);
        };
        if icmp.msg_type() != icmp::TYPE_ECHO_REQUEST || icmp.code() != 0 {
            return Verdict::Drop(DropReason::IcmpUnsupported);
        }
        if !icmp.verify_checksum() {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
    }
    let (src, dst, ttl) = (ip.src(), ip.dst(), ip.ttl());
    // Swapping addresses leaves the header sum unchanged; only the TTL word changes.
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(DEFAULT_TTL);
    let word = |t: u8| u16::from_be_bytes([t, ipv4::PROTO_ICMP]);
    let c = checksum::update16(ip.checksum(), word(ttl), word(DEFAULT_TTL));
    ip.set_checksum(c);
    if let Ok(mut icmp) = IcmpPacket::new_checked(ip.payload_mut()) {
        icmp.make_echo_reply();
    }
    turn_around(b, port.mac);
    Verdict::EchoReply { port: rx_port }
}

/// A new flow that no backend can take: what the service's `on_no_backend` says.
pub fn no_backend<F: Frame>(snap: &Snapshot, svc: &Service, frame: &mut F, p: &ToService) -> Verdict {
    match svc.on_no_backend {
        NoBackend::Drop => Verdict::Drop(DropReason::NoBackend),
        NoBackend::Reset if p.tcp_flags.is_some() => match reset(snap, frame, p) {
            Verdict::Drop(_) => Verdict::Drop(DropReason::NoBackend),
            v => v,
        },
        NoBackend::Reset => Verdict::Drop(DropReason::NoBackend),
        NoBackend::IcmpUnreachable => unreachable(snap, frame, p),
    }
}

/// The client and the VIP of a packet to a service (IPv4 only, so far).
fn ends(snap: &Snapshot, p: &ToService) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let flow = p.flow_in(snap)?;
    Some((flow.src.as_v4()?, flow.dst.as_v4()?))
}

/// Turns a client's packet into ICMP destination unreachable, port unreachable (RFC 792),
/// from the VIP: the original IP header and the first 8 bytes after it are quoted.
pub fn unreachable<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService) -> Verdict {
    if reply6::ends(snap, p).is_some() {
        return reply6::unreachable(snap, frame, p);
    }
    let fail = Verdict::Drop(DropReason::NoBackend);
    let (Some(port), Some((client, vip))) = (snap.ports.get(usize::from(p.rx_port)), ends(snap, p)) else {
        return fail;
    };
    let l2 = p.l2();
    let ihl = match Ipv4Packet::new_checked(&frame.data()[l2..]) {
        Ok(ip) => ip.header_len(),
        Err(_) => return fail,
    };
    let quoted = ihl + 8; // TCP and UDP headers are at least 8 bytes: classify checked them
    let reply_len = ipv4::HEADER_LEN + icmp::HEADER_LEN + quoted;
    let grow = reply_len.saturating_sub(usize::from(p.inner_len));
    if grow > 0 && !frame.append(grow) {
        return fail;
    }
    let b = frame.data_mut();
    if b.len() < l2 + reply_len {
        return fail;
    }
    // Move the quoted bytes behind the new IP and ICMP headers.
    b.copy_within(l2..l2 + quoted, l2 + ipv4::HEADER_LEN + icmp::HEADER_LEN);
    turn_around(b, port.mac);
    let kind = (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE, [0; 4]);
    error_headers(b, l2, (vip, client), quoted, kind);
    let len = frame.data().len();
    if !frame.trim(len - (l2 + reply_len)) {
        return fail;
    }
    Verdict::Unreachable { port: p.rx_port }
}

/// Turns a client's packet (DF set) that is too big for the tunnel into ICMP destination
/// unreachable, fragmentation needed (RFC 1191), from the VIP, with the largest packet the
/// tunnel takes (`mtu`) and as much of the packet as ICMP quotes (548 bytes).
pub fn frag_needed<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService, mtu: u16) -> Verdict {
    if reply6::ends(snap, p).is_some() {
        return reply6::too_big(snap, frame, p, mtu);
    }
    let fail = Verdict::Drop(DropReason::MtuExceeded);
    let (Some(port), Some((client, vip))) = (snap.ports.get(usize::from(p.rx_port)), ends(snap, p)) else {
        return fail;
    };
    let (l2, head) = (p.l2(), ipv4::HEADER_LEN + icmp::HEADER_LEN);
    let quote = usize::from(p.inner_len).min(icmp_error::QUOTE_MAX);
    // Room for the new IP and ICMP headers between Ethernet and the packet they quote.
    if !frame.prepend(head) {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    let total = l2 + head + quote;
    let len = frame.data().len();
    if len < total || !frame.trim(len - total) {
        return fail;
    }
    let b = frame.data_mut();
    b.copy_within(head..head + l2, 0);
    turn_around(b, port.mac);
    let [hi, lo] = mtu.to_be_bytes();
    let kind = (icmp::TYPE_DEST_UNREACHABLE, icmp_error::CODE_FRAG_NEEDED, [0, 0, hi, lo]);
    error_headers(b, l2, (vip, client), quote, kind);
    Verdict::TooBig { port: p.rx_port }
}

/// Writes, from the VIP to the client, the IPv4 header and an ICMP error's header
/// `(type, code, rest)` in front of the `quote` bytes already in place after them, at
/// `b[l2 + 28..]`.
fn error_headers(
    b: &mut [u8],
    l2: usize,
    (vip, client): (Ipv4Addr, Ipv4Addr),
    quote: usize,
    kind: (u8, u8, [u8; 4]),
) {
    let ip_hdr = Ipv4Repr {
        src: vip,
        dst: client,
        protocol: ipv4::PROTO_ICMP,
        payload_len: icmp::HEADER_LEN + quote,
        tos: 0,
        ident: 0,
        dont_frag: false,
        ttl: DEFAULT_TTL,
    };
    ip_hdr.emit(&mut b[l2..l2 + ipv4::HEADER_LEN]);
    let (msg_type, code, rest) = kind;
    let at = l2 + ipv4::HEADER_LEN;
    icmp_error::write_header(&mut b[at..at + icmp::HEADER_LEN + quote], msg_type, code, rest);
}

/// The client's TCP segment at `b[l2..]` (IPv4 or IPv6): its sequence and acknowledgment
/// numbers and its data length.
fn segment(b: &[u8], l2: usize) -> Option<(u32, u32, u32)> {
    if b.get(l2).is_some_and(|v| v >> 4 == 6) {
        return reply6::segment(b, l2);
    }
    let ip = Ipv4Packet::new_checked(b.get(l2..)?).ok()?;
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((t.seq(), t.ack(), t.payload().len() as u32))
}

/// Turns a client's TCP segment into the RST that ends its connection (RFC 9293 3.10.7.1:
/// the reset takes its sequence number from the segment's ACK, or acknowledges the segment),
/// addressed back to the sender from the VIP. UDP is dropped.
pub fn reset<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService) -> Verdict {
    let fail = Verdict::Drop(DropReason::BackendRemoved);
    let Some(flags) = p.tcp_flags.filter(|f| f & tcp::RST == 0) else {
        return fail;
    };
    let l2 = p.l2();
    let Some((seq, ack, data_len)) = segment(frame.data(), l2) else {
        return fail;
    };
    let seg_len = data_len + u32::from(flags & tcp::SYN != 0) + u32::from(flags & tcp::FIN != 0);
    let (rst_seq, rst_ack, rst_flags) = if flags & tcp::ACK != 0 {
        (ack, 0, tcp::RST)
    } else {
        (0, seq.wrapping_add(seg_len), tcp::RST | tcp::ACK)
    };
    if reply6::ends(snap, p).is_some() {
        return reply6::reset(snap, frame, p, (rst_seq, rst_ack, rst_flags));
    }
    let (Some(port), Some((client, vip))) = (snap.ports.get(usize::from(p.rx_port)), ends(snap, p)) else {
        return fail;
    };
    // Keep Ethernet, a 20-byte IP header and a 20-byte TCP header (both written whole); drop
    // options and data.
    let keep = l2 + ipv4::HEADER_LEN + tcp::HEADER_LEN;
    let b = frame.data_mut();
    turn_around(b, port.mac);
    let ip_hdr = Ipv4Repr {
        src: vip,
        dst: client,
        protocol: ipv4::PROTO_TCP,
        payload_len: tcp::HEADER_LEN,
        tos: 0,
        ident: 0,
        dont_frag: true,
        ttl: DEFAULT_TTL,
    };
    ip_hdr.emit(&mut b[l2..l2 + ipv4::HEADER_LEN]);
    let rst = TcpRepr {
        src_port: p.dst_port,
        dst_port: p.src_port,
        seq: rst_seq,
        ack: rst_ack,
        flags: rst_flags,
        window: 0,
        options: &[],
    };
    rst.emit_v4(&mut b[l2 + ipv4::HEADER_LEN..keep], vip, client);
    let len = frame.data().len();
    if !frame.trim(len - keep) {
        return fail;
    }
    Verdict::Reset { port: p.rx_port }
}
