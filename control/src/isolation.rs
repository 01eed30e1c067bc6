//! Resource isolation, the control thread's half: the overload check that switches
//! `on_overload` limits on and off, and the rebalancing of each worker's share of every
//! service's rates. The workers' half (token buckets) is `sluice_dataplane::limit`.
//!
//! Every `interval` (5 s by default, TGW's period) the control thread measures the appliance's
//! load over the interval just ended: the busiest worker's busy ratio (time in polls that
//! received packets), the packet rate received on all ports, and the live sessions. Isolation
//! goes on at the first check where any measure reaches its high-water mark, and off once every
//! measure has stayed under its low-water mark for `calm_checks` checks in a row.

use log::info;
use sluice_dataplane::limit::{split, Isolation, MAX_WORKERS, RATES};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::WorkerStats;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Marks on the appliance's load; a measure left out is not checked.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// The busiest worker's busy ratio, 0 to 1.
    pub busy: Option<f64>,
    /// Packets per second received on all ports.
    pub packets_per_second: Option<u64>,
    /// Live sessions.
    pub sessions: Option<u64>,
}

/// The `isolation` section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationSpec {
    pub interval: Duration,
    pub high: Load,
    pub low: Load,
    pub calm_checks: u32,
}

impl Default for IsolationSpec {
    fn default() -> Self {
        IsolationSpec {
            interval: Duration::from_secs(5),
            high: Load { busy: Some(0.85), packets_per_second: None, sessions: None },
            low: Load { busy: Some(0.85 * 0.8), packets_per_second: None, sessions: None },
            calm_checks: 2,
        }
    }
}

/// The load measured over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    pub busy: f64,
    pub packets_per_second: u64,
    pub sessions: u64,
}

impl Measured {
    /// The measures that reach their marks in `marks`, described ("packets_per_second 20113
    /// >= 5000").
    fn reaching(&self, marks: &Load) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = marks.busy.filter(|&m| self.busy >= m) {
            out.push(format!("busy {:.2} >= {m:.2}", self.busy));
        }
        if let Some(m) = marks.packets_per_second.filter(|&m| self.packets_per_second >= m) {
            out.push(format!("packets_per_second {} >= {m}", self.packets_per_second));
        }
        if let Some(m) = marks.sessions.filter(|&m| self.sessions >= m) {
            out.push(format!("sessions {} >= {m}", self.sessions));
        }
        out
    }
}

/// A switch of the isolation state, with why.
#[derive(Debug, Clone, PartialEq)]
pub enum Switch {
    On(String),
    Off(String),
}

/// The overload check's state machine (pure: measures in, switches out).
#[derive(Debug, Clone)]
pub struct Detector {
    spec: IsolationSpec,
    active: bool,
    calm: u32,
    checks: u64,
}

impl Detector {
    pub fn new(spec: IsolationSpec) -> Detector {
        Detector { spec, active: false, calm: 0, checks: 0 }
    }

    pub fn spec(&self) -> &IsolationSpec {
        &self.spec
    }

    /// A new spec (an applied config); the state carries over.
    pub fn set_spec(&mut self, spec: IsolationSpec) {
        self.spec = spec;
    }

    pub fn active(&self) -> bool {
        self.active
    }

    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// One check of the load over the interval just ended.
    pub fn check(&mut self, m: &Measured) -> Option<Switch> {
        self.checks += 1;
        if !self.active {
            let why = m.reaching(&self.spec.high);
            if why.is_empty() {
                return None;
            }
            self.active = true;
            self.calm = 0;
            return Some(Switch::On(why.join(", ")));
        }
        let above_low = m.reaching(&self.spec.low);
        if !above_low.is_empty() {
            self.calm = 0;
            return None;
        }
        self.calm += 1;
        if self.calm < self.spec.calm_checks {
            return None;
        }
        self.active = false;
        self.calm = 0;
        Some(Switch::Off(format!("under the low-water marks for {} check(s)", self.spec.calm_checks)))
    }
}

/// What the metrics endpoint reads of the overload check.
#[derive(Debug, Default)]
pub struct IsolationState {
    pub active: AtomicBool,
    pub checks: AtomicU64,
    pub switched_on: AtomicU64,
    pub switched_off: AtomicU64,
    /// The last check's measures (busy as `f64` bits).
    pub busy_bits: AtomicU64,
    pub packets_per_second: AtomicU64,
    pub sessions: AtomicU64,
}

/// The control thread's overload check: reads the workers' counters every interval, runs the
/// detector, sets the workers' flag, logs and records every switch.
pub struct Monitor {
    pub detector: Detector,
    pub state: std::sync::Arc<IsolationState>,
    /// Per worker: busy ns and packets received at the previous check.
    last: Vec<(u64, u64)>,
    last_at: u64,
}

impl Monitor {
    pub fn new(spec: IsolationSpec, workers: usize, now_ns: u64) -> Monitor {
        Monitor {
            detector: Detector::new(spec),
            state: Default::default(),
            last: vec![(0, 0); workers],
            last_at: now_ns,
        }
    }

    /// Whether a check is due at `now_ns`.
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_at) >= self.detector.spec().interval.as_nanos() as u64
    }

    /// The load since the previous check, from the workers' counters.
    pub fn measure(&mut self, stats: &[std::sync::Arc<WorkerStats>], sessions: u64, now_ns: u64) -> Measured {
        let elapsed = now_ns.saturating_sub(self.last_at).max(1);
        self.last_at = now_ns;
        let mut m = Measured { sessions, ..Measured::default() };
        let mut packets = 0;
        self.last.resize(stats.len(), (0, 0));
        for (w, last) in stats.iter().zip(self.last.iter_mut()) {
            let busy = w.busy_ns.get();
            let rx: u64 = w.ports.iter().map(|p| p.rx_packets.get()).sum();
            m.busy = m.busy.max((busy.saturating_sub(last.0) as f64 / elapsed as f64).min(1.0));
            packets += rx.saturating_sub(last.1);
            *last = (busy, rx);
        }
        m.packets_per_second = (u128::from(packets) * 1_000_000_000 / u128::from(elapsed)) as u64;
        m
    }

    /// A check: measure, decide, tell the workers. The switch, if any.
    pub fn check(
        &mut self,
        stats: &[std::sync::Arc<WorkerStats>],
        sessions: u64,
        now_ns: u64,
        isolation: &Isolation,
    ) -> Option<Switch> {
        let m = self.measure(stats, sessions, now_ns);
        let s = &self.state;
        s.busy_bits.store(m.busy.to_bits(), Relaxed);
        s.packets_per_second.store(m.packets_per_second, Relaxed);
        s.sessions.store(m.sessions, Relaxed);
        let switch = self.detector.check(&m);
        s.checks.store(self.detector.checks(), Relaxed);
        match &switch {
            Some(Switch::On(why)) => {
                isolation.set_overloaded(true);
                s.switched_on.fetch_add(1, Relaxed);
                info!("isolation on (check {}): {why}; on_overload limits apply", self.detector.checks());
            }
            Some(Switch::Off(why)) => {
                isolation.set_overloaded(false);
                s.switched_off.fetch_add(1, Relaxed);
                info!("isolation off (check {}): {why}", self.detector.checks());
            }
            None => {}
        }
        s.active.store(self.detector.active(), Relaxed);
        switch
    }
}

/// How often the workers' shares follow their demand.
pub const REBALANCE: Duration = Duration::from_millis(500);

/// Rebalances each worker's share of every limited rate from what each was offered since the
/// previous rebalance ([`split`]: max-min fair, with a floor).
#[derive(Debug, Default)]
pub struct Rebalancer {
    /// Offered units at the previous rebalance, by (worker, service id, rate).
    last: std::collections::HashMap<(usize, u16, u8), u64>,
    last_at: u64,
}

impl Rebalancer {
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_at) >= REBALANCE.as_nanos() as u64
    }

    /// Sets every worker's share of every rate limit of `snap`'s services. Returns how many
    /// (service, rate) pairs it split.
    pub fn rebalance(
        &mut self,
        snap: &Snapshot,
        stats: &[std::sync::Arc<WorkerStats>],
        isolation: &Isolation,
        now_ns: u64,
    ) -> usize {
        let elapsed = now_ns.saturating_sub(self.last_at).max(1);
        self.last_at = now_ns;
        let n = stats.len().min(isolation.workers()).min(MAX_WORKERS);
        let mut demand = [0u64; MAX_WORKERS];
        let mut shares = [0u64; MAX_WORKERS];
        let mut split_count = 0;
        for s in &snap.services {
            for r in RATES {
                let Some(lim) = s.limits.rate(r) else { continue };
                for (w, st) in stats[..n].iter().enumerate() {
                    let now =
                        st.limits.get(sluice_dataplane::limit::offered_index(s.id, r)).map_or(0, |c| c.get());
                    let before = self.last.insert((w, s.id, r as u8), now).unwrap_or(now);
                    let per_s = u128::from(now.saturating_sub(before)) * 1_000_000_000 / u128::from(elapsed);
                    demand[w] = per_s.min(u128::from(u64::MAX)) as u64;
                }
                split(lim.value, &demand[..n], &mut shares[..n]);
                for (w, &share) in shares[..n].iter().enumerate() {
                    isolation.set_share(w, s.id, r, share);
                }
                split_count += 1;
            }
        }
        split_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(high_pps: u64, low_pps: u64, calm: u32) -> IsolationSpec {
        IsolationSpec {
            interval: Duration::from_secs(5),
            high: Load { busy: None, packets_per_second: Some(high_pps), sessions: None },
            low: Load { busy: None, packets_per_second: Some(low_pps), sessions: None },
            calm_checks: calm,
        }
    }

    fn pps(n: u64) -> Measured {
        Measured { packets_per_second: n, ..Default::default() }
    }

    #[test]
    fn on_at_the_first_check_past_high_off_after_calm_checks_under_low() {
        let mut d = Detector::new(spec(5000, 4000, 2));
        assert_eq!(d.check(&pps(4999)), None, "under the high mark: stays off");
        assert!(
            matches!(d.check(&pps(5000)), Some(Switch::On(why)) if why.contains("packets_per_second 5000"))
        );
        assert!(d.active());
        assert_eq!(d.check(&pps(4500)), None, "between the marks: stays on");
        assert_eq!(d.check(&pps(3000)), None, "one calm check of two");
        assert_eq!(d.check(&pps(4500)), None, "not calm: the count starts over");
        assert_eq!(d.check(&pps(3000)), None);
        assert!(matches!(d.check(&pps(3000)), Some(Switch::Off(_))));
        assert!(!d.active());
        assert_eq!(d.checks(), 7);
    }

    #[test]
    fn any_measure_past_its_mark_engages_and_all_must_be_calm() {
        let s = IsolationSpec {
            interval: Duration::from_secs(1),
            high: Load { busy: Some(0.9), packets_per_second: None, sessions: Some(1000) },
            low: Load { busy: Some(0.5), packets_per_second: None, sessions: Some(500) },
            calm_checks: 1,
        };
        let mut d = Detector::new(s);
        let m = |busy, sessions| Measured { busy, sessions, packets_per_second: 1 << 40 };
        assert_eq!(d.check(&m(0.2, 999)), None, "an unchecked measure never engages");
        assert!(matches!(d.check(&m(0.2, 1000)), Some(Switch::On(w)) if w.starts_with("sessions")));
        assert_eq!(d.check(&m(0.6, 10)), None, "busy still above its low mark");
        assert!(matches!(d.check(&m(0.4, 10)), Some(Switch::Off(_))));
        assert!(matches!(d.check(&m(0.95, 0)), Some(Switch::On(w)) if w.starts_with("busy")));
    }

    #[test]
    fn the_monitor_measures_rates_from_the_counters() {
        let stats =
            vec![std::sync::Arc::new(WorkerStats::default()), std::sync::Arc::new(WorkerStats::default())];
        let iso = Isolation::new(2);
        let mut m = Monitor::new(spec(5000, 4000, 1), 2, 0);
        // Over 2 s: worker 0 received 8000 packets on two ports and was busy 1.5 s; worker 1
        // 4000 packets, busy 0.2 s.
        stats[0].ports[0].rx_packets.add(6000);
        stats[0].ports[1].rx_packets.add(2000);
        stats[0].busy_ns.add(1_500_000_000);
        stats[1].ports[0].rx_packets.add(4000);
        stats[1].busy_ns.add(200_000_000);
        assert!(!m.due(1_000_000_000) && m.due(5_000_000_000));
        let got = m.measure(&stats, 7, 2_000_000_000);
        assert_eq!(got, Measured { busy: 0.75, packets_per_second: 6000, sessions: 7 });
        // The next 2 s: nothing: under the marks; isolation was never on.
        assert_eq!(m.check(&stats, 7, 4_000_000_000, &iso), None);
        assert!(!iso.overloaded());
        stats[1].ports[0].rx_packets.add(20_000);
        assert!(matches!(m.check(&stats, 7, 6_000_000_000, &iso), Some(Switch::On(_))));
        assert!(iso.overloaded());
        assert!(m.state.active.load(Relaxed));
        assert_eq!(m.state.packets_per_second.load(Relaxed), 10_000);
        assert!(matches!(m.check(&stats, 7, 8_000_000_000, &iso), Some(Switch::Off(_))));
        assert!(!iso.overloaded());
        assert_eq!((m.state.switched_on.load(Relaxed), m.state.switched_off.load(Relaxed)), (1, 1));
    }

    #[test]
    fn shares_follow_what_each_worker_was_offered() {
        use sluice_dataplane::limit::{offered_index, Limit, Limits, Rate};
        use sluice_dataplane::snapshot::{BackendSpec, PortSpec, Protocol, ServiceSpec, SnapshotSpec};
        let mut svc = ServiceSpec::dsr(
            "flooded",
            [198, 18, 10, 1].into(),
            53,
            Protocol::Udp,
            vec![BackendSpec::new([198, 18, 0, 11].into(), 1)],
        );
        svc.limits =
            Limits { rates: [Some(Limit { value: 1000, on_overload: false }), None, None], sessions: None };
        svc.id = Some(9);
        let port = PortSpec {
            name: "ext".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addresses: vec![sluice_dataplane::flow::Prefix::new([198, 18, 0, 1], 16)],
            mtu: 1500,
            vlan: None,
            gateways: vec![],
            neighbors: vec![],
            kernel: None,
        };
        let snap = Snapshot::build(
            &SnapshotSpec {
                generation: 1,
                ports: vec![port],
                tunnel_sources: vec![],
                clusters: vec![],
                services: vec![svc],
            },
            None,
        )
        .unwrap();
        let stats =
            vec![std::sync::Arc::new(WorkerStats::default()), std::sync::Arc::new(WorkerStats::default())];
        let iso = Isolation::new(2);
        let mut r = Rebalancer::default();
        assert_eq!(r.rebalance(&snap, &stats, &iso, 0), 1);
        // Half a second: worker 0 offered 5000 packets (10 000/s), worker 1 40 (80/s).
        stats[0].limits[offered_index(9, Rate::Packets)].add(5000);
        stats[1].limits[offered_index(9, Rate::Packets)].add(40);
        assert!(r.due(500_000_000));
        r.rebalance(&snap, &stats, &iso, 500_000_000);
        assert_eq!((iso.share(0, 9, Rate::Packets, 1000), iso.share(1, 9, Rate::Packets, 1000)), (900, 100));
        // Then the flood moves to worker 1.
        stats[1].limits[offered_index(9, Rate::Packets)].add(5000);
        r.rebalance(&snap, &stats, &iso, 1_000_000_000);
        assert_eq!((iso.share(0, 9, Rate::Packets, 1000), iso.share(1, 9, Rate::Packets, 1000)), (62, 938));
    }
}
