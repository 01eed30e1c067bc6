//! A TCP or UDP fragment to a VIP (IPv4, or IPv6 with a fragment header): every fragment of
//! a datagram goes where the datagram's 5-tuple flow goes. The first fragment (offset 0)
//! carries the transport header: the worker's fragment table learns its ports under (source,
//! destination, protocol, identification), and a later fragment takes them from there; one
//! whose first fragment this worker has not seen (or not within the table's 2 s) is dropped
//! (`fragment_no_first`). Later fragments have
//! no transport header, so `nat` rewrites only their addresses; the first fragment's transport
//! checksum, which covers the whole datagram, is updated as any packet's is.

use super::context::{transport, Ctx, Network, ToService};
use crate::flow::Addr;
use crate::fragments::{FragKey, Ports};
use crate::stats::DropReason;
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::WireError;

/// Ports and (TCP) flags of a packet to a service.
type Transport = (u16, u16, Option<u8>);

/// The fragment at `data[l2..]` (TCP or UDP, to a VIP; IPv4 or IPv6), received on `rx_port`,
/// bound for its datagram's service.
pub fn to_service(cx: &mut Ctx<'_>, rx_port: u16, data: &[u8], l2: usize) -> Result<ToService, DropReason> {
    let packet = data.get(l2..).unwrap_or_default();
    if packet.first().is_some_and(|v| v >> 4 == 6) {
        return to_service_v6(cx, rx_port, packet, l2);
    }
    let ip = Ipv4Header::parse(packet).map_err(|_| DropReason::Ipv4Malformed)?;
    // A fragment reaching past 65,535 bytes would make a datagram no IPv4 packet can be
    // ("ping of death"): no stack should be asked to reassemble it.
    if ip.frag_offset() + usize::from(ip.total_len - u16::from(ip.header_len)) > usize::from(u16::MAX) {
        return Err(DropReason::Ipv4Malformed);
    }
    let key = FragKey {
        src: Addr::v4(ip.src),
        dst: Addr::v4(ip.dst),
        protocol: ip.protocol,
        ident: ip.ident.into(),
    };
    let first = ip
        .at_offset_zero()
        .then(|| packet.get(usize::from(ip.header_len)..usize::from(ip.total_len)).unwrap_or_default());
    let (l4, later) = ports(cx, &key, first)?;
    ToService::find(cx, (rx_port, l2), &Network::v4(&ip), l4, later).ok_or(DropReason::NoService)
}

/// [`to_service`] for an IPv6 fragment (a fragment header in its chain), its IPv6 header at
/// the front of `packet`, `frame[l2..]`.
fn to_service_v6(cx: &mut Ctx<'_>, rx_port: u16, packet: &[u8], l2: usize) -> Result<ToService, DropReason> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::Ipv6Malformed)?;
    let upper = ipv6::upper_layer(packet).map_err(|_| DropReason::Ipv6Malformed)?;
    let f = upper.fragment.ok_or(DropReason::Ipv6Malformed)?;
    // As IPv4's: no datagram past 65,535 bytes of fragmentable part.
    if f.offset + ip.total_len().saturating_sub(upper.offset) > usize::from(u16::MAX) {
        return Err(DropReason::Ipv6Malformed);
    }
    let key = FragKey {
        src: Addr(u128::from(ip.src())),
        dst: Addr(u128::from(ip.dst())),
        protocol: upper.protocol,
        ident: f.ident,
    };
    let first = f.at_offset_zero().then(|| packet.get(upper.offset..ip.total_len()).unwrap_or_default());
    let (l4, later) = ports(cx, &key, first)?;
    ToService::find(cx, (rx_port, l2), &Network::v6(&ip, upper.protocol), l4, later)
        .ok_or(DropReason::NoService)
}

/// The ports of datagram `key`'s fragment: read from `first` (the first fragment's payload,
/// which the worker's table then keeps) or found in the table for a later one (`true`).
fn ports(cx: &mut Ctx<'_>, key: &FragKey, first: Option<&[u8]>) -> Result<(Transport, bool), DropReason> {
    let now = cx.now_ns;
    let Some(payload) = first else {
        let ports =
            cx.fragments.as_deref().and_then(|t| t.lookup(key, now)).ok_or(DropReason::FragmentNoFirst)?;
        // A later TCP fragment's flags are not known: none (neither opening nor closing).
        let flags = (key.protocol == ipv4::PROTO_TCP).then_some(0);
        return Ok(((ports.src, ports.dst, flags), true));
    };
    let l4 = transport(key.protocol, payload, false).map_err(|e| match e {
        WireError::Truncated => DropReason::L4Truncated,
        _ => DropReason::L4Malformed,
    })?;
    if let Some(table) = cx.fragments.as_deref_mut() {
        table.learn(key, Ports { src: l4.0, dst: l4.1 }, now);
    }
    Ok((l4, false))
}
