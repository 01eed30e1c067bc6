//! `sluiced`'s command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "sluiced", version, about = "Sluice L4 gateway appliance")]
pub struct Cli {
    /// The pipeline config to run.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Log a counter summary every N seconds (0: never).
    #[arg(long, default_value_t = 10)]
    pub stats_interval: u64,
    /// Print every counter to standard output when stopping.
    #[arg(long)]
    pub print_stats: bool,
    /// The admin API's Unix socket (`sluicectl --socket`); "none" for no admin API.
    #[arg(long, default_value = crate::admin::DEFAULT_SOCKET)]
    pub admin_socket: PathBuf,
    /// A group whose members may use the admin socket too (mode 0660); without it the socket
    /// is sluiced's user's only (0600).
    #[arg(long, value_name = "NAME")]
    pub admin_group: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a pipeline config and exit: 0 if valid, 1 with the errors if not.
    Check { file: PathBuf },
    /// Print the service and backend a flow gets under a config (what every appliance running
    /// it would pick for a new flow).
    Which {
        file: PathBuf,
        /// tcp or udp
        protocol: String,
        /// Client ADDRESS:PORT
        source: String,
        /// VIP ADDRESS:PORT
        destination: String,
    },
    /// Run with the binary about to be installed: whether a restart of sluiced on a config
    /// with this binary keeps the connections in the session region the config names (exit 0)
    /// or not (1), which services and backends of the region the config no longer names, and
    /// the upgrade procedure. Only reads the region.
    UpgradeCheck { file: PathBuf },
}
