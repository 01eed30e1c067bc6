//! Pipeline behaviour beyond single golden frames: buffer limits, TX back-pressure, neighbour
//! learning, backend spread, and robustness against arbitrary bytes.

use arc_swap::ArcSwap;
use proptest::prelude::*;
use sluice_dataplane::flow::{Addr, FlowKey, SELECT_SEED};
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::pipeline::Verdict;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::{Protocol, ServiceSpec, Snapshot};
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit::frame::{arp_frame, tcp, Packet};
use sluice_dataplane::testkit::{self, host, spec, vip, INT_ADDR, INT_MAC, ROUTER};
use sluice_dataplane::wire::arp;
use sluice_dataplane::wire::tcp::SYN;
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

/// The appliance with one TCP service, 198.18.10.1:80 (Maglev, table 65537), over `backends`
/// (host, weight); static `neighbors` on the internal port; tunnels from 198.19.0.100.
fn snapshot(backends: &[([u8; 4], u32)], neighbors: &[([u8; 4], [u8; 6])]) -> Snapshot {
    let backends = backends.iter().map(|&(a, weight)| spec::backend(a, weight)).collect();
    let svc =
        ServiceSpec { table_size: 65537, ..spec::dsr_service("web", vip(1), 80, Protocol::Tcp, backends) };
    let ports = vec![spec::ext_port(), spec::int_port(neighbors.iter().copied())];
    let spec = spec::with_tunnel_source(spec::snapshot_spec(ports, vec![svc]), [198, 19, 0, 100]);
    Snapshot::build(&spec, None).unwrap()
}

/// A TCP SYN from 198.18.0.2:`sport` to 198.18.10.1:80, with a valid IPv4 checksum and a zero
/// TCP checksum.
fn syn(sport: u16) -> Vec<u8> {
    Packet { l4_checksum: false, ..Packet::new(ROUTER, vip(1)) }.tcp(&tcp((sport, 80), SYN), b"")
}

fn run(snap: &Snapshot, port: u16, f: &mut VecFrame) -> Verdict {
    let table = SessionTable::new(1024, Timeouts::default(), 1);
    testkit::process_one(snap, &table, &testkit::synproxy(), 1, port, f)
}

struct Chained(VecFrame);

impl Frame for Chained {
    fn data(&self) -> &[u8] {
        self.0.data()
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }
    fn prepend(&mut self, n: usize) -> bool {
        self.0.prepend(n)
    }
    fn adj(&mut self, n: usize) -> bool {
        self.0.adj(n)
    }
    fn trim(&mut self, n: usize) -> bool {
        self.0.trim(n)
    }
    fn append(&mut self, n: usize) -> bool {
        self.0.append(n)
    }
    fn is_contiguous(&self) -> bool {
        false
    }
}

/// Worker `id` of 2 over `io` (2 ports), with `snap` as its config and a small session table.
fn worker(id: usize, io: MemIo, snap: Snapshot, stats: &Arc<WorkerStats>) -> Worker<MemIo> {
    Worker::new(
        (id, 2),
        io,
        2,
        Arc::new(ArcSwap::from_pointee(snap)),
        (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(testkit::synproxy())),
        Arc::clone(stats),
    )
}

#[test]
fn multi_segment_frames_are_dropped() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
    let table = SessionTable::new(1024, Timeouts::default(), 1);
    let mut f = Chained(VecFrame::new(&syn(1000)));
    let v = testkit::process_one(&snap, &table, &testkit::synproxy(), 1, 0, &mut f);
    assert_eq!(v, Verdict::Drop(DropReason::MultiSegment));
}

#[test]
fn missing_headroom_is_a_drop_not_a_panic() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
    // IPIP needs 20 more bytes in front.
    let mut tight = VecFrame::with_headroom(&syn(1000), 19);
    assert_eq!(run(&snap, 0, &mut tight), Verdict::Drop(DropReason::NoHeadroom));
    let mut enough = VecFrame::with_headroom(&syn(1000), 20);
    assert!(matches!(run(&snap, 0, &mut enough), Verdict::Tunnel { port: 1, .. }));
    assert_eq!(enough.data().len(), 54 + 20);
    assert_eq!(&enough.data()[26..30], &[198, 19, 0, 100], "configured tunnel source");
}

#[test]
fn full_tx_queue_counts_tx_full() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
    let stats = Arc::new(WorkerStats::default());
    let mut io = MemIo::new(2);
    io.tx_limit = Some(3);
    for i in 0..10 {
        io.rx[0].push_back(VecFrame::new(&syn(1000 + i)));
    }
    let mut w = worker(1, io, snap, &stats);
    assert_eq!(w.poll(1), 10);
    assert_eq!(w.io().tx[1].len(), 3);
    assert_eq!(stats.ports[1].tx_packets.get(), 3);
    assert_eq!(stats.dropped(DropReason::TxFull), 7);
    assert_eq!(stats.tunneled.get(), 10);
}

/// The worker classifies a whole burst, then finishes and dispatches it: a full burst of
/// forwarded packets mixed with dropped ones leaves in order, each verdict with its own packet.
#[test]
fn a_burst_leaves_in_order_with_each_packets_own_verdict() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
    let stats = Arc::new(WorkerStats::default());
    let mut io = MemIo::new(2);
    let mut sent = Vec::new();
    for i in 0..32u16 {
        if i % 3 == 1 {
            io.rx[0].push_back(VecFrame::new(&[0u8; 20])); // a runt: dropped
        } else {
            io.rx[0].push_back(VecFrame::new(&syn(2000 + i)));
            sent.push(2000 + i);
        }
    }
    let mut w = worker(1, io, snap, &stats);
    assert_eq!(w.poll(1), 32);
    // IPIP: Ethernet, outer IPv4 (20), inner IPv4 (20), then the inner TCP source port.
    let ports: Vec<u16> =
        w.io().tx[1].iter().map(|f| u16::from_be_bytes([f.data()[54], f.data()[55]])).collect();
    assert_eq!(ports, sent);
    assert_eq!(stats.drops.iter().map(|c| c.get()).sum::<u64>(), 32 - sent.len() as u64);
}

#[test]
fn neighbor_learned_from_arp_then_traffic_flows() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[]);
    let stats = Arc::new(WorkerStats::default());
    let mut w = worker(0, MemIo::new(2), snap, &stats);

    // Worker 0 asks for the backend's MAC ahead of any traffic.
    w.poll(1);
    let req = w.io().tx[1].pop().expect("an ARP request on the backend port");
    let b = req.data();
    assert_eq!((&b[0..6], &b[12..14], &b[20..22]), (&[0xff; 6][..], &[8, 6][..], &[0, 1][..]));
    assert_eq!(&b[38..42], &[198, 19, 0, 10]);
    assert_eq!(stats.arp_requests.get(), 1);

    // A packet before the answer is dropped; no second request within the retry interval.
    w.io().rx[0].push_back(VecFrame::new(&syn(1000)));
    w.poll(2);
    assert_eq!(stats.dropped(DropReason::NeighborUnresolved), 1);
    assert!(w.io().tx[1].is_empty());

    // The backend answers.
    let bmac = [2, 0, 0, 0, 1, 10];
    let reply = arp_frame((INT_MAC, bmac), arp::OP_REPLY, (bmac, host(10)), (INT_MAC, INT_ADDR));
    w.io().rx[1].push_back(VecFrame::new(&reply));
    w.poll(3);
    assert_eq!(stats.neighbors_learned.get(), 1);
    assert_eq!(stats.drops.iter().map(|c| c.get()).sum::<u64>(), 1, "the reply is consumed, not dropped");

    w.io().rx[0].push_back(VecFrame::new(&syn(1000)));
    w.poll(4);
    let out = w.io().tx[1].pop().expect("forwarded");
    assert_eq!(&out.data()[0..6], &bmac);
    assert_eq!(stats.tunneled.get(), 1);
}

#[test]
fn arp_from_strangers_teaches_nothing() {
    let snap = snapshot(&[([198, 19, 0, 10], 1)], &[]);
    // An unsolicited reply claiming to be a host we do not send to.
    // (Its Ethernet source is left zero.)
    let f = arp_frame((INT_MAC, [0; 6]), arp::OP_REPLY, ([2, 9, 9, 9, 9, 9], host(66)), (INT_MAC, INT_ADDR));
    assert_eq!(run(&snap, 1, &mut VecFrame::new(&f)), Verdict::Drop(DropReason::ArpNotForUs));
    assert_eq!(snap.nexthops.iter().filter(|n| n.mac().is_some()).count(), 0);
}

#[test]
fn flows_spread_over_backends_by_weight_and_stick() {
    let backends: Vec<([u8; 4], u32)> = (0..4).map(|i| ([198, 19, 0, 10 + i], 1 + u32::from(i))).collect();
    let neighbors: Vec<([u8; 4], [u8; 6])> =
        (0..4).map(|i| ([198, 19, 0, 10 + i], [2, 0, 0, 0, 1, 10 + i])).collect();
    let snap = snapshot(&backends, &neighbors);
    let mut counts = [0u32; 4];
    for sport in 0..20_000u16 {
        let mut f = VecFrame::new(&syn(sport));
        let Verdict::Tunnel { backend, .. } = run(&snap, 0, &mut f) else { panic!("not forwarded") };
        counts[usize::from(backend)] += 1;
        // The outer destination is the chosen backend, and the same flow picks it again.
        assert_eq!(&f.data()[30..34], &backends[usize::from(backend)].0);
        let mut again = VecFrame::new(&syn(sport));
        let (service_id, backend_id) =
            (snap.services[0].id, snap.services[0].backends[usize::from(backend)].id);
        let want = Verdict::Tunnel { port: 1, service: 0, backend, service_id, backend_id };
        assert_eq!(run(&snap, 0, &mut again), want);
        let key = FlowKey {
            src: Addr::v4(ROUTER),
            dst: Addr::v4(vip(1)),
            src_port: sport,
            dst_port: 80,
            protocol: 6,
        };
        assert_eq!(snap.services[0].maglev_choice(key.hash(SELECT_SEED)), Some(backend));
    }
    // Weights 1:2:3:4 of 20000 flows: 2000, 4000, 6000, 8000 expected; allow 5% sampling noise.
    for (i, &c) in counts.iter().enumerate() {
        let want = 2000.0 * (i + 1) as f64;
        assert!((f64::from(c) - want).abs() / want < 0.05, "backend {i}: {c} flows, want ~{want}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Any bytes on any port: a verdict, never a panic, and never a frame that grew past what
    /// a tunnel adds.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), port in 0u16..3) {
        let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
        let mut f = VecFrame::new(&bytes);
        let v = run(&snap, port, &mut f);
        prop_assert!(f.data().len() <= bytes.len() + 24);
        if port == 2 {
            prop_assert_eq!(v, Verdict::Drop(DropReason::NotForUs));
        }
    }

    /// A valid SYN with bytes flipped or cut: never a panic; if forwarded, the outer header
    /// is valid and carries the inner packet unchanged.
    #[test]
    fn mutated_packets_never_panic(flips in proptest::collection::vec((0usize..54, any::<u8>()), 0..4), cut in 0usize..60) {
        let snap = snapshot(&[([198, 19, 0, 10], 1)], &[([198, 19, 0, 10], [2, 0, 0, 0, 1, 10])]);
        let mut b = syn(4242);
        for (at, x) in flips { b[at] ^= x; }
        b.truncate(cut.max(1).min(b.len()));
        let mut f = VecFrame::new(&b);
        if let Verdict::Tunnel { .. } = run(&snap, 0, &mut f) {
            let out = f.data();
            let outer = sluice_dataplane::wire::Ipv4Packet::new_checked(&out[14..]).unwrap();
            prop_assert!(outer.verify_checksum());
            prop_assert_eq!(outer.payload(), &b[14..14 + outer.payload().len()]);
        }
    }
}
