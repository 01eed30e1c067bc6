//! Neighbor discovery on the data ports, beyond the one-frame golden cases: what the worker
//! sends of its own accord (solicitations for IPv6 next hops, unsolicited advertisements of
//! the appliance's IPv6 addresses), next hops learned from solicitations and advertisements
//! (and never made from them), and the exception path taking the port's own neighbor
//! discovery and IPv6 traffic.

use arc_swap::ArcSwap;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::pipeline::{
    announcements, build_neighbor_request, process, Budgets, Ctx, Resolve, Verdict, KERNEL_RATE,
};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit::golden::{self, EXT_ADDR6, HOST6_10, INT_ADDR6, ROUTER6};
use sluice_dataplane::testkit::{hex, synproxy, EXT_MAC, INT_MAC, ROUTER_MAC};
use sluice_dataplane::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV6};
use sluice_dataplane::wire::ipv6::{self, Ipv6Repr};
use sluice_dataplane::wire::ndisc::{self, NeighborAdvert, NeighborSolicit};
use sluice_dataplane::wire::{tcp, Mac, TcpRepr};
use sluice_dataplane::worker::Worker;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// A client on the external port's link that is no next hop.
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x99);

/// An untagged Ethernet frame around the IPv6 packet `packet`.
fn frame6(dst: Mac, src: Mac, packet: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 14];
    EthernetRepr { dst, src, vlan: None, ethertype: ETHERTYPE_IPV6 }.emit(&mut b);
    b.extend_from_slice(packet);
    b
}

/// A solicitation for `target` from `src` (with `mac` as its link-layer option), to the
/// target's solicited-node group.
fn solicitation(src: Ipv6Addr, mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let (ns, group) = NeighborSolicit::resolve(target, mac);
    let mut p = [0u8; ndisc::PACKET_LEN];
    assert_eq!(ns.emit_packet(&mut p, src, group), p.len());
    frame6(ndisc::multicast_mac(group), mac, &p)
}

/// An advertisement of `target` at `mac`, from the target to `dst` (at `dst_mac`), solicited
/// (to a unicast `dst`) and overriding as `override_flag` says.
fn advertisement(
    target: Ipv6Addr,
    mac: Mac,
    (dst, dst_mac): (Ipv6Addr, Mac),
    override_flag: bool,
) -> Vec<u8> {
    let na = NeighborAdvert {
        router: true,
        solicited: !dst.is_multicast(),
        override_flag,
        target,
        target_mac: Some(mac),
    };
    let mut p = [0u8; ndisc::PACKET_LEN];
    assert_eq!(na.emit_packet(&mut p, target, dst), p.len());
    frame6(dst_mac, mac, &p)
}

/// TCP from `src` to `dst`, ports `ports`.
fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, ports: (u16, u16), dst_mac: Mac) -> Vec<u8> {
    let t = TcpRepr {
        src_port: ports.0,
        dst_port: ports.1,
        seq: 1,
        ack: 0,
        flags: tcp::SYN,
        window: 1024,
        options: &[],
    };
    let mut p = vec![0u8; ipv6::HEADER_LEN + tcp::HEADER_LEN];
    let header = Ipv6Repr {
        src,
        dst,
        next_header: ipv6::NEXT_TCP,
        payload_len: tcp::HEADER_LEN,
        traffic_class: 0,
        flow_label: 0,
        hop_limit: 64,
    };
    header.emit(&mut p);
    t.emit_v6(&mut p[ipv6::HEADER_LEN..], src, dst);
    frame6(dst_mac, ROUTER_MAC, &p)
}

/// `frames` through the pipeline on `rx` at one instant, with a worker's budgets: each
/// verdict and frame after it, and the MACs learned.
fn run(
    snap: &Snapshot,
    rx: u16,
    frames: &[Vec<u8>],
    budgets: &mut Budgets,
) -> (Vec<(Verdict, Vec<u8>)>, u32) {
    let (table, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
    let (mut sched, mut resolve) = (SchedState::new(0, 1), Resolve::new());
    let mut cx =
        Ctx::new(snap, &table, &proxy, &mut sched, 1_000_000_000, &mut resolve).with_budgets(budgets);
    let out = frames
        .iter()
        .map(|f| {
            let mut frame = VecFrame::new(f);
            let v = process(&mut cx, rx, &mut frame);
            (v, frame.data().to_vec())
        })
        .collect();
    (out, cx.learned)
}

fn one(snap: &Snapshot, rx: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run(snap, rx, &[frame.to_vec()], &mut Budgets::default()).0.remove(0)
}

fn router_mac(snap: &Snapshot) -> Option<Mac> {
    snap.nexthop(0, IpAddr::V6(ROUTER6)).expect("the router is port 0's gateway").mac()
}

// scapy: Ether(dst='33:33:ff:00:00:02', src=EXT_MAC)/IPv6(src='2001:db8:18::1',
//     dst='ff02::1:ff00:2', hlim=255)/ICMPv6ND_NS(tgt='2001:db8:18::2')
//     /ICMPv6NDOptSrcLLAddr(lladdr=EXT_MAC)
const NS_ROUTER6: &str = "3333ff00000202000000000186dd6000000000203aff20010db8001800000000000000000001ff02000000\
                          00000000000001ff00000287001bf70000000020010db80018000000000000000000020101020000000001";
// scapy: Ether(dst='33:33:00:00:00:01', src=EXT_MAC)/IPv6(src='2001:db8:18::1', dst='ff02::1',
//     hlim=255)/ICMPv6ND_NA(tgt='2001:db8:18::1', R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=EXT_MAC)
const NA_EXT6: &str = "33330000000102000000000186dd6000000000203aff20010db8001800000000000000000001ff02000000\
                       00000000000000000000018800f8fa2000000020010db80018000000000000000000010201020000000001";
// The same for the internal port (2001:db8:19::1, INT_MAC).
const NA_INT6: &str = "33330000000102000000010186dd6000000000203aff20010db8001900000000000000000001ff02000000\
                       00000000000000000000018800f7f82000000020010db80019000000000000000000010201020000000101";

#[test]
fn a_solicitation_for_an_ipv6_next_hop_is_what_scapy_builds() {
    let snap = golden::snapshot();
    let nh = snap.nexthop_index(0, IpAddr::V6(ROUTER6)).unwrap();
    let mut f = VecFrame::new(&[]);
    assert_eq!(build_neighbor_request(&snap, nh, &mut f), Some(0));
    assert_eq!(hex(f.data()), NS_ROUTER6);
    // Field by field, through our reader: a valid solicitation for the router from the port.
    let ip = sluice_dataplane::wire::Ipv6Packet::new_checked(&f.data()[14..]).unwrap();
    let ns = ndisc::parse_ns(ip.payload(), ip.src(), ip.dst(), ip.hop_limit()).unwrap();
    assert_eq!((ip.src(), ns.target, ns.source_mac), (EXT_ADDR6, ROUTER6, Some(EXT_MAC)));
    // IPv4 next hops are still asked for by ARP, padded to 60 bytes.
    let v4 = snap.nexthop_index(1, IpAddr::V4(sluice_dataplane::testkit::host(10))).unwrap();
    let mut f = VecFrame::new(&[]);
    assert_eq!(build_neighbor_request(&snap, v4, &mut f), Some(1));
    assert_eq!((f.data().len(), &f.data()[12..14]), (60, &[0x08, 0x06][..]));
    assert_eq!(build_neighbor_request(&snap, snap.nexthops.len() as u16, &mut f), None);
}

/// Worker 0 of 1 on the golden appliance (four ports), and its counters.
fn worker(config: Arc<ArcSwap<Snapshot>>) -> (Worker<MemIo>, Arc<WorkerStats>) {
    let stats = Arc::new(WorkerStats::default());
    let tables = (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(synproxy()));
    (Worker::new((0, 1), MemIo::new(4), 4, config, tables, Arc::clone(&stats)), stats)
}

/// The frames a worker sent, by port, as hex; its TX queues emptied.
fn sent(w: &mut Worker<MemIo>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (p, q) in w.io().tx.iter_mut().enumerate() {
        out.extend(q.drain(..).map(|f| (p, hex(f.data()))));
    }
    out
}

#[test]
fn worker_zero_announces_its_addresses_and_asks_for_its_ipv6_gateway() {
    let config = Arc::new(ArcSwap::from_pointee(golden::snapshot()));
    let (mut w, stats) = worker(Arc::clone(&config));
    assert_eq!(w.poll(1), 0);
    let frames = sent(&mut w);
    let on =
        |p: usize| frames.iter().filter(move |(q, _)| *q == p).map(|(_, h)| h.as_str()).collect::<Vec<_>>();
    assert!(on(0).contains(&NA_EXT6), "{frames:?}");
    assert!(on(0).contains(&NS_ROUTER6), "{frames:?}");
    assert!(on(1).contains(&NA_INT6), "{frames:?}");
    assert_eq!(stats.nd_unsolicited.get(), 6, "the two ports' IPv6 addresses, and the two IPv6 VIPs on each");
    assert_eq!(stats.nd_solicitations.get(), 1, "the router, port 0's IPv6 gateway");

    // Nothing new: nothing announced again.
    w.poll(2);
    assert_eq!(stats.nd_unsolicited.get(), 6);
    // A snapshot whose internal port has another address: that one only.
    let mut spec = golden::spec();
    let moved = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 2);
    spec.ports[1].addresses[1].addr = IpAddr::V6(moved);
    spec.generation = 2;
    config.store(Arc::new(Snapshot::build(&spec, Some(&config.load())).unwrap()));
    sent(&mut w);
    w.poll(3);
    let frames = sent(&mut w);
    assert_eq!(stats.nd_unsolicited.get(), 7);
    let na: Vec<_> = frames.iter().filter(|(_, h)| h.starts_with("333300000001")).collect();
    assert_eq!(na.len(), 1, "{frames:?}");
    assert_eq!(na[0].0, 1);
    assert!(na[0].1.contains("20010db8001900000000000000000002"), "advertises {moved}");
}

#[test]
fn an_address_with_an_exception_path_is_its_kernels_to_announce() {
    let snap = golden::snapshot();
    let (vip, nat) = (golden::VIP6, golden::VIP6_NAT);
    assert_eq!(
        announcements(&snap),
        [(0, vip), (0, nat), (0, EXT_ADDR6), (1, vip), (1, nat), (1, INT_ADDR6)]
    );
    let mut spec = golden::spec();
    spec.ports[0].kernel = Some(4);
    let snap = Snapshot::build(&spec, None).unwrap();
    assert_eq!(announcements(&snap), [(0, vip), (0, nat), (1, vip), (1, nat), (1, INT_ADDR6)]);
}

#[test]
fn advertisements_teach_a_next_hops_mac_without_override_only_the_first() {
    let snap = golden::snapshot();
    assert_eq!(router_mac(&snap), None);
    let solicited = advertisement(ROUTER6, ROUTER_MAC, (EXT_ADDR6, EXT_MAC), false);
    let (out, learned) = run(&snap, 0, &[solicited], &mut Budgets::default());
    assert_eq!((out[0].0, learned), (Verdict::Consumed, 1));
    assert_eq!(router_mac(&snap), Some(ROUTER_MAC));
    // The next hop is known, so not asked for again before its refresh.
    let nh = snap.nexthop(0, IpAddr::V6(ROUTER6)).unwrap();
    assert!(!nh.claim_request(2_000_000_000));

    let other: Mac = [2, 0, 0, 0, 0, 0x77];
    let all_nodes = (ndisc::ALL_NODES, ndisc::multicast_mac(ndisc::ALL_NODES));
    let (out, learned) =
        run(&snap, 0, &[advertisement(ROUTER6, other, all_nodes, false)], &mut Budgets::default());
    assert_eq!((out[0].0, learned), (Verdict::Consumed, 0));
    assert_eq!(router_mac(&snap), Some(ROUTER_MAC), "no override: the known MAC stays");
    let (out, learned) =
        run(&snap, 0, &[advertisement(ROUTER6, other, all_nodes, true)], &mut Budgets::default());
    assert_eq!((out[0].0, learned), (Verdict::Consumed, 1));
    assert_eq!(router_mac(&snap), Some(other), "override: replaced");
}

#[test]
fn a_solicitation_from_a_next_hop_teaches_its_mac_and_is_answered() {
    let snap = golden::snapshot();
    let (out, learned) =
        run(&snap, 0, &[solicitation(ROUTER6, ROUTER_MAC, EXT_ADDR6)], &mut Budgets::default());
    assert_eq!((out[0].0, learned), (Verdict::NeighborAdvert { port: 0 }, 1));
    assert_eq!(router_mac(&snap), Some(ROUTER_MAC));
    assert_eq!(&out[0].1[..6], &ROUTER_MAC, "answered at the option's address");
}

#[test]
fn what_the_wire_says_never_makes_a_next_hop() {
    let snap = golden::snapshot();
    let before = snap.nexthops.len();
    let frames = [
        advertisement(CLIENT6, [2, 0, 0, 0, 0, 0x55], (EXT_ADDR6, EXT_MAC), true),
        solicitation(CLIENT6, [2, 0, 0, 0, 0, 0x55], EXT_ADDR6),
        // A static neighbour keeps its MAC.
        advertisement(HOST6_10, [2, 0, 0, 0, 0, 0x56], (INT_ADDR6, INT_MAC), true),
    ];
    let (out, learned) = run(&snap, 0, &frames[..2], &mut Budgets::default());
    assert_eq!(out[0].0, Verdict::Drop(DropReason::NdNotForUs));
    assert_eq!(out[1].0, Verdict::NeighborAdvert { port: 0 });
    let (_, learned_int) = run(&snap, 1, &frames[2..], &mut Budgets::default());
    assert_eq!((learned, learned_int), (0, 0));
    assert_eq!(snap.nexthops.len(), before);
    assert!(snap.nexthop(0, IpAddr::V6(CLIENT6)).is_none());
    let host = snap.nexthop(1, IpAddr::V6(HOST6_10)).unwrap();
    assert_eq!(host.mac(), Some(sluice_dataplane::testkit::host_mac(10)));
}

/// The golden appliance with an exception path (port index 4) on its external port.
fn with_kernel() -> Snapshot {
    let mut spec = golden::spec();
    spec.ports[0].kernel = Some(4);
    Snapshot::build(&spec, None).unwrap()
}

#[test]
fn the_ports_own_neighbor_discovery_and_ipv6_go_to_its_kernel() {
    let snap = with_kernel();
    let frames = [
        ("a solicitation for the port", solicitation(ROUTER6, ROUTER_MAC, EXT_ADDR6)),
        ("duplicate address detection", {
            let ns = NeighborSolicit { target: EXT_ADDR6, source_mac: None };
            let group = ndisc::solicited_node(EXT_ADDR6);
            let mut p = [0u8; ipv6::HEADER_LEN + ndisc::MSG_LEN];
            assert_eq!(ns.emit_packet(&mut p, Ipv6Addr::UNSPECIFIED, group), p.len());
            frame6(ndisc::multicast_mac(group), ROUTER_MAC, &p)
        }),
        (
            "an answer to the kernel's solicitation",
            advertisement(ROUTER6, ROUTER_MAC, (EXT_ADDR6, EXT_MAC), true),
        ),
        ("BGP", tcp6(ROUTER6, EXT_ADDR6, (40000, 179), EXT_MAC)),
        ("ssh", tcp6(ROUTER6, EXT_ADDR6, (40000, 22), EXT_MAC)),
    ];
    for (what, f) in frames {
        let (v, out) = one(&snap, 0, &f);
        assert_eq!(v, Verdict::ToKernel { port: 4 }, "{what}");
        assert_eq!(out, f, "{what}: the kernel gets the frame as it came");
    }
    // The answer to the kernel's solicitation still taught the appliance the router's MAC.
    assert_eq!(router_mac(&snap), Some(ROUTER_MAC));
    // The other port has no exception path: the appliance answers for it.
    let (v, _) = one(&snap, 1, &solicitation(HOST6_10, INT_MAC, INT_ADDR6));
    assert_eq!(v, Verdict::NeighborAdvert { port: 1 });
    // Without one, TCP to the port's address is nobody's.
    let (v, _) = one(&golden::snapshot(), 0, &tcp6(ROUTER6, EXT_ADDR6, (40000, 179), EXT_MAC));
    assert_eq!(v, Verdict::Drop(DropReason::LocalUnsupported));
}

#[test]
fn the_kernels_link_local_address_is_its_own_so_a_router_can_use_it_as_next_hop() {
    // The routing daemon's BGP announcements name the kernel interface's link-local address
    // as a next hop beside the global one; a router that takes it solicits it, probes it
    // and sends to it.
    let (kernel_ll, router_ll) =
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x4), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfe));
    let snap = with_kernel();
    // Neighbor unreachability detection: a solicitation sent to the address itself.
    let probe = {
        let ns = NeighborSolicit { target: kernel_ll, source_mac: Some(ROUTER_MAC) };
        let mut p = [0u8; ndisc::PACKET_LEN];
        assert_eq!(ns.emit_packet(&mut p, router_ll, kernel_ll), p.len());
        frame6(EXT_MAC, ROUTER_MAC, &p)
    };
    let frames = [
        ("a solicitation for it", solicitation(router_ll, ROUTER_MAC, kernel_ll)),
        ("a probe of it", probe),
        (
            "an answer to the kernel's solicitation",
            advertisement(router_ll, ROUTER_MAC, (kernel_ll, EXT_MAC), true),
        ),
        ("BGP to it", tcp6(router_ll, kernel_ll, (40000, 179), EXT_MAC)),
    ];
    for (what, f) in frames {
        let (v, out) = one(&snap, 0, &f);
        assert_eq!(v, Verdict::ToKernel { port: 4 }, "{what}");
        assert_eq!(out, f, "{what}: the kernel gets the frame as it came");
    }
    // The other port has no exception path: nobody there has a link-local address.
    let (v, _) = one(&snap, 1, &solicitation(HOST6_10, INT_MAC, kernel_ll));
    assert_eq!(v, Verdict::Drop(DropReason::NdNotForUs));
    let (v, _) = one(&snap, 1, &tcp6(HOST6_10, kernel_ll, (40000, 179), INT_MAC));
    assert_eq!(v, Verdict::Drop(DropReason::NotForUs));
}

#[test]
fn a_flood_at_the_ports_ipv6_address_is_held_and_routing_and_nd_still_pass() {
    let snap = with_kernel();
    let n = 10 * KERNEL_RATE as usize / 20 + 1;
    let mut frames = vec![tcp6(ROUTER6, EXT_ADDR6, (40000, 22), EXT_MAC); n];
    frames.extend([
        tcp6(ROUTER6, EXT_ADDR6, (40000, 179), EXT_MAC),
        solicitation(ROUTER6, ROUTER_MAC, EXT_ADDR6),
    ]);
    let (out, _) = run(&snap, 0, &frames, &mut Budgets::default());
    let passed = out[..n].iter().filter(|(v, _)| *v == Verdict::ToKernel { port: 4 }).count();
    assert_eq!(passed, KERNEL_RATE as usize / 20, "a fresh bucket's 50 ms of the rate");
    for (v, _) in &out[n..] {
        assert_eq!(*v, Verdict::ToKernel { port: 4 }, "BGP and neighbor discovery are never held back");
    }
}
