//! The tunnel-path probes' nonces (`sluice_dataplane::wire::probe`): the newest one that came
//! out of each tunnel (appliance, encapsulation and GRE key) after decapsulation, for the
//! health channel to echo in its next report. An appliance that finds its own recent nonce
//! in a report knows the tunnel toward this host carries packets and that the agent reads it.
//!
//! Bounded: at most [`MAX_TUNNELS`] tunnels are remembered; a probe from one more is not, and
//! is counted by the caller (the appliances are an allowlist, so this bounds only a
//! misconfiguration).

use crate::tunnel::Encap;
use sluice_control::health::agent_wire::MAX_ECHOES;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Most tunnels remembered: as many as one report echoes.
pub const MAX_TUNNELS: usize = MAX_ECHOES;

/// A tunnel's identity: the appliance (outer source), IPIP or GRE with its key.
type Tunnel = (IpAddr, Option<Option<u32>>);

fn tunnel(appliance: IpAddr, encap: Encap) -> Tunnel {
    match encap {
        Encap::Ipip => (appliance, None),
        Encap::Gre { key } => (appliance, Some(key)),
    }
}

#[derive(Debug, Default)]
pub struct Echoes {
    newest: Mutex<BTreeMap<Tunnel, u64>>,
}

impl Echoes {
    /// Remembers `nonce` as the newest from `appliance` through `encap`; false (nothing
    /// remembered) if that tunnel is new and [`MAX_TUNNELS`] are already known.
    pub fn take(&self, appliance: IpAddr, encap: Encap, nonce: u64) -> bool {
        let mut m = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        let key = tunnel(appliance, encap);
        if m.len() >= MAX_TUNNELS && !m.contains_key(&key) {
            return false;
        }
        m.insert(key, nonce);
        true
    }

    /// The newest nonce of each tunnel, in tunnel order (at most [`MAX_ECHOES`]).
    pub fn nonces(&self) -> Vec<u64> {
        self.newest.lock().unwrap_or_else(PoisonError::into_inner).values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_nonce_per_tunnel_is_kept_and_the_tunnels_are_bounded() {
        let e = Echoes::default();
        let a: IpAddr = "198.19.0.1".parse().unwrap();
        assert!(e.take(a, Encap::Gre { key: Some(7) }, 1));
        assert!(e.take(a, Encap::Gre { key: Some(7) }, 2));
        assert!(e.take(a, Encap::Gre { key: Some(8) }, 3));
        assert!(e.take(a, Encap::Ipip, 4));
        assert_eq!(e.nonces(), [4, 2, 3], "IPIP, then GRE by key; 1 replaced by 2");
        for k in 0..MAX_TUNNELS as u32 {
            e.take(a, Encap::Gre { key: Some(100 + k) }, 9);
        }
        assert_eq!(e.nonces().len(), MAX_TUNNELS);
        assert!(!e.take("198.19.0.2".parse().unwrap(), Encap::Ipip, 5), "one tunnel too many");
        assert!(e.take(a, Encap::Ipip, 6), "a known tunnel still moves");
        assert!(e.nonces().contains(&6) && !e.nonces().contains(&5));
    }
}
