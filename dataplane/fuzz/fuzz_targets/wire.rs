//! Every checked wire view on arbitrary bytes.
//!
//! The bytes go to every `new_checked` at offset 0, and also down the layers the way the
//! pipeline reads them (Ethernet payload -> ARP / IPv4 / IPv6; IPv4 payload -> ICMP (echo and
//! error views) / TCP / UDP / GRE; IPv6 upper layer (past the extension headers) -> ICMPv6
//! (echo, error and Neighbor Discovery views) / TCP / UDP / GRE / IPv4 / IPv6; GRE payload ->
//! IPv4 / IPv6). Whenever a constructor succeeds every
//! accessor is called, then every setter on a copy. Asserts: no panic (the module's promise:
//! after `new_checked` no accessor panics), plus a few round trips that must hold for any bytes
//! (a filled checksum verifies, an emitted header parses back to its fields, the incremental
//! checksum update agrees with a recomputation, an in-place rewrite (an ICMP error's quoted
//! endpoint, a SYN's MSS) keeps a right checksum right and a wrong one wrong).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::testkit::{vip, ROUTER};
use sluice_dataplane::wire::endpoint::End;
use sluice_dataplane::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use sluice_dataplane::wire::icmp_error::{self, Quoted};
use sluice_dataplane::wire::icmpv6::{self, Icmpv6Packet};
use sluice_dataplane::wire::ndisc::{self, NeighborAdvert, NeighborSolicit};
use sluice_dataplane::wire::{
    checksum, ipv4, tcp_options, ArpPacket, GrePacket, GreRepr, IcmpPacket, Ipv4Packet, Ipv4Repr,
};
use sluice_dataplane::wire::{fmt_mac, parse_mac, TcpPacket, UdpPacket};
use sluice_dataplane::wire::{icmpv6_error, ipv6, Ipv6Packet, Ipv6Repr, UdpRepr};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Addresses for bytes read without an IPv6 header around them.
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x80);

fuzz_target!(|data: &[u8]| {
    // Every parser on the raw bytes.
    ethernet_view(data);
    arp_view(data);
    ipv4_view(data, 0);
    icmp_view(data);
    icmp_error_view(data);
    tcp_view(data, ROUTER, vip(1));
    udp_view(data);
    gre_view(data, 0);
    ipv6_view(data, 0);
    icmpv6_view(data, V6_SRC, V6_DST, 255);
    udp_v6_view(data, V6_SRC, V6_DST);
    reprs(data);
    checksums(data);
    macs(data);
});

fn ethernet_view(b: &[u8]) {
    let Ok(e) = EthernetFrame::new_checked(b) else { return };
    black_box((e.dst(), e.src(), e.vlan(), e.ethertype(), e.header_len(), e.payload_range()));
    let payload = e.payload();
    assert_eq!(payload.len() + e.header_len(), b.len());
    assert_eq!(e.header_len(), if e.vlan().is_some() { 18 } else { 14 });
    match e.ethertype() {
        ethernet::ETHERTYPE_ARP => arp_view(payload),
        ethernet::ETHERTYPE_IPV4 => ipv4_view(payload, 0),
        ethernet::ETHERTYPE_IPV6 => ipv6_view(payload, 0),
        _ => {}
    }
    let mut copy = b.to_vec();
    let mut m = EthernetFrame::new_checked(&mut copy[..]).unwrap();
    let (src, dst) = (m.src(), m.dst());
    m.set_dst(src);
    m.set_src(dst);
    assert_eq!((m.dst(), m.src()), (src, dst));
}

fn arp_view(b: &[u8]) {
    let Ok(a) = ArpPacket::new_checked(b) else { return };
    black_box((a.operation(), a.sender_mac(), a.sender_ip(), a.target_mac(), a.target_ip()));
    assert!(a.operation() == 1 || a.operation() == 2);
    // emit() writes exactly what the accessors read back.
    let mut out = [0u8; 28];
    sluice_dataplane::wire::arp::emit(
        &mut out,
        2,
        a.target_mac(),
        a.target_ip(),
        a.sender_mac(),
        a.sender_ip(),
    );
    let r = ArpPacket::new_checked(&out[..]).expect("an emitted ARP packet parses");
    assert_eq!((r.sender_mac(), r.sender_ip()), (a.target_mac(), a.target_ip()));
    assert_eq!((r.target_mac(), r.target_ip()), (a.sender_mac(), a.sender_ip()));
}

fn ipv4_view(b: &[u8], depth: u32) {
    let Ok(ip) = Ipv4Packet::new_checked(b) else { return };
    black_box((ip.tos(), ip.ident(), ip.dont_frag(), ip.is_fragment(), ip.ttl(), ip.checksum()));
    let (src, dst) = (ip.src(), ip.dst());
    let ok = ip.verify_checksum();
    let payload = ip.payload();
    assert!(ip.header_len() >= 20 && ip.header_len() <= ip.total_len() && ip.total_len() <= b.len());
    assert_eq!(payload.len(), ip.total_len() - ip.header_len());
    black_box(ok);
    match ip.protocol() {
        ipv4::PROTO_ICMP => {
            icmp_view(payload);
            icmp_error_view(payload);
        }
        ipv4::PROTO_TCP => tcp_view(payload, src, dst),
        ipv4::PROTO_UDP => udp_view(payload),
        ipv4::PROTO_GRE => gre_view(payload, depth),
        ipv4::PROTO_IPIP if depth < 4 => ipv4_view(payload, depth + 1),
        _ => {}
    }
    let _ = ip.into_inner();

    // Setters on a copy; a filled checksum verifies whatever the header holds.
    let mut copy = b.to_vec();
    let mut m = Ipv4Packet::new_checked(&mut copy[..]).unwrap();
    m.set_ttl(m.ttl().wrapping_sub(1));
    m.set_src(dst);
    m.set_dst(src);
    m.set_checksum(0xffff);
    m.fill_checksum();
    assert!(m.verify_checksum(), "fill_checksum did not make the header verify");
    assert_eq!((m.src(), m.dst()), (dst, src));
    let n = m.payload_mut().len();
    assert_eq!(n, payload.len());
}

fn icmp_view(b: &[u8]) {
    let Ok(i) = IcmpPacket::new_checked(b) else { return };
    black_box((i.msg_type(), i.code(), i.checksum(), i.verify_checksum()));
    let mut copy = b.to_vec();
    let mut m = IcmpPacket::new_checked(&mut copy[..]).unwrap();
    m.make_echo_reply();
    assert_eq!(m.msg_type(), 0);
    assert_eq!(m.code(), i.code());
    black_box(m.verify_checksum());
}

fn tcp_view(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(t) = TcpPacket::new_checked(b) else { return };
    black_box((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags(), t.window(), t.checksum()));
    black_box(t.verify_checksum_v4(src, dst));
    assert_eq!(t.payload().len() + t.header_len(), b.len());
    if b.len() <= usize::from(u16::MAX) {
        let mut copy = b.to_vec();
        let mut m = TcpPacket::new_checked(&mut copy[..]).unwrap();
        m.set_checksum(0x1234);
        m.fill_checksum_v4(src, dst);
        assert!(m.verify_checksum_v4(src, dst), "fill_checksum_v4 did not make the segment verify");
    }
    clamp_view(b, t.window(), src, dst);
}

/// Clamping a SYN's MSS changes nothing or lowers it to `max`, keeping the checksum's verdict.
fn clamp_view(b: &[u8], max: u16, src: Ipv4Addr, dst: Ipv4Addr) {
    let mut copy = b.to_vec();
    let Some(old) = tcp_options::clamp_mss(&mut copy, max) else {
        assert_eq!(copy, b, "clamp_mss changed a segment it did not clamp");
        return;
    };
    assert!(old > max);
    let (before, after) = (TcpPacket::new_checked(b).unwrap(), TcpPacket::new_checked(&copy[..]).unwrap());
    assert_eq!(tcp_options::parse(after.options()).unwrap().mss, Some(max));
    let verdict = |t: &TcpPacket<&[u8]>| t.verify_checksum_v4(src, dst);
    assert_eq!(verdict(&after), verdict(&before), "clamp_mss changed the checksum's verdict");
}

/// An ICMP error's quote: rewriting it fails exactly when reading it does, changes nothing
/// then, and otherwise reads back with the checksum's verdict kept; a message built quoting
/// these bytes verifies and reads the same quote.
fn icmp_error_view(b: &[u8]) {
    let read = icmp_error::parse(b);
    if let Ok(e) = read {
        black_box(e.next_hop_mtu());
        assert!(icmp_error::is_error(e.msg_type));
        assert!(e.quoted.len + 8 == b.len() && e.quoted.len >= e.quoted.ihl + 8);
    }
    let mut copy = b.to_vec();
    let (addr, port) = (Ipv4Addr::new(10, 0, 0, 5), 8443);
    let end = if b.len() % 2 == 0 { End::Src } else { End::Dst };
    let r = icmp_error::rewrite_quoted(&mut copy, end, addr.into(), port);
    assert_eq!(r, read.map(|_| ()));
    match read {
        Ok(e) => {
            let q = icmp_error::parse(&copy).expect("a rewritten message reads back");
            let got = if end == End::Src {
                (q.quoted.src, q.quoted.src_port)
            } else {
                (q.quoted.dst, q.quoted.dst_port)
            };
            assert_eq!(got, (addr, port));
            assert_eq!(q.checksum_ok, e.checksum_ok, "rewrite_quoted changed the checksum's verdict");
        }
        Err(_) => assert_eq!(copy, b, "rewrite_quoted changed a message it refused"),
    }
    let mut out = [0u8; 8 + icmp_error::QUOTE_MAX];
    let n = icmp_error::emit_frag_needed(&mut out, b, 1400);
    let quote = &b[..b.len().min(icmp_error::QUOTE_MAX)];
    assert_eq!(n, 8 + quote.len());
    assert!(IcmpPacket::new_checked(&out[..n]).unwrap().verify_checksum(), "an emitted error verifies");
    if let Ok(q) = Quoted::parse(quote) {
        let e = icmp_error::parse(&out[..n]).expect("an emitted error reads back");
        assert_eq!((e.quoted, e.next_hop_mtu()), (q, Some(1400)));
    }
}

fn ipv6_view(b: &[u8], depth: u32) {
    let walked = ipv6::upper_layer(b);
    let Ok(ip) = Ipv6Packet::new_checked(b) else {
        assert!(walked.is_err(), "upper_layer read a packet new_checked refuses");
        return;
    };
    black_box((ip.traffic_class(), ip.flow_label(), ip.next_header(), ip.hop_limit()));
    let (src, dst, hl, total) = (ip.src(), ip.dst(), ip.hop_limit(), ip.total_len());
    assert!(total <= b.len() && ip.payload().len() + 40 == total);
    // The fixed header emitted from its fields is the one read.
    let r = Ipv6Repr::parse(&ip);
    let mut out = [0u8; ipv6::HEADER_LEN];
    r.emit(&mut out);
    assert_eq!(&out[..], &b[..ipv6::HEADER_LEN], "Ipv6Repr round trip");
    if let Ok(u) = walked {
        assert!(u.next_header_at < u.offset && u.offset <= total);
        assert_eq!(b[u.next_header_at], u.protocol);
        let upper = &b[u.offset..total];
        if u.fragment.is_none_or(|f| f.at_offset_zero()) {
            match u.protocol {
                ipv6::NEXT_ICMPV6 => icmpv6_view(upper, src, dst, hl),
                ipv6::NEXT_TCP => tcp_v6_view(upper, src, dst),
                ipv6::NEXT_UDP => udp_v6_view(upper, src, dst),
                ipv6::NEXT_GRE => gre_view(upper, depth),
                ipv6::NEXT_IPV4 if depth < 4 => ipv4_view(upper, depth + 1),
                ipv6::NEXT_IPV6 if depth < 4 => ipv6_view(upper, depth + 1),
                _ => {}
            }
        }
    }
    // Setters on a copy write what the getters read back.
    let mut copy = b.to_vec();
    let mut m = Ipv6Packet::new_checked(&mut copy[..]).unwrap();
    m.set_traffic_class(!r.traffic_class);
    m.set_flow_label(!r.flow_label);
    m.set_next_header(!r.next_header);
    m.set_hop_limit(hl.wrapping_sub(1));
    m.set_src(dst);
    m.set_dst(src);
    m.set_payload_len(0);
    assert_eq!(
        (m.traffic_class(), m.flow_label(), m.next_header()),
        (!r.traffic_class, !r.flow_label & 0xfffff, !r.next_header)
    );
    assert_eq!((m.hop_limit(), m.src(), m.dst(), m.payload_len()), (hl.wrapping_sub(1), dst, src, 0));
    assert_eq!(m.payload_mut().len(), 0);
}

/// An ICMPv6 message carried from `src` to `dst` with hop limit `hl`: the view, the echo reply,
/// an outer address change, the error quote and its rewrite, Neighbor Discovery.
fn icmpv6_view(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hl: u8) {
    if let Ok(i) = Icmpv6Packet::new_checked(b) {
        black_box((i.msg_type(), i.code(), i.checksum(), i.rest(), i.mtu(), i.is_error(), i.payload()));
        let ok = i.verify_checksum(src, dst);
        let mut copy = b.to_vec();
        let mut m = Icmpv6Packet::new_checked(&mut copy[..]).unwrap();
        m.make_echo_reply();
        assert_eq!((m.msg_type(), m.code()), (icmpv6::TYPE_ECHO_REPLY, i.code()));
        let mut copy = b.to_vec();
        let new = Ipv6Addr::from(u128::from(src).rotate_left(17));
        icmpv6::update_checksum_for_address(&mut copy, src, new);
        let m = Icmpv6Packet::new_checked(&copy[..]).unwrap();
        assert_eq!(m.verify_checksum(new, dst), ok, "an outer address change changed the verdict");
        if b.len() <= usize::from(u16::MAX) {
            let mut copy = b.to_vec();
            let mut m = Icmpv6Packet::new_checked(&mut copy[..]).unwrap();
            m.fill_checksum(src, dst);
            assert!(m.verify_checksum(src, dst), "fill_checksum did not make the message verify");
        }
    }
    icmpv6_error_view(b, src, dst);
    ndisc_view(b, src, dst, hl);
}

/// As `icmp_error_view`, for ICMPv6.
fn icmpv6_error_view(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let read = icmpv6_error::parse(b, src, dst);
    if let Ok(e) = read {
        black_box(e.mtu());
        assert!(icmpv6_error::is_error(e.msg_type));
        assert!(e.quoted.len + 8 <= b.len() && e.quoted.len >= e.quoted.l4_at + 8);
    }
    let mut copy = b.to_vec();
    let (addr, port) = (Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 5), 8443);
    let end = if b.len() % 2 == 0 { End::Src } else { End::Dst };
    let r = icmpv6_error::rewrite_quoted(&mut copy, end, addr.into(), port);
    assert_eq!(r, read.map(|_| ()));
    match read {
        Ok(e) => {
            let q = icmpv6_error::parse(&copy, src, dst).expect("a rewritten message reads back");
            let got = if end == End::Src {
                (q.quoted.src, q.quoted.src_port)
            } else {
                (q.quoted.dst, q.quoted.dst_port)
            };
            assert_eq!(got, (addr, port));
            assert_eq!(q.checksum_ok, e.checksum_ok, "rewrite_quoted changed the checksum's verdict");
            let mut shifted = b.to_vec();
            if icmpv6_error::shift_quoted_seq(&mut shifted, 0x0102_0304).is_ok() {
                let q = icmpv6_error::parse(&shifted, src, dst).expect("a shifted message reads back");
                assert_eq!(q.checksum_ok, e.checksum_ok, "shift_quoted_seq changed the checksum's verdict");
            }
        }
        Err(_) => assert_eq!(copy, b, "rewrite_quoted changed a message it refused"),
    }
    let mut out = [0u8; 8 + icmpv6_error::QUOTE_MAX];
    let n = icmpv6_error::emit_packet_too_big(&mut out, b, 1280, dst, src);
    let quote = &b[..b.len().min(icmpv6_error::QUOTE_MAX)];
    assert_eq!(n, 8 + quote.len());
    let e = Icmpv6Packet::new_checked(&out[..n]).unwrap();
    assert!(e.verify_checksum(dst, src), "an emitted error verifies");
    if let Ok(q) = icmpv6_error::Quoted::parse(quote) {
        let e = icmpv6_error::parse(&out[..n], dst, src).expect("an emitted error reads back");
        assert_eq!((e.quoted, e.mtu(), e.checksum_ok), (q, Some(1280), true));
    }
}

/// A solicitation or advertisement that reads emits one that reads the same.
fn ndisc_view(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hl: u8) {
    let mut out = [0u8; ndisc::MSG_WITH_LL_LEN];
    if let Ok(ns) = ndisc::parse_ns(b, src, dst, hl) {
        assert!(!ns.target.is_multicast() && !src.is_multicast() && hl == ndisc::HOP_LIMIT);
        let n = ns.emit(&mut out, src, dst);
        assert_eq!(ndisc::parse_ns(&out[..n], src, dst, hl), Ok(ns));
        let (na, to) = NeighborAdvert::answer(&ns, src, [2, 0, 0, 0, 0, 1]);
        let n = na.emit(&mut out, ns.target, to);
        assert_eq!(ndisc::parse_na(&out[..n], ns.target, to, hl), Ok(na), "an answer reads back");
        let (rs, to) = NeighborSolicit::resolve(ns.target, [2, 0, 0, 0, 0, 1]);
        let n = rs.emit(&mut out, V6_SRC, to);
        assert_eq!(ndisc::parse_ns(&out[..n], V6_SRC, to, hl), Ok(rs));
        assert_eq!(ndisc::multicast_mac(to)[..3], [0x33, 0x33, 0xff]);
    }
    if let Ok(na) = ndisc::parse_na(b, src, dst, hl) {
        assert!(!na.target.is_multicast() && !(dst.is_multicast() && na.solicited));
        let n = na.emit(&mut out, src, dst);
        assert_eq!(ndisc::parse_na(&out[..n], src, dst, hl), Ok(na));
    }
}

fn tcp_v6_view(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let Ok(t) = TcpPacket::new_checked(b) else { return };
    black_box(t.verify_checksum_v6(src, dst));
    if b.len() <= usize::from(u16::MAX) {
        let mut copy = b.to_vec();
        let mut m = TcpPacket::new_checked(&mut copy[..]).unwrap();
        m.set_checksum(0x1234);
        m.fill_checksum_v6(src, dst);
        assert!(m.verify_checksum_v6(src, dst), "fill_checksum_v6 did not make the segment verify");
    }
}

fn udp_v6_view(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let Ok(u) = UdpPacket::new_checked(b) else { return };
    black_box(u.verify_checksum_v6(src, dst));
    let mut copy = b[..u.len()].to_vec();
    UdpRepr { src_port: u.dst_port(), dst_port: u.src_port() }.emit_v6(&mut copy, dst, src);
    let e = UdpPacket::new_checked(&copy[..]).unwrap();
    assert!(e.checksum() != 0 && e.verify_checksum_v6(dst, src), "an emitted v6 datagram verifies");
}

fn udp_view(b: &[u8]) {
    let Ok(u) = UdpPacket::new_checked(b) else { return };
    black_box((u.src_port(), u.dst_port(), u.len(), u.is_empty(), u.checksum()));
    assert_eq!(u.payload().len() + 8, u.len());
}

fn gre_view(b: &[u8], depth: u32) {
    let Ok(g) = GrePacket::new_checked(b) else { return };
    black_box((g.has_checksum(), g.protocol(), g.key(), g.sequence(), g.verify_checksum()));
    let payload = g.payload();
    assert_eq!(payload.len() + g.header_len(), b.len());
    if g.protocol() == ethernet::ETHERTYPE_IPV4 && depth < 4 {
        ipv4_view(payload, depth + 1);
    }
    if g.protocol() == ethernet::ETHERTYPE_IPV6 && depth < 4 {
        ipv6_view(payload, depth + 1);
    }
}

/// Headers emitted from fuzzed fields parse back to those fields.
fn reprs(b: &[u8]) {
    if b.len() < 32 {
        return;
    }
    let mac = |o: usize| -> [u8; 6] { b[o..o + 6].try_into().unwrap() };
    let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);

    let eth = EthernetRepr {
        dst: mac(0),
        src: mac(6),
        vlan: (b[12] & 1 != 0).then(|| u16_at(13) & 0x0fff),
        ethertype: u16_at(15),
    };
    // An untagged header whose EtherType is 0x8100 reads back as a tag: not a round trip.
    if eth.vlan.is_some() || eth.ethertype != ethernet::ETHERTYPE_VLAN {
        let mut out = [0u8; 18];
        eth.emit(&mut out);
        let e =
            EthernetFrame::new_checked(&out[..eth.header_len()]).expect("an emitted Ethernet header parses");
        assert_eq!(
            (e.dst(), e.src(), e.vlan(), e.header_len()),
            (eth.dst, eth.src, eth.vlan, eth.header_len())
        );
        assert_eq!(e.ethertype(), eth.ethertype);
    }

    let r = Ipv4Repr {
        src: Ipv4Addr::from(u32_at(17)),
        dst: Ipv4Addr::from(u32_at(21)),
        protocol: b[25],
        payload_len: usize::from(u16_at(26) % 1500),
        tos: b[28],
        ident: u16_at(29),
        dont_frag: b[31] & 1 != 0,
        ttl: b[31],
    };
    let mut hdr = vec![0u8; 20 + r.payload_len];
    r.emit(&mut hdr);
    let ip = Ipv4Packet::new_checked(&hdr[..]).expect("an emitted IPv4 header parses");
    assert!(ip.verify_checksum(), "an emitted IPv4 header verifies");
    assert_eq!(
        (ip.src(), ip.dst(), ip.protocol(), ip.tos(), ip.ident()),
        (r.src, r.dst, r.protocol, r.tos, r.ident)
    );
    assert_eq!(
        (ip.dont_frag(), ip.ttl(), ip.total_len(), ip.is_fragment()),
        (r.dont_frag, r.ttl, 20 + r.payload_len, false)
    );

    let g = GreRepr { protocol: u16_at(0), key: (b[2] & 1 != 0).then(|| u32_at(3)) };
    let mut gb = [0u8; 8];
    g.emit(&mut gb);
    let p = GrePacket::new_checked(&gb[..g.header_len()]).expect("an emitted GRE header parses");
    assert_eq!(
        (p.protocol(), p.key(), p.header_len(), p.has_checksum(), p.sequence()),
        (g.protocol, g.key, g.header_len(), false, None)
    );
}

/// The incremental update agrees with a recomputation (0x0000 and 0xffff are both zero in
/// ones' complement, so they are taken as equal here).
fn checksums(b: &[u8]) {
    black_box(checksum::checksum(b));
    if b.len() < 8 {
        return;
    }
    let mut d = b.to_vec();
    let at = usize::from(d[0]) % (d.len() / 2 - 1) * 2; // a 16-bit field
    let ck = (at + 2) % (d.len() & !1); // the checksum field, another 16-bit word
    if ck == at || ck + 1 == at || at + 1 == ck {
        return;
    }
    d[ck] = 0;
    d[ck + 1] = 0;
    let c0 = checksum::checksum(&d);
    let old = u16::from_be_bytes([d[at], d[at + 1]]);
    let new = old ^ u16::from_be_bytes([b[1], b[2]]);
    d[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let inc = checksum::update16(c0, old, new);
    let full = checksum::checksum(&d);
    assert!(inc == full || inc ^ full == 0xffff, "update16 {inc:#06x} vs recompute {full:#06x}");
}

fn macs(b: &[u8]) {
    if let Ok(s) = std::str::from_utf8(b) {
        if let Some(m) = parse_mac(s) {
            assert_eq!(parse_mac(&fmt_mac(&m)), Some(m));
        }
    }
    if b.len() >= 6 {
        let m: [u8; 6] = b[..6].try_into().unwrap();
        assert_eq!(parse_mac(&fmt_mac(&m)), Some(m));
    }
}
