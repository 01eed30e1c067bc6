//! Where each packet out of a TUN goes, pure: the flow it belongs to, found by its own 5-tuple,
//! by the packet an ICMP error quotes, or for a fragment past the first by its datagram's first
//! fragment.
//!
//! Only a datagram's first fragment has ports. A TUN's [`Replies`] learns them from it, keyed
//! by (source, destination, protocol, identification), in a bounded
//! [`FragmentTable`]; the later fragments of that datagram then complete their 5-tuple from
//! it and follow the same flow. Linux sends a datagram's fragments in order; a later fragment
//! that comes first anyway is held (a copy, at most [`HOLD`] per TUN) until its first comes,
//! and dropped as `reply_fragment_orphan` if the hold is full, or if its first does not come
//! within the table's timeout (2 s; noticed, and the copy freed, when the TUN next sends a
//! packet).
//!
//! Bounds per TUN: [`DATAGRAMS`] learned datagrams (64 bytes each) for 2 s each, and [`HOLD`]
//! held fragments, each at most one packet the TUN sent (its MTU; 64 KiB at the very most).
//!
//! One [`Replies`] per TUN, owned by the thread that reads it: no lock. The flow memory is
//! reached through a lookup function, so that its lock is held per lookup only.

use crate::flows::ReturnPath;
use crate::tunnel::{reply, DropReason, FiveTuple, ReplyKind};
use arrayvec::ArrayVec;
use sluice_dataplane::fragments::{FragmentTable, Ports, DEFAULT_TIMEOUT_NS};

/// Datagrams whose ports a TUN remembers at once (fragmented replies in flight).
pub const DATAGRAMS: usize = 1024;
/// Later fragments a TUN holds while their first has not come.
pub const HOLD: usize = 16;

/// What a packet out of a TUN is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A whole TCP or UDP packet.
    Packet,
    /// A fragment of a TCP or UDP datagram (the first or a later one).
    Fragment,
    /// An ICMP error about a flow's packet.
    IcmpError,
}

/// What becomes of a packet out of a TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Tunnel it back along `path`, for a flow `age` seconds old.
    Send {
        path: ReturnPath,
        age: u64,
        carried: Carried,
    },
    /// A later fragment kept until its first comes.
    Held,
    Drop(DropReason),
}

/// One TUN's memory of fragmented replies. See the module doc.
pub struct Replies {
    fragments: FragmentTable<Vec<u8>>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").field("fragments", &self.fragments).finish()
    }
}

impl Replies {
    /// With the default bounds; `seed` keys the table's hash (use a random one).
    pub fn new(seed: u64) -> Replies {
        Replies::with_bounds(DATAGRAMS, DEFAULT_TIMEOUT_NS, HOLD, seed)
    }

    /// `datagrams` learned at once, for `timeout_ns` each, and `hold` early fragments (at most
    /// [`sluice_dataplane::fragments::MAX_HELD`]).
    pub fn with_bounds(datagrams: usize, timeout_ns: u64, hold: usize, seed: u64) -> Replies {
        Replies { fragments: FragmentTable::new(datagrams, timeout_ns, hold, seed) }
    }

    /// Fragments held now.
    pub fn held(&self) -> usize {
        self.fragments.held()
    }

    /// Decides what becomes of `packet`, read out of this TUN at `now_ns`, and calls `out` with
    /// the bytes to tunnel (the packet trimmed) and the verdict: for it, and before it for any
    /// held fragment that expired (dropped), after it for any held fragment its arrival frees
    /// (a first fragment's). `lookup` finds a flow by its reply-direction 5-tuple.
    pub fn route(
        &mut self,
        packet: &[u8],
        now_ns: u64,
        mut lookup: impl FnMut(&FiveTuple) -> Option<(ReturnPath, u64)>,
        mut out: impl FnMut(&[u8], Verdict),
    ) {
        let mut freed = ArrayVec::<Vec<u8>, HOLD>::new();
        while self.fragments.expire(now_ns, &mut freed) > 0 {
            for f in freed.drain(..) {
                out(&f, Verdict::Drop(DropReason::ReplyFragmentOrphan));
            }
        }
        let r = match reply(packet) {
            Ok(r) => r,
            Err(reason) => return out(packet, Verdict::Drop(reason)),
        };
        let send = |found: Option<(ReturnPath, u64)>, carried, none| match found {
            Some((path, age)) => Verdict::Send { path, age, carried },
            None => Verdict::Drop(none),
        };
        match r.kind {
            ReplyKind::Whole(t) => out(r.packet, send(lookup(&t), Carried::Packet, DropReason::NoFlow)),
            ReplyKind::IcmpError(t) => {
                out(r.packet, send(lookup(&t), Carried::IcmpError, DropReason::IcmpNoFlow))
            }
            ReplyKind::First(t, d) => {
                let key = d.key();
                self.fragments.learn(&key, Ports { src: t.src_port, dst: t.dst_port }, now_ns);
                let v = send(lookup(&t), Carried::Fragment, DropReason::NoFlow);
                out(r.packet, v);
                while self.fragments.release(&key, now_ns, &mut freed) > 0 {
                    for f in freed.drain(..) {
                        out(&f, v);
                    }
                }
            }
            ReplyKind::Later(d) => {
                let key = d.key();
                if let Some(ports) = self.fragments.lookup(&key, now_ns) {
                    let t = d.tuple(ports);
                    return out(r.packet, send(lookup(&t), Carried::Fragment, DropReason::NoFlow));
                }
                match self.fragments.hold(&key, r.packet.to_vec(), now_ns) {
                    Ok(()) => out(r.packet, Verdict::Held),
                    Err(f) => out(&f, Verdict::Drop(DropReason::ReplyFragmentOrphan)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowMemory, Limits};
    use crate::testpkt;
    use crate::tunnel::Encap;
    use sluice_dataplane::wire::ipv4;
    use std::net::{IpAddr, Ipv4Addr};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const VM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const S: u64 = 1_000_000_000;
    const PATH: ReturnPath =
        ReturnPath { appliance: IpAddr::V4(APPLIANCE), encap: Encap::Gre { key: Some(100) } };

    /// A flow memory that knows CLIENT:40000 -> VM:53 over UDP, arrived on TUN 0 at 0 s.
    fn flows() -> FlowMemory {
        let mut m = FlowMemory::new(300, Limits { per_appliance: 10, total: 10 });
        let forward = FiveTuple {
            src: CLIENT.into(),
            src_port: 40000,
            dst: VM.into(),
            dst_port: 53,
            protocol: ipv4::PROTO_UDP,
        };
        m.remember(0, &forward, PATH, 0);
        m
    }

    /// Routes `packets` in order at `now_ns` each; returns (bytes, verdict) of every call of `out`.
    fn run(r: &mut Replies, m: &mut FlowMemory, packets: &[(&[u8], u64)]) -> Vec<(Vec<u8>, Verdict)> {
        let mut got = Vec::new();
        for (p, now_ns) in packets {
            let now = now_ns / S;
            r.route(p, *now_ns, |t| m.lookup_aged(0, t, now), |b, v| got.push((b.to_vec(), v)));
        }
        got
    }

    fn sent(carried: Carried) -> Verdict {
        sent_aged(carried, 0)
    }

    fn sent_aged(carried: Carried, age: u64) -> Verdict {
        Verdict::Send { path: PATH, age, carried }
    }

    /// VM:53 -> CLIENT:`port`, 4000 bytes of UDP payload: three fragments at MTU 1500.
    fn big_reply(port: u16, ident: u16) -> Vec<Vec<u8>> {
        let f = testpkt::fragments(&testpkt::udp((VM, 53), (CLIENT, port), 4000, ident, false), 1500);
        assert_eq!(f.len(), 3);
        f
    }

    #[test]
    fn a_whole_reply_and_an_icmp_error_go_by_their_flow() {
        let (mut r, mut m) = (Replies::new(7), flows());
        let answer = testpkt::udp((VM, 53), (CLIENT, 40000), 10, 1, true);
        let query = testpkt::udp((CLIENT, 40000), (VM, 53), 10, 2, true);
        let unreachable = testpkt::icmp_error(VM, CLIENT, 3, 3, [0; 4], &query);
        let got = run(&mut r, &mut m, &[(&answer, 0), (&unreachable, 0)]);
        assert_eq!(got, [(answer, sent(Carried::Packet)), (unreachable, sent(Carried::IcmpError))]);
    }

    #[test]
    fn an_icmp_error_about_an_unknown_flow_or_no_error_is_dropped() {
        let (mut r, mut m) = (Replies::new(7), flows());
        let other = testpkt::udp((CLIENT, 40001), (VM, 53), 10, 2, true);
        let unknown = testpkt::icmp_error(VM, CLIENT, 3, 3, [0; 4], &other);
        // Quoting the flow's reply direction (VM -> CLIENT) is not the flow either.
        let reply = testpkt::udp((VM, 53), (CLIENT, 40000), 10, 2, true);
        let backwards = testpkt::icmp_error(VM, CLIENT, 3, 3, [0; 4], &reply);
        let got = run(&mut r, &mut m, &[(&unknown, 0), (&backwards, 0)]);
        let verdicts: Vec<_> = got.iter().map(|(_, v)| *v).collect();
        assert_eq!(verdicts, [Verdict::Drop(DropReason::IcmpNoFlow); 2]);
    }

    #[test]
    fn every_fragment_of_a_reply_goes_where_the_first_goes() {
        let (mut r, mut m) = (Replies::new(7), flows());
        let f = big_reply(40000, 0x1111);
        let got = run(&mut r, &mut m, &[(&f[0], S), (&f[1], S), (&f[2], S + 1)]);
        let want: Vec<_> = f.iter().map(|b| (b.clone(), sent_aged(Carried::Fragment, 1))).collect();
        assert_eq!(got, want);
        assert_eq!(r.held(), 0);
        // Fragments of a reply of no flow: none goes anywhere.
        let stray = big_reply(40009, 0x2222);
        let got = run(&mut r, &mut m, &[(&stray[0], S), (&stray[1], S), (&stray[2], S)]);
        assert!(got.iter().all(|(_, v)| *v == Verdict::Drop(DropReason::NoFlow)), "{got:?}");
    }

    #[test]
    fn a_later_fragment_before_its_first_is_held_then_sent_after_it() {
        let (mut r, mut m) = (Replies::new(7), flows());
        let f = big_reply(40000, 0x3333);
        let got = run(&mut r, &mut m, &[(&f[2], 0), (&f[1], 0)]);
        assert_eq!(got, [(f[2].clone(), Verdict::Held), (f[1].clone(), Verdict::Held)]);
        assert_eq!(r.held(), 2);
        let got = run(&mut r, &mut m, &[(&f[0], 1)]);
        let order: Vec<_> = got.iter().map(|(b, v)| (b.clone(), *v)).collect();
        assert_eq!(
            order,
            [f[0].clone(), f[2].clone(), f[1].clone()].map(|b| (b, sent(Carried::Fragment))),
            "the first, then the held ones in the order they came"
        );
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_later_fragment_whose_first_never_comes_is_dropped_in_the_end() {
        let (mut r, mut m) = (Replies::with_bounds(64, 2 * S, 2, 7), flows());
        let (a, b, c) = (big_reply(40000, 1), big_reply(40000, 2), big_reply(40000, 3));
        let got = run(&mut r, &mut m, &[(&a[1], 0), (&b[1], 0), (&c[1], 0)]);
        let orphan = Verdict::Drop(DropReason::ReplyFragmentOrphan);
        assert_eq!(
            got,
            [(a[1].clone(), Verdict::Held), (b[1].clone(), Verdict::Held), (c[1].clone(), orphan)]
        );
        // 2 s later, whatever comes next: the held ones are given up first.
        let answer = testpkt::udp((VM, 53), (CLIENT, 40000), 10, 9, true);
        let got = run(&mut r, &mut m, &[(&answer, 2 * S)]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[..2].iter().filter(|(_, v)| *v == orphan).count(), 2);
        assert_eq!(got[2], (answer, sent_aged(Carried::Packet, 2)));
        assert_eq!(r.held(), 0);
        // A's first fragment now: learned afresh, sent; its later ones go too.
        let got = run(&mut r, &mut m, &[(&a[0], 2 * S), (&a[2], 2 * S)]);
        assert!(got.iter().all(|(_, v)| matches!(v, Verdict::Send { .. })), "{got:?}");
    }

    #[test]
    fn what_reply_refuses_is_dropped_with_its_reason() {
        let (mut r, mut m) = (Replies::new(7), flows());
        let got = run(&mut r, &mut m, &[(&[0x70; 40], 0), (&[], 0)]);
        let verdicts: Vec<_> = got.iter().map(|(_, v)| *v).collect();
        assert_eq!(
            verdicts,
            [Verdict::Drop(DropReason::ReplyNotIp), Verdict::Drop(DropReason::ReplyMalformed)]
        );
    }

    proptest::proptest! {
        /// Arbitrary packets, and fragments with arbitrary offsets, flags and idents: no panic,
        /// exactly one verdict per packet (plus held ones given back), the hold stays bounded,
        /// and every fragment held comes back once.
        #[test]
        fn never_panics_and_stays_bounded(
            packets in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0u16..8, 0u16..4, proptest::bool::ANY, 0u64..3),
                0..80,
            ),
        ) {
            let (mut r, mut m) = (Replies::with_bounds(8, 2 * S, 4, 7), flows());
            let (mut now, mut held, mut back) = (0u64, 0usize, 0usize);
            for (bytes, offset, ident, more, dt) in packets {
                now += dt * S / 2;
                let mut p = testpkt::udp((VM, 53), (CLIENT, 40000), 40, ident, false);
                let mut view = sluice_dataplane::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap();
                view.set_flags_frag(offset | if more { ipv4::FLAG_MF } else { 0 });
                view.fill_checksum();
                for packet in [&p[..], &bytes[..]] {
                    let mut calls = 0;
                    r.route(packet, now, |t| m.lookup_aged(0, t, now / S), |_, v| {
                        calls += 1;
                        if v == Verdict::Held {
                            held += 1;
                        }
                    });
                    proptest::prop_assert!(calls >= 1);
                    back += calls - 1;
                    proptest::prop_assert!(r.held() <= 4);
                }
            }
            proptest::prop_assert!(back <= held);
        }
    }
}
