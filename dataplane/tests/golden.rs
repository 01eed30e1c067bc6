//! Golden packets: each case in `golden/cases.txt` (made by `golden/gen.py` with scapy, an
//! independent implementation) gives an input frame, the exact frame expected out (or none)
//! and the verdict. Every case runs twice: through `pipeline::process` directly, and through a
//! `Worker` on in-memory queues, where drops must also be counted under their reason. The
//! appliance gen.py assumes is `testkit::golden`.

use arc_swap::ArcSwap;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::pipeline::Verdict;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit::{self, from_hex, golden, hex};
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

struct Case {
    name: String,
    port: u16,
    input: Vec<u8>,
    /// The frames expected out (none for a drop; several for a packet cut into fragments).
    outputs: Vec<Vec<u8>>,
    verdict: String,
    /// A frame (and its port) processed first on the same session table.
    pre: Option<(u16, Vec<u8>)>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("golden/cases.txt");
    let mut out = Vec::new();
    for rec in text.split("\n\n").filter(|r| r.contains("case: ")) {
        let field = |k: &str| {
            rec.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("record without {k}: {rec}"))
                .to_string()
        };
        let o = field("out");
        out.push(Case {
            name: field("case"),
            port: field("port").parse().unwrap(),
            input: from_hex(&field("in")),
            outputs: if o == "-" { Vec::new() } else { o.split(',').map(from_hex).collect() },
            verdict: field("verdict"),
            pre: rec.lines().find_map(|l| l.strip_prefix("pre: ")).map(|p| {
                let (port, bytes) = p.split_once(' ').unwrap();
                (port.parse().unwrap(), from_hex(bytes))
            }),
        });
    }
    assert!(out.len() >= 40, "only {} golden cases parsed", out.len());
    out
}

/// Runs a case's `pre` frame, if any, through `process` on `table`.
fn run_pre(c: &Case, snap: &Snapshot, table: &SessionTable) {
    if let Some((port, bytes)) = &c.pre {
        let v = testkit::process_one(snap, table, &testkit::synproxy(), 1, *port, &mut VecFrame::new(bytes));
        assert!(matches!(v, Verdict::Tunnel { .. }), "case {:?}: pre gave {v:?}", c.name);
    }
}

fn verdict_string(v: Verdict) -> String {
    match v {
        Verdict::ArpReply { port } => format!("arp_reply:{port}"),
        Verdict::NeighborAdvert { port } => format!("nd_advert:{port}"),
        Verdict::EchoReply { port } => format!("echo_reply:{port}"),
        Verdict::Tunnel { port, .. } => format!("tunnel:{port}"),
        Verdict::Reset { port } => format!("reset:{port}"),
        Verdict::SynAck { port } => format!("synack:{port}"),
        Verdict::NatReply { port, .. } => format!("nat_reply:{port}"),
        Verdict::Unreachable { port } => format!("unreachable:{port}"),
        Verdict::TooBig { port } => format!("too_big:{port}"),
        Verdict::Fragment { port, .. } => format!("fragments:{port}"),
        Verdict::ToKernel { port } => format!("to_kernel:{port}"),
        Verdict::FromKernel { port } => format!("from_kernel:{port}"),
        Verdict::Consumed => "consumed".into(),
        Verdict::Drop(r) => format!("drop:{}", r.label()),
    }
}

#[test]
fn golden_through_process() {
    for c in cases() {
        let snap = golden::snapshot();
        let table = SessionTable::new(1024, Timeouts::default(), 1);
        run_pre(&c, &snap, &table);
        let mut f = VecFrame::new(&c.input);
        let v = testkit::process_one(&snap, &table, &testkit::synproxy(), 1, c.port, &mut f);
        assert_eq!(verdict_string(v), c.verdict, "case {:?}", c.name);
        // Fragments are cut by the worker (the next test).
        if let [want] = &c.outputs[..] {
            assert_eq!(hex(f.data()), hex(want), "case {:?}: output bytes differ", c.name);
        }
    }
}

#[test]
fn golden_through_worker_counts_every_drop() {
    for c in cases() {
        let config = Arc::new(ArcSwap::from_pointee(golden::snapshot()));
        let table = Arc::new(SessionTable::new(1024, Timeouts::default(), 1));
        run_pre(&c, &config.load(), &table);
        let stats = Arc::new(WorkerStats::default());
        let mut io = MemIo::new(4);
        io.rx[usize::from(c.port)].push_back(VecFrame::new(&c.input));
        // Worker 1: the neighbour scan of worker 0 would add ARP requests of its own.
        let mut w = Worker::new(
            (1, 2),
            io,
            4,
            Arc::clone(&config),
            (table, Arc::new(testkit::synproxy())),
            Arc::clone(&stats),
        );
        assert_eq!(w.poll(1), 1, "case {:?}", c.name);

        let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
        for (p, q) in w.io().tx.iter().enumerate() {
            sent.extend(q.iter().map(|f| (p, f.data().to_vec())));
        }
        // Appliance-originated ARP requests (the unresolved-neighbour case) are checked apart.
        let (arp_requests, sent): (Vec<_>, Vec<_>) =
            sent.into_iter().partition(|(_, b)| b[12..14] == [0x08, 0x06] && b[20..22] == [0, 1]);
        let drops: u64 = DropReason::ALL.iter().map(|&r| stats.dropped(r)).sum();

        if let Some(reason) = c.verdict.strip_prefix("drop:") {
            let r = *DropReason::ALL.iter().find(|r| r.label() == reason).unwrap();
            assert_eq!(stats.dropped(r), 1, "case {:?}: not counted under {reason}", c.name);
            assert_eq!(drops, 1, "case {:?}: counted more than once", c.name);
            assert!(sent.is_empty(), "case {:?}: a dropped packet was sent", c.name);
        } else if c.verdict == "consumed" {
            assert_eq!(drops, 0, "case {:?}", c.name);
            assert!(sent.is_empty(), "case {:?}: a consumed packet was sent", c.name);
        } else {
            let want_port: usize = c.verdict.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(drops, 0, "case {:?}", c.name);
            assert_eq!(sent.len(), c.outputs.len(), "case {:?}", c.name);
            for ((port, got), want) in sent.iter().zip(&c.outputs) {
                assert_eq!(*port, want_port, "case {:?}", c.name);
                assert_eq!(hex(got), hex(want), "case {:?}", c.name);
            }
            assert_eq!(stats.ports[want_port].tx_packets.get(), c.outputs.len() as u64);
        }
        if c.verdict == "drop:neighbor_unresolved" {
            assert_eq!(arp_requests.len(), 1, "an ARP request for the missing neighbour");
            let (p, b) = &arp_requests[0];
            assert_eq!(*p, 1);
            assert_eq!(&b[38..42], &[198, 19, 0, 99], "asks for the backend's address");
            assert_eq!(&b[28..32], &[198, 19, 0, 1], "from the port's address");
            assert_eq!(b.len(), 60);
        } else {
            assert!(arp_requests.is_empty(), "case {:?}: unexpected ARP request", c.name);
        }
        assert_eq!(stats.ports[usize::from(c.port)].rx_packets.get(), 1);
    }
}

#[test]
fn every_drop_reason_reachable_from_the_wire_has_a_golden_case() {
    let cases = cases();
    // Reasons that need conditions a single frame cannot make: a chained buffer, a full TX
    // queue, missing headroom (tests in pipeline_extra.rs); a session whose backend left the
    // config (sessions.rs); a SYN proxy session in a state one frame cannot reach, or a cookie
    // from another time (synproxy.rs); a limit, which takes a rate or a count of frames to
    // pass (limits.rs); the exception path's kernel side refusing a frame (exception.rs);
    // too-big messages over their rate, a fragment that finds no buffer, a reply too big for
    // the client's port, which no port of the golden appliance is (path_mtu.rs).
    let elsewhere = [
        DropReason::MultiSegment,
        DropReason::TxFull,
        DropReason::NoHeadroom,
        DropReason::BackendRemoved,
        DropReason::SynCookieStale,
        DropReason::SynproxyTableFull,
        DropReason::SynproxyNotHeld,
        DropReason::SynproxyBackendUnexpected,
        DropReason::LimitPackets,
        DropReason::LimitBytes,
        DropReason::LimitConnections,
        DropReason::LimitSessions,
        DropReason::KernelLimited,
        DropReason::KernelRefused,
        DropReason::TooBigLimited,
        DropReason::FragmentFailed,
        DropReason::MtuExceeded,
    ];
    for r in DropReason::ALL.iter().filter(|r| !elsewhere.contains(r)) {
        let v = format!("drop:{}", r.label());
        assert!(cases.iter().any(|c| c.verdict == v), "no golden case for {v}");
    }
}
