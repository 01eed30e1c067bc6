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

mod fragments {
    use super::*;
    use sluice_dataplane::pipeline::{process, Ctx, Fragments, Resolve, Verdict};
    use sluice_dataplane::sched::SchedState;
    use sluice_dataplane::snapshot::Snapshot;
    use sluice_dataplane::stats::DropReason;
    use sluice_dataplane::testkit::frame::ethernet;
    use sluice_dataplane::testkit::spec::{nat_backend, nat_service};
    use sluice_dataplane::testkit::{EXT_ADDR, EXT_MAC, INT_ADDR, INT_MAC, ROUTER_MAC};
    use sluice_dataplane::wire::{checksum, fragment, Ipv4Repr, UdpRepr};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const BACKEND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    /// UDP 53 on VIP 1, NAT to 192.0.2.10:5353 on host 10 (IPIP).
    fn nat_appliance() -> Snapshot {
        let dns =
            nat_service("dns", vip(1), 53, Protocol::Udp, vec![nat_backend(BACKEND, 5353, host(10), 1)]);
        let ext =
            sluice_dataplane::testkit::spec::port_spec("ext", EXT_MAC, EXT_ADDR, [(ROUTER, ROUTER_MAC)]);
        snapshot(vec![ext, int_port(hosts([10]))], vec![dns])
    }

    /// A UDP datagram of `len` payload bytes, checksummed, from `src:sport` to `dst:dport`.
    fn datagram(
        (src, sport): (Ipv4Addr, u16),
        (dst, dport): (Ipv4Addr, u16),
        len: usize,
        ident: u16,
    ) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut b = vec![0; 20 + 8 + len];
        Ipv4Repr { src, dst, protocol: 17, payload_len: 8 + len, tos: 0, ident, dont_frag: false, ttl: 64 }
            .emit(&mut b[..20]);
        b[28..].copy_from_slice(&payload);
        UdpRepr { src_port: sport, dst_port: dport }.emit_v4(&mut b[20..], src, dst);
        b
    }

    /// `packet` cut into IPv4 fragments of at most `mtu` bytes.
    fn fragments_of(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        fragment::plan(packet.len(), 20, mtu)
            .unwrap()
            .map(|f| {
                let mut out = vec![0; mtu];
                let n = fragment::write_fragment(packet, &f, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    /// The fragments' payloads put back together by offset (the header of the first).
    fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
        let mut out = frags[0][..20].to_vec();
        let mut body = vec![0u8; 65536];
        let mut end = 0;
        for f in frags {
            let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
            let at = ip.frag_offset();
            body[at..at + ip.payload().len()].copy_from_slice(ip.payload());
            end = end.max(at + ip.payload().len());
        }
        out.extend_from_slice(&body[..end]);
        out
    }

    fn udp_checksum_ok(packet: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(packet).unwrap();
        let l4 = &packet[20..];
        let ph = checksum::pseudo_header_v4(ip.src().octets(), ip.dst().octets(), 17, l4.len() as u16);
        checksum::fold(checksum::combine(ph, checksum::sum(l4))) == 0xffff
    }

    /// Frames through one context that has a fragment table; the verdicts and frames out.
    fn run(
        snap: &Snapshot,
        frames: &[(u16, Vec<u8>)],
        table: Option<&mut Fragments>,
    ) -> Vec<(Verdict, Vec<u8>)> {
        let (sessions, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
        let (mut sched, mut resolve) = (SchedState::new(0, 1), Resolve::new());
        let mut cx = Ctx::new(snap, &sessions, &proxy, &mut sched, 1_000_000_000, &mut resolve);
        if let Some(t) = table {
            cx = cx.with_fragments(t);
        }
        frames
            .iter()
            .map(|(port, f)| {
                let mut frame = VecFrame::new(f);
                (process(&mut cx, *port, &mut frame), frame.data().to_vec())
            })
            .collect()
    }

    fn table() -> Fragments {
        Fragments::new(64, 2_000_000_000, 0, 7)
    }

    #[test]
    fn every_fragment_of_a_datagram_goes_to_its_backend_translated_whole() {
        let snap = nat_appliance();
        // Fragments that fit the tunnel (1500 less IPIP's 20).
        let d = datagram((ROUTER, 40000), (vip(1), 53), 4000, 0x1234);
        let frags = fragments_of(&d, 1480);
        assert_eq!(frags.len(), 3);
        let frames: Vec<_> = frags.iter().map(|f| (0, ethernet(EXT_MAC, ROUTER_MAC, f))).collect();
        let mut t = table();
        let out = run(&snap, &frames, Some(&mut t));
        // Each in IPIP (Ethernet 14 + outer 20) toward host 10.
        let inner: Vec<Vec<u8>> = out
            .iter()
            .map(|(v, f)| {
                assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
                f[34..].to_vec()
            })
            .collect();
        let whole = reassemble(&inner);
        let ip = Ipv4Packet::new_checked(&whole[..]).unwrap();
        assert_eq!(ip.dst(), BACKEND);
        assert_eq!(u16::from_be_bytes([whole[22], whole[23]]), 5353, "the destination port");
        assert!(udp_checksum_ok(&whole), "the first fragment's checksum covers the translated datagram");
        assert_eq!(&whole[28..], &d[28..], "the data unchanged");
        for f in &inner {
            assert!(Ipv4Packet::new_checked(&f[..]).unwrap().verify_checksum());
        }
    }

    #[test]
    fn a_later_fragment_needs_its_first() {
        let snap = nat_appliance();
        let d = datagram((ROUTER, 40001), (vip(1), 53), 3000, 0x4321);
        let frags = fragments_of(&d, 1480);
        let frame = |i: usize| (0, ethernet(EXT_MAC, ROUTER_MAC, &frags[i]));
        let mut t = table();
        let out = run(&snap, &[frame(1), frame(0), frame(1)], Some(&mut t));
        assert_eq!(out[0].0, Verdict::Drop(DropReason::FragmentNoFirst), "before its first");
        assert!(matches!(out[1].0, Verdict::Tunnel { .. }));
        assert!(matches!(out[2].0, Verdict::Tunnel { .. }), "after its first");
        // Without a table, later fragments have nowhere to look.
        let out = run(&snap, &[frame(0), frame(1)], None);
        assert!(matches!(out[0].0, Verdict::Tunnel { .. }));
        assert_eq!(out[1].0, Verdict::Drop(DropReason::FragmentNoFirst));
        // Another datagram with the same identification from another client is another key.
        let other = datagram((Ipv4Addr::new(198, 18, 0, 3), 40001), (vip(1), 53), 3000, 0x4321);
        let other_frags = fragments_of(&other, 1480);
        let out =
            run(&snap, &[frame(0), (0, ethernet(EXT_MAC, ROUTER_MAC, &other_frags[1]))], Some(&mut table()));
        assert_eq!(out[1].0, Verdict::Drop(DropReason::FragmentNoFirst));
    }

    #[test]
    fn a_fragmented_nat_reply_reaches_the_client_translated_whole() {
        let snap = nat_appliance();
        let query = datagram((ROUTER, 40002), (vip(1), 53), 40, 1);
        let reply = datagram((BACKEND, 5353), (ROUTER, 40002), 4000, 0x5555);
        let frags = fragments_of(&reply, 1480);
        // Each fragment in IPIP from host 10 to the appliance's internal address.
        let tunneled = |f: &Vec<u8>| {
            let mut outer = vec![0; 20];
            Ipv4Repr {
                src: host(10),
                dst: INT_ADDR,
                protocol: 4,
                payload_len: f.len(),
                tos: 0,
                ident: 9,
                dont_frag: false,
                ttl: 64,
            }
            .emit(&mut outer);
            outer.extend_from_slice(f);
            (1, ethernet(INT_MAC, sluice_dataplane::testkit::host_mac(10), &outer))
        };
        let mut frames = vec![(0, ethernet(EXT_MAC, ROUTER_MAC, &query))];
        frames.extend(frags.iter().map(tunneled));
        let mut t = table();
        let out = run(&snap, &frames, Some(&mut t));
        assert!(matches!(out[0].0, Verdict::Tunnel { .. }), "the query made the session");
        let to_client: Vec<Vec<u8>> = out[1..]
            .iter()
            .map(|(v, f)| {
                assert!(matches!(v, Verdict::NatReply { port: 0, .. }), "{v:?}");
                f[14..].to_vec()
            })
            .collect();
        let whole = reassemble(&to_client);
        assert_eq!(Ipv4Packet::new_checked(&whole[..]).unwrap().src(), vip(1));
        assert_eq!(u16::from_be_bytes([whole[20], whole[21]]), 53, "the source port");
        assert!(udp_checksum_ok(&whole));
        assert_eq!(&whole[28..], &reply[28..]);
    }

    /// An IPv6 fragment of `payload` (UDP from the client at `offset`), to the golden
    /// appliance's IPv6 VIP: fixed header, fragment header (identification `ident`), data.
    fn fragment6(payload: &[u8], offset: usize, more: bool, ident: u32) -> Vec<u8> {
        use sluice_dataplane::testkit::golden::VIP6;
        let b = ipv6_fragment(("2001:db8:18::99".parse().unwrap(), VIP6), payload, offset, more, ident);
        ethernet(EXT_MAC, ROUTER_MAC, &b)
    }

    /// An IPv6 packet `src` -> `dst` holding the UDP fragment `payload` at `offset`.
    fn ipv6_fragment(
        (src, dst): (Ipv6Addr, Ipv6Addr),
        payload: &[u8],
        offset: usize,
        more: bool,
        ident: u32,
    ) -> Vec<u8> {
        let mut b = vec![0; 40 + 8];
        let repr = sluice_dataplane::wire::Ipv6Repr {
            src,
            dst,
            next_header: 44,
            payload_len: 8 + payload.len(),
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
        };
        repr.emit(&mut b);
        b[40] = 17;
        b[42..44].copy_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        b[44..48].copy_from_slice(&ident.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn ipv6_fragments_follow_their_first() {
        let snap = sluice_dataplane::testkit::golden::snapshot();
        // A UDP datagram to port 53 (its checksum is not looked at), cut at 104 bytes.
        let mut udp = vec![0x9c, 0x76, 0, 53, 0, 208, 0, 0];
        udp.extend((0..200).map(|i| i as u8));
        let (first, later) = (fragment6(&udp[..104], 0, true, 7), fragment6(&udp[104..], 104, false, 7));
        let out = run(&snap, &[(0, later.clone()), (0, first), (0, later.clone())], Some(&mut table()));
        assert_eq!(out[0].0, Verdict::Drop(DropReason::FragmentNoFirst), "before its first");
        assert!(matches!(out[1].0, Verdict::Tunnel { port: 1, .. }), "{:?}", out[1].0);
        assert_eq!(out[2].0, out[1].0, "after its first: where the first went");
        // GRE over IPv6 (Ethernet 14, IPv6 40, keyed GRE 8), the fragment inside unchanged.
        assert_eq!(&out[2].1[14 + 48..], &later[14..]);
        // Another identification is another datagram.
        let other = fragment6(&udp[104..], 104, false, 8);
        let out = run(&snap, &[(0, fragment6(&udp[..104], 0, true, 7)), (0, other)], Some(&mut table()));
        assert_eq!(out[1].0, Verdict::Drop(DropReason::FragmentNoFirst));
    }

    #[test]
    fn a_fragmented_nat66_reply_reaches_the_client_translated_whole() {
        use sluice_dataplane::testkit::golden::{self, CLIENT6, HOST6_10, INT_ADDR6, VIP6_NAT};
        use sluice_dataplane::testkit::host_mac;
        use sluice_dataplane::wire::{Ipv6Repr, UdpPacket};
        let snap = golden::snapshot();
        // The query makes the session: [2001:db8:10::2]:53 -> [2001:db8:c0::20]:5353.
        let vm: Ipv6Addr = "2001:db8:c0::20".parse().unwrap();
        let mut query = vec![0; 40 + 8 + 5];
        let ip = |src, dst, payload_len| Ipv6Repr {
            src,
            dst,
            next_header: 17,
            payload_len,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
        };
        ip(CLIENT6, VIP6_NAT, 13).emit(&mut query);
        UdpRepr { src_port: 41053, dst_port: 53 }.emit_v6(&mut query[40..], CLIENT6, VIP6_NAT);
        // A 3000-byte reply from the VM, cut at 1448 and 2896 bytes of its UDP datagram.
        let mut udp = vec![0; 8];
        udp.extend((0..3000).map(|i| (i * 5 + 1) as u8));
        UdpRepr { src_port: 5353, dst_port: 41053 }.emit_v6(&mut udp, vm, CLIENT6);
        let cuts = [(0, 1448, true), (1448, 2896, true), (2896, udp.len(), false)];
        let tunneled = |&(from, to, more): &(usize, usize, bool)| {
            let inner = ipv6_fragment((vm, CLIENT6), &udp[from..to], from, more, 0x77);
            let mut outer = vec![0; 40];
            Ipv6Repr { next_header: 41, ..ip(HOST6_10, INT_ADDR6, inner.len()) }.emit(&mut outer);
            outer.extend_from_slice(&inner);
            (1, ethernet(INT_MAC, host_mac(10), &outer))
        };
        let mut frames = vec![(0, ethernet(EXT_MAC, ROUTER_MAC, &query))];
        frames.extend(cuts.iter().map(tunneled));
        let out = run(&snap, &frames, Some(&mut table()));
        assert!(matches!(out[0].0, Verdict::Tunnel { port: 1, .. }), "the query: {:?}", out[0].0);
        let mut whole = Vec::new();
        for (v, f) in &out[1..] {
            assert!(matches!(v, Verdict::NatReply { port: 0, .. }), "{v:?}");
            let ip = sluice_dataplane::wire::ipv6::Ipv6Packet::new_checked(&f[14..]).unwrap();
            assert_eq!((ip.src(), ip.dst()), (VIP6_NAT, CLIENT6));
            whole.extend_from_slice(&f[14 + 48..]);
        }
        let u = UdpPacket::new_checked(&whole[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (53, 41053));
        assert!(u.verify_checksum_v6(VIP6_NAT, CLIENT6), "the first fragment's checksum covers the VIP");
        assert_eq!(&whole[8..], &udp[8..], "the data unchanged");
    }
}

#[test]
fn a_packet_without_df_is_cut_into_fragments_that_fit_the_tunnel() {
    use sluice_dataplane::stats::DropReason;
    // 1500 bytes, DF clear: IPIP out of a 1500-byte port takes 1480, so two fragments.
    let run = |can_alloc: bool| {
        let mut io = MemIo::new(2);
        io.can_alloc = can_alloc;
        let mut ip = Packet::new(ROUTER, vip(1)).tcp(&tcp((40000, 80), tcpf::ACK), &[0x77; 1460]);
        ip[14 + 6] &= !0x40; // DF off
        ip[14 + 10..14 + 12].fill(0);
        let c = sluice_dataplane::wire::checksum::checksum(&ip[14..34]);
        ip[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        io.rx[0].push_back(VecFrame::new(&ip));
        let stats = Arc::new(WorkerStats::default());
        let tables = (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(synproxy()));
        let config = Arc::new(ArcSwap::from_pointee(appliance(MssClamp::Auto)));
        let mut w = Worker::new((0, 1), io, 2, config, tables, Arc::clone(&stats));
        w.poll(1_000_000_000);
        w.poll(1_000_000_000);
        let sizes: Vec<usize> = w.io().tx[1].iter().map(|f| f.data().len()).collect();
        (sizes, stats.fragmented.get(), stats.dropped(DropReason::FragmentFailed))
    };
    // Ethernet 14 + IPIP 20 + 20 + 1456 (a multiple of 8), then the 24 bytes left of 1480.
    assert_eq!(run(true), (vec![14 + 20 + 20 + 1456, 14 + 20 + 20 + 24], 1, 0));
    assert_eq!(run(false), (vec![], 1, 1), "no buffer for a fragment: counted, nothing sent");
}

#[test]
fn a_reply_too_big_for_the_clients_port_is_dropped() {
    use sluice_dataplane::pipeline::{process, Ctx, Resolve, Verdict};
    use sluice_dataplane::sched::SchedState;
    use sluice_dataplane::snapshot::PortSpec;
    use sluice_dataplane::stats::DropReason;
    use sluice_dataplane::testkit::frame::ethernet;
    use sluice_dataplane::testkit::spec::{nat_backend, nat_service, port_spec};
    use sluice_dataplane::testkit::{host_mac, EXT_ADDR, EXT_MAC, INT_ADDR, INT_MAC, ROUTER_MAC};
    use sluice_dataplane::wire::Ipv4Repr;
    use std::net::Ipv4Addr;
    let be = Ipv4Addr::new(192, 0, 2, 10);
    let web = nat_service("web", vip(1), 80, Protocol::Udp, vec![nat_backend(be, 8080, host(10), 1)]);
    let ext = PortSpec { mtu: 1400, ..port_spec("ext", EXT_MAC, EXT_ADDR, [(ROUTER, ROUTER_MAC)]) };
    let snap = snapshot(vec![ext, int_port(hosts([10]))], vec![web]);
    let query = Packet::new(ROUTER, vip(1)).udp(40000, 80, b"q");
    let reply = Packet::new(be, ROUTER).udp(8080, 40000, &[0x33; 1440]);
    let mut outer = vec![0; 20];
    let inner = &reply[14..];
    Ipv4Repr {
        src: host(10),
        dst: INT_ADDR,
        protocol: 4,
        payload_len: inner.len(),
        tos: 0,
        ident: 1,
        dont_frag: false,
        ttl: 64,
    }
    .emit(&mut outer);
    outer.extend_from_slice(inner);
    let tunneled = ethernet(INT_MAC, host_mac(10), &outer);
    let (sessions, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
    let (mut sched, mut resolve) = (SchedState::new(0, 1), Resolve::new());
    let mut cx = Ctx::new(&snap, &sessions, &proxy, &mut sched, 1_000_000_000, &mut resolve);
    let v = process(&mut cx, 0, &mut VecFrame::new(&query));
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    assert_eq!(process(&mut cx, 1, &mut VecFrame::new(&tunneled)), Verdict::Drop(DropReason::MtuExceeded));
}

#[test]
fn a_clients_fragments_too_big_for_the_tunnel_are_cut_again() {
    use sluice_dataplane::snapshot::Tunnel;
    use sluice_dataplane::stats::DropReason;
    use sluice_dataplane::testkit::frame::ethernet;
    use sluice_dataplane::testkit::{EXT_MAC, ROUTER_MAC};
    use sluice_dataplane::wire::{fragment, Ipv4Repr, UdpRepr};
    // UDP 53 over keyless GRE (24 bytes): 1476 fits.
    let dns = ServiceSpec {
        tunnel: Tunnel::Gre { key: None },
        ..dsr_service("dns", vip(1), 53, Protocol::Udp, vec![backend(host(10), 1)])
    };
    let snap = snapshot(vec![ext_port(), int_port(hosts([10]))], vec![dns]);
    let mut d = vec![0; 20 + 8 + 4000];
    Ipv4Repr {
        src: ROUTER,
        dst: vip(1),
        protocol: 17,
        payload_len: 4008,
        tos: 0,
        ident: 77,
        dont_frag: false,
        ttl: 64,
    }
    .emit(&mut d[..20]);
    UdpRepr { src_port: 40000, dst_port: 53 }.emit_v4(&mut d[20..], ROUTER, vip(1));
    let mut io = MemIo::new(2);
    for f in fragment::plan(d.len(), 20, 1500).unwrap() {
        let mut out = vec![0; 1500];
        let n = fragment::write_fragment(&d, &f, &mut out).unwrap();
        io.rx[0].push_back(VecFrame::new(&ethernet(EXT_MAC, ROUTER_MAC, &out[..n])));
    }
    let stats = Arc::new(WorkerStats::default());
    let tables = (Arc::new(SessionTable::new(1024, Timeouts::default(), 1)), Arc::new(synproxy()));
    let mut w = Worker::new((0, 1), io, 2, Arc::new(ArcSwap::from_pointee(snap)), tables, Arc::clone(&stats));
    w.poll(1_000_000_000);
    w.poll(1_000_000_000);
    let drops: Vec<_> =
        DropReason::ALL.iter().filter(|&&r| stats.dropped(r) > 0).map(|r| r.label()).collect();
    assert!(drops.is_empty(), "{drops:?}");
    // Three fragments of 1500 bytes (1480, 1480, 1048 of payload): the first two cut in two.
    assert_eq!(stats.fragmented.get(), 2);
    assert_eq!(w.io().tx[1].len(), 5);
}

#[test]
fn overlapping_fragments_pass_and_oversized_ones_do_not() {
    use sluice_dataplane::pipeline::{process, Ctx, Fragments, Resolve, Verdict};
    use sluice_dataplane::sched::SchedState;
    use sluice_dataplane::stats::DropReason;
    use sluice_dataplane::testkit::frame::ethernet;
    use sluice_dataplane::testkit::{EXT_MAC, ROUTER_MAC};
    use sluice_dataplane::wire::{Ipv4Repr, UdpRepr};
    let snap = snapshot(
        vec![ext_port(), int_port(hosts([10]))],
        vec![dsr_service("dns", vip(1), 53, Protocol::Udp, vec![backend(host(10), 1)])],
    );
    // A fragment of datagram 9 at `offset` bytes with `len` bytes of data (the first has the
    // UDP header).
    let frag = |offset: usize, len: usize, more: bool| {
        let mut b = vec![0x41; 20 + len];
        Ipv4Repr {
            src: ROUTER,
            dst: vip(1),
            protocol: 17,
            payload_len: len,
            tos: 0,
            ident: 9,
            dont_frag: false,
            ttl: 64,
        }
        .emit(&mut b[..20]);
        if offset == 0 {
            UdpRepr { src_port: 40000, dst_port: 53 }.emit_v4(&mut b[20..28], ROUTER, vip(1));
        }
        let word = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        b[6..8].copy_from_slice(&word.to_be_bytes());
        b[10..12].fill(0);
        let c = sluice_dataplane::wire::checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        ethernet(EXT_MAC, ROUTER_MAC, &b)
    };
    let (sessions, proxy) = (SessionTable::new(1024, Timeouts::default(), 1), synproxy());
    let (mut sched, mut resolve, mut table) =
        (SchedState::new(0, 1), Resolve::new(), Fragments::new(64, 2_000_000_000, 0, 3));
    let mut cx = Ctx::new(&snap, &sessions, &proxy, &mut sched, 1_000_000_000, &mut resolve)
        .with_fragments(&mut table);
    let mut run = |f: Vec<u8>| process(&mut cx, 0, &mut VecFrame::new(&f));
    assert!(matches!(run(frag(0, 400, true)), Verdict::Tunnel { .. }));
    // Overlapping the first: forwarded like any other; reassembly is the backend's.
    assert!(matches!(run(frag(200, 400, true)), Verdict::Tunnel { .. }));
    // Reaching past 65,535 bytes.
    assert_eq!(run(frag(65_000, 600, false)), Verdict::Drop(DropReason::Ipv4Malformed));
    assert!(matches!(run(frag(64_000, 400, false)), Verdict::Tunnel { .. }));
}
