//! The control thread's hold on the running pipeline: the config it runs and how it turns
//! into snapshots, the operator's drains, the health checks' standings, and applies.

use crate::admin::Response;
use crate::config::Config;
use crate::health;
use crate::health::agent_wire::{Assign, Backend};
use crate::health::agents::AgentTarget;
use crate::health::By;
use crate::ids::{KeptIds, Registry};
use crate::labels::spec_label;
use crate::metrics;
use crate::stage::{Basis, Staged};
use arc_swap::ArcSwap;
use log::{info, warn};
use sluice_dataplane::region::Region;
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::wire::Mac;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

/// A checked backend's standing, with what its reports need: its service's `rise` and `fall`,
/// and its names for the log.
struct Checked {
    state: health::State,
    /// The last probe's result: "ok", why it failed, or "not checked yet".
    last: String,
    rise: u32,
    fall: u32,
    service: String,
    label: String,
}

/// What the control thread keeps to change the running pipeline: the config it runs, how it
/// turns into snapshots, and the operator's drains. Drains and health standings are keyed by
/// the backends' stable ids ([`Registry`]); the admin API's names become ids in [`Control::drain`].
pub(super) struct Control {
    pub(super) config: Config,
    pub(super) config_path: Option<PathBuf>,
    /// The ids, MACs and drains the config's snapshots are built with.
    basis: Basis,
    /// The session region's copy of the ids, for the next process.
    kept_ids: KeptIds,
    pub(super) generation: u64,
    /// Health: each checked backend's standing (by id); the probing threads.
    health: BTreeMap<u32, Checked>,
    health_stop: Arc<AtomicBool>,
    health_threads: Vec<thread::JoinHandle<()>>,
    health_tx: mpsc::Sender<health::Report>,
    /// The backends the host agents check, when they changed (the control loop hands them to
    /// the agents' channel).
    pub(super) agent_targets: Option<Vec<AgentTarget>>,
    cell: Arc<ArcSwap<Snapshot>>,
    pub(super) last_apply: String,
    /// For the metrics endpoint: apply results, and each checked backend's standing by id.
    pub(super) apply_state: Arc<metrics::ApplyState>,
    pub(super) health_by_id: Arc<std::sync::Mutex<HashMap<u32, bool>>>,
    /// The apply being validated on its own thread, if any.
    applier: crate::apply::Applier<Staged>,
}

impl Control {
    /// Builds and publishes the first snapshot (generation 1) of `config` for ports with MACs
    /// `macs` (over `checked`, the snapshot its check built, if any), and starts the health
    /// checks; the receiver hears their results.
    pub(super) fn start(
        (config, checked): (&Config, Option<Snapshot>),
        config_path: Option<PathBuf>,
        macs: &[Mac],
        region: Option<Arc<Region>>,
    ) -> Result<(Control, mpsc::Receiver<health::Report>), String> {
        // The ids a previous process gave, if the session region kept them: its sessions name
        // services and backends by them.
        let registry =
            region.as_ref().and_then(|r| r.ids()).map(|m| Registry::from_ids(&m)).unwrap_or_default();
        let mut basis = Basis { registry, macs: macs.to_vec(), generation: 1, ..Basis::default() };
        let spec = basis.spec(config)?;
        let mut kept_ids = KeptIds::new(region);
        kept_ids.keep(&basis.registry)?;
        let snapshot = Snapshot::build(&spec, checked.as_ref()).map_err(|e| e.to_string())?;
        drop(checked);
        let (health_tx, health_rx) = mpsc::channel::<health::Report>();
        let mut control = Control {
            config: config.clone(),
            config_path,
            basis,
            kept_ids,
            generation: 1,
            health: Default::default(),
            health_stop: Arc::new(AtomicBool::new(false)),
            health_threads: Vec::new(),
            health_tx,
            agent_targets: None,
            cell: Arc::new(ArcSwap::from_pointee(snapshot)),
            last_apply: "started with generation 1".into(),
            apply_state: Arc::new(metrics::ApplyState::new()),
            health_by_id: Default::default(),
            applier: Default::default(),
        };
        control.apply_state.record_applied(1);
        let targets = control.check_targets();
        control.restart_checks(targets);
        control.share_standings();
        Ok((control, health_rx))
    }

    /// The cell the workers load snapshots from.
    pub(super) fn cell(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.cell
    }

    /// Stops the probing threads and waits for them.
    pub(super) fn stop_checks(&mut self) {
        self.health_stop.store(true, Ordering::Relaxed);
        for h in self.health_threads.drain(..) {
            let _ = h.join();
        }
    }

    /// The basis of the next snapshot: the running ids, MACs and drains, the backends found
    /// down now, the next generation.
    fn basis_now(&mut self) -> &mut Basis {
        let down = self.health.iter().filter(|(_, c)| !c.state.up).map(|(&id, _)| id);
        self.basis.down = down.collect();
        self.basis.generation = self.generation + 1;
        &mut self.basis
    }

    /// Builds a snapshot of `config` with the drains applied, off the workers, and publishes
    /// it. On error nothing changes.
    fn publish(&mut self, config: Config) -> Result<(), String> {
        let spec = self.basis_now().spec(&config)?;
        self.kept_ids.keep(&self.basis.registry)?;
        let snap =
            Snapshot::build(&spec, Some(&self.cell.load())).map_err(|e| format!("{}: {e}", config.file))?;
        self.swap(config, snap);
        Ok(())
    }

    /// Publishes an apply's snapshot as it was built if nothing it was built from has changed
    /// since (else builds it again, as [`Control::publish`]).
    fn adopt(&mut self, staged: Staged) -> Result<(), String> {
        if !staged.current(self.basis_now()) {
            info!("apply: drains, health or ids changed while it was validated; building again");
            return self.publish(staged.config);
        }
        self.basis = staged.basis;
        self.kept_ids.keep(&self.basis.registry)?;
        staged.snapshot.learn_from(&self.cell.load());
        self.swap(staged.config, staged.snapshot);
        Ok(())
    }

    /// Publishes `snap`, the snapshot of `config`, and (re)starts the health checks if the
    /// backends they check changed.
    fn swap(&mut self, config: Config, snap: Snapshot) {
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
        let targets = self.check_targets();
        // The same names and counts can be other backends (a VIP or an address changed).
        let ids_changed = !targets.iter().map(|(t, _)| t.backend).eq(self.health.keys().copied());
        if checks_changed || ids_changed || self.health_threads.is_empty() {
            self.restart_checks(targets);
        }
        self.share_standings();
    }

    /// Shares each checked backend's standing (for the metrics), after a (re)start of the
    /// checks so that backends checked for the first time have one.
    fn share_standings(&self) {
        let by_id: HashMap<u32, bool> = self
            .cell
            .load()
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .filter_map(|b| Some((b.id, self.health.get(&b.id)?.state.up)))
            .collect();
        *self.health_by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = by_id;
    }

    /// What the running config checks: each backend to probe, with its service's name and its
    /// label for the log; sorted by id. Backends checked `by: agent` are among them.
    fn check_targets(&self) -> Vec<(health::Target, (String, String))> {
        let mut targets = Vec::new();
        for (s, spec) in self.config.services.iter().zip(&self.config.health) {
            let Some(spec) = spec else { continue };
            for b in &s.backends {
                let Some(backend) = self.basis.registry.backend_id(s, b) else { continue };
                let port = spec.port.or(b.port).unwrap_or(s.port);
                let addr = std::net::SocketAddr::new(b.address, port);
                let target = health::Target { backend, addr, spec: spec.clone() };
                targets.push((target, (s.name.clone(), spec_label(s, b))));
            }
        }
        targets.sort_by_key(|(t, _)| t.backend);
        targets
    }

    /// What the host agents check of `targets`: each backend's agent is its host's (a NAT
    /// backend's `host`, a DSR backend's own address), its VPC the NAT service's.
    fn agent_targets(&self, targets: &[(health::Target, (String, String))]) -> Vec<AgentTarget> {
        let mut out = Vec::new();
        for s in &self.config.services {
            let nat = s.forwarding == sluice_dataplane::snapshot::Forwarding::Nat;
            for b in &s.backends {
                let registry = &self.basis.registry;
                let (Some(id), Some(service)) = (registry.backend_id(s, b), registry.service_id(s)) else {
                    continue;
                };
                let Some((t, _)) = targets.iter().find(|(t, _)| t.backend == id && t.spec.by == By::Agent)
                else {
                    continue;
                };
                let vpc = if nat { s.tunnel.vpc() } else { None };
                let backend = Backend { vpc, addr: t.addr.ip(), port: t.addr.port() };
                let assign = Assign { backend, interval: t.spec.interval, timeout: t.spec.timeout };
                out.push(AgentTarget { id, service, agent: b.host.unwrap_or(b.address), assign });
            }
        }
        out
    }

    /// (Re)starts the probing threads for `targets` (the running config's) and hands the
    /// agents theirs. Standings of backends that are still checked carry over.
    fn restart_checks(&mut self, targets: Vec<(health::Target, (String, String))>) {
        self.stop_checks();
        self.health_stop = Arc::new(AtomicBool::new(false));
        let keep: BTreeSet<u32> = targets.iter().map(|(t, _)| t.backend).collect();
        self.health.retain(|id, _| keep.contains(id));
        self.agent_targets = Some(self.agent_targets(&targets));
        let mut probes = Vec::with_capacity(targets.len());
        for (t, (service, label)) in targets {
            let c = self.health.entry(t.backend).or_insert_with(|| Checked {
                state: health::State::new(),
                last: "not checked yet".into(),
                rise: 0,
                fall: 0,
                service: String::new(),
                label: String::new(),
            });
            (c.rise, c.fall, c.service, c.label) = (t.spec.rise, t.spec.fall, service, label);
            if t.spec.by == By::Appliance {
                probes.push(t);
            }
        }
        if !probes.is_empty() {
            info!("health checks: {} backend(s)", probes.len());
        }
        self.health_threads = health::start(probes, self.health_tx.clone(), Arc::clone(&self.health_stop));
    }

    /// One probe result: counts it, and when a backend's standing changes, publishes.
    pub(super) fn health_report(&mut self, r: health::Report) {
        let Some(c) = self.health.get_mut(&r.backend) else { return };
        c.last = match (&r.result, r.reporter) {
            (Ok(()), None) => "ok".into(),
            (Ok(()), Some(agent)) => format!("agent {agent}: ok"),
            (Err(e), _) => e.clone(),
        };
        if let Some(up) = c.state.observe(r.result.is_ok(), c.rise, c.fall) {
            if up {
                info!("health: {} {} is up", c.service, c.label);
            } else {
                warn!("health: {} {} is down: {}", c.service, c.label, c.last);
            }
            let config = self.config.clone();
            if let Err(e) = self.publish(config) {
                warn!("health: publishing the change failed: {e}");
            }
        }
    }

    /// Whether backend `id` is drained.
    pub(super) fn is_drained(&self, id: u32) -> bool {
        self.basis.drained.contains(&id)
    }

    /// Backend `id`'s last probe result, if it is checked.
    pub(super) fn last_check(&self, id: u32) -> Option<&str> {
        self.health.get(&id).map(|c| c.last.as_str())
    }

    /// Starts validating `path` (`None`: the file the running config came from) against the
    /// running config, off the control loop; [`Control::finish_apply`] applies it. `caller`
    /// hears the answer then, or now if the apply is refused at once (one is in progress).
    pub(super) fn start_apply(&mut self, path: Option<&str>, caller: Option<mpsc::Sender<Response>>) {
        let Some(path) = path.map(PathBuf::from).or_else(|| self.config_path.clone()) else {
            if let Some(c) = caller {
                let _ = c.send(Response::Refused { text: "no config file to re-read: give one".into() });
            }
            return;
        };
        let running = (self.config.clone(), self.basis_now().clone(), Some(self.cell.load_full()));
        if let Err(e) = self.applier.start(path, running, caller) {
            warn!("apply refused: {e}");
        }
    }

    /// A finished validation, if any: publishes its config and answers its caller (the errors
    /// with file, line and field when refused).
    pub(super) fn finish_apply(&mut self) {
        let Some(done) = self.applier.poll() else { return };
        let path = done.path;
        let result = done.result.and_then(|staged| self.adopt(staged));
        let when =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let answer = match result {
            Ok(()) => {
                self.config_path = Some(path.clone());
                self.last_apply =
                    format!("applied {} as generation {} at {when}", path.display(), self.generation);
                info!("{}", self.last_apply);
                Response::ok(self.last_apply.clone())
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

    /// A backend as the admin API names it (service name, backend label), as its id; the
    /// refusal if there is none.
    fn backend_id(&self, service: &str, backend: &str) -> Result<u32, String> {
        let no_backend = || format!("service {service} has no backend {backend:?}");
        let svc = self.config.services.iter().find(|s| s.name == service);
        let Some(svc) = svc else {
            return Err(format!("no service {service:?}"));
        };
        let b = svc.backends.iter().find(|b| spec_label(svc, b) == backend).ok_or_else(no_backend)?;
        self.basis.registry.backend_id(svc, b).ok_or_else(no_backend)
    }

    /// `sluicectl drain` (`on`) and `sluicectl restore`.
    pub(super) fn drain(&mut self, service: &str, backend: &str, on: bool) -> Response {
        let id = match self.backend_id(service, backend) {
            Ok(id) => id,
            Err(text) => return Response::Refused { text },
        };
        let changed = if on { self.basis.drained.insert(id) } else { self.basis.drained.remove(&id) };
        if !changed {
            return Response::ok(format!(
                "{service} {backend}: already {}",
                if on { "drained" } else { "in service" }
            ));
        }
        let config = self.config.clone();
        match self.publish(config) {
            Ok(()) => Response::ok(format!(
                "{service} {backend}: {} (generation {})",
                if on { "drained: no new flows, its sessions stay" } else { "restored" },
                self.generation
            )),
            Err(e) => {
                if on {
                    self.basis.drained.remove(&id)
                } else {
                    self.basis.drained.insert(id)
                };
                Response::Refused { text: e }
            }
        }
    }
}
