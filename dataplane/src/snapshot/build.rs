//! `Snapshot::build`: a spec checked (by [`super::rules`]) and turned into the tables workers read.

use super::tables::{self, weights};
use super::*;
use crate::flow::of_family;

/// Which data port each exception path belongs to, by port index (each checked by
/// [`rules::kernel_port`]).
fn kernel_ports(ports: &[Port]) -> Result<Vec<Option<u16>>, BuildError> {
    let mut from = vec![None; crate::stats::MAX_PORTS];
    for (pi, p) in ports.iter().enumerate() {
        let Some(k) = p.kernel else { continue };
        rules::kernel_port(k, ports.len()).map_err(|m| refuse(format!("ports[{pi}].kernel"), m))?;
        let slot = &mut from[usize::from(k)];
        if slot.is_some() {
            return Err(refuse(
                format!("ports[{pi}].kernel"),
                format!("port index {k} is another port's exception path"),
            ));
        }
        *slot = Some(pi as u16);
    }
    Ok(from)
}

/// A refusal at `path`.
fn refuse(path: impl Into<String>, message: impl Into<String>) -> BuildError {
    BuildError { path: path.into(), message: message.into() }
}

/// The rules on address families: each port, the gateways and the tunnel addresses hold at
/// most one address of each family; a service's VIP and backends, see [`rules::families`].
fn check_families(spec: &SnapshotSpec) -> Result<(), BuildError> {
    let one_each = |path: String, list: &mut dyn Iterator<Item = IpAddr>| {
        rules::one_per_family(list).map_err(|m| refuse(path, m))
    };
    for (pi, p) in spec.ports.iter().enumerate() {
        one_each(format!("ports[{pi}].address"), &mut p.addresses.iter().map(|a| a.addr))?;
        one_each(format!("ports[{pi}].gateway"), &mut p.gateways.iter().copied())?;
    }
    one_each("tunnel.source".into(), &mut spec.tunnel_sources.iter().copied())?;
    one_each("tunnel.cluster".into(), &mut spec.clusters.iter().copied())?;
    for (si, s) in spec.services.iter().enumerate() {
        rules::families(s.vip, s.forwarding, None).map_err(|m| refuse(format!("services[{si}].vip"), m))?;
        for (bi, b) in s.backends.iter().enumerate() {
            rules::families(s.vip, s.forwarding, Some(b.address))
                .map_err(|m| refuse(format!("services[{si}].backends[{bi}].address"), m))?;
        }
    }
    Ok(())
}

/// The next hops a snapshot is building: static neighbours first, then whatever backends and
/// the default route need, each (port, address) once.
#[derive(Default)]
struct NextHops {
    list: Vec<NextHop>,
    index: std::collections::HashMap<(u16, IpAddr), u16>,
}

impl NextHops {
    fn add(&mut self, port: u16, ip: IpAddr, mac: Option<Mac>) -> u16 {
        let list = &mut self.list;
        *self.index.entry((port, ip)).or_insert_with(|| {
            list.push(NextHop {
                port,
                ip,
                is_static: mac.is_some(),
                mac: AtomicU64::new(mac.map_or(0, pack_mac)),
                learned_ns: AtomicU64::new(0),
                requested_ns: AtomicU64::new(0),
            });
            (list.len() - 1) as u16
        })
    }

    /// The ports' static neighbours.
    fn add_static(&mut self, spec: &SnapshotSpec) -> Result<(), BuildError> {
        for (pi, p) in spec.ports.iter().enumerate() {
            for (ni, &(ip, mac)) in p.neighbors.iter().enumerate() {
                rules::on_link(ip, &p.addresses)
                    .map_err(|m| refuse(format!("ports[{pi}].neighbors[{ni}].address"), m))?;
                self.add(pi as u16, ip, Some(mac));
            }
        }
        Ok(())
    }
}

/// Ids and keys seen so far in a build: each must be unique across services.
#[derive(Default)]
struct Seen {
    keys: std::collections::HashMap<ServiceKey, usize>,
    service_ids: std::collections::HashMap<u16, usize>,
    backend_ids: std::collections::HashMap<u32, (usize, usize)>,
    next_backend_id: u32,
}

/// What a service's build reads besides its own spec.
struct Around<'a> {
    spec: &'a SnapshotSpec,
    ports: &'a [Port],
    /// The snapshot this one replaces, whose unchanged tables it takes over.
    previous: Option<&'a Snapshot>,
}

/// Service `si`'s spec, checked and built (next hops added to `hops`).
fn build_service(
    si: usize,
    s: &ServiceSpec,
    at: &Around<'_>,
    hops: &mut NextHops,
    seen: &mut Seen,
) -> Result<Service, BuildError> {
    let id = s.id.unwrap_or(si as u16);
    if let Some(first) = seen.service_ids.insert(id, si) {
        return Err(refuse(
            format!("services[{si}]"),
            format!("service id {id} is also services[{first}]'s"),
        ));
    }
    let key = ServiceKey::new(Addr::from(s.vip), s.port, s.protocol.number());
    if let Some(first) = seen.keys.insert(key, si) {
        let what = format!("duplicate service {}:{} {:?}", s.vip, s.port, s.protocol);
        return Err(refuse(format!("services[{si}]"), format!("{what}: services[{first}] already uses it")));
    }
    rules::table_size(s.table_size).map_err(|m| refuse(format!("services[{si}].table_size"), m))?;
    rules::backend_count(s.backends.len()).map_err(|m| refuse(format!("services[{si}].backends"), m))?;
    if s.backends.len() >= s.table_size as usize {
        // Maglev needs a slot per backend at least (the config asks for a hundred).
        let n = s.backends.len();
        return Err(refuse(
            format!("services[{si}].table_size"),
            format!("{n} backends need a larger table"),
        ));
    }
    let mut backends = Vec::with_capacity(s.backends.len());
    let mut pairs = std::collections::HashSet::new();
    // The longest packet the tunnel to any backend carries (the SYN proxy's MSS).
    let mut path_mtu = u16::MAX;
    for (bi, b) in s.backends.iter().enumerate() {
        let backend = build_backend((si, bi), s, b, at, hops, (seen, &mut pairs))?;
        path_mtu = path_mtu.min(backend.outer.max_inner());
        backends.push(backend);
    }
    let path_mss = path_mss(s, path_mtu);
    let mss_clamp = match (s.protocol, s.mss_clamp) {
        (Protocol::Udp, _) | (_, MssClamp::Off) => None,
        (Protocol::Tcp, MssClamp::Auto) => Some(path_mss),
        (Protocol::Tcp, MssClamp::To(n)) => {
            rules::mss_clamp(n.into()).map_err(|m| refuse(format!("services[{si}].mss_clamp"), m))?;
            Some(n)
        }
    };
    let synproxy_mss = synproxy_mss(si, s, mss_clamp.unwrap_or(path_mss))?;
    Ok(Service {
        synproxy_mss,
        mss_clamp,
        limits: s.limits,
        limited: !s.limits.is_empty(),
        id,
        persistence_ticks: if s.persistence > 0 { crate::session::ticks(s.persistence) } else { 0 },
        on_backend_removed: s.on_backend_removed,
        on_no_backend: s.on_no_backend,
        rr: rr_sequence(&weights(&backends)),
        backend_ids: IdIndex::build(backends.iter().enumerate().map(|(i, b)| (b.id, i as u16))),
        name: s.name.clone(),
        vip: s.vip,
        vip_addr: Addr::from(s.vip),
        port: s.port,
        protocol: s.protocol,
        forwarding: s.forwarding,
        tunnel: s.tunnel,
        scheduler: s.scheduler,
        maglev: tables::maglev(s, &backends, at.previous),
        backends,
    })
}

/// The MSS that fits the tunnel path `path_mtu` (the longest inner packet every backend's
/// tunnel carries) less the VIP's family's IP and TCP headers (40 for IPv4, 60 for IPv6), at
/// least what the family's minimum MTU allows (536, 1220).
fn path_mss(s: &ServiceSpec, path_mtu: u16) -> u16 {
    let (headers, least) = if s.vip.is_ipv4() { (40, 536) } else { (60, 1220) };
    path_mtu.saturating_sub(headers).max(least)
}

/// The SYN proxy's MSS toward the backends, `mss` (`None` without the SYN proxy).
fn synproxy_mss(si: usize, s: &ServiceSpec, mss: u16) -> Result<Option<u16>, BuildError> {
    if !s.synproxy {
        return Ok(None);
    }
    rules::synproxy(s.forwarding, s.protocol).map_err(|m| refuse(format!("services[{si}].synproxy"), m))?;
    Ok(Some(mss))
}

/// Backend `bi` of service `si` (not a repeat of one in `pairs`), with the MTU of the port it
/// leaves by: its route (a port whose prefix
/// holds its host, else the first gateway), its stable id, its tunnel header.
fn build_backend(
    (si, bi): (usize, usize),
    s: &ServiceSpec,
    b: &BackendSpec,
    at: &Around<'_>,
    hops: &mut NextHops,
    (seen, pairs): (&mut Seen, &mut std::collections::HashSet<(IpAddr, u16)>),
) -> Result<Backend, BuildError> {
    let path = format!("services[{si}].backends[{bi}]");
    rules::dsr_backend(s.forwarding, b.port.is_some(), b.host.is_some())
        .map_err(|(field, m)| refuse(format!("{path}.{field}"), m))?;
    let port = b.port.unwrap_or(s.port);
    let host = b.host.unwrap_or(b.address);
    rules::backend_port(port).map_err(|m| refuse(format!("{path}.port"), m))?;
    if !pairs.insert((b.address, port)) {
        return Err(refuse(
            format!("{path}.address"),
            format!("backend {}:{port} is listed twice", b.address),
        ));
    }
    let route = at.ports.iter().position(|p| p.contains(host)).map(|pi| (pi, host)).or_else(|| {
        (at.spec.ports.iter().enumerate()).find_map(|(pi, p)| Some((pi, of_family(&p.gateways, host)?)))
    });
    let field = if b.host.is_some() { "host" } else { "address" };
    let Some((pi, via)) = route else {
        return Err(refuse(
            format!("{path}.{field}"),
            format!("no route to {host}: no port's prefix holds it and no port has a gateway of its family"),
        ));
    };
    let nexthop = hops.add(pi as u16, via, None);
    let id = backend_id(&path, (si, bi), b, seen)?;
    let out = &at.ports[pi];
    let Some(tunnel_source) = of_family(&at.spec.tunnel_sources, host).or_else(|| out.address_like(host))
    else {
        return Err(refuse(
            format!("{path}.{field}"),
            format!("no tunnel source for {host}: port {} has no address of its family", out.name),
        ));
    };
    let inner = crate::flow::Family::of(s.vip);
    let Some(outer) = OuterHeader::new((out.mac, out.vlan, out.mtu), tunnel_source, host, s.tunnel, inner)
    else {
        return Err(refuse(format!("{path}.{field}"), format!("no tunnel from {tunnel_source} to {host}")));
    };
    Ok(Backend {
        id,
        address: b.address,
        port,
        host,
        weight: b.weight,
        down: b.down,
        nexthop,
        tunnel_source,
        outer,
    })
}

/// The backend's stable id: its own, or the next after the largest so far; unique.
fn backend_id(
    path: &str,
    (si, bi): (usize, usize),
    b: &BackendSpec,
    seen: &mut Seen,
) -> Result<u32, BuildError> {
    let id = b.id.unwrap_or(seen.next_backend_id);
    seen.next_backend_id = seen.next_backend_id.max(id) + 1;
    if id as usize >= crate::counter::MAX_BACKEND_IDS {
        return Err(refuse(path, format!("backend id {id} is too large")));
    }
    if let Some(first) = seen.backend_ids.insert(id, (si, bi)) {
        return Err(refuse(
            path,
            format!("backend id {id} is also services[{}].backends[{}]'s", first.0, first.1),
        ));
    }
    Ok(id)
}

/// NAT replies arrive from (VPC, backend address, port); a backend may serve several services
/// (two VIPs or ports toward one server), at most [`NAT_SHARE`] of them. The map from that to
/// (start << 8 | count) into the list of services.
fn nat_groups(services: &[Service]) -> Result<(StaticMap<NatKey, u32>, Vec<u16>), BuildError> {
    let mut groups: std::collections::BTreeMap<NatKey, Vec<u16>> = Default::default();
    for (si, s) in services.iter().enumerate().filter(|(_, s)| s.forwarding == Forwarding::Nat) {
        for b in &s.backends {
            let key = NatKey::new(s.tunnel.vpc(), Addr::from(b.address), b.port, s.protocol.number());
            let group = groups.entry(key).or_default();
            group.push(si as u16);
            if group.len() > NAT_SHARE {
                return Err(refuse(
                    format!("services[{si}].backends"),
                    format!("{}:{} serves more than {NAT_SHARE} NAT services", b.address, b.port),
                ));
            }
        }
    }
    let mut list = Vec::new();
    let map = StaticMap::build(groups.into_iter().map(|(k, group)| {
        let start = list.len() as u32;
        list.extend_from_slice(&group);
        (k, start << 8 | group.len() as u32)
    }));
    Ok((map, list))
}

impl Snapshot {
    /// Builds a snapshot. Next-hop MACs learned by `previous` carry over, and so do the Maglev
    /// tables of its services whose tables would come out the same (see [`tables`]).
    pub fn build(spec: &SnapshotSpec, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        rules::port_count(spec.ports.len()).map_err(|m| refuse("ports", m))?;
        check_families(spec)?;
        let ports: Vec<Port> = spec
            .ports
            .iter()
            .map(|p| Port {
                name: p.name.clone(),
                mac: p.mac,
                addresses: p.addresses.clone(),
                mtu: p.mtu,
                vlan: p.vlan,
                kernel: p.kernel,
            })
            .collect();
        let from_kernel = kernel_ports(&ports)?;
        let mut hops = NextHops::default();
        hops.add_static(spec)?;
        let (mut seen, around) = (Seen::default(), Around { spec, ports: &ports, previous });
        let services = (spec.services.iter().enumerate())
            .map(|(si, s)| build_service(si, s, &around, &mut hops, &mut seen))
            .collect::<Result<Vec<Service>, BuildError>>()?;
        let (nat_map, nat_services) = nat_groups(&services)?;
        let mut default_nexthops = [None; 2];
        for (pi, p) in spec.ports.iter().enumerate() {
            for &g in &p.gateways {
                let slot = &mut default_nexthops[crate::flow::family(g)];
                if slot.is_none() {
                    *slot = Some(hops.add(pi as u16, g, None));
                }
            }
        }
        let nexthops = hops.list;
        if nexthops.len() > usize::from(u16::MAX) {
            return Err(refuse("services", "more than 65535 next hops"));
        }
        let key = |s: &Service| ServiceKey::new(Addr::from(s.vip), s.port, s.protocol.number());
        let snapshot = Snapshot {
            generation: spec.generation,
            service_map: StaticMap::build(
                services.iter().enumerate().map(|(i, s)| (key(s), (i as u16, s.id))),
            ),
            vips: StaticMap::build(services.iter().map(|s| (Addr::from(s.vip).0, ()))),
            service_ids: StaticMap::build(
                services.iter().enumerate().map(|(i, s)| (u64::from(s.id), i as u16)),
            ),
            nexthop_map: StaticMap::build(
                nexthops.iter().enumerate().map(|(i, n)| (NeighborKey::new(n.port, n.ip), i as u16)),
            ),
            has_nat: services.iter().any(|s| s.forwarding == Forwarding::Nat),
            ports,
            services,
            nexthops,
            default_nexthops,
            nat_map,
            nat_services,
            from_kernel,
            clusters: spec.clusters.clone(),
        };
        if let Some(prev) = previous {
            snapshot.learn_from(prev);
        }
        Ok(snapshot)
    }

    /// Takes over what the dynamic next hops of `previous` learned (a MAC and when) for
    /// each one this snapshot has too: at its build, and again just before it is published
    /// when it was built a while before (an apply's), so nothing learned meanwhile is lost.
    pub fn learn_from(&self, previous: &Snapshot) {
        for nh in self.nexthops.iter().filter(|n| !n.is_static) {
            if let Some(old) = previous.nexthop(nh.port, nh.ip) {
                nh.carry_over(old);
            }
        }
    }
}

/// Smooth weighted round robin (as nginx): over any window of `sum(weights)` turns each
/// backend gets its weight's worth, spread out. Weights are scaled to a sequence of at most
/// 4096 turns.
pub(super) fn rr_sequence(weights: &[u32]) -> Box<[u16]> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return Box::new([]);
    }
    let g = weights.iter().filter(|&&w| w > 0).fold(0u64, |g, &w| gcd(g, u64::from(w)));
    let mut w: Vec<i64> = weights.iter().map(|&x| (u64::from(x) / g) as i64).collect();
    let sum: i64 = w.iter().sum();
    if sum > 4096 {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * 4096 / sum).max(1);
        }
    }
    let sum: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    (0..sum)
        .map(|_| {
            for (c, &x) in current.iter_mut().zip(&w) {
                *c += x;
            }
            let best = (0..w.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).unwrap_or(0);
            current[best] -= sum;
            best as u16
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
