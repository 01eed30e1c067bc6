//! The appliance the golden cases assume (`dataplane/tests/golden/gen.py` writes frames for
//! it), and the fuzz targets' variant of it.
//!
//! [`spec`], four ports:
//!
//! | port | name | address         | MAC               | VLAN | MTU  | neighbours (static)          |
//! |------|------|-----------------|-------------------|------|------|------------------------------|
//! | 0    | ext  | 198.18.0.1/24   | 02:00:00:00:00:01 | -    | 1500 | .2 -> :00:99 (the router)    |
//! | 1    | int  | 198.19.0.1/24   | 02:00:00:00:01:01 | -    | 1500 | .10 -> :01:0a, .11 -> :01:0b |
//! | 2    | tiny | 198.20.0.1/24   | 02:00:00:00:02:01 | -    | 576  | .10 -> :02:0a                |
//! | 3    | tag  | 198.21.0.1/24   | 02:00:00:00:03:01 | 100  | 1500 | -                            |
//!
//! and IPv6 on the first two (`with_ipv6`): ext 2001:db8:18::1/64 with gateway 2001:db8:18::2
//! (the router, its MAC learned), int 2001:db8:19::1/64 with static neighbour 2001:db8:19::a ->
//! 02:00:00:00:01:0a. The golden appliance (not the fuzz one) also has an IPv6 client on ext's
//! link as a static neighbour: 2001:db8:18::98 -> 02:00:00:00:00:99 (the NAT66 replies' way).
//!
//! Services (Maglev, table 251), the first five shared with [`fuzz_spec`]:
//! - 198.18.10.1:80/tcp  IPIP           -> 198.19.0.10
//! - 198.18.10.1:53/udp  GRE key 1001   -> 198.19.0.11
//! - 198.18.10.2:80/tcp  GRE no key     -> 198.19.0.10
//! - 198.18.10.3:80/tcp  IPIP           -> 198.19.0.10 weight 0 (no backend)
//! - 198.18.10.4:80/tcp  IPIP           -> 198.19.0.99 (no static neighbour: unresolved)
//! - 198.18.10.5:80/tcp  IPIP           -> 198.20.0.10 on the small-MTU port
//! - 198.18.10.6:80/tcp  NAT, GRE key 7 -> 192.0.2.10:8080 on 198.19.0.10
//! - 198.18.10.7:80/tcp and udp, 198.18.10.8:80/tcp and udp: one backend (198.19.0.10), down;
//!   `on_no_backend` reset (.7) and ICMP unreachable (.8)
//! - 198.18.10.9:80/tcp  NAT, GRE key 7, SYN proxy -> 192.0.2.10:8080 on 198.19.0.10
//! - 198.18.10.6:53/udp  NAT, IPIP      -> 192.0.2.20:5353 on 198.19.0.11
//! - [2001:db8:10::1]:80/tcp  IPIP (IPv6 in IPv4)     -> 198.19.0.10
//! - [2001:db8:10::1]:53/udp  GRE key 6 over IPv6     -> 2001:db8:19::a
//! - 198.18.10.10:80/tcp      IPIP (IPv4 in IPv6)     -> 2001:db8:19::a
//! - [2001:db8:10::2]:80/tcp  NAT66, GRE key 7 over IPv4 -> [2001:db8:c0::10]:8080 on 198.19.0.10
//! - [2001:db8:10::2]:53/udp  NAT66, IPIP over IPv6   -> [2001:db8:c0::20]:5353 on 2001:db8:19::a
//! - [2001:db8:10::2]:443/tcp NAT66, GRE key 8 over IPv6 -> [2001:db8:c0::10]:8080 on
//!   2001:db8:19::a (another tenant's VM with the same address and port as the first's)
//! - [2001:db8:10::2]:22/tcp  NAT66, IPIP over IPv4   -> [2001:db8:c0::30]:2222 on 198.19.0.11
//! - [2001:db8:10::2]:8443/tcp NAT66 with the SYN proxy, GRE key 7 over IPv4 ->
//!   [2001:db8:c0::40]:8080 on 198.19.0.10
//!
//! [`fuzz_spec`] folds it onto three ports so that one rx port index of the four a fuzz
//! selector byte can name (3) does not exist, and keeps only DSR services (the fuzz targets'
//! contract checks have no NAT, SYN proxy, reset or unreachable verdict to expect):
//!
//! | port | name | address         | MAC               | VLAN | MTU  | neighbours (static)          |
//! |------|------|-----------------|-------------------|------|------|------------------------------|
//! | 0    | ext  | 198.18.0.1/24   | 02:00:00:00:00:01 | -    | 1500 | -                            |
//! | 1    | int  | 198.19.0.1/24   | 02:00:00:00:01:01 | -    | 1500 | .10 -> :01:0a, .11 -> :01:0b |
//! | 2    | tag  | 198.21.0.1/24   | 02:00:00:00:03:01 | 100  | 576  | .10 -> :03:0a                |
//!
//! with the same IPv6 on ext and int.
//!
//! Its services are the five shared ones, then 198.18.10.5:80/tcp over GRE key 7 to
//! 198.21.0.10 on the tagged, small-MTU port, then the golden appliance's three over IPv6
//! (so the golden IPv6 frames are seeds for them too), then [2001:db8:10::1]:443/tcp over GRE
//! key 7 (IPv6 in GRE over IPv4) to 198.21.0.10 on the tagged, small-MTU port: an IPv6
//! client's packets tagged on egress, and too big for the tunnel (556 bytes) from 557 bytes.

use super::spec::{backend, int_port, nat_backend, port_spec, snapshot_spec, spec_addr};
use super::{hosts, EXT_ADDR, EXT_MAC, ROUTER, ROUTER_MAC};
use crate::flow::Prefix;
use crate::snapshot::{
    BackendSpec, Forwarding, NoBackend, PortSpec, Protocol, ServiceSpec, Snapshot, SnapshotSpec, Tunnel,
};
use crate::wire::Mac;
use std::net::{IpAddr, Ipv6Addr};

/// The external port's IPv6 address (2001:db8:18::1/64).
pub const EXT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
/// The router's IPv6 address on the external port, its gateway: a next hop whose MAC is
/// learned.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
/// The internal port's IPv6 address (2001:db8:19::1/64).
pub const INT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1);
/// Backend host 10's IPv6 address, a static neighbour of the internal port (its MAC is
/// [`super::host_mac`]`(10)`).
pub const HOST6_10: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0x0a);
/// An IPv6 client on the external port's link, a static neighbour of the golden appliance's
/// (its MAC the router's).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x98);
/// The NAT66 services' VIP (2001:db8:10::2).
pub const VIP6_NAT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 2);

/// `ports` with IPv6 on the first two (ext and int): their addresses, the external port's
/// gateway and the internal port's static neighbour.
fn with_ipv6(mut ports: Vec<PortSpec>) -> Vec<PortSpec> {
    if let [ext, int, ..] = &mut ports[..] {
        ext.addresses.push(Prefix::new(EXT_ADDR6, 64));
        ext.gateways.push(IpAddr::V6(ROUTER6));
        int.addresses.push(Prefix::new(INT_ADDR6, 64));
        int.neighbors.push((IpAddr::V6(HOST6_10), super::host_mac(10)));
    }
    ports
}

/// The golden appliance's spec (see the module's table).
pub fn spec() -> SnapshotSpec {
    let mut services = shared_services();
    services.extend([
        service([198, 18, 10, 5], 80, Protocol::Tcp, Tunnel::Ipip, &[([198, 20, 0, 10], 1)]),
        nat(
            [198, 18, 10, 6],
            80,
            Protocol::Tcp,
            Tunnel::Gre { key: Some(7) },
            nat_backend([192, 0, 2, 10], 8080, [198, 19, 0, 10], 1),
        ),
        down([198, 18, 10, 7], Protocol::Tcp, NoBackend::Reset),
        down([198, 18, 10, 7], Protocol::Udp, NoBackend::Reset),
        down([198, 18, 10, 8], Protocol::Tcp, NoBackend::IcmpUnreachable),
        down([198, 18, 10, 8], Protocol::Udp, NoBackend::IcmpUnreachable),
        ServiceSpec {
            synproxy: true,
            ..nat(
                [198, 18, 10, 9],
                80,
                Protocol::Tcp,
                Tunnel::Gre { key: Some(7) },
                nat_backend([192, 0, 2, 10], 8080, [198, 19, 0, 10], 1),
            )
        },
        nat(
            [198, 18, 10, 6],
            53,
            Protocol::Udp,
            Tunnel::Ipip,
            nat_backend([192, 0, 2, 20], 5353, [198, 19, 0, 11], 1),
        ),
    ]);
    services.extend(ipv6_services());
    services.extend(nat66_services());
    let mut ports = vec![
        port_spec("ext", EXT_MAC, EXT_ADDR, [(ROUTER, ROUTER_MAC)]),
        int_port(hosts([10, 11])),
        PortSpec {
            mtu: 576,
            ..port_spec("tiny", mac(2), [198, 20, 0, 1], [([198, 20, 0, 10], [2, 0, 0, 0, 2, 0x0a])])
        },
        PortSpec { vlan: Some(100), ..port_spec("tag", mac(3), [198, 21, 0, 1], hosts([])) },
    ];
    ports[0].neighbors.push((IpAddr::V6(CLIENT6), ROUTER_MAC));
    snapshot_spec(with_ipv6(ports), services)
}

/// The golden appliance, built.
pub fn snapshot() -> Snapshot {
    Snapshot::build(&spec(), None).expect("the golden snapshot builds")
}

/// The fuzz targets' spec (see the module's second table).
pub fn fuzz_spec() -> SnapshotSpec {
    let mut services = shared_services();
    services.push(service(
        [198, 18, 10, 5],
        80,
        Protocol::Tcp,
        Tunnel::Gre { key: Some(7) },
        &[([198, 21, 0, 10], 1)],
    ));
    services.extend(ipv6_services());
    services.push(ServiceSpec {
        tunnel: Tunnel::Gre { key: Some(7) },
        table_size: 251,
        ..ServiceSpec::dsr(
            "[2001:db8:10::1]:443",
            VIP6.into(),
            443,
            Protocol::Tcp,
            vec![backend([198, 21, 0, 10], 1)],
        )
    });
    let ports = vec![
        port_spec("ext", EXT_MAC, EXT_ADDR, hosts([])),
        int_port(hosts([10, 11])),
        PortSpec {
            mtu: 576,
            vlan: Some(100),
            ..port_spec("tag", mac(3), [198, 21, 0, 1], [([198, 21, 0, 10], [2, 0, 0, 0, 3, 0x0a])])
        },
    ];
    snapshot_spec(with_ipv6(ports), services)
}

/// The fuzz targets' appliance, built.
pub fn fuzz_snapshot() -> Snapshot {
    Snapshot::build(&fuzz_spec(), None).expect("the fuzz snapshot builds")
}

/// The MAC of the golden appliance's port `i`: 02:00:00:00:0i:01.
fn mac(i: u8) -> Mac {
    [2, 0, 0, 0, i, 1]
}

/// The services both appliances start with.
fn shared_services() -> Vec<ServiceSpec> {
    vec![
        service([198, 18, 10, 1], 80, Protocol::Tcp, Tunnel::Ipip, &[([198, 19, 0, 10], 1)]),
        service(
            [198, 18, 10, 1],
            53,
            Protocol::Udp,
            Tunnel::Gre { key: Some(1001) },
            &[([198, 19, 0, 11], 1)],
        ),
        service([198, 18, 10, 2], 80, Protocol::Tcp, Tunnel::Gre { key: None }, &[([198, 19, 0, 10], 1)]),
        service([198, 18, 10, 3], 80, Protocol::Tcp, Tunnel::Ipip, &[([198, 19, 0, 10], 0)]),
        service([198, 18, 10, 4], 80, Protocol::Tcp, Tunnel::Ipip, &[([198, 19, 0, 99], 1)]),
    ]
}

/// A DSR service named `[a, b, c, d]:port`, table size 251, over `backends` (address, weight).
fn service(
    vip: [u8; 4],
    port: u16,
    protocol: Protocol,
    tunnel: Tunnel,
    backends: &[([u8; 4], u32)],
) -> ServiceSpec {
    let backends = backends.iter().map(|&(a, weight)| backend(a, weight)).collect();
    ServiceSpec {
        tunnel,
        table_size: 251,
        ..ServiceSpec::dsr(&format!("{vip:?}:{port}"), spec_addr(vip), port, protocol, backends)
    }
}

/// The IPv6 VIP (2001:db8:10::1) and the services that cross families (see the module's
/// docs).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);

/// The services over IPv6: an IPv6 VIP over each underlay, an IPv4 VIP over IPv6.
fn ipv6_services() -> Vec<ServiceSpec> {
    let dsr = |vip: IpAddr, port, protocol, tunnel, host: IpAddr| ServiceSpec {
        tunnel,
        table_size: 251,
        ..ServiceSpec::dsr(&format!("{vip}:{port}"), vip, port, protocol, vec![BackendSpec::new(host, 1)])
    };
    vec![
        dsr(VIP6.into(), 80, Protocol::Tcp, Tunnel::Ipip, spec_addr([198, 19, 0, 10])),
        dsr(VIP6.into(), 53, Protocol::Udp, Tunnel::Gre { key: Some(6) }, HOST6_10.into()),
        dsr(spec_addr([198, 18, 10, 10]), 80, Protocol::Tcp, Tunnel::Ipip, HOST6_10.into()),
    ]
}

/// The NAT66 services (see the module's docs): VPC 7's VM over the IPv4 underlay, a VM of the
/// physical network and VPC 8's VM (the same address as VPC 7's) over the IPv6 underlay, and a
/// VM of the physical network over the IPv4 underlay.
fn nat66_services() -> Vec<ServiceSpec> {
    let nat = |port, protocol, tunnel, b| ServiceSpec {
        forwarding: Forwarding::Nat,
        tunnel,
        table_size: 251,
        ..ServiceSpec::dsr(&format!("[{VIP6_NAT}]:{port}"), VIP6_NAT.into(), port, protocol, vec![b])
    };
    let vm = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc0, 0, 0, 0, 0, last));
    let (host4, host6) = (spec_addr([198, 19, 0, 10]), IpAddr::V6(HOST6_10));
    vec![
        nat(80, Protocol::Tcp, Tunnel::Gre { key: Some(7) }, BackendSpec::nat(vm(0x10), 8080, host4, 1)),
        nat(53, Protocol::Udp, Tunnel::Ipip, BackendSpec::nat(vm(0x20), 5353, host6, 1)),
        nat(443, Protocol::Tcp, Tunnel::Gre { key: Some(8) }, BackendSpec::nat(vm(0x10), 8080, host6, 1)),
        nat(
            22,
            Protocol::Tcp,
            Tunnel::Ipip,
            BackendSpec::nat(vm(0x30), 2222, spec_addr([198, 19, 0, 11]), 1),
        ),
        ServiceSpec {
            synproxy: true,
            ..nat(
                8443,
                Protocol::Tcp,
                Tunnel::Gre { key: Some(7) },
                BackendSpec::nat(vm(0x40), 8080, host4, 1),
            )
        },
    ]
}

/// [`service`] as NAT to the one backend `b`.
fn nat(vip: [u8; 4], port: u16, protocol: Protocol, tunnel: Tunnel, b: BackendSpec) -> ServiceSpec {
    ServiceSpec {
        forwarding: Forwarding::Nat,
        backends: vec![b],
        ..service(vip, port, protocol, tunnel, &[])
    }
}

/// Port 80 with one backend (198.19.0.10) that failed its health checks.
fn down(vip: [u8; 4], protocol: Protocol, on_no_backend: NoBackend) -> ServiceSpec {
    let mut s = service(vip, 80, protocol, Tunnel::Ipip, &[([198, 19, 0, 10], 1)]);
    s.backends[0].down = true;
    ServiceSpec { on_no_backend, ..s }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_build() {
        assert_eq!(super::snapshot().services.len(), 21);
        let fuzz = super::fuzz_snapshot();
        assert_eq!((fuzz.ports.len(), fuzz.services.len()), (3, 10));
    }
}
