//! "Which backend gets this flow?" answered from a config file alone, the way every
//! appliance with that config would answer it.

use crate::config::Config;
use crate::labels::backend_label;
use sluice_dataplane::flow::{Addr, FlowKey, SELECT_SEED};
use sluice_dataplane::snapshot::{Forwarding, Scheduler, ServiceKey, Snapshot, Tunnel};
use std::net::SocketAddr;

/// The decision for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub service: String,
    /// DSR: the backend (host) address; NAT: `address:port host HOST`.
    pub backend: String,
    pub tunnel: String,
    pub port: String,
}

/// Parses `tcp|udp`, `SRC:PORT`, `DST:PORT` into a flow key.
pub fn parse_flow(proto: &str, src: &str, dst: &str) -> Result<FlowKey, String> {
    let protocol = match proto {
        "tcp" => 6,
        "udp" => 17,
        p => return Err(format!("protocol {p:?}: tcp or udp")),
    };
    let s: SocketAddr = src.parse().map_err(|_| format!("{src:?} is not ADDRESS:PORT"))?;
    let d: SocketAddr = dst.parse().map_err(|_| format!("{dst:?} is not ADDRESS:PORT"))?;
    Ok(FlowKey {
        src: Addr::from(s.ip()),
        dst: Addr::from(d.ip()),
        src_port: s.port(),
        dst_port: d.port(),
        protocol,
    })
}

pub fn which(config: &Config, flow: &FlowKey) -> Result<Choice, String> {
    let snap = Snapshot::build(&config.snapshot_spec(0, None), None).map_err(|e| e.to_string())?;
    let si = snap.service(ServiceKey::new(flow.dst, flow.dst_port, flow.protocol)).ok_or_else(|| {
        let at = SocketAddr::new(flow.dst.to_ip(), flow.dst_port);
        format!("no service at {at} for protocol {}", flow.protocol)
    })?;
    let svc = &snap.services[usize::from(si)];
    let hash = match svc.scheduler {
        Scheduler::Maglev => flow.hash(SELECT_SEED),
        Scheduler::IpHash => flow.src_hash(SELECT_SEED),
        Scheduler::RoundRobin | Scheduler::LeastConn => {
            return Err(format!("service {}: its scheduler does not choose by the flow alone", svc.name))
        }
    };
    let bi = svc
        .maglev_choice(hash)
        .ok_or_else(|| format!("service {}: no backend with a positive weight", svc.name))?;
    let b = &svc.backends[usize::from(bi)];
    let nh = &snap.nexthops[usize::from(b.nexthop)];
    Ok(Choice {
        service: svc.name.clone(),
        backend: match svc.forwarding {
            Forwarding::Dsr => backend_label(svc.forwarding, b.address, b.port),
            Forwarding::Nat => {
                format!("{} host {}", backend_label(svc.forwarding, b.address, b.port), b.host)
            }
        },
        tunnel: match svc.tunnel {
            Tunnel::Ipip => "ipip".into(),
            Tunnel::Gre { key: Some(k) } => format!("gre key {k}"),
            Tunnel::Gre { key: None } => "gre".into(),
        },
        port: format!("{} via {}", snap.ports[usize::from(nh.port)].name, nh.ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_the_dataplane() {
        let yaml = "ports:\n  - { name: ext, device: d0, address: 198.18.0.1/24 }\nservices:\n  - name: web\n    vip: 198.18.10.1\n    port: 80\n    protocol: tcp\n    backends: [{ address: 198.18.0.10 }, { address: 198.18.0.11 }]\n";
        let c = Config::parse(yaml, "t.yaml").unwrap();
        let snap = Snapshot::build(&c.snapshot_spec(0, None), None).unwrap();
        for port in 1000..1100u16 {
            let f = parse_flow("tcp", &format!("198.18.0.2:{port}"), "198.18.10.1:80").unwrap();
            let want =
                snap.services[0].backends[usize::from(snap.services[0].select_flow(&f).unwrap())].address;
            let got = which(&c, &f).unwrap();
            assert_eq!(
                (got.backend, got.service.as_str(), got.tunnel.as_str()),
                (want.to_string(), "web", "ipip")
            );
        }
        let udp = parse_flow("udp", "198.18.0.2:1", "198.18.10.1:80").unwrap();
        assert!(which(&c, &udp).unwrap_err().contains("no service"));
        assert!(parse_flow("sctp", "1.2.3.4:1", "1.2.3.4:2").is_err());
        assert!(parse_flow("tcp", "1.2.3.4", "1.2.3.4:2").is_err());
    }

    #[test]
    fn answers_for_ipv6_flows() {
        let yaml = "ports:\n  - { name: ext, device: d0, address: [198.18.0.1/24, '2001:db8:18::1/64'] }\nservices:\n  - name: web6\n    vip: '2001:db8:10::1'\n    port: 80\n    protocol: tcp\n    backends: [{ address: '2001:db8:18::10' }, { address: 198.18.0.11 }]\n";
        let c = Config::parse(yaml, "t.yaml").unwrap();
        let f = parse_flow("tcp", "[2001:db8:1::10]:40000", "[2001:db8:10::1]:80").unwrap();
        let got = which(&c, &f).unwrap();
        assert_eq!(got.service, "web6");
        let via =
            if got.backend == "198.18.0.11" { "ext via 198.18.0.11" } else { "ext via 2001:db8:18::10" };
        assert_eq!(got.port, via, "{got:?}");
        let udp = parse_flow("udp", "[2001:db8:1::10]:1", "[2001:db8:10::1]:80").unwrap();
        assert_eq!(which(&c, &udp).unwrap_err(), "no service at [2001:db8:10::1]:80 for protocol 17");
    }
}
