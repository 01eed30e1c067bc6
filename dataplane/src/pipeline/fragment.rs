//! A TCP or UDP fragment to a VIP: every fragment of a datagram goes where the datagram's
//! 5-tuple flow goes. The first fragment (offset 0) carries the transport header: the worker's
//! fragment table learns its ports under (source, destination, protocol, identification),
//! and a later fragment takes them from there; one whose first fragment this worker has not
//! seen (or not within the table's 2 s) is dropped (`fragment_no_first`). Later fragments have
//! no transport header, so `nat` rewrites only their addresses; the first fragment's transport
//! checksum, which covers the whole datagram, is updated as any packet's is.

use super::context::{transport, Ctx, Network, ToService};
use crate::flow::Addr;
use crate::fragments::{FragKey, Ports};
use crate::stats::DropReason;
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::WireError;

/// The fragment at `data[l2..]` (TCP or UDP, to a VIP), received on `rx_port`, bound for its
/// datagram's service.
pub fn to_service(cx: &mut Ctx<'_>, rx_port: u16, data: &[u8], l2: usize) -> Result<ToService, DropReason> {
    let ip = Ipv4Header::parse(data.get(l2..).unwrap_or_default()).map_err(|_| DropReason::Ipv4Malformed)?;
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
    let now = cx.now_ns;
    let (l4, later) = if ip.at_offset_zero() {
        let payload =
            data.get(l2 + usize::from(ip.header_len)..l2 + usize::from(ip.total_len)).unwrap_or_default();
        let l4 = transport(ip.protocol, payload, false).map_err(|e| match e {
            WireError::Truncated => DropReason::L4Truncated,
            _ => DropReason::L4Malformed,
        })?;
        if let Some(table) = cx.fragments.as_deref_mut() {
            table.learn(&key, Ports { src: l4.0, dst: l4.1 }, now);
        }
        (l4, false)
    } else {
        let ports =
            cx.fragments.as_deref().and_then(|t| t.lookup(&key, now)).ok_or(DropReason::FragmentNoFirst)?;
        // A later TCP fragment's flags are not known: none (neither opening nor closing).
        let flags = (ip.protocol == ipv4::PROTO_TCP).then_some(0);
        ((ports.src, ports.dst, flags), true)
    };
    ToService::find(cx, (rx_port, l2), &Network::v4(&ip), l4, later).ok_or(DropReason::NoService)
}
