//! The benchmarks' appliances (`bench/benches`, `bench/examples`) and the Linux SYN they send.
//!
//! Two ports: `ext` ([`EXT_MAC`](super::EXT_MAC), 198.18.0.1/24) and `int` ([`INT_MAC`], 198.19.0.1/16), whose
//! static neighbours are the backends' hosts at 198.19.1.0 and up (MAC 02:00:00:01:00:`i`):
//! unlike the other fixtures' /24 with hosts at 198.19.0.`n`, room for hundreds of backends.
//! [`dsr6_snapshot`] adds IPv6 to both ports (the golden appliance's 2001:db8:18::1/64 and
//! 2001:db8:19::1/64, the hosts also at [`bench_host6`] with the same MACs) for an IPv6 VIP.

use super::frame::{linux_syn_options, tcp, Packet};
use super::golden::{EXT_ADDR6, INT_ADDR6};
use super::spec::{backend, dsr_service, ext_port, nat_backend, nat_service, port_spec, snapshot};
use super::{GEN_MAC, INT_ADDR, INT_MAC};
use crate::flow::Prefix;
use crate::limit::Limits;
use crate::snapshot::{BackendSpec, PortSpec, Protocol, ServiceSpec, Snapshot, Tunnel};
use crate::wire::tcp::SYN;
use crate::wire::TcpRepr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use super::golden::VIP6;

/// The VIP of the SYN-proxied service in [`synproxy_snapshot`] (as in bench/rate.py's config).
pub const SYNPROXY_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);

/// Backend host `i`: 198.19.1.0 + `i`.
pub fn bench_host(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be_bytes([198, 19, 1, 0]) + i)
}

/// Backend host `i` on the IPv6 underlay: 2001:db8:19::1:0 + `i` (the MAC of [`bench_host`]
/// `i`).
pub fn bench_host6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 1, 0)) + u128::from(i))
}

/// Backend host `i`'s MAC: 02:00:00:01:00:`i`.
fn bench_host_mac(i: u32) -> [u8; 6] {
    [2, 0, 0, 1, 0, i as u8]
}

/// The two ports, with `hosts` static neighbours on `int` ([`bench_host`] 0 and up).
fn ports(hosts: u32) -> Vec<PortSpec> {
    let neighbors = (0..hosts).map(|i| (bench_host(i), bench_host_mac(i)));
    let mut int = port_spec("int", INT_MAC, INT_ADDR, neighbors);
    int.addresses[0].len = 16;
    vec![ext_port(), int]
}

/// [`ports`] with IPv6 on both, and `hosts` also at [`bench_host6`] 0 and up.
fn dual_stack_ports(hosts: u32) -> Vec<PortSpec> {
    let mut ports = ports(hosts);
    ports[0].addresses.push(Prefix::new(EXT_ADDR6, 64));
    ports[1].addresses.push(Prefix::new(INT_ADDR6, 64));
    ports[1].neighbors.extend((0..hosts).map(|i| (IpAddr::V6(bench_host6(i)), bench_host_mac(i))));
    ports
}

/// The underlay of a benchmark's tunnels toward the backends' hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// [`bench_host`]: IPv4 (an IPv6 VIP's packets in IPIP, protocol 41).
    V4,
    /// [`bench_host6`]: IPv6 (RFC 2473).
    V6,
}

/// One DSR service ([`VIP6`]:80 TCP, IPIP) over `backends` backends on `underlay`, each a
/// static neighbour of port `int`.
pub fn dsr6_snapshot(backends: u32, underlay: Underlay) -> Snapshot {
    let host = |i| match underlay {
        Underlay::V4 => IpAddr::V4(bench_host(i)),
        Underlay::V6 => IpAddr::V6(bench_host6(i)),
    };
    let list = (0..backends).map(|i| BackendSpec::new(host(i), 1)).collect();
    let svc = ServiceSpec::dsr("web6", IpAddr::V6(VIP6), 80, Protocol::Tcp, list);
    snapshot(dual_stack_ports(backends), vec![svc])
}

/// One DSR service (198.18.10.1:80 TCP, IPIP) over `backends` backends, [`bench_host`] 0 and
/// up, each a static neighbour of port `int`.
pub fn dsr_snapshot(backends: u32) -> Snapshot {
    dsr_snapshot_limited(backends, Limits::default())
}

/// [`dsr_snapshot`] with `limits` on its service (isolation's cost).
pub fn dsr_snapshot_limited(backends: u32, limits: Limits) -> Snapshot {
    let list = (0..backends).map(|i| backend(bench_host(i), 1)).collect();
    let svc = ServiceSpec { limits, ..dsr_service("web", [198, 18, 10, 1], 80, Protocol::Tcp, list) };
    snapshot(ports(backends), vec![svc])
}

/// One SYN-proxied NAT service ([`SYNPROXY_VIP`]:80 TCP, GRE keyed by VPC 100) over `backends`
/// backends at 192.0.2.10 and up, port 8080, each on [`bench_host`] 0 and up.
pub fn synproxy_snapshot(backends: u32) -> Snapshot {
    let list = (0..backends)
        .map(|i| nat_backend(u32::from_be_bytes([192, 0, 2, 10]) + i, 8080, bench_host(i), 1))
        .collect();
    let svc = ServiceSpec {
        tunnel: Tunnel::Gre { key: Some(100) },
        synproxy: true,
        ..nat_service("tenant", SYNPROXY_VIP, 80, Protocol::Tcp, list)
    };
    snapshot(ports(backends), vec![svc])
}

/// A Linux client's SYN from `client:sport` to `vip:80`, from [`GEN_MAC`] to [`EXT_MAC`](super::EXT_MAC), with
/// Linux's options ([`linux_syn_options`] with `tsval`), ident 0 and valid checksums: 74 bytes.
pub fn linux_syn(client: Ipv4Addr, sport: u16, vip: Ipv4Addr, tsval: u32) -> Vec<u8> {
    let opts = linux_syn_options(tsval);
    let t = TcpRepr {
        seq: tsval.wrapping_mul(0x9e37_79b9),
        window: 64240,
        options: &opts,
        ..tcp((sport, 80), SYN)
    };
    Packet { src_mac: GEN_MAC, ident: 0, ..Packet::new(client, vip) }.tcp(&t, b"")
}
