//! Sums the workers' counters (at read time, never on the packet path) and renders them.

use crate::ctl::counters::{Counters, Sample};
pub use sluice_dataplane::stats::PortTotals;
use sluice_dataplane::stats::{DropReason, EventTotals, Metric, SynProxyTotals, WorkerStats};
use std::fmt::Write;
use std::sync::Arc;

/// The sweep's counters (the control thread's, not the workers'; see [`Totals`]).
pub const SESSIONS_LIVE: Metric = Metric {
    name: "sluice_sessions",
    help: "Live sessions at the control thread's last full sweep of the session table.",
};
pub const SESSIONS_EXPIRED: Metric =
    Metric { name: "sluice_sessions_expired_total", help: "Sessions the sweep removed as idle." };

/// The workers' counters summed, each table's sums under its own name (`stats.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub ports: Vec<PortTotals>,
    pub drops: Vec<u64>,
    /// The event counters: `events.tunneled`, `events.sessions_created`, ...
    pub events: EventTotals,
    /// SYN proxy: cookies sent, valid ACKs, backend handshakes completed, backend failures,
    /// segments held, backends reset.
    pub synproxy: SynProxyTotals,
    /// From the control thread's sweep, not the workers: live sessions at the last full pass
    /// (or exact at exit), and sessions expired so far.
    pub sessions_live: u64,
    pub sessions_expired: u64,
    pub polls: u64,
    pub busy_polls: u64,
}

impl Totals {
    pub fn sum(workers: &[Arc<WorkerStats>], n_ports: usize) -> Totals {
        let mut t = Totals {
            ports: vec![PortTotals::default(); n_ports],
            drops: vec![0; DropReason::COUNT],
            ..Totals::default()
        };
        for w in workers {
            for (p, pc) in t.ports.iter_mut().zip(&w.ports) {
                p.add(pc);
            }
            for (d, c) in t.drops.iter_mut().zip(&w.drops) {
                *d += c.get();
            }
            t.events.add(w);
            t.synproxy.add(&w.synproxy);
            t.polls += w.polls.get();
            t.busy_polls += w.busy_polls.get();
        }
        t
    }

    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// A short line for the periodic log.
    pub fn one_line(&self) -> String {
        let rx: u64 = self.ports.iter().map(|p| p.rx_packets).sum();
        let tx: u64 = self.ports.iter().map(|p| p.tx_packets).sum();
        let mut s = format!(
            "rx {rx} tx {tx} tunneled {} dropped {} sessions {} (+{} -{})",
            self.events.tunneled,
            self.dropped(),
            self.sessions_live,
            self.events.sessions_created,
            self.sessions_expired
        );
        let mut top: Vec<(u64, &str)> = DropReason::ALL
            .iter()
            .map(|r| (self.drops[*r as usize], r.label()))
            .filter(|(n, _)| *n > 0)
            .collect();
        top.sort_by(|a, b| b.cmp(a));
        if !top.is_empty() {
            s.push_str(" (");
            for (i, (n, l)) in top.iter().take(4).enumerate() {
                let _ = write!(s, "{}{l} {n}", if i > 0 { ", " } else { "" });
            }
            s.push(')');
        }
        s
    }

    /// Packet rates between `earlier` and these totals, `elapsed` apart:
    /// `rx_pps=.. tx_pps=.. tunneled_pps=.. drop_pps=.. busy=..%`.
    pub fn rates_since(&self, earlier: &Totals, elapsed: std::time::Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let sum = |t: &Totals, f: fn(&PortTotals) -> u64| t.ports.iter().map(f).sum::<u64>();
        let polls = self.polls.saturating_sub(earlier.polls).max(1);
        format!(
            "rx_pps={:.0} tx_pps={:.0} tunneled_pps={:.0} drop_pps={:.0} busy={:.1}%",
            rate(sum(self, |p| p.rx_packets), sum(earlier, |p| p.rx_packets)),
            rate(sum(self, |p| p.tx_packets), sum(earlier, |p| p.tx_packets)),
            rate(self.events.tunneled, earlier.events.tunneled),
            rate(self.dropped(), earlier.dropped()),
            100.0 * self.busy_polls.saturating_sub(earlier.busy_polls) as f64 / polls as f64,
        )
    }

    /// Every counter, one `name{labels} value` line each (Prometheus text style).
    pub fn render(&self, port_names: &[String]) -> String {
        use crate::ctl::View;
        self.counters(port_names).text()
    }

    /// Every counter with its labels: `sluicectl counters`.
    pub fn counters(&self, port_names: &[String]) -> Counters {
        let mut c = Vec::new();
        for (p, name) in self.ports.iter().zip(port_names) {
            for (m, n) in p.each() {
                c.push(Sample::new(m.port.name, Some(("port", name)), n));
            }
        }
        for (m, n) in self.events.each().chain(self.synproxy.each()) {
            c.push(Sample::new(m.name, None, n));
        }
        c.push(Sample::new(SESSIONS_EXPIRED.name, None, self.sessions_expired));
        c.push(Sample::new(SESSIONS_LIVE.name, None, self.sessions_live));
        for r in DropReason::ALL {
            c.push(Sample::new(
                DropReason::METRIC.name,
                Some(("reason", r.label())),
                self.drops[*r as usize],
            ));
        }
        Counters { counters: c }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::stats::{PortCounters, SynProxyCounters};

    #[test]
    fn sums_across_workers() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.ports[1].rx_packets.add(3);
        b.ports[1].rx_packets.add(4);
        a.count_drop(DropReason::NotForUs, 2);
        b.count_drop(DropReason::NotForUs, 5);
        b.tunneled.add(9);
        let t = Totals::sum(&[a, b], 2);
        assert_eq!(t.ports[1].rx_packets, 7);
        assert_eq!(t.drops[DropReason::NotForUs as usize], 7);
        assert_eq!(t.dropped(), 7);
        let text = t.render(&["ext".into(), "int".into()]);
        assert!(text.contains("sluice_port_rx_packets_total{port=\"int\"} 7\n"));
        assert!(text.contains("sluice_drops_total{reason=\"not_for_us\"} 7\n"));
        assert!(text.contains("sluice_tunneled_packets_total 9\n"));
        assert_eq!(t.one_line(), "rx 7 tx 0 tunneled 9 dropped 7 sessions 0 (+0 -0) (not_for_us 7)");
        let earlier = Totals {
            ports: vec![PortTotals::default(); 2],
            drops: vec![0; DropReason::COUNT],
            ..Totals::default()
        };
        assert_eq!(
            t.rates_since(&earlier, std::time::Duration::from_millis(500)),
            "rx_pps=14 tx_pps=0 tunneled_pps=18 drop_pps=14 busy=0.0%"
        );
    }

    /// Every counter of every table gets its line, once, with its sum over the workers.
    #[test]
    fn renders_every_table_counter() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        for w in [&a, &b] {
            for (i, c) in w.counters().into_iter().chain(w.synproxy.counters()).enumerate() {
                c.add(100 + i as u64);
            }
            for (i, c) in w.ports[0].counters().into_iter().enumerate() {
                c.add(10 + i as u64);
            }
        }
        let text = Totals::sum(&[a, b], 1).render(&["ext".into()]);
        for (i, m) in WorkerStats::METRICS.iter().chain(SynProxyCounters::METRICS).enumerate() {
            let line = format!("{} {}\n", m.name, 2 * (100 + i));
            assert_eq!(text.matches(&line).count(), 1, "{line}");
        }
        for (i, m) in PortCounters::METRICS.iter().enumerate() {
            let line = format!("{}{{port=\"ext\"}} {}\n", m.port.name, 2 * (10 + i));
            assert_eq!(text.matches(&line).count(), 1, "{line}");
        }
        let lines = 4 + WorkerStats::METRICS.len() + SynProxyCounters::METRICS.len() + 2 + DropReason::COUNT;
        assert_eq!(text.lines().count(), lines);
    }
}
