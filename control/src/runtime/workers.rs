//! The pinned packet workers and what they share with the control thread.

use super::bringup::{pin, Nic};
use super::persist::Found;
use crate::config::Config;
use crate::notify::Startup;
use arc_swap::ArcSwap;
use dpdk_sys::Eal;
use log::info;
use sluice_dataplane::dpdk::DpdkIo;
use sluice_dataplane::limit::Isolation;
use sluice_dataplane::pipeline::{probes, ProbeQueue};
use sluice_dataplane::region::{CookieWords, LAYOUT_VERSION};
use sluice_dataplane::session::SessionTable;
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::synproxy::{HoldPool, SynProxy};
use sluice_dataplane::worker::Worker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Two random words from the kernel (`/dev/urandom`): secrets such as cookie keys.
pub(super) fn random_words() -> Result<[u64; 2], String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let (lo, hi) = b.split_at(8);
    Ok([
        u64::from_ne_bytes(lo.try_into().unwrap_or_default()),
        u64::from_ne_bytes(hi.try_into().unwrap_or_default()),
    ])
}

/// The state every worker shares with the others and the control thread.
pub(super) struct Shared {
    pub(super) sessions: Arc<SessionTable>,
    pub(super) proxy: Arc<SynProxy>,
    /// Resource isolation: the overload flag and the workers' shares of each rate limit.
    pub(super) isolation: Arc<Isolation>,
    /// When the sessions' clock started (a session region's epoch, which outlives processes).
    pub(super) epoch: Instant,
    /// `sluicectl status`'s line on the session region.
    pub(super) region_status: String,
    /// The host agents' tunnel-path probes, from the control thread to worker 0.
    pub(super) probes: Arc<ProbeQueue>,
}

impl Shared {
    /// The session table (with a secret hash seed: `seed`, or the region's), the SYN proxy
    /// with cookie keys (fresh, or the region's), and the isolation state. In a session region
    /// the table takes over the sessions there.
    pub(super) fn new(config: &Config, seed: u64, found: Option<Found>) -> Result<Shared, String> {
        let region = found.as_ref().map(|f| Arc::clone(&f.region));
        let epoch = super::persist::epoch(region.as_deref())?;
        let (sessions, cookie, region_status) = match &found {
            Some(f) => take_over(config, f),
            None => {
                let t = SessionTable::new(config.session_capacity, config.timeouts, seed);
                (t, None, REGION_NONE.to_string())
            }
        };
        // SYN cookie keys: the region's, so that cookies sent before a restart still answer,
        // or from the kernel's random source; rotated by the control loop.
        let (base, slots) = match cookie {
            Some(keys) => keys,
            None => (random_words()?, [random_words()?, random_words()?]),
        };
        let proxy = Arc::new(match &region {
            Some(r) => {
                let (hold, kept) = HoldPool::in_region(Arc::clone(r));
                info!("session region {}: {kept} held SYN-proxy segment(s) kept", r.path().display());
                let proxy = SynProxy::with_hold(base, slots, hold);
                r.store_cookie(proxy.keys.words());
                proxy
            }
            None => SynProxy::new(base, slots),
        });
        info!(
            "session table: {} sessions, {} slots, {} MiB",
            config.session_capacity,
            sessions.slot_count(),
            sessions.memory_bytes() >> 20
        );
        let isolation = Arc::new(Isolation::new(config.worker_cores.len()));
        let probes = Arc::new(ProbeQueue::new(probes::QUEUE_LEN));
        Ok(Shared { sessions: Arc::new(sessions), proxy, isolation, epoch, region_status, probes })
    }
}

/// The session table in the region `f` found, with the sessions it holds taken over; the
/// region's cookie keys; `sluicectl status`'s line on it.
fn take_over(config: &Config, f: &Found) -> (SessionTable, Option<CookieWords>, String) {
    let (r, at) = (&f.region, f.region.path().display());
    let t = SessionTable::in_region(Arc::clone(r), config.session_capacity, config.timeouts);
    let got = t.recover();
    info!("session region {at}: {} session(s) taken over, {} torn one(s) discarded", got.live, got.torn);
    let status = format!(
        "session region {at} (layout {LAYOUT_VERSION}): {} at start, {} session(s) taken over, {} torn; \
         a restart keeps connections (`sluiced upgrade-check FILE` checks a new binary first)\n",
        f.how, got.live, got.torn
    );
    (t, r.cookie(), status)
}

/// `sluicectl status`'s line without a session region.
const REGION_NONE: &str =
    "session region: none (a restart breaks every connection; `sessions.region` keeps them)\n";

/// A secret, per-process seed (clients must not be able to aim hash collisions).
pub(super) fn secret_seed() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), std::process::id())
}

/// The running workers: their threads, counters and clock.
pub(super) struct Workers {
    handles: Vec<JoinHandle<Result<(), String>>>,
    pub(super) stats: Vec<Arc<WorkerStats>>,
    /// The workers' clock starts here; the control loop's ticks count from it too.
    pub(super) epoch: Instant,
    stop: Arc<AtomicBool>,
    /// The workers' word that they forward, until it has been waited for.
    startup: Option<Startup>,
}

impl Workers {
    /// Starts one worker per configured core, each pinned there and given queue `w` of
    /// every port.
    pub(super) fn spawn(
        config: &Config,
        nic: &Nic,
        cell: &Arc<ArcSwap<Snapshot>>,
        shared: &Shared,
    ) -> Result<Workers, String> {
        let n_workers = config.worker_cores.len() as u16;
        // Queue q of every port goes to worker q.
        let mut per_worker: Vec<(Vec<_>, Vec<_>)> =
            (0..n_workers).map(|_| (Vec::new(), Vec::new())).collect();
        for port in nic.ports.iter() {
            let (rx, tx) = port.take_rx_tx_queues().map_err(|e| e.to_string())?;
            for (w, (r, t)) in rx.into_iter().zip(tx).enumerate() {
                per_worker[w].0.push(r);
                per_worker[w].1.push(t);
            }
        }

        let epoch = shared.epoch;
        let stop = Arc::new(AtomicBool::new(false));
        let (startup, up) = Startup::new(per_worker.len());
        let mut stats = Vec::new();
        let mut handles = Vec::new();
        for (w, (rx, tx)) in per_worker.into_iter().enumerate() {
            let core = config.worker_cores[w];
            let st = Arc::new(WorkerStats::default());
            stats.push(Arc::clone(&st));
            let io = DpdkIo::new(rx, tx, nic.pool.clone());
            let cell = Arc::clone(cell);
            let tables = (Arc::clone(&shared.sessions), Arc::clone(&shared.proxy));
            let worker_isolation = Arc::clone(&shared.isolation);
            let worker_probes = (w == 0).then(|| Arc::clone(&shared.probes));
            let stop_flag = Arc::clone(&stop);
            let n_ports = nic.ports.len() as u16;
            let up = up.clone();
            let h = thread::Builder::new()
                .name(format!("sluice-w{w}"))
                .spawn(move || -> Result<(), String> {
                    pin(core)?;
                    let lcore = Eal::register_thread().map_err(|e| format!("worker {w}: {e}"))?;
                    info!("worker {w} on core {core} (lcore {lcore})");
                    let mut worker = Worker::new((w, usize::from(n_workers)), io, n_ports, cell, tables, st);
                    worker.set_isolation(worker_isolation);
                    if let Some(q) = worker_probes {
                        worker.set_probes(q);
                    }
                    // Its queues are started and it polls them from here on.
                    let _ = up.send(());
                    drop(up);
                    worker.run(&stop_flag, || epoch.elapsed().as_nanos() as u64);
                    Eal::unregister_thread();
                    Ok(())
                })
                .map_err(|e| format!("spawning worker {w}: {e}"))?;
            handles.push(h);
        }
        Ok(Workers { handles, stats, epoch, stop, startup: Some(startup) })
    }

    /// Waits until every worker forwards, then tells systemd sluiced is ready (once).
    pub(super) fn ready_when_up(&mut self) -> Result<(), String> {
        let status = format!("forwarding: {} worker(s)", self.stats.len());
        self.startup.take().map_or(Ok(()), |s| s.ready_when_up(&status))
    }

    /// Nanoseconds on the workers' clock.
    pub(super) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a worker has stopped (they only stop when told to, or on a failure).
    pub(super) fn any_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Stops every worker and waits for it; returns the last one's failure, if any.
    pub(super) fn stop(&mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failed = None;
        for (w, h) in self.handles.drain(..).enumerate() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(format!("worker {w} panicked")),
            }
        }
        failed
    }
}
