//! The per-packet decision: parse, classify, rewrite in place, return a verdict.
//!
//! Pure: takes a frame, the snapshot and the time; no I/O, no allocation, no locks, no logging.
//! Every malformed input ends in `Verdict::Drop(reason)`; nothing here panics on any bytes.

use crate::cookie::{self, CookieError, SynOptions};
use crate::encap::Inner;
use crate::flow::{Addr, FlowKey, SELECT_SEED};
use crate::io::Frame;
use crate::limit::{self, Isolation, LimitState, Rate, Which};
use crate::sched::{self, SchedState};
use crate::session::{self, Insert, Session, SessionKey, SessionTable, TcpState};
use crate::snapshot::{Forwarding, NoBackend, OnRemoved, Port, Scheduler, Service, ServiceKey, Snapshot};
use crate::stats::{Counter, DropReason};
use crate::synproxy::{self, SynProxy, HOLD_BYTES};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Header, Ipv4Packet, Ipv4Repr};
use crate::wire::tcp;
use crate::wire::tcp_options::{self, SynOffer, TcpOptions, SYN_OPTIONS_MAX};
use crate::wire::{checksum, GrePacket, TcpPacket, TcpRepr, UdpPacket, WireError, BROADCAST_MAC};
use arrayvec::ArrayVec;
use std::net::Ipv4Addr;

/// TTL of packets the appliance originates (tunnel outer headers, echo replies).
pub const DEFAULT_TTL: u8 = 64;

/// What to do with a packet after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ARP reply, built in place; send it out of `port`.
    ArpReply {
        port: u16,
    },
    /// An ICMP echo reply, built in place; send it out of `port`.
    EchoReply {
        port: u16,
    },
    /// Encapsulated toward a backend of a service; send it out of `port`.
    Tunnel {
        port: u16,
        service: u16,
        backend: u16,
    },
    /// A NAT reply from a backend, out of its tunnel and translated back to VIP:port; send it
    /// out of `port` toward the client.
    NatReply {
        port: u16,
        service: u16,
    },
    /// A TCP RST to the client, built in place (its session's backend was removed and the
    /// service's policy is `reset`); send it out of `port`.
    Reset {
        port: u16,
    },
    /// ICMP destination unreachable to the client, built in place (no backend, policy
    /// `icmp_unreachable`); send it out of `port`.
    Unreachable {
        port: u16,
    },
    /// SYN proxy: the SYN-ACK with a cookie answering a client's SYN, built in place; send it
    /// out of `port`.
    SynAck {
        port: u16,
    },
    /// Used up with nothing to send (an ARP reply or announcement the appliance learned from).
    Consumed,
    Drop(DropReason),
}

/// Next hops whose MAC a worker should ask for after the burst (ARP requests).
pub type Resolve = ArrayVec<u16, 16>;

/// Session events of a burst, added to the worker's counters after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionEvents {
    pub created: u32,
    pub hits: u32,
    pub fallback: u32,
    pub remapped: u32,
    /// SYN proxy: cookies sent, valid ACKs, backend handshakes completed, backends that
    /// refused or could not be reached, segments held and segments that could not be.
    pub cookies: u32,
    pub acks_valid: u32,
    pub handshakes: u32,
    pub backend_failures: u32,
    pub held: u32,
    pub not_held: u32,
    /// SYN proxy: backends that answered the appliance's SYN for an older connection on the
    /// same 4-tuple, reset so that the SYN can be sent again.
    pub backend_resets: u32,
}

/// Per-call context: the snapshot loaded for this burst, the shared session table, the
/// worker's scheduler state, the time, and side requests.
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub sessions: &'a SessionTable,
    pub proxy: &'a SynProxy,
    pub sched: &'a mut SchedState,
    pub now_ns: u64,
    pub resolve: &'a mut Resolve,
    /// Number of next-hop MACs learned during this call.
    pub learned: u32,
    pub events: SessionEvents,
    /// Resource isolation: the worker's buckets and shares (`None`: limits are not enforced).
    pub limiter: Option<Limiter<'a>>,
}

/// A worker's part in resource isolation, for one burst.
pub struct Limiter<'a> {
    /// The worker's token buckets, aligned with the snapshot's services.
    pub state: &'a mut LimitState,
    /// Shares and the overload flag, set by the control thread.
    pub isolation: &'a Isolation,
    /// The worker's per-service limit counters (`WorkerStats::limits`).
    pub counters: &'a [Counter],
    pub worker: usize,
    /// Read once for the burst: whether `on_overload` limits apply.
    pub overloaded: bool,
}

impl<'a> Limiter<'a> {
    #[inline]
    fn count(&self, i: usize, n: u64) {
        if let Some(c) = self.counters.get(i) {
            c.add(n);
        }
    }

    /// Takes `n` units of rate `r` for service `svc` (at snapshot index `si`) at `now_ns`:
    /// true if the limit lets them through (or the service has no such limit).
    #[inline]
    fn take(&mut self, svc: &Service, si: usize, r: Rate, n: u64, now_ns: u64) -> bool {
        let Some(lim) = svc.limits.rate(r) else { return true };
        self.count(limit::offered_index(svc.id, r), n);
        if !lim.applies(self.overloaded) {
            return true;
        }
        let share = self.isolation.share(self.worker, svc.id, r, lim.value);
        let Some(buckets) = self.state.buckets(si) else { return true };
        buckets[r as usize].take(now_ns, share, n)
    }
}

impl<'a> Ctx<'a> {
    pub fn new(
        snap: &'a Snapshot,
        sessions: &'a SessionTable,
        proxy: &'a SynProxy,
        sched: &'a mut SchedState,
        now_ns: u64,
        resolve: &'a mut Resolve,
    ) -> Ctx<'a> {
        sched.prepare(snap);
        Ctx {
            snap,
            sessions,
            proxy,
            sched,
            now_ns,
            resolve,
            learned: 0,
            events: SessionEvents::default(),
            limiter: None,
        }
    }

    /// Enforces the services' limits with `limiter`'s buckets and shares.
    pub fn with_limiter(mut self, limiter: Limiter<'a>) -> Ctx<'a> {
        limiter.state.prepare(self.snap.generation, self.snap.services.iter().map(|s| s.id));
        self.limiter = Some(limiter);
        self
    }
}

/// The packets/s and bytes/s limits, on every packet of a client toward a service: the drop
/// reason if one holds it back.
#[inline(always)]
fn over_rate(cx: &mut Ctx<'_>, svc: &Service, si: usize, p: &ToService) -> Option<DropReason> {
    if svc.limited {
        rate_limits(cx, svc, si, p)
    } else {
        None
    }
}

#[inline(never)]
fn rate_limits(cx: &mut Ctx<'_>, svc: &Service, si: usize, p: &ToService) -> Option<DropReason> {
    let now = cx.now_ns;
    let l = cx.limiter.as_mut()?;
    if !l.take(svc, si, Rate::Packets, 1, now) {
        l.count(limit::dropped_index(svc.id, Which::Packets), 1);
        return Some(DropReason::LimitPackets);
    }
    if !l.take(svc, si, Rate::Bytes, u64::from(p.inner_len), now) {
        l.count(limit::dropped_index(svc.id, Which::Bytes), 1);
        return Some(DropReason::LimitBytes);
    }
    None
}

/// The concurrent-sessions and connections/s limits, before a new connection makes any state:
/// the drop reason if one holds it back.
#[inline(always)]
fn over_new(cx: &mut Ctx<'_>, svc: &Service, si: usize) -> Option<DropReason> {
    if svc.limited {
        new_limits(cx, svc, si)
    } else {
        None
    }
}

#[inline(never)]
fn new_limits(cx: &mut Ctx<'_>, svc: &Service, si: usize) -> Option<DropReason> {
    let (now, table) = (cx.now_ns, cx.sessions);
    let l = cx.limiter.as_mut()?;
    if let Some(cap) = svc.limits.sessions.filter(|c| c.applies(l.overloaded)) {
        if u64::from(table.service_active(svc.id)) >= cap.value {
            l.count(limit::dropped_index(svc.id, Which::Sessions), 1);
            return Some(DropReason::LimitSessions);
        }
    }
    if !l.take(svc, si, Rate::Connections, 1, now) {
        l.count(limit::dropped_index(svc.id, Which::Connections), 1);
        return Some(DropReason::LimitConnections);
    }
    None
}

use Verdict::Drop;

/// A packet bound for a service, as the first pass left it: enough to finish it without
/// parsing again.
#[derive(Debug, Clone, Copy)]
pub struct ToService {
    pub flow: FlowKey,
    pub service: u16,
    /// The stable id of the service (half of the session key).
    pub service_id: u16,
    /// The session slot hash (the backend-selection hash is computed only if there is no
    /// session: most packets have one and never need it).
    pub session_hash: u64,
    /// TCP flags (`None` for UDP).
    pub tcp_flags: Option<u8>,
    rx_port: u16,
    l2: u8,
    inner_len: u16,
    tos: u8,
    ident: u16,
    dont_frag: bool,
}

impl ToService {
    /// The key of the flow's session.
    #[inline]
    pub fn session_key(&self) -> SessionKey {
        SessionKey::flow(self.flow.src, self.flow.src_port, self.service_id)
    }
}

/// The outcome of the first pass over a packet.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Decided (and rewritten, if it is sent).
    Done(Verdict),
    /// For a service: the backend choice and encapsulation are left to [`finish`], so a worker
    /// can classify a whole burst, prefetch every packet's table entries, then finish them.
    Service(ToService),
}

/// Decides the fate of one frame received on `rx_port`, rewriting it in place when it is sent:
/// [`classify`] then [`finish`].
pub fn process<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F) -> Verdict {
    match classify(cx, rx_port, frame) {
        Stage::Done(v) => v,
        Stage::Service(p) => finish(cx, frame, &p),
    }
}

/// The first pass: parse and classify; answer ARP and echo; find the service and the flow's
/// hash for traffic to a service.
pub fn classify<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, frame: &mut F) -> Stage {
    use Stage::Done;
    if !frame.is_contiguous() {
        return Done(Drop(DropReason::MultiSegment));
    }
    let Some(port) = cx.snap.ports.get(usize::from(rx_port)) else {
        return Done(Drop(DropReason::NotForUs));
    };
    let (l2_len, ethertype) = {
        let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
            return Done(Drop(DropReason::EthTruncated));
        };
        let dst = eth.dst();
        // Unicast must be ours; broadcast and multicast go on (ARP, then not_for_us).
        if dst != port.mac && dst[0] & 1 == 0 {
            return Done(Drop(DropReason::ForeignMac));
        }
        if eth.vlan() != port.vlan {
            return Done(Drop(DropReason::VlanMismatch));
        }
        (eth.header_len(), eth.ethertype())
    };
    match ethertype {
        ethernet::ETHERTYPE_ARP => Done(handle_arp(cx, rx_port, port, frame, l2_len)),
        ethernet::ETHERTYPE_IPV4 => handle_ipv4(cx, rx_port, port, frame, l2_len),
        _ => Done(Drop(DropReason::EthertypeUnsupported)),
    }
}

fn handle_arp<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Verdict {
    let (op, sha, spa, tpa) = match ArpPacket::new_checked(&frame.data()[l2..]) {
        Ok(a) => (a.operation(), a.sender_mac(), a.sender_ip(), a.target_ip()),
        Err(WireError::Truncated) => return Drop(DropReason::ArpTruncated),
        Err(_) => return Drop(DropReason::ArpUnsupported),
    };
    let for_us = tpa == port.address || cx.snap.is_vip(tpa);
    let gratuitous = spa == tpa;
    // Learn only next hops we already send to, only from plausible unicast senders, and only
    // from a reply, a request aimed at us, or an announcement: bytes from the wire never
    // create entries.
    let mut learned = false;
    if sha[0] & 1 == 0 && sha != [0; 6] && (op == arp::OP_REPLY || for_us || gratuitous) {
        if let Some(nh) = cx.snap.nexthop(rx_port, spa) {
            learned = true;
            if nh.learn(sha, cx.now_ns) {
                cx.learned += 1;
            }
        }
    }
    if op == arp::OP_REQUEST && for_us && !gratuitous {
        let b = frame.data_mut();
        b[0..6].copy_from_slice(&sha);
        b[6..12].copy_from_slice(&port.mac);
        arp::emit(&mut b[l2..], arp::OP_REPLY, port.mac, tpa, sha, spa);
        return Verdict::ArpReply { port: rx_port };
    }
    if learned {
        Verdict::Consumed
    } else {
        Drop(DropReason::ArpNotForUs)
    }
}

fn handle_ipv4<F: Frame>(cx: &mut Ctx<'_>, rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Stage {
    use Stage::Done;
    let data = frame.data();
    let ip = match data.get(l2..).map(Ipv4Header::parse) {
        Some(Ok(ip)) => ip,
        None | Some(Err(WireError::Truncated)) => return Done(Drop(DropReason::Ipv4Truncated)),
        Some(Err(_)) => return Done(Drop(DropReason::Ipv4Malformed)),
    };
    if !ip.checksum_ok {
        return Done(Drop(DropReason::Ipv4BadChecksum));
    }
    let (dst, proto) = (ip.dst, ip.protocol);
    let l4 = proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP;

    // Fast path: unfragmented TCP/UDP to a service, found with one lookup.
    let mut l4_error = None;
    if l4 && !ip.is_fragment() {
        // Inside the buffer: Ipv4Header::parse checked header_len <= total_len <= its length.
        let payload =
            data.get(l2 + usize::from(ip.header_len)..l2 + usize::from(ip.total_len)).unwrap_or_default();
        let ports = if proto == ipv4::PROTO_TCP {
            TcpPacket::new_checked(payload).map(|t| (t.src_port(), t.dst_port(), Some(t.flags())))
        } else {
            UdpPacket::new_checked(payload).map(|u| (u.src_port(), u.dst_port(), None))
        };
        match ports {
            Ok((src_port, dst_port, tcp_flags)) => {
                let snap = cx.snap;
                let found = snap.service(ServiceKey::new(Addr::v4(dst), dst_port, proto));
                if let Some((service, svc)) =
                    found.and_then(|i| Some((i, snap.services.get(usize::from(i))?)))
                {
                    let flow = FlowKey {
                        src: Addr::v4(ip.src),
                        dst: Addr::v4(dst),
                        src_port,
                        dst_port,
                        protocol: proto,
                    };
                    let session = SessionKey::flow(flow.src, src_port, svc.id);
                    return Stage::Service(ToService {
                        flow,
                        service,
                        service_id: svc.id,
                        session_hash: cx.sessions.hash(&session),
                        tcp_flags,
                        rx_port,
                        l2: l2 as u8,
                        inner_len: ip.total_len,
                        tos: ip.tos,
                        ident: ip.ident,
                        dont_frag: ip.dont_frag(),
                    });
                }
            }
            Err(e) => l4_error = Some(e),
        }
    }

    // A NAT reply: a backend's host tunnels it to the appliance's address.
    if (proto == ipv4::PROTO_GRE || proto == ipv4::PROTO_IPIP)
        && cx.snap.has_nat
        && !ip.is_fragment()
        && cx.snap.is_local(dst)
    {
        let (ihl, total) = (usize::from(ip.header_len), usize::from(ip.total_len));
        return Done(nat_reply(cx, frame, l2, ihl, total, proto));
    }

    // Everything else.
    let vip = cx.snap.is_vip(dst);
    if !vip && !cx.snap.is_local(dst) {
        return Done(Drop(DropReason::NotForUs));
    }
    if ip.is_fragment() {
        return Done(Drop(DropReason::Ipv4Fragment));
    }
    Done(match proto {
        ipv4::PROTO_ICMP => echo_reply(rx_port, port, frame, l2),
        _ if l4 && vip => match l4_error {
            Some(WireError::Truncated) => Drop(DropReason::L4Truncated),
            Some(_) => Drop(DropReason::L4Malformed),
            None => Drop(DropReason::NoService),
        },
        _ if l4 => Drop(DropReason::LocalUnsupported),
        _ => Drop(DropReason::ProtocolUnsupported),
    })
}

fn echo_reply<F: Frame>(rx_port: u16, port: &Port, frame: &mut F, l2: usize) -> Verdict {
    let b = frame.data_mut();
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut b[l2..]) else {
        return Drop(DropReason::Ipv4Malformed);
    };
    {
        let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) else {
            return Drop(DropReason::IcmpTruncated);
        };
        if icmp.msg_type() != icmp::TYPE_ECHO_REQUEST || icmp.code() != 0 {
            return Drop(DropReason::IcmpUnsupported);
        }
        if !icmp.verify_checksum() {
            return Drop(DropReason::IcmpBadChecksum);
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
    let (dst_mac, src_mac) = (b[6..12].try_into().unwrap_or(BROADCAST_MAC), port.mac);
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&src_mac);
    Verdict::EchoReply { port: rx_port }
}

/// The second pass for a packet to a service: find its session or choose a backend and make
/// one, then encapsulate. SYN-proxied services answer handshakes themselves ([`proxy_first`]).
#[inline(always)]
pub fn finish<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService) -> Verdict {
    let snap = cx.snap;
    let table = cx.sessions;
    let l2 = usize::from(p.l2);
    let si = usize::from(p.service);
    let Some(svc) = snap.services.get(si) else {
        return Drop(DropReason::NoService);
    };
    if let Some(reason) = over_rate(cx, svc, si, p) {
        return Drop(reason);
    }
    let now = session::tick(cx.now_ns);
    let key = p.session_key();

    let found = table.lookup(&key, p.session_hash);
    if let Some(flags) = p.tcp_flags {
        let fresh_syn = flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
        match found {
            Some((slot, s)) if s.state == TcpState::Connecting => {
                return proxy_connecting(cx, frame, p, svc, slot, &s, flags);
            }
            // A SYN on a finished connection's 4-tuple starts a new one; so does a SYN with
            // another ISN on a proxied connection's, which only a new connection can send
            // (the client lost the old one; the port came round again).
            Some((slot, s))
                if svc.synproxy_mss.is_some()
                    && fresh_syn
                    && (matches!(s.state, TcpState::Closing | TcpState::Closed)
                        || (s.flags & session::flags::PROXIED != 0
                            && read_segment(frame.data(), l2).map(|g| g.seq) != Ok(s.client_isn))) =>
            {
                table.remove(slot, &key);
                return proxy_first(cx, frame, p, svc, flags);
            }
            None if svc.synproxy_mss.is_some() => return proxy_first(cx, frame, p, svc, flags),
            _ => {}
        }
    }

    let mut chosen = None;
    // A SYN-proxied session's sequence and timestamp offsets.
    let mut proxied = None;
    if let Some((slot, s)) = found {
        let fresh_syn = p.tcp_flags.is_some_and(|f| f & (tcp::SYN | tcp::ACK) == tcp::SYN)
            && matches!(s.state, TcpState::Closing | TcpState::Closed);
        if fresh_syn {
            // A new connection on the 5-tuple of a finished one: it starts over.
            table.remove(slot, &key);
        } else if let Some(bi) = svc
            .backend_by_id(s.backend)
            .filter(|&i| svc.backends.get(usize::from(i)).is_some_and(|b| !b.down))
        {
            table.touch(slot, &s, now, TcpState::next(Some(s.state), p.tcp_flags));
            cx.events.hits += 1;
            chosen = Some(bi);
            if s.flags & session::flags::PROXIED != 0 {
                proxied = Some((s.seq_delta, s.ts_delta));
            }
        } else {
            // Its backend left the config, or failed its health checks.
            match svc.on_backend_removed {
                // Another backend cannot take over a proxied connection's sequence numbers.
                OnRemoved::Remap if s.flags & session::flags::PROXIED == 0 => {
                    let Some(bi) = choose_new(cx, svc, si, p, now) else {
                        table.remove(slot, &key);
                        return no_backend(cx.snap, svc, frame, p);
                    };
                    let id = svc.backends.get(usize::from(bi)).map_or(0, |b| b.id);
                    table.set_backend(slot, &key, id, now);
                    cx.events.remapped += 1;
                    chosen = Some(bi);
                }
                _ => {
                    table.remove(slot, &key);
                    return reset_client(cx.snap, frame, p);
                }
            }
        }
    }
    let bi = match chosen {
        Some(bi) => bi,
        None => {
            if let Some(reason) = over_new(cx, svc, si) {
                return Drop(reason);
            }
            let Some(mut bi) = choose_new(cx, svc, si, p, now) else {
                return no_backend(cx.snap, svc, frame, p);
            };
            let id = svc.backends.get(usize::from(bi)).map_or(0, |b| b.id);
            if table.is_full() {
                cx.events.fallback += 1;
            } else {
                let s = Session::new(id, TcpState::next(None, p.tcp_flags), now);
                match table.insert(&key, p.session_hash, &s) {
                    Insert::Inserted(_) => cx.events.created += 1,
                    // Someone else (a peer's sync, another queue) made it first: theirs holds.
                    Insert::Exists(_, other) => bi = svc.backend_by_id(other.backend).unwrap_or(bi),
                    Insert::Full => cx.events.fallback += 1,
                }
            }
            bi
        }
    };
    if svc.forwarding == Forwarding::Nat {
        let Some(backend) = svc.backends.get(usize::from(bi)) else {
            return Drop(DropReason::NoBackend);
        };
        let b = frame.data_mut();
        if !rewrite(b, l2, Field::Dst, backend.address, backend.port) {
            return Drop(DropReason::L4Truncated);
        }
        if let Some((seq_delta, ts_delta)) = proxied {
            if synproxy::client_to_backend(b, l2, seq_delta, ts_delta).is_err() {
                return Drop(DropReason::SynproxyMalformed);
            }
        }
    }
    let inner = Inner { len: p.inner_len, tos: p.tos, ident: p.ident, dont_frag: p.dont_frag };
    encapsulate(cx, frame, l2, inner, p.service, svc, bi)
}

/// The outer header's copies of an inner packet's fields, for a packet of `len` bytes (too
/// long for any MTU if it does not fit 16 bits).
#[inline]
fn inner(len: usize, tos: u8, ident: u16, dont_frag: bool) -> Inner {
    Inner { len: u16::try_from(len).unwrap_or(u16::MAX), tos, ident, dont_frag }
}

/// Puts the inner packet at `frame[l2..l2 + inner.len]` into the service's tunnel toward
/// backend `bi`: Ethernet to the next hop, outer IPv4 (and GRE), from the backend's
/// [`OuterHeader`]. Anything after the inner packet (link padding) is dropped.
#[inline(always)]
fn encapsulate<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    l2: usize,
    inner: Inner,
    service: u16,
    svc: &Service,
    bi: u16,
) -> Verdict {
    let snap = cx.snap;
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return Drop(DropReason::NoBackend);
    };
    let Some(nh) = snap.nexthops.get(usize::from(backend.nexthop)) else {
        return Drop(DropReason::NeighborUnresolved);
    };
    let mac = nh.mac();
    if nh.claim_request(cx.now_ns) {
        // Unknown, or known but due for a refresh (then the old MAC is still used).
        let _ = cx.resolve.try_push(backend.nexthop);
    }
    let Some(mac) = mac else {
        return Drop(DropReason::NeighborUnresolved);
    };
    let outer = &backend.outer;
    let inner_len = usize::from(inner.len);
    if !outer.fits(inner_len) {
        return Drop(DropReason::MtuExceeded);
    }
    // Drop link padding after the inner packet, then make room in front of it.
    let padding = frame.data().len().saturating_sub(l2 + inner_len);
    if !frame.trim(padding) {
        return Drop(DropReason::Ipv4Truncated);
    }
    // l2 <= 18 < 14 + 20
    if !frame.prepend(outer.len() - l2) {
        return Drop(DropReason::NoHeadroom);
    }
    if !outer.write(frame.data_mut(), mac, inner) {
        return Drop(DropReason::Ipv4Truncated);
    }
    Verdict::Tunnel { port: nh.port, service, backend: bi }
}

/// Which end of a packet [`rewrite`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Src,
    Dst,
}

/// Sets the source or destination address and port of the IPv4 TCP/UDP packet at `b[ip..]`,
/// updating the IPv4 and TCP/UDP checksums for the change (RFC 1624; a UDP checksum of zero,
/// "none", stays zero). False, with nothing changed, if the headers are not all there.
fn rewrite(b: &mut [u8], ip: usize, which: Field, addr: Ipv4Addr, port: u16) -> bool {
    let Some(&vihl) = b.get(ip) else { return false };
    let (ihl, proto) = (usize::from(vihl & 0x0f) * 4, b.get(ip + 9).copied().unwrap_or(0));
    let (a_at, p_at) = match which {
        Field::Src => (ip + 12, ip + ihl),
        Field::Dst => (ip + 16, ip + ihl + 2),
    };
    let c_at = match proto {
        ipv4::PROTO_TCP => ip + ihl + 16,
        ipv4::PROTO_UDP => ip + ihl + 6,
        _ => return false,
    };
    if b.len() < c_at + 2 || ihl < ipv4::HEADER_LEN {
        return false;
    }
    let word = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let old_addr = u32::from_be_bytes([b[a_at], b[a_at + 1], b[a_at + 2], b[a_at + 3]]);
    let new_addr = u32::from(addr);
    let old_port = word(b, p_at);
    b[a_at..a_at + 4].copy_from_slice(&addr.octets());
    b[p_at..p_at + 2].copy_from_slice(&port.to_be_bytes());
    let ip_sum = checksum::update32(word(b, ip + 10), old_addr, new_addr);
    b[ip + 10..ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let l4_sum = word(b, c_at);
    if !(proto == ipv4::PROTO_UDP && l4_sum == 0) {
        let c = checksum::update16(checksum::update32(l4_sum, old_addr, new_addr), old_port, port);
        b[c_at..c_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    true
}

/// A packet a backend's host tunneled back to the appliance (`nat` services): find the
/// session it answers by (VPC, backend address and port, client address and port), take it out
/// of the tunnel, give it the VIP and service port as source, and send it toward the client.
/// SYN-proxied sessions have theirs translated, and the backend's SYN-ACK is answered here
/// ([`proxy_backend_answer`]).
fn nat_reply<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    l2: usize,
    outer_ihl: usize,
    outer_len: usize,
    proto: u8,
) -> Verdict {
    let snap = cx.snap;
    let Some(outer) = frame.data().get(l2..l2 + outer_len) else {
        return Drop(DropReason::Ipv4Truncated);
    };
    // The tunnel: GRE's key is the VPC; IPIP is the physical network.
    let (vpc, tunnel_len) = if proto == ipv4::PROTO_GRE {
        let Ok(g) = GrePacket::new_checked(&outer[outer_ihl..]) else {
            return Drop(DropReason::TunnelMalformed);
        };
        if g.protocol() != ethernet::ETHERTYPE_IPV4 || !g.verify_checksum() {
            return Drop(DropReason::TunnelMalformed);
        }
        (g.key(), outer_ihl + g.header_len())
    } else {
        (None, outer_ihl)
    };
    // The reply itself: backend -> client, TCP or UDP, whole.
    let (backend, client, bport, cport, iproto, flags, inner_len) = {
        let Ok(ip) = Ipv4Packet::new_checked(&outer[tunnel_len..]) else {
            return Drop(DropReason::NatReplyMalformed);
        };
        if !ip.verify_checksum() || ip.is_fragment() {
            return Drop(DropReason::NatReplyMalformed);
        }
        let ports = match ip.protocol() {
            ipv4::PROTO_TCP => {
                TcpPacket::new_checked(ip.payload()).map(|t| (t.src_port(), t.dst_port(), Some(t.flags())))
            }
            ipv4::PROTO_UDP => {
                UdpPacket::new_checked(ip.payload()).map(|u| (u.src_port(), u.dst_port(), None))
            }
            _ => return Drop(DropReason::NatReplyMalformed),
        };
        let Ok((sport, dport, flags)) = ports else {
            return Drop(DropReason::NatReplyMalformed);
        };
        (ip.src(), ip.dst(), sport, dport, ip.protocol(), flags, ip.total_len())
    };
    // Its session: one of the services this backend serves, keyed by the client. When two
    // services share the backend, a client may have had a session with each from the same
    // port (two VIPs, one backend: one 4-tuple at the backend, which holds one connection on
    // it), so the newest session is the one the backend answers for; among equally new ones
    // a live state beats a closing one.
    let now = session::tick(cx.now_ns);
    let mut found = None;
    let rank = |s: &Session| (s.created, !matches!(s.state, TcpState::Closing | TcpState::Closed));
    for &si in snap.nat_services(vpc, Addr::v4(backend), bport, iproto) {
        let Some(svc) = snap.services.get(usize::from(si)) else { continue };
        let key = SessionKey::flow(Addr::v4(client), cport, svc.id);
        let hash = cx.sessions.hash(&key);
        let Some((slot, s)) = cx.sessions.lookup(&key, hash) else { continue };
        let owner = svc.backend_by_id(s.backend);
        let serves = owner
            .and_then(|i| svc.backends.get(usize::from(i)))
            .is_some_and(|b| b.address == backend && b.port == bport);
        let newer = |f: &(u16, &Service, u16, SessionKey, u64, usize, Session)| rank(&s) > rank(&f.6);
        if serves && found.as_ref().is_none_or(newer) {
            found = Some((si, svc, owner.unwrap_or(0), key, hash, slot, s));
        }
    }
    let Some((si, svc, bi, key, hash, slot, s)) = found else {
        return Drop(DropReason::NatNoSession);
    };
    let inner_at = l2 + tunnel_len;
    if s.state == TcpState::Connecting {
        let at = Held { slot, hash };
        return proxy_backend_answer(cx, frame, inner_at, svc, si, bi, (&key, at), &s);
    }
    cx.sessions.touch(slot, &s, now, TcpState::after_reply(s.state, flags));
    if s.flags & session::flags::PROXIED != 0 {
        let f = flags.unwrap_or(0);
        if f & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN | tcp::ACK {
            // The backend did not get the ACK that completed its handshake: again.
            return backend_ack(cx, frame, inner_at, svc, si, bi, &s);
        }
        let client_ws = s.flags & session::flags::CLIENT_WSCALE != 0;
        let scales = client_ws.then(|| (backend_wscale(s.flags), synproxy::WSCALE));
        let b = frame.data_mut();
        if synproxy::backend_to_client(b, inner_at, s.seq_delta, s.ts_delta, scales).is_err() {
            return Drop(DropReason::SynproxyMalformed);
        }
    }
    if !rewrite(frame.data_mut(), inner_at, Field::Src, svc.vip, svc.port) {
        return Drop(DropReason::NatReplyMalformed);
    }
    toward_client(cx, frame, inner_at, inner_len, client, si)
}

/// Sends the IPv4 packet at `frame[inner_at..inner_at + inner_len]` to `client`: everything
/// before it but room for Ethernet, and everything after it, goes; Ethernet toward the
/// client's next hop is written.
fn toward_client<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    inner_at: usize,
    inner_len: usize,
    client: Ipv4Addr,
    si: u16,
) -> Verdict {
    let snap = cx.snap;
    let Some(nhi) = snap.route_to(client) else {
        return Drop(DropReason::NoRouteToClient);
    };
    let Some(nh) = snap.nexthops.get(usize::from(nhi)) else {
        return Drop(DropReason::NoRouteToClient);
    };
    let mac = nh.mac();
    if nh.claim_request(cx.now_ns) {
        let _ = cx.resolve.try_push(nhi);
    }
    let Some(mac) = mac else {
        return Drop(DropReason::NeighborUnresolved);
    };
    let Some(out) = snap.ports.get(usize::from(nh.port)) else {
        return Drop(DropReason::NoRouteToClient);
    };
    if inner_len > usize::from(out.mtu) {
        return Drop(DropReason::MtuExceeded);
    }
    let eth = EthernetRepr { dst: mac, src: out.mac, vlan: out.vlan, ethertype: ethernet::ETHERTYPE_IPV4 };
    let l2_out = eth.header_len();
    if inner_at < l2_out {
        if !frame.prepend(l2_out - inner_at) {
            return Drop(DropReason::NoHeadroom);
        }
    } else if !frame.adj(inner_at - l2_out) {
        return Drop(DropReason::Ipv4Truncated);
    }
    let extra = frame.data().len().saturating_sub(l2_out + inner_len);
    if !frame.trim(extra) {
        return Drop(DropReason::Ipv4Truncated);
    }
    eth.emit(&mut frame.data_mut()[..l2_out]);
    Verdict::NatReply { port: nh.port, service: si }
}

// ---- SYN proxy -------------------------------------------------------------------------------

/// Where a session's held segment is: its table slot and hash.
#[derive(Debug, Clone, Copy)]
struct Held {
    slot: usize,
    hash: u64,
}

/// The backend's window scale kept in a proxied session's flags.
fn backend_wscale(flags: u8) -> u8 {
    (flags & session::flags::BACKEND_WSCALE) >> session::flags::BACKEND_WSCALE_SHIFT
}

/// The cookie period now.
fn cookie_period(now_ns: u64) -> u32 {
    cookie::period(now_ns / 1_000_000_000)
}

/// The parts of a TCP segment the proxy reads.
#[derive(Debug, Clone)]
struct SegView {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload_len: usize,
    opts: TcpOptions,
}

/// Reads the TCP/IPv4 packet at `b[at..]` (its headers were checked by the first pass).
fn read_segment(b: &[u8], at: usize) -> Result<SegView, WireError> {
    let ip = Ipv4Packet::new_checked(b.get(at..).ok_or(WireError::Truncated)?)?;
    let t = TcpPacket::new_checked(ip.payload())?;
    let opts = tcp_options::parse(&ip.payload()[tcp::HEADER_LEN..t.header_len()])?;
    Ok(SegView {
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        window: t.window(),
        payload_len: t.payload().len(),
        opts,
    })
}

/// Sizes the frame to `len` bytes (appending zeros or trimming the end).
fn resize<F: Frame>(frame: &mut F, len: usize) -> bool {
    let cur = frame.data().len();
    if len >= cur {
        frame.append(len - cur)
    } else {
        frame.trim(cur - len)
    }
}

/// Writes a TCP/IPv4 segment without data at `frame[at..]`, making the frame end with it; its
/// length.
fn write_segment<F: Frame>(
    frame: &mut F,
    at: usize,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    (tos, ident): (u8, u16),
    t: &TcpRepr<'_>,
) -> Option<usize> {
    let len = ipv4::HEADER_LEN + t.header_len();
    if !resize(frame, at + len) {
        return None;
    }
    let b = frame.data_mut();
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: ipv4::PROTO_TCP,
        payload_len: t.header_len(),
        tos,
        ident,
        dont_frag: true,
        ttl: DEFAULT_TTL,
    };
    ip.emit(&mut b[at..at + ipv4::HEADER_LEN]);
    t.emit_v4(&mut b[at + ipv4::HEADER_LEN..at + len], src, dst);
    Some(len)
}

/// A client's segment to a SYN-proxied service that has no session: a SYN is answered with
/// a cookie; an ACK carrying a valid cookie makes the session and becomes the SYN to the
/// backend; anything else is dropped. Nothing is kept for a SYN.
fn proxy_first<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &ToService,
    svc: &Service,
    flags: u8,
) -> Verdict {
    if flags & tcp::RST != 0 || flags & (tcp::SYN | tcp::ACK) != tcp::SYN && flags & tcp::ACK == 0 {
        return Drop(DropReason::SynproxyNoSession);
    }
    if flags & tcp::SYN != 0 {
        if flags & tcp::ACK != 0 {
            return Drop(DropReason::SynproxyNoSession);
        }
        return cookie_reply(cx, frame, p, svc);
    }
    // An ACK: the handshake's last segment, if its cookie says so.
    let l2 = usize::from(p.l2);
    let seg = match read_segment(frame.data(), l2) {
        Ok(s) => s,
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    let opts = match cx.proxy.keys.check(&p.flow, seg.seq, seg.ack, cookie_period(cx.now_ns)) {
        Ok(o) => o,
        Err(CookieError::Stale) => return Drop(DropReason::SynCookieStale),
        Err(CookieError::Invalid) => return Drop(DropReason::SynCookieInvalid),
    };
    cx.events.acks_valid += 1;
    let (si, now, table) = (usize::from(p.service), session::tick(cx.now_ns), cx.sessions);
    if let Some(reason) = over_new(cx, svc, si) {
        return Drop(reason);
    }
    let Some(bi) = choose_new(cx, svc, si, p, now) else {
        cx.events.backend_failures += 1;
        return no_backend(cx.snap, svc, frame, p);
    };
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return Drop(DropReason::NoBackend);
    };
    if table.is_full() {
        return Drop(DropReason::SynproxyTableFull);
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
    let key = p.session_key();
    let slot = match table.insert(&key, p.session_hash, &s) {
        Insert::Inserted(slot) => {
            cx.events.created += 1;
            slot
        }
        // Made meanwhile (a duplicate of this ACK on another queue): carry on with it.
        Insert::Exists(slot, other) if other.state == TcpState::Connecting => {
            return proxy_connecting(cx, frame, p, svc, slot, &other, flags);
        }
        Insert::Exists(..) => return Drop(DropReason::SynproxyNoSession),
        Insert::Full => return Drop(DropReason::SynproxyTableFull),
    };
    if seg.payload_len > 0 || flags & tcp::FIN != 0 {
        // Data with the handshake's ACK: kept for the backend.
        let inner = &frame.data()[l2..l2 + usize::from(p.inner_len)];
        match cx.proxy.hold.hold(slot, p.session_hash, inner, now) {
            Ok(()) => cx.events.held += 1,
            Err(_) => cx.events.not_held += 1,
        }
    }
    let tsval = seg.opts.timestamps.map(|(val, _)| val);
    backend_syn(cx, frame, p, svc, bi, &s, opts, tsval)
}

/// Turns a client's SYN into the SYN-ACK that answers it: the cookie as sequence number, the
/// options the client offered acknowledged (MSS the service's, window scale
/// [`synproxy::WSCALE`], SACK, timestamps on the appliance's clock), and a window of one
/// segment.
fn cookie_reply<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &ToService, svc: &Service) -> Verdict {
    let l2 = usize::from(p.l2);
    let Some(port) = cx.snap.ports.get(usize::from(p.rx_port)) else {
        return Drop(DropReason::NotForUs);
    };
    let seg = match read_segment(frame.data(), l2) {
        Ok(s) => s,
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    let o = &seg.opts;
    let opts = SynOptions::from_syn(o.mss, o.wscale, o.sack_perm, o.timestamps.is_some());
    let cookie = cx.proxy.keys.make(&p.flow, seg.seq, cookie_period(cx.now_ns), opts);
    let mss = svc.synproxy_mss.unwrap_or(536).min(port.mtu.saturating_sub(40)).max(536);
    let offer = SynOffer {
        mss,
        wscale: opts.wscale.map(|_| synproxy::WSCALE),
        sack_perm: opts.sack,
        timestamps: o.timestamps.map(|(val, _)| (synproxy::ts_clock(cx.now_ns), val)),
    };
    let mut options = [0u8; SYN_OPTIONS_MAX];
    let n = tcp_options::emit_syn(&offer, &mut options);
    let (client, vip) = (
        p.flow.src.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
        p.flow.dst.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    let synack = TcpRepr {
        src_port: p.flow.dst_port,
        dst_port: p.flow.src_port,
        seq: cookie,
        ack: seg.seq.wrapping_add(1),
        flags: tcp::SYN | tcp::ACK,
        window: synproxy::FIRST_WINDOW.min(mss),
        options: &options[..n],
    };
    {
        let b = frame.data_mut();
        let dst_mac = [b[6], b[7], b[8], b[9], b[10], b[11]];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&port.mac);
    }
    if write_segment(frame, l2, (vip, client), (0, 0), &synack).is_none() {
        return Drop(DropReason::NoHeadroom);
    }
    cx.events.cookies += 1;
    Verdict::SynAck { port: p.rx_port }
}

/// Turns a client's segment into the SYN that opens the backend's connection on the client's
/// behalf: the client's initial sequence number and the options its SYN offered (and its
/// current timestamp), to the backend's address and port.
#[allow(clippy::too_many_arguments)]
fn backend_syn<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &ToService,
    svc: &Service,
    bi: u16,
    s: &Session,
    opts: SynOptions,
    tsval: Option<u32>,
) -> Verdict {
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return Drop(DropReason::NoBackend);
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
        src_port: p.flow.src_port,
        dst_port: backend.port,
        seq: s.client_isn,
        ack: 0,
        flags: tcp::SYN,
        window: s.client_window,
        options: &options[..n],
    };
    let client = p.flow.src.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let l2 = usize::from(p.l2);
    let Some(len) = write_segment(frame, l2, (client, backend.address), (p.tos, p.ident), &syn) else {
        return Drop(DropReason::NoHeadroom);
    };
    encapsulate(cx, frame, l2, inner(len, p.tos, p.ident, true), p.service, svc, bi)
}

/// A client's segment while the backend's handshake is under way (`Connecting`): the first
/// data segment is held; a retransmission or bare ACK sends the backend's SYN again; a RST
/// ends both halves; a SYN starts over.
fn proxy_connecting<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &ToService,
    svc: &Service,
    slot: usize,
    s: &Session,
    flags: u8,
) -> Verdict {
    let key = p.session_key();
    let l2 = usize::from(p.l2);
    let seg = match read_segment(frame.data(), l2) {
        Ok(s) => s,
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    let backend = svc.backend_by_id(s.backend).filter(|&i| svc.backends.get(usize::from(i)).is_some());
    if flags & tcp::RST != 0 {
        cx.sessions.remove(slot, &key);
        cx.proxy.hold.take(slot, p.session_hash, None);
        let Some(bi) = backend else { return Drop(DropReason::BackendRemoved) };
        let Some(b) = svc.backends.get(usize::from(bi)) else { return Drop(DropReason::BackendRemoved) };
        // The backend's half-open connection ends too (its receive window starts at the
        // client's ISN + 1, where the client's sequence numbers are).
        let rst = TcpRepr {
            src_port: p.flow.src_port,
            dst_port: b.port,
            seq: seg.seq,
            ack: 0,
            flags: tcp::RST,
            window: 0,
            options: &[],
        };
        let client = p.flow.src.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let Some(len) = write_segment(frame, l2, (client, b.address), (p.tos, p.ident), &rst) else {
            return Drop(DropReason::NoHeadroom);
        };
        return encapsulate(cx, frame, l2, inner(len, p.tos, p.ident, true), p.service, svc, bi);
    }
    if flags & tcp::SYN != 0 {
        if flags & tcp::ACK != 0 {
            return Drop(DropReason::SynproxyNoSession);
        }
        if seg.seq != s.client_isn {
            // Another connection on the same ports: this one is over.
            cx.sessions.remove(slot, &key);
            cx.proxy.hold.take(slot, p.session_hash, None);
        }
        return cookie_reply(cx, frame, p, svc);
    }
    let Some(bi) = backend.filter(|&i| svc.backends.get(usize::from(i)).is_some_and(|b| !b.down)) else {
        // Its backend went away before answering.
        cx.sessions.remove(slot, &key);
        cx.proxy.hold.take(slot, p.session_hash, None);
        cx.events.backend_failures += 1;
        return reset_client(cx.snap, frame, p);
    };
    if seg.payload_len > 0 || flags & tcp::FIN != 0 {
        let inner = &frame.data()[l2..l2 + usize::from(p.inner_len)];
        match cx.proxy.hold.hold(slot, p.session_hash, inner, session::tick(cx.now_ns)) {
            Ok(()) => {
                cx.events.held += 1;
                // If the backend answered meanwhile, it may have looked for a held segment
                // before this one was there. Both sides publish, fence, then look at the
                // other's; whoever takes the segment sends it (loom: synproxy::loom_tests).
                crate::sync::fence(crate::sync::Ordering::SeqCst);
                let answered = cx
                    .sessions
                    .lookup(&key, p.session_hash)
                    .is_some_and(|(_, now)| now.state != TcpState::Connecting);
                if answered && cx.proxy.hold.take(slot, p.session_hash, None).is_some() {
                    return finish(cx, frame, p);
                }
                return Verdict::Consumed;
            }
            // A retransmission of the held segment: ask the backend again, below.
            Err(_) if cx.proxy.hold.holds(slot, p.session_hash) => {}
            Err(_) => return Drop(DropReason::SynproxyNotHeld),
        }
    }
    // The backend has not answered: send its SYN again.
    let opts = match cx.proxy.keys.check(
        &p.flow,
        s.client_isn.wrapping_add(1),
        s.seq_delta.wrapping_add(1),
        cookie_period(cx.now_ns),
    ) {
        Ok(o) => o,
        Err(_) => return Drop(DropReason::SynCookieStale),
    };
    let tsval = seg.opts.timestamps.map(|(val, _)| val);
    backend_syn(cx, frame, p, svc, bi, s, opts, tsval)
}

/// The backend's answer to the appliance's SYN (the session is `Connecting`): a SYN-ACK for
/// the client's ISN completes the session and is answered with the held data (or a bare
/// ACK); a RST is passed to the client as the end of its connection.
#[allow(clippy::too_many_arguments)]
fn proxy_backend_answer<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    inner_at: usize,
    svc: &Service,
    si: u16,
    bi: u16,
    (key, held): (&SessionKey, Held),
    s: &Session,
) -> Verdict {
    let seg = match read_segment(frame.data(), inner_at) {
        Ok(s) => s,
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    let client = key.addr.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED);
    if seg.flags & tcp::RST != 0 {
        // Refused: the client's connection (established, as far as it knows) is reset, in
        // the appliance's sequence space.
        cx.sessions.remove(held.slot, key);
        cx.proxy.hold.take(held.slot, held.hash, None);
        cx.events.backend_failures += 1;
        let rst = TcpRepr {
            src_port: svc.port,
            dst_port: key.port,
            seq: s.seq_delta.wrapping_add(1),
            ack: 0,
            flags: tcp::RST,
            window: 0,
            options: &[],
        };
        let Some(len) = write_segment(frame, inner_at, (svc.vip, client), (0, 0), &rst) else {
            return Drop(DropReason::NoHeadroom);
        };
        return toward_client(cx, frame, inner_at, len, client, si);
    }
    if seg.flags & (tcp::SYN | tcp::ACK) == tcp::ACK && seg.ack != s.client_isn.wrapping_add(1) {
        // An ACK from another sequence space: the backend still holds an older connection on
        // this 4-tuple (its TIME_WAIT of an earlier connection from the same client port; a
        // server that closes first keeps one for a minute) and answers the SYN with a
        // challenge ACK. The client's own stack, in SYN-SENT, would reset it at the sequence
        // it acknowledged (RFC 9293, 3.10.7.3), which ends the old connection; so does the
        // appliance, on the client's behalf. The client's next retransmission sends the SYN
        // again (`proxy_connecting`).
        let Some(b) = svc.backends.get(usize::from(bi)) else {
            return Drop(DropReason::NoBackend);
        };
        let rst = TcpRepr {
            src_port: key.port,
            dst_port: b.port,
            seq: seg.ack,
            ack: 0,
            flags: tcp::RST,
            window: 0,
            options: &[],
        };
        if !frame.adj(inner_at) {
            return Drop(DropReason::Ipv4Truncated);
        }
        let Some(len) = write_segment(frame, 0, (client, b.address), (0, 0), &rst) else {
            return Drop(DropReason::NoHeadroom);
        };
        cx.events.backend_resets += 1;
        return encapsulate(cx, frame, 0, inner(len, 0, 0, true), si, svc, bi);
    }
    if seg.flags & (tcp::SYN | tcp::ACK) != tcp::SYN | tcp::ACK || seg.ack != s.client_isn.wrapping_add(1) {
        return Drop(DropReason::SynproxyBackendUnexpected);
    }
    use session::flags::{BACKEND_WSCALE_SHIFT, CLIENT_TS};
    let ts_delta = match seg.opts.timestamps {
        Some((val, _)) if s.flags & CLIENT_TS != 0 => val.wrapping_sub(s.ts_delta),
        _ => 0,
    };
    let ws = seg.opts.wscale.unwrap_or(0).min(14);
    let done = cx.sessions.replace(held.slot, key, |now| {
        (now.state == TcpState::Connecting).then(|| Session {
            state: TcpState::Established,
            seq_delta: seg.seq.wrapping_sub(s.seq_delta),
            ts_delta,
            flags: now.flags | ws << BACKEND_WSCALE_SHIFT,
            ..*now
        })
    });
    let Some(done) = done else {
        return Drop(DropReason::SynproxyBackendUnexpected);
    };
    cx.events.handshakes += 1;
    // The client's held segment, if any (see `proxy_connecting` for the other side).
    crate::sync::fence(crate::sync::Ordering::SeqCst);
    let mut buf = [0u8; HOLD_BYTES];
    let Some(n) = cx.proxy.hold.take(held.slot, held.hash, Some(&mut buf)) else {
        return backend_ack(cx, frame, inner_at, svc, si, bi, &done);
    };
    let Some(backend) = svc.backends.get(usize::from(bi)) else {
        return Drop(DropReason::NoBackend);
    };
    // Out of the tunnel, then the held packet in its place, translated as any later one.
    if !frame.adj(inner_at) || !resize(frame, n) {
        return Drop(DropReason::NoHeadroom);
    }
    let b = frame.data_mut();
    b.copy_from_slice(&buf[..n]);
    if !rewrite(b, 0, Field::Dst, backend.address, backend.port)
        || synproxy::client_to_backend(b, 0, done.seq_delta, done.ts_delta).is_err()
    {
        return Drop(DropReason::SynproxyMalformed);
    }
    let outer = match Ipv4Packet::new_checked(&b[..]) {
        Ok(ip) => inner(n, ip.tos(), ip.ident(), ip.dont_frag()),
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    encapsulate(cx, frame, 0, outer, si, svc, bi)
}

/// Turns the backend's SYN-ACK (at `frame[inner_at..]`) into the ACK that completes its
/// handshake, from the client: the client's window, and the timestamps the SYN-ACK carries
/// reflected (its echo is the client's last timestamp, the backend has seen it).
fn backend_ack<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    inner_at: usize,
    svc: &Service,
    si: u16,
    bi: u16,
    s: &Session,
) -> Verdict {
    let seg = match read_segment(frame.data(), inner_at) {
        Ok(s) => s,
        Err(_) => return Drop(DropReason::SynproxyMalformed),
    };
    let (client, cport, backend, bport) = {
        let Ok(ip) = Ipv4Packet::new_checked(&frame.data()[inner_at..]) else {
            return Drop(DropReason::SynproxyMalformed);
        };
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
            return Drop(DropReason::SynproxyMalformed);
        };
        (ip.dst(), t.dst_port(), ip.src(), t.src_port())
    };
    let mut ts = [0u8; 12];
    let options: &[u8] = match seg.opts.timestamps {
        Some((val, ecr)) => {
            ts[..4].copy_from_slice(&[
                tcp_options::KIND_NOP,
                tcp_options::KIND_NOP,
                tcp_options::KIND_TIMESTAMP,
                10,
            ]);
            ts[4..8].copy_from_slice(&ecr.to_be_bytes());
            ts[8..].copy_from_slice(&val.to_be_bytes());
            &ts
        }
        None => &[],
    };
    let ack = TcpRepr {
        src_port: cport,
        dst_port: bport,
        seq: seg.ack,
        ack: seg.seq.wrapping_add(1),
        flags: tcp::ACK,
        window: s.client_window,
        options,
    };
    if !frame.adj(inner_at) {
        return Drop(DropReason::Ipv4Truncated);
    }
    let Some(len) = write_segment(frame, 0, (client, backend), (0, 0), &ack) else {
        return Drop(DropReason::NoHeadroom);
    };
    encapsulate(cx, frame, 0, inner(len, 0, 0, true), si, svc, bi)
}

/// A backend for a flow without a session: the scheduler's choice, or for `ip_hash` with
/// persistence the client's remembered backend (kept as a `Persist` session, refreshed by
/// each new flow of the client).
fn choose_new(cx: &mut Ctx<'_>, svc: &Service, si: usize, p: &ToService, now: u32) -> Option<u16> {
    let table = cx.sessions;
    if svc.scheduler == Scheduler::IpHash && svc.persistence_ticks > 0 {
        let key = SessionKey::persist(p.flow.src, svc.id);
        let hash = table.hash(&key);
        if let Some((slot, s)) = table.lookup(&key, hash) {
            match svc.backend_by_id(s.backend) {
                Some(bi) if svc.backends.get(usize::from(bi)).is_some_and(|b| b.takes_new_flows()) => {
                    table.touch(slot, &s, now, TcpState::NotTcp);
                    return Some(bi);
                }
                _ => {
                    table.remove(slot, &key);
                }
            }
        }
        let bi = sched::choose(svc, si, &p.flow, p.flow.hash(SELECT_SEED), cx.sched, table)?;
        let id = svc.backends.get(usize::from(bi))?.id;
        let s = Session { timeout: svc.persistence_ticks, ..Session::new(id, TcpState::NotTcp, now) };
        table.insert(&key, hash, &s);
        return Some(bi);
    }
    sched::choose(svc, si, &p.flow, p.flow.hash(SELECT_SEED), cx.sched, table)
}

/// A new flow that no backend can take: what the service's `on_no_backend` says.
fn no_backend<F: Frame>(snap: &Snapshot, svc: &Service, frame: &mut F, p: &ToService) -> Verdict {
    match svc.on_no_backend {
        NoBackend::Drop => Drop(DropReason::NoBackend),
        NoBackend::Reset if p.tcp_flags.is_some() => match reset_client(snap, frame, p) {
            Verdict::Drop(_) => Drop(DropReason::NoBackend),
            v => v,
        },
        NoBackend::Reset => Drop(DropReason::NoBackend),
        NoBackend::IcmpUnreachable => unreachable_client(snap, frame, p),
    }
}

/// Turns a client's packet into ICMP destination unreachable, port unreachable (RFC 792),
/// from the VIP: the original IP header and the first 8 bytes after it are quoted.
fn unreachable_client<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService) -> Verdict {
    let Some(port) = snap.ports.get(usize::from(p.rx_port)) else {
        return Drop(DropReason::NoBackend);
    };
    let l2 = usize::from(p.l2);
    let ihl = match Ipv4Packet::new_checked(&frame.data()[l2..]) {
        Ok(ip) => ip.header_len(),
        Err(_) => return Drop(DropReason::NoBackend),
    };
    let quoted = ihl + 8; // TCP and UDP headers are at least 8 bytes: classify checked them
    let reply_len = ipv4::HEADER_LEN + 8 + quoted;
    let grow = reply_len.saturating_sub(usize::from(p.inner_len));
    if grow > 0 && !frame.append(grow) {
        return Drop(DropReason::NoBackend);
    }
    let b = frame.data_mut();
    if b.len() < l2 + reply_len {
        return Drop(DropReason::NoBackend);
    }
    // Move the quoted bytes behind the new IP and ICMP headers.
    b.copy_within(l2..l2 + quoted, l2 + ipv4::HEADER_LEN + 8);
    let dst_mac = [b[6], b[7], b[8], b[9], b[10], b[11]];
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&port.mac);
    let (client, vip) = (
        p.flow.src.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
        p.flow.dst.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    let ip_hdr = Ipv4Repr {
        src: vip,
        dst: client,
        protocol: ipv4::PROTO_ICMP,
        payload_len: 8 + quoted,
        tos: 0,
        ident: 0,
        dont_frag: false,
        ttl: DEFAULT_TTL,
    };
    ip_hdr.emit(&mut b[l2..l2 + ipv4::HEADER_LEN]);
    let icmp = &mut b[l2 + ipv4::HEADER_LEN..l2 + reply_len];
    icmp[..8].copy_from_slice(&[icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE, 0, 0, 0, 0, 0, 0]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let len = frame.data().len();
    if !frame.trim(len - (l2 + reply_len)) {
        return Drop(DropReason::NoBackend);
    }
    Verdict::Unreachable { port: p.rx_port }
}

/// Turns a client's TCP segment into the RST that ends its connection (RFC 9293 3.10.7.1:
/// the reset takes its sequence number from the segment's ACK, or acknowledges the segment),
/// addressed back to the sender from the VIP. UDP is dropped.
fn reset_client<F: Frame>(snap: &Snapshot, frame: &mut F, p: &ToService) -> Verdict {
    let Some(flags) = p.tcp_flags else {
        return Drop(DropReason::BackendRemoved);
    };
    if flags & tcp::RST != 0 {
        return Drop(DropReason::BackendRemoved);
    }
    let Some(port) = snap.ports.get(usize::from(p.rx_port)) else {
        return Drop(DropReason::BackendRemoved);
    };
    let l2 = usize::from(p.l2);
    let (seq, ack, seg_len, ihl) = {
        let Ok(ip) = Ipv4Packet::new_checked(&frame.data()[l2..]) else {
            return Drop(DropReason::BackendRemoved);
        };
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
            return Drop(DropReason::BackendRemoved);
        };
        let syn_fin = u32::from(flags & tcp::SYN != 0) + u32::from(flags & tcp::FIN != 0);
        (t.seq(), t.ack(), t.payload().len() as u32 + syn_fin, ip.header_len())
    };
    let (rst_seq, rst_ack, rst_flags) = if flags & tcp::ACK != 0 {
        (ack, 0, tcp::RST)
    } else {
        (0, seq.wrapping_add(seg_len), tcp::RST | tcp::ACK)
    };
    // Keep Ethernet, a 20-byte IP header and a 20-byte TCP header; drop options and data.
    let t_old = l2 + ihl;
    let keep = l2 + ipv4::HEADER_LEN + tcp::HEADER_LEN;
    let b = frame.data_mut();
    let dst_mac = [b[6], b[7], b[8], b[9], b[10], b[11]];
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&port.mac);
    if ihl != ipv4::HEADER_LEN {
        b.copy_within(t_old..t_old + tcp::HEADER_LEN, l2 + ipv4::HEADER_LEN);
    }
    let (client, vip) = (
        p.flow.src.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
        p.flow.dst.as_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
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
        src_port: p.flow.dst_port,
        dst_port: p.flow.src_port,
        seq: rst_seq,
        ack: rst_ack,
        flags: rst_flags,
        window: 0,
        options: &[],
    };
    rst.emit_v4(&mut b[l2 + ipv4::HEADER_LEN..keep], vip, client);
    let len = frame.data().len();
    if !frame.trim(len - keep) {
        return Drop(DropReason::BackendRemoved);
    }
    Verdict::Reset { port: p.rx_port }
}

/// Writes an ARP request for next hop `nh` into an empty frame. False if the frame has no room
/// or the next hop does not exist.
pub fn build_arp_request<F: Frame>(snap: &Snapshot, nh: u16, frame: &mut F) -> Option<u16> {
    let nh = snap.nexthops.get(usize::from(nh))?;
    let port = snap.ports.get(usize::from(nh.port))?;
    let eth = EthernetRepr {
        dst: BROADCAST_MAC,
        src: port.mac,
        vlan: port.vlan,
        ethertype: ethernet::ETHERTYPE_ARP,
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
    arp::emit(&mut b[eth.header_len()..], arp::OP_REQUEST, port.mac, port.address, [0; 6], nh.ip);
    Some(nh.port)
}

/// The address a next hop is asked for, for tests and logs.
pub fn nexthop_ip(snap: &Snapshot, nh: u16) -> Option<Ipv4Addr> {
    snap.nexthops.get(usize::from(nh)).map(|n| n.ip)
}
