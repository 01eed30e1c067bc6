//! xcore: the round-trip time of a cache line between two CPUs, in nanoseconds.
//!
//! The packet-rate harness moves every packet between the generator's CPU and the device
//! under test's through memif, so its figures depend on how far apart the host placed the two
//! vCPUs (same L3 or not), which can change while a VM runs. The harness runs this before and
//! after each measurement and keeps the measurement only if the placement held.
//!
//!   xcore [CPU_A] [CPU_B]     prints `xcore rtt_ns <median of 9 batches>`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (a, b) = (args.first().copied().unwrap_or(0), args.get(1).copied().unwrap_or(1));
    const ROUNDS: u64 = 20_000;
    let line = Arc::new(AtomicU64::new(0));
    let other = Arc::clone(&line);
    let total = 9 * ROUNDS;
    let echo = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: b });
        // Answer every odd value with the next even one.
        let mut want = 1;
        while want < 2 * total {
            while other.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
            }
            other.store(want + 1, Ordering::Release);
            want += 2;
        }
    });
    core_affinity::set_for_current(core_affinity::CoreId { id: a });
    let mut batches = Vec::new();
    let mut v = 0;
    for _ in 0..9 {
        let t0 = Instant::now();
        for _ in 0..ROUNDS {
            line.store(v + 1, Ordering::Release);
            while line.load(Ordering::Acquire) != v + 2 {
                std::hint::spin_loop();
            }
            v += 2;
        }
        batches.push(t0.elapsed().as_nanos() as f64 / ROUNDS as f64);
    }
    echo.join().unwrap();
    batches.sort_by(|x, y| x.total_cmp(y));
    println!("xcore rtt_ns {:.0}", batches[4]);
}
