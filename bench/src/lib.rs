//! Shared pieces of Sluice's benchmarks: the flow space the generator walks and the packets it
//! builds, kept here so the criterion benchmarks and the generator agree. The benchmarks'
//! appliances and other frames are fixtures of the test kit (`sluice_dataplane::testkit::bench`,
//! a dev-dependency here, so that sluice-gen builds without it).

use sluice_dataplane::wire::checksum;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Client addresses come from 198.18.128.0/17 (inside the lab range 198.18.0.0/15).
pub const CLIENT_BASE: u32 = u32::from_be_bytes([198, 18, 128, 0]);
pub const CLIENT_ADDRS: u32 = 1 << 15;
pub const FIRST_PORT: u16 = 1024;

/// Which packets the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Cycle over `n` flows in a scattered order: every flow is seen again and again.
    Established { flows: u32 },
    /// Every packet a flow not seen before (for the first 2^31 packets).
    NewFlows,
}

/// Walks the flow space: `next()` gives the (source address, source port) of each packet.
#[derive(Debug, Clone)]
pub struct FlowWalk {
    traffic: Traffic,
    index: u64,
    step: u64,
}

impl FlowWalk {
    pub fn new(traffic: Traffic) -> FlowWalk {
        let step = match traffic {
            // A step coprime to n visits all n flows, scattered, before repeating.
            Traffic::Established { flows } => {
                let n = u64::from(flows.max(1));
                let mut s = (n * 5 / 8) | 1;
                while gcd(s, n) != 1 {
                    s += 2;
                }
                s % n.max(2)
            }
            Traffic::NewFlows => 1,
        };
        FlowWalk { traffic, index: 0, step }
    }

    #[inline]
    pub fn next_flow(&mut self) -> (u32, u16) {
        let f = self.index;
        self.index = match self.traffic {
            Traffic::Established { flows } => {
                let n = u64::from(flows.max(1));
                let next = f + self.step;
                if next >= n {
                    next - n
                } else {
                    next
                }
            }
            Traffic::NewFlows => (f + 1) & 0x7fff_ffff,
        };
        let addr = CLIENT_BASE + (f as u32 % CLIENT_ADDRS);
        let port = FIRST_PORT.wrapping_add((f / u64::from(CLIENT_ADDRS)) as u16);
        (addr, port)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A 60-byte Ethernet/IPv4/TCP (or UDP) template toward `vip:dport`; a `FlowWalk` fills the
/// source. L4 checksums are left zero: neither device under test reads them.
#[derive(Debug, Clone)]
pub struct Template {
    pub bytes: [u8; 60],
    ip_csum: u16,
}

pub const SRC_IP_AT: usize = 14 + 12;
pub const SRC_PORT_AT: usize = 14 + 20;
const IP_CSUM_AT: usize = 14 + 10;

impl Template {
    pub fn new(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        vip: Ipv4Addr,
        dport: u16,
        tcp_flags: Option<u8>,
    ) -> Template {
        let mut b = [0u8; 60];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&[0x08, 0x00]);
        let proto = if tcp_flags.is_some() { 6 } else { 17 };
        let l4_len: u16 = if tcp_flags.is_some() { 20 } else { 8 + 18 };
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + l4_len).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&CLIENT_BASE.to_be_bytes());
        ip[16..20].copy_from_slice(&vip.octets());
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        b[SRC_PORT_AT..SRC_PORT_AT + 2].copy_from_slice(&FIRST_PORT.to_be_bytes());
        b[36..38].copy_from_slice(&dport.to_be_bytes());
        match tcp_flags {
            Some(flags) => {
                b[38..42].copy_from_slice(&1u32.to_be_bytes());
                b[46] = 0x50;
                b[47] = flags;
                b[48..50].copy_from_slice(&64240u16.to_be_bytes());
            }
            None => b[38..40].copy_from_slice(&l4_len.to_be_bytes()),
        }
        Template { bytes: b, ip_csum: c }
    }

    /// Writes the walk's next packet into `out` (60 bytes).
    #[inline]
    pub fn fill(&self, walk: &mut FlowWalk, out: &mut [u8]) {
        let (addr, port) = walk.next_flow();
        out[..60].copy_from_slice(&self.bytes);
        out[SRC_IP_AT..SRC_IP_AT + 4].copy_from_slice(&addr.to_be_bytes());
        out[SRC_PORT_AT..SRC_PORT_AT + 2].copy_from_slice(&port.to_be_bytes());
        let c = checksum::update32(self.ip_csum, CLIENT_BASE, addr);
        out[IP_CSUM_AT..IP_CSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// IPv6 clients: 2001:db8:c000::/96 with the walk's IPv4 client address as the last 32 bits.
pub const CLIENT_BASE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc000, 0, 0, 0, 0, 0);

/// [`Template`] for IPv6: a 74-byte Ethernet/IPv6/TCP packet (or a 62-byte UDP one with 8
/// bytes of data) toward `[vip]:dport`, hop limit 64, no extension header; a `FlowWalk` fills
/// the source (the last 32 bits of the address, and the port). L4 checksums are left zero.
#[derive(Debug, Clone)]
pub struct Template6 {
    pub bytes: Vec<u8>,
}

pub const SRC_IP6_LOW_AT: usize = 14 + 8 + 12;
pub const SRC_PORT6_AT: usize = 14 + 40;

impl Template6 {
    pub fn new(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        vip: Ipv6Addr,
        dport: u16,
        tcp_flags: Option<u8>,
    ) -> Template6 {
        let l4_len: u16 = if tcp_flags.is_some() { 20 } else { 8 + 8 };
        let mut b = vec![0u8; 14 + 40 + usize::from(l4_len)];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut b[14..54];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&l4_len.to_be_bytes());
        ip[6] = if tcp_flags.is_some() { 6 } else { 17 };
        ip[7] = 64;
        ip[8..24].copy_from_slice(&CLIENT_BASE6.octets());
        ip[24..40].copy_from_slice(&vip.octets());
        b[SRC_PORT6_AT..SRC_PORT6_AT + 2].copy_from_slice(&FIRST_PORT.to_be_bytes());
        b[56..58].copy_from_slice(&dport.to_be_bytes());
        match tcp_flags {
            Some(flags) => {
                b[58..62].copy_from_slice(&1u32.to_be_bytes());
                b[66] = 0x50;
                b[67] = flags;
                b[68..70].copy_from_slice(&64240u16.to_be_bytes());
            }
            None => b[58..60].copy_from_slice(&l4_len.to_be_bytes()),
        }
        Template6 { bytes: b }
    }

    /// Writes the walk's next packet into `out` (`self.bytes.len()` bytes).
    #[inline]
    pub fn fill(&self, walk: &mut FlowWalk, out: &mut [u8]) {
        let (addr, port) = walk.next_flow();
        out[..self.bytes.len()].copy_from_slice(&self.bytes);
        out[SRC_IP6_LOW_AT..SRC_IP6_LOW_AT + 4].copy_from_slice(&addr.to_be_bytes());
        out[SRC_PORT6_AT..SRC_PORT6_AT + 2].copy_from_slice(&port.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::testkit::bench::{linux_syn, synproxy_snapshot, SYNPROXY_VIP};
    use sluice_dataplane::testkit::{vip, EXT_MAC, GEN_MAC};
    use sluice_dataplane::wire::Ipv4Packet;
    use std::collections::HashSet;

    #[test]
    fn established_visits_every_flow_then_repeats() {
        for n in [1u32, 7, 1 << 16, 1_000_000] {
            let mut w = FlowWalk::new(Traffic::Established { flows: n });
            let first: Vec<(u32, u16)> = (0..n).map(|_| w.next_flow()).collect();
            let seen: HashSet<&(u32, u16)> = first.iter().collect();
            assert_eq!(seen.len(), n as usize, "n={n}");
            assert_eq!(w.next_flow(), first[0], "n={n}: period is n");
            if n > 2 {
                assert_ne!(first[1], (first[0].0 + 1, first[0].1), "n={n}: scattered, not sequential");
            }
        }
    }

    #[test]
    fn new_flows_do_not_repeat() {
        let mut w = FlowWalk::new(Traffic::NewFlows);
        let seen: HashSet<(u32, u16)> = (0..200_000).map(|_| w.next_flow()).collect();
        assert_eq!(seen.len(), 200_000);
    }

    #[test]
    fn filled_packets_have_valid_ip_checksums() {
        let t = Template::new(EXT_MAC, GEN_MAC, vip(1), 80, Some(0x10));
        let mut b = [0u8; 60];
        let mut walk = FlowWalk::new(Traffic::NewFlows);
        let mut shadow = FlowWalk::new(Traffic::NewFlows);
        for i in 0..100_000 {
            t.fill(&mut walk, &mut b);
            let ip = Ipv4Packet::new_checked(&b[14..]).unwrap();
            assert!(ip.verify_checksum(), "packet {i}");
            let (addr, port) = shadow.next_flow();
            assert_eq!((u32::from(ip.src()), u16::from_be_bytes([b[34], b[35]])), (addr, port));
        }
    }

    #[test]
    fn ipv6_packets_are_tunneled_over_either_underlay() {
        use sluice_dataplane::io::{Frame, VecFrame};
        use sluice_dataplane::pipeline::{process, Ctx, Resolve, Verdict};
        use sluice_dataplane::sched::SchedState;
        use sluice_dataplane::session::{SessionTable, Timeouts};
        use sluice_dataplane::testkit::bench::{dsr6_snapshot, Underlay, VIP6};
        use sluice_dataplane::wire::{EthernetFrame, Ipv6Packet};
        let t = Template6::new(EXT_MAC, GEN_MAC, VIP6, 80, Some(0x10));
        assert_eq!(t.bytes.len(), 74);
        for (underlay, outer) in [(Underlay::V4, 20), (Underlay::V6, 40)] {
            let snap = dsr6_snapshot(4, underlay);
            let table = SessionTable::new(1 << 12, Timeouts::default(), 1);
            let proxy = sluice_dataplane::testkit::synproxy();
            let (mut resolve, mut sched) = (Resolve::new(), SchedState::new(0, 1));
            let mut walk = FlowWalk::new(Traffic::Established { flows: 100 });
            let mut b = vec![0u8; t.bytes.len()];
            for i in 0..300 {
                t.fill(&mut walk, &mut b);
                let ip = Ipv6Packet::new_checked(&b[14..]).unwrap();
                assert_eq!((ip.dst(), ip.total_len()), (VIP6, 60));
                let mut f = VecFrame::new(&b);
                let mut cx = Ctx::new(&snap, &table, &proxy, &mut sched, 1, &mut resolve);
                let v = process(&mut cx, 0, &mut f);
                assert!(matches!(v, Verdict::Tunnel { port: 1, .. }), "{underlay:?} packet {i}: {v:?}");
                assert_eq!(f.data().len(), b.len() + outer);
                assert_eq!(&f.data()[14 + outer..], &b[14..], "carried unchanged");
                let eth = EthernetFrame::new_checked(f.data()).unwrap();
                assert_eq!(eth.ethertype(), if outer == 40 { 0x86dd } else { 0x0800 });
            }
            assert_eq!(table.len(), 100, "{underlay:?}: a session per flow");
        }
    }

    #[test]
    fn syns_to_the_synproxy_snapshot_are_answered_with_cookies() {
        use sluice_dataplane::io::{Frame, VecFrame};
        use sluice_dataplane::pipeline::{process, Ctx, Resolve, Verdict};
        use sluice_dataplane::sched::SchedState;
        use sluice_dataplane::session::{SessionTable, Timeouts};
        use sluice_dataplane::wire::{tcp, TcpPacket};
        let snap = synproxy_snapshot(4);
        let table = SessionTable::new(1 << 12, Timeouts::default(), 1);
        let proxy = sluice_dataplane::testkit::synproxy();
        let (mut resolve, mut sched) = (Resolve::new(), SchedState::new(0, 1));
        let mut walk = FlowWalk::new(Traffic::NewFlows);
        for i in 0..1024u32 {
            let (addr, port) = walk.next_flow();
            let syn = linux_syn(Ipv4Addr::from(addr), port, SYNPROXY_VIP, i);
            assert_eq!(syn.len(), 74);
            let mut f = VecFrame::new(&syn);
            let mut cx = Ctx::new(&snap, &table, &proxy, &mut sched, 1, &mut resolve);
            assert_eq!(process(&mut cx, 0, &mut f), Verdict::SynAck { port: 0 }, "SYN {i}");
            assert_eq!(cx.events.cookies, 1);
            let ip = Ipv4Packet::new_checked(&f.data()[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!((ip.src(), u32::from(ip.dst())), (SYNPROXY_VIP, addr));
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(t.flags(), tcp::SYN | tcp::ACK);
            assert_eq!(f.data().len(), syn.len(), "the reply's options take the SYN's room");
        }
        // sluice-gen's SYN (the packet-rate harness's): no options, zero TCP checksum, padded.
        let t = Template::new(EXT_MAC, GEN_MAC, SYNPROXY_VIP, 80, Some(0x02));
        let mut b = [0u8; 60];
        for i in 0..1024 {
            t.fill(&mut walk, &mut b);
            let mut f = VecFrame::new(&b);
            let mut cx = Ctx::new(&snap, &table, &proxy, &mut sched, 1, &mut resolve);
            assert_eq!(process(&mut cx, 0, &mut f), Verdict::SynAck { port: 0 }, "gen SYN {i}");
            assert_eq!(f.data().len(), 14 + 20 + 24, "MSS only");
        }
        assert_eq!(table.len(), 0, "a SYN keeps no state");
    }
}
