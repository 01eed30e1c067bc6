//! `sluiced`'s life: start DPDK, set up ports, start pinned workers, watch signals and report,
//! stop cleanly.

use crate::admin::{self, Pending, Request, Response};
use crate::config::Config;
use crate::health;
use crate::ids::Registry;
use crate::isolation::{Monitor, Rebalancer};
use crate::labels::{backend_label, spec_label};
use crate::metrics;
use crate::peers::{self, ServiceIndex, Syncer};
use crate::report::Totals;
use arc_swap::ArcSwap;
use dpdk_sys::{Eal, Mempool, Port, PortConfig};
use log::{info, warn};
use sluice_dataplane::cookie;
use sluice_dataplane::dpdk::DpdkIo;
use sluice_dataplane::io::BURST;
use sluice_dataplane::limit::Isolation;
use sluice_dataplane::session::{tick, SessionTable};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::synproxy::SynProxy;
use sluice_dataplane::wire::Mac;
use sluice_dataplane::worker::Worker;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Knobs that are about this run rather than the pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Log a counter summary this often (0: never).
    pub stats_interval: Duration,
    /// The file the config came from: SIGHUP and `sluicectl apply` without a file re-read it.
    pub config_path: Option<PathBuf>,
    /// Where the admin API listens (`None`: no admin API).
    pub admin_socket: Option<PathBuf>,
    /// A group that may use the admin socket too (mode 0660); `None`: sluiced's user only (0600).
    pub admin_group: Option<u32>,
    /// Set by SIGHUP: re-read and apply `config_path`.
    pub reload: Arc<AtomicBool>,
}

impl RunOptions {
    /// No admin API, no reload source (tests, tools).
    pub fn plain(stats_interval: Duration) -> RunOptions {
        RunOptions {
            stats_interval,
            config_path: None,
            admin_socket: None,
            admin_group: None,
            reload: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Two random words from the kernel (`/dev/urandom`): secrets such as cookie keys.
fn random_words() -> Result<[u64; 2], String> {
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

/// What the control thread keeps to change the running pipeline: the config it runs, how it
/// turns into snapshots, and the operator's drains.
struct Control {
    config: Config,
    config_path: Option<PathBuf>,
    registry: Registry,
    generation: u64,
    macs: Vec<Mac>,
    /// (service name, backend label) given weight 0 by `drain`.
    drained: BTreeSet<(String, String)>,
    /// Health: each checked backend's standing and last result; the probing threads.
    health: std::collections::BTreeMap<(String, String), (health::State, String)>,
    health_stop: Arc<AtomicBool>,
    health_threads: Vec<thread::JoinHandle<()>>,
    health_tx: mpsc::Sender<health::Report>,
    cell: Arc<ArcSwap<Snapshot>>,
    last_apply: String,
    /// For the metrics endpoint: apply results, and each checked backend's standing by id.
    apply_state: Arc<metrics::ApplyState>,
    health_by_id: Arc<std::sync::Mutex<std::collections::HashMap<u32, bool>>>,
    /// The apply being validated on its own thread, if any.
    applier: crate::apply::Applier,
}

impl Control {
    /// Builds a snapshot of `config` with the drains applied, off the workers, and publishes
    /// it. On error nothing changes.
    fn publish(&mut self, config: Config) -> Result<(), String> {
        let mut spec = config.snapshot_spec(self.generation + 1, Some(&self.macs));
        for s in spec.services.iter_mut() {
            let (forwarding, port) = (s.forwarding, s.port);
            for b in s.backends.iter_mut() {
                let key = (s.name.clone(), backend_label(forwarding, b.address, b.port.unwrap_or(port)));
                if self.drained.contains(&key) {
                    b.weight = 0;
                }
                if self.health.get(&key).is_some_and(|(h, _)| !h.up) {
                    b.down = true;
                }
            }
        }
        self.registry.assign(&mut spec)?;
        let snap =
            Snapshot::build(&spec, Some(&self.cell.load())).map_err(|e| format!("{}: {e}", config.file))?;
        let mut by_id = std::collections::HashMap::new();
        for s in &snap.services {
            for b in &s.backends {
                let key = (s.name.clone(), backend_label(s.forwarding, b.address, b.port));
                if let Some((h, _)) = self.health.get(&key) {
                    by_id.insert(b.id, h.up);
                }
            }
        }
        self.cell.store(Arc::new(snap));
        self.generation += 1;
        self.apply_state.record_applied(self.generation);
        let checks_changed = config.health != self.config.health
            || config.services.iter().map(|s| (&s.name, s.backends.len())).ne(self
                .config
                .services
                .iter()
                .map(|s| (&s.name, s.backends.len())));
        self.config = config;
        if checks_changed || self.health_threads.is_empty() {
            self.restart_checks();
        }
        *self.health_by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = by_id;
        Ok(())
    }

    /// (Re)starts the probing threads for the running config. Standings of backends that are
    /// still checked carry over.
    fn restart_checks(&mut self) {
        self.health_stop.store(true, Ordering::Relaxed);
        for h in self.health_threads.drain(..) {
            let _ = h.join();
        }
        self.health_stop = Arc::new(AtomicBool::new(false));
        let mut targets = Vec::new();
        for (s, spec) in self.config.services.iter().zip(&self.config.health) {
            let Some(spec) = spec else { continue };
            for b in &s.backends {
                let port = spec.port.or(b.port).unwrap_or(s.port);
                let label = spec_label(s, b);
                targets.push((
                    s.name.clone(),
                    label,
                    std::net::SocketAddrV4::new(b.address, port),
                    spec.clone(),
                ));
            }
        }
        let keep: BTreeSet<(String, String)> =
            targets.iter().map(|(s, b, _, _)| (s.clone(), b.clone())).collect();
        self.health.retain(|k, _| keep.contains(k));
        for k in keep {
            self.health.entry(k).or_insert((health::State::new(), "not checked yet".into()));
        }
        if !targets.is_empty() {
            info!("health checks: {} backend(s)", targets.len());
        }
        self.health_threads = health::start(targets, self.health_tx.clone(), Arc::clone(&self.health_stop));
    }

    /// One probe result: counts it, and when a backend's standing changes, publishes.
    fn health_report(&mut self, r: health::Report) {
        let key = (r.service.clone(), r.backend.clone());
        let Some(spec) = self
            .config
            .services
            .iter()
            .position(|s| s.name == r.service)
            .and_then(|i| self.config.health[i].clone())
        else {
            return;
        };
        let Some((state, last)) = self.health.get_mut(&key) else { return };
        *last = match &r.result {
            Ok(()) => "ok".into(),
            Err(e) => e.clone(),
        };
        if let Some(up) = state.observe(r.result.is_ok(), spec.rise, spec.fall) {
            if up {
                info!("health: {} {} is up", r.service, r.backend);
            } else {
                warn!("health: {} {} is down: {}", r.service, r.backend, last);
            }
            let config = self.config.clone();
            if let Err(e) = self.publish(config) {
                warn!("health: publishing the change failed: {e}");
            }
        }
    }

    /// Starts validating `path` (`None`: the file the running config came from) against the
    /// running config, off the control loop; [`Control::finish_apply`] applies it. `caller`
    /// hears the answer then, or now if the apply is refused at once (one is in progress).
    fn start_apply(&mut self, path: Option<&str>, caller: Option<mpsc::Sender<Response>>) {
        let Some(path) = path.map(PathBuf::from).or_else(|| self.config_path.clone()) else {
            if let Some(c) = caller {
                let _ = c.send(Response::Refused { text: "no config file to re-read: give one".into() });
            }
            return;
        };
        if let Err(e) = self.applier.start(path, self.config.clone(), caller) {
            warn!("apply refused: {e}");
        }
    }

    /// A finished validation, if any: publishes its config and answers its caller (the errors
    /// with file, line and field when refused).
    fn finish_apply(&mut self) {
        let Some(done) = self.applier.poll() else { return };
        let path = done.path;
        let result = done.result.and_then(|c| self.publish(c));
        let when =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let answer = match result {
            Ok(()) => {
                self.config_path = Some(path.clone());
                self.last_apply =
                    format!("applied {} as generation {} at {when}", path.display(), self.generation);
                info!("{}", self.last_apply);
                Response::Ok { text: self.last_apply.clone() }
            }
            Err(e) => {
                self.apply_state.record_refused();
                self.last_apply =
                    format!("refused {} at {when}; generation {} runs", path.display(), self.generation);
                warn!("config refused, the running one stays:\n{e}");
                Response::Refused {
                    text: format!("{e}\nrefused: generation {} keeps running", self.generation),
                }
            }
        };
        if let Some(c) = done.caller {
            let _ = c.send(answer);
        }
    }

    fn drain(&mut self, service: &str, backend: &str, on: bool) -> Response {
        let svc = self.config.services.iter().find(|s| s.name == service);
        let Some(svc) = svc else {
            return Response::Refused { text: format!("no service {service:?}") };
        };
        let exists = svc.backends.iter().any(|b| spec_label(svc, b) == backend);
        if !exists {
            return Response::Refused { text: format!("service {service} has no backend {backend:?}") };
        }
        let key = (service.to_string(), backend.to_string());
        let changed = if on { self.drained.insert(key.clone()) } else { self.drained.remove(&key) };
        if !changed {
            return Response::Ok {
                text: format!("{service} {backend}: already {}", if on { "drained" } else { "in service" }),
            };
        }
        let config = self.config.clone();
        match self.publish(config) {
            Ok(()) => Response::Ok {
                text: format!(
                    "{service} {backend}: {} (generation {})",
                    if on { "drained: no new flows, its sessions stay" } else { "restored" },
                    self.generation
                ),
            },
            Err(e) => {
                if on {
                    self.drained.remove(&key)
                } else {
                    self.drained.insert(key)
                };
                Response::Refused { text: e }
            }
        }
    }
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
    /// The same two figures, for the metrics endpoint.
    shared_live: Arc<std::sync::atomic::AtomicU64>,
    shared_expired: Arc<std::sync::atomic::AtomicU64>,
}

/// Slices per full pass (the control loop runs every 50 ms).
const SWEEP_SLICES: usize = 20;

impl Sweeper {
    /// One slice of the pass; with session sync, the slice's live and expired sessions go to
    /// the syncer (which sends what is due at the slice's end).
    fn step(&mut self, table: &SessionTable, now: u32, sync: Option<(&mut Syncer, &Snapshot)>) {
        let slots = table.slot_count();
        let chunk = slots.div_ceil(SWEEP_SLICES);
        let s = match sync {
            Some((syncer, snap)) => {
                let ix = ServiceIndex::new(snap);
                let slice = self.cursor / chunk.max(1);
                let cell = std::cell::RefCell::new(&mut *syncer);
                let s = table.sweep_with(
                    now,
                    self.cursor,
                    chunk,
                    |k, x| cell.borrow_mut().expired(&ix, k, x, now),
                    |k, x| cell.borrow_mut().live(&ix, slice, k, x, now),
                );
                syncer.slice_done(slice, now, peers::unix_ms());
                syncer.receive(table, &ix, now, peers::unix_ms());
                s
            }
            None => table.sweep(now, self.cursor, chunk, |_, _| {}),
        };
        self.expired += s.expired as u64;
        self.shared_expired.store(self.expired, Ordering::Relaxed);
        self.live_in_pass += s.live;
        self.cursor += chunk;
        if self.cursor >= slots {
            self.cursor = 0;
            self.live = self.live_in_pass;
            self.shared_live.store(self.live as u64, Ordering::Relaxed);
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
    let (health_tx, health_rx) = mpsc::channel::<health::Report>();
    let mut control = Control {
        config: config.clone(),
        config_path: opts.config_path.clone(),
        registry,
        generation: 1,
        macs: macs.clone(),
        drained: BTreeSet::new(),
        health: Default::default(),
        health_stop: Arc::new(AtomicBool::new(false)),
        health_threads: Vec::new(),
        health_tx,
        cell: Arc::clone(&config_cell),
        last_apply: "started with generation 1".into(),
        apply_state: Arc::new(metrics::ApplyState::new()),
        health_by_id: Default::default(),
        applier: Default::default(),
    };
    control.apply_state.record_applied(1);
    control.restart_checks();

    // The hash seed is secret and per process: clients must not be able to aim collisions.
    let seed =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), std::process::id());
    let sessions = Arc::new(SessionTable::new(config.session_capacity, config.timeouts, seed));
    // SYN cookie keys: from the kernel's random source, rotated below.
    let proxy = Arc::new(SynProxy::new(random_words()?, [random_words()?, random_words()?]));
    let mut last_rotated = None;
    info!(
        "session table: {} sessions, {} slots, {} MiB",
        config.session_capacity,
        sessions.slot_count(),
        sessions.memory_bytes() >> 20
    );

    // Resource isolation: the overload flag and the workers' shares of each rate limit.
    let isolation = Arc::new(Isolation::new(usize::from(n_workers)));
    let mut monitor = Monitor::new(config.isolation.clone(), usize::from(n_workers), 0);
    let mut rebalancer = Rebalancer::default();
    // Session sync with peers, over the kernel's network (the management path).
    let mut syncer = match &config.sync {
        Some(spec) => {
            let epoch = random_words()?[0];
            let s = Syncer::new(spec, epoch, SWEEP_SLICES, config.session_capacity)
                .map_err(|e| format!("{}: sync.listen: {}: {e}", config.file, spec.listen))?;
            info!(
                "session sync on {} with {} peer(s), after {:?}",
                spec.listen,
                spec.peers.len(),
                spec.after
            );
            Some(s)
        }
        None => None,
    };

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
        let shared = (Arc::clone(&sessions), Arc::clone(&proxy));
        let worker_isolation = Arc::clone(&isolation);
        let stop_flag = Arc::clone(&worker_stop);
        let n_ports = ports.len() as u16;
        let h = thread::Builder::new()
            .name(format!("sluice-w{w}"))
            .spawn(move || -> Result<(), String> {
                pin(core)?;
                let lcore = Eal::register_thread().map_err(|e| format!("worker {w}: {e}"))?;
                info!("worker {w} on core {core} (lcore {lcore})");
                let mut worker = Worker::new((w, usize::from(n_workers)), io, n_ports, cell, shared, st);
                worker.set_isolation(worker_isolation);
                worker.run(&stop_flag, || epoch.elapsed().as_nanos() as u64);
                Eal::unregister_thread();
                Ok(())
            })
            .map_err(|e| format!("spawning worker {w}: {e}"))?;
        handles.push(h);
    }
    info!("running: {} worker(s), {} port(s), {} service(s)", n_workers, ports.len(), config.services.len());

    let names: Vec<String> = config.ports.iter().map(|p| p.spec.name.clone()).collect();
    let admin_stop = Arc::new(AtomicBool::new(false));
    let (admin_tx, admin_rx) = mpsc::channel::<Pending>();
    let admin_options = admin::SocketOptions::new(opts.admin_group);
    let admin_thread = match &opts.admin_socket {
        Some(path) => match admin::serve(path, &admin_options, admin_tx, Arc::clone(&admin_stop)) {
            Ok(h) => {
                info!("admin API on {}", path.display());
                Some(h)
            }
            Err(e) => {
                warn!("admin API: {}: {e}; running without it", path.display());
                None
            }
        },
        None => None,
    };
    let started = Instant::now();
    let mut next_report = Instant::now() + opts.stats_interval;
    let mut last = (Instant::now(), Totals::sum(&stats, ports.len()));
    let mut failed = None;
    let mut sweeper = Sweeper::default();

    // The Prometheus endpoint: reads the workers' counters, the table and the snapshot at
    // each scrape, on its own thread.
    let ports = Arc::new(ports);
    let metrics_stop = Arc::new(AtomicBool::new(false));
    let mut metrics_thread = None;
    if let Some(listen) = config.metrics_listen {
        let nic_ports = Arc::clone(&ports);
        let metrics_refusals = Arc::new(crate::serving::Refusals::default());
        let health_by_id = Arc::clone(&control.health_by_id);
        let source = metrics::MetricsSource {
            stats: stats.clone(),
            port_names: names.clone(),
            sessions: Arc::clone(&sessions),
            snapshot: Arc::clone(&config_cell),
            apply: Arc::clone(&control.apply_state),
            sessions_live: Arc::clone(&sweeper.shared_live),
            sessions_expired: Arc::clone(&sweeper.shared_expired),
            nic_stats: Some(Box::new(move || nic_ports.iter().map(|p| p.stats()).collect())),
            health: Some(Box::new(move |id| {
                health_by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied()
            })),
            isolation: Some(Arc::clone(&monitor.state)),
            sync: syncer.as_ref().map(|s| Arc::clone(&s.counters)),
            connections: [
                admin_thread.is_some().then(|| ("admin", Arc::clone(&admin_options.refusals))),
                Some(("metrics", Arc::clone(&metrics_refusals))),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        match metrics::registry(source).map_err(|e| e.to_string()).and_then(|r| {
            metrics::serve(listen, r, metrics::LIMITS, metrics_refusals, Arc::clone(&metrics_stop))
                .map_err(|e| e.to_string())
        }) {
            Ok((addr, h)) => {
                info!("metrics on http://{addr}/metrics");
                metrics_thread = Some(h);
            }
            Err(e) => failed = Some(format!("{}: metrics.listen: {listen}: {e}", config.file)),
        }
    }

    while !stop.load(Ordering::Relaxed) && failed.is_none() {
        thread::sleep(Duration::from_millis(50));
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let snap_now = config_cell.load();
        sweeper.step(&sessions, tick(now_ns), syncer.as_mut().map(|s| (s, &**snap_now)));
        drop(snap_now);
        if rebalancer.due(now_ns) {
            rebalancer.rebalance(&config_cell.load(), &stats, &isolation, now_ns);
        }
        if monitor.due(now_ns) {
            monitor.detector.set_spec(control.config.isolation.clone());
            monitor.check(&stats, sweeper.live as u64, now_ns, &isolation);
        }
        let period = cookie::period(epoch.elapsed().as_secs());
        if proxy.keys.rotation_due(period, last_rotated) {
            match random_words() {
                Ok(fresh) => {
                    proxy.keys.rotate(period, fresh, &mut last_rotated);
                }
                Err(e) => warn!("SYN cookie keys not rotated: {e}"),
            }
        }
        if opts.reload.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: applying the config file again");
            control.start_apply(None, None);
        }
        control.finish_apply();
        for r in health_rx.try_iter().collect::<Vec<_>>() {
            control.health_report(r);
        }
        for (req, back) in admin::pending(&admin_rx) {
            let answer = match req {
                Request::Apply { file } => {
                    // Answered when the apply is done (or refused now).
                    control.start_apply(file.as_deref(), Some(back));
                    continue;
                }
                Request::Drain { service, backend } => control.drain(&service, &backend, true),
                Request::Restore { service, backend } => control.drain(&service, &backend, false),
                Request::Status => Response::Ok {
                    text: format!(
                        "config {}\ngeneration {}\nlast apply: {}\nworkers {}\nuptime {} s\nsessions {} of {}\n\
                         isolation {} ({} checks, every {:?})\n",
                        control.config_path.as_ref().map_or("-".into(), |p| p.display().to_string()),
                        control.generation,
                        control.last_apply,
                        n_workers,
                        started.elapsed().as_secs(),
                        sweeper.live,
                        sessions.capacity(),
                        if monitor.detector.active() { "on" } else { "off" },
                        monitor.detector.checks(),
                        monitor.detector.spec().interval,
                    ),
                },
                Request::Services => Response::Ok { text: list_services(&config_cell.load(), &sessions, &control) },
                Request::Sessions { service, backend, client, limit } => {
                    list_sessions(&config_cell.load(), &sessions, service, backend, client, limit, epoch)
                }
                Request::Counters => {
                    let mut t = Totals::sum(&stats, ports.len());
                    sweeper.report(&mut t);
                    Response::Ok { text: t.render(&names) }
                }
            };
            let _ = back.send(answer);
        }
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
    admin_stop.store(true, Ordering::Relaxed);
    if let Some(h) = admin_thread {
        let _ = h.join();
    }
    metrics_stop.store(true, Ordering::Relaxed);
    if let Some(h) = metrics_thread {
        let _ = h.join();
    }
    control.health_stop.store(true, Ordering::Relaxed);
    for h in control.health_threads.drain(..) {
        let _ = h.join();
    }
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

/// A service's limits as `sluicectl services` shows them: "packets/s 1000 (on_overload), ...".
fn limits_text(l: &sluice_dataplane::limit::Limits) -> String {
    use sluice_dataplane::limit::{Which, RATES};
    let when = |o: bool| if o { " (on_overload)" } else { "" };
    let mut parts: Vec<String> = RATES
        .iter()
        .filter_map(|&r| {
            let lim = l.rate(r)?;
            Some(format!("{}/s {}{}", Which::from(r).label(), lim.value, when(lim.on_overload)))
        })
        .collect();
    if let Some(c) = l.sessions {
        parts.push(format!("sessions {}{}", c.value, when(c.on_overload)));
    }
    parts.join(", ")
}

/// `sluicectl services`: one line per service, then one per backend.
fn list_services(snap: &Snapshot, sessions: &SessionTable, control: &Control) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "generation {}", snap.generation);
    for s in &snap.services {
        let _ = writeln!(
            out,
            "service {} {}:{} {:?} {:?} scheduler {:?} tunnel {:?}{}",
            s.name,
            s.vip,
            s.port,
            s.protocol,
            s.forwarding,
            s.scheduler,
            s.tunnel,
            s.synproxy_mss.map_or_else(String::new, |mss| format!(" synproxy mss {mss}"))
        );
        if !s.limits.is_empty() {
            let _ = writeln!(
                out,
                "  limits {} (sessions now {})",
                limits_text(&s.limits),
                sessions.service_active(s.id)
            );
        }
        for b in &s.backends {
            let label = backend_label(s.forwarding, b.address, b.port);
            let key = (s.name.clone(), label.clone());
            let state = if b.down {
                "down"
            } else if control.drained.contains(&key) {
                "drained"
            } else if b.weight == 0 {
                "weight-0"
            } else {
                "up"
            };
            let check = control
                .health
                .get(&key)
                .map_or_else(|| "unchecked".to_string(), |(_, last)| format!("check: {last}"));
            let _ = writeln!(
                out,
                "  backend {label} host {} weight {} {state} sessions {} {check}",
                b.host,
                b.weight,
                sessions.active(b.id)
            );
        }
    }
    out
}

/// `sluicectl sessions`: live flow sessions, filtered.
fn list_sessions(
    snap: &Snapshot,
    sessions: &SessionTable,
    service: Option<String>,
    backend: Option<String>,
    client: Option<String>,
    limit: Option<usize>,
    epoch: Instant,
) -> Response {
    use sluice_dataplane::session::KeyKind;
    use std::fmt::Write;
    let client = match client.as_deref().map(str::parse::<std::net::Ipv4Addr>) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return Response::Refused {
                text: format!("{:?} is not an IPv4 address", client.unwrap_or_default()),
            }
        }
        None => None,
    };
    let limit = limit.unwrap_or(100);
    let now = tick(epoch.elapsed().as_nanos() as u64);
    let (mut shown, mut matched) = (0usize, 0usize);
    let mut out = String::new();
    sessions.for_each(|k, s| {
        if k.kind != KeyKind::Flow {
            return;
        }
        let Some(svc) = snap.service_by_id(k.ident as u16) else { return };
        let be = svc.backend_by_id(s.backend).and_then(|i| svc.backends.get(usize::from(i)));
        let label = be.map_or_else(
            || format!("(removed #{})", s.backend),
            |b| backend_label(svc.forwarding, b.address, b.port),
        );
        let addr = k.addr.as_v4();
        if service.as_ref().is_some_and(|n| *n != svc.name)
            || backend.as_ref().is_some_and(|b| *b != label)
            || client.is_some_and(|c| addr != Some(c))
        {
            return;
        }
        matched += 1;
        if shown < limit {
            shown += 1;
            let idle = u64::from(sluice_dataplane::session::idle(now, s.last_seen))
                * (1u64 << sluice_dataplane::session::TICK_SHIFT)
                / 1_000_000_000;
            use sluice_dataplane::session::flags::{PROXIED, SYNCED};
            let _ = writeln!(
                out,
                "{} {}:{} -> {label} {:?}{}{} idle {idle}s",
                svc.name,
                addr.map_or("?".into(), |a| a.to_string()),
                k.port,
                s.state,
                if s.flags & PROXIED != 0 { " proxied" } else { "" },
                if s.flags & SYNCED != 0 { " synced" } else { "" }
            );
        }
    });
    let _ = writeln!(out, "{matched} sessions matched, {shown} shown");
    Response::Ok { text: out }
}
