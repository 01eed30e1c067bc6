//! The control thread's hold on the running pipeline: the config it runs and how it turns
//! into snapshots, the operator's drains, the health checks' standings, and applies.

use crate::admin::Response;
use crate::config::Config;
use crate::health;
use crate::ids::Registry;
use crate::labels::{backend_label, spec_label};
use crate::metrics;
use arc_swap::ArcSwap;
use log::{info, warn};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::wire::Mac;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

/// What the control thread keeps to change the running pipeline: the config it runs, how it
/// turns into snapshots, and the operator's drains.
pub(super) struct Control {
    pub(super) config: Config,
    pub(super) config_path: Option<PathBuf>,
    registry: Registry,
    pub(super) generation: u64,
    macs: Vec<Mac>,
    /// (service name, backend label) given weight 0 by `drain`.
    pub(super) drained: BTreeSet<(String, String)>,
    /// Health: each checked backend's standing and last result; the probing threads.
    pub(super) health: std::collections::BTreeMap<(String, String), (health::State, String)>,
    health_stop: Arc<AtomicBool>,
    health_threads: Vec<thread::JoinHandle<()>>,
    health_tx: mpsc::Sender<health::Report>,
    cell: Arc<ArcSwap<Snapshot>>,
    pub(super) last_apply: String,
    /// For the metrics endpoint: apply results, and each checked backend's standing by id.
    pub(super) apply_state: Arc<metrics::ApplyState>,
    pub(super) health_by_id: Arc<std::sync::Mutex<std::collections::HashMap<u32, bool>>>,
    /// The apply being validated on its own thread, if any.
    applier: crate::apply::Applier,
}

impl Control {
    /// Builds and publishes the first snapshot (generation 1) of `config` for ports with MACs
    /// `macs`, and starts the health checks; the receiver hears their results.
    pub(super) fn start(
        config: &Config,
        config_path: Option<PathBuf>,
        macs: &[Mac],
    ) -> Result<(Control, mpsc::Receiver<health::Report>), String> {
        let mut registry = Registry::default();
        let mut spec = config.snapshot_spec(1, Some(macs));
        registry.assign(&mut spec)?;
        let snapshot = Snapshot::build(&spec, None).map_err(|e| e.to_string())?;
        let (health_tx, health_rx) = mpsc::channel::<health::Report>();
        let mut control = Control {
            config: config.clone(),
            config_path,
            registry,
            generation: 1,
            macs: macs.to_vec(),
            drained: BTreeSet::new(),
            health: Default::default(),
            health_stop: Arc::new(AtomicBool::new(false)),
            health_threads: Vec::new(),
            health_tx,
            cell: Arc::new(ArcSwap::from_pointee(snapshot)),
            last_apply: "started with generation 1".into(),
            apply_state: Arc::new(metrics::ApplyState::new()),
            health_by_id: Default::default(),
            applier: Default::default(),
        };
        control.apply_state.record_applied(1);
        control.restart_checks();
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
        self.stop_checks();
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
    pub(super) fn health_report(&mut self, r: health::Report) {
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
    pub(super) fn start_apply(&mut self, path: Option<&str>, caller: Option<mpsc::Sender<Response>>) {
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
    pub(super) fn finish_apply(&mut self) {
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

    pub(super) fn drain(&mut self, service: &str, backend: &str, on: bool) -> Response {
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
