//! The control plane at scale: a full build, and a live apply of a file that changes one
//! service, timed through the functions sluiced's control thread calls, with the snapshot's
//! memory. `bench/scale.py` writes the configs:
//!
//! ```sh
//! bench/scale.py 10000 > /tmp/s.yaml; bench/scale.py 10000 --change 1 > /tmp/s-b.yaml
//! cargo run --release -p sluice-bench --example apply_scale -- /tmp/s.yaml /tmp/s-b.yaml [ROUNDS]
//! ```
//!
//! - `full build`: what a start does: `Config::load_built` (read, parse, validate, and the
//!   build that is the dataplane's check: all `sluiced check` does), then the first snapshot
//!   with ids, built over the check's (its tables taken over).
//! - `apply`: from the request to the swapped snapshot, as `sluicectl apply` runs it: the
//!   validation and the build of the snapshot over the running one (`Staged::load`, on the
//!   apply thread), then the publish (the ids kept, what the running snapshot learned since,
//!   the swap; on the control loop). Applies alternate between the two files, so each
//!   changes one service.
//! - `snapshot`: the bytes of its Maglev tables (each counted once however many snapshots
//!   share it), and the process's peak resident memory after the full build (the config,
//!   the validation's snapshot, freed, and the snapshot: what a start peaks at).

use arc_swap::ArcSwap;
use sluice_control::config::Config;
use sluice_control::stage::{Basis, Staged};
use sluice_dataplane::snapshot::Snapshot;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Peak resident memory of this process, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
    kb.unwrap_or(0) * 1024
}

/// The bytes of the snapshot's Maglev tables, each table once.
fn table_bytes(s: &Snapshot) -> u64 {
    let mut seen = HashSet::new();
    let unique = s.services.iter().filter(|v| seen.insert(v.maglev.slots().as_ptr()));
    unique.map(|v| v.maglev.slots().len() as u64 * 2).sum()
}

/// The control thread's publish of an apply's snapshot: what the running snapshot learned,
/// the swap; the basis of the next one.
fn publish(staged: Staged, cell: &ArcSwap<Snapshot>) -> (Config, Basis) {
    let Staged { config, snapshot, mut basis, .. } = staged;
    snapshot.learn_from(&cell.load());
    cell.store(Arc::new(snapshot));
    basis.generation += 1;
    (config, basis)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
        eprintln!("usage: apply_scale A.yaml B.yaml [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let files = [PathBuf::from(a), PathBuf::from(b)];

    let t = Instant::now();
    let (config, checked) = Config::load_built(&files[0]).expect("config");
    let loaded = t.elapsed();
    let t = Instant::now();
    let mut basis = Basis { generation: 1, ..Basis::default() };
    let spec = basis.spec(&config).expect("ids");
    let first = Snapshot::build(&spec, Some(&checked)).expect("build");
    drop(checked);
    let built = t.elapsed();
    let backends: usize = first.services.iter().map(|s| s.backends.len()).sum();
    println!(
        "{} services, {backends} backends: full build {} (load and check {}, first snapshot {})",
        first.services.len(),
        ms(loaded + built),
        ms(loaded),
        ms(built)
    );
    println!(
        "snapshot: Maglev tables {:.1} MiB; peak resident {:.1} MiB",
        table_bytes(&first) as f64 / f64::from(1 << 20),
        peak_rss() as f64 / f64::from(1 << 20)
    );

    let cell = ArcSwap::from_pointee(first);
    basis.generation += 1;
    let mut running = config;
    let mut times = Vec::new();
    for round in 0..rounds {
        let file: &Path = &files[(round + 1) % 2];
        let t = Instant::now();
        let staged = Staged::load(file, &running, basis, Some(&cell.load_full())).expect("apply");
        let validated = t.elapsed();
        let next;
        (next, basis) = publish(staged, &cell);
        let total = t.elapsed();
        println!(
            "apply {}: {} (validation and build {}, publish {})",
            round + 1,
            ms(total),
            ms(validated),
            ms(total - validated)
        );
        times.push(total);
        running = next;
    }
    times.sort();
    if let Some(median) = times.get(times.len() / 2) {
        println!("apply median of {rounds}: {}", ms(*median));
    }
}
