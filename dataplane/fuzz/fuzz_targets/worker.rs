//! Several frames through `worker::Worker` on the in-memory NIC `io::MemIo`.
//!
//! Input layout:
//! - byte 0, the set-up: bit 0 clear = worker 0 (which also walks the next hops and sends
//!   ARP requests and neighbor solicitations, and announces the IPv6 addresses), set = worker 1; bits 1-2 = TX limit per burst (none, 0, 1, 2);
//!   bit 3 = frame allocation fails; bit 4 = republish the snapshot (rebuilt from the current
//!   one, learned MACs carried over) halfway through.
//! - then records: `sel, len_hi, len_lo, frame[len]` (len clamped to what is left and to 2048).
//!   `sel` bits 0-1 = rx port 0..=3 (the worker polls 4 ports; the snapshot has 3, so port 3
//!   exists on the NIC but not in the config); bits 2-5 = advance the clock by that many
//!   100 ms steps first; bit 6 = make the frame's IPv4 (and ICMP) checksum valid; bit 7 = poll
//!   before queueing this frame.
//!
//! After the last record the worker polls until every RX queue is empty. Asserts: no panic;
//! every received frame is counted once; what was sent plus what the TX queue refused equals
//! what the verdicts, the neighbour resolver and the announcements produced; every sent frame
//! is a well-formed Ethernet frame for its port carrying a valid ARP packet, an IPv4 packet
//! whose checksum verifies, an ICMPv6 message whose checksum verifies, or a tunnel over IPv6
//! (IPv4, IPv6 or GRE right after the fixed header, hop limit 64, within the port's MTU).
//!
//! State: one session table, SYN proxy, stats and worker of each id per process (a SYN proxy
//! per input zeroed its 6 MB hold pool, a worker its isolation shares: ~700 µs per input).
//! Before each input: the worker is `reset` (as new) on a new `MemIo`, the table emptied
//! (`common::empty_table`), the two snapshots' next hops put back as built
//! (`NextHop::forget`; worker 0 claims ARP requests in them, ARP replies teach MACs) and the
//! first one published; the halfway republish carries learned MACs over as a build would; counters are read as differences over the input. `FUZZ_CHECK_FRESH=1` runs each input
//! again on state built afresh and asserts the same outcome.

#![no_main]

mod common;

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit;
use sluice_dataplane::wire::ethernet::{self, EthernetFrame};
use sluice_dataplane::wire::icmpv6::Icmpv6Packet;
use sluice_dataplane::wire::{ipv6, ArpPacket, Ipv4Packet, Ipv6Packet};
use sluice_dataplane::worker::Worker;
use std::cell::RefCell;
use std::sync::Arc;

const IO_PORTS: u16 = 4;

struct State {
    config: Arc<ArcSwap<Snapshot>>,
    /// The snapshot each input starts with, and the one republished halfway (built once;
    /// `Snapshot::build` with its Maglev tables was 2/3 of an input's time).
    first: Arc<Snapshot>,
    second: Arc<Snapshot>,
    sessions: Arc<SessionTable>,
    stats: Arc<WorkerStats>,
    /// Worker 0 and worker 1 of 2.
    workers: [Worker<MemIo>; 2],
}

impl State {
    fn new() -> State {
        let first = Arc::new(common::snapshot());
        let second = Arc::new(common::snapshot());
        let config = Arc::new(ArcSwap::new(Arc::clone(&first)));
        let sessions = Arc::new(SessionTable::new(256, Timeouts::default(), 1));
        let proxy = Arc::new(testkit::synproxy());
        let stats = Arc::new(WorkerStats::default());
        let workers = [0, 1].map(|id| {
            let shared = (Arc::clone(&sessions), Arc::clone(&proxy));
            let io = MemIo::new(usize::from(IO_PORTS));
            Worker::new((id, 2), io, IO_PORTS, Arc::clone(&config), shared, Arc::clone(&stats))
        });
        State { config, first, second, sessions, stats, workers }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

/// The counters the checks use, summed over ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    produced: u64,
    /// Packets cut into fragments, and the fragments cut: one frame, several verdicts.
    fragmented: u64,
    fragments: u64,
    /// Sent of the worker's own accord: ARP requests, neighbor solicitations and unsolicited
    /// advertisements.
    originated: u64,
    tx_full: u64,
    other_drops: u64,
}

impl Totals {
    fn of(s: &WorkerStats) -> Totals {
        Totals {
            rx_packets: s.ports.iter().map(|p| p.rx_packets.get()).sum(),
            rx_bytes: s.ports.iter().map(|p| p.rx_bytes.get()).sum(),
            tx_packets: s.ports.iter().map(|p| p.tx_packets.get()).sum(),
            produced: s.arp_replies.get()
                + s.nd_advertisements.get()
                + s.icmp_echo_replies.get()
                + s.tunneled.get()
                + s.too_big_sent.get(),
            fragmented: s.fragmented.get(),
            fragments: s.fragments_made.get(),
            originated: s.arp_requests.get() + s.nd_solicitations.get() + s.nd_unsolicited.get(),
            tx_full: s.dropped(DropReason::TxFull),
            other_drops: DropReason::ALL
                .iter()
                .filter(|&&r| r != DropReason::TxFull)
                .map(|&r| s.dropped(r))
                .sum(),
        }
    }

    /// The counts of an input: `after` less `self`.
    fn since(self, after: Totals) -> Totals {
        Totals {
            rx_packets: after.rx_packets - self.rx_packets,
            rx_bytes: after.rx_bytes - self.rx_bytes,
            tx_packets: after.tx_packets - self.tx_packets,
            produced: after.produced - self.produced,
            fragmented: after.fragmented - self.fragmented,
            fragments: after.fragments - self.fragments,
            originated: after.originated - self.originated,
            tx_full: after.tx_full - self.tx_full,
            other_drops: after.other_drops - self.other_drops,
        }
    }
}

/// What an input did: the frames sent (port, bytes) and the counts.
type Outcome = (Vec<(usize, Vec<u8>)>, Totals);

fuzz_target!(|data: &[u8]| {
    let Some((&setup, rest)) = data.split_first() else { return };
    STATE.with(|cell| {
        let mut st = cell.borrow_mut();
        let out = run(&mut st, setup, rest, false);
        if common::check_fresh() {
            assert_eq!(run(&mut State::new(), setup, rest, true), out, "fresh state, other outcome");
        }
    });
});

/// `fresh`: `st` is new, and the republished snapshot is built as the runtime builds one.
fn run(st: &mut State, setup: u8, mut rest: &[u8], fresh: bool) -> Outcome {
    // Back to the state a new worker, table and snapshot would have.
    common::empty_table(&st.sessions);
    common::forget_neighbors(&st.first);
    common::forget_neighbors(&st.second);
    st.config.store(Arc::clone(&st.first));
    let before = Totals::of(&st.stats);
    let config = Arc::clone(&st.config);
    let w = &mut st.workers[usize::from(setup & 1)];
    w.reset();
    let mut io = MemIo::new(usize::from(IO_PORTS));
    io.tx_limit = [None, Some(0), Some(1), Some(2)][usize::from((setup >> 1) & 3)];
    io.can_alloc = setup & 8 == 0;
    *w.io() = io;

    let mut now: u64 = 1;
    let (mut frames, mut bytes, mut received) = (0u64, 0u64, 0u64);
    let mut sent: Vec<(usize, VecFrame)> = Vec::new();
    let half = rest.len() / 2;
    let mut republished = setup & 16 == 0;
    while rest.len() >= 3 {
        let sel = rest[0];
        let len =
            usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3).min(common::MAX_FRAME);
        let mut frame = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        if sel & 0x40 != 0 {
            common::fix_checksums(&mut frame);
        }
        now += u64::from((sel >> 2) & 15) * 100_000_000;
        if sel & 0x80 != 0 {
            received += w.poll(now) as u64;
            drain_tx(w, &mut sent);
        }
        w.io().rx[usize::from(sel & 3)].push_back(VecFrame::new(&frame));
        frames += 1;
        bytes += len as u64;
        if !republished && rest.len() <= half {
            republished = true;
            let current = config.load();
            if fresh {
                let next = Snapshot::build(&common::spec(), Some(&current)).expect("rebuild");
                config.store(Arc::new(next));
            } else {
                // As `Snapshot::build(spec, Some(current))` does: learned MACs carry over.
                for nh in &st.second.nexthops {
                    if let Some(old) = current.nexthop(nh.port, nh.ip) {
                        nh.carry_over(old);
                    }
                }
                config.store(Arc::clone(&st.second));
            }
        }
    }
    while w.io().rx.iter().any(|q| !q.is_empty()) {
        now += 1_000;
        received += w.poll(now) as u64;
        drain_tx(w, &mut sent);
    }
    let t = before.since(Totals::of(&st.stats));

    // Every frame received once, and counted.
    assert_eq!(received, frames, "frames queued vs received");
    assert_eq!((t.rx_packets, t.rx_bytes), (frames, bytes), "rx counters");

    // Sent + refused by TX = produced by verdicts + the worker's own (ARP and ND).
    assert_eq!(t.tx_packets, sent.len() as u64, "tx counter vs frames on the wire");
    assert_eq!(t.tx_packets + t.tx_full, t.produced + t.originated, "sent + tx_full vs produced");
    // One verdict a frame, but a fragmented packet's are its fragments'.
    assert!(
        t.other_drops + t.produced + t.fragmented <= frames + t.fragments,
        "more verdicts ({} drops + {}, {} fragments of {} packets) than frames ({frames})",
        t.other_drops,
        t.produced,
        t.fragments,
        t.fragmented
    );
    if t.originated > 0 {
        assert!(setup & 8 == 0, "an ARP request or ND message sent without a frame to build it in");
    }

    // Every frame on the wire is well formed for its port.
    let snap = config.load();
    for (p, f) in &sent {
        let b = f.data();
        let port = snap.ports.get(*p).unwrap_or_else(|| panic!("sent on port {p}, not in the config"));
        assert!(b.len() <= common::MAX_FRAME + common::MAX_GROWTH, "sent {} bytes", b.len());
        let eth = EthernetFrame::new_checked(b).expect("sent frame has an Ethernet header");
        assert_eq!(eth.vlan(), port.vlan, "sent frame tagged for port {p}");
        assert_eq!(eth.src(), port.mac, "sent frame from port {p}'s MAC");
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => {
                ArpPacket::new_checked(eth.payload()).expect("sent ARP is valid");
            }
            ethernet::ETHERTYPE_IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).expect("sent IPv4 is valid");
                assert!(ip.verify_checksum(), "sent IPv4 checksum does not verify: {}", common::hex(b));
            }
            ethernet::ETHERTYPE_IPV6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).expect("sent IPv6 is valid");
                match ip.next_header() {
                    // Tunnels over the IPv6 underlay: the tunnel right after the fixed header.
                    ipv6::NEXT_IPV4 | ipv6::NEXT_IPV6 | ipv6::NEXT_GRE => {
                        assert_eq!(ip.hop_limit(), ipv6::DEFAULT_HOP_LIMIT, "tunnel hop limit");
                        assert_eq!(
                            ip.total_len(),
                            eth.payload().len(),
                            "a tunnel ends the frame: {}",
                            common::hex(b)
                        );
                        assert!(ip.total_len() <= usize::from(port.mtu), "sent IPv6 over port {p}'s MTU");
                    }
                    // Echo replies, too-big messages and neighbor discovery: ICMPv6 right after
                    // the fixed header.
                    next => {
                        assert_eq!(
                            next,
                            ipv6::NEXT_ICMPV6,
                            "sent IPv6 is ICMPv6 or a tunnel: {}",
                            common::hex(b)
                        );
                        let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("sent ICMPv6 is whole");
                        assert!(
                            icmp.verify_checksum(ip.src(), ip.dst()),
                            "sent ICMPv6 checksum: {}",
                            common::hex(b)
                        );
                    }
                }
            }
            t => panic!("sent EtherType {t:#06x}"),
        }
    }
    (sent.into_iter().map(|(p, f)| (p, f.data().to_vec())).collect(), t)
}

fn drain_tx(w: &mut Worker<MemIo>, sent: &mut Vec<(usize, VecFrame)>) {
    for (p, q) in w.io().tx.iter_mut().enumerate() {
        sent.extend(q.drain(..).map(|f| (p, f)));
    }
}
