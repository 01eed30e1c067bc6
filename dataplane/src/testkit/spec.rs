//! Port, backend and service specs, and snapshots built from them.
//!
//! Addresses are taken as anything that converts to an [`Ipv4Addr`] (`[u8; 4]`, `u32`,
//! `Ipv4Addr`) and stored through [`spec_addr`]: the one place that knows the specs' address
//! type. Fields that hold no address (`mtu`, `vlan`, `tunnel`, `table_size`, ...) are left to
//! the caller, with struct-update syntax: `PortSpec { mtu: 576, ..port_spec(..) }`.

use super::{hosts, EXT_ADDR, EXT_MAC, INT_ADDR, INT_MAC};
use crate::flow::Prefix;
use crate::snapshot::{BackendSpec, Forwarding, PortSpec, Protocol, ServiceSpec, Snapshot, SnapshotSpec};
use crate::wire::Mac;
use std::net::{IpAddr, Ipv4Addr};

/// An address as the specs hold it (the lab is IPv4).
pub fn spec_addr(a: impl Into<Ipv4Addr>) -> IpAddr {
    IpAddr::V4(a.into())
}

/// A port: /24, MTU 1500, untagged, no gateway, with static `neighbors` (address, MAC).
pub fn port_spec<A: Into<Ipv4Addr>>(
    name: &str,
    mac: Mac,
    address: impl Into<Ipv4Addr>,
    neighbors: impl IntoIterator<Item = (A, Mac)>,
) -> PortSpec {
    PortSpec {
        name: name.into(),
        mac,
        addresses: vec![Prefix::new(spec_addr(address), 24)],
        mtu: 1500,
        vlan: None,
        gateways: vec![],
        neighbors: neighbors.into_iter().map(|(a, m)| (spec_addr(a), m)).collect(),
        kernel: None,
    }
}

/// The external port `ext`: [`EXT_MAC`], [`EXT_ADDR`]/24, no neighbours.
pub fn ext_port() -> PortSpec {
    port_spec("ext", EXT_MAC, EXT_ADDR, hosts([]))
}

/// The internal port `int`: [`INT_MAC`], [`INT_ADDR`]/24, with static `neighbors`.
pub fn int_port<A: Into<Ipv4Addr>>(neighbors: impl IntoIterator<Item = (A, Mac)>) -> PortSpec {
    port_spec("int", INT_MAC, INT_ADDR, neighbors)
}

/// A DSR backend (`address` is its host) of `weight`.
pub fn backend(address: impl Into<Ipv4Addr>, weight: u32) -> BackendSpec {
    BackendSpec::new(spec_addr(address), weight)
}

/// A NAT backend `address:port`, running on `host`, of `weight`.
pub fn nat_backend(
    address: impl Into<Ipv4Addr>,
    port: u16,
    host: impl Into<Ipv4Addr>,
    weight: u32,
) -> BackendSpec {
    BackendSpec::nat(spec_addr(address), port, spec_addr(host), weight)
}

/// A DSR service as [`ServiceSpec::dsr`] makes it: Maglev, IPIP, default table size.
pub fn dsr_service(
    name: &str,
    vip: impl Into<Ipv4Addr>,
    port: u16,
    protocol: Protocol,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec::dsr(name, spec_addr(vip), port, protocol, backends)
}

/// The same as NAT (backends from [`nat_backend`]); the tunnel is still IPIP.
pub fn nat_service(
    name: &str,
    vip: impl Into<Ipv4Addr>,
    port: u16,
    protocol: Protocol,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec { forwarding: Forwarding::Nat, ..dsr_service(name, vip, port, protocol, backends) }
}

/// Generation 1 of `ports` and `services`, tunnels from the egress port's address.
pub fn snapshot_spec(ports: Vec<PortSpec>, services: Vec<ServiceSpec>) -> SnapshotSpec {
    SnapshotSpec { generation: 1, ports, tunnel_sources: vec![], clusters: vec![], services }
}

/// [`snapshot_spec`] with outer tunnel source `source`.
pub fn with_tunnel_source(spec: SnapshotSpec, source: impl Into<Ipv4Addr>) -> SnapshotSpec {
    SnapshotSpec { tunnel_sources: vec![spec_addr(source)], ..spec }
}

/// [`snapshot_spec`], built; panics if the build refuses it.
pub fn snapshot(ports: Vec<PortSpec>, services: Vec<ServiceSpec>) -> Snapshot {
    Snapshot::build(&snapshot_spec(ports, services), None).expect("the test snapshot builds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{host, vip};

    #[test]
    fn a_two_port_snapshot_builds() {
        let svc = dsr_service("web", vip(1), 80, Protocol::Tcp, vec![backend(host(10), 1)]);
        let snap = snapshot(vec![ext_port(), int_port(hosts([10]))], vec![svc]);
        assert_eq!(snap.ports.len(), 2);
        assert_eq!(snap.services[0].vip, vip(1));
        assert_eq!(snap.nexthops.iter().filter(|n| n.mac().is_some()).count(), 1);
    }
}
