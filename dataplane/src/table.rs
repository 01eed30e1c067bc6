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
    len: usize,
}

impl<K: MapKey, V: Copy> StaticMap<K, V> {
    /// Builds from pairs; a later duplicate key replaces an earlier one
    /// (callers that must refuse duplicates check before).
    pub fn build(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        // Load factor at most 1/2 keeps probes short.
        let cap = (pairs.len() * 2).max(8).next_power_of_two();
        let mut map = StaticMap { slots: vec![None; cap].into_boxed_slice(), mask: cap - 1, len: 0 };
        for (k, v) in pairs {
            map.insert(k, v);
        }
        map
    }

    #[inline(always)]
    fn home(&self, k: &K) -> usize {
        (k.key_hash() >> 32) as usize & self.mask
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

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
