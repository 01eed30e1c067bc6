//! `Worker::reset`: a worker reused for another scenario behaves as a new one (the fuzz
//! targets rely on it to keep one worker per process).

use arc_swap::ArcSwap;
use sluice_dataplane::io::MemIo;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::{Protocol, Snapshot};
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::testkit::{self, host, hosts, spec, vip, EXT_MAC, INT_ADDR};
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

/// One port and a service whose backend has no known MAC: worker 0 asks for it by ARP.
fn snapshot() -> Snapshot {
    let svc = spec::dsr_service("s", vip(1), 80, Protocol::Tcp, vec![spec::backend(host(99), 1)]);
    spec::snapshot(vec![spec::port_spec("p", EXT_MAC, INT_ADDR, hosts([]))], vec![svc])
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
    let shared = (Arc::new(SessionTable::new(16, Timeouts::default(), 1)), Arc::new(testkit::synproxy()));
    let mut w =
        Worker::new((0, 1), MemIo::new(1), 1, Arc::clone(&config), shared, Arc::new(WorkerStats::default()));
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 1, "a new worker asks at once");
    // Same clock again: the scan is not due for another 100 ms, even with a fresh snapshot.
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 0);
    w.reset();
    assert_eq!(poll_fresh(&mut w, &config, 5_000), 1, "a reset worker asks at once, as a new one");
}
