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

/// Splits `rate` among workers by their recent `demand` (units each asked for in the last
/// period) into `out`: every worker keeps a floor of an eighth of an equal share (so one that
/// was idle can start), the rest goes in proportion to demand; with no demand, equal shares.
/// The shares add up to `rate` (rounding goes to the first worker).
pub fn split(rate: u64, demand: &[u64], out: &mut [u64]) {
    let n = demand.len().min(out.len());
    if n == 0 {
        return;
    }
    let total: u128 = demand[..n].iter().map(|&d| u128::from(d)).sum();
    let floor = rate / (8 * n as u64);
    let rest = rate - floor * n as u64;
    for (o, &d) in out[..n].iter_mut().zip(&demand[..n]) {
        *o = floor
            + match (u128::from(rest) * u128::from(d)).checked_div(total) {
                Some(share) => share as u64,
                None => rest / n as u64,
            };
    }
    let given: u64 = out[..n].iter().sum();
    out[0] += rate - given;
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
    /// a service keeps its buckets while its id stays.
    pub fn prepare(&mut self, generation: u64, ids: impl Iterator<Item = u16> + Clone) {
        if self.generation == generation && self.ids.len() == ids.clone().count() {
            return;
        }
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
    fn split_follows_demand_and_keeps_a_floor() {
        let mut out = [0; 2];
        split(1000, &[0, 0], &mut out);
        assert_eq!(out, [500, 500]);
        split(1000, &[300, 100], &mut out);
        assert_eq!(out.iter().sum::<u64>(), 1000);
        // floor 62 each, the rest 876 split 3:1.
        assert_eq!(out, [62 + 657, 62 + 219]);
        split(1000, &[5000, 0], &mut out);
        assert_eq!(out, [938, 62], "an idle worker keeps its floor");
        let mut one = [0];
        split(7, &[3], &mut one);
        assert_eq!(one, [7]);
        split(u64::MAX, &[u64::MAX, 1], &mut out);
        assert_eq!(out[0].wrapping_add(out[1]), u64::MAX);
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
