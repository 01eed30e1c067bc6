//! The SYN proxy, client side: a SYN is answered with a cookie and no state; the ACK with a
//! valid cookie makes the session (`Connecting`) and becomes the SYN to the backend; until the
//! backend answers, the client's first data is held and its retransmissions resend the SYN.
//! (The backend side is `proxy_backend`; the shared state and translations `crate::synproxy`.)

use super::choose;
use super::context::{over_new, Ctx, ToService};
use super::egress::inner;
use super::outcome::{dropped, FromClient, ProxyTurn, ToBackend, Verdict};
use super::segment;
use crate::cookie::{self, CookieError, SynOptions};
use crate::io::Frame;
use crate::session::{self, Insert, Session, TcpState};
use crate::snapshot::Service;
use crate::stats::DropReason;
use crate::synproxy;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::tcp_options::{self, SynOffer, SYN_OPTIONS_MAX};
use crate::wire::{tcp, TcpRepr};
use std::net::IpAddr;

/// The cookie period now.
pub fn cookie_period(now_ns: u64) -> u32 {
    cookie::period(now_ns / 1_000_000_000)
}

/// A client's segment that the proxy takes (see `forward::proxy_turn`).
pub fn client<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, turn: ProxyTurn) -> FromClient {
    let Some(svc) = cx.snap.services.get(usize::from(p.service)) else {
        return dropped(DropReason::NoService);
    };
    match turn {
        ProxyTurn::First { flags } => first(cx, frame, p, svc, flags),
        ProxyTurn::Connecting { slot, s, flags } => connecting(cx, frame, p, svc, (slot, &s), flags),
    }
}

/// A segment with no session: a SYN is answered with a cookie; an ACK carrying a valid cookie
/// makes the session and becomes the SYN to the backend; anything else is dropped.
fn first<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, svc: &Service, flags: u8) -> FromClient {
    if flags & tcp::RST != 0 || flags & (tcp::SYN | tcp::ACK) != tcp::SYN && flags & tcp::ACK == 0 {
        return dropped(DropReason::SynproxyNoSession);
    }
    if flags & tcp::SYN != 0 {
        if flags & tcp::ACK != 0 {
            return dropped(DropReason::SynproxyNoSession);
        }
        return cookie_reply(cx, frame, p, svc).into();
    }
    // An ACK: the handshake's last segment, if its cookie says so.
    let Ok(seg) = segment::read(frame.data(), p.l2()) else {
        return dropped(DropReason::SynproxyMalformed);
    };
    let opts = match cx.proxy.keys.check(&p.flow(svc), seg.seq, seg.ack, cookie_period(cx.now_ns)) {
        Ok(o) => o,
        Err(CookieError::Stale) => return dropped(DropReason::SynCookieStale),
        Err(CookieError::Invalid) => return dropped(DropReason::SynCookieInvalid),
    };
    cx.events.acks_valid += 1;
    let (si, now, table) = (usize::from(p.service), session::tick(cx.now_ns), cx.sessions);
    if let Some(reason) = over_new(cx, svc, si) {
        return dropped(reason);
    }
    let Some(bi) = choose::backend(cx, svc, si, p, now) else {
        cx.events.backend_failures += 1;
        return FromClient::NoBackend;
    };
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return dropped(DropReason::NoBackend);
    };
    if table.is_full() {
        return dropped(DropReason::SynproxyTableFull);
    }
    use session::flags::{CLIENT_TS, CLIENT_WSCALE, PROXIED};
    let s = Session {
        flags: PROXIED
            | if opts.wscale.is_some() { CLIENT_WSCALE } else { 0 }
            | if opts.timestamps { CLIENT_TS } else { 0 },
        seq_delta: seg.ack.wrapping_sub(1),
        ts_delta: seg.opts.timestamps.map_or(0, |(_, ecr)| ecr),
        client_isn: seg.seq.wrapping_sub(1),
        client_window: seg.window,
        ..Session::new(backend.id, TcpState::Connecting, now)
    };
    let slot = match table.insert(&p.session_key(), p.session_hash, &s) {
        Insert::Inserted(slot) => {
            cx.events.created += 1;
            slot
        }
        // Made meanwhile (a duplicate of this ACK on another queue): carry on with it.
        Insert::Exists(slot, other) if other.state == TcpState::Connecting => {
            return connecting(cx, frame, p, svc, (slot, &other), flags);
        }
        Insert::Exists(..) => return dropped(DropReason::SynproxyNoSession),
        Insert::Full => return dropped(DropReason::SynproxyTableFull),
    };
    if seg.payload_len > 0 || flags & tcp::FIN != 0 {
        // Data with the handshake's ACK: kept for the backend.
        let inner = &frame.data()[p.l2()..p.l2() + usize::from(p.inner_len)];
        match cx.proxy.hold.hold(slot, p.session_hash, inner, now) {
            Ok(()) => cx.events.held += 1,
            Err(_) => cx.events.not_held += 1,
        }
    }
    let tsval = seg.opts.timestamps.map(|(val, _)| val);
    backend_syn(frame, p, svc, bi, &s, (opts, tsval))
}

/// Turns a client's SYN into the SYN-ACK that answers it: the cookie as sequence number, the
/// options the client offered acknowledged (MSS the service's, window scale
/// [`synproxy::WSCALE`], SACK, timestamps on the appliance's clock), and a window of one
/// segment.
fn cookie_reply<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, svc: &Service) -> Verdict {
    let Some(port) = cx.snap.ports.get(usize::from(p.rx_port)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Ok(seg) = segment::read(frame.data(), p.l2()) else {
        return Verdict::Drop(DropReason::SynproxyMalformed);
    };
    let (o, flow) = (&seg.opts, p.flow(svc));
    let opts = SynOptions::from_syn(o.mss, o.wscale, o.sack_perm, o.timestamps.is_some());
    let cookie = cx.proxy.keys.make(&flow, seg.seq, cookie_period(cx.now_ns), opts);
    // What the client's link takes: its port's MTU less IP and TCP headers (40 for IPv4, 60
    // for IPv6), at least the family's minimum (536, 1220).
    let (headers, least) = if p.src.as_v4().is_some() { (40, 536) } else { (60, 1220) };
    let mss = svc.synproxy_mss.unwrap_or(least).min(port.mtu.saturating_sub(headers)).max(least);
    let offer = SynOffer {
        mss,
        wscale: opts.wscale.map(|_| synproxy::WSCALE),
        sack_perm: opts.sack,
        timestamps: o.timestamps.map(|(val, _)| (synproxy::ts_clock(cx.now_ns), val)),
    };
    let mut options = [0u8; SYN_OPTIONS_MAX];
    let n = tcp_options::emit_syn(&offer, &mut options);
    let synack = TcpRepr {
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        seq: cookie,
        ack: seg.seq.wrapping_add(1),
        flags: tcp::SYN | tcp::ACK,
        window: synproxy::FIRST_WINDOW.min(mss),
        options: &options[..n],
    };
    if let Ok(mut eth) = EthernetFrame::new_checked(frame.data_mut()) {
        eth.reply_to_sender(port.mac);
    }
    if segment::write(frame, p.l2(), (flow.dst.to_ip(), flow.src.to_ip()), (0, 0), &synack).is_none() {
        return Verdict::Drop(DropReason::NoHeadroom);
    }
    cx.events.cookies += 1;
    Verdict::SynAck { port: p.rx_port }
}

/// Turns a client's segment into the SYN that opens the backend's connection on the client's
/// behalf: the client's initial sequence number and the options its SYN offered (and its
/// current timestamp `tsval`), to the backend's address and port.
fn backend_syn<F: Frame>(
    frame: &mut F,
    p: &ToService,
    svc: &Service,
    bi: u16,
    s: &Session,
    (opts, tsval): (SynOptions, Option<u32>),
) -> FromClient {
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return dropped(DropReason::NoBackend);
    };
    let offer = SynOffer {
        // The backend's segments come through the tunnel too: no larger than the path allows.
        mss: opts.mss.min(svc.synproxy_mss.unwrap_or(opts.mss)),
        wscale: opts.wscale,
        sack_perm: opts.sack,
        timestamps: if opts.timestamps { tsval.map(|v| (v, 0)) } else { None },
    };
    let mut options = [0u8; SYN_OPTIONS_MAX];
    let n = tcp_options::emit_syn(&offer, &mut options);
    let syn = TcpRepr {
        src_port: p.src_port,
        dst_port: backend.port,
        seq: s.client_isn,
        ack: 0,
        flags: tcp::SYN,
        window: s.client_window,
        options: &options[..n],
    };
    to_backend(frame, p, (backend.address, bi), &syn)
}

/// A segment the proxy makes on the client's behalf (`t`, from the client's address), written
/// in place of the client's packet and put in the tunnel toward backend `bi` at `dst`.
fn to_backend<F: Frame>(
    frame: &mut F,
    p: &ToService,
    (dst, bi): (IpAddr, u16),
    t: &TcpRepr<'_>,
) -> FromClient {
    let Some(len) = segment::write(frame, p.l2(), (p.src.to_ip(), dst), (p.tos, p.ident), t) else {
        return dropped(DropReason::NoHeadroom);
    };
    FromClient::Tunnel(ToBackend {
        at: p.l2(),
        inner: inner(len, p.tos, p.ident, true),
        service: p.service,
        backend: bi,
    })
}

/// A client's segment while the backend's handshake is under way (session `s` in `slot`):
/// the first data segment is held; a retransmission or bare ACK sends the backend's SYN
/// again; a RST ends both halves; a SYN starts over.
fn connecting<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &ToService,
    svc: &Service,
    (slot, s): (usize, &Session),
    flags: u8,
) -> FromClient {
    let key = p.session_key();
    let Ok(seg) = segment::read(frame.data(), p.l2()) else {
        return dropped(DropReason::SynproxyMalformed);
    };
    let backend = svc.backend_by_id(s.backend).filter(|&i| svc.backends.get(usize::from(i)).is_some());
    if flags & tcp::RST != 0 {
        cx.sessions.remove(slot, &key);
        cx.proxy.hold.take(slot, p.session_hash, None);
        return match backend {
            Some(bi) => reset_backend(frame, p, svc, bi, seg.seq),
            None => dropped(DropReason::BackendRemoved),
        };
    }
    if flags & tcp::SYN != 0 {
        if flags & tcp::ACK != 0 {
            return dropped(DropReason::SynproxyNoSession);
        }
        if seg.seq != s.client_isn {
            // Another connection on the same ports: this one is over.
            cx.sessions.remove(slot, &key);
            cx.proxy.hold.take(slot, p.session_hash, None);
        }
        return cookie_reply(cx, frame, p, svc).into();
    }
    let Some(bi) = backend.filter(|&i| svc.backends.get(usize::from(i)).is_some_and(|b| !b.down)) else {
        // Its backend went away before answering.
        cx.sessions.remove(slot, &key);
        cx.proxy.hold.take(slot, p.session_hash, None);
        cx.events.backend_failures += 1;
        return FromClient::Reset;
    };
    if seg.payload_len > 0 || flags & tcp::FIN != 0 {
        // `None`: a retransmission of the held segment; ask the backend again, below.
        if let Some(next) = hold(cx, frame, p, slot) {
            return next;
        }
    }
    // The backend has not answered: send its SYN again.
    let period = cookie_period(cx.now_ns);
    let check =
        cx.proxy.keys.check(&p.flow(svc), s.client_isn.wrapping_add(1), s.seq_delta.wrapping_add(1), period);
    let Ok(opts) = check else {
        return dropped(DropReason::SynCookieStale);
    };
    let tsval = seg.opts.timestamps.map(|(val, _)| val);
    backend_syn(frame, p, svc, bi, s, (opts, tsval))
}

/// Holds a client's data segment (in `slot`) until the backend answers: what becomes of
/// it, or `None` if it is a retransmission of the one held (then the SYN goes again).
fn hold<F: Frame>(cx: &mut Ctx<'_>, frame: &F, p: &ToService, slot: usize) -> Option<FromClient> {
    let inner = &frame.data()[p.l2()..p.l2() + usize::from(p.inner_len)];
    match cx.proxy.hold.hold(slot, p.session_hash, inner, session::tick(cx.now_ns)) {
        Ok(()) => {
            cx.events.held += 1;
            // If the backend answered meanwhile, it may have looked for a held segment
            // before this one was there. Both sides publish, fence, then look at the
            // other's; whoever takes the segment sends it (loom: synproxy::loom_tests).
            crate::sync::fence(crate::sync::Ordering::SeqCst);
            let answered = cx
                .sessions
                .lookup(&p.session_key(), p.session_hash)
                .is_some_and(|(_, now)| now.state != TcpState::Connecting);
            if answered && cx.proxy.hold.take(slot, p.session_hash, None).is_some() {
                return Some(FromClient::Forward);
            }
            Some(Verdict::Consumed.into())
        }
        Err(_) if cx.proxy.hold.holds(slot, p.session_hash) => None,
        Err(_) => Some(dropped(DropReason::SynproxyNotHeld)),
    }
}

/// The client reset its half-open connection: the backend's ends too (its receive window
/// starts at the client's ISN + 1, where the client's sequence numbers, `seq`, are).
fn reset_backend<F: Frame>(frame: &mut F, p: &ToService, svc: &Service, bi: u16, seq: u32) -> FromClient {
    let Some(b) = svc.backends.get(usize::from(bi)) else {
        return dropped(DropReason::BackendRemoved);
    };
    let rst = TcpRepr {
        src_port: p.src_port,
        dst_port: b.port,
        seq,
        ack: 0,
        flags: tcp::RST,
        window: 0,
        options: &[],
    };
    to_backend(frame, p, (b.address, bi), &rst)
}
