//! sluice-agent: the backend host agent.
//!
//!   sluice-agent --address 198.19.0.11 [--physical sl-phys] [--vpc 100=sl-v100 ...]
//!                [--flow-timeout 300] [--max-flows 1000000]
//!
//! Creates the TUNs (it does not configure or bring them up), binds raw IPIP and GRE sockets
//! to the address, prints a line with `running:` and runs until SIGINT or SIGTERM, when it
//! prints every counter and exits 0.

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use sluice_agent::agent::{Agent, Config};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "sluice-agent",
    version,
    about = "Sluice backend host agent: userspace IPIP/GRE decapsulation"
)]
struct Cli {
    /// This host's address: where appliances tunnel to, and the source of tunneled replies.
    #[arg(long)]
    address: Ipv4Addr,
    /// TUN device to create for IPIP and keyless GRE.
    #[arg(long)]
    physical: Option<String>,
    /// KEY=NAME: TUN device to create for GRE with key KEY (decimal), one per VPC. Repeatable.
    #[arg(long = "vpc", value_name = "KEY=NAME", value_parser = parse_vpc)]
    vpcs: Vec<(u32, String)>,
    /// Seconds a flow is remembered for its replies after its last packet.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    flow_timeout: u64,
    /// Most flows remembered at once; packets of new flows beyond it are delivered, but
    /// their replies are dropped (no_flow).
    #[arg(long, default_value_t = 1_000_000)]
    max_flows: usize,
}

fn parse_vpc(s: &str) -> Result<(u32, String), String> {
    let (key, name) = s.split_once('=').ok_or_else(|| format!("expected KEY=NAME, got {s:?}"))?;
    let key = key.parse::<u32>().map_err(|e| format!("GRE key {key:?}: {e}"))?;
    if name.is_empty() {
        return Err(format!("no TUN name in {s:?}"));
    }
    Ok((key, name.to_string()))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let config = Config {
        address: cli.address,
        physical: cli.physical,
        vpcs: cli.vpcs,
        flow_timeout: cli.flow_timeout,
        max_flows: cli.max_flows,
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
    println!(
        "sluice-agent running: address {} physical {} vpcs [{}] flow timeout {}s",
        config.address,
        config.physical.as_deref().unwrap_or("-"),
        vpcs.join(" "),
        config.flow_timeout
    );
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
    let _ = out.flush();
    drop(out);
    // The packet threads block in reads forever; exiting the process ends them and closes
    // the TUNs, which removes the devices.
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpc_arguments() {
        assert_eq!(parse_vpc("100=sl-v100"), Ok((100, "sl-v100".into())));
        assert_eq!(parse_vpc("4294967295=x"), Ok((u32::MAX, "x".into())));
        for bad in ["100", "=x", "x=y", "100=", "-1=x", "4294967296=x"] {
            assert!(parse_vpc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "sluice-agent",
            "--address",
            "198.19.0.11",
            "--physical",
            "sl-phys",
            "--vpc",
            "100=sl-v100",
            "--vpc",
            "7=agt7",
        ])
        .unwrap();
        assert_eq!(c.vpcs, [(100, "sl-v100".to_string()), (7, "agt7".to_string())]);
        assert_eq!((c.flow_timeout, c.physical.as_deref()), (300, Some("sl-phys")));
        assert!(
            Cli::try_parse_from(["sluice-agent", "--address", "198.19.0.11", "--flow-timeout", "0"]).is_err()
        );
        assert!(Cli::try_parse_from(["sluice-agent"]).is_err());
    }
}
