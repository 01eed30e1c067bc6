//! sluice-agent: the backend host agent.
//!
//!   sluice-agent --address 198.19.0.11 [--address 2001:db8:19::11]
//!                --appliance 198.19.0.1 [--appliance 198.19.0.0/24 --appliance 2001:db8:19::1 ...]
//!                [--physical sl-phys] [--vpc 100=sl-v100 ...]
//!                [--flow-timeout 300] [--max-flows 1000000] [--max-flows-total 4000000]
//!                [--reply-to 198.18.9.1 [--reply-to 2001:db8:9::1]] [--reply-to-after 5]
//!                [--health-listen 198.19.0.11:7947 --health-key-file KEY [--vpc-netns 100=/run/netns/NAME ...]]
//!
//! Creates the TUNs (it does not configure or bring them up), binds raw sockets for protocols
//! 4 (IPv4 in IP), 41 (IPv6 in IP) and 47 (GRE) to each address (one IPv4, one IPv6 at most),
//! prints a line with `running:` and runs until SIGINT or SIGTERM, when it prints every counter
//! and exits 0.

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use sluice_agent::agent::{Agent, Config};
use sluice_agent::allow::{AllowList, Prefix};
use sluice_agent::cli::Cli;
use sluice_agent::flows::Limits;
use sluice_agent::health::{self, HealthConfig};
use sluice_control::sync::SyncKey;
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warns when the allowed prefixes hold more senders than the total has room for at their
/// full share: then enough spoofed senders inside them could fill the memory together.
fn warn_if_shares_overlap(config: &Config) {
    let Limits { per_appliance, total } = config.max_flows;
    let room = u64::try_from(total / per_appliance.max(1)).unwrap_or(u64::MAX);
    let senders = config.appliances.addresses();
    if senders > room {
        log::warn!(
            "--appliance admits {senders} sender addresses but --max-flows-total has room \
             for {room} at --max-flows each: {room} flooding senders inside them could fill the \
             flow memory; list appliances by address, or raise --max-flows-total"
        );
    }
}

/// The health channel's settings from --health-listen, --health-key-file, --vpc-netns and
/// --health-window; `None` without --health-listen.
fn health_config(cli: &Cli) -> Result<Option<HealthConfig>, String> {
    let (Some(listen), Some(key_file)) = (cli.health_listen, &cli.health_key_file) else { return Ok(None) };
    let named = |e: String| format!("--health-key-file {}: {e}", key_file.display());
    let text = std::fs::read_to_string(key_file).map_err(|e| named(e.to_string()))?;
    let key = SyncKey::from_hex(text.trim()).map_err(named)?;
    let window = Duration::from_secs(cli.health_window);
    Ok(Some(HealthConfig { listen, key, netns: cli.vpc_netns.clone(), window }))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let health_config = match health_config(&cli) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        addresses: cli.addresses,
        physical: cli.physical,
        vpcs: cli.vpcs,
        appliances: AllowList::new(cli.appliances),
        flow_timeout: cli.flow_timeout,
        max_flows: Limits { per_appliance: cli.max_flows, total: cli.max_flows_total },
        reply_to: cli.reply_to,
        reply_to_after: cli.reply_to_after,
    };
    if let Err(e) = config.validate() {
        eprintln!("sluice-agent: {e}");
        return ExitCode::from(2);
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("sluice-agent: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }

    let agent = match Agent::start(&config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vpcs: Vec<String> = config.vpcs.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let appliances: Vec<String> = config.appliances.prefixes().iter().map(Prefix::to_string).collect();
    let addresses: Vec<String> = config.addresses.iter().map(IpAddr::to_string).collect();
    println!(
        "sluice-agent running: address {} physical {} vpcs [{}] appliances [{}] flow timeout {}s \
         max flows {} per appliance, {} in all",
        addresses.join(" "),
        config.physical.as_deref().unwrap_or("-"),
        vpcs.join(" "),
        appliances.join(" "),
        config.flow_timeout,
        config.max_flows.per_appliance,
        config.max_flows.total,
    );
    warn_if_shares_overlap(&config);
    let health_counters = match health_config.map(|h| health::start(h, agent.echoes())).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::io::stdout().flush();

    // Sweep often enough that a flow outlives its timeout by at most a tenth of it (10 s).
    let sweep_every = Duration::from_secs((config.flow_timeout / 10).clamp(1, 10));
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last_sweep.elapsed() >= sweep_every {
            let n = agent.sweep();
            if n > 0 {
                log::debug!("{n} idle flows forgotten");
            }
            last_sweep = Instant::now();
        }
    }

    log::info!("stopping");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(agent.render_stats().as_bytes());
    if let Some(c) = &health_counters {
        let _ = out.write_all(c.render().as_bytes());
    }
    let _ = out.flush();
    drop(out);
    // The packet threads block in reads forever; exiting the process ends them and closes
    // the TUNs, which removes the devices.
    std::process::exit(0)
}
