//! Neighbor Discovery (RFC 4861) on the data ports: neighbor solicitations and advertisements
//! read and validated (7.1.1, 7.1.2), an advertisement answering a solicitation, solicitations
//! to resolve a neighbor, unsolicited advertisements; and the multicast addresses they go to.
//!
//! The messages are ICMPv6 (next header 58) in packets of hop limit 255. A message here is the
//! ICMPv6 message exactly (no link padding): its checksum covers its length.

use super::icmpv6::{self, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use super::ipv6::{self, Ipv6Repr};
use super::Mac;
use std::net::Ipv6Addr;

/// The hop limit of every Neighbor Discovery packet, sent and accepted (RFC 4861 7.1).
pub const HOP_LIMIT: u8 = 255;
/// A solicitation or advertisement without options: the ICMPv6 header and the target.
pub const MSG_LEN: usize = 24;
/// With one link-layer address option for Ethernet.
pub const MSG_WITH_LL_LEN: usize = MSG_LEN + 8;
/// A packet the appliance sends: the IPv6 header and a message with a link-layer option.
pub const PACKET_LEN: usize = ipv6::HEADER_LEN + MSG_WITH_LL_LEN;

pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;

/// Advertisement flags, in byte 4.
pub const FLAG_ROUTER: u8 = 0x80;
pub const FLAG_SOLICITED: u8 = 0x40;
pub const FLAG_OVERRIDE: u8 = 0x20;

/// All nodes on the link, ff02::1: where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

mod field {
    pub const FLAGS: usize = 4;
    pub const TARGET: core::ops::Range<usize> = 8..24;
}

/// Why a solicitation or advertisement was refused: each check of RFC 4861 7.1.1 / 7.1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdError {
    /// Fewer than 24 bytes.
    Truncated,
    /// Not the message type asked for.
    Type,
    /// The packet's hop limit is not 255: it was forwarded, so is not from the link.
    HopLimit,
    /// The ICMPv6 code is not 0.
    Code,
    /// The ICMPv6 checksum is wrong.
    Checksum,
    /// An option of length zero, or running past the message.
    OptionLength,
    /// The target is a multicast address.
    MulticastTarget,
    /// A solicitation from the unspecified address (duplicate address detection) not sent to a
    /// solicited-node address, or with a source link-layer address option.
    UnspecifiedSource,
    /// An advertisement to a multicast address with the solicited flag set.
    SolicitedToMulticast,
    /// The packet's source is a multicast address, which no packet has (RFC 4291 2.7); an
    /// answer would go to a group.
    MulticastSource,
}

/// A neighbor solicitation as [`parse_ns`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicit {
    pub target: Ipv6Addr,
    /// The source link-layer address option's address, if there is one of Ethernet's length.
    pub source_mac: Option<Mac>,
}

/// A neighbor advertisement as [`parse_na`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvert {
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The target link-layer address option's address, if there is one of Ethernet's length.
    pub target_mac: Option<Mac>,
}

/// Reads and validates a neighbor solicitation `m` carried from `src` to `dst` in a packet of
/// hop limit `hop_limit` (RFC 4861 7.1.1).
pub fn parse_ns(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Result<NeighborSolicit, NdError> {
    check(m, TYPE_NEIGHBOR_SOLICIT, src, dst, hop_limit)?;
    let source_mac = ll_option(&m[MSG_LEN..], OPT_SOURCE_LL)?;
    let target = target(m);
    if target.is_multicast() {
        return Err(NdError::MulticastTarget);
    }
    if src.is_unspecified() && (!is_solicited_node(dst) || source_mac.is_some()) {
        return Err(NdError::UnspecifiedSource);
    }
    Ok(NeighborSolicit { target, source_mac })
}

/// Reads and validates a neighbor advertisement `m` carried from `src` to `dst` in a packet of
/// hop limit `hop_limit` (RFC 4861 7.1.2).
pub fn parse_na(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Result<NeighborAdvert, NdError> {
    check(m, TYPE_NEIGHBOR_ADVERT, src, dst, hop_limit)?;
    let target_mac = ll_option(&m[MSG_LEN..], OPT_TARGET_LL)?;
    let target = target(m);
    if target.is_multicast() {
        return Err(NdError::MulticastTarget);
    }
    let flags = m[field::FLAGS];
    if dst.is_multicast() && flags & FLAG_SOLICITED != 0 {
        return Err(NdError::SolicitedToMulticast);
    }
    Ok(NeighborAdvert {
        router: flags & FLAG_ROUTER != 0,
        solicited: flags & FLAG_SOLICITED != 0,
        override_flag: flags & FLAG_OVERRIDE != 0,
        target,
        target_mac,
    })
}

/// The checks both messages share: length, type, hop limit, code, checksum, source.
fn check(m: &[u8], msg_type: u8, src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Result<(), NdError> {
    if m.len() < MSG_LEN {
        return Err(NdError::Truncated);
    }
    if m[0] != msg_type {
        return Err(NdError::Type);
    }
    if hop_limit != HOP_LIMIT {
        return Err(NdError::HopLimit);
    }
    if m[1] != 0 {
        return Err(NdError::Code);
    }
    if !icmpv6::verify(m, src, dst) {
        return Err(NdError::Checksum);
    }
    if src.is_multicast() {
        return Err(NdError::MulticastSource);
    }
    Ok(())
}

fn target(m: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&m[field::TARGET]);
    Ipv6Addr::from(a)
}

/// Walks the options `opts` (type, length in 8-byte units, data), each checked, and returns the
/// address of the first link-layer address option of type `kind` and Ethernet's length (one
/// unit: type, length, 6 bytes); other options, and link-layer ones of other lengths, are
/// skipped (RFC 4861 4.6: ignored).
fn ll_option(mut opts: &[u8], kind: u8) -> Result<Option<Mac>, NdError> {
    let mut found = None;
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).ok_or(NdError::OptionLength)?) * 8;
        if len == 0 || len > opts.len() {
            return Err(NdError::OptionLength);
        }
        if found.is_none() && opts[0] == kind && len == 8 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&opts[2..8]);
            found = Some(mac);
        }
        opts = &opts[len..];
    }
    Ok(found)
}

/// Writes a message into `out` and returns its length, 0 if `out` is too short: `msg_type`,
/// code 0, byte 4 `flags`, the target, a link-layer option (its type and address) if given,
/// the checksum for a packet from `src` to `dst`.
fn emit(
    out: &mut [u8],
    (msg_type, flags): (u8, u8),
    target: Ipv6Addr,
    option: Option<(u8, Mac)>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> usize {
    let len = if option.is_some() { MSG_WITH_LL_LEN } else { MSG_LEN };
    let Some(m) = out.get_mut(..len) else {
        return 0;
    };
    m[..8].copy_from_slice(&[msg_type, 0, 0, 0, flags, 0, 0, 0]);
    m[field::TARGET].copy_from_slice(&target.octets());
    if let Some((kind, mac)) = option {
        m[MSG_LEN] = kind;
        m[MSG_LEN + 1] = 1;
        m[MSG_LEN + 2..].copy_from_slice(&mac);
    }
    icmpv6::fill_checksum(m, src, dst);
    len
}

/// Writes a packet from `src` to `dst` into `b`: the IPv6 header (no extension header, hop
/// limit [`HOP_LIMIT`]), then the message `message` writes after it (returning its length, 0
/// if it has no room). Returns the packet's length, 0 if `b` is too short.
fn emit_packet(
    b: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    message: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let Some((header, m)) = b.split_at_mut_checked(ipv6::HEADER_LEN) else {
        return 0;
    };
    let len = message(m);
    if len == 0 {
        return 0;
    }
    let repr = Ipv6Repr {
        src,
        dst,
        next_header: ipv6::NEXT_ICMPV6,
        payload_len: len,
        traffic_class: 0,
        flow_label: 0,
        hop_limit: HOP_LIMIT,
    };
    repr.emit(header);
    ipv6::HEADER_LEN + len
}

impl NeighborSolicit {
    /// Writes the solicitation into `out` with its checksum for a packet from `src` to `dst`
    /// (the caller's IPv6 header: hop limit [`HOP_LIMIT`]). Returns its length (24, or 32 with
    /// the source link-layer option), 0 if `out` is too short.
    pub fn emit(&self, out: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> usize {
        let option = self.source_mac.map(|mac| (OPT_SOURCE_LL, mac));
        emit(out, (TYPE_NEIGHBOR_SOLICIT, 0), self.target, option, src, dst)
    }

    /// The solicitation resolving `target`'s link-layer address, with ours (`mac`), and where
    /// it goes: `target`'s solicited-node multicast address (RFC 4861 7.2.2).
    pub fn resolve(target: Ipv6Addr, mac: Mac) -> (Self, Ipv6Addr) {
        (NeighborSolicit { target, source_mac: Some(mac) }, solicited_node(target))
    }

    /// Writes the packet carrying the solicitation from `src` to `dst` into `b`: the IPv6
    /// header (hop limit [`HOP_LIMIT`]), then the message. Returns its length, 0 if `b` is
    /// too short.
    pub fn emit_packet(&self, b: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> usize {
        emit_packet(b, src, dst, |m| self.emit(m, src, dst))
    }
}

impl NeighborAdvert {
    /// Writes the advertisement into `out` with its checksum for a packet from `src` to `dst`
    /// (the caller's IPv6 header: hop limit [`HOP_LIMIT`]). Returns its length (24, or 32 with
    /// the target link-layer option), 0 if `out` is too short.
    pub fn emit(&self, out: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> usize {
        let flags = if self.router { FLAG_ROUTER } else { 0 }
            | if self.solicited { FLAG_SOLICITED } else { 0 }
            | if self.override_flag { FLAG_OVERRIDE } else { 0 };
        let option = self.target_mac.map(|mac| (OPT_TARGET_LL, mac));
        emit(out, (TYPE_NEIGHBOR_ADVERT, flags), self.target, option, src, dst)
    }

    /// The advertisement answering `ns` (for one of our addresses, its target) that came from
    /// `ns_src`: router flag clear, override set, our `mac` as the target's; and where it goes
    /// (RFC 4861 7.2.4): back to `ns_src`, solicited; to all nodes, unsolicited, when
    /// `ns_src` is unspecified (duplicate address detection). Sent from the target address.
    pub fn answer(ns: &NeighborSolicit, ns_src: Ipv6Addr, mac: Mac) -> (Self, Ipv6Addr) {
        let dad = ns_src.is_unspecified();
        let na = NeighborAdvert {
            router: false,
            solicited: !dad,
            override_flag: true,
            target: ns.target,
            target_mac: Some(mac),
        };
        (na, if dad { ALL_NODES } else { ns_src })
    }

    /// An unsolicited advertisement of our `target` at `mac` (override set, RFC 4861 7.2.6), and
    /// where it goes: all nodes.
    pub fn unsolicited(target: Ipv6Addr, mac: Mac) -> (Self, Ipv6Addr) {
        let na = NeighborAdvert {
            router: false,
            solicited: false,
            override_flag: true,
            target,
            target_mac: Some(mac),
        };
        (na, ALL_NODES)
    }

    /// Writes the packet carrying the advertisement from `src` to `dst` into `b`: the IPv6
    /// header (hop limit [`HOP_LIMIT`]), then the message. Returns its length, 0 if `b` is
    /// too short.
    pub fn emit_packet(&self, b: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> usize {
        emit_packet(b, src, dst, |m| self.emit(m, src, dst))
    }
}

/// The solicited-node multicast address of `a` (RFC 4291 2.7.1): ff02::1:ff00:0 and the low
/// 24 bits of `a`.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// Whether `a` is a solicited-node multicast address.
pub fn is_solicited_node(a: Ipv6Addr) -> bool {
    a.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// The Ethernet multicast address of the IPv6 multicast address `a` (RFC 2464 7): 33:33 and
/// the low 32 bits of `a`.
pub fn multicast_mac(a: Ipv6Addr) -> Mac {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A = '2001:db8::1' (a neighbor, MA = 02:00:00:00:00:0a), T = '2001:db8::80' (ours,
    // MT = 02:53:4c:00:00:01); NSMA = ff02::1:ff00:80, T's solicited-node address.
    fn a() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }
    fn t() -> Ipv6Addr {
        "2001:db8::80".parse().unwrap()
    }
    fn nsma() -> Ipv6Addr {
        "ff02::1:ff00:80".parse().unwrap()
    }
    const MA: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const MT: Mac = [0x02, 0x53, 0x4c, 0, 0, 0x01];

    // raw(IPv6(src=A, dst=NSMA, hlim=255)/ICMPv6ND_NS(tgt=T)/ICMPv6NDOptSrcLLAddr(lladdr=MA))[40:]
    const NS: [u8; 32] = [
        0x87, 0x00, 0x1b, 0x22, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
    ];
    // raw(IPv6(src='::', dst=NSMA, hlim=255)/ICMPv6ND_NS(tgt=T))[40:]
    const NS_DAD: [u8; 24] = [
        0x87, 0x00, 0x4b, 0xef, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
    ];
    // raw(IPv6(src=T, dst=A, hlim=255)/ICMPv6ND_NA(tgt=T, R=0, S=1, O=1)
    //     /ICMPv6NDOptDstLLAddr(lladdr=MT))[40:]
    const NA: [u8; 32] = [
        0x88, 0x00, 0x3d, 0x23, 0x60, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x02, 0x01, 0x02, 0x53, 0x4c, 0x00, 0x00, 0x01,
    ];
    // raw(IPv6(src=T, dst='ff02::1', hlim=255)/ICMPv6ND_NA(tgt=T, R=0, S=0, O=1)
    //     /ICMPv6NDOptDstLLAddr(lladdr=MT))[40:]
    const NA_UNSOLICITED: [u8; 32] = [
        0x88, 0x00, 0xab, 0xd9, 0x20, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x02, 0x01, 0x02, 0x53, 0x4c, 0x00, 0x00, 0x01,
    ];
    // raw(IPv6(src=A, dst=T, hlim=255)/ICMPv6ND_NA(tgt=A, R=1, S=1, O=0)/ICMPv6NDOptMTU(mtu=1500)
    //     /ICMPv6NDOptDstLLAddr(lladdr=MA))[40:]
    const NA_ROUTER: [u8; 40] = [
        0x88, 0x00, 0x1f, 0x07, 0xc0, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x05, 0xdc, 0x02, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
    ];
    // raw(IPv6(src=T, dst='ff02::1:ff00:1', hlim=255)/ICMPv6ND_NS(tgt=A)
    //     /ICMPv6NDOptSrcLLAddr(lladdr=MT))[40:]
    const NS_RESOLVE: [u8; 32] = [
        0x87, 0x00, 0xcf, 0x56, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x02, 0x53, 0x4c, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn reads_what_scapy_builds() {
        assert_eq!(
            parse_ns(&NS, a(), nsma(), 255),
            Ok(NeighborSolicit { target: t(), source_mac: Some(MA) })
        );
        let unspecified = Ipv6Addr::UNSPECIFIED;
        assert_eq!(
            parse_ns(&NS_DAD, unspecified, nsma(), 255),
            Ok(NeighborSolicit { target: t(), source_mac: None })
        );
        let na = NeighborAdvert {
            router: false,
            solicited: true,
            override_flag: true,
            target: t(),
            target_mac: Some(MT),
        };
        assert_eq!(parse_na(&NA, t(), a(), 255), Ok(na));
        let unsolicited = NeighborAdvert { solicited: false, ..na };
        assert_eq!(parse_na(&NA_UNSOLICITED, t(), ALL_NODES, 255), Ok(unsolicited));
        // Another option first (MTU), skipped.
        let router = NeighborAdvert {
            router: true,
            solicited: true,
            override_flag: false,
            target: a(),
            target_mac: Some(MA),
        };
        assert_eq!(parse_na(&NA_ROUTER, a(), t(), 255), Ok(router));
    }

    #[test]
    fn emits_what_scapy_builds() {
        let ns = parse_ns(&NS, a(), nsma(), 255).unwrap();
        let (na, to) = NeighborAdvert::answer(&ns, a(), MT);
        let mut out = [0xeeu8; 40];
        assert_eq!((na.emit(&mut out, t(), to), to), (32, a()));
        assert_eq!(out[..32], NA);
        let ns = parse_ns(&NS_DAD, Ipv6Addr::UNSPECIFIED, nsma(), 255).unwrap();
        let (na, to) = NeighborAdvert::answer(&ns, Ipv6Addr::UNSPECIFIED, MT);
        assert_eq!((na.emit(&mut out, t(), to), to), (32, ALL_NODES));
        assert_eq!(out[..32], NA_UNSOLICITED, "to all nodes, not solicited");
        let (na, to) = NeighborAdvert::unsolicited(t(), MT);
        assert_eq!((na.emit(&mut out, t(), to), to), (32, ALL_NODES));
        assert_eq!(out[..32], NA_UNSOLICITED);
        let (ns, to) = NeighborSolicit::resolve(a(), MT);
        assert_eq!(to, "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ns.emit(&mut out, t(), to), 32);
        assert_eq!(out[..32], NS_RESOLVE);
        let dad = NeighborSolicit { target: t(), source_mac: None };
        assert_eq!(dad.emit(&mut out, Ipv6Addr::UNSPECIFIED, nsma()), 24);
        assert_eq!(out[..24], NS_DAD);
        assert_eq!(dad.emit(&mut out[..23], Ipv6Addr::UNSPECIFIED, nsma()), 0);
        assert_eq!(na.emit(&mut out[..31], t(), to), 0);
    }

    // raw(IPv6(src=T, dst='ff02::1:ff00:1', hlim=255)/ICMPv6ND_NS(tgt=A)
    //     /ICMPv6NDOptSrcLLAddr(lladdr=MT))[:40]: NS_RESOLVE's IPv6 header
    const NS_RESOLVE_HEADER: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0xff, 0x00, 0x00, 0x01,
    ];
    // raw(IPv6(src=T, dst=A, hlim=255)/ICMPv6ND_NA(tgt=T, R=0, S=1, O=1)
    //     /ICMPv6NDOptDstLLAddr(lladdr=MT))[:40]: NA's IPv6 header
    const NA_HEADER: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn emits_whole_packets_as_scapy_builds_them() {
        let mut out = [0xeeu8; PACKET_LEN + 4];
        let (ns, to) = NeighborSolicit::resolve(a(), MT);
        assert_eq!(ns.emit_packet(&mut out, t(), to), PACKET_LEN);
        assert_eq!(
            (out[..40].to_vec(), out[40..PACKET_LEN].to_vec()),
            (NS_RESOLVE_HEADER.to_vec(), NS_RESOLVE.to_vec())
        );
        let ns = parse_ns(&NS, a(), nsma(), 255).unwrap();
        let (na, to) = NeighborAdvert::answer(&ns, a(), MT);
        assert_eq!(na.emit_packet(&mut out, t(), to), PACKET_LEN);
        assert_eq!((out[..40].to_vec(), out[40..PACKET_LEN].to_vec()), (NA_HEADER.to_vec(), NA.to_vec()));
        assert_eq!(out[PACKET_LEN..], [0xee; 4], "nothing written past the packet");
        assert_eq!(na.emit_packet(&mut out[..PACKET_LEN - 1], t(), to), 0);
        assert_eq!(na.emit_packet(&mut out[..39], t(), to), 0);
    }

    #[test]
    fn refuses_each_rule_of_7_1() {
        let with = |m: &[u8], at: usize, v: u8| {
            let mut m = m.to_vec();
            m[at] = v;
            m
        };
        // Recomputes the checksum so that only the rule under test is broken.
        let fixed = |mut m: Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr| {
            icmpv6::fill_checksum(&mut m, src, dst);
            m
        };
        let ns = |m: &[u8]| parse_ns(m, a(), nsma(), 255);
        assert_eq!(ns(&NS[..23]), Err(NdError::Truncated));
        assert_eq!(ns(&NA), Err(NdError::Type));
        assert_eq!(parse_ns(&NS, a(), nsma(), 254), Err(NdError::HopLimit));
        assert_eq!(ns(&fixed(with(&NS, 1, 1), a(), nsma())), Err(NdError::Code));
        assert_eq!(ns(&with(&NS, 31, 0x0b)), Err(NdError::Checksum));
        assert_eq!(parse_ns(&NS, t(), nsma(), 255), Err(NdError::Checksum), "the pseudo-header counts");
        assert_eq!(ns(&fixed(with(&NS, 25, 0), a(), nsma())), Err(NdError::OptionLength));
        assert_eq!(ns(&fixed(with(&NS, 25, 2), a(), nsma())), Err(NdError::OptionLength), "past the end");
        assert_eq!(ns(&fixed(NS[..25].to_vec(), a(), nsma())), Err(NdError::OptionLength), "no length");
        assert_eq!(ns(&fixed(with(&NS, 8, 0xff), a(), nsma())), Err(NdError::MulticastTarget));
        let u = Ipv6Addr::UNSPECIFIED;
        assert_eq!(parse_ns(&fixed(NS.to_vec(), u, nsma()), u, nsma(), 255), Err(NdError::UnspecifiedSource));
        assert_eq!(parse_ns(&fixed(NS_DAD.to_vec(), u, t()), u, t(), 255), Err(NdError::UnspecifiedSource));
        let group = ALL_NODES;
        assert_eq!(
            parse_ns(&fixed(NS.to_vec(), group, nsma()), group, nsma(), 255),
            Err(NdError::MulticastSource)
        );
        let na = |m: &[u8], dst: Ipv6Addr| parse_na(m, t(), dst, 255);
        assert_eq!(parse_na(&fixed(NA.to_vec(), group, a()), group, a(), 255), Err(NdError::MulticastSource));
        assert_eq!(na(&NS, a()), Err(NdError::Type));
        assert_eq!(parse_na(&NA, t(), a(), 64), Err(NdError::HopLimit));
        assert_eq!(na(&fixed(with(&NA, 8, 0xff), t(), a()), a()), Err(NdError::MulticastTarget));
        assert_eq!(na(&fixed(NA.to_vec(), t(), ALL_NODES), ALL_NODES), Err(NdError::SolicitedToMulticast));
        // A link-layer option of another length is not Ethernet's: ignored.
        let mut long = NA.to_vec();
        long.extend_from_slice(&[0; 8]);
        long[25] = 2;
        let got = na(&fixed(long, t(), a()), a()).unwrap();
        assert_eq!(got.target_mac, None);
    }

    #[test]
    fn multicast_addresses() {
        // scapy: in6_getnsma(T) = ff02::1:ff00:80, in6_getnsmac(ff02::1:ff00:80) = 33:33:ff:00:00:80;
        // for 2001:db8:1234:5678:9abc:def0:1122:3344: ff02::1:ff22:3344, 33:33:ff:22:33:44
        assert_eq!(solicited_node(t()), nsma());
        assert_eq!(multicast_mac(nsma()), [0x33, 0x33, 0xff, 0, 0, 0x80]);
        let x: Ipv6Addr = "2001:db8:1234:5678:9abc:def0:1122:3344".parse().unwrap();
        assert_eq!(solicited_node(x), "ff02::1:ff22:3344".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(solicited_node(x)), [0x33, 0x33, 0xff, 0x22, 0x33, 0x44]);
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
        assert!(is_solicited_node(nsma()) && !is_solicited_node(ALL_NODES) && !is_solicited_node(t()));
    }

    proptest! {
        #[test]
        fn never_panics(m in proptest::collection::vec(any::<u8>(), 0..80), hl in any::<u8>(), dad in any::<bool>()) {
            let src = if dad { Ipv6Addr::UNSPECIFIED } else { a() };
            // Half get a right checksum, so that the checks after it run.
            let mut m = m;
            if m.len() >= 4 && hl & 1 == 0 {
                icmpv6::fill_checksum(&mut m, src, nsma());
            }
            let _ = parse_ns(&m, src, nsma(), hl | 1);
            let _ = parse_na(&m, src, nsma(), hl | 1);
            let _ = parse_ns(&m, src, nsma(), HOP_LIMIT);
            let _ = parse_na(&m, src, nsma(), HOP_LIMIT);
        }

        #[test]
        fn emitted_messages_read_back(target in any::<u128>(), mac in any::<[u8; 6]>(), with_mac in any::<bool>(),
                                      flags in any::<u8>()) {
            let target = Ipv6Addr::from(target & !(0xff << 120)); // not multicast
            let mac = with_mac.then_some(mac);
            let mut out = [0u8; 32];
            let ns = NeighborSolicit { target, source_mac: mac };
            let n = ns.emit(&mut out, a(), nsma());
            prop_assert_eq!(parse_ns(&out[..n], a(), nsma(), HOP_LIMIT), Ok(ns));
            let na = NeighborAdvert {
                router: flags & 1 != 0,
                solicited: flags & 2 != 0,
                override_flag: flags & 4 != 0,
                target,
                target_mac: mac,
            };
            let n = na.emit(&mut out, t(), a());
            prop_assert_eq!(parse_na(&out[..n], t(), a(), HOP_LIMIT), Ok(na));
        }
    }
}
