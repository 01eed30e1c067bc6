//! The SYN proxy through `pipeline::process`: a client's handshake answered with a cookie, the
//! backend's opened on the ACK, held data released on the backend's SYN-ACK, and sequence
//! numbers, SACK blocks, timestamps and windows translated both ways. Packets are built and
//! read with the wire module; every packet the appliance sends must carry valid IPv4 and TCP
//! checksums. (Real Linux TCP stacks on both sides: `scripts/e2e/test_synproxy.py`.)

use sluice_dataplane::cookie::{self, SynOptions};
use sluice_dataplane::flow::{Addr, FlowKey};
use sluice_dataplane::io::{Frame, VecFrame};
use sluice_dataplane::pipeline::Verdict;
use sluice_dataplane::session::{SessionKey, SessionTable, TcpState, Timeouts};
use sluice_dataplane::snapshot::*;
use sluice_dataplane::stats::DropReason;
use sluice_dataplane::synproxy::SynProxy;
use sluice_dataplane::testkit::frame::{ethernet, linux_syn_options, tcp, Packet};
use sluice_dataplane::testkit::{
    self, host, host_mac, hosts, spec, vip, EXT_ADDR, EXT_MAC, INT_ADDR, INT_MAC, ROUTER, ROUTER_MAC,
};
use sluice_dataplane::wire::ethernet::ETHERTYPE_IPV4;
use sluice_dataplane::wire::ipv4::{Ipv4Packet, PROTO_GRE, PROTO_TCP};
use sluice_dataplane::wire::tcp::{ACK, FIN, PSH, RST, SYN};
use sluice_dataplane::wire::tcp_options::{self, TcpOptions};
use sluice_dataplane::wire::{GrePacket, GreRepr, TcpPacket, TcpRepr};
use std::net::Ipv4Addr;

const HOST_MAC: [u8; 6] = host_mac(10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const VIP: Ipv4Addr = vip(6);
const BACKEND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const HOST: Ipv4Addr = host(10);
const APPLIANCE_INT: Ipv4Addr = INT_ADDR;
const VPC: u32 = 7;
const SPORT: u16 = 40000;
/// The MSS the appliance offers: 1500 less GRE with a key (28) less 40.
const MSS: u16 = 1432;
/// One second into the run (cookie period 0).
const T0: u64 = 1_000_000_000;

fn snapshot(synproxy: bool, forwarding: Forwarding) -> Result<Snapshot, BuildError> {
    let mut s = web(synproxy);
    s.forwarding = forwarding;
    s.on_no_backend = NoBackend::Reset;
    if forwarding == Forwarding::Dsr {
        s.backends = vec![spec::backend(HOST, 1)];
    }
    snapshot_with(vec![s])
}

/// A NAT service at `vip`:80 to BACKEND:8080 on HOST, GRE keyed by the VPC, table 251.
fn nat_service(name: &str, vip: Ipv4Addr) -> ServiceSpec {
    let backends = vec![spec::nat_backend(BACKEND, 8080, HOST, 1)];
    ServiceSpec {
        tunnel: Tunnel::Gre { key: Some(VPC) },
        table_size: 251,
        ..spec::nat_service(name, vip, 80, Protocol::Tcp, backends)
    }
}

/// The test's service, "web" at VIP, SYN-proxied or not.
fn web(synproxy: bool) -> ServiceSpec {
    ServiceSpec { synproxy, ..nat_service("web", VIP) }
}

/// The test's two ports with `services`; the router is the external port's gateway.
fn snapshot_with(services: Vec<ServiceSpec>) -> Result<Snapshot, BuildError> {
    let ext = PortSpec {
        gateways: vec![spec::spec_addr(ROUTER)],
        ..spec::port_spec("ext", EXT_MAC, EXT_ADDR, [(ROUTER, ROUTER_MAC)])
    };
    let ports = vec![ext, spec::int_port(hosts([10]))];
    Snapshot::build(&spec::snapshot_spec(ports, services), None)
}

struct Rig {
    snap: Snapshot,
    table: SessionTable,
    proxy: SynProxy,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            snap: snapshot(true, Forwarding::Nat).unwrap(),
            table: SessionTable::new(1024, Timeouts::default(), 5),
            proxy: testkit::synproxy(),
            now: T0,
        }
    }

    fn run(&self, port: u16, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let mut f = VecFrame::new(bytes);
        let v = testkit::process_one(&self.snap, &self.table, &self.proxy, self.now, port, &mut f);
        (v, f.data().to_vec())
    }

    fn session(&self) -> Option<sluice_dataplane::session::Session> {
        let key = SessionKey::flow(Addr::v4(CLIENT), SPORT, self.snap.services[0].id);
        self.table.lookup(&key, self.table.hash(&key)).map(|(_, s)| s)
    }
}

fn flow() -> FlowKey {
    FlowKey { src: Addr::v4(CLIENT), dst: Addr::v4(VIP), src_port: SPORT, dst_port: 80, protocol: PROTO_TCP }
}

/// IPv4 + TCP bytes (ident 9, DF).
fn ip_tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    t: (u32, u32, u8, u16),
    opts: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let r = TcpRepr { seq: t.0, ack: t.1, window: t.3, options: opts, ..tcp(ports, t.2) };
    Packet { ident: 9, ..Packet::new(src, dst) }.ip_tcp(&r, data)
}

/// A client segment to the VIP, from the router.
fn client(seq: u32, ack: u32, flags: u8, window: u16, opts: &[u8], data: &[u8]) -> Vec<u8> {
    ethernet(EXT_MAC, ROUTER_MAC, &ip_tcp(CLIENT, VIP, (SPORT, 80), (seq, ack, flags, window), opts, data))
}

/// A backend segment to the client, as its host's agent tunnels it to the appliance.
fn backend(seq: u32, ack: u32, flags: u8, window: u16, opts: &[u8], data: &[u8]) -> Vec<u8> {
    let inner = ip_tcp(BACKEND, CLIENT, (8080, SPORT), (seq, ack, flags, window), opts, data);
    let g = GreRepr { protocol: ETHERTYPE_IPV4, key: Some(VPC) };
    let mut gre = vec![0u8; g.header_len()];
    g.emit(&mut gre);
    gre.extend_from_slice(&inner);
    let outer = Packet { ident: 1, dont_frag: false, ..Packet::new(HOST, APPLIANCE_INT) }.ip(PROTO_GRE, &gre);
    ethernet(INT_MAC, HOST_MAC, &outer)
}

fn ts(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

/// A sent TCP segment, its checksums checked.
#[derive(Debug)]
struct Seg {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: TcpOptions,
    data: Vec<u8>,
}

fn seg(ip_bytes: &[u8]) -> Seg {
    let ip = Ipv4Packet::new_checked(ip_bytes).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert_eq!(ip.protocol(), PROTO_TCP);
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum_v4(ip.src(), ip.dst()), "TCP checksum");
    Seg {
        src: ip.src(),
        dst: ip.dst(),
        sport: t.src_port(),
        dport: t.dst_port(),
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        window: t.window(),
        opts: tcp_options::parse(&ip.payload()[20..t.header_len()]).unwrap(),
        data: t.payload().to_vec(),
    }
}

/// A frame sent to the client: Ethernet to the router, then the segment.
fn to_client(frame: &[u8]) -> Seg {
    assert_eq!(&frame[..6], &ROUTER_MAC);
    assert_eq!(&frame[6..12], &EXT_MAC);
    let s = seg(&frame[14..]);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 80, CLIENT, SPORT));
    s
}

/// A frame tunneled to the backend: Ethernet to its host, GRE keyed by the VPC, the segment.
fn to_backend(frame: &[u8]) -> Seg {
    assert_eq!(&frame[..6], &HOST_MAC);
    let outer = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(outer.verify_checksum());
    assert_eq!((outer.src(), outer.dst(), outer.protocol()), (APPLIANCE_INT, HOST, PROTO_GRE));
    let g = GrePacket::new_checked(outer.payload()).unwrap();
    assert_eq!(g.key(), Some(VPC));
    let s = seg(&outer.payload()[g.header_len()..]);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (CLIENT, SPORT, BACKEND, 8080));
    s
}

const C_ISN: u32 = 0xffff_fff0; // wraps within the connection
const C_TS: u32 = 5_000;
const B_ISN: u32 = 0x1234_5678;
const B_TS: u32 = 900_000;

/// The client's SYN, answered: the cookie and the appliance's timestamp.
fn handshake_with_appliance(r: &Rig) -> (u32, u32) {
    let (v, out) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
    assert_eq!(v, Verdict::SynAck { port: 0 });
    let sa = to_client(&out);
    (sa.seq, sa.opts.timestamps.unwrap().0)
}

#[test]
fn a_syn_gets_a_cookie_and_nothing_is_kept() {
    let r = Rig::new();
    let (v, out) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
    assert_eq!(v, Verdict::SynAck { port: 0 });
    let sa = to_client(&out);
    assert_eq!((sa.flags, sa.ack), (SYN | ACK, C_ISN.wrapping_add(1)));
    // The port MTU less the GRE tunnel (20 + 8) less 40.
    assert_eq!(sa.opts.mss, Some(MSS));
    assert_eq!(sa.opts.wscale, Some(sluice_dataplane::synproxy::WSCALE));
    assert!(sa.opts.sack_perm);
    let (our_ts, echo) = sa.opts.timestamps.unwrap();
    assert_eq!((our_ts, echo), (1000, C_TS), "the appliance's millisecond clock; the client's echoed");
    assert_eq!(sa.window, sluice_dataplane::synproxy::FIRST_WINDOW, "one segment until the backend is there");
    // The cookie is the client's options, for this flow and ISN.
    let want = SynOptions::from_syn(Some(1460), Some(7), true, true);
    assert_eq!(r.proxy.keys.check(&flow(), C_ISN.wrapping_add(1), sa.seq.wrapping_add(1), 0), Ok(want));
    assert!(r.session().is_none(), "no state for a SYN");
    assert_eq!(r.table.len(), 0);
    // A retransmitted SYN in the same period gets the same cookie.
    let (_, again) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
    assert_eq!(to_client(&again).seq, sa.seq);
    // A SYN without options: MSS 536 remembered, no window scale, SACK or timestamps offered.
    let (_, out) = r.run(0, &client(7, 0, SYN, 1000, &[], b""));
    let sa = to_client(&out);
    assert_eq!((sa.opts.wscale, sa.opts.sack_perm, sa.opts.timestamps), (None, false, None));
    assert_eq!(
        r.proxy.keys.check(&flow(), 8, sa.seq.wrapping_add(1), 0),
        Ok(SynOptions::from_syn(None, None, false, false))
    );
}

#[test]
fn the_whole_connection_through_the_proxy() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);

    // The client's ACK opens the backend's connection with the client's own ISN and options.
    let ack_ts = ts(C_TS + 1, our_ts);
    let (v, out) = r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ack_ts, b""));
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    let syn = to_backend(&out);
    assert_eq!((syn.flags, syn.seq, syn.ack), (SYN, C_ISN, 0));
    assert_eq!(syn.opts.mss, Some(MSS), "the client's 1460, clamped to the tunnel path");
    assert_eq!(syn.opts.wscale, Some(7));
    assert!(syn.opts.sack_perm);
    assert_eq!(syn.opts.timestamps, Some((C_TS + 1, 0)));
    assert_eq!(r.session().unwrap().state, TcpState::Connecting);

    // The request, before the backend answered: held.
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let data_ts = ts(C_TS + 2, our_ts);
    let (v, _) =
        r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK | PSH, 502, &data_ts, req));
    assert_eq!(v, Verdict::Consumed);

    // The backend's SYN-ACK (window scale 9) completes it: out goes the held request, in the
    // backend's sequence space, as the ACK of its handshake.
    let mut bo = vec![2, 4, 0x05, 0xb4, 4, 2];
    bo.extend_from_slice(&ts(B_TS, C_TS + 1)[2..]);
    bo.extend_from_slice(&[1, 3, 3, 9]);
    let (v, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &bo, b""));
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    let d = to_backend(&out);
    assert_eq!((d.seq, d.ack, d.flags), (C_ISN.wrapping_add(1), B_ISN.wrapping_add(1), ACK | PSH));
    assert_eq!(d.data, req);
    assert_eq!(d.opts.timestamps, Some((C_TS + 2, B_TS)), "the echo in the backend's clock");
    let s = r.session().unwrap();
    assert_eq!(s.state, TcpState::Established);

    // The response: sequence and timestamp in the appliance's space, window rescaled 9 -> 7.
    let resp = b"HTTP/1.1 200 OK\r\n\r\n";
    let sent = req.len() as u32;
    let (v, out) = r.run(
        1,
        &backend(
            B_ISN.wrapping_add(1),
            C_ISN.wrapping_add(1 + sent),
            ACK | PSH,
            100,
            &ts(B_TS + 7, C_TS + 2),
            resp,
        ),
    );
    assert!(matches!(v, Verdict::NatReply { port: 0, .. }), "{v:?}");
    let c = to_client(&out);
    assert_eq!((c.seq, c.ack), (cookie.wrapping_add(1), C_ISN.wrapping_add(1 + sent)));
    assert_eq!(c.window, 400);
    assert_eq!(c.opts.timestamps, Some((our_ts + 7, C_TS + 2)));
    assert_eq!(c.data, resp);

    // The client's ACK with a SACK block: both edges and the ack move to the backend's space.
    let mut sack = ts(C_TS + 3, our_ts + 7);
    sack.extend_from_slice(&[1, 1, 5, 10]);
    sack.extend_from_slice(&cookie.wrapping_add(100).to_be_bytes());
    sack.extend_from_slice(&cookie.wrapping_add(200).to_be_bytes());
    let rlen = resp.len() as u32;
    let (_, out) =
        r.run(0, &client(C_ISN.wrapping_add(1 + sent), cookie.wrapping_add(1 + rlen), ACK, 501, &sack, b""));
    let a = to_backend(&out);
    assert_eq!(a.ack, B_ISN.wrapping_add(1 + rlen));
    assert_eq!(a.opts.sack.as_slice(), &[(B_ISN.wrapping_add(100), B_ISN.wrapping_add(200))]);
    assert_eq!(a.opts.timestamps, Some((C_TS + 3, B_TS + 7)));
    assert_eq!(a.window, 501, "the client's windows are already in the backend's scale");

    // FIN from the client, FIN-ACK back: translated like the rest, and the session is over.
    let (_, out) = r.run(
        0,
        &client(C_ISN.wrapping_add(1 + sent), cookie.wrapping_add(1 + rlen), FIN | ACK, 501, &[], b""),
    );
    let f = to_backend(&out);
    assert_eq!((f.flags, f.ack), (FIN | ACK, B_ISN.wrapping_add(1 + rlen)));
    let (_, out) = r.run(
        1,
        &backend(B_ISN.wrapping_add(1 + rlen), C_ISN.wrapping_add(2 + sent), FIN | ACK, 100, &[], b""),
    );
    let f = to_client(&out);
    assert_eq!((f.flags, f.seq), (FIN | ACK, cookie.wrapping_add(1 + rlen)));
    assert_eq!(r.session().unwrap().state, TcpState::Finished);
}

/// A proxied connection's 4-tuple comes round again while its session lives (the client lost
/// the old connection, or its port came round): a SYN with a new ISN gets a cookie of its own,
/// not a trip to the backend in the old connection's sequence space. A retransmission of the
/// old connection's SYN still goes on as before.
#[test]
fn a_new_syn_on_a_live_proxied_4_tuple_gets_its_own_cookie() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    let ack_ts = ts(C_TS + 1, our_ts);
    let (v, _) = r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ack_ts, b""));
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    let mut bo = vec![2, 4, 0x05, 0xb4];
    bo.extend_from_slice(&ts(B_TS, C_TS + 1));
    let (v, _) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &bo, b""));
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    assert_eq!(r.session().unwrap().state, TcpState::Established);

    // The old connection's SYN again: forwarded, the session kept.
    let (v, _) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
    assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{v:?}");
    assert_eq!(r.session().unwrap().state, TcpState::Established);

    // A new connection's SYN: a cookie, and the stale session is gone.
    let (v, out) = r.run(0, &client(0x0bad_cafe, 0, SYN, 64240, &linux_syn_options(C_TS + 50), b""));
    assert_eq!(v, Verdict::SynAck { port: 0 });
    assert_eq!(to_client(&out).ack, 0x0bad_caff);
    assert!(r.session().is_none());
}

#[test]
fn data_with_the_handshake_ack_is_held_and_a_bare_syn_ack_gets_a_bare_ack() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    // Data with the third ACK: the SYN goes out, the data is held.
    let (v, out) = r.run(
        0,
        &client(
            C_ISN.wrapping_add(1),
            cookie.wrapping_add(1),
            ACK | PSH,
            502,
            &ts(C_TS + 1, our_ts),
            b"hello",
        ),
    );
    assert!(matches!(v, Verdict::Tunnel { .. }));
    assert_eq!(to_backend(&out).flags, SYN);
    let bo = ts(B_TS, C_TS + 1);
    let (_, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &bo, b""));
    let d = to_backend(&out);
    assert_eq!((d.flags, d.data.as_slice()), (ACK | PSH, &b"hello"[..]));

    // Another connection whose client says nothing yet: the SYN-ACK gets a bare ACK with the
    // client's window and the timestamps reflected.
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    let (_, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &bo, b""));
    let a = to_backend(&out);
    assert_eq!((a.flags, a.seq, a.ack, a.window), (ACK, C_ISN.wrapping_add(1), B_ISN.wrapping_add(1), 502));
    assert_eq!(a.opts.timestamps, Some((C_TS + 1, B_TS)));
    assert!(a.data.is_empty());
    // The backend repeats its SYN-ACK (that ACK was lost): it gets the ACK again.
    let (_, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &bo, b""));
    assert_eq!(to_backend(&out).ack, B_ISN.wrapping_add(1));
    // Now the client's request goes straight through, translated.
    let (_, out) = r.run(
        0,
        &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK | PSH, 502, &ts(C_TS + 2, our_ts), b"GET"),
    );
    let d = to_backend(&out);
    assert_eq!((d.ack, d.data.as_slice()), (B_ISN.wrapping_add(1), &b"GET"[..]));
}

#[test]
fn retransmissions_while_the_backend_is_silent_ask_it_again() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    let ack = client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b"");
    r.run(0, &ack);
    let data =
        client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK | PSH, 502, &ts(C_TS + 2, our_ts), b"GET");
    assert_eq!(r.run(0, &data).0, Verdict::Consumed);
    // The client retransmits its request: the held copy stays, the backend gets its SYN again
    // (same ISN and options, the client's newer timestamp).
    let (v, out) = r.run(
        0,
        &client(
            C_ISN.wrapping_add(1),
            cookie.wrapping_add(1),
            ACK | PSH,
            502,
            &ts(C_TS + 300, our_ts),
            b"GET",
        ),
    );
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    let syn = to_backend(&out);
    assert_eq!((syn.flags, syn.seq, syn.opts.mss, syn.opts.wscale), (SYN, C_ISN, Some(MSS), Some(7)));
    assert_eq!(syn.opts.timestamps, Some((C_TS + 300, 0)));
    // A bare ACK does the same.
    let (_, out) = r.run(0, &ack);
    assert_eq!(to_backend(&out).flags, SYN);
}

#[test]
fn a_backend_that_refuses_resets_the_client() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    let (v, out) = r.run(1, &backend(0, C_ISN.wrapping_add(1), RST | ACK, 0, &[], b""));
    assert!(matches!(v, Verdict::NatReply { port: 0, .. }), "{v:?}");
    let rst = to_client(&out);
    assert_eq!((rst.flags, rst.seq), (RST, cookie.wrapping_add(1)), "where the client expects it");
    assert!(r.session().is_none());
    // Anything else from a backend mid-handshake is dropped.
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    let (v, _) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(99), SYN | ACK, 100, &[], b""));
    assert_eq!(v, Verdict::Drop(DropReason::SynproxyBackendUnexpected), "SYN-ACK for another ISN");
    assert_eq!(r.session().unwrap().state, TcpState::Connecting);
}

#[test]
fn a_backend_answering_for_an_older_connection_is_reset_and_asked_again() {
    // The backend still has a TIME_WAIT on this 4-tuple: it answers the SYN with an ACK of the
    // old connection's sequence space (a challenge ACK).
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    let ack = client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b"");
    r.run(0, &ack);
    let (v, out) = r.run(1, &backend(777_000, 0x0bad_0001, ACK, 500, &[], b""));
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    let rst = to_backend(&out);
    assert_eq!((rst.flags, rst.seq), (RST, 0x0bad_0001), "reset where the backend expects it");
    assert_eq!(r.session().unwrap().state, TcpState::Connecting, "the handshake goes on");
    // The client's retransmission sends the SYN again, and the backend's SYN-ACK completes it.
    let (_, out) = r.run(0, &ack);
    assert_eq!(to_backend(&out).flags, SYN);
    let (v, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 500, &[2, 4, 5, 0xb4], b""));
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    assert_eq!(to_backend(&out).flags, ACK);
    assert_eq!(r.session().unwrap().state, TcpState::Established);
}

#[test]
fn a_backend_shared_with_another_service_answers_the_newest_session() {
    // Another NAT service (another VIP, not proxied) on the same backend, first in the
    // snapshot; the client had a connection to it from the same port, now closing. At the
    // backend both are one 4-tuple: its SYN-ACK is for the proxied handshake, the newer one.
    let mut r = Rig::new();
    r.snap = snapshot_with(vec![nat_service("plain", vip(7)), web(true)]).unwrap();
    let plain = &r.snap.services[0];
    let old = SessionKey::flow(Addr::v4(CLIENT), SPORT, plain.id);
    let stale = sluice_dataplane::session::Session::new(plain.backends[0].id, TcpState::Closing, 1);
    r.table.insert(&old, r.table.hash(&old), &stale);
    r.now = T0 + 10_000_000_000; // the proxied handshake is 10 s later
    let (cookie, our_ts) = handshake_with_appliance(&r);
    r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    let web_key = SessionKey::flow(Addr::v4(CLIENT), SPORT, r.snap.services[1].id);
    let state = |r: &Rig| r.table.lookup(&web_key, r.table.hash(&web_key)).unwrap().1.state;
    assert_eq!(state(&r), TcpState::Connecting);
    let (v, out) = r.run(1, &backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 500, &ts(B_TS, C_TS + 1), b""));
    assert!(matches!(v, Verdict::Tunnel { .. }), "the SYN-ACK completes the proxied handshake: {v:?}");
    assert_eq!(to_backend(&out).flags, ACK);
    assert_eq!(state(&r), TcpState::Established);
}

#[test]
fn a_client_reset_mid_handshake_resets_the_backend() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    r.run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    let (v, out) = r.run(0, &client(C_ISN.wrapping_add(1), 0, RST, 0, &[], b""));
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    let rst = to_backend(&out);
    assert_eq!((rst.flags, rst.seq), (RST, C_ISN.wrapping_add(1)));
    assert!(r.session().is_none());
}

#[test]
fn acks_without_a_valid_cookie_make_nothing() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    let o = ts(C_TS + 1, our_ts);
    // Altered cookie, another ISN, a plain ACK flood packet.
    for (seq, ack) in
        [(C_ISN.wrapping_add(1), cookie.wrapping_add(2)), (C_ISN, cookie.wrapping_add(1)), (1, 1)]
    {
        let (v, _) = r.run(0, &client(seq, ack, ACK, 502, &o, b""));
        assert_eq!(v, Verdict::Drop(DropReason::SynCookieInvalid));
    }
    assert_eq!(r.table.len(), 0);
    // Past the validity window: stale.
    let mut late = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&late);
    late.now += (cookie::MAX_AGE as u64 + 1) * cookie::PERIOD_SECS * 1_000_000_000;
    let (v, _) = late
        .run(0, &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b""));
    assert_eq!(v, Verdict::Drop(DropReason::SynCookieStale));
    // Neither SYN nor ACK, or a RST, without a session.
    for flags in [RST, FIN, SYN | ACK, PSH] {
        let (v, _) = r.run(0, &client(1, 1, flags, 502, &[], b""));
        assert_eq!(v, Verdict::Drop(DropReason::SynproxyNoSession), "flags {flags:#x}");
    }
    // A malformed option list in a SYN.
    let (v, _) = r.run(0, &client(1, 0, SYN, 502, &[2, 3, 5, 0], b""));
    assert_eq!(v, Verdict::Drop(DropReason::SynproxyMalformed));
}

#[test]
fn syn_proxy_needs_nat() {
    let e = snapshot(true, Forwarding::Dsr).unwrap_err();
    assert_eq!(e.path, "services[0].synproxy");
    assert!(snapshot(false, Forwarding::Dsr).is_ok());
    // Without the proxy, a SYN goes to the backend as it is.
    let mut r = Rig::new();
    r.snap = snapshot(false, Forwarding::Nat).unwrap();
    let (v, out) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
    assert!(matches!(v, Verdict::Tunnel { .. }));
    assert_eq!(to_backend(&out).seq, C_ISN);
}

#[test]
fn no_room_for_the_session_or_the_segment_is_a_counted_drop() {
    let r = Rig::new();
    let (cookie, our_ts) = handshake_with_appliance(&r);
    let ack = client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, our_ts), b"");
    r.table.set_full(true);
    assert_eq!(r.run(0, &ack).0, Verdict::Drop(DropReason::SynproxyTableFull));
    assert!(r.session().is_none());
    r.table.set_full(false);
    assert!(matches!(r.run(0, &ack).0, Verdict::Tunnel { .. }));
    // A segment larger than a held one can be (the pool keeps up to a 1536-byte packet).
    let big = vec![b'x'; sluice_dataplane::synproxy::HOLD_BYTES];
    let (v, _) = r.run(
        0,
        &client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 2, our_ts), &big),
    );
    assert_eq!(v, Verdict::Drop(DropReason::SynproxyNotHeld));
    assert_eq!(r.session().unwrap().state, TcpState::Connecting);
}

/// Recomputes the IPv4 header checksum of the header at `b[at..]` (so mutations get past it).
fn fix_ip(b: &mut [u8], at: usize) {
    if b.len() < at + 20 {
        return;
    }
    let ihl = (usize::from(b[at] & 15) * 4).clamp(20, 60);
    if b.len() < at + ihl {
        return;
    }
    b[at + 10] = 0;
    b[at + 11] = 0;
    let c = sluice_dataplane::wire::checksum::checksum(&b[at..at + ihl]);
    b[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// A handshake whose frames are mutated anywhere (IP checksums fixed up, so the changes
    /// reach the proxy) never panics, whatever the proxy makes of it.
    #[test]
    fn mutated_handshakes_never_panic(
        muts in proptest::collection::vec((0usize..5, 0usize..120, proptest::prelude::any::<u8>()), 1..8),
        cut in proptest::option::of((0usize..5, 0usize..120)),
    ) {
        let r = Rig::new();
        let cookie = {
            let (_, out) = r.run(0, &client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b""));
            u32::from_be_bytes([out[38], out[39], out[40], out[41]])
        };
        let mut frames = vec![
            (0, client(C_ISN, 0, SYN, 64240, &linux_syn_options(C_TS), b"")),
            (0, client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK, 502, &ts(C_TS + 1, 1000), b"")),
            (0, client(C_ISN.wrapping_add(1), cookie.wrapping_add(1), ACK | PSH, 502, &ts(C_TS + 2, 1000), b"GET")),
            (1, backend(B_ISN, C_ISN.wrapping_add(1), SYN | ACK, 65160, &ts(B_TS, C_TS + 1), b"")),
            (1, backend(B_ISN.wrapping_add(1), C_ISN.wrapping_add(4), ACK, 100, &ts(B_TS + 1, C_TS + 2), b"OK")),
        ];
        for (i, at, v) in muts {
            let f = &mut frames[i].1;
            let at = at % f.len();
            f[at] = v;
        }
        if let Some((i, n)) = cut {
            let f = &mut frames[i].1;
            f.truncate(f.len().saturating_sub(n));
        }
        for (port, f) in &mut frames {
            fix_ip(f, 14);
            fix_ip(f, 14 + 20 + 8); // the inner header of a backend frame
            let _ = r.run(*port, f);
        }
    }
}
