//! A client's packet to a service, forwarded by its session, or by the scheduler's choice for
//! a new flow (which makes the session); `nat` services' packets get the backend's address and
//! port. SYN-proxied services' handshakes are left to the proxy stage.

use super::choose;
use super::context::{over_new, over_rate, Ctx, ToService};
use super::outcome::{dropped, FromClient, ProxyTurn, ToBackend};
use super::segment;
use crate::io::Frame;
use crate::session::{self, flags::PROXIED, Insert, Session, TcpState};
use crate::snapshot::{Forwarding, OnRemoved, Service};
use crate::stats::DropReason;
use crate::synproxy;
use crate::wire::endpoint::{self, End};
use crate::wire::tcp;

/// The backend (an index) a packet goes to, and a SYN-proxied session's sequence and
/// timestamp offsets.
type Chosen = (u16, Option<(u32, u32)>);

/// Forwards a client's packet by its session or makes one.
#[inline(always)]
pub fn by_session<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService) -> FromClient {
    let (snap, table) = (cx.snap, cx.sessions);
    let si = usize::from(p.service);
    let Some(svc) = snap.services.get(si) else {
        return dropped(DropReason::NoService);
    };
    if let Some(reason) = over_rate(cx, svc, si, p.inner_len) {
        return dropped(reason);
    }
    let now = session::tick(cx.now_ns);
    let key = p.session_key();
    let found = table.lookup(&key, p.session_hash);
    if let Some(flags) = p.tcp_flags {
        if let Some(turn) = proxy_turn(cx, frame, p, svc, found, flags) {
            return FromClient::Proxy(turn);
        }
    }
    let chosen = match found {
        Some(f) => match existing(cx, svc, si, p, f, now) {
            Ok(c) => c,
            Err(next) => return next,
        },
        None => None,
    };
    let (bi, proxied) = match chosen {
        Some(c) => c,
        None => match new_flow(cx, svc, si, p, now) {
            Ok(bi) => (bi, None),
            Err(next) => return next,
        },
    };
    if p.tcp_flags.is_some_and(|f| f & tcp::SYN != 0) {
        clamp(cx, frame, p.l2(), svc.mss_clamp);
    }
    if svc.forwarding == Forwarding::Nat {
        if let Err(reason) = translate(frame, p.l2(), svc, bi, (proxied, p.later_fragment)) {
            return dropped(reason);
        }
    }
    FromClient::Tunnel(ToBackend { at: p.l2(), inner: p.inner(), service: p.service, backend: bi })
}

/// Whether the SYN proxy takes a TCP segment (flags `flags`) of a SYN-proxied service: while
/// its backend's handshake is under way, and when it opens a connection (with no session,
/// or a SYN on a finished connection's 4-tuple; or a SYN with another ISN on a proxied
/// connection's, which only a new connection can send: the client lost the old one and the
/// port came round again).
#[inline(always)]
fn proxy_turn<F: Frame>(
    cx: &Ctx<'_>,
    frame: &F,
    p: &ToService,
    svc: &Service,
    found: Option<(usize, Session)>,
    flags: u8,
) -> Option<ProxyTurn> {
    let fresh_syn = flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
    match found {
        Some((slot, s)) if s.state == TcpState::Connecting => Some(ProxyTurn::Connecting { slot, s, flags }),
        Some((slot, s))
            if svc.synproxy_mss.is_some()
                && fresh_syn
                && (s.state.is_closing()
                    || (s.flags & PROXIED != 0
                        && segment::read(frame.data(), p.l2()).map(|g| g.seq) != Ok(s.client_isn))) =>
        {
            cx.sessions.remove(slot, &p.session_key());
            Some(ProxyTurn::First { flags })
        }
        None if svc.synproxy_mss.is_some() => Some(ProxyTurn::First { flags }),
        _ => None,
    }
}

/// A packet with session `s` in table slot `slot`: its backend, refreshed; `None` if a SYN
/// starts a new connection on a finished one's 5-tuple. A session whose backend left (or
/// failed its health checks) is remapped or ends, by the service's `on_backend_removed`.
#[inline(always)]
fn existing(
    cx: &mut Ctx<'_>,
    svc: &Service,
    si: usize,
    p: &ToService,
    (slot, s): (usize, Session),
    now: u32,
) -> Result<Option<Chosen>, FromClient> {
    let table = cx.sessions;
    let fresh_syn =
        p.tcp_flags.is_some_and(|f| f & (tcp::SYN | tcp::ACK) == tcp::SYN) && s.state.is_closing();
    if fresh_syn {
        table.remove(slot, &p.session_key());
        return Ok(None);
    }
    let alive =
        svc.backend_by_id(s.backend).filter(|&i| svc.backends.get(usize::from(i)).is_some_and(|b| !b.down));
    if let Some(bi) = alive {
        table.touch(slot, &s, now, TcpState::next(Some(s.state), p.tcp_flags));
        cx.events.hits += 1;
        let proxied = (s.flags & PROXIED != 0).then_some((s.seq_delta, s.ts_delta));
        return Ok(Some((bi, proxied)));
    }
    match svc.on_backend_removed {
        // Another backend cannot take over a proxied connection's sequence numbers.
        OnRemoved::Remap if s.flags & PROXIED == 0 => {
            let key = p.session_key();
            let Some(bi) = choose::backend(cx, svc, si, p, now) else {
                table.remove(slot, &key);
                return Err(FromClient::NoBackend);
            };
            let id = svc.backends.get(usize::from(bi)).map_or(0, |b| b.id);
            table.set_backend(slot, &key, id, now);
            cx.events.remapped += 1;
            Ok(Some((bi, None)))
        }
        _ => {
            table.remove(slot, &p.session_key());
            Err(FromClient::Reset)
        }
    }
}

/// A new flow: the limits on new connections, the scheduler's backend, and its session (if
/// the table has room; someone else's made meanwhile holds).
#[inline(always)]
fn new_flow(cx: &mut Ctx<'_>, svc: &Service, si: usize, p: &ToService, now: u32) -> Result<u16, FromClient> {
    if let Some(reason) = over_new(cx, svc, si) {
        return Err(dropped(reason));
    }
    let Some(mut bi) = choose::backend(cx, svc, si, p, now) else {
        return Err(FromClient::NoBackend);
    };
    let table = cx.sessions;
    let id = svc.backends.get(usize::from(bi)).map_or(0, |b| b.id);
    if table.is_full() {
        cx.events.fallback += 1;
        return Ok(bi);
    }
    let s = Session::new(id, TcpState::next(None, p.tcp_flags), now);
    match table.insert(&p.session_key(), p.session_hash, &s) {
        Insert::Inserted(_) => cx.events.created += 1,
        // Someone else (a peer's sync, another queue) made it first: theirs holds.
        Insert::Exists(_, other) => bi = svc.backend_by_id(other.backend).unwrap_or(bi),
        Insert::Full => cx.events.fallback += 1,
    }
    Ok(bi)
}

/// A client's SYN through the tunnel: its MSS lowered to the service's `mss_clamp`.
#[inline(never)]
fn clamp<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, l2: usize, max: Option<u16>) {
    if max.is_some_and(|m| segment::clamp_mss(frame.data_mut(), l2, m)) {
        cx.events.mss_clamped += 1;
    }
}

/// `nat`: the packet at `frame[l2..]` to backend `bi`'s address and port, and a SYN-proxied
/// session's segment into the backend's sequence space.
#[inline(always)]
fn translate<F: Frame>(
    frame: &mut F,
    l2: usize,
    svc: &Service,
    bi: u16,
    (proxied, later_fragment): (Option<(u32, u32)>, bool),
) -> Result<(), DropReason> {
    let backend = svc.backends.get(usize::from(bi)).ok_or(DropReason::NoBackend)?;
    let b = frame.data_mut();
    let ip = b.get_mut(l2..).ok_or(DropReason::L4Truncated)?;
    if later_fragment {
        return endpoint::rewrite_address(ip, End::Dst, backend.address).map_err(|_| DropReason::L4Truncated);
    }
    endpoint::rewrite(ip, End::Dst, backend.address, backend.port).map_err(|_| DropReason::L4Truncated)?;
    if let Some((seq_delta, ts_delta)) = proxied {
        synproxy::client_to_backend(b, l2, seq_delta, ts_delta).map_err(|_| DropReason::SynproxyMalformed)?;
    }
    Ok(())
}
