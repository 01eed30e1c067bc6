//! The table size of a service whose config gives none: it follows the backend count, in a
//! few fixed steps.
//!
//! Two properties depend on M / N (slots per backend). Balance: with equal weights every
//! backend holds ⌊M/N⌋ or ⌈M/N⌉ slots, so M > 100 × N (Maglev's rule) keeps each within 1%
//! of its share. Disruption: removing one of N backends moves its 1/N of the slots and, as
//! the others' turns shift, some of theirs: measured over random backend sets
//! (`bench/examples/maglev_steps.rs`, docs/performance.md), that excess averages about
//! 2.5% at M/N = 100, 1% at 500 and 0.5-0.7% at 1000, with a tail that is heavier in small
//! tables. Today's tests hold Maglev to 1/N + 1%, so the steps keep M > 1000 × N, not 100 × N.
//!
//! A size per backend count would remap a service's every flow each time a backend joins or
//! leaves (a table of another size is another table), so the size changes only in steps:
//! primes just below powers of two, each about twice the last, up to the default 65,537.
//! Crossing a step (5, 9, 17, 33 backends, and back) remaps most of the service's new flows;
//! flows with a session keep their backend either way. One backend is the exception: its
//! table names it in every slot, so any table of it is every other's, and a second backend
//! (in the next step) moves only the flows it takes. It gets 101 slots (M > 100 × N). The size depends on the config's
//! backend list alone (not on weights, drains or health), so every appliance with the same
//! config computes the same one.

use super::DEFAULT_TABLE_SIZE;

/// The table of a service with at most one backend.
pub const SINGLE_SIZE: u32 = 101;

/// The steps above one backend, smallest first: 2^12 - 3, 2^13 - 1, 2^14 - 3, 2^15 - 19
/// (primes) and the default 65,537. A service of N backends gets the first step larger than
/// 1000 × N: up to 4, 8, 16, 32 and 65 backends; more than 65 get the default, as every
/// service did before.
pub const SIZE_STEPS: [u32; 5] = [4093, 8191, 16381, 32749, DEFAULT_TABLE_SIZE];

/// The table size for a service of `backends` backends (listed in its config): [`SINGLE_SIZE`]
/// for at most one, else the smallest step above 1000 × `backends`, or the default (the
/// largest step) if none is.
pub fn size_for(backends: usize) -> u32 {
    if backends <= 1 {
        return SINGLE_SIZE;
    }
    let need = backends.saturating_mul(1000);
    SIZE_STEPS.into_iter().find(|&m| m as usize > need).unwrap_or(DEFAULT_TABLE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ids, inputs};
    use super::super::{is_prime, Maglev};
    use super::*;

    /// The fewest and most backends that step `i` serves under the 1000 × N rule (the last
    /// step also serves 66 to 655, M > 100 × N, as the default size did before).
    fn range(i: usize) -> (usize, usize) {
        let most = |m: u32| (m as usize - 1) / 1000;
        (if i == 0 { 2 } else { most(SIZE_STEPS[i - 1]) + 1 }, most(SIZE_STEPS[i]))
    }

    /// Random-looking backend identities, set `set` of `n`.
    fn random_ids(set: u64, n: usize) -> Vec<Vec<u8>> {
        (0..n as u64).map(|i| crate::hash::mix64(set << 16 | i).to_be_bytes()[..6].to_vec()).collect()
    }

    /// The share of slots that move when backend `k` of `all` leaves (or, read backwards,
    /// joins).
    fn moved(all: &[Vec<u8>], k: usize, m: u32) -> f64 {
        let mut less = all.to_vec();
        less.remove(k);
        let a = Maglev::build(&inputs(all, &vec![1; all.len()]), m);
        a.moved_share(all, &Maglev::build(&inputs(&less, &vec![1; less.len()]), m), &less)
    }

    #[test]
    fn steps_are_primes_above_a_thousand_times_their_backends() {
        let mut last = 0;
        for (i, m) in SIZE_STEPS.into_iter().enumerate() {
            assert!(is_prime(m) && m > last, "{m}");
            assert!(m as usize > 1000 * range(i).1, "{m}");
            last = m;
        }
        assert_eq!([0, 1, 2, 3, 4].map(|i| range(i).1), [4, 8, 16, 32, 65]);
    }

    #[test]
    fn size_follows_the_backend_count_in_steps() {
        let cases = [(0, 101), (1, 101), (2, 4093), (4, 4093), (5, 8191), (8, 8191), (9, 16381), (16, 16381)];
        let more = [(17, 32749), (32, 32749), (33, 65537), (65, 65537), (66, 65537), (655, 65537)];
        for (n, m) in cases.into_iter().chain(more).chain([(70_000, 65537)]) {
            assert_eq!(size_for(n), m, "{n} backends");
        }
    }

    /// Today's Maglev test (`removing_one_backend_moves_little`) at each step: with its
    /// backends, removing the middle one of N (or adding it to the others) moves at most
    /// 1/N + 1% of the slots, at the step's fewest and most backends.
    #[test]
    fn one_backend_more_or_less_moves_little_within_each_step() {
        for (i, m) in SIZE_STEPS.into_iter().enumerate() {
            let (fewest, most) = range(i);
            for n in [fewest + 1, most] {
                assert_eq!((size_for(n), size_for(n - 1)), (m, m), "N - 1 and N in one step");
                let frac = moved(&ids(n), n / 2, m);
                let bound = 1.0 / n as f64 + 0.01;
                assert!(frac <= bound, "M={m} N={n}: {frac:.4} moved, bound {bound:.4}");
            }
        }
    }

    /// The same over 60 random backend sets per step and count: on average at most
    /// 1/N + 1% moves, and at most one set in ten moves more (small tables have a tail:
    /// docs/performance.md).
    #[test]
    fn one_backend_more_or_less_moves_little_on_average() {
        for (i, m) in SIZE_STEPS.into_iter().enumerate() {
            let (fewest, most) = range(i);
            for n in [fewest + 1, most] {
                let bound = 1.0 / n as f64 + 0.01;
                let fracs: Vec<f64> =
                    (0..60).map(|set| moved(&random_ids(set, n), set as usize % n, m)).collect();
                let mean = fracs.iter().sum::<f64>() / fracs.len() as f64;
                let over = fracs.iter().filter(|&&f| f > bound).count();
                assert!(
                    mean <= bound && over <= 6,
                    "M={m} N={n}: mean {mean:.4}, {over} of 60 over {bound:.4}"
                );
            }
        }
    }

    /// One backend and a second (from [`SINGLE_SIZE`] to the first step): only the flows
    /// that go to the second move, about half; and back.
    #[test]
    fn a_second_backend_moves_only_its_flows() {
        let two = ids(2);
        let one = Maglev::build(&inputs(&two[..1], &[1]), size_for(1));
        let both = Maglev::build(&inputs(&two, &[1, 1]), size_for(2));
        assert_eq!((one.size(), both.size()), (SINGLE_SIZE, SIZE_STEPS[0]));
        let flows = 100_000u64;
        let mut moved = 0;
        for h in (0..flows).map(crate::hash::mix64) {
            assert_eq!(one.lookup(h), Some(0));
            moved += u64::from(both.lookup(h) == Some(1));
        }
        let frac = moved as f64 / flows as f64;
        assert!((frac - 0.5).abs() < 0.01, "{frac:.4} of flows moved to the second backend");
    }

    /// At each step's most backends (its fewest slots per backend; the last step's 655),
    /// equal weights give every backend ⌊M/N⌋ or ⌈M/N⌉ slots: within one slot of its
    /// share, which M > 100 × N makes less than 1%.
    #[test]
    fn equal_shares_within_one_slot_at_each_step() {
        for (i, m) in SIZE_STEPS.into_iter().enumerate() {
            let n = if m == DEFAULT_TABLE_SIZE { 655 } else { range(i).1 };
            let table = Maglev::build(&inputs(&ids(n), &vec![1; n]), m);
            let ideal = f64::from(m) / n as f64;
            for (b, &c) in table.shares(n).iter().enumerate() {
                let off = (f64::from(c) - ideal).abs();
                assert!(
                    off < 1.0 && off / ideal < 0.01,
                    "M={m} N={n}: backend {b} has {c} slots, ideal {ideal:.2}"
                );
            }
        }
    }
}
