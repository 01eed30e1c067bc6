//! `sluicectl status` and `sluicectl upgrade`.

use super::View;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Duration;

/// `sluicectl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The config file sluiced runs (`None`: given otherwise).
    pub config: Option<String>,
    pub generation: u64,
    pub last_apply: String,
    pub workers: usize,
    pub uptime_s: u64,
    /// Live sessions (at the last sweep) and the table's capacity.
    pub sessions: u64,
    pub capacity: usize,
    pub isolation: Isolation,
    /// The session region line: which one, how it was found, what was taken over.
    pub region: String,
    /// The exception path's frames, if a port has one.
    pub exception: Option<Exception>,
    /// The routing daemon's state, one line per VIP, if the config has `routing`.
    pub routing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    pub active: bool,
    pub checks: u64,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    pub to_kernel: u64,
    pub from_kernel: u64,
    /// Frames the kernel did not take, and frames over the exception path's rate.
    pub kernel_refused: u64,
    pub kernel_limited: u64,
}

impl View for Status {
    fn text(&self) -> String {
        let mut s = format!(
            "config {}\ngeneration {}\nlast apply: {}\nworkers {}\nuptime {} s\nsessions {} of {}\n\
             isolation {} ({} checks, every {:?})\n{}\n",
            self.config.as_deref().unwrap_or("-"),
            self.generation,
            self.last_apply,
            self.workers,
            self.uptime_s,
            self.sessions,
            self.capacity,
            if self.isolation.active { "on" } else { "off" },
            self.isolation.checks,
            Duration::from_millis(self.isolation.interval_ms),
            self.region,
        );
        if let Some(e) = &self.exception {
            let _ = writeln!(
                s,
                "exception path: {} frame(s) to the kernel, {} from it; lost: {} (not taken by the kernel), {} (over its rate)",
                e.to_kernel, e.from_kernel, e.kernel_refused, e.kernel_limited
            );
        }
        s + self.routing.as_deref().unwrap_or("")
    }
}

/// `sluicectl upgrade`: the running region and how to upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    /// `sluicectl status`'s session region line.
    pub region: String,
    /// [`crate::upgrade::PROCEDURE`].
    pub procedure: String,
    /// The check to run first, with the new binary.
    pub check: String,
}

/// What to run with the new binary before restarting.
pub const CHECK_FIRST: &str =
    "first, with the new binary: `sluiced upgrade-check CONFIG` (exit 0: a restart on CONFIG keeps the connections)";

impl Upgrade {
    pub fn new(region: &str) -> Upgrade {
        Upgrade {
            region: region.trim_end().to_string(),
            procedure: crate::upgrade::PROCEDURE.to_string(),
            check: CHECK_FIRST.to_string(),
        }
    }
}

impl View for Upgrade {
    fn text(&self) -> String {
        format!("{}\n{}\n{}\n", self.region, self.check, self.procedure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            config: Some("/etc/sluice/sluice.yaml".into()),
            generation: 3,
            last_apply: "none".into(),
            workers: 2,
            uptime_s: 61,
            sessions: 5,
            capacity: 1024,
            isolation: Isolation { active: false, checks: 7, interval_ms: 500 },
            region: "session region none".into(),
            exception: None,
            routing: None,
        }
    }

    #[test]
    fn status_text_is_todays() {
        let mut s = status();
        assert_eq!(
            s.text(),
            "config /etc/sluice/sluice.yaml\ngeneration 3\nlast apply: none\nworkers 2\nuptime 61 s\n\
             sessions 5 of 1024\nisolation off (7 checks, every 500ms)\nsession region none\n"
        );
        s.exception = Some(Exception { to_kernel: 1, from_kernel: 2, kernel_refused: 3, kernel_limited: 4 });
        s.routing = Some("vip 198.18.0.10 announced\n".into());
        assert!(s.text().ends_with(
            "exception path: 1 frame(s) to the kernel, 2 from it; lost: 3 (not taken by the kernel), 4 (over its rate)\n\
             vip 198.18.0.10 announced\n"
        ));
    }

    #[test]
    fn status_json_fields() {
        let v = serde_json::to_value(status()).unwrap();
        assert_eq!(v["generation"], 3);
        assert_eq!(v["uptime_s"], 61);
        assert_eq!(v["isolation"]["interval_ms"], 500);
        assert_eq!(v["exception"], serde_json::Value::Null);
        assert_eq!(v["region"], "session region none");
    }

    #[test]
    fn upgrade_names_the_region_the_check_and_the_procedure() {
        let u = Upgrade::new("session region /dev/hugepages/sluice (layout 3): made at start\n");
        let t = u.text();
        assert!(t.starts_with("session region /dev/hugepages/sluice (layout 3): made at start\n"), "{t}");
        assert!(t.contains("sluiced upgrade-check CONFIG"), "{t}");
        assert!(t.contains(crate::upgrade::PROCEDURE), "{t}");
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["procedure"], crate::upgrade::PROCEDURE);
    }
}
