//! `Worker::reset`: a worker reused for another scenario behaves as a new one (the fuzz
//! targets rely on it to keep one worker per process).

use arc_swap::ArcSwap;
use sluice_dataplane::io::MemIo;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::*;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::synproxy::SynProxy;
use sluice_dataplane::worker::Worker;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// One port and a service whose backend has no known MAC: worker 0 asks for it by ARP.
fn snapshot() -> Snapshot {
    let backends = vec![BackendSpec::new(Ipv4Addr::new(198, 19, 0, 99).into(), 1)];
    let svc = ServiceSpec::dsr("s", Ipv4Addr::new(198, 18, 10, 1).into(), 80, Protocol::Tcp, backends);
    let spec = SnapshotSpec {
        generation: 1,
        ports: vec![PortSpec {
            name: "p".into(),
            mac: [2, 0, 0, 0, 0, 1],
            address: [198, 19, 0, 1].into(),
            prefix_len: 24,
            mtu: 1500,
            vlan: None,
            gateway: None,
            neighbors: vec![],
        }],
        tunnel_source: None,
        services: vec![svc],
    };
    Snapshot::build(&spec, None).unwrap()
}

/// Polls once at `now` on a fresh snapshot; the number of frames sent (ARP requests).
fn poll_fresh(w: &mut Worker<MemIo>, config: &ArcSwap<Snapshot>, now: u64) -> usize {
    config.store(Arc::new(snapshot()));
    w.poll(now);
    w.io().tx.iter_mut().map(|q| q.drain(..).count()).sum()
}

#[test]
fn a_reset_worker_scans_its_neighbours_again_as_a_new_one() {
    let config = Arc::new(ArcSwap::from_pointee(snapshot()));
    let shared = (
        Arc::new(SessionTable::new(16, Timeouts::default(), 1)),
        Arc::new(SynProxy::new([1, 2], [[3, 4], [5, 6]])),
    );
    let mut w =
        Worker::new((0, 1), MemIo::new(1), 1, Arc::clone(&config), shared, Arc::new(WorkerStats::default()));
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 1, "a new worker asks at once");
    // Same clock again: the scan is not due for another 100 ms, even with a fresh snapshot.
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 0);
    w.reset();
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 1, "a reset worker asks at once, as a new one");
}
