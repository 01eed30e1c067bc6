//! A service's Maglev table: the previous snapshot's when it was built from the same inputs
//! (backend identities in order, their weights as the schedulers see them, the table size),
//! else a new one. So an apply that changes one service builds one table, and the others
//! share theirs with the running snapshot.

use super::{Backend, Forwarding, Service, ServiceKey, ServiceSpec, Snapshot};
use crate::flow::Addr;
use crate::maglev::{Maglev, MaglevInput};
use std::net::IpAddr;

/// The backends' weights as the schedulers see them (a backend that is down has none).
pub(super) fn weights(backends: &[Backend]) -> Vec<u32> {
    backends.iter().map(weight).collect()
}

fn weight(b: &Backend) -> u32 {
    if b.down {
        0
    } else {
        b.weight
    }
}

/// The service's Maglev table, taken from the service of the same key in `previous` if its
/// inputs are the same, else built.
pub(super) fn maglev(s: &ServiceSpec, backends: &[Backend], previous: Option<&Snapshot>) -> Maglev {
    let key = ServiceKey::new(Addr::from(s.vip), s.port, s.protocol.number());
    let old = previous.and_then(|p| p.services.get(usize::from(p.service(key)?)));
    match old {
        Some(old) if same_inputs(old, s, backends) => old.maglev.clone(),
        _ => build(s, backends),
    }
}

/// Whether `old`'s table is the one `s` with `backends` would build.
fn same_inputs(old: &Service, s: &ServiceSpec, backends: &[Backend]) -> bool {
    old.maglev.size() == s.table_size
        && old.forwarding == s.forwarding
        && old.backends.len() == backends.len()
        && (old.backends.iter().zip(backends))
            .all(|(a, b)| a.address == b.address && a.port == b.port && weight(a) == weight(b))
}

/// A new table. Maglev names a backend by its address (DSR) or address and port (NAT): the
/// same on every appliance with this config.
fn build(s: &ServiceSpec, backends: &[Backend]) -> Maglev {
    let ids: Vec<Vec<u8>> = backends
        .iter()
        .map(|b| {
            let mut id = match b.address {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            if s.forwarding == Forwarding::Nat {
                id.extend_from_slice(&b.port.to_be_bytes());
            }
            id
        })
        .collect();
    let weights = weights(backends);
    let inputs: Vec<MaglevInput<'_>> =
        ids.iter().zip(&weights).map(|(id, &weight)| MaglevInput { id, weight }).collect();
    Maglev::build(&inputs, s.table_size)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{service, spec};
    use super::*;
    use crate::snapshot::SnapshotSpec;

    fn three() -> SnapshotSpec {
        let hosts = [[198, 19, 0, 10], [198, 19, 0, 11], [198, 19, 0, 12]];
        spec(vec![
            service([198, 18, 10, 1], 80, &hosts),
            service([198, 18, 10, 1], 81, &hosts),
            service([198, 18, 10, 2], 80, &hosts[..2]),
        ])
    }

    /// `changed` built after `before`: which tables it shares with it. Every table is the one
    /// a build without a previous snapshot gives.
    fn shared(before: &SnapshotSpec, changed: &SnapshotSpec) -> Vec<bool> {
        let old = Snapshot::build(before, None).unwrap();
        let new = Snapshot::build(changed, Some(&old)).unwrap();
        let fresh = Snapshot::build(changed, None).unwrap();
        for (n, f) in new.services.iter().zip(&fresh.services) {
            assert_eq!(n.maglev.slots(), f.maglev.slots(), "{}", n.name);
        }
        let old_table =
            |s: &Service| old.services.iter().find(|o| (o.vip, o.port) == (s.vip, s.port)).map(|o| &o.maglev);
        new.services.iter().map(|s| old_table(s).is_some_and(|t| t.shares_slots_with(&s.maglev))).collect()
    }

    #[test]
    fn unchanged_services_keep_their_tables() {
        assert_eq!(shared(&three(), &three()), [true, true, true]);
        let mut one = three();
        one.services[1].backends[0].weight = 2;
        assert_eq!(shared(&three(), &one), [true, false, true]);
        // A new service is built; the others stay where they were in the list or not.
        let mut more = three();
        more.services.insert(0, service([198, 18, 10, 3], 80, &[[198, 19, 0, 13]]));
        assert_eq!(shared(&three(), &more), [false, true, true, true]);
    }

    #[test]
    fn any_changed_input_builds_anew() {
        type Change = fn(&mut ServiceSpec);
        let changes: [(&str, Change); 7] = [
            ("weight", |s| s.backends[0].weight = 3),
            ("down", |s| s.backends[1].down = true),
            ("address", |s| s.backends[2].address = [198, 19, 0, 20].into()),
            ("order", |s| s.backends.swap(0, 1)),
            ("one more", |s| s.backends.push(crate::snapshot::BackendSpec::new([198, 19, 0, 21].into(), 1))),
            ("one less", |s| s.backends.truncate(2)),
            ("size", |s| s.table_size = 257),
        ];
        for (what, change) in changes {
            let mut sp = three();
            change(&mut sp.services[0]);
            assert_eq!(shared(&three(), &sp), [false, true, true], "{what}");
        }
        // A NAT backend is its address and port.
        let nat = |sp: &mut SnapshotSpec, port| {
            sp.services[0].forwarding = Forwarding::Nat;
            for b in &mut sp.services[0].backends {
                (b.port, b.host) = (Some(port), Some(b.address));
            }
        };
        let (mut a, mut b, mut c) = (three(), three(), three());
        nat(&mut a, 8080);
        nat(&mut b, 8081);
        assert_eq!(shared(&a, &b), [false, true, true], "port");
        // The same addresses and ports (80, the service's), named with the port under NAT.
        nat(&mut c, 80);
        assert_eq!(shared(&three(), &c), [false, true, true], "forwarding");
    }
}
