//! `sluiced`'s life: start DPDK, set up ports, start pinned workers, watch signals and report,
//! stop cleanly.

use crate::config::Config;
use crate::ids::Registry;
use crate::report::Totals;
use arc_swap::ArcSwap;
use dpdk_sys::{Eal, Mempool, Port, PortConfig};
use log::{info, warn};
use sluice_dataplane::dpdk::DpdkIo;
use sluice_dataplane::io::BURST;
use sluice_dataplane::session::{tick, SessionTable};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::worker::Worker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Knobs that are about this run rather than the pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Log a counter summary this often (0: never).
    pub stats_interval: Duration,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    pub totals: Totals,
    pub port_names: Vec<String>,
}

/// Mbufs for every descriptor of every queue, plus a burst in flight per worker and port,
/// rounded up to 2^n - 1 (the mempool's preferred size).
fn default_mbufs(config: &Config) -> u32 {
    let queues = (config.ports.len() * config.worker_cores.len()) as u32;
    let need = queues * (u32::from(config.rx_desc) + u32::from(config.tx_desc) + 2 * BURST as u32) + 1024;
    need.next_power_of_two().max(4096) - 1
}

/// Walks the session table in slices from the control thread: a full pass a second, expiring
/// idle sessions; each full pass counts the live ones and sets the table's "full" flag.
#[derive(Debug, Default)]
struct Sweeper {
    cursor: usize,
    live_in_pass: usize,
    live: usize,
    expired: u64,
}

/// Slices per full pass (the control loop runs every 50 ms).
const SWEEP_SLICES: usize = 20;

impl Sweeper {
    fn step(&mut self, table: &SessionTable, now: u32) {
        let slots = table.slot_count();
        let chunk = slots.div_ceil(SWEEP_SLICES);
        let s = table.sweep(now, self.cursor, chunk, |_, _| {});
        self.expired += s.expired as u64;
        self.live_in_pass += s.live;
        self.cursor += chunk;
        if self.cursor >= slots {
            self.cursor = 0;
            self.live = self.live_in_pass;
            self.live_in_pass = 0;
            table.set_full(self.live >= table.capacity());
        }
    }

    fn report(&self, t: &mut Totals) {
        t.sessions_live = self.live as u64;
        t.sessions_expired = self.expired;
    }
}

/// Pins the calling thread to one CPU. (Not via `core_affinity::get_core_ids`, which only
/// lists the CPUs of the caller's current mask: after `rte_eal_init` that is one CPU.)
fn pin(core: usize) -> Result<(), String> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(format!("cannot pin to core {core}"))
    }
}

/// Runs the appliance until `stop` becomes true.
pub fn run(config: &Config, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunReport, String> {
    let cores: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    for c in &config.worker_cores {
        if !cores.contains(c) {
            return Err(format!(
                "{}: workers.cores: core {c} does not exist here (cores: {cores:?})",
                config.file
            ));
        }
    }

    let mut args = vec!["sluiced".to_string()];
    args.extend(config.eal_args.iter().cloned());
    if !args.iter().any(|a| a == "--file-prefix" || a.starts_with("--file-prefix=")) {
        args.push(format!("--file-prefix=sluiced-{}", std::process::id()));
    }
    info!("starting DPDK: {}", args.join(" "));
    Eal::init(&args).map_err(|e| format!("DPDK EAL: {e}"))?;

    // EAL pinned this (the control) thread to its main lcore's CPU; put it where it belongs.
    let control_core = config
        .control_core
        .or_else(|| cores.iter().copied().find(|c| !config.worker_cores.contains(c)))
        .unwrap_or(0);
    if let Err(e) = pin(control_core) {
        warn!("control thread: {e}");
    }

    let n_workers = config.worker_cores.len() as u16;
    let mbufs = config.mbufs.unwrap_or_else(|| default_mbufs(config));
    let socket = dpdk_sys::port_info(dpdk_sys::port_by_name(&config.ports[0].device).map_err(|e| {
        format!("{}: ports[0].device: {e} (is the vdev or PCI device listed in dpdk?)", config.file)
    })?)
    .map(|i| i.socket_id)
    .unwrap_or(dpdk_sys::SOCKET_ID_ANY);
    let pool =
        Mempool::new("sluice_pkts", mbufs, 256, 2048 + 128, socket).map_err(|e| format!("mempool: {e}"))?;
    info!("mempool: {mbufs} mbufs");

    let mut ports = Vec::new();
    let mut macs = Vec::new();
    for (i, pc) in config.ports.iter().enumerate() {
        let field = |k: &str| format!("{}: ports[{i}].{k}", config.file);
        let id = dpdk_sys::port_by_name(&pc.device).map_err(|e| format!("{}: {e}", field("device")))?;
        // net_af_packet reports a 1518-byte frame limit to DPDK whatever its ring's frames
        // hold (2048 bytes by default): above 1500, the kernel interface's MTU is what counts
        // (the lab sets it with `ip link`), so the appliance's own MTU is the config's.
        let af_packet = dpdk_sys::port_info(id).is_ok_and(|i| i.driver == "net_af_packet");
        let device_mtu = if af_packet && pc.spec.mtu > 1500 {
            info!(
                "port {}: net_af_packet; MTU {} is the kernel interface's to carry, not set in DPDK",
                pc.spec.name, pc.spec.mtu
            );
            None
        } else {
            Some(pc.spec.mtu)
        };
        let cfg = PortConfig {
            rx_queues: n_workers,
            tx_queues: n_workers,
            rx_desc: config.rx_desc,
            tx_desc: config.tx_desc,
            mtu: device_mtu,
            rss: true,
            promiscuous: true,
        };
        let port = Port::configure(id, &cfg, &pool).map_err(|e| format!("{}: {e}", field("device")))?;
        let mut mac = port.mac();
        if let Some(want) = pc.mac {
            match port.set_mac(want) {
                Ok(()) => mac = want,
                // The device cannot take the address: in promiscuous mode it still receives
                // frames sent to it, and the pipeline filters and sends with it in software.
                Err(e) if e.errno() == Some(libc::ENOTSUP) && port.promiscuous() => {
                    warn!(
                        "port {}: {e}; using {} in software",
                        pc.spec.name,
                        sluice_dataplane::wire::fmt_mac(&want)
                    );
                    mac = want;
                }
                Err(e) => return Err(format!("{}: {e}", field("mac"))),
            }
        }
        port.start().map_err(|e| format!("{}: {e}", field("device")))?;
        let info = port.info();
        info!(
            "port {} = {} ({}), mac {}, {} queue(s), rss {}, link {}",
            pc.spec.name,
            pc.device,
            info.driver,
            sluice_dataplane::wire::fmt_mac(&mac),
            n_workers,
            if port.rss_enabled() { "on" } else { "off" },
            if port.link_up() { "up" } else { "down" },
        );
        macs.push(mac);
        ports.push(port);
    }

    let mut registry = Registry::default();
    let mut spec = config.snapshot_spec(1, Some(&macs));
    registry.assign(&mut spec)?;
    let snapshot = Snapshot::build(&spec, None).map_err(|e| e.to_string())?;
    let config_cell = Arc::new(ArcSwap::from_pointee(snapshot));

    // The hash seed is secret and per process: clients must not be able to aim collisions.
    let seed =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), std::process::id());
    let sessions = Arc::new(SessionTable::new(config.session_capacity, config.timeouts, seed));
    info!(
        "session table: {} sessions, {} slots, {} MiB",
        config.session_capacity,
        sessions.slot_count(),
        sessions.memory_bytes() >> 20
    );

    // Queue q of every port goes to worker q.
    let mut per_worker: Vec<(Vec<_>, Vec<_>)> = (0..n_workers).map(|_| (Vec::new(), Vec::new())).collect();
    for port in &ports {
        let (rx, tx) = port.take_rx_tx_queues().map_err(|e| e.to_string())?;
        for (w, (r, t)) in rx.into_iter().zip(tx).enumerate() {
            per_worker[w].0.push(r);
            per_worker[w].1.push(t);
        }
    }

    let epoch = Instant::now();
    let worker_stop = Arc::new(AtomicBool::new(false));
    let mut stats = Vec::new();
    let mut handles = Vec::new();
    for (w, (rx, tx)) in per_worker.into_iter().enumerate() {
        let core = config.worker_cores[w];
        let st = Arc::new(WorkerStats::default());
        stats.push(Arc::clone(&st));
        let io = DpdkIo::new(rx, tx, pool.clone());
        let cell = Arc::clone(&config_cell);
        let table = Arc::clone(&sessions);
        let stop_flag = Arc::clone(&worker_stop);
        let n_ports = ports.len() as u16;
        let h = thread::Builder::new()
            .name(format!("sluice-w{w}"))
            .spawn(move || -> Result<(), String> {
                pin(core)?;
                let lcore = Eal::register_thread().map_err(|e| format!("worker {w}: {e}"))?;
                info!("worker {w} on core {core} (lcore {lcore})");
                let mut worker = Worker::new((w, usize::from(n_workers)), io, n_ports, cell, table, st);
                worker.run(&stop_flag, || epoch.elapsed().as_nanos() as u64);
                Eal::unregister_thread();
                Ok(())
            })
            .map_err(|e| format!("spawning worker {w}: {e}"))?;
        handles.push(h);
    }
    info!("running: {} worker(s), {} port(s), {} service(s)", n_workers, ports.len(), config.services.len());

    let names: Vec<String> = config.ports.iter().map(|p| p.spec.name.clone()).collect();
    let mut next_report = Instant::now() + opts.stats_interval;
    let mut last = (Instant::now(), Totals::sum(&stats, ports.len()));
    let mut failed = None;
    let mut sweeper = Sweeper::default();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
        sweeper.step(&sessions, tick(epoch.elapsed().as_nanos() as u64));
        if handles.iter().any(|h| h.is_finished()) {
            failed = Some("a worker stopped unexpectedly".to_string());
            break;
        }
        if !opts.stats_interval.is_zero() && Instant::now() >= next_report {
            next_report += opts.stats_interval;
            let mut now = (Instant::now(), Totals::sum(&stats, ports.len()));
            sweeper.report(&mut now.1);
            info!("{} | {}", now.1.one_line(), now.1.rates_since(&last.1, now.0 - last.0));
            last = now;
        }
    }

    info!("stopping");
    worker_stop.store(true, Ordering::Relaxed);
    for (w, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(format!("worker {w} panicked")),
        }
    }
    let mut totals = Totals::sum(&stats, ports.len());
    sweeper.report(&mut totals);
    totals.sessions_live = sessions.len() as u64;
    info!("{}", totals.one_line());
    for (port, name) in ports.iter().zip(&names) {
        let s = port.stats();
        info!(
            "port {name}: nic rx {} tx {} missed {} rx_errors {} tx_errors {} no_mbuf {}",
            s.ipackets, s.opackets, s.imissed, s.ierrors, s.oerrors, s.rx_nombuf
        );
    }
    drop(ports);
    match failed {
        Some(e) => Err(e),
        None => Ok(RunReport { totals, port_names: names }),
    }
}
