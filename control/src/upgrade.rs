//! `sluiced upgrade-check FILE`, run with the binary about to be installed: whether a restart
//! of sluiced on FILE with this binary keeps the connections in the session region FILE names
//! (same layout, same slot count), and which services and backends the region has sessions
//! for that FILE no longer names. It only reads the region (a running sluiced keeps using it).

use crate::config::Config;
use crate::ids::Registry;
use sluice_dataplane::region::{self, LAYOUT_VERSION};
use sluice_dataplane::session::SessionTable;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// What the check found: `keeps` if a restart keeps the region's connections; `text` says
/// what and why, one finding per line.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub keeps: bool,
    pub text: String,
}

/// The upgrade procedure, as the check prints it last.
pub const PROCEDURE: &str =
    "to upgrade: install the new binary, then restart sluiced (`systemctl restart sluiced`, or \
     SIGTERM the old process and start the new one); the outage is from the old process's last \
     packet to the new one's first";

/// Checks a restart on `config` (from `file`) with this binary.
pub fn check(config: &Config, file: &str) -> Result<Verdict, String> {
    let Some(spec) = &config.session_region else {
        return Ok(Verdict {
            keeps: false,
            text: format!(
                "{file} names no session region (`sessions.region`): a restart starts with an empty \
                 session table and breaks every connection\n"
            ),
        });
    };
    let at = spec.path.display();
    let slots = SessionTable::slots_for(config.session_capacity) as u64;
    let header = match region::inspect(&spec.path, slots)? {
        None => {
            return Ok(Verdict {
                keeps: false,
                text: format!("session region {at}: none yet (sluiced makes it at start): nothing to keep\n"),
            })
        }
        Some(Err(why)) => {
            let then = if spec.refuse_mismatch {
                "sluiced would refuse to start (on_mismatch: refuse)"
            } else {
                "a restart starts with no sessions and breaks every connection"
            };
            return Ok(Verdict { keeps: false, text: format!("session region {at}: {why}: {then}\n") });
        }
        Some(Ok(h)) => h,
    };
    let mut text = format!(
        "session region {at}: layout {LAYOUT_VERSION}, {} slots: this binary attaches to it; a restart keeps its connections\n",
        header.slots
    );
    match region::inspect_ids(&spec.path)? {
        Some(ids) => identities(&mut text, &Registry::from_ids(&ids), config, file),
        None => {
            text.push_str("identity map: none yet (no config applied to the region): no session to keep\n")
        }
    }
    text.push_str(PROCEDURE);
    text.push('\n');
    Ok(Verdict { keeps: true, text })
}

/// The lines on identities: how many of the region's the config keeps, and those it does not.
fn identities(text: &mut String, kept: &Registry, config: &Config, file: &str) {
    let removed = kept.not_in(&config.snapshot_spec(0, None));
    let _ = writeln!(
        text,
        "identities: {file} names {} of the region's {} services and {} of its {} backends",
        removed.named.0, removed.of.0, removed.named.1, removed.of.1
    );
    for &s in &removed.services {
        let _ = writeln!(text, "not in {file}: service {} (its sessions end)", service(s));
    }
    for &(s, addr, port) in &removed.backends {
        let _ = writeln!(
            text,
            "not in {file}: backend {} of service {} (its sessions follow the service's on_backend_removed)",
            endpoint(addr, port),
            service(s)
        );
    }
}

fn service((vip, port, proto): (IpAddr, u16, u8)) -> String {
    let proto = match proto {
        6 => "tcp",
        17 => "udp",
        _ => "?",
    };
    format!("{proto} {}", endpoint(vip, port))
}

/// An address, with its port unless that is 0 (a DSR backend's identity has none).
fn endpoint(addr: IpAddr, port: u16) -> String {
    match port {
        0 => addr.to_string(),
        p => SocketAddr::new(addr, p).to_string(),
    }
}
