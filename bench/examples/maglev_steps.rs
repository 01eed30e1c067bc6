//! How much of a Maglev table one backend more or less moves, by table size and backend
//! count, over random backend sets: the figures behind `maglev::SIZE_STEPS`
//! (docs/performance.md, "Control plane at scale").
//!
//! ```sh
//! cargo run --release -p sluice-bench --example maglev_steps -- [SETS] [M,M,...] [N,N,...]
//! ```
//!
//! For each (M, N): SETS backend sets of N random identities; from each, one backend is left
//! out, and the slots whose backend changed are counted. Removing one of N must move 1/N of
//! the slots; the excess over 1/N is printed (mean, median, 99th percentile, worst) with the
//! number of sets whose move exceeds 1/N + 1%, the bound of the Maglev tests.

use sluice_dataplane::hash::mix64;
use sluice_dataplane::maglev::{Maglev, MaglevInput};

fn build(ids: &[Vec<u8>], m: u32) -> Maglev {
    Maglev::build(&ids.iter().map(|id| MaglevInput { id, weight: 1 }).collect::<Vec<_>>(), m)
}

/// The excess over 1/N of the slots that move when backend `k` of `all` leaves.
fn excess(all: &[Vec<u8>], k: usize, m: u32) -> f64 {
    let mut less = all.to_vec();
    less.remove(k);
    build(all, m).moved_share(all, &build(&less, m), &less) - 1.0 / all.len() as f64
}

fn list<T: std::str::FromStr>(arg: Option<&String>, default: &str) -> Vec<T> {
    arg.map_or(default, |s| s.as_str()).split(',').filter_map(|x| x.parse().ok()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sets: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(100);
    let sizes: Vec<u32> = list(args.get(1), "1021,4093,8191,16381,32749,65537");
    let counts: Vec<usize> = list(args.get(2), "2,3,4,5,8,10,16,32,65");
    for &m in &sizes {
        for &n in counts.iter().filter(|&&n| n >= 2 && n * 10 < m as usize) {
            let mut ex: Vec<f64> = (0..sets)
                .map(|set| {
                    let ids: Vec<Vec<u8>> =
                        (0..n as u64).map(|i| mix64(set << 16 | i).to_be_bytes()[..6].to_vec()).collect();
                    excess(&ids, set as usize % n, m)
                })
                .collect();
            ex.sort_by(f64::total_cmp);
            let mean = ex.iter().sum::<f64>() / ex.len() as f64;
            let over = ex.iter().filter(|&&e| e > 0.01).count();
            let at = |q: usize| ex[(ex.len() - 1) * q / 100] * 100.0;
            println!(
                "M={m:6} N={n:3} M/N={:6}: excess mean {:.2}% median {:.2}% p99 {:.2}% worst {:.2}%, over 1/N+1%: {over}/{sets}",
                m as usize / n,
                mean * 100.0,
                at(50),
                at(99),
                at(100)
            );
        }
    }
}
