//! Resource isolation through the worker: per-service limits hold a flood to its rate, refuse
//! new connections before any state is made, leave other services alone, and `on_overload`
//! limits apply only while the control thread says the appliance is overloaded.

use arc_swap::ArcSwap;
use sluice_dataplane::io::{MemIo, VecFrame};
use sluice_dataplane::limit::{dropped_index, offered_index, Isolation, Limit, Limits, Rate, Which};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::{Protocol, Snapshot};
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit::frame::{self, Packet};
use sluice_dataplane::testkit::{self, host, spec, vip};
use sluice_dataplane::wire::tcp;
use sluice_dataplane::worker::Worker;
use std::net::Ipv4Addr;
use std::sync::Arc;

const FLOODED: Ipv4Addr = vip(1);
const OTHER: Ipv4Addr = vip(2);
/// Service ids: the flooded service's TCP and UDP sides, and the other service.
const TCP_ID: u16 = 5;
const UDP_ID: u16 = 6;
const OTHER_ID: u16 = 7;
const MS: u64 = 1_000_000;

fn limit(value: u64) -> Option<Limit> {
    Some(Limit { value, on_overload: false })
}

/// The flooded VIP (TCP and UDP port 80, each with `limits`) and another VIP with none.
fn snapshot(limits: Limits) -> Snapshot {
    let backend = |i: u8| spec::backend(host(10 + i), 1);
    let mut tcp = spec::dsr_service("flooded", FLOODED, 80, Protocol::Tcp, vec![backend(1), backend(2)]);
    tcp.id = Some(TCP_ID);
    tcp.limits = limits;
    let mut udp = spec::dsr_service("flooded-udp", FLOODED, 80, Protocol::Udp, vec![backend(1)]);
    udp.id = Some(UDP_ID);
    udp.limits = limits;
    let mut other = spec::dsr_service("other", OTHER, 80, Protocol::Udp, vec![backend(3)]);
    other.id = Some(OTHER_ID);
    // Hosts 198.19.0.11-13, here with MACs 02:00:00:00:01:01-03.
    let neighbors = (1..4).map(|i| (host(10 + i), [2, 0, 0, 0, 1, i]));
    spec::snapshot(vec![spec::ext_port(), spec::int_port(neighbors)], vec![tcp, udp, other])
}

/// A packet from client `c` (198.18.64.0 + `c`) to `vip`:80, from MAC 02:00:00:00:00:09: TCP
/// with `flags` (seq, ack and window 0), or UDP with `payload` bytes of 0xab; valid IPv4
/// checksum, zero TCP or UDP checksum.
fn packet(c: u32, vip: Ipv4Addr, flags: Option<u8>, payload: usize) -> Vec<u8> {
    let src = Ipv4Addr::from(0xc612_4000 + c);
    let p = Packet { src_mac: [2, 0, 0, 0, 0, 9], l4_checksum: false, ..Packet::new(src, vip) };
    let sport = 1024 + (c % 60000) as u16;
    match flags {
        Some(f) => p.tcp(&frame::tcp((sport, 80), f), b""),
        None => p.udp(sport, 80, &vec![0xab; payload]),
    }
}

struct Rig {
    worker: Worker<MemIo>,
    stats: Arc<WorkerStats>,
    table: Arc<SessionTable>,
    isolation: Arc<Isolation>,
    now: u64,
}

impl Rig {
    fn new(limits: Limits) -> Rig {
        let table = Arc::new(SessionTable::new(100_000, Timeouts::default(), 3));
        let stats = Arc::new(WorkerStats::default());
        let isolation = Arc::new(Isolation::new(1));
        let mut worker = Worker::new(
            (0, 1),
            MemIo::new(2),
            2,
            Arc::new(ArcSwap::from_pointee(snapshot(limits))),
            (Arc::clone(&table), Arc::new(testkit::synproxy())),
            Arc::clone(&stats),
        );
        worker.set_isolation(Arc::clone(&isolation));
        Rig { worker, stats, table, isolation, now: 10_000 * MS }
    }

    /// One poll, 1 ms after the last, of `frames`; the number tunneled.
    fn poll(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) -> usize {
        for f in frames {
            self.worker.io().rx[0].push_back(VecFrame::new(&f));
        }
        self.now += MS;
        while !self.worker.io().rx[0].is_empty() {
            self.worker.poll(self.now);
        }
        self.worker.io().tx[1].drain(..).count()
    }

    fn limited(&self, id: u16, w: Which) -> u64 {
        self.stats.limits[dropped_index(id, w)].get()
    }
}

#[test]
fn a_udp_flood_is_held_to_its_packet_rate_and_the_other_service_is_untouched() {
    let mut rig = Rig::new(Limits { rates: [limit(1000), None, None], sessions: None });
    // 3 s at 20 000 packets/s to the limited service and 2000/s to the other one.
    let (mut flooded_out, mut total_out) = (0, 0);
    for ms in 0..3000u32 {
        let flood = (0..20).map(|i| packet(ms * 20 + i, FLOODED, None, 64));
        let other = (0..2).map(|i| packet(ms * 2 + i, OTHER, None, 64));
        let before = rig.stats.per_service[usize::from(UDP_ID)].packets.get();
        total_out += rig.poll(flood.chain(other));
        flooded_out += rig.stats.per_service[usize::from(UDP_ID)].packets.get() - before;
    }
    // The rate over 3 s, plus the bucket's first 50 ms.
    assert!((3000..=3051).contains(&flooded_out), "{flooded_out} passed");
    assert_eq!(
        rig.stats.per_service[usize::from(OTHER_ID)].packets.get(),
        6000,
        "the other service lost nothing"
    );
    assert_eq!(total_out as u64, flooded_out + 6000);
    let dropped = 60_000 - flooded_out;
    assert_eq!(rig.stats.dropped(DropReason::LimitPackets), dropped);
    assert_eq!(rig.limited(UDP_ID, Which::Packets), dropped);
    assert_eq!(rig.stats.limits[offered_index(UDP_ID, Rate::Packets)].get(), 60_000);
    assert_eq!(rig.stats.limits[offered_index(OTHER_ID, Rate::Packets)].get(), 0, "no limit, not counted");
}

#[test]
fn a_byte_rate_counts_ip_bytes() {
    // 100 000 bytes/s; 1000-byte IP packets (972 bytes of UDP payload) at 1000/s for 2 s.
    let mut rig = Rig::new(Limits { rates: [None, limit(100_000), None], sessions: None });
    let mut out = 0;
    for ms in 0..2000u32 {
        out += rig.poll([packet(ms, FLOODED, None, 972)]);
    }
    // 200 000 bytes, plus a 5000-byte burst and one packet of debt: 205 or 206 packets.
    assert!((200..=206).contains(&out), "{out}");
    assert_eq!(rig.limited(UDP_ID, Which::Bytes), 2000 - out as u64);
    assert_eq!(rig.stats.limits[offered_index(UDP_ID, Rate::Bytes)].get(), 2000 * 1000);
}

#[test]
fn new_connections_over_the_rate_are_dropped_before_any_state() {
    let mut rig = Rig::new(Limits { rates: [None, None, limit(100)], sessions: None });
    // 5 established clients first: the bucket starts with 50 ms of the rate (5).
    assert_eq!(rig.poll((0..5).map(|c| packet(c, FLOODED, Some(tcp::SYN), 0))), 5);
    // Then 1 s of a SYN flood from new clients at 10 000/s, while the 5 keep sending.
    let mut passed_syns = 0;
    for ms in 0..1000u32 {
        let syns = (0..10).map(|i| packet(1000 + ms * 10 + i, FLOODED, Some(tcp::SYN), 0));
        let before = rig.stats.sessions_created.get();
        let out = rig.poll(syns.chain((0..5).map(|c| packet(c, FLOODED, Some(tcp::ACK), 0))));
        let made = rig.stats.sessions_created.get() - before;
        assert_eq!(out as u64, 5 + made, "every established packet passes");
        passed_syns += made;
    }
    // 100/s over 1 s.
    assert!((98..=102).contains(&passed_syns), "{passed_syns}");
    assert_eq!(rig.table.len() as u64, 5 + passed_syns, "a refused SYN makes no session");
    assert_eq!(rig.stats.dropped(DropReason::LimitConnections), 10_000 - passed_syns);
    assert_eq!(rig.limited(TCP_ID, Which::Connections), 10_000 - passed_syns);
}

#[test]
fn concurrent_sessions_are_capped() {
    let mut rig = Rig::new(Limits { rates: [None, None, None], sessions: limit(25) });
    let out = rig.poll((0..100).map(|c| packet(c, FLOODED, Some(tcp::SYN), 0)));
    assert_eq!(out, 25);
    assert_eq!(rig.table.service_active(TCP_ID), 25);
    assert_eq!(rig.limited(TCP_ID, Which::Sessions), 75);
    // A session that ends makes room for one more.
    rig.poll([packet(0, FLOODED, Some(tcp::RST | tcp::ACK), 0)]);
    rig.table.sweep(u32::MAX / 4, 0, rig.table.slot_count(), |_, _| {});
    let after = rig.table.service_active(TCP_ID);
    assert!(after < 25, "{after}");
    let room = 25 - after as usize;
    assert_eq!(rig.poll((200..300).map(|c| packet(c, FLOODED, Some(tcp::SYN), 0))), room);
}

#[test]
fn on_overload_limits_apply_only_while_overloaded() {
    let on_overload = Some(Limit { value: 100, on_overload: true });
    let mut rig = Rig::new(Limits { rates: [on_overload, None, None], sessions: None });
    let second = |rig: &mut Rig, from: u32| -> usize {
        (0..1000u32).map(|ms| rig.poll((0..2).map(|i| packet(from + ms * 2 + i, FLOODED, None, 64)))).sum()
    };
    assert_eq!(second(&mut rig, 0), 2000, "not overloaded: nothing dropped");
    assert_eq!(rig.limited(UDP_ID, Which::Packets), 0);
    rig.isolation.set_overloaded(true);
    let held = second(&mut rig, 10_000);
    assert!((100..=106).contains(&held), "overloaded: held to 100/s, got {held}");
    rig.isolation.set_overloaded(false);
    assert_eq!(second(&mut rig, 20_000), 2000, "off again: nothing dropped");
    // Demand was counted all along, so shares follow it the moment isolation engages.
    assert_eq!(rig.stats.limits[offered_index(UDP_ID, Rate::Packets)].get(), 6000);
}

#[test]
fn a_worker_spends_only_its_share() {
    let mut rig = Rig::new(Limits { rates: [limit(1000), None, None], sessions: None });
    rig.isolation.set_share(0, UDP_ID, Rate::Packets, 250);
    let out: usize =
        (0..2000u32).map(|ms| rig.poll((0..10).map(|i| packet(ms * 10 + i, FLOODED, None, 64)))).sum();
    // 250/s for 2 s, plus a 50 ms burst of it.
    assert!((500..=513).contains(&out), "{out}");
}
