//! Flow keys, family-generic: IPv4 addresses are stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).

use crate::hash::mix64;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address of either family in one comparable, hashable word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Addr(pub u128);

impl Addr {
    pub const fn v4(a: Ipv4Addr) -> Addr {
        Addr(0xffff_0000_0000 | u32::from_be_bytes(a.octets()) as u128)
    }

    pub fn as_v4(self) -> Option<Ipv4Addr> {
        (self.0 >> 32 == 0xffff).then(|| Ipv4Addr::from((self.0 as u32).to_be_bytes()))
    }

    pub fn to_ip(self) -> IpAddr {
        match self.as_v4() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(self.0)),
        }
    }

    #[inline(always)]
    fn fold(self) -> u64 {
        (self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29)
    }
}

/// The longest prefix of `a`'s family: 32 or 128.
pub fn max_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// Whether `a` is inside `net`/`len` (both of one family; a longer `len` than the family's
/// counts as the whole address).
pub fn in_prefix(a: IpAddr, net: IpAddr, len: u8) -> bool {
    let bits = u32::from(max_prefix(a));
    let mask = u128::MAX.checked_shl(bits - u32::from(len).min(bits)).unwrap_or(0);
    a.is_ipv4() == net.is_ipv4() && Addr::from(a).0 & mask == Addr::from(net).0 & mask
}

/// An address with its prefix length: a port's address and the link it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn new(addr: impl Into<IpAddr>, len: u8) -> Prefix {
        Prefix { addr: addr.into(), len }
    }

    /// Whether `a` is on this prefix (of the same family).
    pub fn contains(&self, a: IpAddr) -> bool {
        in_prefix(a, self.addr, self.len)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// The index of `a`'s family in tables kept per family: 0 for IPv4, 1 for IPv6.
#[inline]
pub fn family(a: IpAddr) -> usize {
    usize::from(a.is_ipv6())
}

/// The first address of `list` of the same family as `a`.
pub fn of_family(list: &[IpAddr], a: IpAddr) -> Option<IpAddr> {
    list.iter().copied().find(|x| x.is_ipv4() == a.is_ipv4())
}

impl From<Ipv4Addr> for Addr {
    fn from(a: Ipv4Addr) -> Addr {
        Addr::v4(a)
    }
}

impl From<IpAddr> for Addr {
    fn from(a: IpAddr) -> Addr {
        match a {
            IpAddr::V4(v4) => Addr::v4(v4),
            IpAddr::V6(v6) => Addr(u128::from(v6)),
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_ip().fmt(f)
    }
}

/// A transport 5-tuple as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// The seed of the backend-selection hash. Fixed: appliances must agree.
pub const SELECT_SEED: u64 = 0x5c1c_e5ee_d000_0001;

impl FlowKey {
    /// The hash that picks a backend (Maglev). Deterministic across processes and hosts.
    /// The three words are spread by independent multiplies (by odd constants, so no
    /// information is lost in each) and mixed once, rather than through a chain of mixes.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let ports = u64::from(self.src_port) << 24 | u64::from(self.dst_port) << 8 | u64::from(self.protocol);
        let x = self.src.fold().wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ self.dst.fold().rotate_left(32).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ ports.wrapping_mul(0x1656_67b1_9e37_79f9);
        mix64(x ^ seed)
    }

    /// The hash of the source address alone (the `ip_hash` scheduler, session persistence).
    #[inline]
    pub fn src_hash(&self, seed: u64) -> u64 {
        mix64(mix64(seed ^ self.src.fold()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapping_round_trips() {
        let a = Ipv4Addr::new(198, 18, 0, 7);
        let m = Addr::v4(a);
        assert_eq!(m.as_v4(), Some(a));
        assert_eq!(m.to_ip(), IpAddr::V4(a));
        assert_eq!(Addr::from(IpAddr::V6("::ffff:198.18.0.7".parse().unwrap())), m);
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(Addr::from(IpAddr::V6(v6)).as_v4(), None);
        assert_eq!(m.to_string(), "198.18.0.7");
    }

    #[test]
    fn prefixes_of_both_families() {
        let net: IpAddr = "198.18.0.1".parse().unwrap();
        assert!(in_prefix("198.18.0.254".parse().unwrap(), net, 24));
        assert!(!in_prefix("198.18.1.1".parse().unwrap(), net, 24));
        assert!(in_prefix("198.19.255.1".parse().unwrap(), net, 15));
        assert!(in_prefix("10.0.0.1".parse().unwrap(), net, 0));
        assert!(!in_prefix("198.18.0.2".parse().unwrap(), net, 32));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(in_prefix("2001:db8::ff".parse().unwrap(), v6, 64));
        assert!(!in_prefix("2001:db9::1".parse().unwrap(), v6, 32));
        assert!(!in_prefix("::ffff:198.18.0.2".parse().unwrap(), net, 24), "families differ");
        assert!(!in_prefix(net, "::ffff:198.18.0.1".parse().unwrap(), 24), "families differ");
        assert_eq!((max_prefix(net), max_prefix(v6)), (32, 128));
        let p = Prefix::new(v6, 64);
        assert!(p.contains("2001:db8::9".parse().unwrap()) && !p.contains(net));
        assert_eq!(p.to_string(), "2001:db8::1/64");
        assert_eq!((family(net), family(v6)), (0, 1));
        assert_eq!(of_family(&[net, v6], "2001:db8::5".parse().unwrap()), Some(v6));
        assert_eq!(of_family(&[v6], net), None);
    }

    #[test]
    fn every_field_moves_the_hash() {
        let k = FlowKey {
            src: Addr::v4(Ipv4Addr::new(198, 18, 0, 2)),
            dst: Addr::v4(Ipv4Addr::new(198, 18, 10, 1)),
            src_port: 40000,
            dst_port: 80,
            protocol: 6,
        };
        let h = k.hash(SELECT_SEED);
        let variants = [
            FlowKey { src: Addr::v4(Ipv4Addr::new(198, 18, 0, 3)), ..k },
            FlowKey { dst: Addr::v4(Ipv4Addr::new(198, 18, 10, 2)), ..k },
            FlowKey { src_port: 40001, ..k },
            FlowKey { dst_port: 81, ..k },
            FlowKey { protocol: 17, ..k },
        ];
        for v in variants {
            assert_ne!(v.hash(SELECT_SEED), h, "{v:?}");
        }
        assert_eq!(k.src_hash(1), FlowKey { src_port: 1, ..k }.src_hash(1));
    }
}
