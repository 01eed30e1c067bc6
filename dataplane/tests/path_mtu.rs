//! Path MTU through the tunnel: MSS clamping of SYNs (the golden cases hold the bytes; here
//! the settings and the counter).

use arc_swap::ArcSwap;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::{MssClamp, Protocol, ServiceSpec, Snapshot};
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::testkit::frame::{linux_syn_options, tcp, Packet};
use sluice_dataplane::testkit::spec::{backend, dsr_service, ext_port, int_port, snapshot};
use sluice_dataplane::testkit::{host, hosts, synproxy, vip, ROUTER};
use sluice_dataplane::wire::{tcp as tcpf, tcp_options, Ipv4Packet, TcpPacket};
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

fn appliance(clamp: MssClamp) -> Snapshot {
    let web = ServiceSpec {
        mss_clamp: clamp,
        ..dsr_service("web", vip(1), 80, Protocol::Tcp, vec![backend(host(10), 1)])
    };
    snapshot(vec![ext_port(), int_port(hosts([10]))], vec![web])
}

/// A Linux SYN (MSS 1460) from the router through a worker: the MSS the backend sees and the
/// worker's count of clamped SYNs.
fn through(clamp: MssClamp) -> (u16, u64) {
    let mut io = MemIo::new(2);
    let options = linux_syn_options(1);
    let syn = Packet::new(ROUTER, vip(1))
        .tcp(&sluice_dataplane::wire::TcpRepr { options: &options, ..tcp((40000, 80), tcpf::SYN) }, b"");
    io.rx[0].push_back(VecFrame::new(&syn));
    let stats = Arc::new(WorkerStats::default());
    let tables = (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(synproxy()));
    let mut w = Worker::new(
        (0, 1),
        io,
        2,
        Arc::new(ArcSwap::from_pointee(appliance(clamp))),
        tables,
        Arc::clone(&stats),
    );
    w.poll(1_000_000_000);
    w.poll(1_000_000_000);
    let out = w.io().tx[1].pop().expect("the SYN in its tunnel");
    // Ethernet, outer IPv4 (IPIP), then the client's packet.
    let inner = Ipv4Packet::new_checked(&out.data()[14 + 20..]).unwrap();
    let t = TcpPacket::new_checked(inner.payload()).unwrap();
    let mss = tcp_options::parse(t.options()).unwrap().mss.unwrap();
    (mss, stats.mss_clamped.get())
}

#[test]
fn a_syn_is_clamped_to_the_tunnel_path_unless_told_otherwise() {
    // IPIP out of a 1500-byte port: 1500 - 20 - 40.
    assert_eq!(through(MssClamp::Auto), (1440, 1));
    assert_eq!(through(MssClamp::To(1300)), (1300, 1));
    assert_eq!(through(MssClamp::Off), (1460, 0));
}

#[test]
fn too_big_messages_are_held_to_their_rate_per_worker() {
    use sluice_dataplane::pipeline::{process, Budgets, Ctx, Resolve, Verdict, TOO_BIG_RATE};
    use sluice_dataplane::sched::SchedState;
    use sluice_dataplane::stats::DropReason;
    // A DF segment of 1500 bytes: 20 more than IPIP out of a 1500-byte port takes.
    let snap = appliance(MssClamp::Auto);
    let big = Packet::new(ROUTER, vip(1)).tcp(&tcp((40000, 80), tcpf::ACK), &[0x55; 1460]);
    let (table, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
    let (mut sched, mut resolve, mut budgets) = (SchedState::new(0, 1), Resolve::new(), Budgets::default());
    let mut cx =
        Ctx::new(&snap, &table, &proxy, &mut sched, 5_000_000_000, &mut resolve).with_budgets(&mut budgets);
    let n = 10 * TOO_BIG_RATE as usize / 20;
    let verdicts: Vec<Verdict> = (0..n).map(|_| process(&mut cx, 0, &mut VecFrame::new(&big))).collect();
    let sent = verdicts.iter().filter(|v| **v == Verdict::TooBig { port: 0 }).count();
    let held = verdicts.iter().filter(|v| **v == Verdict::Drop(DropReason::TooBigLimited)).count();
    // A fresh bucket holds 50 ms of the rate (limit::BURST_NS).
    assert_eq!((sent, held), (TOO_BIG_RATE as usize / 20, n - TOO_BIG_RATE as usize / 20));
}
