//! Which VIPs this appliance announces to its routers, and the file that tells the routing
//! daemon.
//!
//! A VIP is announced while (a) every worker is polling: its `polls` counter moved within the
//! heartbeat, a data-path liveness that a wedged worker fails even when the process and its
//! control thread are fine; and (b) one of its services wants it: `announce: always`, or
//! `healthy` (the default) with a backend that takes new flows. Otherwise it is withdrawn, for
//! a reason that the status and the metrics name. Whatever stops the whole process (SIGKILL,
//! SIGSTOP) is caught by the router itself: BFD and BGP run over the exception path, through
//! the workers, so they stop with them.

use sluice_dataplane::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `m` locked, whatever a panicking holder left (the state is plain values, always whole).
pub fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the routing side knows, for the status and the metrics: each VIP's standing, what
/// BIRD was last told and how that went, and BIRD's BGP sessions.
#[derive(Debug, Default)]
pub struct RoutingState {
    pub standing: Mutex<BTreeMap<IpAddr, Result<(), Withdrawn>>>,
    /// The VIPs BIRD last took (after a successful `configure`).
    pub announced: Mutex<Vec<IpAddr>>,
    pub updates: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// BIRD's BGP protocols: (name, established); empty until BIRD answered once.
    pub bgp: Mutex<Vec<(String, bool)>>,
}

/// When a service's VIP is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// While the service has a backend that takes new flows.
    #[default]
    Healthy,
    /// Whenever the appliance forwards at all.
    Always,
}

/// Why a VIP is not announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Withdrawn {
    /// None of its services has a backend that takes new flows.
    NoBackend,
    /// A worker stopped polling.
    WorkersStalled,
    /// Just (re)started: the peers' sessions are not all here yet (session sync), so flows
    /// moved here now would lose their state.
    Joining,
}

impl Withdrawn {
    pub const ALL: [Withdrawn; 3] = [Withdrawn::NoBackend, Withdrawn::WorkersStalled, Withdrawn::Joining];

    /// The `reason` label in metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            Withdrawn::NoBackend => "no_backend",
            Withdrawn::WorkersStalled => "workers_stalled",
            Withdrawn::Joining => "joining",
        }
    }
}

/// Each VIP of the snapshot (and the cluster's tunnel address, announced whenever the
/// appliance forwards) and whether it is announced (`Ok`) or why not. `policy(name)` is
/// the policy of the service of that name; `workers_alive` the heartbeat; `joined` whether
/// the peers' sessions are here (or were waited for long enough).
pub fn standing(
    snap: &Snapshot,
    policy: impl Fn(&str) -> Policy,
    (workers_alive, joined): (bool, bool),
) -> BTreeMap<IpAddr, Result<(), Withdrawn>> {
    let mut out = BTreeMap::new();
    for s in &snap.services {
        let wants = policy(&s.name) == Policy::Always || s.backends.iter().any(|b| b.takes_new_flows());
        let entry = out.entry(s.vip).or_insert(Err(Withdrawn::NoBackend));
        if wants {
            *entry = Ok(());
        }
    }
    // The cluster's tunnel address: whoever forwards takes NAT replies.
    for &c in &snap.clusters {
        out.insert(c, Ok(()));
    }
    let all_out = if !workers_alive {
        Some(Withdrawn::WorkersStalled)
    } else if !joined {
        Some(Withdrawn::Joining)
    } else {
        None
    };
    if let Some(why) = all_out {
        for v in out.values_mut() {
            *v = Err(why);
        }
    }
    out
}

/// The include file for BIRD's static protocol of `vips`' family (IPv4, or with `ipv6`,
/// IPv6): one blackhole route per announced VIP of it (the route exists only to be exported;
/// the appliance's kernel never gets it).
pub fn bird_include(vips: impl IntoIterator<Item = IpAddr>, ipv6: bool) -> String {
    let mut out = String::from("# Written by sluiced: the VIPs this appliance announces. Do not edit.\n");
    for v in vips.into_iter().filter(|v| v.is_ipv6() == ipv6) {
        let len = if v.is_ipv4() { 32 } else { 128 };
        out.push_str(&format!("route {v}/{len} blackhole;\n"));
    }
    out
}

/// The workers' heartbeat: each worker's poll count, and when it last moved.
#[derive(Debug)]
pub struct Heartbeat {
    timeout: Duration,
    last: Vec<(u64, Instant)>,
}

impl Heartbeat {
    /// A heartbeat that fails when a worker's polls stand still longer than `timeout`.
    pub fn new(timeout: Duration) -> Heartbeat {
        Heartbeat { timeout, last: Vec::new() }
    }

    /// Takes the workers' poll counts at `now`: true if every one moved within the timeout.
    pub fn beat(&mut self, polls: &[u64], now: Instant) -> bool {
        if self.last.len() != polls.len() {
            self.last = polls.iter().map(|&p| (p, now)).collect();
        }
        let mut alive = true;
        for (seen, &p) in self.last.iter_mut().zip(polls) {
            if p != seen.0 {
                *seen = (p, now);
            } else if now.duration_since(seen.1) > self.timeout {
                alive = false;
            }
        }
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::snapshot::{Protocol, ServiceSpec};
    use sluice_dataplane::testkit::spec::{backend, dsr_service, ext_port, snapshot};

    fn snap(services: Vec<ServiceSpec>) -> Snapshot {
        snapshot(vec![ext_port()], services)
    }

    /// Service `s{id}` at `vip:port` with a backend per weight.
    fn service(id: u16, vip: [u8; 4], port: u16, weights: &[u32]) -> ServiceSpec {
        let backends =
            weights.iter().enumerate().map(|(i, &w)| backend([198, 18, 0, 10 + i as u8], w)).collect();
        ServiceSpec {
            id: Some(id),
            table_size: 251,
            ..dsr_service(&format!("s{id}"), vip, port, Protocol::Tcp, backends)
        }
    }

    #[test]
    fn a_vip_is_announced_while_any_of_its_services_has_a_backend() {
        let s = snap(vec![
            service(1, [198, 18, 10, 1], 80, &[1, 0]),
            service(2, [198, 18, 10, 1], 53, &[0]),
            service(3, [198, 18, 10, 2], 80, &[0]),
            service(4, [198, 18, 10, 3], 80, &[0]),
        ]);
        let policy = |name: &str| if name == "s4" { Policy::Always } else { Policy::Healthy };
        let got = standing(&s, policy, (true, true));
        let ip = |d: u8| IpAddr::from([198, 18, 10, d]);
        assert_eq!(got[&ip(1)], Ok(()));
        assert_eq!(got[&ip(2)], Err(Withdrawn::NoBackend));
        assert_eq!(got[&ip(3)], Ok(()), "always");
        let stalled = standing(&s, policy, (false, true));
        assert!(stalled.values().all(|v| *v == Err(Withdrawn::WorkersStalled)), "{stalled:?}");
        let joining = standing(&s, policy, (true, false));
        assert!(joining.values().all(|v| *v == Err(Withdrawn::Joining)), "{joining:?}");
    }

    #[test]
    fn each_include_names_each_vip_of_its_family_once() {
        let vips = [IpAddr::from([198, 18, 10, 1]), "2001:db8::10".parse().unwrap()];
        let (v4, v6) = (bird_include(vips, false), bird_include(vips, true));
        let routes =
            |t: &str| t.lines().filter(|l| l.starts_with("route")).map(String::from).collect::<Vec<_>>();
        assert_eq!(routes(&v4), ["route 198.18.10.1/32 blackhole;"], "{v4}");
        assert_eq!(routes(&v6), ["route 2001:db8::10/128 blackhole;"], "{v6}");
        assert!(routes(&bird_include([], false)).is_empty());
    }

    #[test]
    fn a_worker_that_stops_polling_stops_the_heartbeat() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Heartbeat::new(Duration::from_millis(500));
        assert!(h.beat(&[1, 1], ms(0)));
        assert!(h.beat(&[5, 1], ms(400)), "worker 1 still within the timeout");
        assert!(!h.beat(&[9, 1], ms(600)), "worker 1 stood still 600 ms");
        assert!(h.beat(&[12, 2], ms(700)), "it moved again");
    }
}
