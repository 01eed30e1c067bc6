//! BIRD 2's configuration written from the config's `routing.bgp`: the appliance's AS and
//! router id, a BGP session with BFD to each neighbour, the VIP routes (the include files that
//! the announcer rewrites, one per family) as the only routes exported, each carrying the
//! configured communities. A session carries its neighbour's family: IPv4 VIPs to IPv4
//! neighbours, IPv6 VIPs to IPv6 neighbours. Nothing is imported: an appliance forwards by its
//! own tables, not the routers'.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

/// What sluiced tells BIRD about the routers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub neighbors: Vec<Neighbor>,
    /// Between BFD packets, both ways.
    pub bfd_interval: Duration,
    /// BFD packets missed before a session is down.
    pub bfd_multiplier: u8,
    pub communities: Vec<Community>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    pub bfd: bool,
}

/// A BGP community: standard (RFC 1997, `A:B`) or large (RFC 8092, `A:B:C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl std::str::FromStr for Community {
    type Err = String;

    fn from_str(s: &str) -> Result<Community, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("{s:?} is neither A:B (two numbers to 65535) nor A:B:C (three to 4294967295)");
        match parts[..] {
            [a, b] => Ok(Community::Standard(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)),
            [a, b, c] => Ok(Community::Large(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
                c.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

/// A BIRD symbol for the session to `address`: `peer_` and its digits, `.` and `:` as `_`.
pub fn protocol_name(address: IpAddr) -> String {
    let digits: String =
        address.to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("peer_{digits}")
}

/// BIRD's whole configuration for `bgp`, announcing the routes of `include`. The paths are
/// the config's, checked to hold no quote, backslash or line break.
pub fn render(bgp: &Bgp, include: &Path) -> String {
    let mut out = format!(
        "# Written by sluiced from its config's routing.bgp at each start; edit that instead.\n\
         router id {};\n\
         log stderr all;\n\
         debug protocols {{ states }};\n\
         protocol device {{ scan time 10; }}\n\
         protocol static vips {{\n  ipv4;\n  include \"{}\";\n}}\n\
         protocol static vips6 {{\n  ipv6;\n  include \"{}\";\n}}\n",
        bgp.router_id,
        include.display(),
        crate::bird::ipv6_include(include).display()
    );
    if bgp.neighbors.iter().any(|n| n.bfd) {
        let ms = bgp.bfd_interval.as_millis();
        let _ = writeln!(
            out,
            "protocol bfd {{\n  interface \"*\" {{ interval {ms} ms; multiplier {}; }};\n}}",
            bgp.bfd_multiplier
        );
    }
    let tags: String = bgp
        .communities
        .iter()
        .map(|c| match c {
            Community::Standard(a, b) => format!(" bgp_community.add(({a},{b}));"),
            Community::Large(a, b, c) => format!(" bgp_large_community.add(({a},{b},{c}));"),
        })
        .collect();
    for n in &bgp.neighbors {
        let (channel, vips) = if n.address.is_ipv4() { ("ipv4", "vips") } else { ("ipv6", "vips6") };
        let _ = writeln!(
            out,
            "protocol bgp {} {{\n  local as {};\n  neighbor {} as {};\n  bfd {};\n  error wait time 2, 30;\n  \
             {channel} {{ import none; export filter {{ if proto != \"{vips}\" then reject;{tags} accept; }}; }};\n}}",
            protocol_name(n.address),
            bgp.local_as,
            n.address,
            n.remote_as,
            if n.bfd { "on" } else { "off" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgp() -> Bgp {
        Bgp {
            local_as: 65001,
            router_id: Ipv4Addr::new(198, 18, 0, 1),
            neighbors: vec![
                Neighbor { address: "198.18.0.254".parse().unwrap(), remote_as: 65000, bfd: true },
                Neighbor { address: "198.18.0.253".parse().unwrap(), remote_as: 65000, bfd: false },
            ],
            bfd_interval: Duration::from_millis(300),
            bfd_multiplier: 3,
            communities: vec![Community::Standard(65001, 100), Community::Large(65001, 1, 2)],
        }
    }

    #[test]
    fn communities_are_standard_or_large() {
        assert_eq!("65001:100".parse(), Ok(Community::Standard(65001, 100)));
        assert_eq!("4200000000:1:2".parse(), Ok(Community::Large(4_200_000_000, 1, 2)));
        for bad in ["65536:1", "1", "1:2:3:4", "a:b", "", "1:-2", "1: 2"] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_neighbour_is_a_session_exporting_only_the_vips_with_the_communities() {
        let text = render(&bgp(), Path::new("/run/sluice/vips.conf"));
        assert!(text.contains("router id 198.18.0.1;\n"));
        assert!(text.contains("include \"/run/sluice/vips.conf\";"));
        assert!(text.contains("interface \"*\" { interval 300 ms; multiplier 3; };"));
        let first = text.find("protocol bgp peer_198_18_0_254 {").expect("the first neighbour");
        let second = text.find("protocol bgp peer_198_18_0_253 {").expect("the second neighbour");
        assert!(text[first..second].contains("neighbor 198.18.0.254 as 65000;\n  bfd on;"));
        assert!(text[second..].contains("neighbor 198.18.0.253 as 65000;\n  bfd off;"));
        let filter = "export filter { if proto != \"vips\" then reject; bgp_community.add((65001,100)); \
                      bgp_large_community.add((65001,1,2)); accept; };";
        assert_eq!(text.matches(filter).count(), 2, "{text}");
        assert_eq!(text.matches("import none;").count(), 2);
        assert_eq!(text.matches("local as 65001;").count(), 2);
    }

    #[test]
    fn an_ipv6_neighbour_gets_the_ipv6_vips() {
        let mut b = bgp();
        b.neighbors.push(Neighbor {
            address: "2001:db8:18::fe".parse().unwrap(),
            remote_as: 65000,
            bfd: true,
        });
        let text = render(&b, Path::new("/run/sluice/vips.conf"));
        assert!(
            text.contains("protocol static vips6 {\n  ipv6;\n  include \"/run/sluice/vips6.conf\";\n}"),
            "{text}"
        );
        let at = text.find("protocol bgp peer_2001_db8_18__fe {").expect("the IPv6 neighbour");
        assert!(text[at..].contains("neighbor 2001:db8:18::fe as 65000;"));
        assert!(text[at..].contains("ipv6 { import none; export filter { if proto != \"vips6\" then reject;"));
        assert_eq!(text.matches("ipv4 { import none;").count(), 2);
    }

    #[test]
    fn no_bfd_protocol_when_no_session_asks_for_it() {
        let mut b = bgp();
        b.neighbors.iter_mut().for_each(|n| n.bfd = false);
        assert!(!render(&b, Path::new("/x")).contains("protocol bfd"));
    }

    #[test]
    fn names_are_bird_symbols() {
        assert_eq!(protocol_name("198.18.0.254".parse().unwrap()), "peer_198_18_0_254");
        assert_eq!(protocol_name("2001:db8::1".parse().unwrap()), "peer_2001_db8__1");
    }
}
