//! The immutable configuration a worker reads: ports, services with their Maglev tables,
//! next hops. The control thread builds a new `Snapshot` off the packet path and publishes it
//! whole; a worker loads it once per burst.
//!
//! One thing in here is mutable: a next hop's MAC address, learned from ARP by whichever worker
//! sees the reply, in a single atomic word.

use crate::flow::{Addr, FlowKey, SELECT_SEED};
use crate::maglev::{Maglev, MaglevInput, MAX_BACKENDS};
use crate::table::{MapKey, StaticMap};
use crate::wire::Mac;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a service reaches its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Encapsulate the client's packet unchanged; the backend answers the client directly.
    Dsr,
}

/// The tunnel toward backends' hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Gre { key: Option<u32> },
}

/// How a service picks a backend for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Maglev over the 5-tuple: every appliance picks the same backend without shared state.
    Maglev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::wire::ipv4::PROTO_TCP,
            Protocol::Udp => crate::wire::ipv4::PROTO_UDP,
        }
    }
}

// ---- what the control thread gives to `Snapshot::build` ------------------------------------

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub name: String,
    pub mac: Mac,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    pub vlan: Option<u16>,
    /// Next hop for destinations outside the port's prefix.
    pub gateway: Option<Ipv4Addr>,
    /// Static neighbours: never expire, never re-learned.
    pub neighbors: Vec<(Ipv4Addr, Mac)>,
}

#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// The backend host's address: the tunnel's outer destination.
    pub address: Ipv4Addr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub tunnel: Tunnel,
    pub scheduler: Scheduler,
    pub table_size: u32,
    pub backends: Vec<BackendSpec>,
}

#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub generation: u64,
    pub ports: Vec<PortSpec>,
    /// Outer source of tunnels; the egress port's address when unset.
    pub tunnel_source: Option<Ipv4Addr>,
    pub services: Vec<ServiceSpec>,
}

/// A refusal, with the config path it concerns (e.g. `services[1].backends[0].address`) so the
/// control layer can point at the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

// ---- what workers read ----------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    pub vlan: Option<u16>,
}

impl Port {
    fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
        u32::from(a) & mask == u32::from(self.address) & mask
    }
}

const MAC_VALID: u64 = 1 << 48;

fn pack_mac(m: Mac) -> u64 {
    let mut w = [0u8; 8];
    w[2..].copy_from_slice(&m);
    u64::from_be_bytes(w) | MAC_VALID
}

fn unpack_mac(w: u64) -> Option<Mac> {
    if w & MAC_VALID == 0 {
        return None;
    }
    let b = w.to_be_bytes();
    Some([b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A neighbour the appliance sends to: a backend host on a connected prefix, or a gateway.
#[derive(Debug)]
pub struct NextHop {
    pub port: u16,
    pub ip: Ipv4Addr,
    pub is_static: bool,
    mac: AtomicU64,
    learned_ns: AtomicU64,
    requested_ns: AtomicU64,
}

/// Re-ask for a learned MAC this often (the old one is used meanwhile).
pub const NEIGHBOR_REFRESH_NS: u64 = 30_000_000_000;
/// Ask again for an unanswered MAC at most this often.
pub const NEIGHBOR_RETRY_NS: u64 = 1_000_000_000;

impl NextHop {
    #[inline]
    pub fn mac(&self) -> Option<Mac> {
        unpack_mac(self.mac.load(Relaxed))
    }

    /// Records a MAC heard in ARP. Static entries ignore it. Returns true if it changed.
    pub fn learn(&self, mac: Mac, now_ns: u64) -> bool {
        if self.is_static {
            return false;
        }
        self.learned_ns.store(now_ns, Relaxed);
        self.mac.swap(pack_mac(mac), Relaxed) != pack_mac(mac)
    }

    /// True if this caller should send an ARP request now: the MAC is unknown (retry each
    /// second) or due for refresh. One caller wins per interval across all workers.
    pub fn claim_request(&self, now_ns: u64) -> bool {
        if self.is_static {
            return false;
        }
        let due = match self.mac() {
            None => NEIGHBOR_RETRY_NS,
            Some(_) if now_ns.saturating_sub(self.learned_ns.load(Relaxed)) >= NEIGHBOR_REFRESH_NS => {
                NEIGHBOR_RETRY_NS
            }
            Some(_) => return false,
        };
        let last = self.requested_ns.load(Relaxed);
        if last != 0 && now_ns.saturating_sub(last) < due {
            return false;
        }
        self.requested_ns.compare_exchange(last, now_ns.max(1), Relaxed, Relaxed).is_ok()
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub address: Ipv4Addr,
    pub weight: u32,
    pub nexthop: u16,
    /// Outer source address of the tunnel toward this backend.
    pub tunnel_source: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub tunnel: Tunnel,
    pub scheduler: Scheduler,
    pub backends: Vec<Backend>,
    pub maglev: Maglev,
}

impl Service {
    /// The backend for a new flow whose selection hash is `hash` (`flow.hash(SELECT_SEED)`),
    /// or `None` when no backend has a positive weight.
    #[inline]
    pub fn select(&self, flow: &FlowKey, hash: u64) -> Option<u16> {
        let _ = flow;
        match self.scheduler {
            Scheduler::Maglev => self.maglev.lookup(hash),
        }
    }

    /// As [`Service::select`], computing the hash.
    pub fn select_flow(&self, flow: &FlowKey) -> Option<u16> {
        self.select(flow, flow.hash(SELECT_SEED))
    }

    /// Prefetches what [`Service::select`] will read for `hash`.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        match self.scheduler {
            Scheduler::Maglev => self.maglev.prefetch(hash),
        }
    }
}

/// (VIP, port, protocol), packed into one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey(u128, u32);

impl ServiceKey {
    #[inline]
    pub fn new(vip: Addr, port: u16, protocol: u8) -> ServiceKey {
        ServiceKey(vip.0, u32::from(port) << 8 | u32::from(protocol))
    }
}

impl MapKey for ServiceKey {
    #[inline]
    fn key_hash(&self) -> u64 {
        (self.0 ^ (u128::from(self.1) << 32)).key_hash()
    }
}

/// (port index, IPv4 address) of a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NeighborKey(u64);

impl NeighborKey {
    fn new(port: u16, ip: Ipv4Addr) -> NeighborKey {
        NeighborKey(u64::from(port) << 32 | u64::from(u32::from(ip)))
    }
}

impl MapKey for NeighborKey {
    fn key_hash(&self) -> u64 {
        self.0.key_hash()
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: Vec<Port>,
    pub services: Vec<Service>,
    pub nexthops: Vec<NextHop>,
    service_map: StaticMap<ServiceKey, u16>,
    vips: StaticMap<u128, ()>,
    nexthop_map: StaticMap<NeighborKey, u16>,
}

impl Snapshot {
    /// Builds a snapshot. Next-hop MACs learned by `previous` carry over.
    pub fn build(spec: &SnapshotSpec, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        let err = |path: String, message: String| BuildError { path, message };
        if spec.ports.is_empty() || spec.ports.len() > crate::stats::MAX_PORTS {
            return Err(err("ports".into(), format!("need 1 to {} ports", crate::stats::MAX_PORTS)));
        }
        let ports: Vec<Port> = spec
            .ports
            .iter()
            .map(|p| Port {
                name: p.name.clone(),
                mac: p.mac,
                address: p.address,
                prefix_len: p.prefix_len,
                mtu: p.mtu,
                vlan: p.vlan,
            })
            .collect();

        // Next hops: static neighbours first, then whatever backends need.
        let mut nexthops: Vec<NextHop> = Vec::new();
        let mut nh_index = std::collections::HashMap::new();
        let mut add_nexthop = |port: u16, ip: Ipv4Addr, mac: Option<Mac>| -> u16 {
            *nh_index.entry((port, ip)).or_insert_with(|| {
                nexthops.push(NextHop {
                    port,
                    ip,
                    is_static: mac.is_some(),
                    mac: AtomicU64::new(mac.map_or(0, pack_mac)),
                    learned_ns: AtomicU64::new(0),
                    requested_ns: AtomicU64::new(0),
                });
                (nexthops.len() - 1) as u16
            })
        };
        for (pi, p) in spec.ports.iter().enumerate() {
            for (ni, &(ip, mac)) in p.neighbors.iter().enumerate() {
                if !ports[pi].contains(ip) {
                    return Err(err(
                        format!("ports[{pi}].neighbors[{ni}].address"),
                        format!("{ip} is not inside the port's prefix {}/{}", p.address, p.prefix_len),
                    ));
                }
                add_nexthop(pi as u16, ip, Some(mac));
            }
        }

        let mut services = Vec::with_capacity(spec.services.len());
        let mut keys = std::collections::HashMap::new();
        for (si, s) in spec.services.iter().enumerate() {
            let key = ServiceKey::new(Addr::v4(s.vip), s.port, s.protocol.number());
            if let Some(first) = keys.insert(key, si) {
                return Err(err(
                    format!("services[{si}]"),
                    format!(
                        "duplicate service {}:{} {:?}: services[{first}] already uses it",
                        s.vip, s.port, s.protocol
                    ),
                ));
            }
            if s.backends.len() > MAX_BACKENDS || s.backends.len() >= s.table_size as usize {
                return Err(err(
                    format!("services[{si}].backends"),
                    format!(
                        "{} backends: at most {MAX_BACKENDS} and fewer than table_size",
                        s.backends.len()
                    ),
                ));
            }
            let mut backends = Vec::with_capacity(s.backends.len());
            let mut seen = std::collections::HashSet::new();
            for (bi, b) in s.backends.iter().enumerate() {
                if !seen.insert(b.address) {
                    return Err(err(
                        format!("services[{si}].backends[{bi}].address"),
                        format!("backend {} is listed twice", b.address),
                    ));
                }
                let route =
                    ports.iter().position(|p| p.contains(b.address)).map(|pi| (pi, b.address)).or_else(
                        || {
                            spec.ports
                                .iter()
                                .position(|p| p.gateway.is_some())
                                .map(|pi| (pi, spec.ports[pi].gateway.unwrap_or(b.address)))
                        },
                    );
                let Some((pi, via)) = route else {
                    return Err(err(
                        format!("services[{si}].backends[{bi}].address"),
                        format!(
                            "no route to {}: no port's prefix holds it and no port has a gateway",
                            b.address
                        ),
                    ));
                };
                let nexthop = add_nexthop(pi as u16, via, None);
                backends.push(Backend {
                    address: b.address,
                    weight: b.weight,
                    nexthop,
                    tunnel_source: spec.tunnel_source.unwrap_or(ports[pi].address),
                });
            }
            let ids: Vec<[u8; 4]> = backends.iter().map(|b| b.address.octets()).collect();
            let inputs: Vec<MaglevInput<'_>> =
                ids.iter().zip(&backends).map(|(id, b)| MaglevInput { id, weight: b.weight }).collect();
            let maglev = Maglev::build(&inputs, s.table_size);
            services.push(Service {
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                protocol: s.protocol,
                forwarding: s.forwarding,
                tunnel: s.tunnel,
                scheduler: s.scheduler,
                backends,
                maglev,
            });
        }
        if nexthops.len() > usize::from(u16::MAX) {
            return Err(err("services".into(), "more than 65535 next hops".into()));
        }

        if let Some(prev) = previous {
            for nh in nexthops.iter().filter(|n| !n.is_static) {
                if let Some(old) = prev.nexthop(nh.port, nh.ip) {
                    nh.mac.store(old.mac.load(Relaxed), Relaxed);
                    nh.learned_ns.store(old.learned_ns.load(Relaxed), Relaxed);
                }
            }
        }

        let service_map = StaticMap::build(
            spec.services
                .iter()
                .enumerate()
                .map(|(i, s)| (ServiceKey::new(Addr::v4(s.vip), s.port, s.protocol.number()), i as u16)),
        );
        let vips = StaticMap::build(spec.services.iter().map(|s| (Addr::v4(s.vip).0, ())));
        let nexthop_map = StaticMap::build(
            nexthops.iter().enumerate().map(|(i, n)| (NeighborKey::new(n.port, n.ip), i as u16)),
        );
        Ok(Snapshot {
            generation: spec.generation,
            ports,
            services,
            nexthops,
            service_map,
            vips,
            nexthop_map,
        })
    }

    #[inline]
    pub fn service(&self, key: ServiceKey) -> Option<u16> {
        self.service_map.get(&key)
    }

    #[inline]
    pub fn is_vip(&self, a: Ipv4Addr) -> bool {
        self.vips.get(&Addr::v4(a).0).is_some()
    }

    /// True if `a` is the address of any port.
    #[inline]
    pub fn is_local(&self, a: Ipv4Addr) -> bool {
        self.ports.iter().any(|p| p.address == a)
    }

    pub fn nexthop(&self, port: u16, ip: Ipv4Addr) -> Option<&NextHop> {
        self.nexthop_map.get(&NeighborKey::new(port, ip)).and_then(|i| self.nexthops.get(usize::from(i)))
    }

    pub fn nexthop_index(&self, port: u16, ip: Ipv4Addr) -> Option<u16> {
        self.nexthop_map.get(&NeighborKey::new(port, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn port(name: &str, addr: [u8; 4], gw: Option<[u8; 4]>) -> PortSpec {
        PortSpec {
            name: name.into(),
            mac: [2, 0, 0, 0, 0, addr[3]],
            address: addr.into(),
            prefix_len: 24,
            mtu: 1500,
            vlan: None,
            gateway: gw.map(Into::into),
            neighbors: vec![],
        }
    }

    fn service(vip: [u8; 4], port: u16, backends: &[[u8; 4]]) -> ServiceSpec {
        ServiceSpec {
            name: format!("svc{port}"),
            vip: vip.into(),
            port,
            protocol: Protocol::Tcp,
            forwarding: Forwarding::Dsr,
            tunnel: Tunnel::Ipip,
            scheduler: Scheduler::Maglev,
            table_size: 251,
            backends: backends.iter().map(|&a| BackendSpec { address: a.into(), weight: 1 }).collect(),
        }
    }

    fn spec(services: Vec<ServiceSpec>) -> SnapshotSpec {
        SnapshotSpec {
            generation: 1,
            ports: vec![
                port("ext", [198, 18, 0, 1], Some([198, 18, 0, 254])),
                port("int", [198, 19, 0, 1], None),
            ],
            tunnel_source: None,
            services,
        }
    }

    #[test]
    fn routes_backends_and_shares_next_hops() {
        let s = Snapshot::build(
            &spec(vec![service(
                [198, 18, 10, 1],
                80,
                &[[198, 19, 0, 10], [198, 19, 0, 11], [203, 0, 113, 5]],
            )]),
            None,
        )
        .unwrap();
        let b = &s.services[0].backends;
        assert_eq!(s.nexthops[usize::from(b[0].nexthop)].port, 1);
        assert_eq!(s.nexthops[usize::from(b[0].nexthop)].ip, Ipv4Addr::new(198, 19, 0, 10));
        assert_eq!(b[0].tunnel_source, Ipv4Addr::new(198, 19, 0, 1));
        // Off-link backend goes via the gateway of port 0.
        let via = &s.nexthops[usize::from(b[2].nexthop)];
        assert_eq!((via.port, via.ip), (0, Ipv4Addr::new(198, 18, 0, 254)));
        assert!(s.is_vip(Ipv4Addr::new(198, 18, 10, 1)));
        assert!(!s.is_vip(Ipv4Addr::new(198, 18, 10, 2)));
        assert!(s.is_local(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(s.service(ServiceKey::new(Addr::v4(Ipv4Addr::new(198, 18, 10, 1)), 80, 6)), Some(0));
        assert_eq!(s.service(ServiceKey::new(Addr::v4(Ipv4Addr::new(198, 18, 10, 1)), 80, 17)), None);
    }

    #[test]
    fn refusals_name_the_path() {
        let dup = Snapshot::build(
            &spec(vec![
                service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]]),
                service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]]),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(dup.path, "services[1]");
        let twice = Snapshot::build(
            &spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10], [198, 19, 0, 10]])]),
            None,
        )
        .unwrap_err();
        assert_eq!(twice.path, "services[0].backends[1].address");
        let mut no_gw = spec(vec![service([198, 18, 10, 1], 80, &[[203, 0, 113, 5]])]);
        no_gw.ports[0].gateway = None;
        assert_eq!(Snapshot::build(&no_gw, None).unwrap_err().path, "services[0].backends[0].address");
    }

    #[test]
    fn learned_macs_survive_rebuild_and_static_ones_stay() {
        let mut sp = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]);
        sp.ports[0].neighbors.push((Ipv4Addr::new(198, 18, 0, 254), [2, 0, 0, 0, 0, 0xfe]));
        let a = Snapshot::build(&sp, None).unwrap();
        let nh = a.nexthop(1, Ipv4Addr::new(198, 19, 0, 10)).unwrap();
        assert_eq!(nh.mac(), None);
        assert!(nh.learn([2, 0, 0, 0, 0, 10], 5));
        assert!(!nh.learn([2, 0, 0, 0, 0, 10], 6));
        let gw = a.nexthop(0, Ipv4Addr::new(198, 18, 0, 254)).unwrap();
        assert!(!gw.learn([9; 6], 5));
        assert_eq!(gw.mac(), Some([2, 0, 0, 0, 0, 0xfe]));
        let b = Snapshot::build(&sp, Some(&a)).unwrap();
        assert_eq!(b.nexthop(1, Ipv4Addr::new(198, 19, 0, 10)).unwrap().mac(), Some([2, 0, 0, 0, 0, 10]));
    }

    #[test]
    fn one_request_per_interval() {
        let s =
            Snapshot::build(&spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]), None).unwrap();
        let nh = &s.nexthops[0];
        let t0 = 1_000;
        assert!(nh.claim_request(t0));
        assert!(!nh.claim_request(t0 + 10));
        assert!(nh.claim_request(t0 + NEIGHBOR_RETRY_NS));
        nh.learn([2; 6], t0 + NEIGHBOR_RETRY_NS);
        assert!(!nh.claim_request(t0 + 3 * NEIGHBOR_RETRY_NS));
        assert!(nh.claim_request(t0 + NEIGHBOR_RETRY_NS + NEIGHBOR_REFRESH_NS));
    }
}
