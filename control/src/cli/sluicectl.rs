//! `sluicectl`'s command line: one subcommand per admin request.

use crate::admin::DEFAULT_SOCKET;
use crate::ctl::output::Format;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "sluicectl", version, about = "Control a running sluiced")]
pub struct Cli {
    /// sluiced's admin socket (`sluiced --admin-socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Output: `text` for people, `json` (one object per answer; fields in
    /// docs/operations.md) for scripts. The exit status is the same either way.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Config file, generation, last apply, workers, uptime, sessions.
    Status,
    /// Services and their backends: weight, drain state, active sessions.
    Services,
    /// Live sessions.
    Sessions {
        #[arg(long)]
        service: Option<String>,
        /// A backend as `services` prints it (address, or address:port for NAT).
        #[arg(long)]
        backend: Option<String>,
        /// A client IPv4 address.
        #[arg(long)]
        client: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every counter.
    Counters,
    /// Packets, bytes and connections per service and backend; drops by reason.
    ///
    /// Totals since sluiced started (as `ipvsadm -Ln --stats`), or per second with `--rate`.
    Stats {
        /// Per second instead (as `ipvsadm -Ln --rate`): two readings `--interval` apart.
        #[arg(long)]
        rate: bool,
        /// The time between the two readings of `--rate`, in seconds.
        #[arg(long, default_value = "1", value_parser = seconds, requires = "rate")]
        interval: Duration,
    },
    /// A live view of services, backends, health, rates and drops; `q` quits.
    ///
    /// Full screen, refreshed every `--interval`: services, backends (state, weight, health
    /// check, sessions), packets, bytes and connections per second, drops by reason. `q`, Esc
    /// or Ctrl-C quits. With `-o json`: a line of rates per refresh instead.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value = "1", value_parser = seconds)]
        interval: Duration,
    },
    /// The running session region and the upgrade procedure.
    ///
    /// How to upgrade sluiced without breaking connections: check the new binary with
    /// `sluiced upgrade-check CONFIG` first, then restart.
    Upgrade,
    /// Stop sending new flows to a backend; its sessions stay.
    Drain { service: String, backend: String },
    /// Send new flows to a drained backend again.
    Restore { service: String, backend: String },
    /// Validate a pipeline file and apply it without a restart (default: the file sluiced
    /// runs, re-read). A refused file leaves the running config as it is.
    Apply { file: Option<PathBuf> },
    /// Withdraw every VIP from the routers, wait until traffic has moved to the other
    /// appliances, then stop sluiced (as SIGTERM does).
    DrainAppliance,
}

/// A duration in seconds (fractions allowed), from 0.1 s to one hour.
fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&n) {
        return Err(format!("{s} s is outside 0.1 to 3600 s"));
    }
    Ok(Duration::from_secs_f64(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluicectl").chain(args.iter().copied()))
    }

    #[test]
    fn output_is_text_unless_told_and_goes_anywhere() {
        assert_eq!(parse(&["status"]).unwrap().output, Format::Text);
        assert_eq!(parse(&["-o", "json", "status"]).unwrap().output, Format::Json);
        assert_eq!(parse(&["services", "--output", "json"]).unwrap().output, Format::Json);
        assert!(parse(&["-o", "yaml", "status"]).is_err());
    }

    #[test]
    fn stats_rate_and_intervals() {
        let c = parse(&["stats"]).unwrap();
        assert!(matches!(c.command, Command::Stats { rate: false, .. }));
        let c = parse(&["stats", "--rate", "--interval", "2.5"]).unwrap();
        assert!(
            matches!(c.command, Command::Stats { rate: true, interval } if interval == Duration::from_millis(2500))
        );
        assert!(parse(&["stats", "--interval", "2"]).is_err(), "--interval without --rate");
        assert!(parse(&["stats", "--rate", "--interval", "0"]).is_err());
        let c = parse(&["watch"]).unwrap();
        assert!(matches!(c.command, Command::Watch { interval } if interval == Duration::from_secs(1)));
        assert!(matches!(parse(&["upgrade"]).unwrap().command, Command::Upgrade));
    }
}
