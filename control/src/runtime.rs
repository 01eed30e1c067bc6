//! `sluiced`'s life: start DPDK, set up ports, start pinned workers, watch signals and report,
//! stop cleanly. [`run`] goes through the steps, each in its own module: [`bringup`] (EAL,
//! mempool, ports), [`control`] (the running config and what changes it), [`workers`] (the
//! packet threads and what they share), [`endpoints`] (the admin API and metrics threads),
//! [`control_loop`] (the tick and the admin requests), with [`sweeper`] and [`listing`].

mod announcer;
mod bringup;
mod control;
mod control_loop;
mod endpoints;
mod listing;
mod persist;
mod stats;
mod sweeper;
mod workers;

use crate::config::Config;
use crate::report::Totals;
use control::Control;
use control_loop::{Chores, ControlLoop};
use log::info;
use sluice_dataplane::snapshot::Snapshot;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use workers::{Shared, Workers};

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

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    pub totals: Totals,
    pub port_names: Vec<String>,
}

/// Runs the appliance until `stop` becomes true. `checked` is the snapshot the config's check
/// built ([`Config::load_built`]), if at hand: the first snapshot takes over its tables, and
/// it is dropped then.
pub fn run(
    (config, checked): (&Config, Option<Snapshot>),
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, String> {
    let cores = bringup::check_cores(config)?;
    bringup::start_eal(config, &cores)?;
    let nic = bringup::start_ports(config)?;
    let seed = workers::secret_seed();
    let region = persist::open(config, seed)?;
    let control = Control::start(
        (config, checked),
        opts.config_path.clone(),
        &nic.macs,
        region.as_ref().map(|f| Arc::clone(&f.region)),
    )?;
    let shared = Shared::new(config, seed, region)?;
    let chores = Chores::new(config)?;
    let workers = Workers::spawn(config, &nic, control.0.cell(), &shared)?;
    info!(
        "running: {} worker(s), {} port(s), {} service(s)",
        config.worker_cores.len(),
        nic.ports.len(),
        config.services.len()
    );
    let names: Vec<String> = config.ports.iter().map(|p| p.spec.name.clone()).collect();
    let (admin, admin_rx, admin_refusals) = endpoints::admin(opts.admin_socket.as_deref(), opts.admin_group);
    let mut lp =
        ControlLoop::new(opts.stats_interval, control, admin_rx, (shared, chores, workers), names.clone());
    let (metrics, mut failed) = match config.metrics_listen {
        Some(listen) => {
            match endpoints::metrics(listen, |r| lp.metrics_source(&nic.ports, admin_refusals, r)) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(format!("{}: metrics.listen: {listen}: {e}", config.file))),
            }
        }
        None => (None, None),
    };
    if failed.is_none() {
        failed = lp.run(&stop, &opts.reload).err();
    }

    info!("stopping");
    crate::notify::stopping();
    admin.stop();
    if let Some(m) = metrics {
        m.stop();
    }
    let (totals, worker_failed) = lp.finish();
    failed = worker_failed.or(failed);
    info!("{}", totals.one_line());
    for (port, name) in nic.ports.iter().zip(&names) {
        let s = port.stats();
        info!(
            "port {name}: nic rx {} tx {} missed {} rx_errors {} tx_errors {} no_mbuf {}",
            s.ipackets, s.opackets, s.imissed, s.ierrors, s.oerrors, s.rx_nombuf
        );
    }
    drop(nic);
    match failed {
        Some(e) => Err(e),
        None => Ok(RunReport { totals, port_names: names }),
    }
}
