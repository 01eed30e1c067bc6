//! Sums the workers' counters (at read time, never on the packet path) and renders them.

use sluice_dataplane::stats::{DropReason, WorkerStats};
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub ports: Vec<PortTotals>,
    pub drops: Vec<u64>,
    pub tunneled: u64,
    pub nat_replies: u64,
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub icmp_echo_replies: u64,
    pub neighbors_learned: u64,
    pub sessions_created: u64,
    pub session_hits: u64,
    pub sessions_fallback: u64,
    pub sessions_remapped: u64,
    pub resets_sent: u64,
    pub unreachables_sent: u64,
    /// SYN proxy: cookies sent, valid ACKs, backend handshakes completed, backend failures,
    /// segments held.
    pub synproxy_cookies: u64,
    pub synproxy_acks_valid: u64,
    pub synproxy_handshakes: u64,
    pub synproxy_backend_failures: u64,
    pub synproxy_held: u64,
    /// SYN proxy: backends reset because they answered for an older connection.
    pub synproxy_backend_resets: u64,
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
                p.rx_packets += pc.rx_packets.get();
                p.rx_bytes += pc.rx_bytes.get();
                p.tx_packets += pc.tx_packets.get();
                p.tx_bytes += pc.tx_bytes.get();
            }
            for (d, c) in t.drops.iter_mut().zip(&w.drops) {
                *d += c.get();
            }
            t.tunneled += w.tunneled.get();
            t.nat_replies += w.nat_replies.get();
            t.arp_replies += w.arp_replies.get();
            t.arp_requests += w.arp_requests.get();
            t.icmp_echo_replies += w.icmp_echo_replies.get();
            t.neighbors_learned += w.neighbors_learned.get();
            t.sessions_created += w.sessions_created.get();
            t.session_hits += w.session_hits.get();
            t.sessions_fallback += w.sessions_fallback.get();
            t.sessions_remapped += w.sessions_remapped.get();
            t.resets_sent += w.resets_sent.get();
            t.unreachables_sent += w.unreachables_sent.get();
            t.synproxy_cookies += w.synproxy.cookies_sent.get();
            t.synproxy_acks_valid += w.synproxy.acks_valid.get();
            t.synproxy_handshakes += w.synproxy.handshakes.get();
            t.synproxy_backend_failures += w.synproxy.backend_failures.get();
            t.synproxy_held += w.synproxy.held.get();
            t.synproxy_backend_resets += w.synproxy.backend_resets.get();
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
            self.tunneled,
            self.dropped(),
            self.sessions_live,
            self.sessions_created,
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
            rate(self.tunneled, earlier.tunneled),
            rate(self.dropped(), earlier.dropped()),
            100.0 * self.busy_polls.saturating_sub(earlier.busy_polls) as f64 / polls as f64,
        )
    }

    /// Every counter, one `name{labels} value` line each (Prometheus text style).
    pub fn render(&self, port_names: &[String]) -> String {
        let mut s = String::new();
        for (p, name) in self.ports.iter().zip(port_names) {
            let _ = writeln!(s, "sluice_port_rx_packets_total{{port=\"{name}\"}} {}", p.rx_packets);
            let _ = writeln!(s, "sluice_port_rx_bytes_total{{port=\"{name}\"}} {}", p.rx_bytes);
            let _ = writeln!(s, "sluice_port_tx_packets_total{{port=\"{name}\"}} {}", p.tx_packets);
            let _ = writeln!(s, "sluice_port_tx_bytes_total{{port=\"{name}\"}} {}", p.tx_bytes);
        }
        let _ = writeln!(s, "sluice_tunneled_packets_total {}", self.tunneled);
        let _ = writeln!(s, "sluice_nat_replies_total {}", self.nat_replies);
        let _ = writeln!(s, "sluice_arp_replies_total {}", self.arp_replies);
        let _ = writeln!(s, "sluice_arp_requests_total {}", self.arp_requests);
        let _ = writeln!(s, "sluice_icmp_echo_replies_total {}", self.icmp_echo_replies);
        let _ = writeln!(s, "sluice_neighbors_learned_total {}", self.neighbors_learned);
        let _ = writeln!(s, "sluice_sessions_created_total {}", self.sessions_created);
        let _ = writeln!(s, "sluice_session_hits_total {}", self.session_hits);
        let _ = writeln!(s, "sluice_sessions_fallback_total {}", self.sessions_fallback);
        let _ = writeln!(s, "sluice_sessions_remapped_total {}", self.sessions_remapped);
        let _ = writeln!(s, "sluice_resets_sent_total {}", self.resets_sent);
        let _ = writeln!(s, "sluice_unreachables_sent_total {}", self.unreachables_sent);
        let _ = writeln!(s, "sluice_synproxy_cookies_sent_total {}", self.synproxy_cookies);
        let _ = writeln!(s, "sluice_synproxy_acks_valid_total {}", self.synproxy_acks_valid);
        let _ = writeln!(s, "sluice_synproxy_handshakes_total {}", self.synproxy_handshakes);
        let _ = writeln!(s, "sluice_synproxy_backend_failures_total {}", self.synproxy_backend_failures);
        let _ = writeln!(s, "sluice_synproxy_held_total {}", self.synproxy_held);
        let _ = writeln!(s, "sluice_synproxy_backend_resets_total {}", self.synproxy_backend_resets);
        let _ = writeln!(s, "sluice_sessions_expired_total {}", self.sessions_expired);
        let _ = writeln!(s, "sluice_sessions {}", self.sessions_live);
        for r in DropReason::ALL {
            let _ = writeln!(s, "sluice_drops_total{{reason=\"{}\"}} {}", r.label(), self.drops[*r as usize]);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
