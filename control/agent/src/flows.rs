//! Flow memory for the NAT return path (TGW's vpc module).
//!
//! Every decapsulated TCP/UDP packet is remembered under its flow in reply direction, on the
//! TUN it was delivered to: what the local kernel later sends out of that TUN for that flow
//! is tunneled back to the appliance it came from, the way it came. An entry unused (neither
//! refreshed by an incoming packet nor by a reply) for the idle timeout is forgotten.
//!
//! Flows of both families share the memory: an IPv6 flow's key holds its IPv6 addresses, and
//! its path the appliance's address of whichever family the tunnel came over.
//!
//! Time is passed in explicitly, in whole seconds from any fixed origin.

use crate::tunnel::{Encap, FiveTuple};
use std::collections::HashMap;
use std::net::IpAddr;

/// Where a flow's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPath {
    /// The appliance that tunneled the flow's packets here (their outer source, IPv4 or IPv6:
    /// the family of the underlay the replies go back over).
    pub appliance: IpAddr,
    /// How they came: replies go back the same way (IPIP, or GRE with the same key).
    pub encap: Encap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    tun: usize,
    /// The flow as its replies carry it.
    reply: FiveTuple,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    path: ReturnPath,
    last_seen: u64,
    /// When the flow was first seen.
    since: u64,
}

/// What [`FlowMemory::remember`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// A flow not known before.
    New,
    /// A known flow: its last-seen time (and path, if it changed) updated.
    Refreshed,
    /// A new flow, not remembered: its appliance already has its share of the memory, or the
    /// whole memory is full.
    Full,
}

/// How many flows the memory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most flows remembered for one appliance (outer source address): one sender, even a
    /// spoofed one inside an allowed prefix, cannot take another appliance's share.
    pub per_appliance: usize,
    /// Most flows remembered at once, all appliances together: the memory bound.
    pub total: usize,
}

/// The remembered flows, at most [`Limits::per_appliance`] of each appliance and
/// [`Limits::total`] in all.
///
/// A known flow whose packets now come from another appliance (the router rehashed it, or
/// failed over) moves there, even past that appliance's share: moving never adds a flow, and a
/// failed-over flow must keep its replies. Only new flows are held to the limits.
#[derive(Debug)]
pub struct FlowMemory {
    flows: HashMap<Key, Entry>,
    /// Flows remembered per appliance; an appliance with none has no entry.
    per_appliance: HashMap<IpAddr, usize>,
    timeout: u64,
    limits: Limits,
}

impl FlowMemory {
    /// Flows are forgotten after `timeout` seconds unused; at most `limits` are kept.
    pub fn new(timeout: u64, limits: Limits) -> FlowMemory {
        FlowMemory { flows: HashMap::new(), per_appliance: HashMap::new(), timeout, limits }
    }

    /// Remembers that `forward` (a packet's own 5-tuple) arrived on `tun` through `path` at
    /// `now`: a new flow, or a known one refreshed (its path replaced if it changed, as when
    /// the router moved it to another appliance). When `path`'s appliance has its share, or the
    /// memory is full, a new flow is not remembered: its packets are still delivered, but
    /// their replies will find no flow.
    pub fn remember(&mut self, tun: usize, forward: &FiveTuple, path: ReturnPath, now: u64) -> Remembered {
        let key = Key { tun, reply: forward.reversed() };
        if let Some(e) = self.flows.get_mut(&key) {
            let from = e.path.appliance;
            *e = Entry { path, last_seen: now, since: e.since };
            if from != path.appliance {
                uncount(&mut self.per_appliance, from);
                *self.per_appliance.entry(path.appliance).or_insert(0) += 1;
            }
            return Remembered::Refreshed;
        }
        let mine = self.flows_of(path.appliance);
        if mine >= self.limits.per_appliance || self.flows.len() >= self.limits.total {
            return Remembered::Full;
        }
        self.flows.insert(key, Entry { path, last_seen: now, since: now });
        self.per_appliance.insert(path.appliance, mine + 1);
        Remembered::New
    }

    /// The return path of the flow a packet the kernel sent out of `tun` belongs to, by the
    /// packet's own 5-tuple; refreshes the flow. `None` if unknown or expired.
    pub fn lookup(&mut self, tun: usize, reply: &FiveTuple, now: u64) -> Option<ReturnPath> {
        self.lookup_aged(tun, reply, now).map(|(path, _)| path)
    }

    /// [`FlowMemory::lookup`], with the flow's age in seconds.
    pub fn lookup_aged(&mut self, tun: usize, reply: &FiveTuple, now: u64) -> Option<(ReturnPath, u64)> {
        let key = Key { tun, reply: *reply };
        let timeout = self.timeout;
        let e = self.flows.get_mut(&key)?;
        if now.saturating_sub(e.last_seen) >= timeout {
            return None;
        }
        e.last_seen = now;
        Some((e.path, now.saturating_sub(e.since)))
    }

    /// Forgets every flow unused for the timeout; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        let before = self.flows.len();
        let timeout = self.timeout;
        let per_appliance = &mut self.per_appliance;
        self.flows.retain(|_, e| {
            let keep = now.saturating_sub(e.last_seen) < timeout;
            if !keep {
                uncount(per_appliance, e.path.appliance);
            }
            keep
        });
        before - self.flows.len()
    }

    /// How many flows `appliance` has now.
    pub fn flows_of(&self, appliance: IpAddr) -> usize {
        self.per_appliance.get(&appliance).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// One flow of `appliance` fewer in `counts`; an appliance left with none loses its entry.
fn uncount(counts: &mut HashMap<IpAddr, usize>, appliance: IpAddr) {
    if let Some(n) = counts.get_mut(&appliance) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&appliance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const APPLIANCE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));

    /// CLIENT:40000 -> BACKEND:80 over TCP, as it arrives.
    fn forward(client_port: u16) -> FiveTuple {
        FiveTuple {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            src_port: client_port,
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            dst_port: 80,
            protocol: 6,
        }
    }

    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3));

    fn limits(per_appliance: usize, total: usize) -> Limits {
        Limits { per_appliance, total }
    }

    fn gre(key: u32) -> ReturnPath {
        ReturnPath { appliance: APPLIANCE, encap: Encap::Gre { key: Some(key) } }
    }

    #[test]
    fn a_flows_age_counts_from_its_first_packet_through_refreshes_and_moves() {
        let mut m = FlowMemory::new(300, Limits { per_appliance: 10, total: 10 });
        let f = FiveTuple {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            src_port: 40000,
            dst_port: 80,
            protocol: 6,
        };
        let path = |a| ReturnPath { appliance: IpAddr::V4(Ipv4Addr::new(198, 19, 0, a)), encap: Encap::Ipip };
        m.remember(0, &f, path(1), 100);
        m.remember(0, &f, path(3), 104);
        let (p, age) = m.lookup_aged(0, &f.reversed(), 107).unwrap();
        assert_eq!((p, age), (path(3), 7));
    }

    #[test]
    fn remembers_in_reply_direction() {
        let mut m = FlowMemory::new(300, limits(100, 100));
        assert_eq!(m.remember(1, &forward(40000), gre(100), 10), Remembered::New);
        assert_eq!(m.len(), 1);
        // The reply's own tuple finds it; the forward tuple does not.
        assert_eq!(m.lookup(1, &forward(40000).reversed(), 11), Some(gre(100)));
        assert_eq!(m.lookup(1, &forward(40000), 11), None);
        // Another TUN, another port, another protocol: not the same flow.
        assert_eq!(m.lookup(0, &forward(40000).reversed(), 11), None);
        assert_eq!(m.lookup(1, &forward(40001).reversed(), 11), None);
        let mut udp = forward(40000).reversed();
        udp.protocol = 17;
        assert_eq!(m.lookup(1, &udp, 11), None);
    }

    #[test]
    fn path_follows_the_latest_packet() {
        let mut m = FlowMemory::new(300, limits(100, 100));
        m.remember(0, &forward(40000), ReturnPath { appliance: APPLIANCE, encap: Encap::Ipip }, 1);
        let moved = ReturnPath { appliance: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)), encap: Encap::Ipip };
        assert_eq!(m.remember(0, &forward(40000), moved, 2), Remembered::Refreshed);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0, &forward(40000).reversed(), 3), Some(moved));
    }

    #[test]
    fn ipv6_flows_are_remembered_beside_ipv4_ones() {
        let mut m = FlowMemory::new(300, limits(2, 10));
        let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        // CLIENT6:40000 -> VM6:80, over an IPv6 underlay from an IPv6 appliance, key 100.
        let f = FiveTuple {
            src: v6("2001:db8:c::2"),
            src_port: 40000,
            dst: v6("2001:db8:f::5"),
            dst_port: 80,
            protocol: 6,
        };
        let a6 = ReturnPath { appliance: v6("2001:db8:19::1"), encap: Encap::Gre { key: Some(100) } };
        assert_eq!(m.remember(1, &f, a6, 0), Remembered::New);
        // The IPv4 flow with the same ports is another flow; it may come over either underlay.
        assert_eq!(m.remember(1, &forward(40000), from(APPLIANCE), 0), Remembered::New);
        let over_v6 = ReturnPath { appliance: v6("2001:db8:19::1"), encap: Encap::Ipip };
        assert_eq!(m.remember(0, &forward(40001), over_v6, 0), Remembered::New);
        assert_eq!(m.lookup(1, &f.reversed(), 1), Some(a6));
        assert_eq!(m.lookup(1, &forward(40000).reversed(), 1), Some(from(APPLIANCE)));
        assert_eq!(m.lookup(0, &forward(40001).reversed(), 1), Some(over_v6));
        // The IPv6 appliance has its own share, full now; the IPv4 one's is not.
        assert_eq!((m.flows_of(v6("2001:db8:19::1")), m.flows_of(APPLIANCE)), (2, 1));
        let g = FiveTuple { src_port: 40002, ..f };
        assert_eq!(m.remember(1, &g, a6, 1), Remembered::Full);
        assert_eq!(m.remember(1, &forward(40002), from(APPLIANCE), 1), Remembered::New);
    }

    #[test]
    fn expires_after_the_idle_timeout() {
        let mut m = FlowMemory::new(300, limits(100, 100));
        m.remember(1, &forward(40000), gre(100), 1000);
        m.remember(1, &forward(40001), gre(100), 1000);
        let r = forward(40000).reversed();
        // Used at 1200 (refreshed), so alive at 1499; flow 40001 was not.
        assert_eq!(m.lookup(1, &r, 1200), Some(gre(100)));
        assert_eq!(m.lookup(1, &forward(40001).reversed(), 1300), None, "expired before a sweep");
        assert_eq!(m.sweep(1499), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(1, &r, 1499), Some(gre(100)));
        assert_eq!(m.lookup(1, &r, 1799), None);
        assert_eq!(m.sweep(1799), 1);
        assert!(m.is_empty());
    }

    #[test]
    fn an_incoming_packet_refreshes_its_flow() {
        let mut m = FlowMemory::new(10, limits(100, 100));
        m.remember(0, &forward(40000), gre(1), 0);
        m.remember(0, &forward(40000), gre(1), 8);
        assert_eq!(m.sweep(12), 0);
        assert_eq!(m.sweep(18), 1);
    }

    #[test]
    fn full_memory_refuses_new_flows_but_refreshes_known_ones() {
        let mut m = FlowMemory::new(300, limits(2, 2));
        assert_eq!(m.remember(0, &forward(1), gre(1), 0), Remembered::New);
        assert_eq!(m.remember(0, &forward(2), gre(1), 0), Remembered::New);
        assert_eq!(m.remember(0, &forward(3), gre(1), 0), Remembered::Full);
        assert_eq!(m.remember(0, &forward(2), gre(2), 1), Remembered::Refreshed);
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup(0, &forward(3).reversed(), 1), None);
        assert_eq!(m.lookup(0, &forward(2).reversed(), 1), Some(gre(2)));
    }

    fn from(appliance: IpAddr) -> ReturnPath {
        ReturnPath { appliance, encap: Encap::Gre { key: Some(100) } }
    }

    #[test]
    fn a_flood_from_one_appliance_cannot_take_the_slots_of_another() {
        let mut m = FlowMemory::new(300, limits(3, 6));
        assert_eq!(m.remember(0, &forward(1), from(APPLIANCE), 0), Remembered::New);
        // OTHER floods: three flows, then every further one is refused.
        for port in 100..1000 {
            let want = if port < 103 { Remembered::New } else { Remembered::Full };
            assert_eq!(m.remember(0, &forward(port), from(OTHER), 0), want, "{port}");
        }
        assert_eq!((m.flows_of(OTHER), m.flows_of(APPLIANCE), m.len()), (3, 1, 4));
        // APPLIANCE still gets its own share, and its flow kept its path.
        assert_eq!(m.remember(0, &forward(2), from(APPLIANCE), 1), Remembered::New);
        assert_eq!(m.remember(0, &forward(3), from(APPLIANCE), 1), Remembered::New);
        assert_eq!(m.remember(0, &forward(4), from(APPLIANCE), 1), Remembered::Full);
        assert_eq!(m.lookup(0, &forward(1).reversed(), 1), Some(from(APPLIANCE)));
    }

    #[test]
    fn the_total_bounds_every_appliance_together() {
        let mut m = FlowMemory::new(300, limits(2, 3));
        m.remember(0, &forward(1), from(APPLIANCE), 0);
        m.remember(0, &forward(2), from(APPLIANCE), 0);
        assert_eq!(m.remember(0, &forward(3), from(OTHER), 0), Remembered::New);
        assert_eq!(m.remember(0, &forward(4), from(OTHER), 0), Remembered::Full);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn a_moved_flow_moves_its_count_and_expiry_frees_slots() {
        let mut m = FlowMemory::new(300, limits(1, 10));
        m.remember(0, &forward(1), from(APPLIANCE), 0);
        m.remember(0, &forward(2), from(OTHER), 0);
        // Failover: flow 1 now comes from OTHER, past OTHER's share of 1.
        assert_eq!(m.remember(0, &forward(1), from(OTHER), 1), Remembered::Refreshed);
        assert_eq!((m.flows_of(APPLIANCE), m.flows_of(OTHER)), (0, 2));
        assert_eq!(m.lookup(0, &forward(1).reversed(), 1), Some(from(OTHER)));
        // APPLIANCE's share is free again; OTHER's is not.
        assert_eq!(m.remember(0, &forward(3), from(APPLIANCE), 1), Remembered::New);
        assert_eq!(m.remember(0, &forward(4), from(OTHER), 1), Remembered::Full);
        // Flow 2 (last seen at 0) expires; OTHER keeps flow 1, still over its share.
        assert_eq!(m.sweep(300), 1);
        assert_eq!((m.flows_of(APPLIANCE), m.flows_of(OTHER)), (1, 1));
        assert_eq!(m.sweep(301), 2);
        assert_eq!((m.flows_of(APPLIANCE), m.flows_of(OTHER), m.len()), (0, 0, 0));
        assert_eq!(m.remember(0, &forward(4), from(OTHER), 302), Remembered::New);
    }

    /// One step of the property test: remember (tun, client port, appliance) at a time, or
    /// sweep at a time.
    #[derive(Debug, Clone)]
    enum Op {
        Remember(usize, u16, u8, u64),
        Sweep(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0usize..2, 0u16..24, 0u8..4, 0u64..40).prop_map(|(t, p, a, n)| Op::Remember(t, p, a, n)),
            1 => (0u64..40).prop_map(Op::Sweep),
        ]
    }

    proptest::proptest! {
        /// Whatever the sequence, from four appliances: the per-appliance counts match the
        /// flows, the total bound holds, and a new flow is refused exactly when its own
        /// appliance has its share or the memory is full: never because another appliance
        /// has many flows.
        #[test]
        fn counts_and_limits_hold(ops in proptest::collection::vec(op(), 0..200), per in 1usize..6, extra in 0usize..12) {
            let total = per + extra;
            let mut m = FlowMemory::new(10, limits(per, total));
            let addr = |a: u8| IpAddr::V4(Ipv4Addr::new(198, 19, 0, a));
            for o in ops {
                match o {
                    Op::Remember(tun, port, a, now) => {
                        let known = m.flows.contains_key(&Key { tun, reply: forward(port).reversed() });
                        let (mine, len) = (m.flows_of(addr(a)), m.len());
                        let got = m.remember(tun, &forward(port), from(addr(a)), now);
                        let want = if known {
                            Remembered::Refreshed
                        } else if mine >= per || len >= total {
                            Remembered::Full
                        } else {
                            Remembered::New
                        };
                        proptest::prop_assert_eq!(got, want);
                    }
                    Op::Sweep(now) => {
                        m.sweep(now);
                    }
                }
                proptest::prop_assert!(m.len() <= total);
                let mut counted = HashMap::new();
                for e in m.flows.values() {
                    *counted.entry(e.path.appliance).or_insert(0usize) += 1;
                }
                proptest::prop_assert_eq!(&counted, &m.per_appliance);
            }
        }
    }
}
