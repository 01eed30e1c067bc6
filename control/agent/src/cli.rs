//! `sluice-agent`'s command line, defined here rather than in the binary so that its man page
//! and shell completions are generated from the same definition (`sluice-pkg-gen`).

use crate::allow::Prefix;
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-agent",
    version,
    about = "Sluice backend host agent: userspace IPIP/GRE decapsulation, IPv4 and IPv6"
)]
pub struct Cli {
    /// This host's address: where appliances tunnel to, and the source of tunneled replies.
    /// IPv4 or IPv6; give it twice, once per family, for both underlays.
    #[arg(long = "address", value_name = "ADDRESS", required = true)]
    pub addresses: Vec<IpAddr>,
    /// TUN device to create for IPIP and keyless GRE.
    #[arg(long)]
    pub physical: Option<String>,
    /// KEY=NAME: TUN device to create for GRE with key KEY (decimal), one per VPC. Repeatable.
    #[arg(long = "vpc", value_name = "KEY=NAME", value_parser = parse_vpc)]
    pub vpcs: Vec<(u32, String)>,
    /// ADDRESS or PREFIX/LEN: an appliance's tunnel source address, or a prefix holding them,
    /// IPv4 or IPv6. Repeatable, at least one: tunnels from any other sender are dropped
    /// (not_appliance).
    #[arg(long = "appliance", value_name = "ADDRESS[/LEN]")]
    pub appliances: Vec<Prefix>,
    /// Seconds a flow is remembered for its replies after its last packet.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_timeout: u64,
    /// Most flows remembered per appliance (outer source address); packets of its new flows
    /// beyond it are delivered, but their replies are dropped (no_flow).
    #[arg(long, default_value_t = DEFAULT_MAX_FLOWS)]
    pub max_flows: usize,
    /// Most flows remembered at once, all appliances together (the memory bound); at least
    /// --max-flows.
    #[arg(long, default_value_t = DEFAULT_MAX_FLOWS_TOTAL)]
    pub max_flows_total: usize,
    /// The appliances' cluster tunnel address (sluiced's `tunnel.cluster`): NAT replies go
    /// there, so the routers take them to a live appliance, instead of to the appliance each
    /// flow came from (which a silent download would keep using after that appliance died).
    /// Once per family at most: a flow's replies go to the one of its underlay's family.
    #[arg(long = "reply-to", value_name = "ADDRESS")]
    pub reply_to: Vec<IpAddr>,
    /// Seconds a flow must be old before its replies go to --reply-to (session sync's
    /// `after`: from then on every appliance has the flow's session).
    #[arg(long, default_value_t = 5)]
    pub reply_to_after: u64,
    /// ADDRESS:PORT: take the appliances' health-check assignments here (UDP; their
    /// `agents.port`, 7947 by default) and answer each with a sealed report of the results.
    #[arg(long, value_name = "ADDRESS:PORT", requires = "health_key_file")]
    pub health_listen: Option<SocketAddr>,
    /// File holding the health channel's shared key, 64 hex digits (the appliances'
    /// `agents.key`).
    #[arg(long, value_name = "PATH", requires = "health_listen")]
    pub health_key_file: Option<PathBuf>,
    /// KEY=PATH: the network namespace of VPC KEY (such as /run/netns/NAME): its backends are
    /// probed from inside it. Repeatable.
    #[arg(long = "vpc-netns", value_name = "KEY=PATH", value_parser = parse_netns, requires = "health_listen")]
    pub vpc_netns: Vec<(u32, PathBuf)>,
    /// Health messages whose sender clock is further than this many seconds from ours are
    /// refused.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_window: u64,
}

fn parse_netns(s: &str) -> Result<(u32, PathBuf), String> {
    let (key, path) = parse_vpc(s)?;
    Ok((key, PathBuf::from(path)))
}

/// Default `--max-flows`: 1,000,000 flows per appliance, as many as one appliance's NAT
/// sessions toward one host are expected to reach. A flow takes 96 bytes (key and entry with
/// family-neutral addresses) plus the hash table's slack: up to about 200 MB per million.
const DEFAULT_MAX_FLOWS: usize = 1_000_000;
/// Default `--max-flows-total`: four appliances' worth (up to about 800 MB when full). One
/// flooding sender (even a spoofed address inside an allowed prefix) takes at most a quarter,
/// so the others keep their share; it takes four flooding senders to fill the memory.
const DEFAULT_MAX_FLOWS_TOTAL: usize = 4 * DEFAULT_MAX_FLOWS;

fn parse_vpc(s: &str) -> Result<(u32, String), String> {
    let (key, name) = s.split_once('=').ok_or_else(|| format!("expected KEY=NAME, got {s:?}"))?;
    let key = key.parse::<u32>().map_err(|e| format!("GRE key {key:?}: {e}"))?;
    if name.is_empty() {
        return Err(format!("no TUN name in {s:?}"));
    }
    Ok((key, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpc_arguments() {
        assert_eq!(parse_vpc("100=sl-v100"), Ok((100, "sl-v100".into())));
        assert_eq!(parse_vpc("4294967295=x"), Ok((u32::MAX, "x".into())));
        for bad in ["100", "=x", "x=y", "100=", "-1=x", "4294967296=x"] {
            assert!(parse_vpc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "sluice-agent",
            "--address",
            "198.19.0.11",
            "--appliance",
            "198.19.0.1",
            "--appliance",
            "198.19.1.0/24",
            "--physical",
            "sl-phys",
            "--vpc",
            "100=sl-v100",
            "--vpc",
            "7=agt7",
        ])
        .unwrap();
        assert_eq!(c.vpcs, [(100, "sl-v100".to_string()), (7, "agt7".to_string())]);
        assert_eq!((c.flow_timeout, c.physical.as_deref()), (300, Some("sl-phys")));
        let want: Vec<Prefix> = vec!["198.19.0.1".parse().unwrap(), "198.19.1.0/24".parse().unwrap()];
        assert_eq!(c.appliances, want);
        assert_eq!((c.max_flows, c.max_flows_total), (DEFAULT_MAX_FLOWS, DEFAULT_MAX_FLOWS_TOTAL));
        let bad =
            Cli::try_parse_from(["sluice-agent", "--address", "198.19.0.11", "--appliance", "198.19.0.1/24"]);
        let err = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("host bits set"), "{err}");
        assert!(
            Cli::try_parse_from(["sluice-agent", "--address", "198.19.0.11", "--flow-timeout", "0"]).is_err()
        );
        assert!(Cli::try_parse_from(["sluice-agent"]).is_err());
        assert!(Cli::try_parse_from(["sluice-agent", "--appliance", "198.19.0.1"]).is_err(), "no --address");
    }

    #[test]
    fn health_arguments_come_together() {
        let base = ["sluice-agent", "--address", "198.19.0.11"];
        let with = |more: &[&str]| Cli::try_parse_from(base.iter().chain(more));
        let c = with(&[
            "--health-listen",
            "198.19.0.11:7947",
            "--health-key-file",
            "k",
            "--vpc-netns",
            "100=/run/netns/a",
        ])
        .unwrap();
        assert_eq!(c.health_listen, Some("198.19.0.11:7947".parse().unwrap()));
        assert_eq!(c.vpc_netns, [(100, PathBuf::from("/run/netns/a"))]);
        assert!(with(&["--health-listen", "198.19.0.11:7947"]).is_err(), "no key");
        assert!(with(&["--vpc-netns", "100=/run/netns/a"]).is_err(), "no listen");
    }

    #[test]
    fn cli_takes_both_families() {
        let c = Cli::try_parse_from([
            "sluice-agent",
            "--address",
            "198.19.0.11",
            "--address",
            "2001:db8:19::11",
            "--appliance",
            "2001:db8:19::/64",
            "--appliance",
            "198.19.0.1",
            "--reply-to",
            "2001:db8:9::1",
        ])
        .unwrap();
        let addresses: Vec<IpAddr> = vec!["198.19.0.11".parse().unwrap(), "2001:db8:19::11".parse().unwrap()];
        assert_eq!(c.addresses, addresses);
        assert_eq!(
            c.appliances,
            ["2001:db8:19::/64".parse::<Prefix>().unwrap(), "198.19.0.1".parse().unwrap()]
        );
        assert_eq!(c.reply_to, ["2001:db8:9::1".parse::<IpAddr>().unwrap()]);
        let v6_only = Cli::try_parse_from(["sluice-agent", "--address", "2001:db8:19::11"]).unwrap();
        assert_eq!(v6_only.addresses, ["2001:db8:19::11".parse::<IpAddr>().unwrap()]);
    }
}
