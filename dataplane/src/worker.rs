//! The worker loop: poll every port's queue, decide each packet, send in bursts.
//!
//! Generic over [`Io`], so the same loop runs on DPDK queues in `sluiced` and on in-memory
//! queues in tests and benchmarks.

use crate::io::{Burst, Frame, Io, BURST};
use crate::limit::{Isolation, LimitState};
use crate::pipeline::{
    announcements, build_announcement, build_neighbor_request, classify, finish, fragment_to_backend,
    probe_to_backend, probes, Budgets, Ctx, Fragments, Limiter, ProbeQueue, Resolve, SessionEvents, Stage,
    Verdict, FRAGMENT_ENTRIES,
};
use crate::sched::SchedState;
use crate::session::SessionTable;
use crate::snapshot::Snapshot;
use crate::stats::{DropReason, WorkerStats, MAX_PORTS};
use crate::synproxy::SynProxy;
use crate::wire::fragment;
use crate::wire::ipv4::Ipv4Header;
use arc_swap::ArcSwap;
use arrayvec::ArrayVec;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Packets of a burst that were sent, by what they were (added to the counters once per burst).
#[derive(Debug, Default)]
struct Tally {
    arp: u64,
    nd: u64,
    echo: u64,
    tunneled: u64,
    resets: u64,
    nat: u64,
    unreach: u64,
    too_big: u64,
    to_kernel: u64,
    from_kernel: u64,
}

/// Worker `id`'s fragment table: no frame held (a later fragment without its first is
/// dropped), keyed by a seed of this process's randomness so that senders cannot aim
/// collisions.
fn fragment_table(id: usize) -> Fragments {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new().hash_one(id);
    Fragments::new(FRAGMENT_ENTRIES, crate::fragments::DEFAULT_TIMEOUT_NS, 0, seed)
}

/// How often worker 0 walks the next hops to resolve or refresh them ahead of traffic.
pub const NEIGHBOR_SCAN_NS: u64 = 100_000_000;

pub struct Worker<I: Io> {
    pub id: usize,
    io: I,
    n_ports: u16,
    config: Arc<ArcSwap<Snapshot>>,
    sessions: Arc<SessionTable>,
    proxy: Arc<SynProxy>,
    sched: SchedState,
    stats: Arc<WorkerStats>,
    tx: [Burst<I::Frame>; MAX_PORTS],
    /// The bytes of the frames in each `tx` burst (added as they are queued, not summed again
    /// at the flush).
    tx_bytes: [usize; MAX_PORTS],
    next_scan_ns: u64,
    isolation: Arc<Isolation>,
    limits: LimitState,
    /// The exception path's rate for traffic other than routing, and the too-big messages'.
    budgets: Budgets,
    /// Fragmented datagrams' ports (taken out for a pass, like `sched`).
    fragments: Option<Fragments>,
    /// Bit `p` set: port `p` is an exception path (a kernel interface), fixed at start.
    kernel_ports: u16,
    /// Worker 0: the snapshot (its address and generation) whose IPv6 addresses were last
    /// announced, and what was announced (`pipeline::announcements`).
    announced_for: Option<(usize, u64)>,
    announced: Vec<(u16, Ipv6Addr)>,
    /// Worker 0: the control thread's tunnel-path probes to send (`pipeline::probe`).
    probes: Option<Arc<ProbeQueue>>,
}

impl<I: Io> Worker<I> {
    /// Worker `id` of `workers`, polling ports `0..n_ports` through `io`, with the state all
    /// workers share: the config, the session table and the SYN proxy's.
    pub fn new(
        (id, workers): (usize, usize),
        io: I,
        n_ports: u16,
        config: Arc<ArcSwap<Snapshot>>,
        (sessions, proxy): (Arc<SessionTable>, Arc<SynProxy>),
        stats: Arc<WorkerStats>,
    ) -> Self {
        assert!(usize::from(n_ports) <= MAX_PORTS);
        let kernel_ports =
            config.load().ports.iter().filter_map(|p| p.kernel).fold(0, |m, k| m | 1u16 << (k & 15));
        Worker {
            id,
            io,
            n_ports,
            config,
            sessions,
            proxy,
            sched: SchedState::new(id, workers),
            stats,
            tx: std::array::from_fn(|_| Burst::new()),
            tx_bytes: [0; MAX_PORTS],
            next_scan_ns: 0,
            isolation: Arc::new(Isolation::new(workers)),
            limits: LimitState::default(),
            budgets: Budgets::default(),
            fragments: Some(fragment_table(id)),
            kernel_ports,
            announced_for: None,
            announced: Vec::new(),
            probes: None,
        }
    }

    /// Back to the state `new` left, keeping the allocations and the shared state (config,
    /// sessions, SYN proxy, stats, isolation): no scheduler cursors or limit buckets, no
    /// frame waiting to be sent, the neighbour scan and the announcements due at the next
    /// poll. For harnesses that
    /// run many short scenarios on one worker (the fuzz targets); `io` is the caller's.
    pub fn reset(&mut self) {
        self.sched.reset();
        self.limits = LimitState::default();
        self.tx.iter_mut().for_each(|b| b.clear());
        self.tx_bytes = [0; MAX_PORTS];
        self.next_scan_ns = 0;
        self.announced_for = None;
        self.announced.clear();
        if let Some(t) = self.fragments.as_mut() {
            t.clear();
        }
    }

    /// Shares the control thread's isolation state (overload flag, rate shares); without it
    /// a worker enforces limits on its own, with an equal part of each rate.
    pub fn set_isolation(&mut self, isolation: Arc<Isolation>) {
        self.isolation = isolation;
    }

    /// Takes tunnel-path probes from `queue` (worker 0's, whose poll sends them).
    pub fn set_probes(&mut self, queue: Arc<ProbeQueue>) {
        self.probes = Some(queue);
    }

    pub fn io(&mut self) -> &mut I {
        &mut self.io
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Runs until `stop` is set. `clock` returns monotonic nanoseconds.
    /// Time spent in polls that received packets is added to `busy_ns`.
    pub fn run(&mut self, stop: &AtomicBool, clock: impl Fn() -> u64) {
        let mut now = clock();
        while !stop.load(Ordering::Relaxed) {
            let received = self.poll(now);
            let after = clock();
            if received > 0 {
                self.stats.busy_ns.add(after.saturating_sub(now));
            }
            now = after;
        }
        self.flush_all();
    }

    /// One pass over every port. Returns the number of packets received.
    pub fn poll(&mut self, now_ns: u64) -> usize {
        // Load the snapshot once for the whole pass, and hold it no longer.
        let config = Arc::clone(&self.config);
        let guard = config.load();
        let snap: &Snapshot = &guard;
        let sessions = Arc::clone(&self.sessions);
        let proxy = Arc::clone(&self.proxy);
        let isolation = Arc::clone(&self.isolation);
        let stats = Arc::clone(&self.stats);
        let overloaded = isolation.overloaded();
        let mut limits = std::mem::take(&mut self.limits);
        let mut budgets = self.budgets;
        let mut fragments = self.fragments.take();
        // Moved out for the pass (an empty Vec in its place: no allocation), put back after.
        let mut sched = std::mem::take(&mut self.sched);
        let mut resolve = Resolve::new();
        let mut received = 0;

        for p in 0..self.n_ports {
            let mut rx: Burst<I::Frame> = Burst::new();
            self.io.rx_burst(p, &mut rx);
            if rx.is_empty() {
                continue;
            }
            received += rx.len();
            let mut bytes = 0;

            let limiter = Limiter {
                state: &mut limits,
                isolation: &isolation,
                counters: &stats.limits,
                worker: self.id,
                overloaded,
            };
            let mut cx = Ctx::new(snap, &sessions, &proxy, &mut sched, now_ns, &mut resolve)
                .with_limiter(limiter)
                .with_budgets(&mut budgets);
            if let Some(table) = fragments.as_mut() {
                cx = cx.with_fragments(table);
            }
            // Pass 1: classify the burst.
            let mut stages: ArrayVec<Stage, BURST> = ArrayVec::new();
            for frame in rx.iter() {
                bytes += frame.data().len();
                stages.push(classify(&cx, p, frame));
            }
            // Then prefetch every session slot of the burst, back to back, so that pass 2 finds
            // them in cache. Back to back measured faster here than one prefetch per packet,
            // whether issued while classifying or 8 packets ahead while finishing
            // (docs/performance.md, 2026-12-02).
            for stage in &stages {
                if let Stage::Service(t) = stage {
                    cx.sessions.prefetch(t.session_hash);
                }
            }
            let pc = &self.stats.ports[usize::from(p)];
            pc.rx_packets.add(stages.len() as u64);
            pc.rx_bytes.add(bytes as u64);
            // Pass 2: finish and dispatch.
            let mut tally = Tally::default();
            for (mut frame, stage) in rx.drain(..).zip(stages.iter()) {
                let verdict = finish(&mut cx, p, &mut frame, stage);
                if let Verdict::Fragment { service, backend, at, .. } = verdict {
                    self.fragment(&mut cx, snap, &frame, (service, backend, at), &mut tally);
                    continue;
                }
                self.dispatch(frame, verdict, &mut tally);
            }
            self.stats.neighbors_learned.add(u64::from(cx.learned));
            self.count_burst(&cx.events, &tally);
        }
        if let Some(q) = self.probes.as_ref().filter(|q| !q.is_empty()).map(Arc::clone) {
            let mut cx = Ctx::new(snap, &sessions, &proxy, &mut sched, now_ns, &mut resolve);
            self.send_probes(&q, &mut cx);
        }
        self.resolve_neighbors(snap, &mut resolve, now_ns);
        if self.id == 0 {
            self.announce(&guard);
        }
        self.sched = sched;
        self.limits = limits;
        self.budgets = budgets;
        self.fragments = fragments;
        self.flush_all();
        self.stats.polls.add(1);
        if received > 0 {
            self.stats.busy_polls.add(1);
        }
        received
    }

    /// Sends or drops one packet by its verdict, tallying what it was.
    #[inline(always)]
    fn dispatch(&mut self, frame: I::Frame, verdict: Verdict, tally: &mut Tally) {
        let len = frame.data().len();
        let out = match verdict {
            Verdict::ArpReply { port } => {
                tally.arp += 1;
                port
            }
            Verdict::NeighborAdvert { port } => {
                tally.nd += 1;
                port
            }
            Verdict::EchoReply { port } => {
                tally.echo += 1;
                port
            }
            Verdict::Tunnel { port, service_id, backend_id, .. } => {
                tally.tunneled += 1;
                self.stats.count_forward(service_id, backend_id, len as u64);
                port
            }
            Verdict::Reset { port } => {
                tally.resets += 1;
                port
            }
            Verdict::NatReply { port, .. } => {
                tally.nat += 1;
                port
            }
            Verdict::Unreachable { port } => {
                tally.unreach += 1;
                port
            }
            Verdict::TooBig { port } => {
                tally.too_big += 1;
                port
            }
            Verdict::SynAck { port } => port,
            Verdict::ToKernel { port } => {
                tally.to_kernel += 1;
                port
            }
            Verdict::FromKernel { port } => {
                tally.from_kernel += 1;
                port
            }
            Verdict::Consumed => return,
            // `poll` fragments these before they get here.
            Verdict::Fragment { .. } => {
                self.stats.count_drop(DropReason::FragmentFailed, 1);
                return;
            }
            Verdict::Drop(reason) => {
                self.stats.count_drop(reason, 1);
                return;
            }
        };
        self.enqueue(out, frame, len);
    }

    /// A packet too big for its tunnel with DF clear (a [`Verdict::Fragment`]): each of its
    /// fragments in a buffer of its own, tunneled and sent; the packet itself is freed.
    fn fragment(
        &mut self,
        cx: &mut Ctx<'_>,
        snap: &Snapshot,
        frame: &I::Frame,
        (service, backend, at): (u16, u16, u8),
        tally: &mut Tally,
    ) {
        let at = usize::from(at);
        let mtu = snap.services.get(usize::from(service)).and_then(|s| s.backends.get(usize::from(backend)));
        let ip = frame.data().get(at..).map(Ipv4Header::parse);
        let (Some(mtu), Some(Ok(ip))) = (mtu.map(|b| b.outer.max_inner()), ip) else {
            return self.stats.count_drop(DropReason::FragmentFailed, 1);
        };
        let total = usize::from(ip.total_len);
        let Ok(plan) = fragment::plan(total, usize::from(ip.header_len), usize::from(mtu)) else {
            return self.stats.count_drop(DropReason::FragmentFailed, 1);
        };
        self.stats.fragmented.add(1);
        let packet = &frame.data()[at..at + total];
        for f in plan {
            self.stats.fragments_made.add(1);
            let Some(mut out) = self.io.alloc() else {
                return self.stats.count_drop(DropReason::FragmentFailed, 1);
            };
            let v = fragment_to_backend(cx, packet, &f, (service, backend), &mut out);
            self.dispatch(out, v, tally);
        }
    }

    /// Up to [`probes::PER_POLL`] probes from `queue`, each in a frame of its own, into their
    /// backends' tunnels.
    fn send_probes(&mut self, queue: &ProbeQueue, cx: &mut Ctx<'_>) {
        for _ in 0..probes::PER_POLL {
            let Some(req) = queue.pop() else { break };
            let Some(mut frame) = self.io.alloc() else {
                self.stats.probes_failed.add(1);
                continue;
            };
            match probe_to_backend(cx, &req, &mut frame) {
                Verdict::Tunnel { port, .. } => {
                    self.stats.probes_sent.add(1);
                    self.enqueue_frame(port, frame);
                }
                _ => self.stats.probes_failed.add(1),
            }
        }
    }

    /// Adds a burst's session events and sent packets to the worker's counters.
    fn count_burst(&self, ev: &SessionEvents, tally: &Tally) {
        let st = &self.stats;
        st.sessions_created.add(u64::from(ev.created));
        st.session_hits.add(u64::from(ev.hits));
        st.sessions_fallback.add(u64::from(ev.fallback));
        st.sessions_remapped.add(u64::from(ev.remapped));
        st.mss_clamped.add(u64::from(ev.mss_clamped));
        st.icmp_errors_forwarded.add(u64::from(ev.icmp_errors));
        let sp = &st.synproxy;
        sp.cookies_sent.add(u64::from(ev.cookies));
        sp.acks_valid.add(u64::from(ev.acks_valid));
        sp.handshakes.add(u64::from(ev.handshakes));
        sp.backend_failures.add(u64::from(ev.backend_failures));
        sp.held.add(u64::from(ev.held));
        sp.backend_resets.add(u64::from(ev.backend_resets));
        if ev.not_held > 0 {
            st.count_drop(DropReason::SynproxyNotHeld, u64::from(ev.not_held));
        }
        st.resets_sent.add(tally.resets);
        st.arp_replies.add(tally.arp);
        st.nd_advertisements.add(tally.nd);
        st.icmp_echo_replies.add(tally.echo);
        st.tunneled.add(tally.tunneled);
        st.nat_replies.add(tally.nat);
        st.unreachables_sent.add(tally.unreach);
        st.too_big_sent.add(tally.too_big);
        st.to_kernel.add(tally.to_kernel);
        st.from_kernel.add(tally.from_kernel);
    }

    /// Asks for the next hops the pass found unresolved (`resolve`) and, on worker 0 every
    /// [`NEIGHBOR_SCAN_NS`], for those due a refresh, ahead of traffic.
    fn resolve_neighbors(&mut self, snap: &Snapshot, resolve: &mut Resolve, now_ns: u64) {
        if self.id == 0 && now_ns >= self.next_scan_ns {
            self.next_scan_ns = now_ns + NEIGHBOR_SCAN_NS;
            for (i, nh) in snap.nexthops.iter().enumerate() {
                if resolve.is_full() {
                    break;
                }
                if nh.claim_request(now_ns) {
                    resolve.push(i as u16);
                }
            }
        }
        for &nh in resolve.iter() {
            let Some(mut frame) = self.io.alloc() else { break };
            if let Some(port) = build_neighbor_request(snap, nh, &mut frame) {
                match snap.nexthops.get(usize::from(nh)).map(|n| n.ip) {
                    Some(IpAddr::V6(_)) => self.stats.nd_solicitations.add(1),
                    _ => self.stats.arp_requests.add(1),
                }
                self.enqueue_frame(port, frame);
            }
        }
    }

    /// Worker 0, at the first poll and the first after a new snapshot: an unsolicited neighbor
    /// advertisement for each IPv6 address (port address or VIP, on each port) that the
    /// previous snapshot did not have. Best effort, as any announcement: one the buffer pool
    /// cannot give a frame for is not sent later.
    fn announce(&mut self, snap: &Arc<Snapshot>) {
        let key = (Arc::as_ptr(snap) as usize, snap.generation);
        if self.announced_for == Some(key) {
            return;
        }
        self.announced_for = Some(key);
        let now = announcements(snap);
        for &(port, addr) in &now {
            if self.announced.binary_search(&(port, addr)).is_ok() {
                continue;
            }
            let Some(mut frame) = self.io.alloc() else { break };
            if let Some(port) = build_announcement(snap, (port, addr), &mut frame) {
                self.stats.nd_unsolicited.add(1);
                self.enqueue_frame(port, frame);
            }
        }
        self.announced = now;
    }

    fn enqueue_frame(&mut self, port: u16, frame: I::Frame) {
        let len = frame.data().len();
        self.enqueue(port, frame, len);
    }

    /// Queues `frame`, `len` bytes long, to be sent out of `port`.
    fn enqueue(&mut self, port: u16, frame: I::Frame, len: usize) {
        let p = usize::from(port);
        if p >= usize::from(self.n_ports) {
            self.stats.count_drop(DropReason::NotForUs, 1);
            return;
        }
        if self.tx[p].is_full() {
            self.flush(port);
        }
        self.tx_bytes[p] += len;
        // After a flush the buffer is empty, so this push cannot fail.
        let _ = self.tx[p].try_push(frame);
    }

    fn flush_all(&mut self) {
        for p in 0..self.n_ports {
            if !self.tx[usize::from(p)].is_empty() {
                self.flush(p);
            }
        }
    }

    fn flush(&mut self, port: u16) {
        let p = usize::from(port);
        let buf = &mut self.tx[p];
        let bytes = std::mem::take(&mut self.tx_bytes[p]);
        let offered = buf.len();
        let sent = self.io.tx_burst(port, buf);
        let unsent_bytes: usize = if sent < offered { buf.iter().map(|f| f.data().len()).sum() } else { 0 };
        let pc = &self.stats.ports[usize::from(port)];
        pc.tx_packets.add(sent as u64);
        pc.tx_bytes.add((bytes - unsent_bytes) as u64);
        if sent < offered {
            let kernel = self.kernel_ports & 1 << port != 0;
            let reason = if kernel { DropReason::KernelRefused } else { DropReason::TxFull };
            self.stats.count_drop(reason, (offered - sent) as u64);
            buf.clear();
        }
    }
}
