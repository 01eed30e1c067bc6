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

use clap::Parser;
use sluice_control::admin::{call, Request, Response};
use sluice_control::cli::sluicectl::{Cli, Command};
use std::process::ExitCode;

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
