//! Flow memory for the NAT return path (TGW's vpc module).
//!
//! Every decapsulated TCP/UDP packet is remembered under its flow in reply direction, on the
//! TUN it was delivered to: what the local kernel later sends out of that TUN for that flow
//! is tunneled back to the appliance it came from, the way it came. An entry unused (neither
//! refreshed by an incoming packet nor by a reply) for the idle timeout is forgotten.
//!
//! Time is passed in explicitly, in whole seconds from any fixed origin.

use crate::tunnel::{Encap, FiveTuple};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Where a flow's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPath {
    /// The appliance that tunneled the flow's packets here (their outer source).
    pub appliance: Ipv4Addr,
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
}

/// What [`FlowMemory::remember`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// A flow not known before.
    New,
    /// A known flow: its last-seen time (and path, if it changed) updated.
    Refreshed,
    /// A new flow, not remembered: the memory is full.
    Full,
}

/// The remembered flows, at most `capacity` of them.
#[derive(Debug)]
pub struct FlowMemory {
    flows: HashMap<Key, Entry>,
    timeout: u64,
    capacity: usize,
}

impl FlowMemory {
    /// Flows are forgotten after `timeout` seconds unused; at most `capacity` are kept.
    pub fn new(timeout: u64, capacity: usize) -> FlowMemory {
        FlowMemory { flows: HashMap::new(), timeout, capacity }
    }

    /// Remembers that `forward` (a packet's own 5-tuple) arrived on `tun` through `path` at
    /// `now`: a new flow, or a known one refreshed (its path replaced if it changed, as when
    /// the router moved it to another appliance). When the memory is full a new flow is not
    /// remembered: its packets are still delivered, but their replies will find no flow.
    pub fn remember(&mut self, tun: usize, forward: &FiveTuple, path: ReturnPath, now: u64) -> Remembered {
        let key = Key { tun, reply: forward.reversed() };
        if let Some(e) = self.flows.get_mut(&key) {
            *e = Entry { path, last_seen: now };
            return Remembered::Refreshed;
        }
        if self.flows.len() >= self.capacity {
            return Remembered::Full;
        }
        self.flows.insert(key, Entry { path, last_seen: now });
        Remembered::New
    }

    /// The return path of the flow a packet the kernel sent out of `tun` belongs to, by the
    /// packet's own 5-tuple; refreshes the flow. `None` if unknown or expired.
    pub fn lookup(&mut self, tun: usize, reply: &FiveTuple, now: u64) -> Option<ReturnPath> {
        let key = Key { tun, reply: *reply };
        let timeout = self.timeout;
        let e = self.flows.get_mut(&key)?;
        if now.saturating_sub(e.last_seen) >= timeout {
            return None;
        }
        e.last_seen = now;
        Some(e.path)
    }

    /// Forgets every flow unused for the timeout; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        let before = self.flows.len();
        let timeout = self.timeout;
        self.flows.retain(|_, e| now.saturating_sub(e.last_seen) < timeout);
        before - self.flows.len()
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

    /// CLIENT:40000 -> BACKEND:80 over TCP, as it arrives.
    fn forward(client_port: u16) -> FiveTuple {
        FiveTuple {
            src: Ipv4Addr::new(198, 18, 0, 2),
            src_port: client_port,
            dst: Ipv4Addr::new(10, 0, 0, 5),
            dst_port: 80,
            protocol: 6,
        }
    }

    fn gre(key: u32) -> ReturnPath {
        ReturnPath { appliance: APPLIANCE, encap: Encap::Gre { key: Some(key) } }
    }

    #[test]
    fn remembers_in_reply_direction() {
        let mut m = FlowMemory::new(300, 100);
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
        let mut m = FlowMemory::new(300, 100);
        m.remember(0, &forward(40000), ReturnPath { appliance: APPLIANCE, encap: Encap::Ipip }, 1);
        let moved = ReturnPath { appliance: Ipv4Addr::new(198, 19, 0, 2), encap: Encap::Ipip };
        assert_eq!(m.remember(0, &forward(40000), moved, 2), Remembered::Refreshed);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0, &forward(40000).reversed(), 3), Some(moved));
    }

    #[test]
    fn expires_after_the_idle_timeout() {
        let mut m = FlowMemory::new(300, 100);
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
        let mut m = FlowMemory::new(10, 100);
        m.remember(0, &forward(40000), gre(1), 0);
        m.remember(0, &forward(40000), gre(1), 8);
        assert_eq!(m.sweep(12), 0);
        assert_eq!(m.sweep(18), 1);
    }

    #[test]
    fn full_memory_refuses_new_flows_but_refreshes_known_ones() {
        let mut m = FlowMemory::new(300, 2);
        assert_eq!(m.remember(0, &forward(1), gre(1), 0), Remembered::New);
        assert_eq!(m.remember(0, &forward(2), gre(1), 0), Remembered::New);
        assert_eq!(m.remember(0, &forward(3), gre(1), 0), Remembered::Full);
        assert_eq!(m.remember(0, &forward(2), gre(2), 1), Remembered::Refreshed);
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup(0, &forward(3).reversed(), 1), None);
        assert_eq!(m.lookup(0, &forward(2).reversed(), 1), Some(gre(2)));
    }
}
