//! Sessions through the worker: established flows keep their backend whatever happens to the
//! backend set; a backend that leaves is handled by the service's policy; sessions the control
//! thread installs are followed; a full table falls back to Maglev; expiry and reuse.

use arc_swap::ArcSwap;
use sluice_dataplane::flow::{Addr, FlowKey, SELECT_SEED};
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::session::{self, Session, SessionKey, SessionTable, TcpState, Timeouts};
use sluice_dataplane::snapshot::*;
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::testkit::frame::{tcp, Packet};
use sluice_dataplane::testkit::{self, client, host, hosts, spec, vip, EXT_MAC, ROUTER_MAC};
use sluice_dataplane::wire::tcp::{ACK, FIN, PSH, RST, SYN};
use sluice_dataplane::wire::{Ipv4Packet, TcpPacket, TcpRepr};
use sluice_dataplane::worker::Worker;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const VIP: Ipv4Addr = vip(1);

fn backend_addr(i: u8) -> Ipv4Addr {
    host(10 + i)
}

/// A snapshot with one service whose backends are (stable id, weight); ids double as the
/// last octet offset of the address.
fn snapshot(
    generation: u64,
    backends: &[(u32, u32)],
    on_removed: OnRemoved,
    scheduler: Scheduler,
) -> Snapshot {
    snapshot_persist(generation, backends, on_removed, scheduler, 0)
}

fn snapshot_persist(
    generation: u64,
    backends: &[(u32, u32)],
    on_removed: OnRemoved,
    scheduler: Scheduler,
    persistence: u32,
) -> Snapshot {
    Snapshot::build(&spec(generation, backends, on_removed, scheduler, persistence), None).unwrap()
}

fn spec(
    generation: u64,
    backends: &[(u32, u32)],
    on_removed: OnRemoved,
    scheduler: Scheduler,
    persistence: u32,
) -> SnapshotSpec {
    let mut svc = spec::dsr_service(
        "web",
        VIP,
        80,
        Protocol::Tcp,
        backends
            .iter()
            .map(|&(id, w)| BackendSpec { id: Some(id), ..spec::backend(backend_addr(id as u8), w) })
            .collect(),
    );
    svc.id = Some(3);
    svc.on_backend_removed = on_removed;
    svc.scheduler = scheduler;
    svc.persistence = persistence;
    let mut udp = svc.clone();
    udp.id = Some(4);
    udp.protocol = Protocol::Udp;
    udp.name = "dns".into();
    for b in udp.backends.iter_mut() {
        b.id = b.id.map(|i| i + 100);
    }
    let ports = vec![spec::ext_port(), spec::int_port(hosts(10..18))];
    SnapshotSpec { generation, ..spec::snapshot_spec(ports, vec![svc, udp]) }
}

/// An Ethernet/IPv4/TCP (or UDP when `flags` is None) packet from client `c`:`port` to the
/// VIP, with `data` as payload and valid checksums (TCP: seq `seq`, ack 7, window 1000; UDP:
/// a zero checksum).
fn packet(c: u32, port: u16, flags: Option<u8>, seq: u32, data: &[u8]) -> Vec<u8> {
    let p = Packet { l4_checksum: flags.is_some(), ..Packet::new(client(c), VIP) };
    match flags {
        Some(f) => p.tcp(&TcpRepr { seq, ack: 7, window: 1000, ..tcp((port, 80), f) }, data),
        None => p.udp(port, 80, data),
    }
}

struct Rig {
    config: Arc<ArcSwap<Snapshot>>,
    table: Arc<SessionTable>,
    stats: Arc<WorkerStats>,
    worker: Worker<MemIo>,
    now: u64,
}

impl Rig {
    fn new(snap: Snapshot, timeouts: Timeouts) -> Rig {
        let config = Arc::new(ArcSwap::from_pointee(snap));
        let table = Arc::new(SessionTable::new(100_000, timeouts, 77));
        let stats = Arc::new(WorkerStats::default());
        let worker = Worker::new(
            (1, 2),
            MemIo::new(2),
            2,
            Arc::clone(&config),
            (Arc::clone(&table), Arc::new(testkit::synproxy())),
            Arc::clone(&stats),
        );
        Rig { config, table, stats, worker, now: 1_000_000_000 }
    }

    /// Sends frames; returns what came out of each port.
    fn send(&mut self, frames: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        for f in frames {
            self.worker.io().rx[0].push_back(VecFrame::new(&f));
        }
        while !self.worker.io().rx[0].is_empty() {
            self.now += 1_000_000;
            self.worker.poll(self.now);
        }
        let io = self.worker.io();
        let ext = io.tx[0].drain(..).map(|f| f.data().to_vec()).collect();
        let int = io.tx[1].drain(..).map(|f| f.data().to_vec()).collect();
        (ext, int)
    }

    /// The backend (address) each tunneled packet went to, in order.
    fn backends_of(&mut self, frames: Vec<Vec<u8>>) -> Vec<Ipv4Addr> {
        let n = frames.len();
        let (_, int) = self.send(frames);
        assert_eq!(int.len(), n, "every packet tunneled");
        int.iter().map(|f| Ipv4Packet::new_checked(&f[14..]).unwrap().dst()).collect()
    }
}

fn flow_key(c: u32, port: u16) -> FlowKey {
    FlowKey { src: Addr::v4(client(c)), dst: Addr::v4(VIP), src_port: port, dst_port: 80, protocol: 6 }
}

#[test]
fn established_flows_keep_their_backend_through_backend_changes() {
    let a = [(0, 1), (1, 1), (2, 1), (3, 1)];
    let mut rig = Rig::new(snapshot(1, &a, OnRemoved::Remap, Scheduler::Maglev), Timeouts::default());
    let flows: Vec<(u32, u16)> = (0..2000).map(|i| (i / 10, 1000 + (i % 10) as u16)).collect();
    let first = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    assert_eq!(rig.stats.sessions_created.get(), 2000);

    // The backend set changes: backend 4 is added, 1 drained (weight 0), 2's weight tripled.
    let b = [(0, 1), (1, 0), (2, 3), (3, 1), (4, 1)];
    rig.config.store(Arc::new(snapshot(2, &b, OnRemoved::Remap, Scheduler::Maglev)));
    let again =
        rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK | PSH), 2, b"data")).collect());
    assert_eq!(first, again, "every established flow stayed on its backend");
    assert_eq!(rig.stats.session_hits.get(), 2000);

    // New flows follow the new table: Maglev's choice under b, so some reach 4, none 1.
    let snap = rig.config.load_full();
    let fresh: Vec<(u32, u16)> = (0..2000).map(|i| (500 + i / 10, 2000 + (i % 10) as u16)).collect();
    let got = rig.backends_of(fresh.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    let mut per = HashMap::new();
    for (&(c, p), addr) in fresh.iter().zip(&got) {
        let want = snap.services[0].select_flow(&flow_key(c, p)).unwrap();
        assert_eq!(*addr, snap.services[0].backends[usize::from(want)].address);
        *per.entry(*addr).or_insert(0) += 1;
    }
    assert_eq!(per.get(&backend_addr(1)), None, "the drained backend takes no new flow");
    assert!(per[&backend_addr(4)] > 200, "the added backend takes new flows: {per:?}");
    assert!(per[&backend_addr(2)] > per[&backend_addr(0)] * 2, "weight 3 vs 1: {per:?}");
}

#[test]
fn removed_backend_remap_moves_sessions_to_the_new_choice() {
    let mut rig =
        Rig::new(snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev), Timeouts::default());
    let flows: Vec<(u32, u16)> = (0..400).map(|i| (i, 5000)).collect();
    let first = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    let on_1 = first.iter().filter(|a| **a == backend_addr(1)).count();
    assert!(on_1 > 100);
    rig.config.store(Arc::new(snapshot(2, &[(0, 1), (2, 1)], OnRemoved::Remap, Scheduler::Maglev)));
    let again = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK), 2, b"")).collect());
    for (a, b) in first.iter().zip(&again) {
        if *a == backend_addr(1) {
            assert_ne!(*b, backend_addr(1));
        } else {
            assert_eq!(a, b, "sessions on surviving backends stay");
        }
    }
    assert_eq!(rig.stats.sessions_remapped.get(), on_1 as u64);
    // The remapped sessions hold their new backend from now on.
    let third = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK), 3, b"")).collect());
    assert_eq!(again, third);
}

#[test]
fn a_backend_marked_down_by_health_checks_loses_its_sessions_to_the_policy_and_comes_back() {
    let mut rig =
        Rig::new(snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev), Timeouts::default());
    let flows: Vec<(u32, u16)> = (0..400).map(|i| (i, 6000)).collect();
    let first = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    let on_1 = first.iter().filter(|a| **a == backend_addr(1)).count();
    assert!(on_1 > 100);
    // Backend 1 stays in the config but is down.
    let mut down = spec(2, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev, 0);
    down.services[0].backends[1].down = true;
    rig.config.store(Arc::new(Snapshot::build(&down, Some(&rig.config.load())).unwrap()));
    let again = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK), 2, b"")).collect());
    assert!(again.iter().all(|a| *a == backend_addr(0)), "nothing goes to a down backend");
    assert_eq!(rig.stats.sessions_remapped.get(), on_1 as u64);
    let fresh: Vec<(u32, u16)> = (0..100).map(|i| (i, 7000)).collect();
    let new = rig.backends_of(fresh.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    assert!(new.iter().all(|a| *a == backend_addr(0)));
    // Up again: new flows reach it again; remapped sessions stay where they went.
    rig.config.store(Arc::new(snapshot(3, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev)));
    let later: Vec<(u32, u16)> = (0..400).map(|i| (i, 8000)).collect();
    let back = rig.backends_of(later.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    assert!(back.iter().filter(|a| **a == backend_addr(1)).count() > 100);
    let still = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK), 3, b"")).collect());
    assert_eq!(still, again);
}

#[test]
fn removed_backend_reset_sends_rst_to_tcp_clients_and_drops_udp() {
    let mut rig = Rig::new(snapshot(1, &[(0, 1)], OnRemoved::Reset, Scheduler::Maglev), Timeouts::default());
    rig.backends_of(vec![packet(1, 4000, Some(SYN), 100, b""), packet(2, 4001, None, 0, b"q")]);
    rig.config.store(Arc::new(snapshot(2, &[(5, 1)], OnRemoved::Reset, Scheduler::Maglev)));

    // A data segment (ACK set, seq 101, ack 7): the RST carries seq = 7, no ACK.
    let (ext, int) = rig.send(vec![packet(1, 4000, Some(ACK | PSH), 101, b"hello")]);
    assert!(int.is_empty());
    assert_eq!(ext.len(), 1);
    let f = &ext[0];
    assert_eq!(&f[0..6], &ROUTER_MAC, "back to the sender's MAC");
    assert_eq!(&f[6..12], &EXT_MAC);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src(), ip.dst(), ip.total_len()), (VIP, client(1), 40));
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.flags()), (80, 4000, 7, RST));
    assert!(t.verify_checksum_v4(ip.src(), ip.dst()));
    assert_eq!(rig.stats.resets_sent.get(), 1);

    // The session is gone: the next segment starts a new one on the new backend.
    assert_eq!(rig.backends_of(vec![packet(1, 4000, Some(ACK), 106, b"")]), [backend_addr(5)]);

    // UDP of a session on a removed backend: dropped and counted.
    let udp_flow = SessionKey::flow(Addr::v4(client(2)), 4001, 4);
    assert!(rig.table.lookup(&udp_flow, rig.table.hash(&udp_flow)).is_some());
    let (ext, int) = rig.send(vec![packet(2, 4001, None, 0, b"q")]);
    assert!(ext.is_empty() && int.is_empty());
    assert_eq!(rig.stats.dropped(DropReason::BackendRemoved), 1);
}

#[test]
fn a_syn_without_ack_gets_rst_ack_acknowledging_it() {
    let mut rig = Rig::new(snapshot(1, &[(0, 1)], OnRemoved::Reset, Scheduler::Maglev), Timeouts::default());
    rig.backends_of(vec![packet(1, 4000, Some(SYN), 500, b"")]);
    rig.config.store(Arc::new(snapshot(2, &[(5, 1)], OnRemoved::Reset, Scheduler::Maglev)));
    // A retransmitted SYN (seq 500): RST|ACK with ack 501.
    let (ext, _) = rig.send(vec![packet(1, 4000, Some(SYN), 500, b"")]);
    let ip = Ipv4Packet::new_checked(&ext[0][14..]).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((t.flags(), t.seq(), t.ack()), (RST | ACK, 0, 501));
}

#[test]
fn sessions_installed_by_the_control_thread_are_followed() {
    let mut rig = Rig::new(
        snapshot(1, &[(0, 1), (1, 1), (2, 1)], OnRemoved::Remap, Scheduler::Maglev),
        Timeouts::default(),
    );
    let snap = rig.config.load_full();
    // For 300 flows, install a session naming a backend other than Maglev's choice, from another
    // thread while this worker keeps forwarding unrelated traffic.
    let flows: Vec<(u32, u16)> = (0..300).map(|i| (2000 + i, 7000)).collect();
    let want: Vec<u32> = flows
        .iter()
        .map(|&(c, p)| {
            let maglev = snap.services[0].backends
                [usize::from(snap.services[0].select_flow(&flow_key(c, p)).unwrap())]
            .id;
            (maglev + 1) % 3
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let control = {
        let (table, done, flows, want) =
            (Arc::clone(&rig.table), Arc::clone(&done), flows.clone(), want.clone());
        std::thread::spawn(move || {
            for (&(c, p), &b) in flows.iter().zip(&want) {
                let key = SessionKey::flow(Addr::v4(client(c)), p, 3);
                let s =
                    Session { flags: session::flags::SYNCED, ..Session::new(b, TcpState::Established, 0) };
                assert!(matches!(table.insert(&key, table.hash(&key), &s), session::Insert::Inserted(_)));
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut i = 0u32;
    while !done.load(Ordering::Acquire) {
        rig.send(vec![packet(10_000 + i % 1000, 9000, Some(ACK), 1, b"")]);
        i += 1;
    }
    control.join().unwrap();
    let got = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(ACK), 5, b"")).collect());
    for (addr, b) in got.iter().zip(&want) {
        assert_eq!(*addr, backend_addr(*b as u8), "forwarded by the installed session, not by Maglev");
    }
}

#[test]
fn a_full_table_falls_back_to_maglev_and_says_so() {
    let mut rig =
        Rig::new(snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev), Timeouts::default());
    rig.table.set_full(true);
    let flows: Vec<(u32, u16)> = (0..100).map(|i| (i, 100)).collect();
    let got = rig.backends_of(flows.iter().map(|&(c, p)| packet(c, p, Some(SYN), 1, b"")).collect());
    let snap = rig.config.load_full();
    for (&(c, p), addr) in flows.iter().zip(&got) {
        let want = snap.services[0].select_flow(&flow_key(c, p)).unwrap();
        assert_eq!(*addr, snap.services[0].backends[usize::from(want)].address);
    }
    assert_eq!(rig.stats.sessions_fallback.get(), 100);
    assert_eq!(rig.stats.sessions_created.get(), 0);
    assert!(rig.table.is_empty());
}

#[test]
fn a_new_syn_on_a_closed_connection_is_scheduled_again() {
    // Round robin makes a re-scheduling visible: the next turn is another backend.
    let mut rig = Rig::new(
        snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::RoundRobin),
        Timeouts::default(),
    );
    let first = rig.backends_of(vec![packet(1, 4000, Some(SYN), 1, b"")]);
    let same = rig.backends_of(vec![packet(1, 4000, Some(SYN), 1, b""), packet(1, 4000, Some(ACK), 2, b"")]);
    assert_eq!(same, [first[0], first[0]], "a retransmitted SYN and the ACK stay");
    rig.backends_of(vec![packet(1, 4000, Some(FIN | ACK), 2, b"")]);
    let next = rig.backends_of(vec![packet(1, 4000, Some(SYN), 9000, b"")]);
    assert_ne!(next[0], first[0], "a new connection after FIN is scheduled anew");
}

#[test]
fn idle_sessions_expire_by_state() {
    let to = Timeouts { tcp_syn: 2, tcp_established: 30, tcp_closing: 2, tcp_closed: 1, udp: 5 };
    let mut rig = Rig::new(snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev), to);
    rig.backends_of(vec![
        packet(1, 1, Some(SYN), 1, b""),
        packet(2, 1, Some(SYN), 1, b""),
        packet(2, 1, Some(ACK), 2, b""),
        packet(3, 1, None, 0, b"x"),
    ]);
    assert_eq!(rig.table.len(), 3);
    let now = session::tick(rig.now);
    let mut gone = Vec::new();
    rig.table.sweep(now + session::ticks(3), 0, rig.table.slot_count(), |k, s| gone.push((k.addr, s.state)));
    assert_eq!(gone, [(Addr::v4(client(1)), TcpState::SynSent)], "only the half-open one");
    rig.table.sweep(now + session::ticks(6), 0, rig.table.slot_count(), |_, _| {});
    assert_eq!(rig.table.len(), 1, "UDP after 5 s; established stays");
}

#[test]
fn ip_hash_sends_a_client_to_one_backend_and_persistence_keeps_it_there() {
    let a = [(0, 1), (1, 1), (2, 1)];
    let b = [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1)];
    // Clients whose ip_hash choice differs between a and b.
    let sa = snapshot(1, &a, OnRemoved::Remap, Scheduler::IpHash);
    let sb = snapshot(2, &b, OnRemoved::Remap, Scheduler::IpHash);
    let id_of = |s: &Snapshot, c: u32| {
        let f = flow_key(c, 1);
        s.services[0].backends[usize::from(s.services[0].maglev_choice(f.src_hash(SELECT_SEED)).unwrap())].id
    };
    let movers: Vec<u32> = (0..200).filter(|&c| id_of(&sa, c) != id_of(&sb, c)).take(20).collect();
    assert_eq!(movers.len(), 20);

    for persistence in [0, 60] {
        let mut rig = Rig::new(
            snapshot_persist(1, &a, OnRemoved::Remap, Scheduler::IpHash, persistence),
            Timeouts::default(),
        );
        // One client, many ports: one backend.
        let got = rig.backends_of((0..30).map(|p| packet(movers[0], 1000 + p, Some(SYN), 1, b"")).collect());
        assert!(got.iter().all(|x| *x == got[0]), "one client, one backend");
        let before = rig.backends_of(movers.iter().map(|&c| packet(c, 2000, Some(SYN), 1, b"")).collect());
        rig.config.store(Arc::new(snapshot_persist(2, &b, OnRemoved::Remap, Scheduler::IpHash, persistence)));
        // New connections (new ports) of the same clients.
        let after = rig.backends_of(movers.iter().map(|&c| packet(c, 3000, Some(SYN), 1, b"")).collect());
        if persistence > 0 {
            assert_eq!(before, after, "persistent clients keep their backend");
        } else {
            for (&c, addr) in movers.iter().zip(&after) {
                assert_eq!(*addr, backend_addr(id_of(&sb, c) as u8), "without persistence: the new choice");
            }
        }
    }
}

#[test]
fn packets_and_bytes_are_counted_per_service_and_backend_id() {
    let mut rig =
        Rig::new(snapshot(1, &[(0, 1), (1, 1)], OnRemoved::Remap, Scheduler::Maglev), Timeouts::default());
    let (_, int) = rig.send((0..50).map(|c| packet(c, 9000, Some(SYN), 1, b"")).collect());
    assert_eq!(int.len(), 50);
    let to = |a: Ipv4Addr| {
        int.iter().filter(|f| Ipv4Packet::new_checked(&f[14..]).unwrap().dst() == a).count() as u64
    };
    let bytes: u64 = int.iter().map(|f| f.len() as u64).sum();
    // Service id 3 (see `spec`); backend ids 0 and 1 at backend_addr(0) and backend_addr(1).
    assert_eq!(rig.stats.per_service[3].packets.get(), 50);
    assert_eq!(rig.stats.per_service[3].bytes.get(), bytes);
    assert_eq!(rig.stats.per_backend[0].packets.get(), to(backend_addr(0)));
    assert_eq!(rig.stats.per_backend[1].packets.get(), to(backend_addr(1)));
    assert_eq!(rig.table.created(0) + rig.table.created(1), 50);
}
