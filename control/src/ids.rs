//! Stable ids for services and backends. Sessions name their service and backend by id, so an
//! id must keep meaning the same thing across config changes: a service is identified by
//! (VIP, port, protocol), a backend by (its service's id, address, NAT port). Ids are never reused in a
//! process: an id freed by a removed backend and given to a new one would send the removed
//! backend's sessions to the newcomer.

use sluice_dataplane::flow::Addr;
use sluice_dataplane::region::{IdMap, Region};
use sluice_dataplane::session::MAX_BACKEND_IDS;
use sluice_dataplane::snapshot::{BackendSpec, Protocol, ServiceSpec, SnapshotSpec};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// What [`Registry::not_in`] finds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub services: Vec<(IpAddr, u16, u8)>,
    pub backends: Vec<((IpAddr, u16, u8), IpAddr, u16)>,
    /// Of the registry's (services, backends), how many the spec names.
    pub named: (usize, usize),
    /// The registry's (services, backends).
    pub of: (usize, usize),
}

#[derive(Debug, Default, Clone)]
pub struct Registry {
    services: HashMap<(IpAddr, u16, u8), u16>,
    backends: HashMap<(u16, IpAddr, u16), u32>,
    next_service: u32,
    next_backend: u32,
}

/// A service's identity: (VIP, port, protocol number).
fn service_key(s: &ServiceSpec) -> (IpAddr, u16, u8) {
    (s.vip, s.port, if s.protocol == Protocol::Tcp { 6 } else { 17 })
}

/// A backend's identity within its service: (service id, address, NAT port or 0).
fn backend_key(service: u16, b: &BackendSpec) -> (u16, IpAddr, u16) {
    (service, b.address, b.port.unwrap_or(0))
}

impl Registry {
    /// The registry a session region kept (the ids a previous process gave), so that its
    /// sessions name the same services and backends in this one.
    pub fn from_ids(m: &IdMap) -> Registry {
        Registry {
            services: m
                .services
                .iter()
                .map(|&(vip, port, proto, id)| ((vip.to_ip(), port, proto), id))
                .collect(),
            backends: m.backends.iter().map(|&(s, addr, port, id)| ((s, addr.to_ip(), port), id)).collect(),
            next_service: m.next_service,
            next_backend: m.next_backend,
        }
    }

    /// The registry as a session region keeps it.
    pub fn to_ids(&self) -> IdMap {
        let mut m = IdMap {
            services: self
                .services
                .iter()
                .map(|(&(vip, port, proto), &id)| (Addr::from(vip), port, proto, id))
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|(&(s, addr, port), &id)| (s, Addr::from(addr), port, id))
                .collect(),
            next_service: self.next_service,
            next_backend: self.next_backend,
        };
        m.services.sort_by_key(|e| e.3);
        m.backends.sort_by_key(|e| e.3);
        m
    }

    /// Gives every service and backend in `spec` its id, the one it had before if it existed.
    pub fn assign(&mut self, spec: &mut SnapshotSpec) -> Result<(), String> {
        for s in spec.services.iter_mut() {
            let key = service_key(s);
            let id = match self.services.get(&key) {
                Some(&id) => id,
                None => {
                    let id = u16::try_from(self.next_service)
                        .map_err(|_| "more than 65536 services over this run")?;
                    self.next_service += 1;
                    self.services.insert(key, id);
                    id
                }
            };
            s.id = Some(id);
            for b in s.backends.iter_mut() {
                let key = backend_key(id, b);
                let id = match self.backends.get(&key) {
                    Some(&bid) => bid,
                    None => {
                        if self.next_backend as usize >= MAX_BACKEND_IDS {
                            return Err(format!("more than {MAX_BACKEND_IDS} backends over this run"));
                        }
                        let bid = self.next_backend;
                        self.next_backend += 1;
                        self.backends.insert(key, bid);
                        bid
                    }
                };
                b.id = Some(id);
            }
        }
        Ok(())
    }

    /// The services and backends this registry has ids for that `spec` does not name (as
    /// `sluiced upgrade-check` reports them): a removed service's (VIP, port, protocol
    /// number); a removed backend's service identity, address and NAT port (0: none), for
    /// the services `spec` keeps (a removed service's backends go with it).
    pub fn not_in(&self, spec: &SnapshotSpec) -> Removed {
        let services: HashSet<_> = spec.services.iter().map(service_key).collect();
        let by_id: HashMap<u16, (IpAddr, u16, u8)> = self.services.iter().map(|(k, &id)| (id, *k)).collect();
        let backends: HashSet<_> = spec
            .services
            .iter()
            .filter_map(|s| self.services.get(&service_key(s)).map(|&id| (id, s)))
            .flat_map(|(id, s)| s.backends.iter().map(move |b| backend_key(id, b)))
            .collect();
        let mut out = Removed {
            named: (
                self.services.keys().filter(|k| services.contains(k)).count(),
                self.backends.keys().filter(|k| backends.contains(k)).count(),
            ),
            of: (self.services.len(), self.backends.len()),
            services: self.services.keys().filter(|k| !services.contains(k)).copied().collect(),
            backends: self
                .backends
                .keys()
                .filter(|k| !backends.contains(k))
                .filter_map(|&(s, addr, port)| by_id.get(&s).map(|&service| (service, addr, port)))
                .filter(|(service, _, _)| services.contains(service))
                .collect(),
        };
        out.services.sort();
        out.backends.sort();
        out
    }

    /// How many service and backend ids it has given: ids are never taken back, so the
    /// registry holds what it held before exactly when these counts are the same.
    pub fn issued(&self) -> (u32, u32) {
        (self.next_service, self.next_backend)
    }

    /// The id [`Registry::assign`] gave backend `b` of service `s` (as the config has them,
    /// ids unset), if it gave one.
    pub fn backend_id(&self, s: &ServiceSpec, b: &BackendSpec) -> Option<u32> {
        let service = self.service_id(s)?;
        self.backends.get(&backend_key(service, b)).copied()
    }

    /// The id [`Registry::assign`] gave service `s` (as the config has it), if it gave one.
    pub fn service_id(&self, s: &ServiceSpec) -> Option<u16> {
        self.services.get(&service_key(s)).copied()
    }
}

/// The session region's copy of the registry's ids, rewritten only when the registry has
/// given new ones (an apply that changes weights gives none, and a map of 50,000 backends is
/// about 1 MiB to encode, checksum and write).
#[derive(Debug, Default)]
pub struct KeptIds {
    region: Option<Arc<Region>>,
    /// [`Registry::issued`] when the region last took the map.
    stored: Option<(u32, u32)>,
}

impl KeptIds {
    pub fn new(region: Option<Arc<Region>>) -> KeptIds {
        KeptIds { region, stored: None }
    }

    /// Keeps `registry`'s ids in the region, if there is one and they are not there yet:
    /// before any snapshot that gives a new id is published, so no session names an id the
    /// region does not know.
    pub fn keep(&mut self, registry: &Registry) -> Result<(), String> {
        let Some(region) = &self.region else { return Ok(()) };
        if self.stored == Some(registry.issued()) {
            return Ok(());
        }
        region.store_ids(&registry.to_ids()).map_err(|e| format!("session region: ids: {e:?}"))?;
        self.stored = Some(registry.issued());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(services: Vec<(u16, Vec<u8>)>) -> SnapshotSpec {
        SnapshotSpec {
            generation: 1,
            ports: vec![],
            tunnel_sources: vec![],
            clusters: vec![],
            services: services
                .into_iter()
                .map(|(port, bs)| {
                    ServiceSpec::dsr(
                        "s",
                        std::net::Ipv4Addr::new(198, 18, 10, 1).into(),
                        port,
                        Protocol::Tcp,
                        bs.into_iter()
                            .map(|b| BackendSpec::new(std::net::Ipv4Addr::new(198, 19, 0, b).into(), 1))
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    fn ids(s: &SnapshotSpec) -> Vec<(u16, Vec<u32>)> {
        s.services
            .iter()
            .map(|v| (v.id.unwrap(), v.backends.iter().map(|b| b.id.unwrap()).collect()))
            .collect()
    }

    #[test]
    fn ids_follow_identity_not_position() {
        let mut r = Registry::default();
        let mut a = spec(vec![(80, vec![1, 2, 3]), (81, vec![1])]);
        r.assign(&mut a).unwrap();
        assert_eq!(ids(&a), [(0, vec![0, 1, 2]), (1, vec![3])]);
        // Reordered, one backend removed, one added, a service added in front.
        let mut b = spec(vec![(443, vec![9]), (81, vec![1]), (80, vec![3, 4, 1])]);
        r.assign(&mut b).unwrap();
        assert_eq!(ids(&b), [(2, vec![4]), (1, vec![3]), (0, vec![2, 5, 0])]);
        // The removed backend (port 80, .2) comes back: its old id.
        let mut c = spec(vec![(80, vec![2])]);
        r.assign(&mut c).unwrap();
        assert_eq!(ids(&c), [(0, vec![1])]);
    }

    #[test]
    fn backend_id_finds_what_assign_gave() {
        let mut r = Registry::default();
        let mut a = spec(vec![(80, vec![1, 2]), (81, vec![1])]);
        let unassigned = a.clone();
        assert_eq!(r.backend_id(&unassigned.services[0], &unassigned.services[0].backends[0]), None);
        r.assign(&mut a).unwrap();
        let ids: Vec<Option<u32>> = unassigned
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
            .map(|(s, b)| r.backend_id(s, b))
            .collect();
        assert_eq!(ids, [Some(0), Some(1), Some(2)]);
        let other = spec(vec![(443, vec![1])]);
        assert_eq!(r.backend_id(&other.services[0], &other.services[0].backends[0]), None);
    }

    #[test]
    fn a_registry_kept_in_a_region_gives_a_new_process_the_same_ids_by_identity() {
        let mut old = Registry::default();
        old.assign(&mut spec(vec![(80, vec![1, 2, 3]), (81, vec![1])])).unwrap();
        // The next process reads what the region kept, through its bytes.
        let kept = IdMap::decode(&old.to_ids().encode().unwrap()).unwrap();
        let mut new = Registry::from_ids(&kept);
        // Its config: the services reordered, backend .2 of port 80 removed, one added.
        let mut b = spec(vec![(81, vec![1]), (80, vec![3, 1, 4])]);
        new.assign(&mut b).unwrap();
        assert_eq!(
            ids(&b),
            [(1, vec![3]), (0, vec![2, 0, 4])],
            "unchanged ones keep their ids; new ones get fresh ones"
        );
        assert_eq!(new.to_ids().next_backend, 5);
    }

    #[test]
    fn not_in_names_what_a_config_no_longer_has() {
        let mut r = Registry::default();
        r.assign(&mut spec(vec![(80, vec![1, 2, 3]), (81, vec![1])])).unwrap();
        let all = r.not_in(&spec(vec![(80, vec![3, 1, 2]), (81, vec![1])]));
        assert_eq!((all.services.len(), all.backends.len(), all.named), (0, 0, (2, 4)));
        let vip: IpAddr = std::net::Ipv4Addr::new(198, 18, 10, 1).into();
        let b = |n| IpAddr::from(std::net::Ipv4Addr::new(198, 19, 0, n));
        // Port 81 gone (its backend with it: a removed service's backends are not listed
        // apart), backend .2 of port 80 gone, .9 new (not the registry's business).
        let removed = r.not_in(&spec(vec![(80, vec![3, 9, 1])]));
        assert_eq!(removed.services, [(vip, 81, 6)]);
        assert_eq!(removed.backends, [((vip, 80, 6), b(2), 0)]);
        assert_eq!((removed.named, removed.of), ((1, 2), (2, 4)));
    }

    #[test]
    fn the_region_takes_the_ids_again_only_when_new_ones_were_given() {
        use sluice_dataplane::region::{Header, LAYOUT_VERSION};
        let dir = std::env::temp_dir().join(format!("sluice-kept-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header =
            Header { layout: LAYOUT_VERSION, slots: 64, capacity: 32, seeds: [1, 2, 3], epoch_ns: 1 };
        let region = Arc::new(Region::open(&dir.join("region"), header, true).unwrap().0);
        let mut kept = KeptIds::new(Some(Arc::clone(&region)));
        let mut r = Registry::default();
        r.assign(&mut spec(vec![(80, vec![1, 2])])).unwrap();
        kept.keep(&r).unwrap();
        assert_eq!(region.ids(), Some(r.to_ids()));
        // A map the region holds that is not the registry's shows whether `keep` writes.
        let marker = Registry::default().to_ids();
        region.store_ids(&marker).unwrap();
        // The same services, other weights: no new id, nothing written.
        r.assign(&mut spec(vec![(80, vec![2, 1])])).unwrap();
        kept.keep(&r).unwrap();
        assert_eq!(region.ids(), Some(marker), "unchanged ids are not written again");
        // A new backend: written.
        r.assign(&mut spec(vec![(80, vec![1, 2, 3])])).unwrap();
        kept.keep(&r).unwrap();
        assert_eq!(region.ids(), Some(r.to_ids()));
        drop(region);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
