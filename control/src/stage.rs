//! A config's snapshot as the running process publishes it: the config's spec with stable ids,
//! the ports' MACs, the operator's drains and the health checks' standings ([`Basis`]). An
//! apply builds it once, on its own thread, from a copy of the control thread's basis, and
//! that build is both the dataplane's check of the file and the snapshot published: the control
//! thread swaps it in when its basis has not moved meanwhile ([`Staged::current`]), and builds
//! again otherwise (a drain or a health change came in during the apply).

use crate::config::{Config, ConfigErrors};
use crate::ids::Registry;
use sluice_dataplane::snapshot::{Snapshot, SnapshotSpec};
use sluice_dataplane::wire::Mac;
use std::collections::BTreeSet;
use std::path::Path;

/// What a config's spec takes from the running process.
#[derive(Debug, Clone, Default)]
pub struct Basis {
    pub registry: Registry,
    /// The ports' MACs, as the devices have them.
    pub macs: Vec<Mac>,
    /// Backends (by id) given weight 0 by `drain`.
    pub drained: BTreeSet<u32>,
    /// Backends (by id) that their health check finds down.
    pub down: BTreeSet<u32>,
    /// The generation of the next snapshot.
    pub generation: u64,
}

/// What a spec was made from: equal fingerprints make equal specs of one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    generation: u64,
    issued: (u32, u32),
    macs: Vec<Mac>,
    drained: BTreeSet<u32>,
    down: BTreeSet<u32>,
}

impl Basis {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            generation: self.generation,
            issued: self.registry.issued(),
            macs: self.macs.clone(),
            drained: self.drained.clone(),
            down: self.down.clone(),
        }
    }

    /// `config`'s spec: ids (new ones given now), MACs, drains (weight 0), health (down).
    pub fn spec(&mut self, config: &Config) -> Result<SnapshotSpec, String> {
        let mut spec = config.snapshot_spec(self.generation, Some(&self.macs));
        self.registry.assign(&mut spec)?;
        for b in spec.services.iter_mut().flat_map(|s| s.backends.iter_mut()) {
            let Some(id) = b.id else { continue };
            if self.drained.contains(&id) {
                b.weight = 0;
            }
            if self.down.contains(&id) {
                b.down = true;
            }
        }
        Ok(spec)
    }
}

/// An apply's validated config with its snapshot, built over `basis`.
#[derive(Debug)]
pub struct Staged {
    pub config: Config,
    pub snapshot: Snapshot,
    /// The basis after the build (its registry has the ids the config's new services and
    /// backends were given).
    pub basis: Basis,
    from: Fingerprint,
}

impl Staged {
    /// Reads and validates `path` to replace `running` (see [`Config::load_for_apply`]), and
    /// builds its snapshot over `basis` and the running snapshot `previous`.
    pub fn load(
        path: &Path,
        running: &Config,
        mut basis: Basis,
        previous: Option<&Snapshot>,
    ) -> Result<Staged, ConfigErrors> {
        let from = basis.fingerprint();
        let (config, snapshot) = Config::load_for_apply(path, running, (|c| basis.spec(c), previous))?;
        Ok(Staged { config, snapshot, basis, from })
    }

    /// Whether the snapshot is the one `now` would build (so it may be published as it is).
    pub fn current(&self, now: &Basis) -> bool {
        self.from == now.fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "\
ports: [{ name: a, device: net_null0, address: 198.18.0.1/24 }]
services:
  - { name: web, vip: 198.18.10.1, port: 80, protocol: tcp,
      backends: [{ address: 198.18.0.10 }, { address: 198.18.0.11 }, { address: 198.18.0.12 }] }
  - { name: dns, vip: 198.18.10.1, port: 53, protocol: udp, backends: [{ address: 198.18.0.10 }] }
";

    /// The running config, its basis (ids given, next generation 2) and its snapshot.
    fn running() -> (Config, Basis, Snapshot) {
        let config = Config::parse(RUNNING, "run.yaml").unwrap();
        let mut basis = Basis { generation: 1, ..Basis::default() };
        let snapshot = Snapshot::build(&basis.spec(&config).unwrap(), None).unwrap();
        basis.generation = 2;
        (config, basis, snapshot)
    }

    fn staged(name: &str, text: &str, (running, basis, previous): (&Config, &Basis, &Snapshot)) -> Staged {
        let dir = std::env::temp_dir().join(format!("sluice-stage-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("new.yaml");
        std::fs::write(&file, text).unwrap();
        let staged = Staged::load(&file, running, basis.clone(), Some(previous));
        let _ = std::fs::remove_dir_all(&dir);
        staged.unwrap()
    }

    #[test]
    fn the_staged_snapshot_has_the_ids_drains_and_standings_of_its_basis() {
        let (config, mut basis, previous) = running();
        basis.drained.insert(1);
        basis.down.insert(2);
        let text = RUNNING.replace("address: 198.18.0.10 }]", "address: 198.18.0.13 }]");
        let s = staged("ids", &text, (&config, &basis, &previous));
        assert_eq!(s.snapshot.generation, 2);
        let web = &s.snapshot.services[0];
        let got: Vec<(u32, u32, bool)> = web.backends.iter().map(|b| (b.id, b.weight, b.down)).collect();
        assert_eq!(got, [(0, 1, false), (1, 0, false), (2, 1, true)]);
        // The changed service's new backend has a new id, in the staged registry only.
        assert_eq!(s.snapshot.services[1].backends[0].id, 4);
        assert_eq!((basis.registry.issued(), s.basis.registry.issued()), ((2, 4), (2, 5)));
        // Its weights as the schedulers see them changed (a drain, a backend down): so did its table.
        assert!(!web.maglev.shares_slots_with(&previous.services[0].maglev));
    }

    #[test]
    fn a_first_snapshot_with_ids_takes_over_every_table_of_the_checks_build() {
        let dir = std::env::temp_dir().join(format!("sluice-stage-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("run.yaml"), RUNNING).unwrap();
        let (config, checked) = Config::load_built(&dir.join("run.yaml")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut basis = Basis { generation: 1, macs: vec![[2, 0, 0, 0, 0, 1]], ..Basis::default() };
        let first = Snapshot::build(&basis.spec(&config).unwrap(), Some(&checked)).unwrap();
        assert_eq!(first.services.len(), 2);
        for (new, old) in first.services.iter().zip(&checked.services) {
            assert!(new.maglev.shares_slots_with(&old.maglev), "{}", new.name);
        }
    }

    #[test]
    fn a_staged_snapshot_is_current_until_its_basis_moves() {
        let (config, basis, previous) = running();
        let s = staged("current", RUNNING, (&config, &basis, &previous));
        assert!(s.current(&basis));
        type Move = fn(&mut Basis);
        let moves: [(&str, Move); 5] = [
            ("a drain", |b| {
                b.drained.insert(0);
            }),
            ("a backend down", |b| {
                b.down.insert(3);
            }),
            ("a publish", |b| b.generation += 1),
            ("a device's MAC", |b| b.macs = vec![[2, 0, 0, 0, 0, 1]]),
            ("a new id", |b| {
                let mut more = Config::parse(&RUNNING.replace("port: 53", "port: 54"), "x.yaml").unwrap();
                more.services.truncate(2);
                b.spec(&more).unwrap();
            }),
        ];
        for (what, change) in moves {
            let mut now = basis.clone();
            change(&mut now);
            assert!(!s.current(&now), "{what}");
        }
    }
}
