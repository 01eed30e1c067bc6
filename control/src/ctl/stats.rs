//! `sluicectl stats`: packets, bytes and connections made per service and backend, and drops
//! by reason, as totals (sluiced's counters since it started) or, with `--rate`, per second
//! between two readings (`sluicectl` reads twice, `--interval` apart, and divides the
//! differences by the difference of sluiced's uptime between the readings).

use super::View;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Totals are `Stats<u64>`; rates (per second) `Stats<f64>`, with the same field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats<T> {
    /// sluiced's uptime at the reading, in milliseconds.
    pub uptime_ms: u64,
    /// Rates only: the milliseconds between the two readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    pub services: Vec<ServiceStats<T>>,
    /// Packets dropped, by reason (`sluice_drops_total`'s labels).
    pub drops: BTreeMap<String, T>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats<T> {
    pub id: u16,
    pub name: String,
    pub vip: String,
    #[serde(flatten)]
    pub counts: Counts<T>,
    pub backends: Vec<BackendStats<T>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStats<T> {
    pub id: u32,
    pub label: String,
    #[serde(flatten)]
    pub counts: Counts<T>,
}

/// Packets and bytes sent toward the service or backend (tunnel headers included), and
/// connections (sessions) made to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts<T> {
    pub packets: T,
    pub bytes: T,
    pub connections: T,
}

impl Counts<u64> {
    /// Per second from `earlier` to these, `secs` apart (a counter that went back: 0).
    fn rate_since(&self, earlier: &Counts<u64>, secs: f64) -> Counts<f64> {
        let r = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        Counts {
            packets: r(self.packets, earlier.packets),
            bytes: r(self.bytes, earlier.bytes),
            connections: r(self.connections, earlier.connections),
        }
    }
}

impl Stats<u64> {
    /// The rates from `earlier` to this reading. A service or backend `earlier` did not have
    /// (added since) and every figure of a sluiced that restarted in between (its uptime went
    /// back) are 0.
    pub fn rate_since(&self, earlier: &Stats<u64>) -> Stats<f64> {
        let ms = self.uptime_ms.saturating_sub(earlier.uptime_ms);
        // No time passed (or a restart): no rate can be told.
        let secs = if ms == 0 { f64::INFINITY } else { ms as f64 / 1000.0 };
        let services = self.services.iter().map(|s| {
            let before = earlier.services.iter().find(|e| e.id == s.id);
            let backends = s.backends.iter().map(|b| {
                let then = before.and_then(|e| e.backends.iter().find(|x| x.id == b.id)).map(|x| x.counts);
                let counts = then.map_or_else(Counts::default, |t| b.counts.rate_since(&t, secs));
                BackendStats { id: b.id, label: b.label.clone(), counts }
            });
            let counts = before.map_or_else(Counts::default, |e| s.counts.rate_since(&e.counts, secs));
            ServiceStats {
                id: s.id,
                name: s.name.clone(),
                vip: s.vip.clone(),
                counts,
                backends: backends.collect(),
            }
        });
        let drops = self.drops.iter().map(|(reason, n)| {
            let then = earlier.drops.get(reason).copied().unwrap_or(*n);
            (reason.clone(), n.saturating_sub(then) as f64 / secs)
        });
        Stats {
            uptime_ms: self.uptime_ms,
            interval_ms: Some(ms),
            services: services.collect(),
            drops: drops.collect(),
        }
    }
}

/// How a figure is printed, and the unit its names get: totals as they are, rates per second
/// with one decimal.
pub trait Figure: Copy + PartialEq + Default {
    const UNIT: &'static str;
    fn show(self) -> String;
}

impl Figure for u64 {
    const UNIT: &'static str = "";
    fn show(self) -> String {
        self.to_string()
    }
}

impl Figure for f64 {
    const UNIT: &'static str = "/s";
    fn show(self) -> String {
        format!("{self:.1}")
    }
}

impl<T: Figure> Counts<T> {
    /// `packets N bytes N connections N` (rates: `packets/s N.N ...`).
    pub fn text(&self) -> String {
        let u = T::UNIT;
        format!(
            "packets{u} {} bytes{u} {} connections{u} {}",
            self.packets.show(),
            self.bytes.show(),
            self.connections.show()
        )
    }
}

impl<T: Figure + Serialize> View for Stats<T> {
    /// A line per service, one per backend under it, then the drops that are not 0.
    fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(out, "service {} {} {}", s.name, s.vip, s.counts.text());
            for b in &s.backends {
                let _ = writeln!(out, "  backend {} {}", b.label, b.counts.text());
            }
        }
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, n)| **n != T::default())
            .map(|(r, n)| format!("{r} {}", n.show()))
            .collect();
        let drops = if drops.is_empty() { "none".to_string() } else { drops.join(", ") };
        let _ = writeln!(out, "drops{} {drops}", T::UNIT);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn counts(packets: u64, bytes: u64, connections: u64) -> Counts<u64> {
        Counts { packets, bytes, connections }
    }

    /// Service 1 `web` with backends 1 and 2, at `uptime_ms`, `k` times some traffic.
    pub(crate) fn reading(uptime_ms: u64, k: u64) -> Stats<u64> {
        Stats {
            uptime_ms,
            interval_ms: None,
            services: vec![ServiceStats {
                id: 1,
                name: "web".into(),
                vip: "198.18.0.10:80".into(),
                counts: counts(300 * k, 30_000 * k, 30 * k),
                backends: vec![
                    BackendStats {
                        id: 1,
                        label: "198.19.0.11".into(),
                        counts: counts(100 * k, 10_000 * k, 10 * k),
                    },
                    BackendStats {
                        id: 2,
                        label: "198.19.0.12".into(),
                        counts: counts(200 * k, 20_000 * k, 20 * k),
                    },
                ],
            }],
            drops: [("no_backend".to_string(), 4 * k), ("not_for_us".to_string(), 0)].into_iter().collect(),
        }
    }

    #[test]
    fn rates_are_differences_over_sluiceds_uptime() {
        let r = reading(3000, 3).rate_since(&reading(1000, 1));
        assert_eq!(r.interval_ms, Some(2000));
        let web = &r.services[0];
        assert_eq!(web.counts, Counts { packets: 300.0, bytes: 30_000.0, connections: 30.0 });
        assert_eq!(web.backends[1].counts, Counts { packets: 200.0, bytes: 20_000.0, connections: 20.0 });
        assert_eq!(r.drops["no_backend"], 4.0);
        assert_eq!(r.drops["not_for_us"], 0.0);
    }

    #[test]
    fn no_rate_from_nothing() {
        let mut later = reading(3000, 2);
        later.services[0].backends.push(BackendStats {
            id: 9,
            label: "new".into(),
            counts: counts(500, 5, 5),
        });
        let r = later.rate_since(&reading(1000, 1));
        assert_eq!(r.services[0].backends[2].counts, Counts::default(), "a backend added since");
        // A restart between the readings: uptime and counters went back.
        let r = reading(500, 1).rate_since(&reading(3000, 3));
        assert_eq!(r.services[0].counts, Counts::default());
        assert_eq!(r.drops["no_backend"], 0.0);
        // The same reading twice.
        let r = reading(1000, 1).rate_since(&reading(1000, 1));
        assert_eq!(r.services[0].counts, Counts::default());
    }

    #[test]
    fn totals_and_rates_text() {
        assert_eq!(
            reading(1000, 1).text(),
            "service web 198.18.0.10:80 packets 300 bytes 30000 connections 30\n  \
             backend 198.19.0.11 packets 100 bytes 10000 connections 10\n  \
             backend 198.19.0.12 packets 200 bytes 20000 connections 20\n\
             drops no_backend 4\n"
        );
        let r = reading(1500, 2).rate_since(&reading(1000, 1));
        assert!(r
            .text()
            .starts_with("service web 198.18.0.10:80 packets/s 600.0 bytes/s 60000.0 connections/s 60.0\n"));
        assert!(r.text().ends_with("drops/s no_backend 8.0\n"), "{}", r.text());
        let mut quiet = reading(1000, 0);
        quiet.services.clear();
        assert_eq!(quiet.text(), "drops none\n");
    }

    #[test]
    fn json_fields_are_flat() {
        let v = serde_json::to_value(reading(1000, 1)).unwrap();
        assert_eq!(v["services"][0]["packets"], 300);
        assert_eq!(v["services"][0]["backends"][0]["connections"], 10);
        assert_eq!(v["drops"]["no_backend"], 4);
        assert!(v.get("interval_ms").is_none());
        assert_eq!(serde_json::from_value::<Stats<u64>>(v).unwrap(), reading(1000, 1));
        let r = serde_json::to_value(reading(2000, 2).rate_since(&reading(1000, 1))).unwrap();
        assert_eq!(r["interval_ms"], 1000);
        assert_eq!(r["services"][0]["bytes"], 30_000.0);
    }
}
