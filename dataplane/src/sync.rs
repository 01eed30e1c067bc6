//! The atomics the lock-free structures use, from `std`, or from `loom` when built with
//! `RUSTFLAGS="--cfg loom"` so that their protocols can be model-checked
//! (`scripts/loom.sh`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
