//! What a session table's random cache lines cost this machine, whatever the code around them:
//! `cargo run --release -p sluice-bench --example memory_floor [WORK]`.
//!
//! A table the size of sluiced's default session table (8 M slots of 64 bytes, 512 MiB) is
//! read one line per "packet", at random slots, in bursts of `io::BURST` (the worker's), as
//! the worker does. Between reads, each packet does WORK steps of dependent arithmetic
//! (default 50, about the same number of nanoseconds here) that stand for the rest of a
//! packet's processing. Each line is
//! tried in five ways:
//!
//! - `cached`: 4096 slots in the table's first 256 KiB, so the lines stay in cache and their
//!   pages in the TLB; the cost of the work alone.
//! - `4096 scattered`: 4096 slots spread over the whole table (the rate harness's
//!   `established-cached` scenario): the lines fit in cache, their pages do not fit the TLB.
//!   Prefetched as the worker does.
//! - `1M, burst prefetched`: 1 M slots over the table (the `established` scenario); the worker's
//!   scheme: every slot of a burst prefetched, then the burst processed.
//! - `1M, a burst ahead`: the next burst's slots prefetched before this burst is processed, so
//!   every prefetch has a whole burst's time to land.
//! - `1M, 8 ahead`: each packet prefetches the slot of the packet 8 after it (the first 8 of
//!   a burst at its start), so prefetches are spread out instead of issued back to back.
//! - `1M, no prefetch`.
//!
//! The differences from `cached` are what the table's lines cost per packet on this machine
//! under each scheme. The work here is arithmetic on registers; a real packet's work also
//! loads and stores, and the scheme that is cheapest here need not be in sluiced (see
//! docs/performance.md, 2026-12-02).

use sluice_dataplane::io::BURST;
use sluice_dataplane::prefetch::prefetch;
use std::hint::black_box;
use std::time::Instant;

const SLOTS: usize = 8 << 20;
const WORDS: usize = 8; // a 64-byte slot
const PACKETS: usize = 1 << 20;
const REPEATS: usize = 4;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// WORK dependent steps on `x`, that the compiler cannot fold.
#[inline(always)]
fn work(mut x: u64, steps: u32) -> u64 {
    for i in 0..steps {
        x = black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(u64::from(i)));
    }
    x
}

#[derive(Clone, Copy, PartialEq)]
enum Prefetch {
    None,
    Burst,
    Ahead,
    Spread,
}

/// How far ahead `Prefetch::Spread` prefetches.
const SPREAD: usize = 8;

/// Nanoseconds per packet over `slots` (indexes into the table's words).
fn run(table: &[u64], slots: &[usize], how: Prefetch, steps: u32) -> f64 {
    let mut acc = 0u64;
    let start = Instant::now();
    for _ in 0..REPEATS {
        for (b, burst) in slots.chunks(BURST).enumerate() {
            match how {
                Prefetch::None => {}
                Prefetch::Burst => burst.iter().for_each(|&i| prefetch(&table[i])),
                Prefetch::Ahead => {
                    if let Some(next) = slots.chunks(BURST).nth(b + 1) {
                        next.iter().for_each(|&i| prefetch(&table[i]));
                    }
                }
                Prefetch::Spread => burst.iter().take(SPREAD).for_each(|&i| prefetch(&table[i])),
            }
            for (j, &i) in burst.iter().enumerate() {
                if how == Prefetch::Spread {
                    if let Some(&k) = burst.get(j + SPREAD) {
                        prefetch(&table[k]);
                    }
                }
                acc = work(acc.wrapping_add(table[i]), steps);
            }
        }
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / (REPEATS * slots.len()) as f64
}

fn main() {
    let steps: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    // Written, so that every page is resident before timing.
    let table = vec![1u64; SLOTS * WORDS];
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let random: Vec<usize> = (0..PACKETS).map(|_| (xorshift(&mut seed) as usize % SLOTS) * WORDS).collect();
    let pool: Vec<usize> = random[..4096].to_vec();
    let scattered: Vec<usize> = (0..PACKETS).map(|_| pool[xorshift(&mut seed) as usize % 4096]).collect();
    let cached: Vec<usize> = (0..PACKETS).map(|_| (xorshift(&mut seed) as usize % 4096) * WORDS).collect();

    let base = run(&table, &cached, Prefetch::Burst, steps);
    println!("{steps} work steps per packet, 512 MiB table, bursts of {BURST}; ns per packet:");
    println!("  cached (4096 slots in 256 KiB)         {base:6.1}");
    for (name, slots, how) in [
        ("4096 scattered, burst prefetched", &scattered, Prefetch::Burst),
        ("1M, burst prefetched", &random, Prefetch::Burst),
        ("1M, a burst ahead", &random, Prefetch::Ahead),
        ("1M, 8 ahead", &random, Prefetch::Spread),
        ("1M, no prefetch", &random, Prefetch::None),
    ] {
        let t = run(&table, slots, how, steps);
        println!("  {name:<38} {t:6.1}  (+{:.1})", t - base);
    }
}
