//! Sluice's control plane: the pipeline config, the runtime that starts ports and workers,
//! and the counters it reports. The runtime and the metrics endpoint need DPDK (the `dpdk`
//! feature, on by default); the config, the admin API and `sluiced which` do not.

pub mod admin;
pub mod announce;
pub mod apply;
pub mod bird;
pub mod bird_config;
pub mod budget;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod health;
pub mod ids;
pub mod isolation;
pub mod labels;
pub mod locate;
#[cfg(feature = "dpdk")]
pub mod metrics;
#[cfg(feature = "dpdk")]
pub mod metrics_server;
pub mod nesting;
#[cfg(feature = "dpdk")]
pub mod notify;
pub mod peers;
pub mod readfile;
pub mod report;
#[cfg(feature = "dpdk")]
pub mod runtime;
pub mod serving;
pub mod simulate;
pub mod stage;
pub mod sync;
pub mod upgrade;
