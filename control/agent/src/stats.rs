//! The agent's counters: relaxed atomics bumped by the packet threads, printed in the
//! Prometheus text form (`sluice_agent_<name>{labels} <value>`) when the agent stops.

use crate::tunnel::{DropReason, Family, PROTOCOLS};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `proto` label of each of [`PROTOCOLS`]: IPv4 in IP (4), IPv6 in IP (41), GRE (47).
const RECEIVED_LABELS: [&str; PROTOCOLS.len()] = ["ipip", "ipv6", "gre"];

/// Counters of one TUN.
#[derive(Debug, Default)]
pub struct TunStats {
    /// Tunneled packets stripped and written into this TUN.
    pub decapsulated_packets: AtomicU64,
    pub decapsulated_bytes: AtomicU64,
    /// Packets read out of this TUN (what the local kernel sent).
    pub read_packets: AtomicU64,
    /// Of those, tunneled back to an appliance.
    pub replies_tunneled: AtomicU64,
    pub replies_bytes: AtomicU64,
    /// Of the replies tunneled, fragments of TCP/UDP datagrams.
    pub replies_fragments: AtomicU64,
    /// Of the replies tunneled, ICMP errors about a flow's packet.
    pub replies_icmp_errors: AtomicU64,
    /// Later fragments held because their first had not come yet.
    pub fragments_held: AtomicU64,
}

/// Every counter of the agent.
#[derive(Debug)]
pub struct Stats {
    /// (TUN name, its counters), in the agent's TUN order.
    pub tuns: Vec<(String, TunStats)>,
    /// Tunneled packets read, by underlay (IPv4, IPv6) and outer protocol (of [`PROTOCOLS`]).
    received: [[AtomicU64; PROTOCOLS.len()]; 2],
    /// Flows remembered for the first time (not refreshes).
    pub flows_remembered: AtomicU64,
    /// New flows not remembered because the flow memory was full.
    pub flows_not_remembered: AtomicU64,
    pub flows_expired: AtomicU64,
    /// Tunnel-path probes taken out of a tunnel (consumed, their nonce kept to echo), and
    /// those whose nonce was not kept (too many tunnels).
    pub probes_echoed: AtomicU64,
    pub probes_not_kept: AtomicU64,
    /// Socket or TUN read errors.
    pub read_errors: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// Adds one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl Stats {
    pub fn new(tun_names: &[String]) -> Stats {
        Stats {
            tuns: tun_names.iter().map(|n| (n.clone(), TunStats::default())).collect(),
            received: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            flows_remembered: AtomicU64::new(0),
            flows_not_remembered: AtomicU64::new(0),
            flows_expired: AtomicU64::new(0),
            probes_echoed: AtomicU64::new(0),
            probes_not_kept: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The count of tunneled packets read over the underlay of `family` with outer protocol
    /// `PROTOCOLS[protocol]`.
    pub fn received(&self, family: Family, protocol: usize) -> &AtomicU64 {
        &self.received[family as usize][protocol]
    }

    pub fn tun(&self, i: usize) -> &TunStats {
        &self.tuns[i].1
    }

    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize]);
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Ordering::Relaxed)
    }

    /// Every counter, one per line; `flows` is the number of flows remembered now.
    pub fn render(&self, flows: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        for family in [Family::V4, Family::V6] {
            let underlay = if family == Family::V4 { "ipv4" } else { "ipv6" };
            for (i, proto) in RECEIVED_LABELS.iter().enumerate() {
                let n = get(self.received(family, i));
                let _ = writeln!(
                    s,
                    "sluice_agent_received_packets_total{{underlay=\"{underlay}\",proto=\"{proto}\"}} {n}"
                );
            }
        }
        for (name, t) in &self.tuns {
            let rows = [
                ("decapsulated_packets_total", &t.decapsulated_packets),
                ("decapsulated_bytes_total", &t.decapsulated_bytes),
                ("tun_read_packets_total", &t.read_packets),
                ("replies_tunneled_total", &t.replies_tunneled),
                ("replies_tunneled_bytes_total", &t.replies_bytes),
                ("replies_fragments_total", &t.replies_fragments),
                ("replies_icmp_errors_total", &t.replies_icmp_errors),
                ("reply_fragments_held_total", &t.fragments_held),
            ];
            for (metric, c) in rows {
                let _ = writeln!(s, "sluice_agent_{metric}{{tun=\"{name}\"}} {}", get(c));
            }
        }
        let _ = writeln!(s, "sluice_agent_flows {flows}");
        let _ = writeln!(s, "sluice_agent_flows_remembered_total {}", get(&self.flows_remembered));
        let _ = writeln!(s, "sluice_agent_flows_not_remembered_total {}", get(&self.flows_not_remembered));
        let _ = writeln!(s, "sluice_agent_flows_expired_total {}", get(&self.flows_expired));
        let _ = writeln!(s, "sluice_agent_tunnel_probes_echoed_total {}", get(&self.probes_echoed));
        let _ = writeln!(s, "sluice_agent_tunnel_probes_not_kept_total {}", get(&self.probes_not_kept));
        let _ = writeln!(s, "sluice_agent_read_errors_total {}", get(&self.read_errors));
        for r in DropReason::ALL {
            let _ = writeln!(s, "sluice_agent_drops_total{{reason=\"{}\"}} {}", r.label(), self.drops(r));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_and_every_drop_reason() {
        let s = Stats::new(&["sl-phys".to_string(), "sl-v100".to_string()]);
        add(&s.tun(1).decapsulated_packets, 42);
        bump(&s.tun(1).replies_tunneled);
        bump(&s.tun(1).replies_icmp_errors);
        s.count_drop(DropReason::NoFlow);
        s.count_drop(DropReason::NoFlow);
        let text = s.render(3);
        assert!(text.contains("sluice_agent_decapsulated_packets_total{tun=\"sl-v100\"} 42\n"), "{text}");
        assert!(text.contains("sluice_agent_decapsulated_packets_total{tun=\"sl-phys\"} 0\n"));
        assert!(text.contains("sluice_agent_replies_tunneled_total{tun=\"sl-v100\"} 1\n"));
        assert!(text.contains("sluice_agent_replies_icmp_errors_total{tun=\"sl-v100\"} 1\n"));
        assert!(text.contains("sluice_agent_replies_fragments_total{tun=\"sl-v100\"} 0\n"));
        assert!(text.contains("sluice_agent_reply_fragments_held_total{tun=\"sl-phys\"} 0\n"));
        assert!(text.contains("sluice_agent_drops_total{reason=\"no_flow\"} 2\n"));
        assert!(text.contains("sluice_agent_flows 3\n"));
        assert!(text.contains("sluice_agent_tunnel_probes_echoed_total 0\n"));
        bump(s.received(Family::V6, 1));
        let text = s.render(3);
        assert!(text.contains("sluice_agent_received_packets_total{underlay=\"ipv6\",proto=\"ipv6\"} 1\n"));
        assert!(text.contains("sluice_agent_received_packets_total{underlay=\"ipv4\",proto=\"gre\"} 0\n"));
        for r in DropReason::ALL {
            assert!(
                text.contains(&format!("sluice_agent_drops_total{{reason=\"{}\"}} ", r.label())),
                "{r:?}"
            );
        }
    }
}
