//! sluicectl: talks to a running sluiced through its admin API (a local Unix socket).
//!
//!   sluicectl status | services | counters
//!   sluicectl sessions [--service S] [--backend B] [--client IP] [--limit N]
//!   sluicectl drain SERVICE BACKEND     no new flows to BACKEND (its sessions stay)
//!   sluicectl restore SERVICE BACKEND
//!   sluicectl apply [FILE]              validate and apply FILE (default: sluiced's own)
//!   sluicectl drain-appliance           withdraw every VIP, wait for traffic to move, stop
//!
//! Exit status: 0 done, 1 refused by sluiced (the reason is printed), 2 sluiced not reached.

use clap::{Parser, Subcommand};
use sluice_control::admin::{call, Request, Response, DEFAULT_SOCKET};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluicectl", version, about = "Control a running sluiced")]
struct Cli {
    /// sluiced's admin socket (`sluiced --admin-socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match cli.command {
        Command::Status => Request::Status,
        Command::Services => Request::Services,
        Command::Sessions { service, backend, client, limit } => {
            Request::Sessions { service, backend, client, limit: Some(limit) }
        }
        Command::Counters => Request::Counters,
        Command::Drain { service, backend } => Request::Drain { service, backend },
        Command::Restore { service, backend } => Request::Restore { service, backend },
        Command::DrainAppliance => Request::DrainAppliance,
        Command::Apply { file } => Request::Apply {
            // sluiced resolves relative paths from its own directory: send an absolute one.
            file: file.map(|f| std::path::absolute(&f).unwrap_or(f).display().to_string()),
        },
    };
    match call(&cli.socket, &req) {
        Ok(Response::Ok { text }) => {
            print!("{}", with_newline(text));
            ExitCode::SUCCESS
        }
        Ok(Response::Refused { text }) => {
            eprint!("{}", with_newline(text));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("sluicectl: {e}");
            ExitCode::from(2)
        }
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
