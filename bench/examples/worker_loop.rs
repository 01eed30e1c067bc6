//! Runs the worker over in-memory bursts of established-flow packets, for profilers:
//! `valgrind --tool=callgrind target/release/examples/worker_loop 200000`
//! (instruction counts per packet, without DPDK).

use arc_swap::ArcSwap;
use sluice_bench::{FlowWalk, Template, Traffic};
use sluice_dataplane::io::{MemIo, VecFrame};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::*;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::worker::Worker;
use std::net::Ipv4Addr;
use std::sync::Arc;

fn main() {
    let packets: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let neighbors: Vec<(Ipv4Addr, [u8; 6])> =
        (0..4).map(|i| (Ipv4Addr::new(198, 19, 0, 10 + i), [2, 0, 0, 1, 0, i])).collect();
    let spec = SnapshotSpec {
        generation: 1,
        ports: vec![
            PortSpec {
                name: "ext".into(),
                mac: [2, 0, 0, 0, 0, 1],
                address: [198, 18, 0, 1].into(),
                prefix_len: 24,
                mtu: 1500,
                vlan: None,
                gateway: None,
                neighbors: vec![],
            },
            PortSpec {
                name: "int".into(),
                mac: [2, 0, 0, 0, 1, 1],
                address: [198, 19, 0, 1].into(),
                prefix_len: 24,
                mtu: 1500,
                vlan: None,
                gateway: None,
                neighbors: neighbors.clone(),
            },
        ],
        tunnel_source: None,
        services: vec![ServiceSpec::dsr(
            "web",
            [198, 18, 10, 1].into(),
            80,
            Protocol::Tcp,
            neighbors.iter().map(|&(a, _)| BackendSpec::new(a, 1)).collect(),
        )],
    };
    let config = Arc::new(ArcSwap::from_pointee(Snapshot::build(&spec, None).unwrap()));
    let stats = Arc::new(WorkerStats::default());
    let mut w = Worker::new(
        (1, 2),
        MemIo::new(2),
        2,
        config,
        Arc::new(SessionTable::new(1 << 21, Timeouts::default(), 1)),
        Arc::clone(&stats),
    );
    let t =
        Template::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], Ipv4Addr::new(198, 18, 10, 1), 80, Some(0x10));
    let mut walk = FlowWalk::new(Traffic::Established { flows: 1_000_000 });
    let mut b = [0u8; 60];
    let mut done = 0;
    let mut spare: Vec<VecFrame> = (0..32).map(|_| VecFrame::new(&b)).collect();
    while done < packets {
        for mut f in spare.drain(..) {
            t.fill(&mut walk, &mut b);
            f.reset(&b);
            w.io().rx[0].push_back(f);
        }
        done += w.poll(1);
        spare.append(&mut w.io().tx[1]);
    }
    println!("tunneled {}", stats.tunneled.get());
}
