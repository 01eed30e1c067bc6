//! Choosing a backend for a new flow, by the service's scheduler.
//!
//! Maglev and ip_hash are pure functions of the flow (the same answer on every appliance).
//! Round robin keeps a cursor per service in each worker; least-connections reads the session
//! table's per-backend counts. None of them allocates on the packet path: a worker's cursors
//! are resized only when a new snapshot generation arrives.

use crate::flow::{FlowKey, SELECT_SEED};
use crate::session::SessionTable;
use crate::snapshot::{Scheduler, Service, Snapshot};

/// A worker's scheduler state.
#[derive(Debug)]
pub struct SchedState {
    worker: usize,
    workers: usize,
    generation: u64,
    cursors: Vec<u32>,
}

impl Default for SchedState {
    fn default() -> Self {
        SchedState::new(0, 1)
    }
}

impl SchedState {
    pub fn new(worker: usize, workers: usize) -> SchedState {
        SchedState { worker, workers: workers.max(1), generation: u64::MAX, cursors: Vec::new() }
    }

    /// Back to what `new` made: the next `prepare` sets the cursors afresh (keeps the
    /// allocation).
    pub fn reset(&mut self) {
        self.generation = u64::MAX;
        self.cursors.clear();
    }

    /// Aligns the cursors with `snap` (once per config generation).
    pub fn prepare(&mut self, snap: &Snapshot) {
        if self.generation == snap.generation && self.cursors.len() == snap.services.len() {
            return;
        }
        self.generation = snap.generation;
        // Workers start their round-robin cursors spread over the sequence.
        self.cursors =
            snap.services.iter().map(|s| (s.rr.len() * self.worker / self.workers) as u32).collect();
    }
}

/// The backend index a new flow of service `si` gets, or `None` when no backend has a
/// positive weight. `hash` is `flow.hash(SELECT_SEED)`.
#[inline]
pub fn choose(
    svc: &Service,
    si: usize,
    flow: &FlowKey,
    hash: u64,
    state: &mut SchedState,
    sessions: &SessionTable,
) -> Option<u16> {
    match svc.scheduler {
        Scheduler::Maglev => svc.maglev.lookup(hash),
        Scheduler::IpHash => svc.maglev.lookup(flow.src_hash(SELECT_SEED)),
        Scheduler::RoundRobin => {
            let cursor = state.cursors.get_mut(si)?;
            let b = svc.rr.get(*cursor as usize % svc.rr.len().max(1)).copied();
            *cursor = cursor.wrapping_add(1);
            b
        }
        Scheduler::LeastConn => {
            // Fewest sessions per unit of weight: a/wa < b/wb  <=>  a*wb < b*wa.
            let mut best: Option<(u16, u64, u64)> = None;
            for (i, b) in svc.backends.iter().enumerate().filter(|(_, b)| b.takes_new_flows()) {
                let n = u64::from(sessions.active(b.id));
                let w = u64::from(b.weight);
                if best.is_none_or(|(_, bn, bw)| n * bw < bn * w) {
                    best = Some((i as u16, n, w));
                }
            }
            best.map(|(i, _, _)| i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;
    use crate::session::{Session, SessionKey, TcpState, Timeouts};
    use crate::snapshot::*;
    use std::net::Ipv4Addr;

    fn snap(scheduler: Scheduler, weights: &[u32]) -> Snapshot {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| BackendSpec::new(Ipv4Addr::new(198, 19, 0, 10 + i as u8).into(), w))
            .collect();
        let mut svc =
            ServiceSpec::dsr("s", Ipv4Addr::new(198, 18, 10, 1).into(), 80, Protocol::Tcp, backends);
        svc.scheduler = scheduler;
        svc.table_size = 251;
        let spec = SnapshotSpec {
            generation: 1,
            ports: vec![PortSpec {
                name: "p".into(),
                mac: [2, 0, 0, 0, 0, 1],
                addresses: vec![crate::flow::Prefix::new(Ipv4Addr::new(198, 19, 0, 1), 24)],
                mtu: 1500,
                vlan: None,
                gateways: vec![],
                neighbors: vec![],
                kernel: None,
            }],
            tunnel_sources: vec![],
            clusters: vec![],
            services: vec![svc],
        };
        Snapshot::build(&spec, None).unwrap()
    }

    fn flow(i: u32) -> FlowKey {
        FlowKey {
            src: Addr::v4(Ipv4Addr::from(0xc612_8000 + i / 7)),
            dst: Addr::v4(Ipv4Addr::new(198, 18, 10, 1)),
            src_port: 1000 + (i % 7) as u16,
            dst_port: 80,
            protocol: 6,
        }
    }

    #[test]
    fn round_robin_follows_weights_exactly_over_a_cycle() {
        let s = snap(Scheduler::RoundRobin, &[1, 2, 3, 0]);
        let table = SessionTable::new(16, Timeouts::default(), 1);
        let mut st = SchedState::new(0, 1);
        st.prepare(&s);
        let mut counts = [0; 4];
        for i in 0..600 {
            let f = flow(i);
            counts[usize::from(
                choose(&s.services[0], 0, &f, f.hash(SELECT_SEED), &mut st, &table).unwrap(),
            )] += 1;
        }
        assert_eq!(counts, [100, 200, 300, 0]);
        // After a reset, the same sequence again, as from a new state.
        let turns = |st: &mut SchedState| -> Vec<u16> {
            st.prepare(&s);
            (0..12).map(|i| choose(&s.services[0], 0, &flow(i), 0, st, &table).unwrap()).collect()
        };
        let first = turns(&mut SchedState::new(0, 1));
        st.reset();
        assert_eq!(turns(&mut st), first);
        // Smooth: backend 2 (weight 3) never gets three turns in a row.
        assert_eq!(&s.services[0].rr[..], &[2, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn ip_hash_sends_a_client_to_one_backend() {
        let s = snap(Scheduler::IpHash, &[1, 1, 1, 1]);
        let table = SessionTable::new(16, Timeouts::default(), 1);
        let mut st = SchedState::new(0, 1);
        let mut by_client = std::collections::HashMap::new();
        for i in 0..7000 {
            let f = flow(i);
            let b = choose(&s.services[0], 0, &f, f.hash(SELECT_SEED), &mut st, &table).unwrap();
            assert_eq!(*by_client.entry(f.src).or_insert(b), b, "a client's ports all go to one backend");
        }
        let used: std::collections::HashSet<u16> = by_client.values().copied().collect();
        assert_eq!(used.len(), 4, "clients spread over all backends");
    }

    #[test]
    fn least_conn_fills_the_emptiest_by_weight() {
        let s = snap(Scheduler::LeastConn, &[1, 3]);
        let table = SessionTable::new(1000, Timeouts::default(), 1);
        let mut st = SchedState::new(0, 1);
        let mut counts = [0; 2];
        for i in 0..400 {
            let f = flow(i);
            let b = choose(&s.services[0], 0, &f, f.hash(SELECT_SEED), &mut st, &table).unwrap();
            counts[usize::from(b)] += 1;
            let k = SessionKey::flow(f.src, f.src_port, 0);
            table.insert(
                &k,
                table.hash(&k),
                &Session::new(s.services[0].backends[usize::from(b)].id, TcpState::SynSent, 0),
            );
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn workers_start_round_robin_apart() {
        let s = snap(Scheduler::RoundRobin, &[1, 1, 1, 1]);
        let table = SessionTable::new(16, Timeouts::default(), 1);
        let firsts: Vec<u16> = (0..4)
            .map(|w| {
                let mut st = SchedState::new(w, 4);
                st.prepare(&s);
                let f = flow(0);
                choose(&s.services[0], 0, &f, f.hash(SELECT_SEED), &mut st, &table).unwrap()
            })
            .collect();
        assert_eq!(firsts, [0, 1, 2, 3]);
    }
}
