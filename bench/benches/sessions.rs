//! Session table operations at 1 M and 16 M live sessions: `cargo bench -p sluice-bench --bench
//! sessions`. Method and figures: docs/performance.md.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sluice_dataplane::flow::Addr;
use sluice_dataplane::hash::mix64;
use sluice_dataplane::session::{Insert, Session, SessionKey, SessionTable, TcpState, Timeouts};
use std::hint::black_box;
use std::net::Ipv4Addr;

/// Key `i` (distinct for every `i` below 2^36): client address from 198.18.0.0/15, port,
/// service. The table hashes keys with its own seed, so consecutive keys land far apart.
fn key(i: u64) -> SessionKey {
    SessionKey::flow(
        Addr::v4(Ipv4Addr::from(0xc612_0000 | (i as u32 & 0x1_ffff))),
        (i >> 17) as u16,
        (i >> 33) as u16 & 7,
    )
}

/// Stands in for a packet's classification: about 400 instructions that depend on one
/// another but not on memory.
fn classify_work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// A table for `n` sessions, filled with `n` of them (keys 0..n).
fn filled(n: u64) -> SessionTable {
    let t = SessionTable::new(n as usize, Timeouts::default(), 42);
    for i in 0..n {
        let k = key(i);
        let r = t.insert(&k, t.hash(&k), &Session::new(i as u32 & 0xffff, TcpState::Established, 100));
        assert!(matches!(r, Insert::Inserted(_)), "{r:?}");
    }
    t
}

fn sessions(c: &mut Criterion) {
    for (label, n) in [("1M", 1u64 << 20), ("16M", 16_000_000)] {
        let t = filled(n);
        eprintln!(
            "{label}: {} sessions in {} slots, {} MiB: {:.0} bytes per session",
            n,
            t.slot_count(),
            t.memory_bytes() >> 20,
            t.memory_bytes() as f64 / n as f64
        );
        let mut g = c.benchmark_group(format!("sessions_{label}"));
        g.throughput(Throughput::Elements(1));
        g.sample_size(30);

        let mut i = 0u64;
        g.bench_function("lookup_hit", |b| {
            b.iter(|| {
                i = (i + 7_919) % n;
                let k = key(i);
                black_box(t.lookup(&k, t.hash(&k)))
            })
        });

        // Hash and prefetch a burst of 32 back to back, then look them up: more prefetches in
        // a row than the CPU keeps in flight, so later ones wait (kept to show the difference).
        g.throughput(Throughput::Elements(32));
        let mut j = 0u64;
        g.bench_function(BenchmarkId::new("lookup_hit_batched_prefetch", 32), |b| {
            b.iter(|| {
                let mut keys = [key(0); 32];
                let mut hashes = [0u64; 32];
                for (k, h) in keys.iter_mut().zip(hashes.iter_mut()) {
                    j = (j + 7_919) % n;
                    *k = key(j);
                    *h = t.hash(k);
                    t.prefetch(*h);
                }
                let mut found = 0;
                for (k, h) in keys.iter().zip(&hashes) {
                    found += t.lookup(k, *h).is_some() as u32;
                }
                black_box(found)
            })
        });
        // A sliding window: prefetch the slot of the key 16 ahead while looking up this one.
        // This is the pattern the worker produces: it classifies a burst (hashing and
        // prefetching each packet's slot between ~30 ns of other work) before it looks up.
        // 4 M random keys: the slots they touch (256 MiB) do not stay in any cache between
        // passes, so every lookup is a real miss to memory unless prefetched.
        const STREAM: usize = 1 << 22;
        let stream: Vec<(SessionKey, u64)> = (0..STREAM as u64)
            .map(|i| {
                let k = key(mix64(i ^ 0xabc) % n);
                let h = t.hash(&k);
                (k, h)
            })
            .collect();
        let mut at = 0usize;
        g.throughput(Throughput::Elements(32));
        g.bench_function(BenchmarkId::new("lookup_hit_prefetch_window16", 32), |b| {
            b.iter(|| {
                let mut found = 0;
                for _ in 0..32 {
                    t.prefetch(stream[(at + 16) % STREAM].1);
                    let (k, h) = &stream[at];
                    found += t.lookup(k, *h).is_some() as u32;
                    at = (at + 1) % STREAM;
                }
                black_box(found)
            })
        });
        // The worker's pattern: each packet of a burst of 32 is classified (about 400
        // instructions of arithmetic stand in for parsing here) before its slot is wanted.
        // Prefetching each slot right after its packet's classification leaves the CPU's
        // reorder window holding one prefetch at a time, and a prefetch whose address misses
        // the TLB holds up everything behind it until the page walk ends. Classifying the
        // whole burst, then prefetching its 32 slots back to back, puts them all in flight
        // together. (The worker did the first until 2026-12-02 and does the second now.)
        for (name, all_first) in [("classify_prefetch_each", false), ("classify_all_then_prefetch_all", true)]
        {
            g.bench_function(BenchmarkId::new(name, 32), |b| {
                b.iter(|| {
                    let mut burst = [(key(0), 0u64); 32];
                    let mut acc = 0u64;
                    for slot in burst.iter_mut() {
                        *slot = stream[at];
                        at = (at + 1) % STREAM;
                        acc ^= classify_work(slot.1);
                        if !all_first {
                            t.prefetch(slot.1);
                        }
                    }
                    if all_first {
                        for (_, h) in &burst {
                            t.prefetch(*h);
                        }
                    }
                    let mut found = 0;
                    for (k, h) in &burst {
                        found += t.lookup(k, *h).is_some() as u32;
                    }
                    black_box((found, acc))
                })
            });
        }
        g.throughput(Throughput::Elements(1));

        let mut m = 0u64;
        g.bench_function("lookup_miss", |b| {
            b.iter(|| {
                m += 1;
                let k = key(n + m);
                black_box(t.lookup(&k, t.hash(&k)))
            })
        });

        // Insert a new session and remove it: the table stays at n. The control thread sweeps
        // the whole table every second in sluiced, clearing tombstones; here a full sweep runs
        // (untimed) every 64 K operations, or tombstones would pile up as they never do there.
        let mut x = 0u64;
        g.bench_function("insert_and_remove", |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let run = left.min(1 << 16);
                    let t0 = std::time::Instant::now();
                    for _ in 0..run {
                        x += 1;
                        let k = key((1 << 35) + x);
                        let h = t.hash(&k);
                        if let Insert::Inserted(slot) =
                            t.insert(&k, h, &Session::new(1, TcpState::SynSent, 100))
                        {
                            t.remove(slot, &k);
                        }
                    }
                    spent += t0.elapsed();
                    t.sweep(101, 0, t.slot_count(), |_, _| {});
                    left -= run;
                }
                spent
            })
        });

        // The sweep over live sessions that are not due: cost per slot scanned.
        let slots = t.slot_count();
        let chunk = 1 << 16;
        let mut at = 0usize;
        g.throughput(Throughput::Elements(chunk as u64));
        g.bench_function(BenchmarkId::new("sweep_scan_slots", chunk), |b| {
            b.iter(|| {
                at = (at + chunk) % slots;
                black_box(t.sweep(101, at, chunk, |_, _| {}))
            })
        });
        g.finish();
        drop(t);
    }

    // Expiry proper: a sweep that removes every session it meets (1 M, rebuilt per sample).
    let mut g = c.benchmark_group("sessions_expire");
    g.sample_size(10);
    let n = 1u64 << 20;
    g.throughput(Throughput::Elements(n));
    g.bench_function("sweep_expire_1M", |b| {
        b.iter_batched(
            || filled(n),
            |t| {
                let s = t.sweep(u32::MAX / 2, 0, t.slot_count(), |_, _| {});
                assert_eq!(s.expired as u64, n);
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, sessions);
criterion_main!(benches);
