//! sluicectl: talks to a running sluiced through its admin API (a local Unix socket).
//!
//!   sluicectl [-o json] status | services | counters | upgrade
//!   sluicectl sessions [--service S] [--backend B] [--client IP] [--limit N]
//!   sluicectl stats [--rate [--interval SECONDS]]
//!   sluicectl watch [--interval SECONDS]   a live view; q quits
//!   sluicectl drain SERVICE BACKEND     no new flows to BACKEND (its sessions stay)
//!   sluicectl restore SERVICE BACKEND
//!   sluicectl apply [FILE]              validate and apply FILE (default: sluiced's own)
//!   sluicectl drain-appliance           withdraw every VIP, wait for traffic to move, stop
//!
//! Exit status: 0 done, 1 refused by sluiced (the reason is printed), 2 sluiced not reached.

use clap::Parser;
use sluice_control::admin::{call, Request};
use sluice_control::cli::sluicectl::{Cli, Command};
use sluice_control::ctl::{client, output, watch};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let got = match cli.command {
        Command::Watch { interval } => return ExitCode::from(watch::run(&cli.socket, cli.output, interval)),
        Command::Stats { rate: true, interval } => client::rates(&cli.socket, interval),
        command => call(&cli.socket, &request(command)),
    };
    let printed = output::render(cli.output, &got);
    print!("{}", printed.stdout);
    eprint!("{}", printed.stderr);
    let _ = std::io::stdout().flush();
    ExitCode::from(printed.code)
}

/// The admin request a one-shot command makes.
fn request(command: Command) -> Request {
    match command {
        Command::Status => Request::Status,
        Command::Services => Request::Services,
        Command::Sessions { service, backend, client, limit } => {
            Request::Sessions { service, backend, client, limit: Some(limit) }
        }
        Command::Counters => Request::Counters,
        Command::Stats { .. } | Command::Watch { .. } => Request::Stats,
        Command::Upgrade => Request::Upgrade,
        Command::Drain { service, backend } => Request::Drain { service, backend },
        Command::Restore { service, backend } => Request::Restore { service, backend },
        Command::DrainAppliance => Request::DrainAppliance,
        Command::Apply { file } => Request::Apply {
            // sluiced resolves relative paths from its own directory: send an absolute one.
            file: file.map(|f| std::path::absolute(&f).unwrap_or(f).display().to_string()),
        },
    }
}
