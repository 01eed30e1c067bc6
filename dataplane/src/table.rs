//! A read-only open-addressing map, built once by the control thread and read by workers:
//! one hash, a short linear probe over a power-of-two array, no allocation on lookup.

/// Keys hash themselves with a fixed function (maps are rebuilt per snapshot; there is no
/// per-process seed to leak).
pub trait MapKey: Copy + Eq {
    fn key_hash(&self) -> u64;
}

/// Fibonacci hashing: one multiply; the table takes the high bits. Enough for a read-only
/// table at load <= 1/2 whose keys come from the config, not from the wire.
#[inline(always)]
fn fib(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl MapKey for u64 {
    #[inline]
    fn key_hash(&self) -> u64 {
        fib(*self)
    }
}

impl MapKey for u128 {
    #[inline]
    fn key_hash(&self) -> u64 {
        fib((*self as u64) ^ ((*self >> 64) as u64).rotate_left(31))
    }
}

#[derive(Debug, Clone)]
pub struct StaticMap<K: MapKey, V: Copy> {
    slots: Box<[Option<(K, V)>]>,
    mask: usize,
    /// 64 less the table's size in bits: a key's home is the top bits of its hash, the ones
    /// that a multiplication mixes every bit of the key into.
    shift: u32,
    len: usize,
}

impl<K: MapKey, V: Copy> StaticMap<K, V> {
    /// Builds from pairs; a later duplicate key replaces an earlier one
    /// (callers that must refuse duplicates check before).
    pub fn build(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        // Load factor at most 1/2 keeps probes short.
        let cap = (pairs.len() * 2).max(8).next_power_of_two();
        let slots = vec![None; cap].into_boxed_slice();
        let mut map = StaticMap { slots, mask: cap - 1, shift: 64 - cap.trailing_zeros(), len: 0 };
        for (k, v) in pairs {
            map.insert(k, v);
        }
        map
    }

    #[inline(always)]
    fn home(&self, k: &K) -> usize {
        (k.key_hash() >> self.shift) as usize
    }

    fn insert(&mut self, k: K, v: V) {
        let mut i = self.home(&k);
        loop {
            match &mut self.slots[i] {
                Some((sk, sv)) if *sk == k => {
                    *sv = v;
                    return;
                }
                Some(_) => i = (i + 1) & self.mask,
                slot @ None => {
                    *slot = Some((k, v));
                    self.len += 1;
                    return;
                }
            }
        }
    }

    #[inline]
    pub fn get(&self, k: &K) -> Option<V> {
        let mut i = self.home(k);
        // The table is never full (load <= 1/2), so an empty slot ends every probe.
        loop {
            match self.slots.get(i)? {
                Some((sk, v)) if sk == k => return Some(*v),
                Some(_) => i = (i + 1) & self.mask,
                None => return None,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Places a lookup of `k` reads (1: its home place).
    #[cfg(test)]
    fn probes(&self, k: &K) -> usize {
        let home = self.home(k);
        let at = |d: usize| self.slots[(home + d) & self.mask].is_some_and(|(sk, _)| sk == *k);
        (0..self.slots.len()).find(|&d| at(d)).map_or(0, |d| d + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Indexes of ids from a narrow range (a service's backend ids, given out in order and never
/// reused): one array slot per id between the least and the greatest, so a lookup is a
/// subtraction and one bounds-checked load. Two bytes per id of the span, which the id space
/// bounds (65536 backend ids: at most 128 KiB).
#[derive(Debug, Clone)]
pub struct IdIndex {
    base: u32,
    index: Box<[u16]>,
}

impl IdIndex {
    const NONE: u16 = u16::MAX;

    /// From (id, index) pairs; a later duplicate id replaces an earlier one. Index `u16::MAX`
    /// cannot be stored.
    pub fn build(pairs: impl IntoIterator<Item = (u32, u16)>) -> IdIndex {
        let pairs: Vec<(u32, u16)> = pairs.into_iter().collect();
        let (Some(lo), Some(hi)) = (pairs.iter().map(|p| p.0).min(), pairs.iter().map(|p| p.0).max()) else {
            return IdIndex { base: 0, index: Box::new([]) };
        };
        let mut index = vec![Self::NONE; (hi - lo) as usize + 1].into_boxed_slice();
        for (id, i) in pairs {
            index[(id - lo) as usize] = i;
        }
        IdIndex { base: lo, index }
    }

    #[inline]
    pub fn get(&self, id: u32) -> Option<u16> {
        // An id under the base wraps to a large offset, past the end.
        let i = *self.index.get(id.wrapping_sub(self.base) as usize)?;
        (i != Self::NONE).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_index_finds_what_it_was_given_and_nothing_else() {
        let pairs = [(40u32, 0u16), (7, 1), (1000, 2), (41, 3)];
        let ix = IdIndex::build(pairs);
        for (id, i) in pairs {
            assert_eq!(ix.get(id), Some(i));
        }
        for id in [0, 6, 8, 39, 42, 999, 1001, u32::MAX] {
            assert_eq!(ix.get(id), None, "id {id}");
        }
        assert_eq!(IdIndex::build([(5, 1), (5, 2)]).get(5), Some(2));
        let empty = IdIndex::build([]);
        assert_eq!((empty.get(0), empty.get(u32::MAX)), (None, None));
    }

    #[test]
    fn keys_that_differ_only_in_high_bits_spread() {
        // (VIP, port, protocol) keys of one VIP differ only above bit 40 of their word.
        let keys: Vec<u64> = (0..64u64).map(|i| i << 48).collect();
        let m = StaticMap::build(keys.iter().map(|&k| (k, ())));
        let worst = keys.iter().map(|k| m.probes(k)).max();
        assert!(worst.is_some_and(|w| w <= 8), "longest probe {worst:?} of 64 keys in 128 places");
    }

    #[test]
    fn behaves_like_a_hashmap() {
        let pairs: Vec<(u64, u32)> = (0..1000u64).map(|i| (i * 7919, i as u32)).collect();
        let m = StaticMap::build(pairs.iter().copied());
        assert_eq!(m.len(), 1000);
        for (k, v) in &pairs {
            assert_eq!(m.get(k), Some(*v));
        }
        for k in 0..1000u64 {
            if k % 7919 != 0 {
                assert_eq!(m.get(&(k * 7919 + 1)), None);
            }
        }
        let empty: StaticMap<u64, u8> = StaticMap::build([]);
        assert_eq!(empty.get(&1), None);
    }

    #[test]
    fn duplicate_replaces() {
        let m = StaticMap::build([(5u64, 1u8), (5, 2)]);
        assert_eq!((m.len(), m.get(&5)), (1, Some(2)));
    }
}
