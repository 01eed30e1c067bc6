//! Fixtures shared by the tests, the fuzz targets and the benchmarks (feature `testkit`, off by
//! default: never part of sluiced).
//!
//! The lab they all describe:
//!
//! ```text
//!  clients 198.18.x.x --- router 198.18.0.2 --- [ext 198.18.0.1/24] appliance [int 198.19.0.1/24]
//!      (ROUTER_MAC 02:00:00:00:00:99)            EXT_MAC 02:00:00:00:00:01   INT_MAC 02:00:00:00:01:01
//!                                                VIPs 198.18.10.n                    |
//!                                                           backends' hosts 198.19.0.n, MAC 02:00:00:00:01:n
//!                                                           (NAT backends 192.0.2.x on those hosts)
//! ```
//!
//! - [`spec`]: port, backend and service specs and snapshots built from them. Every address a
//!   spec holds goes through [`spec::spec_addr`], so a change of the specs' address type is a
//!   change here only.
//! - [`frame`]: Ethernet + IPv4 + TCP/UDP/ICMP frames and ARP frames, with valid checksums
//!   unless asked otherwise.
//! - [`golden`]: the appliance `dataplane/tests/golden/gen.py` assumes, and the fuzz targets'
//!   three-port variant of it.
//! - [`bench`]: the benchmarks' appliances and their Linux SYN.
//! - Here: the lab's constants, the SYN proxy's test keys, one frame through the pipeline.

pub mod bench;
pub mod frame;
pub mod golden;
pub mod spec;

use crate::io::Frame;
use crate::pipeline::{process, Ctx, Resolve, Verdict};
use crate::sched::SchedState;
use crate::session::SessionTable;
use crate::snapshot::Snapshot;
use crate::synproxy::SynProxy;
use crate::wire::Mac;
use std::net::Ipv4Addr;

/// The appliance's external port (`ext`, port 0): its MAC.
pub const EXT_MAC: Mac = [2, 0, 0, 0, 0, 1];
/// The external port's address (198.18.0.1/24).
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The appliance's internal port (`int`, port 1), toward the backends' hosts: its MAC.
pub const INT_MAC: Mac = [2, 0, 0, 0, 1, 1];
/// The internal port's address (198.19.0.1/24).
pub const INT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The router in front of the external port, which client frames come from.
pub const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 0x99];
/// The router's address.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The packet generator's MAC (the benchmarks' frames come from it).
pub const GEN_MAC: Mac = [2, 0, 0, 0, 0, 2];
/// The first of the numbered clients, [`client`]: 198.18.128.0 (the /17 the benchmarks'
/// generator walks).
pub const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);

/// VIP `n`: 198.18.10.`n`.
pub const fn vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 10, n)
}

/// Backend host `n` on the internal port: 198.19.0.`n`.
pub const fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, n)
}

/// Backend host `n`'s MAC: 02:00:00:00:01:`n`.
pub const fn host_mac(n: u8) -> Mac {
    [2, 0, 0, 0, 1, n]
}

/// Hosts `ns` as static neighbours: (address, MAC) pairs for [`spec::port_spec`].
pub fn hosts(ns: impl IntoIterator<Item = u8>) -> Vec<(Ipv4Addr, Mac)> {
    ns.into_iter().map(|n| (host(n), host_mac(n))).collect()
}

/// Numbered client `n`: [`CLIENT_BASE`] + `n`.
pub fn client(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(CLIENT_BASE) + n)
}

/// The SYN proxy with the tests' fixed cookie keys.
pub fn synproxy() -> SynProxy {
    SynProxy::new([1, 2], [[3, 4], [5, 6]])
}

/// Runs one frame through `pipeline::process` as worker 0 of 1 at `now` (ns), with fresh
/// next-hop and scheduler state; the verdict (the frame is changed in place).
pub fn process_one(
    snap: &Snapshot,
    table: &SessionTable,
    proxy: &SynProxy,
    now: u64,
    port: u16,
    frame: &mut impl Frame,
) -> Verdict {
    let mut resolve = Resolve::new();
    let mut sched = SchedState::new(0, 1);
    let mut cx = Ctx::new(snap, table, proxy, &mut sched, now, &mut resolve);
    process(&mut cx, port, frame)
}

/// `b` as lower-case hex digits, two a byte.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of hex digits `s` (two a byte); panics on anything else.
pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_addresses() {
        assert_eq!(client(0x101), Ipv4Addr::new(198, 18, 129, 1));
        assert_eq!(hosts([10, 11]), [(host(10), [2, 0, 0, 0, 1, 10]), (host(11), [2, 0, 0, 0, 1, 11])]);
        assert_eq!(from_hex(&hex(&[0, 0xab, 0xff])), [0, 0xab, 0xff]);
    }
}
