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
