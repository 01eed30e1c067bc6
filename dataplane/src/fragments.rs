//! The fragment table: per worker, the ports of each fragmented datagram, so that its later
//! fragments (which carry no transport header) go where its first one went.
//!
//! Only a datagram's first fragment (offset 0) has the transport header. The worker learns the
//! ports from it under the key (source, destination, protocol, identification; 16 bits of
//! identification in IPv4, 32 in IPv6's fragment header), and looks the key up for the other
//! fragments to complete their 5-tuple. A fragment that arrives before its first can be held
//! until the first arrives, then taken back and forwarded.
//!
//! Bounds, all fixed by [`FragmentTable::new`], which is the only allocation:
//!
//! - Entries: a power of two of slots, at least [`BUCKET`], 64 bytes each, in buckets of
//!   [`BUCKET`] slots; a key lives in the bucket its seeded hash picks. Learning a key reuses
//!   its own slot, else an empty or expired one, else evicts the bucket's live entry that
//!   expires first, which [`FragmentTable::evictions`] counts. A lookup reads one bucket.
//! - Time: an entry lives `timeout_ns` (default [`DEFAULT_TIMEOUT_NS`], 2 s) from when it was
//!   learned; lookups do not extend it. The fragments of one datagram are sent together: a
//!   fragment that late is one the destination has most likely given up reassembling.
//! - Held frames: at most `hold` of them (at most [`MAX_HELD`]), each with its key and the time
//!   it expires (arrival + `timeout_ns`), in a fixed array. [`FragmentTable::hold`] refuses
//!   when the array is full and gives the frame back (the caller drops it);
//!   [`FragmentTable::release`] hands back a key's held frames, [`FragmentTable::expire`] those
//!   past their time (the caller drops them). A frame leaves only through these (or when the
//!   table is dropped), so none leaks. Holding, releasing and expiring read the hold's places
//!   (at most 64); releasing and expiring cost nothing while nothing is held.

use crate::flow::Addr;
use crate::hash::mix64;
use arrayvec::ArrayVec;

/// How long an entry or a held frame lives by default: 2 s.
pub const DEFAULT_TIMEOUT_NS: u64 = 2_000_000_000;

/// Most frames a table holds.
pub const MAX_HELD: usize = 64;

/// Slots per bucket: a key's place is one of these, so a lookup reads at most this many.
pub const BUCKET: usize = 4;

/// What identifies a datagram's fragments (RFC 791 3.2; RFC 8200 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    /// The identification: 16 bits for IPv4, 32 for IPv6.
    pub ident: u32,
}

impl FragKey {
    fn fold(a: Addr) -> u64 {
        (a.0 as u64) ^ ((a.0 >> 64) as u64).rotate_left(29)
    }
}

/// The transport ports of a datagram, from its first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

/// An entry: live while `expires_ns` is after now (an empty slot expired at 0).
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Slot {
    key: FragKey,
    ports: Ports,
    expires_ns: u64,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64, "a slot is one cache line");

impl Slot {
    #[inline]
    fn live(&self, now_ns: u64) -> bool {
        self.expires_ns > now_ns
    }
}

/// A frame waiting for its datagram's first fragment.
struct Held<T> {
    key: FragKey,
    expires_ns: u64,
    item: T,
}

/// A worker's fragment table, holding frames of type `T` (a frame handle). See the module doc
/// for its bounds.
pub struct FragmentTable<T> {
    slots: Box<[Slot]>,
    /// Buckets - 1 (a power of two less one).
    mask: usize,
    seeds: [u64; 3],
    timeout_ns: u64,
    held: Box<[Option<Held<T>>]>,
    held_count: usize,
    evictions: u64,
}

impl<T> std::fmt::Debug for FragmentTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentTable")
            .field("slots", &self.slots.len())
            .field("held", &self.held_count)
            .field("evictions", &self.evictions)
            .finish()
    }
}

impl<T> FragmentTable<T> {
    /// A table of `capacity` entries (rounded up to a power of two, at least [`BUCKET`]) that
    /// live `timeout_ns` (at least 1), holding at most `hold` frames (at most [`MAX_HELD`]).
    /// `seed` keys the hash (use a random one: senders must not be able to aim collisions).
    pub fn new(capacity: usize, timeout_ns: u64, hold: usize, seed: u64) -> FragmentTable<T> {
        let n = capacity.max(BUCKET).next_power_of_two();
        FragmentTable {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n / BUCKET - 1,
            seeds: [mix64(seed ^ 1), mix64(seed ^ 2), mix64(seed ^ 3)],
            timeout_ns: timeout_ns.max(1),
            held: (0..hold.min(MAX_HELD)).map(|_| None).collect(),
            held_count: 0,
            evictions: 0,
        }
    }

    /// A table of `capacity` entries with the default timeout, holding [`MAX_HELD`] frames.
    pub fn with_defaults(capacity: usize, seed: u64) -> FragmentTable<T> {
        FragmentTable::new(capacity, DEFAULT_TIMEOUT_NS, MAX_HELD, seed)
    }

    /// Forgets every entry and held frame (dropped), keeping the allocations.
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.held.iter_mut().for_each(|h| *h = None);
        self.held_count = 0;
    }

    /// Entries the table has room for.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Frames the table can hold.
    pub fn hold_capacity(&self) -> usize {
        self.held.len()
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Live entries evicted by others since the table was made.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The slots of the bucket `key` lives in.
    #[inline]
    fn bucket(&self, key: &FragKey) -> std::ops::Range<usize> {
        let rest = u64::from(key.ident) << 8 | u64::from(key.protocol);
        let h = mix64(
            (FragKey::fold(key.src) ^ self.seeds[0]).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ (FragKey::fold(key.dst) ^ self.seeds[1]).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                ^ (rest ^ self.seeds[2]).wrapping_mul(0x1656_67b1_9e37_79f9),
        );
        let start = (h as usize & self.mask) * BUCKET;
        start..start + BUCKET
    }

    /// Learns a datagram's ports (from its first fragment) at `now_ns`: the entry lives until
    /// `now_ns + timeout`. Returns whether a live entry of another key was evicted for it.
    pub fn learn(&mut self, key: &FragKey, ports: Ports, now_ns: u64) -> bool {
        let range = self.bucket(key);
        // In bounds: the last bucket ends at slots.len() (buckets x BUCKET slots).
        let bucket = &mut self.slots[range];
        let i = bucket
            .iter()
            .position(|s| s.key == *key)
            .or_else(|| bucket.iter().position(|s| !s.live(now_ns)))
            .unwrap_or_else(|| oldest(bucket));
        let slot = &mut bucket[i];
        let evicted = slot.live(now_ns) && slot.key != *key;
        self.evictions += u64::from(evicted);
        *slot = Slot { key: *key, ports, expires_ns: now_ns.saturating_add(self.timeout_ns) };
        evicted
    }

    /// The ports learned for `key`, if its entry is live at `now_ns`.
    #[inline]
    pub fn lookup(&self, key: &FragKey, now_ns: u64) -> Option<Ports> {
        let slots = self.slots.get(self.bucket(key))?;
        slots.iter().find(|s| s.key == *key && s.live(now_ns)).map(|s| s.ports)
    }

    /// Holds `item`, a fragment of `key` that came before its first, from `now_ns` for the
    /// timeout. Gives it back when the table holds all it can.
    pub fn hold(&mut self, key: &FragKey, item: T, now_ns: u64) -> Result<(), T> {
        let Some(free) = self.held.iter_mut().find(|h| h.is_none()) else {
            return Err(item);
        };
        *free = Some(Held { key: *key, expires_ns: now_ns.saturating_add(self.timeout_ns), item });
        self.held_count += 1;
        Ok(())
    }

    /// Moves the frames held for `key` that are live at `now_ns` into `out`, in the order of
    /// their places in the hold, as many as `out` has room for (the rest stay held). Returns
    /// how many were moved. Frames past their time are left for [`FragmentTable::expire`].
    pub fn release<const N: usize>(&mut self, key: &FragKey, now_ns: u64, out: &mut ArrayVec<T, N>) -> usize {
        self.take(out, |h| h.key == *key && h.expires_ns > now_ns)
    }

    /// Moves the held frames past their time at `now_ns` into `out` (for the caller to drop),
    /// as many as `out` has room for (the rest wait for the next call). Returns how many.
    pub fn expire<const N: usize>(&mut self, now_ns: u64, out: &mut ArrayVec<T, N>) -> usize {
        self.take(out, |h| h.expires_ns <= now_ns)
    }

    /// Moves the held frames that `which` picks into `out` while it has room.
    fn take<const N: usize>(&mut self, out: &mut ArrayVec<T, N>, which: impl Fn(&Held<T>) -> bool) -> usize {
        let before = out.len();
        if self.held_count == 0 {
            return 0;
        }
        for place in self.held.iter_mut() {
            if out.is_full() {
                break;
            }
            if let Some(h) = place.take_if(|h| which(h)) {
                out.push(h.item);
                self.held_count -= 1;
            }
        }
        out.len() - before
    }
}

/// The place of the slot that expires first (the bucket is not empty).
fn oldest(bucket: &[Slot]) -> usize {
    let mut at = 0;
    for (i, s) in bucket.iter().enumerate() {
        if s.expires_ns < bucket[at].expires_ns {
            at = i;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S: u64 = 1_000_000_000;

    fn v4(last: u8) -> Addr {
        Addr::v4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn key(src: u8, ident: u32) -> FragKey {
        FragKey { src: v4(src), dst: v4(200), protocol: 17, ident }
    }

    const P: Ports = Ports { src: 40000, dst: 53 };

    type Out = ArrayVec<&'static str, MAX_HELD>;

    #[test]
    fn in_order_the_first_fragment_teaches_the_rest() {
        let mut t = FragmentTable::<()>::with_defaults(1024, 7);
        assert_eq!(t.lookup(&key(1, 9), S), None);
        assert!(!t.learn(&key(1, 9), P, S));
        assert_eq!(t.lookup(&key(1, 9), S + 1), Some(P));
        assert_eq!(t.lookup(&key(1, 9), S + S / 2), Some(P), "the same datagram's later fragments");
        assert_eq!(t.lookup(&key(1, 10), S), None, "another datagram");
        // Learning again (a retransmitted first fragment) replaces the ports.
        let q = Ports { src: 1, dst: 2 };
        assert!(!t.learn(&key(1, 9), q, S));
        assert_eq!(t.lookup(&key(1, 9), S), Some(q));
        assert_eq!(t.evictions(), 0);
    }

    #[test]
    fn out_of_order_frames_wait_for_the_first() {
        let mut t = FragmentTable::with_defaults(1024, 7);
        assert_eq!(t.hold(&key(1, 9), "second", S), Ok(()));
        assert_eq!(t.hold(&key(2, 9), "other", S), Ok(()));
        assert_eq!(t.hold(&key(1, 9), "third", S + 1), Ok(()));
        assert_eq!(t.held(), 3);
        let mut out = Out::new();
        assert_eq!(t.release(&key(1, 10), S + 2, &mut out), 0, "no frames of another key");
        t.learn(&key(1, 9), P, S + 2);
        assert_eq!(t.release(&key(1, 9), S + 2, &mut out), 2);
        assert_eq!(out.as_slice(), ["second", "third"]);
        assert_eq!(t.held(), 1);
        assert_eq!(t.release(&key(1, 9), S + 2, &mut out), 0, "released once");
        out.clear();
        assert_eq!(t.release(&key(2, 9), S + 2, &mut out), 1);
        assert_eq!(out.as_slice(), ["other"]);
    }

    #[test]
    fn release_stops_when_out_is_full() {
        let mut t = FragmentTable::with_defaults(64, 7);
        for f in ["a", "b", "c"] {
            t.hold(&key(1, 9), f, S).unwrap();
        }
        let mut one = ArrayVec::<&str, 1>::new();
        assert_eq!(t.release(&key(1, 9), S, &mut one), 1);
        assert_eq!((one.as_slice(), t.held()), (&["a"][..], 2));
        let mut out = Out::new();
        assert_eq!(t.release(&key(1, 9), S, &mut out), 2);
        assert_eq!(out.as_slice(), ["b", "c"]);
    }

    #[test]
    fn entries_expire() {
        let mut t = FragmentTable::<()>::new(4, 2 * S, 0, 7);
        t.learn(&key(1, 9), P, S);
        assert_eq!(t.lookup(&key(1, 9), 3 * S - 1), Some(P));
        assert_eq!(t.lookup(&key(1, 9), 3 * S), None, "2 s after it was learned");
        // Its slot is free again: four new keys fill the one bucket without an eviction.
        for i in 0..4 {
            assert!(!t.learn(&key(2, i), P, 3 * S));
        }
        assert_eq!(t.evictions(), 0);
    }

    #[test]
    fn held_frames_expire_to_the_caller() {
        let mut t = FragmentTable::new(64, 2 * S, 8, 7);
        t.hold(&key(1, 9), "early", S).unwrap();
        t.hold(&key(1, 9), "later", 2 * S).unwrap();
        let mut out = Out::new();
        assert_eq!(t.expire(3 * S - 1, &mut out), 0);
        assert_eq!(t.release(&key(1, 9), 3 * S, &mut out), 1, "only the live one");
        assert_eq!(out.as_slice(), ["later"]);
        out.clear();
        assert_eq!(t.expire(3 * S, &mut out), 1);
        assert_eq!((out.as_slice(), t.held()), (&["early"][..], 0));
    }

    #[test]
    fn a_full_bucket_evicts_its_oldest_and_counts_it() {
        // Four slots: one bucket, so every key competes.
        let mut t = FragmentTable::<()>::new(4, 10 * S, 0, 7);
        assert_eq!(t.capacity(), 4);
        for i in 0..4 {
            assert!(!t.learn(&key(1, i), P, S + u64::from(i)));
        }
        assert!(t.learn(&key(1, 4), P, S + 4));
        assert_eq!(t.lookup(&key(1, 0), S + 5), None, "the oldest went");
        for i in 1..5 {
            assert_eq!(t.lookup(&key(1, i), S + 5), Some(P), "{i}");
        }
        assert_eq!(t.evictions(), 1);
    }

    #[test]
    fn more_datagrams_than_capacity() {
        let mut t = FragmentTable::<()>::new(8, 10 * S, 0, 7);
        for i in 0..100 {
            t.learn(&key(1, i), Ports { src: i as u16, dst: 53 }, S + u64::from(i));
        }
        assert_eq!(t.evictions(), 92, "all but the 8 slots' first tenants were evicted live");
        let found: Vec<u32> = (0..100).filter(|&i| t.lookup(&key(1, i), S + 100).is_some()).collect();
        assert_eq!(found.len(), 8);
        assert!(found.contains(&99), "the newest stays");
        for i in found {
            assert_eq!(t.lookup(&key(1, i), S + 100), Some(Ports { src: i as u16, dst: 53 }));
        }
    }

    #[test]
    fn one_ident_from_different_hosts_does_not_mix() {
        let mut t = FragmentTable::with_defaults(16, 7);
        let a = key(1, 77);
        let b = FragKey { dst: v4(201), ..a };
        let c = FragKey { src: v4(2), ..a };
        let d = FragKey { protocol: 6, ..a };
        for (i, k) in [a, b, c, d].iter().enumerate() {
            t.learn(k, Ports { src: i as u16, dst: 1 }, S);
        }
        for (i, k) in [a, b, c, d].iter().enumerate() {
            assert_eq!(t.lookup(k, S), Some(Ports { src: i as u16, dst: 1 }), "{k:?}");
        }
        t.hold(&b, "b's", S).unwrap();
        let mut out = Out::new();
        assert_eq!(t.release(&a, S, &mut out) + t.release(&c, S, &mut out) + t.release(&d, S, &mut out), 0);
        assert_eq!(t.release(&b, S, &mut out), 1);
    }

    #[test]
    fn ipv6_idents_use_all_32_bits() {
        let mut t = FragmentTable::<()>::with_defaults(64, 7);
        let v6 = |s: &str| Addr::from(std::net::IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
        let k = FragKey { src: v6("2001:db8::1"), dst: v6("2001:db8::2"), protocol: 17, ident: 0xdead_beef };
        let low = FragKey { ident: 0x0000_beef, ..k };
        t.learn(&k, P, S);
        assert_eq!(t.lookup(&k, S), Some(P));
        assert_eq!(t.lookup(&low, S), None, "the high 16 bits count");
        let mapped = FragKey { src: v4(1), ..k };
        assert_eq!(t.lookup(&mapped, S), None);
    }

    #[test]
    fn a_full_hold_refuses_and_gives_the_frame_back() {
        let mut t = FragmentTable::new(64, S, 2, 7);
        assert_eq!(t.hold_capacity(), 2);
        t.hold(&key(1, 1), "a", 0).unwrap();
        t.hold(&key(1, 2), "b", 0).unwrap();
        assert_eq!(t.hold(&key(1, 3), "c", 0), Err("c"), "the caller drops it");
        let mut out = Out::new();
        t.release(&key(1, 1), 0, &mut out);
        assert_eq!(t.hold(&key(1, 3), "c", 0), Ok(()), "room again");
        assert_eq!(FragmentTable::<u8>::new(64, S, 1000, 7).hold_capacity(), MAX_HELD);
        assert_eq!(FragmentTable::<u8>::new(0, S, 0, 7).capacity(), BUCKET);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn(u8, u16),
        Lookup(u8),
        Hold(u8),
        Release(u8),
        Expire,
        Advance(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..24, any::<u16>()).prop_map(|(k, p)| Op::Learn(k, p)),
            (0u8..24).prop_map(Op::Lookup),
            (0u8..24).prop_map(Op::Hold),
            (0u8..24).prop_map(Op::Release),
            Just(Op::Expire),
            (0u64..3 * S).prop_map(Op::Advance),
        ]
    }

    /// Keys that share idents and addresses in every way: 3 sources, 2 protocols, 4 idents.
    fn nth(k: u8) -> FragKey {
        FragKey {
            src: v4(k % 3),
            dst: v4(9),
            protocol: [6, 17][usize::from(k / 3 % 2)],
            ident: u32::from(k / 6),
        }
    }

    proptest::proptest! {
        #[test]
        fn held_frames_go_back_to_their_key_once(ops in proptest::collection::vec(op(), 0..300)) {
            let mut t = FragmentTable::<(u8, u32)>::new(8, 2 * S, 8, 7);
            let (mut now, mut serial, mut learned) = (0u64, 0u32, std::collections::HashMap::new());
            let (mut accepted, mut returned) = (std::collections::HashSet::new(), std::collections::HashSet::new());
            let mut out = ArrayVec::<(u8, u32), 4>::new();
            for op in ops {
                out.clear();
                match op {
                    Op::Learn(k, p) => {
                        t.learn(&nth(k), Ports { src: p, dst: 0 }, now);
                        learned.insert(nth(k), p);
                    }
                    Op::Lookup(k) => {
                        if let Some(p) = t.lookup(&nth(k), now) {
                            proptest::prop_assert_eq!(Some(&p.src), learned.get(&nth(k)));
                        }
                    }
                    Op::Hold(k) => {
                        serial += 1;
                        if t.hold(&nth(k), (k, serial), now).is_ok() {
                            accepted.insert(serial);
                        }
                    }
                    Op::Release(k) => {
                        t.release(&nth(k), now, &mut out);
                        for &(held_k, _) in &out {
                            proptest::prop_assert_eq!(nth(held_k), nth(k));
                        }
                    }
                    Op::Expire => {
                        t.expire(now, &mut out);
                    }
                    Op::Advance(d) => now += d,
                }
                for &(_, s) in &out {
                    proptest::prop_assert!(returned.insert(s), "frame {} returned twice", s);
                }
                proptest::prop_assert!(t.held() <= t.hold_capacity());
            }
            let mut rest = ArrayVec::<(u8, u32), MAX_HELD>::new();
            t.expire(u64::MAX, &mut rest);
            returned.extend(rest.iter().map(|&(_, s)| s));
            proptest::prop_assert_eq!(t.held(), 0);
            proptest::prop_assert_eq!(accepted, returned, "every frame held comes back once");
        }
    }
}
