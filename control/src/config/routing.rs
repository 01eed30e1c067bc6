//! The `routing` section: how sluiced reaches BIRD, and, with `bgp`, what BIRD's own
//! configuration says (sluiced writes it).

use super::validate::Validator;
use super::{RawBgp, RawRouting};
use crate::bird_config::{Bgp, Community, Neighbor};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

/// AS numbers an appliance or a neighbour may have: not 0, AS_TRANS (23456, RFC 6793) or
/// 4294967295 (reserved, RFC 7300).
fn usable_as(n: u32) -> bool {
    !matches!(n, 0 | 23_456 | u32::MAX)
}

impl Validator<'_> {
    /// The `routing` section: BIRD's control socket, the include file and (with `bgp`) BIRD's
    /// configuration, as absolute paths; the workers' heartbeat (0.05 to 10 s, 0.5 by
    /// default) and the longest drain (0 to 300 s, 10 by default).
    pub(super) fn routing(&mut self, r: &RawRouting) -> crate::config::RoutingSpec {
        self.bird_path("routing.bird.socket", &r.bird.socket);
        self.bird_path("routing.bird.include", &r.bird.include);
        let bgp = match (&r.bgp, &r.bird.config) {
            (Some(bgp), Some(path)) => {
                self.bird_path("routing.bird.config", path);
                Some((path.into(), self.bgp(bgp)))
            }
            (Some(_), None) => {
                self.refuse(
                    "routing.bird.config",
                    "the file sluiced writes BIRD's configuration to (with bgp)",
                );
                None
            }
            (None, Some(_)) => {
                self.refuse("routing.bgp", "what BIRD's configuration says (with bird.config)");
                None
            }
            (None, None) => None,
        };
        crate::config::RoutingSpec {
            socket: r.bird.socket.clone().into(),
            include: r.bird.include.clone().into(),
            bgp,
            heartbeat: self.seconds("routing.heartbeat", r.heartbeat, 0.5, (0.05, 10.0)),
            drain: self.seconds("routing.drain", r.drain, 10.0, (0.0, 300.0)),
        }
    }

    /// An absolute path that BIRD's configuration can quote.
    fn bird_path(&mut self, field: &str, path: &str) {
        let quotable = !path.contains(['"', '\\', '\n', '\r', '\0']);
        if !path.starts_with('/') || !quotable || path.len() > 4096 {
            self.refuse(field, "an absolute path, without quotes, backslashes or line breaks");
        }
    }

    /// `routing.bgp`: BFD every 0.3 s × 3 by default (a dead appliance leaves the routers
    /// within 0.9 s).
    fn bgp(&mut self, b: &RawBgp) -> Bgp {
        if !usable_as(b.local_as) {
            self.refuse("routing.bgp.as", format!("{} is not an AS an appliance can have", b.local_as));
        }
        let router_id = match b.router_id.parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() => a,
            _ => {
                self.refuse(
                    "routing.bgp.router_id",
                    format!("{:?} is not a non-zero IPv4 address", b.router_id),
                );
                Ipv4Addr::UNSPECIFIED
            }
        };
        if b.neighbors.is_empty() || b.neighbors.len() > 64 {
            self.refuse("routing.bgp.neighbors", "one to 64 neighbours (address and as)");
        }
        let mut seen = HashSet::new();
        let mut neighbors = Vec::new();
        for (i, n) in b.neighbors.iter().enumerate() {
            let field = format!("routing.bgp.neighbors[{i}]");
            match n.address.parse::<IpAddr>() {
                Ok(a)
                    if !(a.is_unspecified()
                        || a.is_multicast()
                        || a == IpAddr::from(Ipv4Addr::BROADCAST)) =>
                {
                    if !seen.insert(a) {
                        self.refuse(&format!("{field}.address"), format!("{a} is a neighbour twice"));
                    }
                    neighbors.push(Neighbor {
                        address: a,
                        remote_as: n.remote_as,
                        bfd: n.bfd.unwrap_or(true),
                    });
                }
                _ => self
                    .refuse(&format!("{field}.address"), format!("{:?} is not a unicast address", n.address)),
            }
            if !usable_as(n.remote_as) {
                self.refuse(
                    &format!("{field}.as"),
                    format!("{} is not an AS a neighbour can have", n.remote_as),
                );
            }
        }
        let bfd_interval = self.seconds("routing.bgp.bfd.interval", b.bfd.interval, 0.3, (0.01, 10.0));
        let bfd_multiplier = match b.bfd.multiplier.unwrap_or(3) {
            m @ 1..=255 => m as u8,
            m => {
                self.refuse("routing.bgp.bfd.multiplier", format!("{m} is outside 1..=255"));
                3
            }
        };
        if b.communities.len() > 32 {
            self.refuse("routing.bgp.communities", "at most 32");
        }
        let mut communities = Vec::new();
        for (i, c) in b.communities.iter().enumerate() {
            match c.parse::<Community>() {
                Ok(c) => communities.push(c),
                Err(e) => self.refuse(&format!("routing.bgp.communities[{i}]"), e),
            }
        }
        Bgp { local_as: b.local_as, router_id, neighbors, bfd_interval, bfd_multiplier, communities }
    }
}
