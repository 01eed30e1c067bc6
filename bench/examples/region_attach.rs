//! What attaching to a session region costs a restarted sluiced (issue 24):
//! `cargo run --release -p sluice-bench --example region_attach [SESSIONS ...]`
//! (default: 1 M and 16 M sessions; the files go under `$SLUICE_REGION_DIR`, default /dev/shm).
//!
//! For each count, a first "process" makes a region for a table of that capacity and fills it
//! with that many sessions, then lets it go (the file stays, as a stopped sluiced's does). A
//! second one attaches as sluiced does at start, each step timed:
//!
//! - `open`: the header read and checked, the file mapped and its pages faulted in
//!   (`Region::open`, `MADV_POPULATE_WRITE`);
//! - `recover`: every slot read once, torn ones made tombstones, the per-backend and
//!   per-service counts counted again (`SessionTable::recover`);
//! - `hold`: the SYN proxy's held segments looked over (`HoldPool::in_region`).
//!
//! Their sum is what attaching adds to a restart's outage (DPDK's and the ports' start come on
//! top). The file is in memory (tmpfs) all along, as between a stop and a start.

use sluice_dataplane::flow::Addr;
use sluice_dataplane::region::{Header, Opened, Region, LAYOUT_VERSION};
use sluice_dataplane::session::{Insert, Session, SessionKey, SessionTable, TcpState, Timeouts};
use sluice_dataplane::synproxy::HoldPool;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn header(capacity: usize) -> Header {
    Header {
        layout: LAYOUT_VERSION,
        slots: SessionTable::slots_for(capacity) as u64,
        capacity: capacity as u64,
        seeds: SessionTable::seeds_of(0x5eed),
        epoch_ns: 1,
    }
}

/// Session `i`'s key: clients over 198.18.0.0/15, 128 ports each.
fn key(i: usize) -> SessionKey {
    let ip = Ipv4Addr::from(0xc612_0000 + (i % (1 << 17)) as u32);
    SessionKey::flow(Addr::v4(ip), 1024 + (i >> 17) as u16, (i % 16) as u16)
}

/// The first process: a new region filled with `n` sessions.
fn fill(path: &Path, n: usize) -> Result<Duration, String> {
    let _ = std::fs::remove_file(path);
    let start = Instant::now();
    let (region, opened) = Region::open(path, header(n), true)?;
    assert!(matches!(opened, Opened::Fresh { .. }));
    let t = SessionTable::in_region(Arc::new(region), n, Timeouts::default());
    for i in 0..n {
        let k = key(i);
        let s = Session::new((i % 64) as u32, TcpState::Established, 100);
        if !matches!(t.insert(&k, t.hash(&k), &s), Insert::Inserted(_)) {
            return Err(format!("session {i} of {n} found no slot"));
        }
    }
    Ok(start.elapsed())
}

/// The second process's attach: (open, recover, hold) times and the sessions found.
fn attach(path: &Path, n: usize) -> Result<([Duration; 3], usize), String> {
    let t0 = Instant::now();
    let (region, opened) = Region::open(path, header(n), false)?;
    assert!(matches!(opened, Opened::Attached));
    let region = Arc::new(region);
    let t1 = Instant::now();
    let table = SessionTable::in_region(Arc::clone(&region), n, Timeouts::default());
    let found = table.recover();
    let t2 = Instant::now();
    let (_hold, _) = HoldPool::in_region(region);
    let t3 = Instant::now();
    Ok(([t1 - t0, t2 - t1, t3 - t2], found.live))
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

fn run(dir: &Path, n: usize) -> Result<(), String> {
    let path: PathBuf = dir.join(format!("sluice-bench-region-{}-{n}", std::process::id()));
    let filled = fill(&path, n);
    let attached = filled.and_then(|f| attach(&path, n).map(|a| (f, a)));
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let (fill_time, ([open, recover, hold], live)) = attached?;
    if live != n {
        return Err(format!("{live} sessions taken over of {n}"));
    }
    let count = if n >= 1 << 20 { format!("{} M", n >> 20) } else { format!("{} K", n >> 10) };
    println!(
        "| {count:>6} | {:>5} MiB | {:>6} | {:>6} | {:>4} | **{}** | {} |",
        bytes >> 20,
        ms(open),
        ms(recover),
        ms(hold),
        ms(open + recover + hold),
        ms(fill_time)
    );
    Ok(())
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![1 << 20, 16 << 20] } else { counts };
    let dir = PathBuf::from(std::env::var("SLUICE_REGION_DIR").unwrap_or_else(|_| "/dev/shm".into()));
    println!("| sessions | file | open ms | recover ms | hold ms | attach ms | (fill ms) |");
    println!("|---|---|---|---|---|---|---|");
    for n in counts {
        if let Err(e) = run(&dir, n) {
            eprintln!("region_attach: {n} sessions: {e}");
            std::process::exit(1);
        }
    }
}
