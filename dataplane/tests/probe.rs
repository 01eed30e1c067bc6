//! The tunnel-path probe (`pipeline::probe`): a probe toward a backend leaves in the same
//! tunnel as that backend's traffic (Ethernet, outer header, GRE key), and carries a valid
//! UDP datagram to the reserved port with the nonce; worker 0 sends what the control thread
//! queued, a few per poll, and counts what it could not send.

use arc_swap::ArcSwap;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::pipeline::{probe_to_backend, probes, Ctx, ProbeQueue, ProbeRequest, Resolve, Verdict};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::testkit::{self, frame, golden};
use sluice_dataplane::wire::{
    checksum, ethernet, probe, tcp, EthernetFrame, GrePacket, Ipv4Packet, Ipv6Packet, UdpPacket,
};
use sluice_dataplane::worker::Worker;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const NONCE: u64 = 0x5eed_0000_1234_abcd;

fn probe_frame(snap: &Snapshot, req: &ProbeRequest) -> (Verdict, VecFrame) {
    let (table, proxy) = (SessionTable::new(64, Timeouts::default(), 1), testkit::synproxy());
    let (mut resolve, mut sched) = (Resolve::new(), SchedState::new(0, 1));
    let mut cx = Ctx::new(snap, &table, &proxy, &mut sched, 1, &mut resolve);
    let mut f = VecFrame::new(&[]);
    let v = probe_to_backend(&mut cx, req, &mut f);
    (v, f)
}

/// A client's SYN to `vip:port`, tunneled as traffic is.
fn traffic_frame(snap: &Snapshot, vip: Ipv4Addr, port: u16) -> VecFrame {
    let table = SessionTable::new(64, Timeouts::default(), 1);
    let syn = frame::Packet::new(testkit::client(1), vip).tcp(&frame::tcp((40000, port), tcp::SYN), &[]);
    let mut f = VecFrame::new(&syn);
    let v = testkit::process_one(snap, &table, &testkit::synproxy(), 1, 0, &mut f);
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    f
}

/// The request for the first backend of the service at `vip:port`.
fn request(snap: &Snapshot, vip: IpAddr, port: u16) -> ProbeRequest {
    let svc = snap.services.iter().find(|s| s.vip == vip && s.port == port).expect("service");
    ProbeRequest { service: svc.id, backend: svc.backends[0].id, nonce: NONCE }
}

/// The probe's UDP datagram (`udp`, from `src` to `dst`): reserved ports, valid checksum,
/// the nonce.
fn check_udp(udp: &[u8], (src, dst): (IpAddr, IpAddr)) {
    let u = UdpPacket::new_checked(udp).expect("udp");
    assert_eq!((u.src_port(), u.dst_port()), (probe::PORT, probe::PORT));
    assert_eq!(probe::parse(u.payload()), Some(NONCE));
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ph = checksum::pseudo_header_v4(s.octets(), d.octets(), 17, udp.len() as u16);
            assert_eq!(checksum::fold(checksum::combine(ph, checksum::sum(udp))), 0xffff, "udp checksum");
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => assert!(u.verify_checksum_v6(s, d), "udp checksum"),
        _ => panic!("mixed families"),
    }
}

/// The Ethernet header, outer IPv4 header's fixed fields and GRE header (if any) of `f`, and
/// the offset of its inner packet.
fn outer_v4(f: &[u8]) -> (Vec<u8>, usize) {
    let ip = Ipv4Packet::new_checked(&f[ethernet::HEADER_LEN..]).expect("outer ipv4");
    assert!(ip.verify_checksum(), "outer checksum");
    let mut fixed = f[..ethernet::HEADER_LEN].to_vec();
    fixed.extend_from_slice(&[ip.ttl(), ip.protocol()]);
    fixed.extend_from_slice(&ip.src().octets());
    fixed.extend_from_slice(&ip.dst().octets());
    let mut at = ethernet::HEADER_LEN + ip.header_len();
    if ip.protocol() == 47 {
        let gre = GrePacket::new_checked(&f[at..]).expect("gre");
        fixed.extend_from_slice(&f[at..at + gre.header_len()]);
        at += gre.header_len();
    }
    assert_eq!(ip.total_len(), f.len() - ethernet::HEADER_LEN, "outer length covers the inner packet");
    (fixed, at)
}

#[test]
fn a_probe_takes_the_tunnel_its_backends_traffic_takes_over_ipv4() {
    let snap = golden::snapshot();
    // NAT over GRE with VPC key 7 (the inner datagram to the VM), and DSR over IPIP (to the VIP).
    let cases = [
        (Ipv4Addr::new(198, 18, 10, 6), 80, IpAddr::from([192, 0, 2, 10])),
        (Ipv4Addr::new(198, 18, 10, 1), 80, IpAddr::from([198, 18, 10, 1])),
    ];
    for (vip, port, inner_dst) in cases {
        let req = request(&snap, vip.into(), port);
        let (v, f) = probe_frame(&snap, &req);
        let Verdict::Tunnel { port: out, service_id, backend_id, .. } = v else { panic!("{vip}: {v:?}") };
        assert_eq!((service_id, backend_id), (req.service, req.backend));
        let traffic = traffic_frame(&snap, vip, port);
        let (want, _) = outer_v4(traffic.data());
        let (got, at) = outer_v4(f.data());
        assert_eq!(got, want, "{vip}: the probe's outer header is its traffic's");
        assert_eq!(out, 1, "out of the backends' port");
        let inner = Ipv4Packet::new_checked(&f.data()[at..]).expect("inner ipv4");
        assert!(inner.verify_checksum() && inner.protocol() == 17);
        assert_eq!(IpAddr::from(inner.dst()), inner_dst);
        assert_eq!(inner.src(), Ipv4Addr::new(198, 19, 0, 1), "from the tunnel's source");
        check_udp(inner.payload(), (inner.src().into(), inner.dst().into()));
    }
}

#[test]
fn a_probe_over_an_ipv6_underlay_carries_an_ipv6_datagram_with_the_vpc_key() {
    let snap = golden::snapshot();
    // NAT66, GRE key 8 over IPv6 to [2001:db8:c0::10] on 2001:db8:19::a.
    let req = request(&snap, golden::VIP6_NAT.into(), 443);
    let (v, f) = probe_frame(&snap, &req);
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    let b = f.data();
    assert_eq!(&b[..6], &testkit::host_mac(10), "to the host's MAC");
    let outer = Ipv6Packet::new_checked(&b[ethernet::HEADER_LEN..]).expect("outer ipv6");
    assert_eq!((outer.src(), outer.dst(), outer.next_header()), (golden::INT_ADDR6, golden::HOST6_10, 47));
    let at = ethernet::HEADER_LEN + 40;
    let gre = GrePacket::new_checked(&b[at..]).expect("gre");
    assert_eq!((gre.key(), gre.protocol()), (Some(8), ethernet::ETHERTYPE_IPV6));
    let inner = Ipv6Packet::new_checked(&b[at + gre.header_len()..]).expect("inner ipv6");
    assert_eq!(inner.dst(), "2001:db8:c0::10".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(inner.src(), golden::INT_ADDR6);
    check_udp(inner.payload(), (inner.src().into(), inner.dst().into()));
}

#[test]
fn a_probe_to_a_backend_not_in_the_snapshot_or_with_no_neighbour_is_not_sent() {
    let snap = golden::snapshot();
    let mut req = request(&snap, IpAddr::from([198, 18, 10, 6]), 80);
    req.backend += 1000;
    assert!(matches!(probe_frame(&snap, &req).0, Verdict::Drop(_)), "unknown backend");
    req.backend -= 1000;
    req.service = u16::MAX;
    assert!(matches!(probe_frame(&snap, &req).0, Verdict::Drop(_)), "unknown service");
    // 198.18.10.4's host has no static neighbour: nothing to send it to yet.
    let req = request(&snap, IpAddr::from([198, 18, 10, 4]), 80);
    assert!(matches!(probe_frame(&snap, &req).0, Verdict::Drop(_)), "unresolved");
}

#[test]
fn worker_0_sends_a_few_queued_probes_per_poll_and_counts_failures() {
    let snap = golden::snapshot();
    let good = request(&snap, IpAddr::from([198, 18, 10, 6]), 80);
    let config = Arc::new(ArcSwap::from_pointee(snap));
    let sessions = Arc::new(SessionTable::new(64, Timeouts::default(), 1));
    let stats = Arc::new(WorkerStats::default());
    let mut w =
        Worker::new((0, 1), MemIo::new(4), 4, config, (sessions, Arc::new(testkit::synproxy())), stats);
    let queue = Arc::new(ProbeQueue::new(probes::QUEUE_LEN));
    w.set_probes(Arc::clone(&queue));
    w.poll(1);
    assert_eq!(w.stats().probes_sent.get(), 0, "nothing queued, nothing sent");
    let n = probes::PER_POLL + 2;
    for i in 0..n {
        queue.push(ProbeRequest { nonce: i as u64, ..good }).unwrap();
    }
    queue.push(ProbeRequest { backend: good.backend + 1000, ..good }).unwrap();
    w.poll(2);
    assert_eq!(w.stats().probes_sent.get(), probes::PER_POLL as u64, "at most PER_POLL a poll");
    assert_eq!(queue.len(), 3);
    w.poll(3);
    assert_eq!((w.stats().probes_sent.get(), w.stats().probes_failed.get()), (n as u64, 1));
    let sent: Vec<u64> = w.io().tx[1]
        .iter()
        .filter(|f| {
            EthernetFrame::new_checked(f.data()).is_ok_and(|e| e.ethertype() == ethernet::ETHERTYPE_IPV4)
        })
        .filter_map(|f| {
            let (_, at) = outer_v4(f.data());
            let ip = Ipv4Packet::new_checked(&f.data()[at..]).ok()?;
            let udp = UdpPacket::new_checked(ip.payload()).ok()?;
            probe::parse(udp.payload())
        })
        .collect();
    assert_eq!(sent, (0..n as u64).collect::<Vec<_>>(), "in order, out of the backend's port");
    w.io().can_alloc = false;
    queue.push(good).unwrap();
    w.poll(4);
    assert_eq!(w.stats().probes_failed.get(), 2, "no buffer");
}
