//! Which senders the agent takes tunneled packets from: the appliances, by address or prefix
//! (`--appliance 198.19.0.1`, `--appliance 198.19.0.0/24`).
//!
//! Accepting a tunnel from anyone would let one spoofed packet with a client's 5-tuple (and a
//! tenant's GRE key) move that flow's replies to the spoofer, so the list is required and a
//! packet whose outer source is outside it is dropped before anything else looks at it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix: an address with its host bits clear, and a length of 0 to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    net: Ipv4Addr,
    len: u8,
}

/// The mask of a prefix length (0 to 32): `len` leading one bits.
fn mask(len: u8) -> u32 {
    // checked_shl(32) is None: a /0 has no network bits.
    u32::MAX.checked_shl(32u32.saturating_sub(u32::from(len))).unwrap_or(0)
}

impl Prefix {
    /// The prefix `net/len`; an error if `len` is over 32 or `net` has host bits set.
    pub fn new(net: Ipv4Addr, len: u8) -> Result<Prefix, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let m = mask(len);
        if u32::from(net) & !m != 0 {
            let base = Ipv4Addr::from(u32::from(net) & m);
            return Err(format!("{net}/{len} has host bits set (the prefix is {base}/{len})"));
        }
        Ok(Prefix { net, len })
    }

    /// A single address: a /32.
    pub fn host(a: Ipv4Addr) -> Prefix {
        Prefix { net: a, len: 32 }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.len) == u32::from(self.net)
    }

    /// How many addresses it holds (2^(32 - len)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len.min(32)))
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// `ADDR` (a /32) or `ADDR/LEN`.
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let len = l.parse::<u8>().map_err(|e| format!("prefix length {l:?} in {s:?}: {e}"))?;
                (a, len)
            }
            None => (s, 32),
        };
        let net = addr.parse::<Ipv4Addr>().map_err(|e| format!("IPv4 address {addr:?} in {s:?}: {e}"))?;
        Prefix::new(net, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 32 {
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
    pub fn contains(&self, a: Ipv4Addr) -> bool {
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

    #[test]
    fn parses_addresses_and_prefixes() {
        assert_eq!(p("198.19.0.1"), Prefix::host(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(p("198.19.0.1/32"), Prefix::host(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(p("198.19.0.0/24"), Prefix::new(Ipv4Addr::new(198, 19, 0, 0), 24).unwrap());
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
        for bad in [
            "",
            "/24",
            "198.19.0/24",
            "198.19.0.0/",
            "198.19.0.0/-1",
            "198.19.0.0/256",
            "::1",
            "x",
            "1.2.3.4/24/1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        let l = AllowList::new(vec![p("198.19.0.1"), p("198.19.1.0/24")]);
        assert!(l.contains(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!l.contains(Ipv4Addr::new(198, 19, 0, 2)));
        assert!(!l.contains(Ipv4Addr::new(198, 19, 0, 0)));
        assert!(l.contains(Ipv4Addr::new(198, 19, 1, 0)));
        assert!(l.contains(Ipv4Addr::new(198, 19, 1, 255)));
        assert!(!l.contains(Ipv4Addr::new(198, 19, 2, 0)));
        assert!(!l.contains(Ipv4Addr::new(198, 18, 1, 7)));
        assert_eq!(l.addresses(), 257);
        assert!(!AllowList::default().contains(Ipv4Addr::new(198, 19, 0, 1)));

        let all = AllowList::new(vec![p("0.0.0.0/0")]);
        assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255)) && all.contains(Ipv4Addr::UNSPECIFIED));
        let odd = p("198.19.0.128/25");
        assert!(
            odd.contains(Ipv4Addr::new(198, 19, 0, 200)) && !odd.contains(Ipv4Addr::new(198, 19, 0, 127))
        );
    }

    proptest::proptest! {
        /// A prefix holds exactly the addresses that agree with it on its first `len` bits.
        #[test]
        fn contains_agrees_with_bitwise_comparison(a in proptest::num::u32::ANY, b in proptest::num::u32::ANY, len in 0u8..=32) {
            let net = a & mask(len);
            let prefix = Prefix::new(Ipv4Addr::from(net), len).unwrap();
            let same_bits = (0..u32::from(len)).all(|i| (net >> (31 - i)) & 1 == (b >> (31 - i)) & 1);
            proptest::prop_assert_eq!(prefix.contains(Ipv4Addr::from(b)), same_bits);
            proptest::prop_assert!(prefix.contains(Ipv4Addr::from(net)));
        }
    }
}
