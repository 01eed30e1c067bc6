//! The sections about how the appliance runs beside its ports and services: the session
//! table, the metrics endpoint, isolation (the overload check) and session sync with peers.

use super::validate::Validator;
use super::{
    RawAgents, RawIsolation, RawLoad, RawMetrics, RawRegion, RawSessions, RawSync, RegionSpec,
    DEFAULT_AGENT_PORT, DEFAULT_SESSIONS, MAX_SESSIONS,
};
use sluice_dataplane::session::Timeouts;
use std::path::Path;

/// 80% of `x`, as a low-water mark below a high one (without overflow).
fn four_fifths(x: u64) -> u64 {
    x / 5 * 4 + x % 5 * 4 / 5
}

impl Validator<'_> {
    /// The `sessions` section: the table's capacity and the timeouts.
    pub(super) fn sessions(&mut self, raw: &RawSessions) -> (u64, Timeouts) {
        let capacity = raw.capacity.unwrap_or(DEFAULT_SESSIONS);
        if !(1..=MAX_SESSIONS).contains(&capacity) {
            self.refuse("sessions.capacity", format!("{capacity} is outside 1..={MAX_SESSIONS}"));
        }
        let d = Timeouts::default();
        let t = &raw.timeouts;
        let timeouts = Timeouts {
            tcp_syn: t.tcp_syn.unwrap_or(d.tcp_syn),
            tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
            tcp_closing: t.tcp_closing.unwrap_or(d.tcp_closing),
            tcp_closed: t.tcp_closed.unwrap_or(d.tcp_closed),
            udp: t.udp.unwrap_or(d.udp),
        };
        for (name, v) in [
            ("tcp_syn", timeouts.tcp_syn),
            ("tcp_established", timeouts.tcp_established),
            ("tcp_closing", timeouts.tcp_closing),
            ("tcp_closed", timeouts.tcp_closed),
            ("udp", timeouts.udp),
        ] {
            if !(1..=86_400).contains(&v) {
                self.refuse(&format!("sessions.timeouts.{name}"), format!("{v} s is outside 1..=86400"));
            }
        }
        (capacity, timeouts)
    }

    /// `sessions.region`: an absolute path (the file need not exist: sluiced makes it), and
    /// what a file there that this binary cannot use means.
    pub(super) fn region(&mut self, raw: Option<&RawRegion>) -> Option<RegionSpec> {
        let raw = raw?;
        let path = std::path::PathBuf::from(&raw.path);
        if !path.is_absolute() || path.file_name().is_none() || raw.path.len() > 4096 {
            self.refuse("sessions.region.path", format!("{:?} is not an absolute path to a file", raw.path));
        }
        let refuse_mismatch = match raw.on_mismatch.as_deref() {
            None | Some("fresh") => false,
            Some("refuse") => true,
            Some(other) => {
                self.refuse("sessions.region.on_mismatch", format!("{other:?} is not fresh or refuse"));
                false
            }
        };
        Some(RegionSpec { path, refuse_mismatch })
    }

    /// Where the metrics endpoint listens, if anywhere.
    pub(super) fn metrics(&mut self, raw: Option<&RawMetrics>) -> Option<std::net::SocketAddr> {
        raw.and_then(|m| match m.listen.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.refuse("metrics.listen", format!("{:?} is not ADDRESS:PORT", m.listen));
                None
            }
        })
    }

    /// The `sync` section, checked. Copies age on a peer as the origin's sessions do, so they
    /// must be refreshed well within the shortest timeout they can have.
    pub(super) fn sync(&mut self, r: &RawSync, timeouts: &Timeouts) -> Option<crate::peers::SyncSpec> {
        use std::net::SocketAddr;
        // A peer is an address to send to; listen may be the unspecified address.
        let addr = |v: &mut Self, field: &str, s: &str| match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && (field == "sync.listen" || !a.ip().is_unspecified()) => Some(a),
            _ => {
                v.refuse(field, format!("{s:?} is not ADDRESS:PORT"));
                None
            }
        };
        let listen = addr(self, "sync.listen", &r.listen);
        let mut peers = Vec::new();
        if r.peers.is_empty() {
            self.refuse("sync.peers", "at least one peer (ADDRESS:PORT)");
        }
        for (i, p) in r.peers.iter().enumerate() {
            peers.extend(addr(self, &format!("sync.peers[{i}]"), p));
        }
        let key = self.shared_key("sync", r.key.as_deref(), r.key_file.as_deref());
        let after = r.after.unwrap_or(5);
        if !(1..=3600).contains(&after) {
            self.refuse("sync.after", format!("{after} s is outside 1..=3600"));
        }
        let shortest = timeouts.tcp_established.min(timeouts.udp);
        let refresh = r.refresh.unwrap_or((shortest / 3).clamp(1, 30));
        if refresh == 0 || u64::from(refresh) * 2 > u64::from(shortest) {
            self.refuse(
                "sync.refresh",
                format!("{refresh} s: at least 1 and at most half the shortest established/udp timeout ({shortest} s)"),
            );
        }
        let window = r.window.unwrap_or(30);
        if !(1..=3600).contains(&window) {
            self.refuse("sync.window", format!("{window} s is outside 1..=3600"));
        }
        Some(crate::peers::SyncSpec {
            listen: listen?,
            peers,
            key: key?,
            after: std::time::Duration::from_secs(after.into()),
            refresh: std::time::Duration::from_secs(refresh.into()),
            window: std::time::Duration::from_secs(window.into()),
        })
    }

    /// A section's shared key: `key` (64 hex digits) or `key_file` (a file holding them), one
    /// of them.
    fn shared_key(
        &mut self,
        section: &str,
        key: Option<&str>,
        key_file: Option<&str>,
    ) -> Option<crate::sync::SyncKey> {
        let hex = match (key, key_file) {
            (Some(k), None) => Some((format!("{section}.key"), k.trim().to_string())),
            (None, Some(f)) => match crate::readfile::read_text(Path::new(f), crate::readfile::MAX_KEY_BYTES)
            {
                Ok(t) => Some((format!("{section}.key_file"), t.trim().to_string())),
                Err(e) => {
                    self.refuse(&format!("{section}.key_file"), format!("{f}: {e}"));
                    None
                }
            },
            _ => {
                self.refuse(section, "give the shared key as key (64 hex digits) or key_file, one of them");
                None
            }
        };
        hex.and_then(|(field, h)| match crate::sync::SyncKey::from_hex(&h) {
            Ok(k) => Some(k),
            Err(e) => {
                self.refuse(&field, e);
                None
            }
        })
    }

    /// The `agents` section: where reports from the host agents come in, the agents' port,
    /// the key, the clock window.
    pub(super) fn agents(&mut self, r: &RawAgents) -> Option<crate::health::agents::AgentsSpec> {
        let listen = match r.listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(a),
            _ => {
                self.refuse("agents.listen", format!("{:?} is not ADDRESS:PORT", r.listen));
                None
            }
        };
        let port = r.port.unwrap_or(DEFAULT_AGENT_PORT);
        if port == 0 {
            self.refuse("agents.port", "port 0");
        }
        let key = self.shared_key("agents", r.key.as_deref(), r.key_file.as_deref());
        let window = r.window.unwrap_or(30);
        if !(1..=3600).contains(&window) {
            self.refuse("agents.window", format!("{window} s is outside 1..=3600"));
        }
        Some(crate::health::agents::AgentsSpec {
            listen: listen?,
            port,
            key: key?,
            window: std::time::Duration::from_secs(window.into()),
        })
    }

    /// The `isolation` section (the overload check), checked; defaults without one.
    pub(super) fn isolation(&mut self, raw: Option<&RawIsolation>) -> crate::isolation::IsolationSpec {
        use crate::isolation::{IsolationSpec, Load};
        let d = IsolationSpec::default();
        let Some(raw) = raw else { return d };
        let interval =
            self.seconds("isolation.interval", raw.interval, d.interval.as_secs_f64(), (0.1, 3600.0));
        let calm_checks = raw.calm_checks.unwrap_or(d.calm_checks);
        if !(1..=1000).contains(&calm_checks) {
            self.refuse("isolation.calm_checks", format!("{calm_checks} is outside 1..=1000"));
        }
        let load = |v: &mut Self, which: &str, r: RawLoad| -> Load {
            // Refused, a busy mark is left out (NaN compares false with everything).
            let busy = r.busy.filter(|&b| {
                let ok = b > 0.0 && b <= 1.0;
                if !ok {
                    v.refuse(&format!("isolation.{which}.busy"), format!("{b} is outside (0, 1]"));
                }
                ok
            });
            for (k, x) in [("packets_per_second", r.packets_per_second), ("sessions", r.sessions)] {
                if x == Some(0) {
                    v.refuse(&format!("isolation.{which}.{k}"), "0: leave it out to not check it");
                }
            }
            Load { busy, packets_per_second: r.packets_per_second, sessions: r.sessions }
        };
        let high = match raw.high {
            Some(h) => load(self, "high", h),
            None => d.high,
        };
        if high.busy.is_none() && high.packets_per_second.is_none() && high.sessions.is_none() {
            self.refuse("isolation.high", "no mark given (busy, packets_per_second, sessions)");
        }
        // A low-water mark not given is 80% of its high one.
        let low_raw = raw.low.unwrap_or_default();
        let low = load(self, "low", low_raw);
        let low = Load {
            busy: low.busy.or(high.busy.map(|b| b * 0.8)),
            packets_per_second: low.packets_per_second.or(high.packets_per_second.map(four_fifths)),
            sessions: low.sessions.or(high.sessions.map(four_fifths)),
        };
        for (k, l, h) in [
            ("busy", low.busy.map(|b| (b * 1e6) as u64), high.busy.map(|b| (b * 1e6) as u64)),
            ("packets_per_second", low.packets_per_second, high.packets_per_second),
            ("sessions", low.sessions, high.sessions),
        ] {
            match (l, h) {
                (Some(l), Some(h)) if l > h => {
                    self.refuse(&format!("isolation.low.{k}"), "above its high-water mark");
                }
                (Some(_), None) => {
                    self.refuse(&format!("isolation.low.{k}"), "has no high-water mark to go with");
                }
                _ => {}
            }
        }
        IsolationSpec { interval, high, low, calm_checks }
    }
}
