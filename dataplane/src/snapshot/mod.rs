//! The immutable configuration a worker reads: ports, services with their Maglev tables,
//! next hops. The control thread builds a new `Snapshot` off the packet path and publishes it
//! whole; a worker loads it once per burst.
//!
//! One thing in here is mutable: a next hop's MAC address, learned from ARP by whichever worker
//! sees the reply, in a single atomic word.

use crate::encap::OuterHeader;
pub use crate::encap::Tunnel;
use crate::flow::{Addr, FlowKey, Prefix, SELECT_SEED};
pub use crate::limit::Limits;
use crate::maglev::Maglev;
use crate::table::{IdIndex, MapKey, StaticMap};
use crate::wire::Mac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a service reaches its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Encapsulate the client's packet unchanged; the backend answers the client directly.
    Dsr,
    /// TGW VPC: rewrite the destination to the backend's address and port (DNAT), tunnel it to
    /// the backend's host (GRE keyed by the VPC id, or IPIP on the physical network); the host
    /// agent tunnels replies back and the appliance reverses the rewrite toward the client.
    Nat,
}

/// How a service picks a backend for a new flow (`sched::choose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Maglev over the 5-tuple: every appliance picks the same backend without shared state.
    Maglev,
    /// Maglev over the client address alone: a client's flows all go to one backend (and with
    /// `persistence`, keep going there for that long even if the backend set changes).
    IpHash,
    /// Weighted round robin (smooth), per worker: not the same choice across appliances.
    RoundRobin,
    /// The backend with the fewest sessions per unit of weight, counted in this appliance.
    LeastConn,
}

/// What happens to the sessions of a backend that left the config (or, later, failed its
/// health checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemoved {
    /// The next packet picks a new backend (the scheduler's choice) and the session moves.
    Remap,
    /// The session ends: a TCP client gets a RST; UDP is dropped until a new session starts.
    Reset,
}

/// What a service does with a new flow when no backend can take it (all weight 0 or down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackend {
    /// Drop it (`no_backend`).
    Drop,
    /// TCP: answer with a RST from the VIP; UDP is dropped.
    Reset,
    /// Answer with ICMP destination unreachable (port unreachable) from the VIP.
    IcmpUnreachable,
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
    /// The port's addresses, at most one of each family (a dual-stack port has two).
    pub addresses: Vec<Prefix>,
    pub mtu: u16,
    pub vlan: Option<u16>,
    /// Next hops for destinations outside every port's prefixes, at most one of each family.
    pub gateways: Vec<IpAddr>,
    /// Static neighbours: never expire, never re-learned.
    pub neighbors: Vec<(IpAddr, Mac)>,
    /// The port index (after the data ports) of its exception path: a kernel interface with
    /// the port's address and MAC, which gets the port's own traffic (ARP, routing, anything
    /// to its address) and whose frames go out of the port. `None`: the appliance answers
    /// ARP and echo for the address itself and drops the rest.
    pub kernel: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Stable id (sessions refer to backends by it, across config changes); `None`: numbered
    /// in order by `Snapshot::build` (tests, configs loaded once).
    pub id: Option<u32>,
    /// DSR: the backend host's address, the tunnel's outer destination. NAT: the backend's own
    /// address (in its VPC), the client packets' new destination.
    pub address: IpAddr,
    /// NAT: the backend's port (`None`: the service's port). DSR cannot change ports.
    pub port: Option<u16>,
    /// NAT: the host the backend runs on, the tunnel's outer destination (`None`: `address`).
    pub host: Option<IpAddr>,
    pub weight: u32,
    /// Failed its health checks: out of the Maglev table, and its sessions go by the
    /// service's `on_backend_removed` policy.
    pub down: bool,
}

impl BackendSpec {
    pub fn new(address: IpAddr, weight: u32) -> BackendSpec {
        BackendSpec { id: None, address, port: None, host: None, weight, down: false }
    }

    /// A NAT backend: `address:port` on host `host`.
    pub fn nat(address: IpAddr, port: u16, host: IpAddr, weight: u32) -> BackendSpec {
        BackendSpec { id: None, address, port: Some(port), host: Some(host), weight, down: false }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Stable id (part of every session key); `None`: numbered in order.
    pub id: Option<u16>,
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub tunnel: Tunnel,
    pub scheduler: Scheduler,
    /// `IpHash` only: seconds a client stays with its backend after its last packet (0: none).
    pub persistence: u32,
    pub on_backend_removed: OnRemoved,
    pub on_no_backend: NoBackend,
    /// Answer SYNs with cookies and open the backend's connection only for clients that
    /// finish the handshake (`nat` TCP services only).
    pub synproxy: bool,
    /// Rate and session limits (resource isolation; none by default).
    pub limits: Limits,
    /// The MSS that TCP handshakes through the tunnel may carry at most.
    pub mss_clamp: MssClamp,
    pub table_size: u32,
    pub backends: Vec<BackendSpec>,
}

/// `mss_clamp`: the MSS option a TCP SYN or SYN-ACK through the service's tunnel may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MssClamp {
    /// What fits the tunnel path: the smallest MTU toward a backend, less the tunnel
    /// headers, less 40 (IPv4 and TCP headers).
    #[default]
    Auto,
    /// This value (536 to 9160).
    To(u16),
    /// No clamping (the SYN proxy still offers what fits).
    Off,
}

impl ServiceSpec {
    /// A Maglev DSR service over IPIP with default settings (tests, examples).
    pub fn dsr(
        name: &str,
        vip: IpAddr,
        port: u16,
        protocol: Protocol,
        backends: Vec<BackendSpec>,
    ) -> ServiceSpec {
        ServiceSpec {
            id: None,
            name: name.into(),
            vip,
            port,
            protocol,
            forwarding: Forwarding::Dsr,
            tunnel: Tunnel::Ipip,
            scheduler: Scheduler::Maglev,
            persistence: 0,
            on_backend_removed: OnRemoved::Remap,
            on_no_backend: NoBackend::Drop,
            synproxy: false,
            mss_clamp: MssClamp::Auto,
            limits: Limits::default(),
            table_size: crate::maglev::DEFAULT_TABLE_SIZE,
            backends,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub generation: u64,
    pub ports: Vec<PortSpec>,
    /// Outer sources of tunnels, at most one of each family; a tunnel whose family has none
    /// starts at the egress port's address of its family.
    pub tunnel_sources: Vec<IpAddr>,
    /// The cluster's tunnel addresses (at most one of each family): addresses of this
    /// appliance (as the ports' are) that every appliance of the cluster shares, to which host
    /// agents send NAT replies.
    pub clusters: Vec<IpAddr>,
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
    /// At most one of each family.
    pub addresses: Vec<Prefix>,
    pub mtu: u16,
    pub vlan: Option<u16>,
    /// Its exception path's port index (see [`PortSpec::kernel`]).
    pub kernel: Option<u16>,
}

impl Port {
    /// Whether `a` is inside one of the port's prefixes.
    pub fn contains(&self, a: IpAddr) -> bool {
        self.addresses.iter().any(|p| p.contains(a))
    }

    /// Whether `a` is one of the port's addresses.
    #[inline]
    pub fn has_address(&self, a: IpAddr) -> bool {
        self.addresses.iter().any(|p| p.addr == a)
    }

    /// The exception path (kernel interface) that traffic to `a` arriving on this port goes
    /// to: the port's own addresses, and every unicast link-local IPv6 address (fe80::/10),
    /// which only the kernel interface has: the routing daemon's BGP next hop may be one, and
    /// a router then resolves and probes it.
    #[inline]
    pub fn kernel_for(&self, a: IpAddr) -> Option<u16> {
        let link_local = matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local());
        self.kernel.filter(|_| link_local || self.has_address(a))
    }

    /// The port's address of `a`'s family, if it has one.
    pub fn address_like(&self, a: IpAddr) -> Option<IpAddr> {
        self.addresses.iter().map(|p| p.addr).find(|x| x.is_ipv4() == a.is_ipv4())
    }

    /// The port's IPv4 address, if it has one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|p| match p.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// The port's IPv6 address, if it has one.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.addresses.iter().find_map(|p| match p.addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
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
    pub ip: IpAddr,
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

    /// Takes over what `old` (the same neighbour in an earlier snapshot) learned: its MAC and
    /// when. Not when it was last asked for. Static entries keep theirs.
    pub fn carry_over(&self, old: &NextHop) {
        if self.is_static {
            return;
        }
        self.mac.store(old.mac.load(Relaxed), Relaxed);
        self.learned_ns.store(old.learned_ns.load(Relaxed), Relaxed);
    }

    /// Back to the state a build without a previous snapshot gives: a dynamic neighbour
    /// unknown and never asked for. Static entries keep their MAC. For harnesses that reuse
    /// one snapshot for many scenarios (the fuzz targets).
    pub fn forget(&self) {
        if self.is_static {
            return;
        }
        self.mac.store(0, Relaxed);
        self.learned_ns.store(0, Relaxed);
        self.requested_ns.store(0, Relaxed);
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
    pub id: u32,
    /// The backend's address: DSR, its host; NAT, the DNAT destination.
    pub address: IpAddr,
    /// The destination port toward the backend (the service's port for DSR).
    pub port: u16,
    /// The tunnel's outer destination (the same as `address` for DSR).
    pub host: IpAddr,
    /// The configured weight; a backend that is `down` takes no new flows whatever it is.
    pub weight: u32,
    pub down: bool,
    pub nexthop: u16,
    /// Outer source address of the tunnel toward this backend.
    pub tunnel_source: IpAddr,
    /// The tunnel headers toward it, but for the next hop's MAC and the per-packet fields.
    pub outer: OuterHeader,
}

impl Backend {
    /// True if new flows may go here: a positive weight and not down.
    #[inline]
    pub fn takes_new_flows(&self) -> bool {
        self.weight > 0 && !self.down
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: u16,
    pub name: String,
    pub vip: IpAddr,
    /// `vip` as the flow key holds it.
    pub vip_addr: Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub tunnel: Tunnel,
    pub scheduler: Scheduler,
    /// `IpHash` persistence in session ticks (0: none).
    pub persistence_ticks: u32,
    pub on_backend_removed: OnRemoved,
    pub on_no_backend: NoBackend,
    /// SYN proxy on: the MSS toward the backends (`mss_clamp`'s, or with it off, what fits
    /// the tunnel path). The SYN-ACK offers this or the client's port's MTU less 40,
    /// whichever is smaller.
    pub synproxy_mss: Option<u16>,
    /// TCP: the largest MSS option a SYN or SYN-ACK through the tunnel keeps (`mss_clamp`,
    /// resolved); `None` for UDP or with clamping off.
    pub mss_clamp: Option<u16>,
    /// Rate and session limits (see `limit`).
    pub limits: Limits,
    /// Whether `limits` has any (the per-packet test: one byte beside the other flags, not
    /// the limits' own cache line).
    pub limited: bool,
    pub backends: Vec<Backend>,
    pub maglev: Maglev,
    /// Backend indexes in smooth weighted round-robin order (`RoundRobin`).
    pub rr: Box<[u16]>,
    backend_ids: IdIndex,
}

impl Service {
    /// The index of the backend with stable id `id`, if it is still in this service.
    #[inline]
    pub fn backend_by_id(&self, id: u32) -> Option<u16> {
        self.backend_ids.get(id)
    }

    /// The Maglev choice for a flow (`hash` = `flow.hash(SELECT_SEED)`), ignoring the
    /// service's scheduler: what every appliance picks. `None` without a positive weight.
    #[inline]
    pub fn maglev_choice(&self, hash: u64) -> Option<u16> {
        self.maglev.lookup(hash)
    }

    /// The flow from client `src`:`src_port` to this service (its VIP, port and protocol).
    #[inline]
    pub fn flow_from(&self, src: Addr, src_port: u16) -> FlowKey {
        FlowKey { src, dst: self.vip_addr, src_port, dst_port: self.port, protocol: self.protocol.number() }
    }

    /// The Maglev choice for a flow, computing the hash (tools, tests).
    pub fn select_flow(&self, flow: &FlowKey) -> Option<u16> {
        self.maglev.lookup(flow.hash(SELECT_SEED))
    }

    /// Prefetches what a Maglev choice for `hash` reads.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.maglev.prefetch(hash)
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

/// (port index, address) of a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NeighborKey(u128, u16);

impl NeighborKey {
    fn new(port: u16, ip: IpAddr) -> NeighborKey {
        NeighborKey(Addr::from(ip).0, port)
    }
}

impl MapKey for NeighborKey {
    fn key_hash(&self) -> u64 {
        (self.0 ^ u128::from(self.1) << 96).key_hash()
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: Vec<Port>,
    pub services: Vec<Service>,
    pub nexthops: Vec<NextHop>,
    /// The next hop for destinations outside every port's prefix, per family (IPv4, IPv6; the
    /// first port with a gateway of the family): where NAT replies to clients go.
    pub default_nexthops: [Option<u16>; 2],
    /// True if any service uses NAT (tunneled replies are looked at only then).
    pub has_nat: bool,
    /// NAT replies: (VPC, backend address, port, protocol) -> the services with that backend,
    /// as (start << 8 | count) into `nat_services`.
    nat_map: StaticMap<NatKey, u32>,
    nat_services: Vec<u16>,
    /// (index, stable id) of each service: the first pass needs both, and takes them from
    /// the map's slot without reading the service.
    service_map: StaticMap<ServiceKey, (u16, u16)>,
    service_ids: StaticMap<u64, u16>,
    vips: StaticMap<u128, ()>,
    nexthop_map: StaticMap<NeighborKey, u16>,
    /// Indexed by port index: the data port an exception path belongs to.
    from_kernel: Vec<Option<u16>>,
    /// The cluster's tunnel addresses (see [`SnapshotSpec::clusters`]).
    pub clusters: Vec<IpAddr>,
}

mod build;
pub mod rules;
mod tables;

impl Snapshot {
    /// The data port whose exception path port `rx` is, if it is one.
    #[inline]
    pub fn kernel_port_of(&self, rx: u16) -> Option<u16> {
        self.from_kernel.get(usize::from(rx)).copied().flatten()
    }

    #[inline]
    pub fn service(&self, key: ServiceKey) -> Option<u16> {
        self.service_map.get(&key).map(|(i, _)| i)
    }

    /// The service of `key`: its index and its stable id.
    #[inline]
    pub fn service_and_id(&self, key: ServiceKey) -> Option<(u16, u16)> {
        self.service_map.get(&key)
    }

    /// The service with stable id `id`.
    pub fn service_by_id(&self, id: u16) -> Option<&Service> {
        self.service_index(id).and_then(|i| self.services.get(usize::from(i)))
    }

    /// The index of the service with stable id `id`.
    pub fn service_index(&self, id: u16) -> Option<u16> {
        self.service_ids.get(&u64::from(id))
    }

    #[inline]
    pub fn is_vip(&self, a: IpAddr) -> bool {
        self.vips.get(&Addr::from(a).0).is_some()
    }

    /// True if `a` is the address of any port, or the cluster's tunnel address.
    #[inline]
    pub fn is_local(&self, a: IpAddr) -> bool {
        self.ports.iter().any(|p| p.has_address(a)) || self.clusters.contains(&a)
    }

    pub fn nexthop(&self, port: u16, ip: IpAddr) -> Option<&NextHop> {
        self.nexthop_map.get(&NeighborKey::new(port, ip)).and_then(|i| self.nexthops.get(usize::from(i)))
    }

    pub fn nexthop_index(&self, port: u16, ip: IpAddr) -> Option<u16> {
        self.nexthop_map.get(&NeighborKey::new(port, ip))
    }

    /// The NAT services (indexes) with backend `addr:port` for `protocol` in `vpc`: a reply
    /// from it belongs to a session of one of them.
    #[inline]
    pub fn nat_services(&self, vpc: Option<u32>, addr: Addr, port: u16, protocol: u8) -> &[u16] {
        let Some(v) = self.nat_map.get(&NatKey::new(vpc, addr, port, protocol)) else {
            return &[];
        };
        let (start, n) = ((v >> 8) as usize, (v & 0xff) as usize);
        self.nat_services.get(start..start + n).unwrap_or(&[])
    }

    /// The next hop toward a client address: a neighbour configured on a port whose prefix
    /// holds it, else the default gateway.
    #[inline]
    pub fn route_to(&self, a: IpAddr) -> Option<u16> {
        match self.ports.iter().position(|p| p.contains(a)) {
            Some(pi) => self.nexthop_index(pi as u16, a),
            None => self.default_nexthops[crate::flow::family(a)],
        }
    }
}

/// Most NAT services one backend (address, port, VPC) may serve.
pub const NAT_SHARE: usize = 8;

/// (VPC or none, backend address, port, protocol) of a NAT backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct NatKey(u128, u64);

impl NatKey {
    fn new(vpc: Option<u32>, addr: Addr, port: u16, protocol: u8) -> NatKey {
        let vpc = vpc.map_or(0, |v| 1 << 32 | u64::from(v));
        NatKey(addr.0, vpc << 24 | u64::from(port) << 8 | u64::from(protocol))
    }
}

impl MapKey for NatKey {
    #[inline]
    fn key_hash(&self) -> u64 {
        (self.0 ^ u128::from(self.1).rotate_left(40)).key_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::build::rr_sequence;
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn each_rule_accepts_and_refuses() {
        use rules::*;
        assert!(port_count(1).is_ok() && port_count(crate::stats::MAX_PORTS).is_ok());
        assert_eq!(port_count(0).unwrap_err(), "at least one port is needed");
        assert!(port_count(crate::stats::MAX_PORTS + 1).unwrap_err().starts_with("at most"));
        let net = [Prefix::new(Ipv4Addr::new(198, 18, 0, 1), 24)];
        assert!(on_link([198, 18, 0, 9].into(), &net).is_ok());
        assert_eq!(
            on_link([198, 18, 1, 9].into(), &net).unwrap_err(),
            "198.18.1.9 is not inside 198.18.0.1/24"
        );
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        assert_eq!(on_link(v6, &net).unwrap_err(), "2001:db8::9: the port has no address of its family");
        let dual = [net[0], Prefix::new("2001:db8::1".parse::<IpAddr>().unwrap(), 64)];
        assert!(on_link(v6, &dual).is_ok());
        assert!(one_per_family(&mut dual.iter().map(|p| p.addr)).is_ok());
        let two = [net[0].addr, v6, [198, 18, 0, 2].into()];
        assert_eq!(one_per_family(&mut two.into_iter()).unwrap_err(), "at most one IPv4 address");
        assert!(
            backend_count(crate::maglev::MAX_BACKENDS).is_ok()
                && backend_count(crate::maglev::MAX_BACKENDS + 1).is_err()
        );
        assert!(
            dsr_backend(Forwarding::Nat, true, true).is_ok()
                && dsr_backend(Forwarding::Dsr, false, false).is_ok()
        );
        assert_eq!(dsr_backend(Forwarding::Dsr, true, true).unwrap_err().0, "port");
        assert_eq!(dsr_backend(Forwarding::Dsr, false, true).unwrap_err().0, "host");
        assert!(backend_port(1).is_ok() && backend_port(0).is_err());
        assert!(table_size(251).is_ok() && table_size(crate::maglev::MAX_TABLE_SIZE).is_ok());
        assert_eq!(
            table_size(250).unwrap_err(),
            format!("250 must be a prime no larger than {}", crate::maglev::MAX_TABLE_SIZE)
        );
        assert!(table_size(4_194_319).is_err(), "a prime, but larger");
        assert!(synproxy(Forwarding::Nat, Protocol::Tcp).is_ok());
        assert!(synproxy(Forwarding::Dsr, Protocol::Tcp)
            .unwrap_err()
            .starts_with("SYN proxy needs forwarding: nat"));
        assert_eq!(synproxy(Forwarding::Nat, Protocol::Udp).unwrap_err(), "SYN proxy is for TCP services");
    }

    #[test]
    fn build_refuses_by_the_rules_at_their_paths() {
        let mut sp = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]);
        sp.services[0].backends[0].port = Some(8080);
        let e = Snapshot::build(&sp, None).unwrap_err();
        assert_eq!(e.path, "services[0].backends[0].port");
        sp.ports[0].neighbors.push(([198, 19, 0, 5].into(), [2, 0, 0, 0, 0, 5]));
        let e = Snapshot::build(&sp, None).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("ports[0].neighbors[0].address", "198.19.0.5 is not inside 198.18.0.1/24")
        );
        // An IPv6 VIP forwards `dsr` over the IPv4 underlay, and `nat` to IPv6 backends
        // (NAT66): never to IPv4 ones.
        let mut v6 = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]);
        v6.services[0].vip = "2001:db8::1".parse().unwrap();
        let s = Snapshot::build(&v6, None).unwrap();
        assert!(s.is_vip("2001:db8::1".parse().unwrap()));
        assert_eq!(s.services[0].backends[0].outer.len(), 14 + 20);
        v6.services[0].forwarding = Forwarding::Nat;
        let e = Snapshot::build(&v6, None).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            (
                "services[0].backends[0].address",
                "198.19.0.10: a `nat` backend is of its VIP's family (NAT46 and NAT64 are not done)"
            )
        );
        let vm: IpAddr = "2001:db8:c0::10".parse().unwrap();
        v6.services[0].backends = vec![BackendSpec::nat(vm, 8080, [198, 19, 0, 10].into(), 1)];
        let s = Snapshot::build(&v6, None).unwrap();
        assert_eq!(s.nat_services(None, Addr::from(vm), 8080, 6), &[0]);
        v6.services[0].synproxy = true;
        assert!(Snapshot::build(&v6, None).unwrap().services[0].synproxy_mss.is_some());
        assert!(rules::families(v6.services[0].vip, Forwarding::Nat, Some([192, 0, 2, 1].into()))
            .unwrap_err()
            .contains("NAT46 and NAT64"));
        assert!(rules::families([192, 0, 2, 1].into(), Forwarding::Dsr, Some(v6.services[0].vip)).is_ok());
    }

    pub(crate) fn port(name: &str, addr: [u8; 4], gw: Option<[u8; 4]>) -> PortSpec {
        PortSpec {
            name: name.into(),
            mac: [2, 0, 0, 0, 0, addr[3]],
            addresses: vec![Prefix::new(Ipv4Addr::from(addr), 24)],
            mtu: 1500,
            vlan: None,
            gateways: gw.into_iter().map(|g| Ipv4Addr::from(g).into()).collect(),
            neighbors: vec![],
            kernel: None,
        }
    }

    pub(super) fn service(vip: [u8; 4], port: u16, backends: &[[u8; 4]]) -> ServiceSpec {
        let backends = backends.iter().map(|&a| BackendSpec::new(a.into(), 1)).collect();
        ServiceSpec {
            table_size: 251,
            ..ServiceSpec::dsr(&format!("svc{port}"), vip.into(), port, Protocol::Tcp, backends)
        }
    }

    pub(super) fn spec(services: Vec<ServiceSpec>) -> SnapshotSpec {
        SnapshotSpec {
            generation: 1,
            ports: vec![
                port("ext", [198, 18, 0, 1], Some([198, 18, 0, 254])),
                port("int", [198, 19, 0, 1], None),
            ],
            tunnel_sources: vec![],
            clusters: vec![],
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
        assert_eq!((via.port, via.ip), (0, Ipv4Addr::new(198, 18, 0, 254).into()));
        assert!(s.is_vip(Ipv4Addr::new(198, 18, 10, 1).into()));
        assert!(!s.is_vip(Ipv4Addr::new(198, 18, 10, 2).into()));
        assert!(s.is_local(Ipv4Addr::new(198, 19, 0, 1).into()));
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
        no_gw.ports[0].gateways.clear();
        assert_eq!(Snapshot::build(&no_gw, None).unwrap_err().path, "services[0].backends[0].address");
    }

    #[test]
    fn learned_macs_survive_rebuild_and_static_ones_stay() {
        let mut sp = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]);
        sp.ports[0].neighbors.push((Ipv4Addr::new(198, 18, 0, 254).into(), [2, 0, 0, 0, 0, 0xfe]));
        let a = Snapshot::build(&sp, None).unwrap();
        let nh = a.nexthop(1, Ipv4Addr::new(198, 19, 0, 10).into()).unwrap();
        assert_eq!(nh.mac(), None);
        assert!(nh.learn([2, 0, 0, 0, 0, 10], 5));
        assert!(!nh.learn([2, 0, 0, 0, 0, 10], 6));
        let gw = a.nexthop(0, Ipv4Addr::new(198, 18, 0, 254).into()).unwrap();
        assert!(!gw.learn([9; 6], 5));
        assert_eq!(gw.mac(), Some([2, 0, 0, 0, 0, 0xfe]));
        let b = Snapshot::build(&sp, Some(&a)).unwrap();
        assert_eq!(
            b.nexthop(1, Ipv4Addr::new(198, 19, 0, 10).into()).unwrap().mac(),
            Some([2, 0, 0, 0, 0, 10])
        );
    }

    #[test]
    fn a_snapshot_built_earlier_learns_what_the_running_one_learned_since() {
        let sp = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10], [198, 19, 0, 11]])]);
        let running = Snapshot::build(&sp, None).unwrap();
        let ip = |n| IpAddr::from(Ipv4Addr::new(198, 19, 0, n));
        running.nexthop(1, ip(10)).unwrap().learn([2, 0, 0, 0, 0, 10], 5);
        let staged = Snapshot::build(&sp, Some(&running)).unwrap();
        // The workers go on with the running snapshot: they learn another neighbour.
        running.nexthop(1, ip(11)).unwrap().learn([2, 0, 0, 0, 0, 11], 7);
        assert_eq!(staged.nexthop(1, ip(11)).unwrap().mac(), None);
        staged.learn_from(&running);
        assert_eq!(staged.nexthop(1, ip(10)).unwrap().mac(), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(staged.nexthop(1, ip(11)).unwrap().mac(), Some([2, 0, 0, 0, 0, 11]));
    }

    #[test]
    fn ids_are_numbered_or_given_and_must_be_unique() {
        let mut sp = spec(vec![
            service([198, 18, 10, 1], 80, &[[198, 19, 0, 10], [198, 19, 0, 11]]),
            service([198, 18, 10, 1], 81, &[[198, 19, 0, 12]]),
        ]);
        let s = Snapshot::build(&sp, None).unwrap();
        assert_eq!((s.services[0].id, s.services[1].id), (0, 1));
        let ids: Vec<u32> = s.services.iter().flat_map(|v| v.backends.iter().map(|b| b.id)).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(s.services[0].backend_by_id(1), Some(1));
        assert_eq!(s.services[0].backend_by_id(2), None, "another service's backend");
        assert_eq!(s.service_by_id(1).map(|v| v.port), Some(81));
        sp.services[0].id = Some(7);
        sp.services[1].backends[0].id = Some(40);
        let s = Snapshot::build(&sp, None).unwrap();
        assert_eq!(s.service_by_id(7).map(|v| v.port), Some(80));
        assert_eq!(s.services[1].backend_by_id(40), Some(0));
        sp.services[1].id = Some(7);
        assert_eq!(Snapshot::build(&sp, None).unwrap_err().path, "services[1]");
        sp.services[1].id = None;
        sp.services[1].backends[0].id = Some(1);
        assert_eq!(Snapshot::build(&sp, None).unwrap_err().path, "services[1].backends[0]");
    }

    #[test]
    fn rr_sequence_is_smooth_and_scaled() {
        assert_eq!(&rr_sequence(&[5, 1, 1])[..], &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&rr_sequence(&[2, 4])[..], &[1, 0, 1], "divided by the gcd");
        assert!(rr_sequence(&[0, 0]).is_empty());
        let big = rr_sequence(&[1000, 1000, 7]);
        assert!(big.len() <= 4096 + 3);
        assert!(big.contains(&2), "a small weight keeps at least one turn");
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

    #[test]
    fn forget_is_a_new_build_and_carry_over_keeps_what_was_learned() {
        let spec = spec(vec![service([198, 18, 10, 1], 80, &[[198, 19, 0, 10]])]);
        let s = Snapshot::build(&spec, None).unwrap();
        let nh = &s.nexthops[0];
        assert!(nh.claim_request(1_000));
        nh.learn([2; 6], 2_000);
        let carried = Snapshot::build(&spec, None).unwrap();
        carried.nexthops[0].carry_over(nh);
        assert_eq!(carried.nexthops[0].mac(), Some([2; 6]));
        assert!(!carried.nexthops[0].claim_request(2_000 + NEIGHBOR_REFRESH_NS - 1), "learned when, too");
        nh.forget();
        assert_eq!(nh.mac(), None);
        assert!(nh.claim_request(1_000), "asks again at once, as new");
    }
}
