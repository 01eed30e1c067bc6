//! Sluice's packet path.
//!
//! The core (everything but the `dpdk` module) does no I/O and does not link DPDK: wire
//! formats, service lookup, Maglev, the per-packet pipeline and the worker loop are plain Rust
//! over byte buffers, tested, fuzzed and benchmarked without a NIC.

pub mod cookie;
pub mod counter;
pub mod encap;
pub mod flow;
pub mod fragments;
pub mod hash;
pub mod io;
pub mod limit;
pub mod maglev;
pub mod pipeline;
pub mod prefetch;
#[cfg(not(loom))]
pub mod region;
pub mod sched;
pub mod session;
pub mod snapshot;
pub mod stats;
pub mod sync;
pub mod synproxy;
pub mod table;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod wire;
pub mod worker;

#[cfg(feature = "dpdk")]
pub mod dpdk;
