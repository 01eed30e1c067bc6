//! `sluicectl sessions`: live flow sessions, filtered.

use super::View;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    pub sessions: Vec<Session>,
    /// Sessions that matched the filters; at most `limit` of them are listed.
    pub matched: usize,
    pub shown: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub service: String,
    /// The client's `address:port`.
    pub client: String,
    /// The backend's label, or `(removed #ID)` for a backend no longer configured.
    pub backend: String,
    /// The TCP state in sluiced's spelling (`Established`, ...).
    pub state: String,
    pub proxied: bool,
    pub synced: bool,
    pub idle_s: u64,
}

impl View for Sessions {
    fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.sessions {
            let _ = writeln!(
                out,
                "{} {} -> {} {}{}{} idle {}s",
                s.service,
                s.client,
                s.backend,
                s.state,
                if s.proxied { " proxied" } else { "" },
                if s.synced { " synced" } else { "" },
                s.idle_s
            );
        }
        let _ = writeln!(out, "{} sessions matched, {} shown", self.matched, self.shown);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions {
            sessions: vec![Session {
                service: "web".into(),
                client: "198.18.1.10:40000".into(),
                backend: "198.19.0.11".into(),
                state: "Established".into(),
                proxied: true,
                synced: false,
                idle_s: 3,
            }],
            matched: 7,
            shown: 1,
        }
    }

    #[test]
    fn text_is_todays() {
        assert_eq!(
            sessions().text(),
            "web 198.18.1.10:40000 -> 198.19.0.11 Established proxied idle 3s\n7 sessions matched, 1 shown\n"
        );
    }

    #[test]
    fn json_fields() {
        let v = serde_json::to_value(sessions()).unwrap();
        assert_eq!(v["matched"], 7);
        assert_eq!(v["sessions"][0]["client"], "198.18.1.10:40000");
        assert_eq!(v["sessions"][0]["proxied"], true);
        assert_eq!(v["sessions"][0]["idle_s"], 3);
    }
}
