//! Resource isolation: per-service limits, enforced by token buckets on each worker.
//!
//! A service may cap its packets/s, bytes/s and new connections/s (rates) and its concurrent
//! sessions (a cap, checked against the session table's per-service count). Each rate is split
//! among the workers: a worker owns its buckets outright (no shared cache line on the packet
//! path) and spends its share of the rate, which the control thread rebalances from the
//! workers' recent demand ([`split`]). A limit applies `always` (a plan's cap) or only while the
//! appliance is overloaded (`on_overload`: the control thread's detector sets the snapshot's
//! isolation flag).
//!
//! Buckets may go into debt by one request: a packet is let through while any credit is left,
//! and its full cost is taken. Over time the rate is exact; a burst is at most
//! [`BURST_NS`] of the rate plus one packet.

/// A bucket holds this much time's worth of its rate (50 ms).
pub const BURST_NS: u64 = 50_000_000;

const NS: i128 = 1_000_000_000;

use crate::counter::{counters, Counter, MAX_SERVICE_IDS};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The limits that are rates (indexes into a service's buckets and shares).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    Packets = 0,
    Bytes = 1,
    Connections = 2,
}

pub const RATES: [Rate; 3] = [Rate::Packets, Rate::Bytes, Rate::Connections];

/// What a limit is and when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Per second for rates; a count for sessions. At least 1.
    pub value: u64,
    /// Only while the appliance is overloaded (else always).
    pub on_overload: bool,
}

impl Limit {
    /// Whether it applies now.
    #[inline]
    pub fn applies(&self, overloaded: bool) -> bool {
        overloaded || !self.on_overload
    }
}

/// A service's limits (none: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rates: [Option<Limit>; 3],
    pub sessions: Option<Limit>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rates.iter().all(Option::is_none) && self.sessions.is_none()
    }

    #[inline]
    pub fn rate(&self, r: Rate) -> Option<Limit> {
        self.rates[r as usize]
    }
}

/// A token bucket. `credit` is in units x 1e9 (so refill is `elapsed_ns x rate`, exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    credit: i128,
    last_ns: u64,
}

impl Bucket {
    /// Takes `n` units at `now_ns` from a bucket refilled at `rate` units/s: true if allowed.
    /// A fresh bucket starts full.
    #[inline]
    pub fn take(&mut self, now_ns: u64, rate: u64, n: u64) -> bool {
        let cap = i128::from(rate) * i128::from(BURST_NS);
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        // (Elapsed time is bounded only to keep the product far from overflow.)
        let earned = i128::from(elapsed.min(1 << 40)) * i128::from(rate);
        self.credit = (self.credit + earned).min(cap);
        if self.credit <= 0 {
            return false;
        }
        self.credit -= i128::from(n) * NS;
        true
    }
}

/// Splits `rate` among workers by their recent `demand` (units per second each was offered
/// in the last period) into `out`, max-min fair: a worker asking for less than an equal share
/// of what is left gets what it asked plus a quarter (room to grow until the next rebalance),
/// and at least a floor of an eighth of an equal share (so an idle worker can start); the
/// rest is shared equally among the workers that asked for more. Whatever no worker asked for
/// is spread equally. The shares add up to `rate` (rounding goes to the first worker).
pub fn split(rate: u64, demand: &[u64], out: &mut [u64]) {
    let n = demand.len().min(out.len());
    if n == 0 {
        return;
    }
    let floor = rate / (8 * n as u64);
    let want = |d: u64| d.saturating_add(d / 4).max(floor);
    // Water-filling: the smallest wants first, each capped at an equal share of what is left.
    let mut order: arrayvec::ArrayVec<usize, MAX_WORKERS> = (0..n.min(MAX_WORKERS)).collect();
    order.sort_unstable_by_key(|&i| demand[i]);
    let (mut left, mut remaining) = (order.len() as u64, rate);
    for &i in &order {
        let give = want(demand[i]).min(remaining / left);
        out[i] = give;
        remaining -= give;
        left -= 1;
    }
    // Nobody asked for the rest: equal parts, so that any worker can grow into it.
    let each = remaining / order.len() as u64;
    for &i in &order {
        out[i] += each;
    }
    let given: u64 = out[..n].iter().sum();
    out[0] += rate - given;
}

/// Most workers the shares are kept for.
pub const MAX_WORKERS: usize = 64;

/// What the control thread and the workers share about isolation: whether the appliance is
/// overloaded (so `on_overload` limits apply) and each worker's share of each service's rates.
/// The control thread is the only writer; a worker reads its own shares and the flag once per
/// use, relaxed (a share that is a rebalance old is still a share).
#[derive(Debug)]
pub struct Isolation {
    overloaded: AtomicBool,
    workers: usize,
    /// `[worker][service id][rate]`, flat. Zero: not set yet (an equal part of the rate).
    shares: Box<[Counter]>,
}

impl Isolation {
    pub fn new(workers: usize) -> Isolation {
        let workers = workers.clamp(1, MAX_WORKERS);
        Isolation {
            overloaded: AtomicBool::new(false),
            workers,
            shares: counters(workers * MAX_SERVICE_IDS * RATES.len()),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    #[inline]
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    pub fn set_overloaded(&self, on: bool) {
        self.overloaded.store(on, Relaxed);
    }

    #[inline]
    fn index(&self, worker: usize, service: u16, rate: Rate) -> usize {
        (worker * MAX_SERVICE_IDS + usize::from(service)) * RATES.len() + rate as usize
    }

    /// Worker `worker`'s share of `rate` (the service's configured rate) per second.
    #[inline]
    pub fn share(&self, worker: usize, service: u16, r: Rate, rate: u64) -> u64 {
        match self.shares.get(self.index(worker, service, r)).map(Counter::get) {
            Some(0) | None => rate / self.workers as u64,
            Some(s) => s,
        }
    }

    /// Sets worker `worker`'s share (control thread only).
    pub fn set_share(&self, worker: usize, service: u16, r: Rate, share: u64) {
        if worker < self.workers {
            if let Some(c) = self.shares.get(self.index(worker, service, r)) {
                c.set(share);
            }
        }
    }
}

/// Per-service limit counters in a worker's stats: units offered per rate (what the shares
/// follow) and drops per limit, at `service id * LIMIT_STRIDE`.
pub const LIMIT_STRIDE: usize = 8;
/// Index of the offered count of a rate, and of the drops of a limit.
#[inline]
pub fn offered_index(service: u16, r: Rate) -> usize {
    usize::from(service) * LIMIT_STRIDE + r as usize
}
#[inline]
pub fn dropped_index(service: u16, l: Which) -> usize {
    usize::from(service) * LIMIT_STRIDE + 3 + l as usize
}

/// A limit that drops: one of the rates, or the sessions cap.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    Packets = 0,
    Bytes = 1,
    Connections = 2,
    Sessions = 3,
}

impl From<Rate> for Which {
    fn from(r: Rate) -> Which {
        match r {
            Rate::Packets => Which::Packets,
            Rate::Bytes => Which::Bytes,
            Rate::Connections => Which::Connections,
        }
    }
}

impl Which {
    pub const ALL: [Which; 4] = [Which::Packets, Which::Bytes, Which::Connections, Which::Sessions];

    pub fn label(self) -> &'static str {
        match self {
            Which::Packets => "packets",
            Which::Bytes => "bytes",
            Which::Connections => "connections",
            Which::Sessions => "sessions",
        }
    }
}

/// Per worker: each service's buckets, kept across config generations by service id.
#[derive(Debug, Default)]
pub struct LimitState {
    generation: u64,
    ids: Vec<u16>,
    buckets: Vec<[Bucket; 3]>,
}

impl LimitState {
    /// Aligns the buckets with `services` (ids, in snapshot order) when the generation changes;
    /// a service keeps its buckets while its id stays. Once per poll: nothing to do while the
    /// generation stays (allocates only when it changes).
    #[inline]
    pub fn prepare(&mut self, generation: u64, ids: impl ExactSizeIterator<Item = u16>) {
        if self.generation == generation && self.ids.len() == ids.len() {
            return;
        }
        self.realign(generation, ids);
    }

    #[cold]
    fn realign(&mut self, generation: u64, ids: impl Iterator<Item = u16>) {
        let old: std::collections::HashMap<u16, [Bucket; 3]> =
            self.ids.iter().copied().zip(self.buckets.iter().copied()).collect();
        self.ids = ids.collect();
        self.buckets = self.ids.iter().map(|id| old.get(id).copied().unwrap_or_default()).collect();
        self.generation = generation;
    }

    /// The buckets of the service at index `si`.
    #[inline]
    pub fn buckets(&mut self, si: usize) -> Option<&mut [Bucket; 3]> {
        self.buckets.get_mut(si)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// (Packets let through, packets offered) in `secs` seconds when offered every `gap_ns`.
    fn offer(rate: u64, gap_ns: u64, secs: u64, cost: u64) -> (u64, u64) {
        let mut b = Bucket::default();
        let mut now = S; // a worker's clock is not at zero
        let (mut n, mut offered) = (0, 0);
        while now < S + secs * S {
            n += u64::from(b.take(now, rate, cost));
            offered += 1;
            now += gap_ns;
        }
        (n, offered)
    }

    fn passed(rate: u64, gap_ns: u64, secs: u64, cost: u64) -> u64 {
        offer(rate, gap_ns, secs, cost).0
    }

    #[test]
    fn a_bucket_holds_a_flood_to_its_rate() {
        // 1000/s offered 100 000/s for 10 s: the rate, plus the first burst (50 ms' worth).
        let n = passed(1000, 10_000, 10, 1);
        assert!((10_000..=10_051).contains(&n), "{n}");
        // Bytes: 1 MB/s offered 1500-byte packets at 10 MB/s.
        let bytes = passed(1_000_000, 150_000, 10, 1500) * 1500;
        assert!((10_000_000..=10_000_000 + 50_000 + 3000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn under_its_rate_nothing_is_held_back() {
        // 1000/s offered 900/s: every packet passes.
        let (n, offered) = offer(1000, S / 900, 5, 1);
        assert!(offered >= 4500);
        assert_eq!(n, offered);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut b = Bucket::default();
        assert!(b.take(S, 100, 1));
        // An hour idle earns no more than 50 ms' worth: 5 packets at 100/s.
        let later = S + 3600 * S;
        let n = (0..100).filter(|_| b.take(later, 100, 1)).count();
        assert_eq!(n, 5);
        // A debt: a packet larger than the credit passes once, then waits for the refill.
        let mut b = Bucket::default();
        assert!(b.take(S, 1000, 10_000), "credit 50, one 10 000-unit packet");
        assert!(!b.take(S + S, 1000, 1), "one second later the debt is not paid yet");
        assert!(b.take(S + 10 * S, 1000, 1));
    }

    #[test]
    fn a_zero_rate_lets_nothing_through() {
        assert_eq!(passed(0, 1000, 1, 1), 0);
    }

    #[test]
    fn split_is_max_min_fair_and_keeps_a_floor() {
        let mut out = [0; 2];
        split(1000, &[0, 0], &mut out);
        assert_eq!(out, [500, 500], "no demand: equal parts");
        // Worker 1 asks 100/s: it gets 125 (a quarter more); worker 0 takes the rest.
        split(1000, &[5000, 100], &mut out);
        assert_eq!(out, [875, 125]);
        // Both ask more than half: half each.
        split(1000, &[3000, 900], &mut out);
        assert_eq!(out, [500, 500]);
        // An idle worker keeps its floor (an eighth of an equal share).
        split(1000, &[5000, 0], &mut out);
        assert_eq!(out, [938, 62]);
        // Both ask little: each gets its want, the rest is spread equally.
        split(1000, &[100, 200], &mut out);
        assert_eq!(out, [438, 562]);
        let mut one = [0];
        split(7, &[3], &mut one);
        assert_eq!(one, [7]);
        split(u64::MAX, &[u64::MAX, 1], &mut out);
        assert_eq!(out[0].wrapping_add(out[1]), u64::MAX);
        // Three workers, one light: the two heavy ones share what it leaves.
        let mut three = [0; 3];
        split(900, &[1000, 40, 1000], &mut three);
        assert_eq!(three, [425, 50, 425]);
        assert_eq!(three.iter().sum::<u64>(), 900);
    }

    #[test]
    fn shares_default_to_equal_parts_until_set() {
        let iso = Isolation::new(2);
        assert_eq!(iso.share(1, 7, Rate::Packets, 1000), 500);
        iso.set_share(1, 7, Rate::Packets, 900);
        assert_eq!(iso.share(1, 7, Rate::Packets, 1000), 900);
        assert_eq!(iso.share(0, 7, Rate::Packets, 1000), 500, "another worker's share is its own");
        assert_eq!(iso.share(1, 7, Rate::Bytes, 1000), 500, "another rate's share is its own");
        iso.set_share(5, 7, Rate::Packets, 1); // no such worker: ignored
        assert!(!iso.overloaded());
        iso.set_overloaded(true);
        assert!(iso.overloaded());
    }

    #[test]
    fn buckets_follow_services_by_id_across_generations() {
        let mut st = LimitState::default();
        st.prepare(1, [7u16, 9].into_iter());
        st.buckets(1).unwrap()[0].take(S, 10, 1);
        let used = *st.buckets(1).unwrap();
        // Generation 2 puts a new service first: service 9 keeps its buckets at index 2.
        st.prepare(2, [3u16, 7, 9].into_iter());
        assert_eq!(*st.buckets(2).unwrap(), used);
        assert_eq!(*st.buckets(0).unwrap(), [Bucket::default(); 3]);
        assert!(st.buckets(3).is_none());
    }
}
