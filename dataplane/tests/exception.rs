//! The exception path: a port with a kernel interface hands the kernel the port's own traffic
//! (ARP for its address, BGP, BFD, anything else to it, the latter held to a rate) and sends
//! what the kernel sends out of the port unchanged; VIPs stay the appliance's.

use sluice_dataplane::io::{Frame, VecFrame};

use sluice_dataplane::pipeline::{process, Budgets, Ctx, Resolve, Verdict, KERNEL_RATE};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::{PortSpec, Protocol, Snapshot};
use sluice_dataplane::stats::DropReason;
use sluice_dataplane::testkit::frame::{arp_frame, tcp, Packet};
use sluice_dataplane::testkit::spec::{backend, dsr_service, ext_port, int_port, snapshot};
use sluice_dataplane::testkit::{host, hosts, synproxy, vip, EXT_ADDR, EXT_MAC, ROUTER, ROUTER_MAC};
use sluice_dataplane::wire::{arp, tcp as tcpf};

/// Port 0 (ext) with its exception path at port index 2; port 1 (int) without one.
fn appliance(kernel: Option<u16>) -> Snapshot {
    let ext = PortSpec { kernel, ..ext_port() };
    snapshot(
        vec![ext, int_port(hosts([10]))],
        vec![dsr_service("web", vip(1), 80, Protocol::Tcp, vec![backend(host(10), 1)])],
    )
}

/// `frames` through the pipeline one by one at time `now`, with a worker's budgets.
fn run(
    snap: &Snapshot,
    rx: u16,
    frames: &[Vec<u8>],
    now: u64,
    budgets: &mut Budgets,
) -> Vec<(Verdict, Vec<u8>)> {
    let (table, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
    let mut sched = SchedState::new(0, 1);
    let mut resolve = Resolve::new();
    let mut cx = Ctx::new(snap, &table, &proxy, &mut sched, now, &mut resolve).with_budgets(budgets);
    frames
        .iter()
        .map(|f| {
            let mut frame = VecFrame::new(f);
            let v = process(&mut cx, rx, &mut frame);
            (v, frame.data().to_vec())
        })
        .collect()
}

fn one(snap: &Snapshot, rx: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run(snap, rx, &[frame.to_vec()], 1_000_000_000, &mut Budgets::default()).remove(0)
}

fn arp_request_for(target: std::net::Ipv4Addr) -> Vec<u8> {
    arp_frame(([0xff; 6], ROUTER_MAC), arp::OP_REQUEST, (ROUTER_MAC, ROUTER), ([0; 6], target))
}

#[test]
fn the_ports_own_traffic_goes_to_its_kernel_unchanged() {
    let snap = appliance(Some(2));
    let to_port = Packet::new(ROUTER, EXT_ADDR);
    let frames = [
        ("ARP for the port", arp_request_for(EXT_ADDR)),
        (
            "ARP reply to the port",
            arp_frame((EXT_MAC, ROUTER_MAC), arp::OP_REPLY, (ROUTER_MAC, ROUTER), (EXT_MAC, EXT_ADDR)),
        ),
        ("BGP", to_port.tcp(&tcp((40000, 179), tcpf::SYN), b"")),
        ("BFD", to_port.udp(49152, 3784, &[0x20; 24])),
        ("ping", to_port.icmp_echo(7, 1, b"ping")),
        ("ssh", to_port.tcp(&tcp((40000, 22), tcpf::SYN), b"")),
    ];
    for (what, f) in frames {
        let (v, out) = one(&snap, 0, &f);
        assert_eq!(v, Verdict::ToKernel { port: 2 }, "{what}");
        assert_eq!(out, f, "{what}: the kernel gets the frame as it came");
    }
}

#[test]
fn the_kernels_frames_leave_by_their_port_unchanged() {
    let snap = appliance(Some(2));
    let mut from_kernel = Packet::new(EXT_ADDR, ROUTER);
    (from_kernel.dst_mac, from_kernel.src_mac) = (ROUTER_MAC, EXT_MAC);
    for f in [from_kernel.tcp(&tcp((179, 40000), tcpf::SYN | tcpf::ACK), b""), arp_request_for(ROUTER)] {
        let (v, out) = one(&snap, 2, &f);
        assert_eq!(v, Verdict::FromKernel { port: 0 });
        assert_eq!(out, f);
    }
    // A port index past the data ports that is nobody's exception path.
    assert_eq!(one(&snap, 3, &arp_request_for(ROUTER)).0, Verdict::Drop(DropReason::NotForUs));
}

#[test]
fn vips_stay_the_appliances() {
    let snap = appliance(Some(2));
    assert_eq!(one(&snap, 0, &arp_request_for(vip(1))).0, Verdict::ArpReply { port: 0 });
    let ping = Packet::new(ROUTER, vip(1)).icmp_echo(7, 1, b"ping");
    assert_eq!(one(&snap, 0, &ping).0, Verdict::EchoReply { port: 0 });
    let syn = Packet::new(ROUTER, vip(1)).tcp(&tcp((40000, 80), tcpf::SYN), b"");
    assert!(matches!(
        one(&snap, 0, &syn).0,
        Verdict::Tunnel { .. } | Verdict::Drop(DropReason::NeighborUnresolved)
    ));
}

#[test]
fn without_an_exception_path_the_appliance_answers_for_its_address() {
    let snap = appliance(None);
    assert_eq!(one(&snap, 0, &arp_request_for(EXT_ADDR)).0, Verdict::ArpReply { port: 0 });
    let ping = Packet::new(ROUTER, EXT_ADDR).icmp_echo(7, 1, b"ping");
    assert_eq!(one(&snap, 0, &ping).0, Verdict::EchoReply { port: 0 });
    let bgp = Packet::new(ROUTER, EXT_ADDR).tcp(&tcp((40000, 179), tcpf::SYN), b"");
    assert_eq!(one(&snap, 0, &bgp).0, Verdict::Drop(DropReason::LocalUnsupported));
}

#[test]
fn a_flood_at_the_port_is_held_to_its_rate_and_routing_still_passes() {
    let snap = appliance(Some(2));
    let to_port = Packet::new(ROUTER, EXT_ADDR);
    let flood = to_port.tcp(&tcp((40000, 22), tcpf::SYN), b"");
    let bgp = to_port.tcp(&tcp((40000, 179), tcpf::ACK), b"keepalive");
    let bfd = to_port.udp(49152, 3784, &[0x20; 24]);
    let arp = arp_request_for(EXT_ADDR);
    // Ten times the rate's burst at one instant, routing and ARP mixed in.
    let n = 10 * KERNEL_RATE as usize / 20 + 1;
    let mut frames = vec![flood; n];
    frames.extend([bgp, bfd, arp]);
    let mut budgets = Budgets::default();
    let out = run(&snap, 0, &frames, 5_000_000_000, &mut budgets);
    let passed = out[..n].iter().filter(|(v, _)| *v == Verdict::ToKernel { port: 2 }).count();
    let limited = out[..n].iter().filter(|(v, _)| *v == Verdict::Drop(DropReason::KernelLimited)).count();
    assert_eq!(passed + limited, n);
    // A fresh bucket holds 50 ms of the rate (limit::BURST_NS).
    assert_eq!(passed, KERNEL_RATE as usize / 20, "passed {passed} of {n}");
    for (v, _) in &out[n..] {
        assert_eq!(*v, Verdict::ToKernel { port: 2 }, "routing and ARP are never held back");
    }
}

#[test]
fn an_exception_path_must_come_after_the_data_ports() {
    use sluice_dataplane::snapshot::SnapshotSpec;
    let bad = |kernel| SnapshotSpec {
        generation: 1,
        ports: vec![PortSpec { kernel: Some(kernel), ..ext_port() }, int_port(hosts([10]))],
        tunnel_sources: vec![],
        clusters: vec![],
        services: vec![],
    };
    for k in [0, 1, 8] {
        let e = Snapshot::build(&bad(k), None).unwrap_err();
        assert_eq!(e.path, "ports[0].kernel", "{k}: {e}");
    }
    assert!(Snapshot::build(&bad(2), None).is_ok());
    let mut twice = bad(2);
    twice.ports[1].kernel = Some(2);
    assert_eq!(Snapshot::build(&twice, None).unwrap_err().path, "ports[1].kernel");
}

#[test]
fn a_full_kernel_queue_is_its_own_drop_reason() {
    use arc_swap::ArcSwap;
    use sluice_dataplane::io::MemIo;
    use sluice_dataplane::stats::WorkerStats;
    use sluice_dataplane::worker::Worker;
    use std::sync::Arc;
    // Nothing is taken on any port: the port's ARP for the kernel and a client's packet for
    // the backend are both lost, each under its own reason.
    let mut io = MemIo::new(3);
    io.tx_limit = Some(0);
    io.rx[0].push_back(VecFrame::new(&arp_request_for(EXT_ADDR)));
    let client = Packet::new(ROUTER, vip(1)).tcp(&tcp((40000, 80), tcpf::SYN), b"");
    io.rx[0].push_back(VecFrame::new(&client));
    let stats = Arc::new(WorkerStats::default());
    let tables = (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(synproxy()));
    let config = Arc::new(ArcSwap::from_pointee(appliance(Some(2))));
    let mut w = Worker::new((0, 1), io, 3, config, tables, Arc::clone(&stats));
    w.poll(1_000_000_000);
    w.poll(1_000_000_000);
    assert_eq!(stats.dropped(DropReason::KernelRefused), 1);
    assert_eq!(stats.dropped(DropReason::TxFull), 1, "the packet toward the backend");
}
