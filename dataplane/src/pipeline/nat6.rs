//! The IPv6 half of [`super::nat`] (NAT66): a backend's IPv6 reply read out of its tunnel
//! (past its extension headers, at most `wire::ipv6::MAX_EXT_HEADERS` of them), and an ICMPv6
//! error a backend sent about a client's packet turned into the VIP's form for the client.

use crate::stats::DropReason;
use crate::wire::endpoint::End;
use crate::wire::icmpv6;
use crate::wire::icmpv6_error;
use crate::wire::ipv6::{self, FragmentHeader, Ipv6Packet};
use crate::wire::{TcpPacket, UdpPacket};
use std::net::{IpAddr, Ipv6Addr};

/// The reply inside the tunnel, of either family (read here and in `nat`, which imports it:
/// a type lives with its lowest user).
pub(super) struct Reply {
    /// Where its IP header starts in the frame, and its length.
    pub at: usize,
    pub len: usize,
    pub vpc: Option<u32>,
    pub backend: IpAddr,
    pub client: IpAddr,
    pub bport: u16,
    pub cport: u16,
    pub protocol: u8,
    /// TCP flags (`None` for UDP).
    pub flags: Option<u8>,
    /// An ICMP error the backend sent about the flow (the rest is its quote's flow).
    pub icmp: bool,
    /// A fragment past the first (no transport header: its ports are its first's).
    pub later_fragment: bool,
    /// A fragment's identification (first or later): its ports are learned or found by it.
    pub fragment: Option<u32>,
}

/// The IPv6 reply at the front of `b` (`frame[at..]`, link padding after it allowed), from a
/// tunnel of VPC `vpc`: backend -> client, TCP or UDP (a first fragment, or a later one whose
/// ports its first gives), or an ICMPv6 error about such a flow.
pub(super) fn open(b: &[u8], at: usize, vpc: Option<u32>) -> Result<Reply, DropReason> {
    let bad = DropReason::NatReplyMalformed;
    let ip = Ipv6Packet::new_checked(b).map_err(|_| bad)?;
    let upper = ipv6::upper_layer(b).map_err(|_| bad)?;
    let l4 = b.get(upper.offset..ip.total_len()).ok_or(bad)?;
    // An atomic fragment (offset 0, no more) is a whole packet.
    let fragment = upper.fragment.filter(|f| f.more || !f.at_offset_zero());
    let reply = Reply {
        at,
        len: ip.total_len(),
        vpc,
        backend: ip.src().into(),
        client: ip.dst().into(),
        bport: 0,
        cport: 0,
        protocol: upper.protocol,
        flags: None,
        icmp: false,
        later_fragment: false,
        fragment: fragment.map(|f| f.ident),
    };
    let tcp = upper.protocol == ipv6::NEXT_TCP;
    if !tcp && upper.protocol != ipv6::NEXT_UDP {
        return match upper.protocol {
            ipv6::NEXT_ICMPV6 if fragment.is_none() => icmp_error(l4, (ip.src(), ip.dst()), reply),
            _ => Err(bad),
        };
    }
    if fragment.is_some_and(|f| !f.at_offset_zero()) {
        // Neither opening nor closing: no flags.
        return Ok(Reply { flags: tcp.then_some(0), later_fragment: true, ..reply });
    }
    let (bport, cport, flags) = ports(tcp, l4, fragment).map_err(|_| bad)?;
    Ok(Reply { bport, cport, flags, ..reply })
}

/// The ports (backend's, client's) and TCP flags of the transport header at the front of
/// `l4`; a UDP first fragment's length counts the whole datagram.
fn ports(
    tcp: bool,
    l4: &[u8],
    fragment: Option<FragmentHeader>,
) -> Result<(u16, u16, Option<u8>), crate::wire::WireError> {
    if tcp {
        TcpPacket::new_checked(l4).map(|t| (t.src_port(), t.dst_port(), Some(t.flags())))
    } else if fragment.is_some() {
        UdpPacket::first_fragment(l4).map(|u| (u.src_port(), u.dst_port(), None))
    } else {
        UdpPacket::new_checked(l4).map(|u| (u.src_port(), u.dst_port(), None))
    }
}

/// An ICMPv6 error `m` from a backend (carried `(src, dst)`) about a packet it got from a
/// client (client -> backend:port, quoted): the reply of that flow it is.
fn icmp_error(m: &[u8], (src, dst): (Ipv6Addr, Ipv6Addr), reply: Reply) -> Result<Reply, DropReason> {
    let e = icmpv6_error::parse(m, src, dst).map_err(|_| DropReason::IcmpErrorMalformed)?;
    if !e.checksum_ok {
        return Err(DropReason::IcmpBadChecksum);
    }
    let q = e.quoted;
    if q.dst != src {
        return Err(DropReason::IcmpErrorUnknown);
    }
    Ok(Reply {
        backend: q.dst.into(),
        client: q.src.into(),
        bport: q.dst_port,
        cport: q.src_port,
        protocol: q.protocol,
        icmp: true,
        ..reply
    })
}

/// The backend's ICMPv6 error at the front of `b` (as [`open`] read it) in the VIP's form:
/// from `vip`, quoting the client's packet as it was sent (to `vip`:`port`), its checksum
/// updated for both (the pseudo-header holds the source). Nothing changes on an error.
pub(super) fn icmp_to_client(b: &mut [u8], vip: Ipv6Addr, port: u16) -> Result<(), DropReason> {
    let bad = DropReason::IcmpErrorMalformed;
    let at = ipv6::upper_layer(b).map_err(|_| bad)?.offset;
    let mut ip = Ipv6Packet::new_checked(b).map_err(|_| bad)?;
    let backend = ip.src();
    let m = ip.payload_mut().get_mut(at.saturating_sub(ipv6::HEADER_LEN)..).ok_or(bad)?;
    icmpv6_error::rewrite_quoted(m, End::Dst, vip.into(), port).map_err(|_| bad)?;
    icmpv6::update_checksum_for_address(m, backend, vip);
    ip.set_src(vip);
    Ok(())
}
