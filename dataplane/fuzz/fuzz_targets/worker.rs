//! Several frames through `worker::Worker` on the in-memory NIC `io::MemIo`.
//!
//! Input layout:
//! - byte 0, the set-up: bit 0 clear = worker 0 (which also walks the next hops and sends
//!   ARP requests), set = worker 1; bits 1-2 = TX limit per burst (none, 0, 1, 2);
//!   bit 3 = frame allocation fails; bit 4 = republish the snapshot (rebuilt from the current
//!   one, learned MACs carried over) halfway through.
//! - then records: `sel, len_hi, len_lo, frame[len]` (len clamped to what is left and to 2048).
//!   `sel` bits 0-1 = rx port 0..=3 (the worker polls 4 ports; the snapshot has 3, so port 3
//!   exists on the NIC but not in the config); bits 2-5 = advance the clock by that many
//!   100 ms steps first; bit 6 = make the frame's IPv4 (and ICMP) checksum valid; bit 7 = poll
//!   before queueing this frame.
//!
//! After the last record the worker polls until every RX queue is empty. Asserts: no panic;
//! every received frame is counted once; what was sent plus what the TX queue refused equals
//! what the verdicts and the ARP resolver produced; every sent frame is a well-formed Ethernet
//! frame for its port carrying a valid ARP packet or an IPv4 packet whose checksum verifies.

#![no_main]

mod common;

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use sluice_dataplane::io::{Frame, MemIo, VecFrame};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::{DropReason, WorkerStats};
use sluice_dataplane::wire::ethernet::{self, EthernetFrame};
use sluice_dataplane::wire::{ArpPacket, Ipv4Packet};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

const IO_PORTS: u16 = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else { return };
    let config = Arc::new(ArcSwap::from_pointee(common::snapshot()));
    let stats = Arc::new(WorkerStats::default());
    let mut io = MemIo::new(usize::from(IO_PORTS));
    io.tx_limit = [None, Some(0), Some(1), Some(2)][usize::from((setup >> 1) & 3)];
    io.can_alloc = setup & 8 == 0;
    let sessions = Arc::new(SessionTable::new(256, Timeouts::default(), 1));
    let mut w = Worker::new((usize::from(setup & 1), 2), io, IO_PORTS, Arc::clone(&config), (sessions, Arc::new(sluice_dataplane::synproxy::SynProxy::new([1, 2], [[3, 4], [5, 6]]))), Arc::clone(&stats));

    let mut now: u64 = 1;
    let (mut frames, mut bytes, mut received) = (0u64, 0u64, 0u64);
    let mut sent: Vec<(usize, VecFrame)> = Vec::new();
    let half = rest.len() / 2;
    let mut republished = setup & 16 == 0;
    while rest.len() >= 3 {
        let sel = rest[0];
        let len =
            usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3).min(common::MAX_FRAME);
        let mut frame = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        if sel & 0x40 != 0 {
            common::fix_checksums(&mut frame);
        }
        now += u64::from((sel >> 2) & 15) * 100_000_000;
        if sel & 0x80 != 0 {
            received += w.poll(now) as u64;
            drain_tx(&mut w, &mut sent);
        }
        w.io().rx[usize::from(sel & 3)].push_back(VecFrame::new(&frame));
        frames += 1;
        bytes += len as u64;
        if !republished && rest.len() <= half {
            republished = true;
            let next = Snapshot::build(&common::spec(), Some(&config.load())).expect("rebuild");
            config.store(Arc::new(next));
        }
    }
    while w.io().rx.iter().any(|q| !q.is_empty()) {
        now += 1_000;
        received += w.poll(now) as u64;
        drain_tx(&mut w, &mut sent);
    }

    // Every frame received once, and counted.
    assert_eq!(received, frames, "frames queued vs received");
    let rx_packets: u64 = stats.ports.iter().map(|p| p.rx_packets.get()).sum();
    let rx_bytes: u64 = stats.ports.iter().map(|p| p.rx_bytes.get()).sum();
    assert_eq!((rx_packets, rx_bytes), (frames, bytes), "rx counters");

    // Sent + refused by TX = produced by verdicts + ARP requests.
    let tx_packets: u64 = stats.ports.iter().map(|p| p.tx_packets.get()).sum();
    assert_eq!(tx_packets, sent.len() as u64, "tx counter vs frames on the wire");
    let produced = stats.arp_replies.get() + stats.icmp_echo_replies.get() + stats.tunneled.get();
    let tx_full = stats.dropped(DropReason::TxFull);
    assert_eq!(tx_packets + tx_full, produced + stats.arp_requests.get(), "sent + tx_full vs produced");
    let other_drops: u64 =
        DropReason::ALL.iter().filter(|&&r| r != DropReason::TxFull).map(|&r| stats.dropped(r)).sum();
    assert!(
        other_drops + produced <= frames,
        "more verdicts ({other_drops} drops + {produced}) than frames ({frames})"
    );
    if stats.arp_requests.get() > 0 {
        assert!(setup & 8 == 0, "an ARP request sent without a frame to build it in");
    }

    // Every frame on the wire is well formed for its port.
    let snap = config.load();
    for (p, f) in &sent {
        let b = f.data();
        let port = snap.ports.get(*p).unwrap_or_else(|| panic!("sent on port {p}, not in the config"));
        assert!(b.len() <= common::MAX_FRAME + common::MAX_GROWTH, "sent {} bytes", b.len());
        let eth = EthernetFrame::new_checked(b).expect("sent frame has an Ethernet header");
        assert_eq!(eth.vlan(), port.vlan, "sent frame tagged for port {p}");
        assert_eq!(eth.src(), port.mac, "sent frame from port {p}'s MAC");
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => {
                ArpPacket::new_checked(eth.payload()).expect("sent ARP is valid");
            }
            ethernet::ETHERTYPE_IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).expect("sent IPv4 is valid");
                assert!(ip.verify_checksum(), "sent IPv4 checksum does not verify: {}", common::hex(b));
            }
            t => panic!("sent EtherType {t:#06x}"),
        }
    }
});

fn drain_tx(w: &mut Worker<MemIo>, sent: &mut Vec<(usize, VecFrame)>) {
    for (p, q) in w.io().tx.iter_mut().enumerate() {
        sent.extend(q.drain(..).map(|f| (p, f)));
    }
}
