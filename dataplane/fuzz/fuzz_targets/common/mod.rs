//! The appliance the `pipeline` and `worker` targets run against, and the checks of the
//! pipeline's contract shared by both.
//!
//! The appliance is `testkit::golden::fuzz_spec()`: the golden cases' appliance (same
//! addresses and MACs, so the golden frames are good seeds) folded onto three ports, so that
//! one rx port index of the four a selector byte can name (3) does not exist, and with DSR
//! services only (see its table).
//!
//! The unresolved neighbour can be learned from an ARP reply on port 1; learning mutates the
//! snapshot, so the targets rebuild it whenever a call learned something (each input then
//! starts from the same state and the fuzzer sees deterministic behaviour).

#![allow(dead_code)]

use sluice_dataplane::pipeline::Verdict;
use sluice_dataplane::session::SessionTable;
use sluice_dataplane::snapshot::{Backend, Snapshot, SnapshotSpec, Tunnel};
use sluice_dataplane::testkit::golden;
use sluice_dataplane::wire::ethernet::{self, EthernetFrame};
use sluice_dataplane::wire::icmpv6::{self, Icmpv6Packet};
use sluice_dataplane::wire::{icmpv6_error, ipv4, ipv6, ndisc, GrePacket, Ipv4Packet, Ipv6Packet};
use std::net::IpAddr;

/// Number of ports in the snapshot; rx port indexes at or past it do not exist.
pub const N_PORTS: u16 = 3;

/// The most a frame may grow: untagged in, tagged out (4), outer IPv6 (40), GRE with a key
/// (8). (An IPv4 underlay's tunnel is 20 bytes shorter; `check_tunnel` checks the exact
/// length.)
pub const MAX_GROWTH: usize = (ethernet::VLAN_HEADER_LEN - ethernet::HEADER_LEN) + ipv6::HEADER_LEN + 8;

/// `VecFrame::new` holds at most this many bytes (it asserts; a harness limit, not a bug).
pub const MAX_FRAME: usize = 2048;

/// The fuzz appliance's spec (`Snapshot::build` of it is [`snapshot`]).
pub fn spec() -> SnapshotSpec {
    golden::fuzz_spec()
}

/// Empties `table` as if new: removes every session (their per-backend and per-service
/// counts go back down with them), then sweeps until every tombstone is an empty slot again
/// and no slot is marked in use. Costs a walk of the table's slots (a few hundred here), not
/// an allocation: the targets keep one table per process and empty it before each input.
/// (The since-start `created` counters stay; nothing on the packet path reads them.)
pub fn empty_table(table: &SessionTable) {
    let mut keys = Vec::new();
    table.for_each(|k, _| keys.push(*k));
    for k in &keys {
        if let Some((slot, _)) = table.lookup(k, table.hash(k)) {
            table.remove(slot, k);
        }
    }
    // Each sweep clears tombstones back to front from the top slot; a run of them that wraps
    // past slot 0 needs a second pass.
    for _ in 0..4 {
        if table.sweep(0, 0, table.slot_count(), |_, _| {}).visited == 0 {
            return;
        }
    }
    panic!("the session table did not empty in 4 sweeps");
}

/// Puts `snap`'s next hops back as built: dynamic neighbours unknown and never asked for
/// (the only state an input changes in a snapshot).
pub fn forget_neighbors(snap: &Snapshot) {
    snap.nexthops.iter().for_each(|nh| nh.forget());
}

/// True when `FUZZ_CHECK_FRESH` is set: the targets then run every input twice, on the state
/// kept across inputs and on state built afresh, and assert the same outcome (run the corpus
/// this way to show that reusing state does not change what an input does).
pub fn check_fresh() -> bool {
    thread_local!(static ON: bool = std::env::var_os("FUZZ_CHECK_FRESH").is_some());
    ON.with(|on| *on)
}

pub fn snapshot() -> Snapshot {
    golden::fuzz_snapshot()
}

/// Asserts the pipeline's contract for one call: `input` went in on `rx_port`, `out` is the
/// frame after `process` returned `v`. Panics (a libFuzzer crash) on any violation.
pub fn check_contract(snap: &Snapshot, rx_port: u16, input: &[u8], v: Verdict, out: &[u8]) {
    if rx_port >= N_PORTS {
        assert!(
            v == Verdict::Drop(sluice_dataplane::stats::DropReason::NotForUs),
            "rx port {rx_port} does not exist, got {v:?}"
        );
    }
    assert!(out.len() <= input.len() + MAX_GROWTH, "frame grew {} -> {} ({v:?})", input.len(), out.len());
    match v {
        Verdict::Tunnel { port, service, backend, service_id, backend_id } => {
            let svc = &snap.services[usize::from(service)];
            let ids = (svc.id, svc.backends[usize::from(backend)].id);
            assert_eq!((service_id, backend_id), ids, "the counters' ids are the indexes' ({v:?})");
            check_tunnel(snap, input, out, port, service, backend)
        }
        Verdict::ArpReply { port } | Verdict::EchoReply { port } => {
            assert_eq!(port, rx_port, "a reply leaves by the port it came in ({v:?})");
            // In place; an ICMPv6 echo reply without the request's extension headers.
            let ipv6 =
                EthernetFrame::new_checked(input).is_ok_and(|e| e.ethertype() == ethernet::ETHERTYPE_IPV6);
            if ipv6 {
                assert!(out.len() <= input.len(), "a reply is built in place ({v:?})");
            } else {
                assert_eq!(out.len(), input.len(), "a reply is built in place ({v:?})");
            }
            check_reply(snap, rx_port, input, out, v);
        }
        Verdict::NeighborAdvert { port } => {
            assert_eq!(port, rx_port, "an advertisement leaves by the port the solicitation came in");
            check_advert(snap, rx_port, input, out);
        }
        // The fuzz snapshot never loses a backend, so no session can need a reset.
        Verdict::Reset { .. } => panic!("a reset without a removed backend"),
        // Nor has it NAT, SYN-proxied or `icmp_unreachable` services.
        Verdict::SynAck { .. } => panic!("a SYN-ACK without a SYN-proxied service"),
        Verdict::NatReply { .. } => panic!("a NAT reply without a NAT service"),
        Verdict::Unreachable { .. } => panic!("an ICMP unreachable without an icmp_unreachable service"),
        // Nor exception paths.
        Verdict::ToKernel { .. } | Verdict::FromKernel { .. } => {
            panic!("the kernel's without an exception path")
        }
        Verdict::TooBig { port } => {
            assert_eq!(port, rx_port, "a too-big message goes back the way the packet came");
            check_too_big(snap, rx_port, input, out);
        }
        Verdict::Fragment { service, backend, at, .. } => {
            assert!(out.len() <= input.len(), "a packet left to fragment is not grown ({v:?})");
            let svc = snap.services.get(usize::from(service)).expect("verdict names an existing service");
            let be = svc.backends.get(usize::from(backend)).expect("verdict names an existing backend");
            let ip =
                Ipv4Packet::new_checked(&out[usize::from(at)..]).expect("the packet to fragment is IPv4");
            assert!(!ip.dont_frag(), "fragmented a packet with DF set");
            assert!(ip.total_len() > usize::from(be.outer.max_inner()), "fragmented a packet that fits");
        }
        Verdict::Consumed | Verdict::Drop(_) => {
            assert!(
                out.len() <= input.len(),
                "a frame not sent grew {} -> {} ({v:?})",
                input.len(),
                out.len()
            );
        }
    }
}

/// A tunnelled input's IP packet, of either family, and what the outer header copies of it.
struct Inner<'a> {
    /// The packet, link padding cut.
    bytes: &'a [u8],
    v6: bool,
    dst: IpAddr,
    /// The transport protocol, and where its header starts in `bytes` (past IPv6 extension
    /// headers).
    protocol: u8,
    l4: usize,
    /// TOS or traffic class.
    tos: u8,
    /// IPv4's identification and DF bit (IPv6: none).
    ident: u16,
    dont_frag: bool,
    /// Whole, or the first fragment (offset 0): the transport header is there.
    first: bool,
}

/// The IP packet at `input[l2..]`: a valid IPv4 packet (its checksum verifies) or a valid
/// IPv6 packet whose extension headers walk to its upper layer (a fragment's: the
/// fragment header's next header).
fn inner_packet(input: &[u8], l2: usize, ethertype: u16) -> Inner<'_> {
    let b = &input[l2..];
    if ethertype == ethernet::ETHERTYPE_IPV6 {
        let ip = Ipv6Packet::new_checked(b).expect("tunnelled IPv6 input is valid");
        let upper = ipv6::upper_layer(b).expect("tunnelled IPv6 input's extension headers walk");
        return Inner {
            bytes: &b[..ip.total_len()],
            v6: true,
            dst: ip.dst().into(),
            protocol: upper.protocol,
            l4: upper.offset,
            tos: ip.traffic_class(),
            ident: 0,
            dont_frag: true,
            first: upper.fragment.is_none_or(|f| f.at_offset_zero()),
        };
    }
    assert_eq!(ethertype, ethernet::ETHERTYPE_IPV4, "tunnelled input is IPv4 or IPv6");
    let ip = Ipv4Packet::new_checked(b).expect("tunnelled IPv4 input is valid");
    assert!(ip.verify_checksum(), "tunnelled an inner packet with a bad checksum");
    Inner {
        bytes: &b[..ip.total_len()],
        v6: false,
        dst: ip.dst().into(),
        protocol: ip.protocol(),
        l4: ip.header_len(),
        tos: ip.tos(),
        ident: ip.ident(),
        dont_frag: ip.dont_frag(),
        first: ip.frag_offset() == 0,
    }
}

fn check_tunnel(snap: &Snapshot, input: &[u8], out: &[u8], port: u16, si: u16, bi: u16) {
    // The input: Ethernet (tagged or not) and a valid IPv4 or IPv6 packet to the service.
    let in_eth = EthernetFrame::new_checked(input).expect("tunnelled input has an Ethernet header");
    let l2_in = in_eth.header_len();
    let inner = inner_packet(input, l2_in, in_eth.ethertype());

    let svc = snap.services.get(usize::from(si)).expect("verdict names an existing service");
    let be = svc.backends.get(usize::from(bi)).expect("verdict names an existing backend");
    assert!(be.weight > 0, "tunnelled to a drained backend");
    assert_eq!(inner.dst, svc.vip, "inner destination is the service's VIP");
    // Or an ICMP or ICMPv6 error about one of the service's flows, passed on to its backend.
    let icmp = if inner.v6 { ipv6::NEXT_ICMPV6 } else { ipv4::PROTO_ICMP };
    let icmp_error = inner.protocol == icmp;
    assert!(
        inner.protocol == svc.protocol.number() || icmp_error,
        "inner protocol {} not the service's",
        inner.protocol
    );
    let nh = &snap.nexthops[usize::from(be.nexthop)];
    assert_eq!(nh.port, port, "sent out of the next hop's port");
    let out_port = snap.ports.get(usize::from(port)).expect("verdict names an existing port");

    // Outer Ethernet.
    let eth = EthernetFrame::new_checked(out).expect("tunnel output has an Ethernet header");
    assert_eq!(eth.vlan(), out_port.vlan, "egress VLAN tag");
    let outer_v6 = be.tunnel_source.is_ipv6();
    let ethertype = if outer_v6 { ethernet::ETHERTYPE_IPV6 } else { ethernet::ETHERTYPE_IPV4 };
    assert_eq!(eth.ethertype(), ethertype, "the underlay's ethertype");
    assert_eq!(Some(eth.dst()), nh.mac(), "destination MAC is the next hop's");
    assert_eq!(eth.src(), out_port.mac, "source MAC is the egress port's");
    let l2_out = eth.header_len();

    // The outer IP header: valid, exactly the rest of the frame, within the egress MTU.
    let (protocol, ip_len, payload) = if outer_v6 {
        outer_v6_header(&out[l2_out..], be, &inner, out_port.mtu)
    } else {
        outer_v4_header(&out[l2_out..], be, &inner, out_port.mtu)
    };

    // IPIP or GRE as the service says; then the carried packet.
    let inner_type = if inner.v6 { ethernet::ETHERTYPE_IPV6 } else { ethernet::ETHERTYPE_IPV4 };
    let gre_len = match svc.tunnel {
        Tunnel::Ipip => {
            let ipip = if inner.v6 { ipv6::NEXT_IPV6 } else { ipv4::PROTO_IPIP };
            assert_eq!(protocol, ipip, "IP in IP of the inner packet's family");
            0
        }
        Tunnel::Gre { key } => {
            assert_eq!(protocol, ipv4::PROTO_GRE);
            let g = GrePacket::new_checked(payload).expect("a valid GRE header");
            assert_eq!(g.protocol(), inner_type, "GRE carries the inner packet's ethertype");
            assert_eq!(g.key(), key, "GRE key is the service's");
            assert!(!g.has_checksum() && g.sequence().is_none());
            g.header_len()
        }
    };
    let carried = &payload[gre_len..];
    // The input's IP packet byte for byte (padding dropped), but for a SYN's MSS, lowered to
    // the service's clamp (a later fragment has no TCP header, whatever its data looks like).
    let mut want = inner.bytes.to_vec();
    if let (Some(max), ipv4::PROTO_TCP, true) = (svc.mss_clamp, inner.protocol, inner.first) {
        let _ = sluice_dataplane::wire::tcp_options::clamp_mss(&mut want[inner.l4..], max);
    }
    assert!(carried == want, "inner packet changed:\n in  {}\n out {}", hex(inner.bytes), hex(carried));
    assert_eq!(out.len(), l2_out + ip_len + gre_len + inner.bytes.len());
    assert!(out.len() - inner.bytes.len() - l2_in <= MAX_GROWTH);
}

/// The outer IPv4 header at the front of `b` toward backend `be`, carrying `inner`, out of a
/// port of `mtu`: checked; its protocol, header length and payload.
fn outer_v4_header<'a>(b: &'a [u8], be: &Backend, inner: &Inner<'_>, mtu: u16) -> (u8, usize, &'a [u8]) {
    let outer = Ipv4Packet::new_checked(b).expect("tunnel output is a valid IPv4 packet");
    assert!(outer.verify_checksum(), "outer IPv4 checksum does not verify: {}", hex(&b[..20]));
    assert_eq!(outer.header_len(), ipv4::HEADER_LEN);
    assert_eq!(outer.total_len(), b.len(), "outer total length covers the frame, no padding");
    assert!(outer.total_len() <= usize::from(mtu), "outer packet over the egress MTU");
    assert!(!outer.is_fragment());
    assert_eq!(outer.ttl(), ipv4::DEFAULT_TTL);
    assert_eq!(IpAddr::from(outer.src()), be.tunnel_source);
    assert_eq!(IpAddr::from(outer.dst()), be.host);
    assert_eq!(outer.tos(), inner.tos, "tos copied");
    if inner.v6 {
        // RFC 4213 3.3: IPv6 is never fragmented on the way, so neither is its tunnel.
        assert_eq!((outer.ident(), outer.dont_frag()), (0, true), "IPv6 in IPv4: ident 0, DF");
    } else {
        assert_eq!(outer.ident(), inner.ident, "ident copied");
        assert_eq!(outer.dont_frag(), inner.dont_frag, "DF copied");
    }
    (outer.protocol(), ipv4::HEADER_LEN, &b[ipv4::HEADER_LEN..])
}

/// [`outer_v4_header`] for an IPv6 underlay (RFC 2473). The flow label is the flow's, the
/// same for all its packets: not checkable from one.
fn outer_v6_header<'a>(b: &'a [u8], be: &Backend, inner: &Inner<'_>, mtu: u16) -> (u8, usize, &'a [u8]) {
    let outer = Ipv6Packet::new_checked(b).expect("tunnel output is a valid IPv6 packet");
    assert_eq!(b[0] >> 4, 6, "version 6");
    assert_eq!(outer.total_len(), b.len(), "outer payload length covers the frame, no padding");
    assert!(outer.total_len() <= usize::from(mtu), "outer packet over the egress MTU");
    assert_eq!(outer.hop_limit(), ipv6::DEFAULT_HOP_LIMIT);
    assert_eq!(IpAddr::from(outer.src()), be.tunnel_source);
    assert_eq!(IpAddr::from(outer.dst()), be.host);
    assert_eq!(outer.traffic_class(), inner.tos, "traffic class is the inner TOS or class");
    let next = outer.next_header();
    assert!(
        [ipv6::NEXT_IPV4, ipv6::NEXT_IPV6, ipv6::NEXT_GRE].contains(&next),
        "no extension header after the outer IPv6 header: {next}"
    );
    (next, ipv6::HEADER_LEN, &b[ipv6::HEADER_LEN..])
}

/// A too-big message answering `input` (received on `rx_port`): from a VIP to the packet's
/// sender, every checksum right, quoting the start of the packet. IPv4: fragmentation needed;
/// IPv6: packet too big, with the MTU of a tunnel toward one of the VIP's backends.
fn check_too_big(snap: &Snapshot, rx_port: u16, input: &[u8], out: &[u8]) {
    let in_eth = EthernetFrame::new_checked(input).expect("the packet had an Ethernet header");
    if in_eth.ethertype() == ethernet::ETHERTYPE_IPV6 {
        return check_too_big6(snap, rx_port, input, out);
    }
    let l2 = EthernetFrame::new_checked(out).expect("an Ethernet header").header_len();
    let ip = Ipv4Packet::new_checked(&out[l2..]).expect("a valid IPv4 header");
    assert!(ip.verify_checksum(), "too-big IPv4 checksum");
    let in_ip = Ipv4Packet::new_checked(&input[l2..]).expect("the packet was IPv4");
    assert_eq!(ip.dst(), in_ip.src(), "to the packet's sender");
    assert!(snap.is_vip(ip.src().into()), "from a VIP");
    let icmp = sluice_dataplane::wire::IcmpPacket::new_checked(ip.payload()).expect("an ICMP message");
    assert!(icmp.verify_checksum(), "too-big ICMP checksum");
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    let quote = &ip.payload()[8..];
    assert_eq!(quote, &input[l2..l2 + quote.len()], "quotes the packet as it came");
}

/// [`check_too_big`] for an IPv6 client (RFC 4443 3.2).
fn check_too_big6(snap: &Snapshot, rx_port: u16, input: &[u8], out: &[u8]) {
    let port = &snap.ports[usize::from(rx_port)];
    let (in_eth, eth) =
        (EthernetFrame::new_checked(input).unwrap(), EthernetFrame::new_checked(out).unwrap());
    assert_eq!((eth.dst(), eth.src()), (in_eth.src(), port.mac), "back to the sender's MAC, from the port's");
    assert_eq!(eth.vlan(), in_eth.vlan(), "the packet's VLAN");
    assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV6);
    let l2 = eth.header_len();
    let ip = Ipv6Packet::new_checked(&out[l2..]).expect("a valid IPv6 header");
    let in_ip = Ipv6Packet::new_checked(&input[l2..]).expect("the packet was IPv6");
    assert_eq!(out.len(), l2 + ip.total_len(), "the frame ends with the message");
    assert_eq!((ip.src(), ip.dst()), (in_ip.dst(), in_ip.src()), "from the VIP to the packet's sender");
    assert!(snap.is_vip(ip.src().into()), "from a VIP");
    assert_eq!((ip.next_header(), ip.hop_limit()), (ipv6::NEXT_ICMPV6, ipv6::DEFAULT_HOP_LIMIT));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("an ICMPv6 message");
    assert!(icmp.verify_checksum(ip.src(), ip.dst()), "too-big ICMPv6 checksum: {}", hex(ip.payload()));
    assert_eq!((icmp.msg_type(), icmp.code()), (icmpv6::TYPE_PACKET_TOO_BIG, 0));
    let mtu = icmp.mtu().expect("packet too big has an MTU");
    assert!(mtu < in_ip.total_len() as u32, "the packet fitted the MTU it was told");
    let vip = IpAddr::V6(ip.src());
    let tunnels = snap.services.iter().filter(|s| s.vip == vip).flat_map(|s| &s.backends);
    assert!(
        tunnels.map(|b| u32::from(b.outer.max_inner())).any(|m| m == mtu),
        "MTU {mtu} of no tunnel of the VIP"
    );
    let quote = &ip.payload()[icmpv6::HEADER_LEN..];
    assert_eq!(
        quote.len(),
        in_ip.total_len().min(icmpv6_error::QUOTE_MAX),
        "quotes as much as fits 1280 bytes"
    );
    assert_eq!(quote, &input[l2..l2 + quote.len()], "quotes the packet as it came");
}

fn check_reply(snap: &Snapshot, rx_port: u16, input: &[u8], out: &[u8], v: Verdict) {
    let port = &snap.ports[usize::from(rx_port)];
    let eth = EthernetFrame::new_checked(out).expect("reply has an Ethernet header");
    assert_eq!(eth.vlan(), port.vlan, "reply keeps the port's VLAN");
    assert_eq!(eth.src(), port.mac);
    let l2 = eth.header_len();
    match v {
        Verdict::ArpReply { .. } => {
            let a = sluice_dataplane::wire::ArpPacket::new_checked(&out[l2..]).expect("a valid ARP reply");
            assert_eq!(a.operation(), sluice_dataplane::wire::arp::OP_REPLY);
            assert_eq!(a.sender_mac(), port.mac);
            assert!(
                port.has_address(a.sender_ip().into()) || snap.is_vip(a.sender_ip().into()),
                "answered for a foreign address"
            );
            assert_eq!(&out[l2 + 28..], &input[l2 + 28..], "padding after the ARP packet is kept");
        }
        Verdict::EchoReply { .. } if eth.ethertype() == ethernet::ETHERTYPE_IPV6 => {
            check_echo6(&input[l2..], &out[l2..]);
        }
        Verdict::EchoReply { .. } => {
            let ip = Ipv4Packet::new_checked(&out[l2..]).expect("a valid IPv4 echo reply");
            assert!(ip.verify_checksum(), "echo reply IPv4 checksum does not verify");
            let in_ip = Ipv4Packet::new_checked(&input[l2..]).expect("echoed input is IPv4");
            assert_eq!((ip.src(), ip.dst()), (in_ip.dst(), in_ip.src()), "addresses swapped");
            let icmp =
                sluice_dataplane::wire::IcmpPacket::new_checked(ip.payload()).expect("an ICMP message");
            assert_eq!(icmp.msg_type(), sluice_dataplane::wire::icmp::TYPE_ECHO_REPLY);
            assert!(
                icmp.verify_checksum(),
                "echo reply ICMP checksum does not verify: {}",
                hex(ip.payload())
            );
            assert_eq!(&ip.payload()[4..], &in_ip.payload()[4..], "echo id, sequence and data kept");
        }
        _ => unreachable!(),
    }
}

/// An ICMPv6 echo reply `out` (from its IPv6 header) to the request `input`.
fn check_echo6(input: &[u8], out: &[u8]) {
    let ip = Ipv6Packet::new_checked(out).expect("a valid IPv6 echo reply");
    let in_ip = Ipv6Packet::new_checked(input).expect("echoed input is IPv6");
    assert_eq!((ip.src(), ip.dst()), (in_ip.dst(), in_ip.src()), "addresses swapped");
    assert_eq!(ip.next_header(), ipv6::NEXT_ICMPV6, "no extension header in the reply");
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("an ICMPv6 message");
    assert_eq!(icmp.msg_type(), icmpv6::TYPE_ECHO_REPLY);
    assert!(icmp.verify_checksum(ip.src(), ip.dst()), "echo reply ICMPv6 checksum: {}", hex(ip.payload()));
    let upper = ipv6::upper_layer(input).expect("the request's headers were walked");
    let request = &input[upper.offset..in_ip.total_len()];
    assert_eq!(&ip.payload()[4..], &request[4..], "echo id, sequence and data kept");
}

/// A neighbor advertisement `out` answering the solicitation `input`, sent out of `rx_port`.
fn check_advert(snap: &Snapshot, rx_port: u16, input: &[u8], out: &[u8]) {
    let port = &snap.ports[usize::from(rx_port)];
    let eth = EthernetFrame::new_checked(out).expect("advertisement has an Ethernet header");
    assert_eq!((eth.vlan(), eth.src()), (port.vlan, port.mac), "from the port");
    let l2 = eth.header_len();
    assert_eq!(out.len(), l2 + ndisc::PACKET_LEN, "an advertisement with one option, nothing after");
    let ip = Ipv6Packet::new_checked(&out[l2..]).expect("a valid IPv6 header");
    let na =
        ndisc::parse_na(ip.payload(), ip.src(), ip.dst(), ip.hop_limit()).expect("a valid advertisement");
    let in_ip = Ipv6Packet::new_checked(&input[l2..]).expect("the solicitation was IPv6");
    assert!(!na.router && na.override_flag, "a host's answer, overriding");
    assert_eq!(na.target_mac, Some(port.mac));
    assert_eq!(ip.src(), na.target, "from the target");
    let target = IpAddr::V6(na.target);
    assert!(port.has_address(target) || snap.is_vip(target), "answered for a foreign address");
    if in_ip.src().is_unspecified() {
        assert_eq!((ip.dst(), na.solicited), (ndisc::ALL_NODES, false), "DAD: to all nodes");
        assert_eq!(eth.dst(), ndisc::multicast_mac(ndisc::ALL_NODES));
    } else {
        assert_eq!((ip.dst(), na.solicited), (in_ip.src(), true), "back to the soliciter");
    }
}

/// Makes the IPv4 header checksum (and an ICMP message's checksum) of an Ethernet frame valid,
/// or an ICMPv6 message's, so that mutations behind the checksums reach the code after them.
/// Returns the frame.
pub fn fix_checksums(frame: &mut [u8]) -> &mut [u8] {
    let l2 = match EthernetFrame::new_checked(&*frame) {
        Ok(e) if e.ethertype() == ethernet::ETHERTYPE_IPV4 => e.header_len(),
        Ok(e) if e.ethertype() == ethernet::ETHERTYPE_IPV6 => {
            let l2 = e.header_len();
            fix_icmpv6(&mut frame[l2..]);
            return frame;
        }
        _ => return frame,
    };
    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut frame[l2..]) {
        ip.fill_checksum();
        if ip.protocol() == ipv4::PROTO_ICMP {
            let icmp = ip.payload_mut();
            if icmp.len() >= 8 {
                icmp[2] = 0;
                icmp[3] = 0;
                let c = sluice_dataplane::wire::checksum::checksum(icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    frame
}

/// Makes the checksum of the ICMPv6 message an IPv6 packet `b` carries valid.
fn fix_icmpv6(b: &mut [u8]) {
    let Ok(upper) = ipv6::upper_layer(b) else { return };
    let Ok(mut ip) = Ipv6Packet::new_checked(&mut *b) else { return };
    if upper.protocol != ipv6::NEXT_ICMPV6 || upper.fragment.is_some() {
        return;
    }
    let (src, dst) = (ip.src(), ip.dst());
    let skip = upper.offset - ipv6::HEADER_LEN;
    if let Some(Ok(mut icmp)) = ip.payload_mut().get_mut(skip..).map(Icmpv6Packet::new_checked) {
        icmp.fill_checksum(src, dst);
    }
}

pub use sluice_dataplane::testkit::hex;
