//! `sluicectl`'s command line: one subcommand per admin request.

use crate::admin::DEFAULT_SOCKET;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "sluicectl", version, about = "Control a running sluiced")]
pub struct Cli {
    /// sluiced's admin socket (`sluiced --admin-socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
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
