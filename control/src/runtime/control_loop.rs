//! The control loop: every 50 ms one tick of chores (the session sweep, isolation, SYN cookie
//! keys), applies, health results and the admin API's requests, and now and then a counter
//! line in the log.

use super::announcer::Announcer;
use super::control::Control;
use super::listing::{list_services, list_sessions};
use super::stats;
use super::sweeper::{Sweeper, SWEEP_SLICES};
use super::workers::{random_words, Shared, Workers};
use crate::admin::{self, Pending, Request, Response};
use crate::config::Config;
use crate::ctl;
use crate::health;
use crate::isolation::{Monitor, Rebalancer};
use crate::metrics::MetricsSource;
use crate::peers::Syncer;
use crate::report::Totals;
use crate::serving::Refusals;
use dpdk_sys::Port;
use log::{info, warn};
use sluice_dataplane::cookie;
use sluice_dataplane::session::tick;
use sluice_dataplane::stats::DropReason;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The control thread's periodic work beside the config: the sweep (and session sync), the
/// isolation checks, the SYN cookie keys.
pub(super) struct Chores {
    sweeper: Sweeper,
    /// The host agents' health reports, if the config has `agents`.
    agents: Option<crate::health::agents::Channel>,
    syncer: Option<Syncer>,
    monitor: Monitor,
    rebalancer: Rebalancer,
    last_rotated: Option<u64>,
}

impl Chores {
    /// The isolation checks, and session sync with peers over the kernel's network (the
    /// management path) if configured.
    pub(super) fn new(config: &Config) -> Result<Chores, String> {
        let n_workers = config.worker_cores.len();
        let monitor = Monitor::new(config.isolation.clone(), n_workers, 0);
        let syncer = match &config.sync {
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
        let agents = match &config.agents {
            Some(spec) => {
                let channel = crate::health::agents::Channel::new(spec, random_words()?[0])
                    .map_err(|e| format!("{}: agents.listen: {}: {e}", config.file, spec.listen))?;
                info!("host agents' health reports on {}, assignments to port {}", spec.listen, spec.port);
                Some(channel)
            }
            None => None,
        };
        Ok(Chores {
            agents,
            sweeper: Sweeper::default(),
            syncer,
            monitor,
            rebalancer: Rebalancer::default(),
            last_rotated: None,
        })
    }

    /// One tick's share of each.
    fn step(&mut self, control: &Control, shared: &Shared, workers: &Workers) {
        let now_ns = workers.now_ns();
        let cell = control.cell();
        let snap_now = cell.load();
        self.sweeper.step(&shared.sessions, tick(now_ns), self.syncer.as_mut().map(|s| (s, &**snap_now)));
        drop(snap_now);
        if self.rebalancer.due(now_ns) {
            self.rebalancer.rebalance(&cell.load(), &workers.stats, &shared.isolation, now_ns);
        }
        if self.monitor.due(now_ns) {
            self.monitor.detector.set_spec(control.config.isolation.clone());
            self.monitor.check(&workers.stats, self.sweeper.live as u64, now_ns, &shared.isolation);
        }
        let period = cookie::period(workers.epoch.elapsed().as_secs());
        if shared.proxy.keys.rotation_due(period, self.last_rotated) {
            match random_words() {
                Ok(fresh) => {
                    if shared.proxy.keys.rotate(period, fresh, &mut self.last_rotated) {
                        if let Some(r) = shared.sessions.region() {
                            r.store_cookie(shared.proxy.keys.words());
                        }
                    }
                }
                Err(e) => warn!("SYN cookie keys not rotated: {e}"),
            }
        }
    }
}

/// Everything the control thread runs with once the workers are up.
pub(super) struct ControlLoop {
    pub(super) control: Control,
    health_rx: Receiver<health::Report>,
    admin_rx: Receiver<Pending>,
    shared: Shared,
    chores: Chores,
    workers: Workers,
    names: Vec<String>,
    started: Instant,
    /// The counter line: how often, when next, and the totals at the last one.
    interval: Duration,
    next_report: Instant,
    last: (Instant, Totals),
    /// The routing daemon's updates, if the config has `routing`.
    announcer: Option<Announcer>,
    /// `sluicectl drain-appliance` asked to leave: the loop ends, and `finish` drains.
    leaving: bool,
    /// With an exception path: the frames its kernel queue lost as last logged, and when
    /// it is looked at next.
    kernel_lost: Option<(u64, Instant)>,
}

/// How often the exception path's losses are looked at (and logged, if they grew).
const KERNEL_LOSS_CHECK: Duration = Duration::from_secs(5);

impl ControlLoop {
    pub(super) fn new(
        interval: Duration,
        (control, health_rx): (Control, Receiver<health::Report>),
        admin_rx: Receiver<Pending>,
        (shared, chores, workers): (Shared, Chores, Workers),
        names: Vec<String>,
    ) -> ControlLoop {
        let started = Instant::now();
        let last = (Instant::now(), Totals::sum(&workers.stats, names.len()));
        let announcer = control.config.routing.as_ref().and_then(|spec| match Announcer::start(spec) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!("routing: {e}; no VIP will be announced");
                None
            }
        });
        let kernel_lost =
            control.config.ports.iter().any(|p| p.kernel.is_some()).then(|| (0, Instant::now()));
        ControlLoop {
            control,
            health_rx,
            admin_rx,
            shared,
            chores,
            workers,
            names,
            started,
            interval,
            next_report: Instant::now() + interval,
            last,
            kernel_lost,
            announcer,
            leaving: false,
        }
    }

    /// What the Prometheus endpoint reads at each scrape: the workers' counters, the table,
    /// the snapshot, the NICs' counters and the endpoints' refusals.
    pub(super) fn metrics_source(
        &self,
        ports: &Arc<Vec<Port>>,
        admin_refusals: Option<Arc<Refusals>>,
        metrics_refusals: Arc<Refusals>,
    ) -> MetricsSource {
        let nic_ports = Arc::clone(ports);
        let health_by_id = Arc::clone(&self.control.health_by_id);
        MetricsSource {
            stats: self.workers.stats.clone(),
            port_names: self.names.clone(),
            sessions: Arc::clone(&self.shared.sessions),
            snapshot: Arc::clone(self.control.cell()),
            apply: Arc::clone(&self.control.apply_state),
            sessions_live: Arc::clone(&self.chores.sweeper.shared_live),
            sessions_expired: Arc::clone(&self.chores.sweeper.shared_expired),
            nic_stats: Some(Box::new(move || nic_ports.iter().map(|p| p.stats()).collect())),
            health: Some(Box::new(move |id| {
                health_by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied()
            })),
            isolation: Some(Arc::clone(&self.chores.monitor.state)),
            sync: self.chores.syncer.as_ref().map(|s| Arc::clone(&s.counters)),
            agents: self.chores.agents.as_ref().map(|a| Arc::clone(&a.counters)),
            routing: self.announcer.as_ref().map(Announcer::state),
            connections: [admin_refusals.map(|r| ("admin", r)), Some(("metrics", metrics_refusals))]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// Once every worker forwards (systemd is told so), ticks every 50 ms until `stop` is set
    /// (`Ok`) or a worker stops (`Err`).
    pub(super) fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<(), String> {
        self.workers.ready_when_up()?;
        while !stop.load(Ordering::Relaxed) && !self.leaving {
            thread::sleep(Duration::from_millis(50));
            self.tick(reload)?;
        }
        Ok(())
    }

    /// One tick: chores, a SIGHUP's reload, a finished apply, health results, admin requests,
    /// the workers' liveness, the counter line.
    fn tick(&mut self, reload: &AtomicBool) -> Result<(), String> {
        self.chores.step(&self.control, &self.shared, &self.workers);
        if reload.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: applying the config file again");
            self.control.start_apply(None, None);
        }
        self.control.finish_apply();
        for r in self.health_rx.try_iter().collect::<Vec<_>>() {
            self.control.health_report(r);
        }
        self.agent_reports();
        for (req, back) in admin::pending(&self.admin_rx) {
            self.dispatch(req, back);
        }
        if self.workers.any_finished() {
            return Err("a worker stopped unexpectedly".to_string());
        }
        if let Some(a) = &mut self.announcer {
            let polls: Vec<u64> = self.workers.stats.iter().map(|s| s.polls.get()).collect();
            let joined = self.chores.syncer.as_mut().is_none_or(|s| s.joined(Instant::now()));
            a.step(&self.control.cell().load(), &self.control.config, &polls, joined);
        }
        self.watch_exception_path();
        if !self.interval.is_zero() && Instant::now() >= self.next_report {
            self.next_report += self.interval;
            let now = (Instant::now(), self.totals());
            info!("{} | {}", now.1.one_line(), now.1.rates_since(&self.last.1, now.0 - self.last.0));
            self.last = now;
        }
        Ok(())
    }

    /// The host agents' channel: the running config's targets when they changed, then the
    /// results due.
    fn agent_reports(&mut self) {
        let targets = self.control.agent_targets.take();
        let Some(channel) = &mut self.chores.agents else { return };
        let now = Instant::now();
        if let Some(t) = targets {
            channel.set_targets(t, now);
        }
        for r in channel.step(now, &self.shared.probes) {
            self.control.health_report(r);
        }
    }

    /// Logs frames the kernel did not take since the last look (its interface down, or a
    /// kernel that does not read it: BGP and BFD may be among them).
    fn watch_exception_path(&mut self) {
        let Some((seen, next)) = self.kernel_lost else { return };
        if Instant::now() < next {
            return;
        }
        let lost = self.totals().drops[DropReason::KernelRefused as usize];
        if lost > seen {
            warn!(
                "exception path: the kernel did not take {} frame(s) in {:?} (its interface down or its queue full; sluice_drops_total{{reason=\"kernel_refused\"}})",
                lost - seen,
                KERNEL_LOSS_CHECK
            );
        }
        self.kernel_lost = Some((lost, Instant::now() + KERNEL_LOSS_CHECK));
    }

    /// Answers one admin request (an apply is answered when it is done, or refused now).
    fn dispatch(&mut self, req: Request, back: Sender<Response>) {
        let answer = match req {
            Request::Apply { file } => return self.control.start_apply(file.as_deref(), Some(back)),
            Request::Drain { service, backend } => self.control.drain(&service, &backend, true),
            Request::Restore { service, backend } => self.control.drain(&service, &backend, false),
            Request::Status => ctl::answer(&self.status()),
            Request::Services => {
                ctl::answer(&list_services(&self.control.cell().load(), &self.shared.sessions, &self.control))
            }
            Request::Sessions { service, backend, client, limit } => list_sessions(
                &self.control.cell().load(),
                &self.shared.sessions,
                service,
                backend,
                client,
                limit,
                self.workers.epoch,
            ),
            Request::Counters => ctl::answer(&self.totals().counters(&self.names)),
            Request::Stats => ctl::answer(&stats::read(
                &self.control.cell().load(),
                &self.workers.stats,
                &self.shared.sessions,
                (&self.totals(), self.started.elapsed()),
            )),
            Request::Upgrade => ctl::answer(&ctl::status::Upgrade::new(&self.shared.region_status)),
            Request::DrainAppliance => self.leave(),
        };
        let _ = back.send(answer);
    }

    /// `sluicectl drain-appliance`: the loop ends after this tick; `finish` withdraws the VIPs
    /// and waits for the traffic to move before the workers stop.
    fn leave(&mut self) -> Response {
        let Some(spec) = &self.control.config.routing else {
            return Response::Refused {
                text: "no `routing` in the config: nothing is announced to withdraw (SIGTERM stops sluiced)"
                    .into(),
            };
        };
        self.leaving = true;
        info!("drain-appliance: withdrawing every VIP, then stopping (at most {:?} later)", spec.drain);
        Response::ok(format!(
            "draining: every VIP withdrawn; sluiced stops once traffic has moved (at most {:?})",
            spec.drain
        ))
    }

    /// After the VIPs are withdrawn: waits until no packet has been forwarded for a moment
    /// (the routers have moved the flows to the other appliances), at most `bound`.
    fn wait_until_quiet(&self, bound: Duration) {
        const QUIET: Duration = Duration::from_millis(500);
        let forwarded = || {
            let t = Totals::sum(&self.workers.stats, self.names.len());
            t.events.tunneled + t.events.nat_replies
        };
        let (start, mut last, mut since) = (Instant::now(), forwarded(), Instant::now());
        while start.elapsed() < bound && since.elapsed() < QUIET {
            thread::sleep(Duration::from_millis(50));
            let now = forwarded();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        info!(
            "drained: last packet forwarded {:?} ago, {:?} after the withdrawal",
            since.elapsed(),
            start.elapsed()
        );
    }

    /// `sluicectl status`.
    fn status(&self) -> ctl::status::Status {
        let (c, detector) = (&self.control, &self.chores.monitor.detector);
        ctl::status::Status {
            config: c.config_path.as_ref().map(|p| p.display().to_string()),
            generation: c.generation,
            last_apply: c.last_apply.clone(),
            workers: self.workers.stats.len(),
            uptime_s: self.started.elapsed().as_secs(),
            sessions: self.chores.sweeper.live as u64,
            capacity: self.shared.sessions.capacity(),
            isolation: ctl::status::Isolation {
                active: detector.active(),
                checks: detector.checks(),
                interval_ms: detector.spec().interval.as_millis() as u64,
            },
            region: self.shared.region_status.trim_end().to_string(),
            exception: self.exception_status(),
            routing: self.announcer.as_ref().map(Announcer::status).filter(|s| !s.is_empty()),
        }
    }

    /// `sluicectl status`'s exception path figures, if there is one.
    fn exception_status(&self) -> Option<ctl::status::Exception> {
        self.kernel_lost?;
        let t = self.totals();
        Some(ctl::status::Exception {
            to_kernel: t.events.to_kernel,
            from_kernel: t.events.from_kernel,
            kernel_refused: t.drops[DropReason::KernelRefused as usize],
            kernel_limited: t.drops[DropReason::KernelLimited as usize],
        })
    }

    /// Every counter now, with the sweep's session figures.
    fn totals(&self) -> Totals {
        let mut t = Totals::sum(&self.workers.stats, self.names.len());
        self.chores.sweeper.report(&mut t);
        t
    }

    /// Stops the health checks and the workers; the run's last totals (with the table's
    /// live sessions counted now) and the last worker's failure, if any.
    pub(super) fn finish(mut self) -> (Totals, Option<String>) {
        // Routers first: every VIP withdrawn before the workers stop forwarding.
        if let Some(a) = &mut self.announcer {
            a.withdraw_all();
            let bound = self.control.config.routing.as_ref().map_or(Duration::ZERO, |r| r.drain);
            self.wait_until_quiet(bound);
        }
        self.control.stop_checks();
        let failed = self.workers.stop();
        let mut totals = Totals::sum(&self.workers.stats, self.names.len());
        self.chores.sweeper.report(&mut totals);
        totals.sessions_live = self.shared.sessions.len() as u64;
        (totals, failed)
    }
}
