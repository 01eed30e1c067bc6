//! What every stage works with: the per-burst context ([`Ctx`]), a packet to a service as the
//! first pass left it ([`ToService`]), and the isolation limits checked against both.

use crate::counter::Counter;
use crate::encap::Inner;
use crate::flow::{Addr, FlowKey};
use crate::fragments::FragmentTable;
use crate::limit::{self, Bucket, Isolation, LimitState, Rate, Which};
use crate::sched::SchedState;
use crate::session::{SessionKey, SessionTable};
use crate::snapshot::{Service, ServiceKey, Snapshot};
use crate::stats::DropReason;
use crate::synproxy::SynProxy;
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::{tcp, udp, WireError};
use arrayvec::ArrayVec;

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
    /// TCP SYNs and SYN-ACKs whose MSS option was lowered (`mss_clamp`).
    pub mss_clamped: u32,
    /// ICMP errors about a flow passed on: to its backend, or (`nat`) from it to its client.
    pub icmp_errors: u32,
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
    /// The worker's buckets for what it sends of its own accord (`None`: not held back).
    pub budgets: Option<&'a mut Budgets>,
    /// The worker's fragment table (`None`: later fragments have nowhere to find their ports).
    pub fragments: Option<&'a mut Fragments>,
}

/// A worker's fragment table: the ports of each fragmented datagram's first fragment.
pub type Fragments = FragmentTable<()>;

/// Datagrams a worker's fragment table holds at once (64 bytes each: 256 KiB).
pub const FRAGMENT_ENTRIES: usize = 4096;

/// Frames per second a worker passes to the kernel through the exception path, other than
/// ARP, BGP and BFD (which always pass): pings, management logins and floods at the port's
/// address alike.
pub const KERNEL_RATE: u64 = 10_000;

/// ICMP "fragmentation needed" messages per second a worker sends to clients whose packets
/// are too big for the tunnel (a client gets one per packet it sends too big; its stack then
/// sends smaller ones).
pub const TOO_BIG_RATE: u64 = 1_000;

/// A worker's buckets for traffic that a flood could otherwise make it send or pass without
/// bound: the exception path's ([`KERNEL_RATE`]) and its too-big messages ([`TOO_BIG_RATE`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budgets {
    pub kernel: Bucket,
    pub too_big: Bucket,
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
            budgets: None,
            fragments: None,
        }
    }

    /// Holds the exception path's traffic (but routing) to [`KERNEL_RATE`] and the too-big
    /// messages to [`TOO_BIG_RATE`] with `budgets`.
    pub fn with_budgets(mut self, budgets: &'a mut Budgets) -> Ctx<'a> {
        self.budgets = Some(budgets);
        self
    }

    /// Learns and finds fragmented datagrams' ports in `table`.
    pub fn with_fragments(mut self, table: &'a mut Fragments) -> Ctx<'a> {
        self.fragments = Some(table);
        self
    }

    /// Enforces the services' limits with `limiter`'s buckets and shares.
    pub fn with_limiter(mut self, limiter: Limiter<'a>) -> Ctx<'a> {
        limiter.state.prepare(self.snap.generation, self.snap.services.iter().map(|s| s.id));
        self.limiter = Some(limiter);
        self
    }
}

/// A packet bound for a service, as the first pass left it: enough to finish it without
/// parsing again.
#[derive(Debug, Clone, Copy)]
pub struct ToService {
    /// The client's address and port, and the destination port. The destination address and
    /// protocol are the service's own (with the port, what found it): [`ToService::flow`].
    pub src: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub service: u16,
    /// The stable id of the service (half of the session key).
    pub service_id: u16,
    /// The session slot hash (the backend-selection hash is computed only if there is no
    /// session: most packets have one and never need it).
    pub session_hash: u64,
    /// TCP flags (`None` for UDP).
    pub tcp_flags: Option<u8>,
    pub(crate) rx_port: u16,
    /// Where the IP header starts in the frame.
    pub(crate) l2: u8,
    /// The packet's whole length, TOS (or traffic class), identification and DF bit (IPv6:
    /// 0, and set: it is never fragmented on the way).
    pub(crate) inner_len: u16,
    pub(crate) tos: u8,
    pub(crate) ident: u16,
    pub(crate) dont_frag: bool,
    /// A fragment past the first: no transport header (its ports came from the first).
    pub(crate) later_fragment: bool,
}

/// A TCP segment's or UDP datagram's ports and (TCP) flags; `whole`: the payload is the whole
/// datagram (else a first fragment, whose UDP length field counts more than it holds).
#[inline(always)]
pub(crate) fn transport(
    protocol: u8,
    payload: &[u8],
    whole: bool,
) -> Result<(u16, u16, Option<u8>), WireError> {
    if protocol == ipv4::PROTO_TCP {
        tcp::ports_and_flags(payload).map(|(s, d, f)| (s, d, Some(f)))
    } else {
        udp::ports(payload, whole).map(|(s, d)| (s, d, None))
    }
}

/// What the first pass read of a packet's network header, of either family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Network {
    pub src: Addr,
    pub dst: Addr,
    /// The transport protocol (IPv6: the upper layer after any extension headers).
    pub protocol: u8,
    /// The packet's whole length.
    pub len: u16,
    /// TOS or traffic class.
    pub tos: u8,
    /// IPv4's identification and DF bit; IPv6: 0 and set.
    pub ident: u16,
    pub dont_frag: bool,
}

impl Network {
    #[inline(always)]
    pub fn v4(ip: &Ipv4Header) -> Network {
        Network {
            src: Addr::v4(ip.src),
            dst: Addr::v4(ip.dst),
            protocol: ip.protocol,
            len: ip.total_len,
            tos: ip.tos,
            ident: ip.ident,
            dont_frag: ip.dont_frag(),
        }
    }

    /// An IPv6 packet's fields, with `protocol` its upper layer (past extension headers). A
    /// packet's length is at most 65,575 bytes (40 and a 16-bit payload length); longer than
    /// 16 bits counts as 65,535, which no port's MTU takes.
    #[inline(always)]
    pub fn v6<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>, protocol: u8) -> Network {
        Network {
            src: Addr(u128::from(ip.src())),
            dst: Addr(u128::from(ip.dst())),
            protocol,
            len: u16::try_from(ip.total_len()).unwrap_or(u16::MAX),
            tos: ip.traffic_class(),
            ident: 0,
            dont_frag: true,
        }
    }
}

impl ToService {
    /// The packet `ip` at `frame[l2..]`, received on `rx_port`, with transport ports and
    /// flags `(src_port, dst_port, tcp_flags)`: bound for the service of its destination and
    /// destination port, if there is one.
    #[inline(always)]
    pub(crate) fn find(
        cx: &Ctx<'_>,
        (rx_port, l2): (u16, usize),
        ip: &Network,
        (src_port, dst_port, tcp_flags): (u16, u16, Option<u8>),
        later_fragment: bool,
    ) -> Option<ToService> {
        let snap = cx.snap;
        let (service, service_id) = snap.service_and_id(ServiceKey::new(ip.dst, dst_port, ip.protocol))?;
        let session = SessionKey::flow(ip.src, src_port, service_id);
        Some(ToService {
            src: ip.src,
            src_port,
            dst_port,
            service,
            service_id,
            session_hash: cx.sessions.hash(&session),
            tcp_flags,
            rx_port,
            l2: l2 as u8,
            inner_len: ip.len,
            tos: ip.tos,
            ident: ip.ident,
            dont_frag: ip.dont_frag,
            later_fragment,
        })
    }

    /// The key of the flow's session.
    #[inline]
    pub fn session_key(&self) -> SessionKey {
        SessionKey::flow(self.src, self.src_port, self.service_id)
    }

    /// The packet's 5-tuple, `svc` being its service (`self.service` in the snapshot).
    #[inline]
    pub fn flow(&self, svc: &Service) -> FlowKey {
        svc.flow_from(self.src, self.src_port)
    }

    /// The packet's 5-tuple, its service found in `snap` (`None` if it is not there).
    #[inline]
    pub fn flow_in(&self, snap: &Snapshot) -> Option<FlowKey> {
        snap.services.get(usize::from(self.service)).map(|svc| self.flow(svc))
    }

    /// Where the IP header starts in the frame.
    #[inline(always)]
    pub(crate) fn l2(&self) -> usize {
        usize::from(self.l2)
    }

    /// The packet's fields that its tunnel's outer header copies.
    #[inline(always)]
    pub(crate) fn inner(&self) -> Inner {
        Inner {
            len: self.inner_len,
            tos: self.tos,
            ident: self.ident,
            dont_frag: self.dont_frag,
            label: self.flow_label(),
        }
    }

    /// The outer IPv6 flow label of the packet's tunnel: the same for every packet of a flow.
    #[inline(always)]
    pub(crate) fn flow_label(&self) -> u32 {
        (self.session_hash >> 32) as u32 & 0x000f_ffff
    }
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

/// The packets/s and bytes/s limits, on every packet of a client toward a service (`bytes`
/// long): the drop reason if one holds it back.
#[inline(always)]
pub fn over_rate(cx: &mut Ctx<'_>, svc: &Service, si: usize, bytes: u16) -> Option<DropReason> {
    if svc.limited {
        rate_limits(cx, svc, si, bytes)
    } else {
        None
    }
}

#[inline(never)]
fn rate_limits(cx: &mut Ctx<'_>, svc: &Service, si: usize, bytes: u16) -> Option<DropReason> {
    let now = cx.now_ns;
    let l = cx.limiter.as_mut()?;
    if !l.take(svc, si, Rate::Packets, 1, now) {
        l.count(limit::dropped_index(svc.id, Which::Packets), 1);
        return Some(DropReason::LimitPackets);
    }
    if !l.take(svc, si, Rate::Bytes, u64::from(bytes), now) {
        l.count(limit::dropped_index(svc.id, Which::Bytes), 1);
        return Some(DropReason::LimitBytes);
    }
    None
}

/// The concurrent-sessions and connections/s limits, before a new connection makes any state:
/// the drop reason if one holds it back.
#[inline(always)]
pub fn over_new(cx: &mut Ctx<'_>, svc: &Service, si: usize) -> Option<DropReason> {
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
