//! sluiced: the Sluice appliance.
//!
//!   sluiced --config FILE     run the pipeline in FILE (SIGHUP: apply FILE again; admin API
//!                             on --admin-socket for sluicectl, mode 0600, or 0660 with
//!                             --admin-group NAME)
//!   sluiced check FILE        validate FILE; print every error with file, line and field
//!   sluiced which FILE tcp 198.18.0.2:40000 198.18.10.1:80
//!                             the backend any appliance running FILE picks for that flow
//!   sluiced upgrade-check FILE  with the binary about to be installed: whether a restart on
//!                             FILE keeps the connections in its session region
//!
//! Built without the `dpdk` feature, sluiced checks and simulates but does not run.

use clap::Parser;
use sluice_control::cli::sluiced::{Cli, Command};
use sluice_control::config::Config;
use sluice_control::simulate;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { file }), _) => check(&file),
        (Some(Command::Which { file, protocol, source, destination }), _) => {
            which(&file, &protocol, &source, &destination)
        }
        (Some(Command::UpgradeCheck { file }), _) => upgrade_check(&file),
        (None, Some(path)) => {
            let flags = RunFlags {
                stats_interval: cli.stats_interval,
                print_stats: cli.print_stats,
                admin_socket: cli.admin_socket,
                admin_group: cli.admin_group,
            };
            run_config(path, flags)
        }
        (None, None) => {
            eprintln!("sluiced: give --config FILE to run, or `sluiced check FILE`");
            ExitCode::from(2)
        }
    }
}

/// A config file, validated, or its errors printed.
fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// `sluiced check FILE`.
fn check(file: &Path) -> ExitCode {
    let c = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let backends: usize = c.services.iter().map(|s| s.backends.len()).sum();
    println!(
        "{}: ok ({} ports, {} services, {} backends, {} workers)",
        file.display(),
        c.ports.len(),
        c.services.len(),
        backends,
        c.worker_cores.len()
    );
    ExitCode::SUCCESS
}

/// `sluiced upgrade-check FILE`.
fn upgrade_check(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match sluice_control::upgrade::check(&config, &file.display().to_string()) {
        Ok(v) => {
            print!("{}", v.text);
            if v.keeps {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluiced upgrade-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// `sluiced which FILE PROTOCOL SOURCE DESTINATION`.
fn which(file: &Path, protocol: &str, source: &str, destination: &str) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match simulate::parse_flow(protocol, source, destination).and_then(|f| simulate::which(&config, &f)) {
        Ok(c) => {
            println!("{} {} tunnel {} out {}", c.service, c.backend, c.tunnel, c.port);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluiced which: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line's settings for a run.
struct RunFlags {
    stats_interval: u64,
    print_stats: bool,
    admin_socket: PathBuf,
    admin_group: Option<String>,
}

/// `sluiced --config FILE` without DPDK: the file is checked (its errors printed as `check`
/// prints them), then the run refused.
#[cfg(not(feature = "dpdk"))]
fn run_config(path: PathBuf, flags: RunFlags) -> ExitCode {
    let _ = (flags.stats_interval, flags.print_stats, flags.admin_socket, flags.admin_group);
    if let Err(code) = load(&path) {
        return code;
    }
    eprintln!("sluiced: this sluiced was built without DPDK; only check and which are available");
    ExitCode::from(2)
}

/// `sluiced --config FILE`: validates it, sets up signals, runs until SIGINT or SIGTERM.
#[cfg(feature = "dpdk")]
fn run_config(path: PathBuf, flags: RunFlags) -> ExitCode {
    use sluice_control::runtime::{run, RunOptions};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;
    let (config, checked) = match Config::load_built(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    // SIGHUP: apply the config file again (validated first; refused, the running one stays).
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)) {
        eprintln!("cannot handle SIGHUP: {e}");
        return ExitCode::FAILURE;
    }
    let admin_group = match flags.admin_group.as_deref().map(sluice_control::admin::group_id).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sluiced: --admin-group: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = RunOptions {
        stats_interval: Duration::from_secs(flags.stats_interval),
        config_path: Some(path.clone()),
        admin_socket: (flags.admin_socket.as_os_str() != "none").then_some(flags.admin_socket),
        admin_group,
        reload,
    };
    match run((&config, Some(checked)), &opts, stop) {
        Ok(report) => {
            if flags.print_stats {
                print!("{}", report.totals.render(&report.port_names));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluiced: {e}");
            ExitCode::from(2)
        }
    }
}
