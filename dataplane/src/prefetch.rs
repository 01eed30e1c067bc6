//! Cache prefetch hints for batched lookups (the worker prefetches each packet's Maglev slot
//! a pass ahead of using it; the session table will prefetch its buckets the same way).
//!
//! This is one of the few `unsafe` blocks outside `ffi/` (the others are in the lock-free
//! structures): stable Rust has no safe prefetch, and a plain load is no substitute, since a
//! missing load holds up retirement while a prefetch retires at once.

/// Asks the CPU to bring the cache line holding `p` into L1. No effect on program state.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address (even an invalid
    // or unmapped one), and neither reads nor writes memory in the language's sense. SSE, which
    // provides it, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// As [`prefetch`], for a line about to be written (PREFETCHW: the line arrives ready to be
/// modified, saving the ownership request a store would make).
#[inline(always)]
pub fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`: a hint that never faults nor touches memory semantically.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches element `i` of `s` if it exists.
#[inline(always)]
pub fn prefetch_index<T>(s: &[T], i: usize) {
    if let Some(x) = s.get(i) {
        prefetch(x as *const T);
    }
}
