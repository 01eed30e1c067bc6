//! How services' backends are named to people: in the admin API, the metrics' labels and
//! `sluiced which`. Names stop at that boundary; inside, backends are known by their ids
//! (see [`crate::ids`]).

use sluice_dataplane::snapshot::{BackendSpec, Forwarding, ServiceSpec};
use std::net::{IpAddr, SocketAddr};

/// A backend's label in the admin API: its address for DSR, `address:port` for NAT.
pub fn backend_label(forwarding: Forwarding, address: IpAddr, port: u16) -> String {
    match forwarding {
        Forwarding::Dsr => address.to_string(),
        Forwarding::Nat => SocketAddr::new(address, port).to_string(),
    }
}

/// [`backend_label`] of a backend in the config (its port defaults to the service's).
pub fn spec_label(s: &ServiceSpec, b: &BackendSpec) -> String {
    backend_label(s.forwarding, b.address, b.port.unwrap_or(s.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsr_by_address_nat_with_port() {
        let a: IpAddr = "198.19.0.1".parse().unwrap();
        assert_eq!(backend_label(Forwarding::Dsr, a, 80), "198.19.0.1");
        assert_eq!(backend_label(Forwarding::Nat, a, 8080), "198.19.0.1:8080");
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(backend_label(Forwarding::Nat, v6, 8080), "[2001:db8::5]:8080");
    }
}
