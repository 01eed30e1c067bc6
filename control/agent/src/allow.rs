//! Which senders the agent takes tunneled packets from: the appliances, by address or prefix
//! of either family (`--appliance 198.19.0.1`, `--appliance 198.19.0.0/24`,
//! `--appliance 2001:db8:19::1`, `--appliance 2001:db8:19::/64`). A prefix holds only
//! addresses of its own family: an IPv4-mapped IPv6 sender (`::ffff:198.19.0.1`) is not inside
//! `198.19.0.0/24`.
//!
//! Accepting a tunnel from anyone would let one spoofed packet with a client's 5-tuple (and a
//! tenant's GRE key) move that flow's replies to the spoofer, so the list is required and a
//! packet whose outer source is outside it is dropped before anything else looks at it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 prefix: an address with its host bits clear, and a length of 0 to 32 or
/// 0 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    net: IpAddr,
    len: u8,
}

/// The mask of a prefix length (0 to 32): `len` leading one bits.
fn mask(len: u8) -> u32 {
    // checked_shl(32) is None: a /0 has no network bits.
    u32::MAX.checked_shl(32u32.saturating_sub(u32::from(len))).unwrap_or(0)
}

/// The mask of an IPv6 prefix length (0 to 128).
fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128u32.saturating_sub(u32::from(len))).unwrap_or(0)
}

/// The longest prefix of `a`'s family.
fn max_len(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// `a` with the bits past `len` cleared.
fn network(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask(len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(len))),
    }
}

impl Prefix {
    /// The prefix `net/len`; an error if `len` is over 32 (IPv4) or 128 (IPv6), or `net` has
    /// host bits set.
    pub fn new(net: IpAddr, len: u8) -> Result<Prefix, String> {
        let max = max_len(net);
        if len > max {
            return Err(format!("prefix length {len} is over {max}"));
        }
        let base = network(net, len);
        if base != net {
            return Err(format!("{net}/{len} has host bits set (the prefix is {base}/{len})"));
        }
        Ok(Prefix { net, len })
    }

    /// A single address: a /32 or a /128.
    pub fn host(a: impl Into<IpAddr>) -> Prefix {
        let net = a.into();
        Prefix { net, len: max_len(net) }
    }

    /// Whether `a` is inside: of the prefix's family, and agreeing with it on `len` bits.
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.net.is_ipv4() && network(a, self.len) == self.net
    }

    /// How many addresses it holds (2^(32 - len) or 2^(128 - len), at most `u64::MAX`).
    pub fn size(&self) -> u64 {
        let host_bits = u32::from(max_len(self.net).saturating_sub(self.len));
        1u64.checked_shl(host_bits).unwrap_or(u64::MAX)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// `ADDR` (a /32 or /128) or `ADDR/LEN`.
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net = addr.parse::<IpAddr>().map_err(|e| format!("IP address {addr:?} in {s:?}: {e}"))?;
        let len = match len {
            Some(l) => l.parse::<u8>().map_err(|e| format!("prefix length {l:?} in {s:?}: {e}"))?,
            None => max_len(net),
        };
        Prefix::new(net, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == max_len(self.net) {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.len)
        }
    }
}

/// The appliances: the senders whose tunnels are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    prefixes: Vec<Prefix>,
}

impl AllowList {
    pub fn new(prefixes: Vec<Prefix>) -> AllowList {
        AllowList { prefixes }
    }

    /// Whether `a` is inside one of the prefixes.
    pub fn contains(&self, a: IpAddr) -> bool {
        self.prefixes.iter().any(|p| p.contains(a))
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }

    /// How many addresses the list admits, counting overlaps twice (an upper bound).
    pub fn addresses(&self) -> u64 {
        self.prefixes.iter().map(Prefix::size).fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        Ipv4Addr::new(a, b, c, d).into()
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_prefixes() {
        assert_eq!(p("198.19.0.1"), Prefix::host(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(p("198.19.0.1/32"), Prefix::host(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(p("198.19.0.0/24"), Prefix::new(Ipv4Addr::new(198, 19, 0, 0).into(), 24).unwrap());
        assert_eq!(p("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(p("198.19.0.0/24").to_string(), "198.19.0.0/24");
        assert_eq!(p("198.19.0.1/32").to_string(), "198.19.0.1");
    }

    #[test]
    fn rejects_bad_input_with_the_reason() {
        let err = |s: &str| s.parse::<Prefix>().unwrap_err();
        assert!(
            err("198.19.0.1/24").contains("host bits set (the prefix is 198.19.0.0/24)"),
            "{}",
            err("198.19.0.1/24")
        );
        assert!(err("198.19.0.0/33").contains("over 32"));
        assert!(err("2001:db8::/129").contains("over 128"));
        assert!(err("2001:db8::1/64").contains("host bits set (the prefix is 2001:db8::/64)"));
        for bad in [
            "",
            "/24",
            "198.19.0/24",
            "198.19.0.0/",
            "198.19.0.0/-1",
            "198.19.0.0/256",
            "::1/129",
            "2001:db8::1/64",
            "2001:db8::/",
            "x",
            "1.2.3.4/24/1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        let l = AllowList::new(vec![p("198.19.0.1"), p("198.19.1.0/24")]);
        assert!(l.contains(v4(198, 19, 0, 1)));
        assert!(!l.contains(v4(198, 19, 0, 2)));
        assert!(!l.contains(v4(198, 19, 0, 0)));
        assert!(l.contains(v4(198, 19, 1, 0)));
        assert!(l.contains(v4(198, 19, 1, 255)));
        assert!(!l.contains(v4(198, 19, 2, 0)));
        assert!(!l.contains(v4(198, 18, 1, 7)));
        assert_eq!(l.addresses(), 257);
        assert!(!AllowList::default().contains(v4(198, 19, 0, 1)));

        let all = AllowList::new(vec![p("0.0.0.0/0")]);
        assert!(all.contains(v4(255, 255, 255, 255)) && all.contains(Ipv4Addr::UNSPECIFIED.into()));
        let odd = p("198.19.0.128/25");
        assert!(odd.contains(v4(198, 19, 0, 200)) && !odd.contains(v4(198, 19, 0, 127)));
    }

    #[test]
    fn ipv6_prefixes() {
        assert_eq!(p("2001:db8:19::1"), Prefix::host(v6("2001:db8:19::1")));
        assert_eq!(p("2001:db8:19::1/128").to_string(), "2001:db8:19::1");
        assert_eq!(p("2001:db8:19::/48").to_string(), "2001:db8:19::/48");
        assert_eq!(
            (p("2001:db8::/96").size(), p("2001:db8::/64").size(), p("::/0").size()),
            (1 << 32, u64::MAX, u64::MAX)
        );
        let l = AllowList::new(vec![p("198.19.0.1"), p("2001:db8:19::1"), p("2001:db8:1900::/40")]);
        assert!(l.contains(v6("2001:db8:19::1")));
        assert!(!l.contains(v6("2001:db8:19::2")));
        assert!(l.contains(v6("2001:db8:1900::")) && l.contains(v6("2001:db8:19ff:ffff::1")));
        assert!(!l.contains(v6("2001:db8:1a00::1")));
        // Each family only its own: a v4-mapped sender is not the IPv4 appliance, and ::/0
        // admits no IPv4 sender.
        assert!(!l.contains(v6("::ffff:198.19.0.1")));
        assert!(l.contains(v4(198, 19, 0, 1)));
        assert!(!AllowList::new(vec![p("::/0")]).contains(v4(198, 19, 0, 1)));
        assert!(!AllowList::new(vec![p("0.0.0.0/0")]).contains(v6("2001:db8::1")));
        assert_eq!(l.addresses(), u64::MAX, "saturates");
    }

    proptest::proptest! {
        /// A prefix holds exactly the addresses that agree with it on its first `len` bits.
        #[test]
        fn contains_agrees_with_bitwise_comparison(a in proptest::num::u32::ANY, b in proptest::num::u32::ANY, len in 0u8..=32) {
            let net = a & mask(len);
            let prefix = Prefix::new(Ipv4Addr::from(net).into(), len).unwrap();
            let same_bits = (0..u32::from(len)).all(|i| (net >> (31 - i)) & 1 == (b >> (31 - i)) & 1);
            proptest::prop_assert_eq!(prefix.contains(Ipv4Addr::from(b).into()), same_bits);
            proptest::prop_assert!(prefix.contains(Ipv4Addr::from(net).into()));
        }

        /// The same for IPv6, with the first `len` of 128 bits.
        #[test]
        fn contains_agrees_with_bitwise_comparison_v6(a in proptest::num::u128::ANY, b in proptest::num::u128::ANY, len in 0u8..=128) {
            let net = a & mask6(len);
            let prefix = Prefix::new(Ipv6Addr::from(net).into(), len).unwrap();
            let same_bits = (0..u32::from(len)).all(|i| (net >> (127 - i)) & 1 == (b >> (127 - i)) & 1);
            proptest::prop_assert_eq!(prefix.contains(Ipv6Addr::from(b).into()), same_bits);
            proptest::prop_assert!(prefix.contains(Ipv6Addr::from(net).into()));
            proptest::prop_assert_eq!(prefix.to_string().parse::<Prefix>(), Ok(prefix));
        }
    }
}
