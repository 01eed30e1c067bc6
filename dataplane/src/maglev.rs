//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.
//!
//! Each backend has a permutation of the table's slots, derived from a hash of its identity
//! alone; backends take turns claiming their next free slot until the table is full. Because
//! the permutations do not depend on the other backends, adding or removing one backend moves
//! few slots, and every appliance given the same backend set builds the same table.
//!
//! Weights follow the credit scheme of Katran's Maglev v2: each round, a backend earns its
//! weight in credit and claims one slot per `max_weight` of credit, so its share of the table
//! is proportional to its weight within a slot or two. Weight 0 means no slots (drain).
//!
//! Turn order is by identity, not by position in the config, so two appliances whose configs
//! list the same backends in a different order still agree.

use crate::hash::{hash_bytes, reduce};
use std::sync::Arc;

mod size;
pub use size::{size_for, SINGLE_SIZE, SIZE_STEPS};

/// Largest table: 4,194,301 slots (8 MiB), the largest prime below 2^22.
pub const MAX_TABLE_SIZE: u32 = 4_194_301;

/// The table size Maglev's paper uses; a prime.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Backend indexes are `u16`; this one marks an unfilled slot.
const EMPTY: u16 = u16::MAX;
/// At most this many backends per table.
pub const MAX_BACKENDS: usize = EMPTY as usize;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy)]
pub struct MaglevInput<'a> {
    /// Stable identity bytes (e.g. the backend's address and port); must be unique in the set.
    pub id: &'a [u8],
    pub weight: u32,
}

/// A built lookup table: slot → index into the backend list given to [`Maglev::build`].
/// Clones share the slots, so a snapshot can keep an unchanged service's table from the one
/// before (a lookup reads through the pointer as it would through a `Box`).
#[derive(Clone)]
pub struct Maglev {
    table: Arc<[u16]>,
    size: u32,
    has_backends: bool,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev").field("size", &self.size).finish_non_exhaustive()
    }
}

/// Whether `n` is prime (table sizes are checked at config time).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend's place in the population.
struct Turn {
    index: u16,
    /// The next slot of its permutation to look at.
    pos: u32,
    skip: u32,
    weight: u32,
    credit: u32,
    /// skip⁻¹ mod M, computed when first needed (phase 2).
    inverse: u32,
}

/// The backends taking turns at the table, weighted: each turn adds a backend's weight to its
/// credit, and a backend whose credit reaches the largest weight takes a slot.
struct Rounds {
    turns: Vec<Turn>,
    next: usize,
    max_weight: u32,
}

impl Rounds {
    /// The backend whose turn it is to take a slot.
    #[inline(always)]
    fn next_taker(&mut self) -> &mut Turn {
        loop {
            let i = self.next;
            self.next = if i + 1 == self.turns.len() { 0 } else { i + 1 };
            let t = &mut self.turns[i];
            t.credit += t.weight;
            if t.credit >= self.max_weight {
                t.credit -= self.max_weight;
                return &mut self.turns[i];
            }
        }
    }
}

/// Phase 1: the backends walk their permutations in turn, each taking the first free slot it
/// reaches, probing a bitmap of taken slots (8 KiB for M = 65537, so it stays in L1), until
/// about sqrt(M) slots are left. The bitmap.
fn walk(rounds: &mut Rounds, table: &mut [u16], size: u32) -> Vec<u64> {
    let mut taken = vec![0u64; (size as usize).div_ceil(64)];
    let is_free = |taken: &[u64], slot: u32| taken[slot as usize / 64] & (1 << (slot % 64)) == 0;
    // Switch to phase 2 when this few slots are left: a walk then costs about M / free
    // probes, a scan of the free list `free` steps; they cross near sqrt(M).
    let tail = ((f64::from(size)).sqrt() as usize).max(1);
    let mut free_left = size as usize;
    while free_left > tail {
        let t = rounds.next_taker();
        // The permutation visits every slot (size is prime): a free one is always found.
        let slot = loop {
            let slot = t.pos;
            t.pos = step(slot, t.skip, size);
            if is_free(&taken, slot) {
                break slot;
            }
        };
        taken[slot as usize / 64] |= 1 << (slot % 64);
        table[slot as usize] = t.index;
        free_left -= 1;
    }
    taken
}

/// Phase 2, the tail (where most probes of a plain walk would go): a backend's next free slot
/// is the free slot it would reach in the fewest steps, and the number of steps from `pos` to
/// `slot` is (slot - pos) / skip mod M, with the inverse of skip mod M (M is prime). Same
/// table as walking on, far fewer steps.
fn fill_tail(rounds: &mut Rounds, table: &mut [u16], size: u32, taken: &[u64]) {
    let mut free: Vec<u32> = Vec::new();
    for (w, &word) in taken.iter().enumerate() {
        let mut open = !word;
        while open != 0 {
            let slot = w as u32 * 64 + open.trailing_zeros();
            if slot < size {
                free.push(slot);
            }
            open &= open - 1;
        }
    }
    let reduce = Barrett::new(size);
    while !free.is_empty() {
        let t = rounds.next_taker();
        if t.inverse == 0 {
            t.inverse = mod_pow(u64::from(t.skip), u64::from(size) - 2, u64::from(size)) as u32;
        }
        let (m64, pos, inv) = (u64::from(size), u64::from(t.pos), u64::from(t.inverse));
        let steps = |slot: u32| reduce.rem((u64::from(slot) + m64 - pos) * inv);
        let mut best = 0;
        let mut best_steps = u64::MAX;
        for (k, &slot) in free.iter().enumerate() {
            let d = steps(slot);
            if d < best_steps {
                best_steps = d;
                best = k;
            }
        }
        let slot = free.swap_remove(best);
        t.pos = step(slot, t.skip, size);
        table[slot as usize] = t.index;
    }
}

#[inline(always)]
fn step(pos: u32, skip: u32, size: u32) -> u32 {
    let next = pos + skip;
    if next >= size {
        next - size
    } else {
        next
    }
}

/// `x mod m` for `x < 2^64` without a division: Barrett reduction with `floor(2^64 / m)`;
/// the quotient estimate is off by at most one, fixed by one conditional subtraction.
struct Barrett {
    m: u64,
    magic: u64,
}

impl Barrett {
    fn new(m: u32) -> Barrett {
        Barrett { m: u64::from(m), magic: u64::MAX / u64::from(m) }
    }

    #[inline(always)]
    fn rem(&self, x: u64) -> u64 {
        let q = ((u128::from(x) * u128::from(self.magic)) >> 64) as u64;
        let r = x - q * self.m;
        if r >= self.m {
            r - self.m
        } else {
            r
        }
    }
}

fn mod_pow(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1u64;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    acc
}

impl Maglev {
    /// Builds the table. `size` must be a prime larger than the number of backends and
    /// `backends.len()` at most [`MAX_BACKENDS`] (the config layer checks both).
    pub fn build(backends: &[MaglevInput<'_>], size: u32) -> Maglev {
        assert!(is_prime(size), "Maglev table size {size} is not prime");
        assert!(backends.len() < size as usize && backends.len() <= MAX_BACKENDS);
        let m = size as usize;
        let mut table = vec![EMPTY; m];

        // Backends that take part, in identity order.
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].weight > 0).collect();
        order.sort_by(|&a, &b| backends[a].id.cmp(backends[b].id));
        if order.is_empty() {
            return Maglev { table: table.into(), size, has_backends: false };
        }

        let turns: Vec<Turn> = order
            .iter()
            .map(|&i| Turn {
                index: i as u16,
                pos: (hash_bytes(backends[i].id, OFFSET_SEED) % u64::from(size)) as u32,
                skip: (hash_bytes(backends[i].id, SKIP_SEED) % u64::from(size - 1)) as u32 + 1,
                weight: backends[i].weight,
                credit: 0,
                inverse: 0,
            })
            .collect();
        let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);
        let mut rounds = Rounds { turns, next: 0, max_weight };
        let taken = walk(&mut rounds, &mut table, size);
        fill_tail(&mut rounds, &mut table, size, &taken);
        Maglev { table: table.into(), size, has_backends: true }
    }

    /// Whether `other` shares this table's slots (it is a clone of it, not a rebuild).
    pub fn shares_slots_with(&self, other: &Maglev) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }

    /// The backend index for a flow hash, or `None` when no backend has a positive weight.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        if !self.has_backends {
            return None;
        }
        // `reduce` returns < size == table.len(), so `get` never misses; it avoids a panic path.
        self.table.get(reduce(hash, self.size) as usize).copied()
    }

    /// Prefetches the slot [`Maglev::lookup`] will read for `hash`.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        crate::prefetch::prefetch_index(&self.table, reduce(hash, self.size) as usize);
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// The slots, for tests and diagnostics.
    pub fn slots(&self) -> &[u16] {
        &self.table
    }

    /// The share of slots whose backend differs from `other`'s (a table of the same size),
    /// by identity: `ids` names this table's backends, `other_ids` the other's.
    pub fn moved_share(&self, ids: &[Vec<u8>], other: &Maglev, other_ids: &[Vec<u8>]) -> f64 {
        fn name(ids: &[Vec<u8>], s: u16) -> Option<&[u8]> {
            ids.get(usize::from(s)).map(Vec::as_slice)
        }
        let moved = (self.table.iter().zip(other.table.iter()))
            .filter(|&(&a, &b)| name(ids, a) != name(other_ids, b))
            .count();
        moved as f64 / f64::from(self.size)
    }

    /// How many slots each backend holds, indexed like the input list.
    pub fn shares(&self, n_backends: usize) -> Vec<u32> {
        let mut counts = vec![0u32; n_backends];
        if self.has_backends {
            for &s in self.table.iter() {
                counts[usize::from(s)] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("198.19.{}.{}:80", i / 250, i % 250 + 1).into_bytes()).collect()
    }

    pub(crate) fn inputs<'a>(ids: &'a [Vec<u8>], weights: &[u32]) -> Vec<MaglevInput<'a>> {
        ids.iter().zip(weights).map(|(id, &weight)| MaglevInput { id, weight }).collect()
    }

    /// Maglev's population written the plain way (the paper's pseudo-code, with the credit
    /// scheme for weights), to check the optimised build against.
    fn reference(backends: &[MaglevInput<'_>], size: u32) -> Vec<u16> {
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].weight > 0).collect();
        order.sort_by(|&a, &b| backends[a].id.cmp(backends[b].id));
        let offset: Vec<u64> =
            order.iter().map(|&i| hash_bytes(backends[i].id, OFFSET_SEED) % u64::from(size)).collect();
        let skip: Vec<u64> =
            order.iter().map(|&i| hash_bytes(backends[i].id, SKIP_SEED) % u64::from(size - 1) + 1).collect();
        let max_w = order.iter().map(|&i| backends[i].weight).max().unwrap_or(1);
        let mut next = vec![0u64; order.len()];
        let mut credit = vec![0u32; order.len()];
        let mut table = vec![EMPTY; size as usize];
        let mut filled = 0;
        while filled < size as usize && !order.is_empty() {
            for (k, &i) in order.iter().enumerate() {
                credit[k] += backends[i].weight;
                if credit[k] < max_w {
                    continue;
                }
                credit[k] -= max_w;
                let mut c = (offset[k] + next[k] * skip[k]) % u64::from(size);
                while table[c as usize] != EMPTY {
                    next[k] += 1;
                    c = (offset[k] + next[k] * skip[k]) % u64::from(size);
                }
                table[c as usize] = i as u16;
                next[k] += 1;
                filled += 1;
                if filled == size as usize {
                    break;
                }
            }
        }
        table
    }

    #[test]
    fn same_table_as_the_plain_algorithm() {
        for (n, size) in [(1usize, 7u32), (3, 13), (10, 251), (37, 4099), (100, 65537), (1000, 65537)] {
            let ids = ids(n);
            for weights in [vec![1; n], (0..n).map(|i| (i % 7) as u32).collect::<Vec<u32>>()] {
                let inputs = inputs(&ids, &weights);
                assert_eq!(
                    Maglev::build(&inputs, size).slots(),
                    &reference(&inputs, size)[..],
                    "n={n} M={size}"
                );
            }
        }
    }

    #[test]
    fn barrett_matches_division() {
        for m in [7u32, 251, 65537, 4_194_301] {
            let b = Barrett::new(m);
            for x in [
                0u64,
                1,
                u64::from(m) - 1,
                u64::from(m),
                u64::from(m) * u64::from(m) - 1,
                u64::MAX,
                0x1234_5678_9abc,
            ] {
                assert_eq!(b.rem(x), x % u64::from(m), "{x} mod {m}");
            }
            for i in 0..10_000u64 {
                let x = crate::hash::mix64(i) >> (i % 40);
                assert_eq!(b.rem(x), x % u64::from(m));
            }
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(2) && is_prime(16381) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535));
    }

    #[test]
    fn equal_weights_within_one_percent() {
        let ids = ids(100);
        let m = Maglev::build(&inputs(&ids, &[1; 100]), DEFAULT_TABLE_SIZE);
        let ideal = f64::from(DEFAULT_TABLE_SIZE) / 100.0;
        for (i, &c) in m.shares(100).iter().enumerate() {
            let err = (f64::from(c) - ideal).abs() / ideal;
            assert!(err <= 0.01, "backend {i}: {c} slots, ideal {ideal:.1}, error {err:.4}");
        }
    }

    #[test]
    fn weighted_shares_within_one_percent() {
        // 100 backends with weights 1..=4: the smallest ideal share is 262 slots.
        let ids = ids(100);
        let weights: Vec<u32> = (0..100).map(|i| 1 + (i % 4) as u32).collect();
        let total: u32 = weights.iter().sum();
        let m = Maglev::build(&inputs(&ids, &weights), DEFAULT_TABLE_SIZE);
        for (i, &c) in m.shares(100).iter().enumerate() {
            let ideal = f64::from(DEFAULT_TABLE_SIZE) * f64::from(weights[i]) / f64::from(total);
            let err = (f64::from(c) - ideal).abs() / ideal;
            assert!(err <= 0.01, "backend {i} weight {}: {c} slots, ideal {ideal:.1}", weights[i]);
        }
    }

    #[test]
    fn removing_one_backend_moves_little() {
        for n in [5usize, 10, 100] {
            let ids = ids(n);
            let before = Maglev::build(&inputs(&ids, &vec![1; n]), DEFAULT_TABLE_SIZE);
            let mut weights = vec![1; n];
            weights[n / 2] = 0; // gone
            let after = Maglev::build(&inputs(&ids, &weights), DEFAULT_TABLE_SIZE);
            let moved = before.slots().iter().zip(after.slots()).filter(|(a, b)| a != b).count();
            let frac = moved as f64 / f64::from(DEFAULT_TABLE_SIZE);
            let bound = 1.0 / n as f64 + 0.01;
            assert!(frac <= bound, "n={n}: {frac:.4} of slots moved, bound {bound:.4}");
            // The removed backend's slots must all have moved; no slot may still name it.
            assert!(after.slots().iter().all(|&s| usize::from(s) != n / 2));
        }
    }

    #[test]
    fn config_order_does_not_matter() {
        let ids = ids(20);
        let weights: Vec<u32> = (0..20).map(|i| 1 + i % 3).collect();
        let a = Maglev::build(&inputs(&ids, &weights), 251);
        let mut rev_ids = ids.clone();
        rev_ids.reverse();
        let mut rev_w = weights.clone();
        rev_w.reverse();
        let b = Maglev::build(&inputs(&rev_ids, &rev_w), 251);
        for (sa, sb) in a.slots().iter().zip(b.slots()) {
            assert_eq!(ids[usize::from(*sa)], rev_ids[usize::from(*sb)]);
        }
    }

    #[test]
    fn no_positive_weight_means_no_backend() {
        let ids = ids(3);
        let m = Maglev::build(&inputs(&ids, &[0, 0, 0]), 251);
        assert_eq!(m.lookup(12345), None);
        assert_eq!(Maglev::build(&[], 251).lookup(1), None);
        let one = Maglev::build(&inputs(&ids, &[0, 7, 0]), 251);
        assert!(one.slots().iter().all(|&s| s == 1));
    }
}
