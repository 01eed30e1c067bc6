//! Sluice's control plane: the pipeline config, the runtime that starts ports and workers,
//! and the counters it reports.

pub mod config;
pub mod ids;
pub mod locate;
pub mod report;
pub mod runtime;
pub mod simulate;
