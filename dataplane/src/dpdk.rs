//! The DPDK adapter (written once dpdk-sys lands).
