//! The rules a snapshot's spec keeps, each stated once, with its refusal's wording:
//! `Snapshot::build` enforces them (refusing the first one broken), and the config validator
//! reports every one a file breaks, at its line.

use super::{Forwarding, Protocol};
use crate::flow::Prefix;
use crate::maglev::{is_prime, MAX_BACKENDS, MAX_TABLE_SIZE};
use crate::stats::MAX_PORTS;
use std::net::IpAddr;

/// An appliance has 1 to [`MAX_PORTS`] ports.
pub fn port_count(n: usize) -> Result<(), String> {
    match n {
        0 => Err("at least one port is needed".into()),
        n if n > MAX_PORTS => Err(format!("at most {MAX_PORTS} ports")),
        _ => Ok(()),
    }
}

/// An exception path's port index comes after the `data` ports, within [`MAX_PORTS`]
/// ports in all.
pub fn kernel_port(index: u16, data: usize) -> Result<(), String> {
    if usize::from(index) < data || usize::from(index) >= MAX_PORTS {
        Err(format!(
            "port index {index}: exception paths come after the {data} data ports, {MAX_PORTS} ports in all"
        ))
    } else {
        Ok(())
    }
}

/// A port's neighbour or gateway is on its link: inside the port's prefix of its family.
pub fn on_link(a: IpAddr, prefixes: &[Prefix]) -> Result<(), String> {
    match prefixes.iter().find(|p| p.addr.is_ipv4() == a.is_ipv4()) {
        Some(p) if p.contains(a) => Ok(()),
        Some(p) => Err(format!("{a} is not inside {p}")),
        None => Err(format!("{a}: the port has no address of its family")),
    }
}

/// A service's families: an IPv6 VIP forwards `dsr` or `nat` (over either underlay) but not
/// yet through the SYN proxy; a `nat` backend (`backend`) is of its VIP's family (NAT66, no
/// NAT46 or NAT64).
pub fn families(
    vip: IpAddr,
    forwarding: Forwarding,
    synproxy: bool,
    backend: Option<IpAddr>,
) -> Result<(), String> {
    let nat = forwarding == Forwarding::Nat;
    match backend {
        None if vip.is_ipv6() && synproxy => {
            Err(format!("{vip}: the SYN proxy takes IPv4 VIPs only, so far"))
        }
        Some(b) if nat && b.is_ipv4() != vip.is_ipv4() => {
            Err(format!("{b}: a `nat` backend is of its VIP's family (NAT46 and NAT64 are not done)"))
        }
        _ => Ok(()),
    }
}

/// A port, the gateways, the tunnel sources and the cluster addresses: at most one address
/// of each family.
pub fn one_per_family(list: &mut dyn Iterator<Item = IpAddr>) -> Result<(), String> {
    let (mut v4, mut v6) = (0, 0);
    for a in list {
        *if a.is_ipv4() { &mut v4 } else { &mut v6 } += 1;
    }
    match (v4 > 1, v6 > 1) {
        (true, _) => Err("at most one IPv4 address".into()),
        (_, true) => Err("at most one IPv6 address".into()),
        _ => Ok(()),
    }
}

/// A Maglev table's size is a prime (every permutation visits every slot), at most
/// [`MAX_TABLE_SIZE`].
pub fn table_size(size: u32) -> Result<(), String> {
    if is_prime(size) && size <= MAX_TABLE_SIZE {
        Ok(())
    } else {
        Err(format!("{size} must be a prime no larger than {MAX_TABLE_SIZE}"))
    }
}

/// A service has at most [`MAX_BACKENDS`] backends.
pub fn backend_count(n: usize) -> Result<(), String> {
    if n > MAX_BACKENDS {
        Err(format!("at most {MAX_BACKENDS} backends"))
    } else {
        Ok(())
    }
}

/// A DSR backend answers on the service's port from its own address: it has neither
/// `port` nor `host`. The refusal names the field.
pub fn dsr_backend(
    forwarding: Forwarding,
    port: bool,
    host: bool,
) -> Result<(), (&'static str, &'static str)> {
    match (forwarding, port, host) {
        (Forwarding::Dsr, true, _) => {
            Err(("port", "a DSR backend answers on the service's port; port is for forwarding: nat"))
        }
        (Forwarding::Dsr, _, true) => {
            Err(("host", "host is for forwarding: nat (a DSR backend's address is its host)"))
        }
        _ => Ok(()),
    }
}

/// A backend's port is not 0.
pub fn backend_port(port: u16) -> Result<(), &'static str> {
    if port == 0 {
        Err("port 0 is not a backend port")
    } else {
        Ok(())
    }
}

/// The SYN proxy needs `nat` (it translates the backend's replies) over TCP.
pub fn synproxy(forwarding: Forwarding, protocol: Protocol) -> Result<(), &'static str> {
    match (forwarding, protocol) {
        (Forwarding::Dsr, _) => {
            Err("SYN proxy needs forwarding: nat: with DSR the backend answers the client \
             directly, so the appliance cannot translate its sequence numbers")
        }
        (_, Protocol::Udp) => Err("SYN proxy is for TCP services"),
        _ => Ok(()),
    }
}

/// An `mss_clamp` value: 536 (the MSS every IPv4 host takes, RFC 9293) to 9160 (a 9200-byte
/// jumbo path).
pub fn mss_clamp(mss: u64) -> Result<(), String> {
    if (536..=9160).contains(&mss) {
        Ok(())
    } else {
        Err(format!("{mss} is outside 536..=9160 (or give auto or off)"))
    }
}
