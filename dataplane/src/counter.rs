//! The bottom of the crate's counting: the one-writer [`Counter`], zeroed arrays of them, and
//! the id spaces that per-service and per-backend arrays are indexed by. It imports nothing
//! from the crate, so `stats`, `limit` and `session` can all build on it without a circle.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Service ids are below this (they are u16).
pub const MAX_SERVICE_IDS: usize = 1 << 16;

/// Backend ids are below this (they index the per-backend connection counts).
pub const MAX_BACKEND_IDS: usize = 1 << 16;

/// A counter with one writer. `add` is a relaxed load and store, not a locked read-modify-write:
/// correct because only the owning worker writes it; readers may see a slightly old value.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Overwrites the value (its one writer only).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// An atomic add, for counters that several threads write (rare paths only).
    #[inline]
    pub fn fetch_add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
}

/// `n` counters at zero, from a zeroed allocation: large arrays (per service and backend id)
/// cost no time to make and no memory until touched.
pub fn counters(n: usize) -> Box<[Counter]> {
    let c = Box::<[Counter]>::new_zeroed_slice(n);
    // SAFETY: Counter is a transparent AtomicU64, which has the layout of u64 and for which
    // all-zero bytes are the valid value 0.
    unsafe { c.assume_init() }
}
