//! `sluicectl services`: services and their backends.

use super::View;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Services {
    pub generation: u64,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service's stable id (the same across applies and restarts).
    pub id: u16,
    pub name: String,
    /// `address:port` (`[v6]:port`).
    pub vip: String,
    /// As configured, in sluiced's spelling: `Tcp`, `Dsr`, `Maglev`, ...
    pub protocol: String,
    pub forwarding: String,
    pub scheduler: String,
    pub tunnel: String,
    pub synproxy_mss: Option<u16>,
    /// The limits (`packets/s 1000 (on_overload), ...`), if the service has any.
    pub limits: Option<String>,
    /// The service's active sessions.
    pub sessions: u32,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// The backend's stable id.
    pub id: u32,
    /// The address (DSR) or `address:port` (NAT): what `drain`, `restore` and `sessions` take.
    pub label: String,
    pub host: String,
    pub weight: u32,
    /// One of [`STATES`].
    pub state: String,
    pub sessions: u32,
    /// The last health check's result; `None`: not checked.
    pub check: Option<String>,
}

/// A backend's states: down (its health check failed), drained (`sluicectl drain`), weight-0
/// (configured so), up.
pub const STATES: [&str; 4] = ["down", "drained", "weight-0", "up"];

/// A backend's state from its flags, one of [`STATES`].
pub fn state(down: bool, drained: bool, weight: u32) -> &'static str {
    if down {
        STATES[0]
    } else if drained {
        STATES[1]
    } else if weight == 0 {
        STATES[2]
    } else {
        STATES[3]
    }
}

impl View for Services {
    fn text(&self) -> String {
        let mut out = format!("generation {}\n", self.generation);
        for s in &self.services {
            let mss = s.synproxy_mss.map_or_else(String::new, |mss| format!(" synproxy mss {mss}"));
            let _ = writeln!(
                out,
                "service {} {} {} {} scheduler {} tunnel {}{mss}",
                s.name, s.vip, s.protocol, s.forwarding, s.scheduler, s.tunnel
            );
            if let Some(l) = &s.limits {
                let _ = writeln!(out, "  limits {l} (sessions now {})", s.sessions);
            }
            for b in &s.backends {
                let check =
                    b.check.as_ref().map_or_else(|| "unchecked".to_string(), |c| format!("check: {c}"));
                let _ = writeln!(
                    out,
                    "  backend {} host {} weight {} {} sessions {} {check}",
                    b.label, b.host, b.weight, b.state, b.sessions
                );
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn services() -> Services {
        let backend = |id, label: &str, weight, check: Option<&str>| Backend {
            id,
            label: label.into(),
            host: "198.19.0.1".into(),
            weight,
            state: state(false, id == 2, weight).into(),
            sessions: 4,
            check: check.map(Into::into),
        };
        Services {
            generation: 2,
            services: vec![Service {
                id: 1,
                name: "web".into(),
                vip: "198.18.0.10:80".into(),
                protocol: "Tcp".into(),
                forwarding: "Dsr".into(),
                scheduler: "Maglev".into(),
                tunnel: "Ipip".into(),
                synproxy_mss: None,
                limits: Some("packets/s 1000".into()),
                sessions: 8,
                backends: vec![
                    backend(1, "198.19.0.11", 1, Some("ok in 1ms")),
                    backend(2, "198.19.0.12", 1, None),
                ],
            }],
        }
    }

    #[test]
    fn text_is_todays() {
        assert_eq!(
            services().text(),
            "generation 2\nservice web 198.18.0.10:80 Tcp Dsr scheduler Maglev tunnel Ipip\n  \
             limits packets/s 1000 (sessions now 8)\n  \
             backend 198.19.0.11 host 198.19.0.1 weight 1 up sessions 4 check: ok in 1ms\n  \
             backend 198.19.0.12 host 198.19.0.1 weight 1 drained sessions 4 unchecked\n"
        );
    }

    #[test]
    fn json_fields() {
        let v = serde_json::to_value(services()).unwrap();
        let b = &v["services"][0]["backends"][1];
        assert_eq!(b["label"], "198.19.0.12");
        assert_eq!(b["state"], "drained");
        assert_eq!(b["check"], serde_json::Value::Null);
        // Every field is there, null or not: scripts can rely on the names.
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["check", "host", "id", "label", "sessions", "state", "weight"]);
        assert_eq!(v["services"][0]["vip"], "198.18.0.10:80");
        assert_eq!(serde_json::from_value::<Services>(v).unwrap(), services());
    }

    #[test]
    fn states_in_order_of_precedence() {
        assert_eq!(state(true, true, 0), "down");
        assert_eq!(state(false, true, 0), "drained");
        assert_eq!(state(false, false, 0), "weight-0");
        assert_eq!(state(false, false, 3), "up");
    }
}
