//! The SYN proxy, backend side: the backend's answer to the appliance's SYN completes the
//! session and is answered with the client's held data (or a bare ACK); a refusal resets the
//! client; a challenge ACK from an older connection on the 4-tuple is reset for the client.

use super::context::Ctx;
use super::egress::inner;
use super::outcome::{dropped, BackendSegment, FromBackend, ToBackend, ToClient};
use super::segment::{self, SegView};
use crate::io::Frame;
use crate::session::{flags::BACKEND_WSCALE_SHIFT, flags::CLIENT_TS, Session, TcpState};
use crate::snapshot::Service;
use crate::stats::DropReason;
use crate::synproxy::{self, HOLD_BYTES};
use crate::wire::endpoint::{self, End};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp_options;
use crate::wire::{tcp, TcpPacket, TcpRepr};
use std::net::IpAddr;

/// The backend's answer to the appliance's SYN (the session is `Connecting`): a SYN-ACK for
/// the client's ISN completes the session; a RST is passed to the client as the end of its
/// connection; an ACK from another sequence space is reset.
pub fn answer<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, b: &BackendSegment) -> FromBackend {
    let Some(svc) = cx.snap.services.get(usize::from(b.service)) else {
        return dropped(DropReason::NoService);
    };
    let Ok(seg) = segment::read(frame.data(), b.at) else {
        return dropped(DropReason::SynproxyMalformed);
    };
    let isn_ack = b.s.client_isn.wrapping_add(1);
    if seg.flags & tcp::RST != 0 {
        cx.sessions.remove(b.slot, &b.key);
        cx.proxy.hold.take(b.slot, b.hash, None);
        cx.events.backend_failures += 1;
        return refused(frame, b, svc);
    }
    if seg.flags & (tcp::SYN | tcp::ACK) == tcp::ACK && seg.ack != isn_ack {
        let next = challenge_ack(frame, b, svc, seg.ack);
        if matches!(next, FromBackend::Tunnel(_)) {
            cx.events.backend_resets += 1;
        }
        return next;
    }
    if seg.flags & (tcp::SYN | tcp::ACK) != tcp::SYN | tcp::ACK || seg.ack != isn_ack {
        return dropped(DropReason::SynproxyBackendUnexpected);
    }
    let Some(done) = complete(cx, b, &seg) else {
        return dropped(DropReason::SynproxyBackendUnexpected);
    };
    cx.events.handshakes += 1;
    // The client's held segment, if any (see `proxy::hold` for the other side).
    crate::sync::fence(crate::sync::Ordering::SeqCst);
    let mut buf = [0u8; HOLD_BYTES];
    let Some(n) = cx.proxy.hold.take(b.slot, b.hash, Some(&mut buf)) else {
        return ack(frame, &BackendSegment { s: done, ..*b });
    };
    release(frame, b, svc, &done, &buf[..n])
}

/// The session, completed by the backend's SYN-ACK `seg`: the sequence and timestamp offsets
/// between the halves, and the backend's window scale. `None` if it is no longer
/// `Connecting`.
fn complete(cx: &Ctx<'_>, b: &BackendSegment, seg: &SegView) -> Option<Session> {
    let s = &b.s;
    let ts_delta = match seg.opts.timestamps {
        Some((val, _)) if s.flags & CLIENT_TS != 0 => val.wrapping_sub(s.ts_delta),
        _ => 0,
    };
    let ws = seg.opts.wscale.unwrap_or(0).min(14);
    cx.sessions.replace(b.slot, &b.key, |now| {
        (now.state == TcpState::Connecting).then(|| Session {
            state: TcpState::Established,
            seq_delta: seg.seq.wrapping_sub(s.seq_delta),
            ts_delta,
            flags: now.flags | ws << BACKEND_WSCALE_SHIFT,
            ..*now
        })
    })
}

/// The backend refused: the client's connection (established, as far as it knows) is reset,
/// in the appliance's sequence space.
fn refused<F: Frame>(frame: &mut F, b: &BackendSegment, svc: &Service) -> FromBackend {
    let client = b.key.addr.to_ip();
    let rst = TcpRepr {
        src_port: svc.port,
        dst_port: b.key.port,
        seq: b.s.seq_delta.wrapping_add(1),
        ack: 0,
        flags: tcp::RST,
        window: 0,
        options: &[],
    };
    let Some(len) = segment::write(frame, b.at, (svc.vip, client), (0, 0), &rst) else {
        return dropped(DropReason::NoHeadroom);
    };
    FromBackend::Client(ToClient { at: b.at, len, client, service: b.service })
}

/// An ACK from another sequence space (acknowledging `ack`): the backend still holds an older
/// connection on this 4-tuple (its TIME_WAIT of an earlier connection from the same client
/// port; a server that closes first keeps one for a minute) and answers the SYN with a
/// challenge ACK. The client's own stack, in SYN-SENT, would reset it at the sequence it
/// acknowledged (RFC 9293, 3.10.7.3), which ends the old connection; so does the appliance,
/// on the client's behalf. The client's next retransmission sends the SYN again.
fn challenge_ack<F: Frame>(frame: &mut F, b: &BackendSegment, svc: &Service, ack: u32) -> FromBackend {
    let Some(backend) = svc.backends.get(usize::from(b.backend)) else {
        return dropped(DropReason::NoBackend);
    };
    let client = b.key.addr.to_ip();
    let rst = TcpRepr {
        src_port: b.key.port,
        dst_port: backend.port,
        seq: ack,
        ack: 0,
        flags: tcp::RST,
        window: 0,
        options: &[],
    };
    to_backend(frame, b, (client, backend.address), &rst)
}

/// A segment the appliance makes on the client's behalf (`t`, between `ends`), written in
/// place of the backend's (out of its tunnel) and put in the tunnel back toward that backend.
fn to_backend<F: Frame>(
    frame: &mut F,
    b: &BackendSegment,
    ends: (IpAddr, IpAddr),
    t: &TcpRepr<'_>,
) -> FromBackend {
    if !frame.adj(b.at) {
        return dropped(DropReason::Ipv4Truncated);
    }
    let Some(len) = segment::write(frame, 0, ends, (0, 0), t) else {
        return dropped(DropReason::NoHeadroom);
    };
    FromBackend::Tunnel(ToBackend {
        at: 0,
        inner: inner(len, 0, 0, true),
        service: b.service,
        backend: b.backend,
    })
}

/// Out of the tunnel, then the client's held packet (`held`) in its place, translated as any
/// later one, to the backend.
fn release<F: Frame>(
    frame: &mut F,
    b: &BackendSegment,
    svc: &Service,
    done: &Session,
    held: &[u8],
) -> FromBackend {
    let Some(backend) = svc.backends.get(usize::from(b.backend)) else {
        return dropped(DropReason::NoBackend);
    };
    if !frame.adj(b.at) || !segment::resize(frame, held.len()) {
        return dropped(DropReason::NoHeadroom);
    }
    let bytes = frame.data_mut();
    bytes.copy_from_slice(held);
    if endpoint::rewrite(bytes, End::Dst, backend.address, backend.port).is_err()
        || synproxy::client_to_backend(bytes, 0, done.seq_delta, done.ts_delta).is_err()
    {
        return dropped(DropReason::SynproxyMalformed);
    }
    let outer = match (Ipv6Packet::new_checked(&bytes[..]), Ipv4Packet::new_checked(&bytes[..])) {
        (Ok(ip), _) => inner(held.len(), ip.traffic_class(), 0, true),
        (_, Ok(ip)) => inner(held.len(), ip.tos(), ip.ident(), ip.dont_frag()),
        _ => return dropped(DropReason::SynproxyMalformed),
    };
    FromBackend::Tunnel(ToBackend { at: 0, inner: outer, service: b.service, backend: b.backend })
}

/// Turns the backend's SYN-ACK (at `frame[b.at..]`) into the ACK that completes its
/// handshake, from the client: the client's window, and the timestamps the SYN-ACK carries
/// reflected (its echo is the client's last timestamp, the backend has seen it).
pub fn ack<F: Frame>(frame: &mut F, b: &BackendSegment) -> FromBackend {
    let Ok(seg) = segment::read(frame.data(), b.at) else {
        return dropped(DropReason::SynproxyMalformed);
    };
    let Some((client, cport, backend, bport)) = ends(frame.data().get(b.at..).unwrap_or_default()) else {
        return dropped(DropReason::SynproxyMalformed);
    };
    let ts = seg.opts.timestamps.map(|(val, ecr)| tcp_options::emit_timestamps(ecr, val));
    let ack = TcpRepr {
        src_port: cport,
        dst_port: bport,
        seq: seg.ack,
        ack: seg.seq.wrapping_add(1),
        flags: tcp::ACK,
        window: b.s.client_window,
        options: ts.as_ref().map_or(&[], |t| &t[..]),
    };
    to_backend(frame, b, (client, backend), &ack)
}

/// The ends of the backend's TCP segment at the front of `packet` (IPv4 or IPv6): the client
/// and its port (the destination), the backend and its port.
fn ends(packet: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16)> {
    let (_, range) = crate::wire::transport_of(packet).ok()?;
    let t = TcpPacket::new_checked(packet.get(range)?).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match Ipv6Packet::new_checked(packet) {
        Ok(ip) => (ip.src().into(), ip.dst().into()),
        Err(_) => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            (ip.src().into(), ip.dst().into())
        }
    };
    Some((dst, t.dst_port(), src, t.src_port()))
}
