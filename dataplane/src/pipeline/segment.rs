//! TCP segments the appliance reads and writes in a frame itself (the SYN proxy's
//! handshakes): the parts it reads, and a whole segment without data written in place.

use crate::io::Frame;
use crate::wire::ipv4::{self, Ipv4Repr, DEFAULT_TTL};
use crate::wire::ipv6::{self, Ipv6Repr};
use crate::wire::tcp_options::{self, TcpOptions};
use crate::wire::{TcpPacket, TcpRepr, WireError};
use std::net::{IpAddr, Ipv6Addr};

/// The parts of a TCP segment the proxy reads.
#[derive(Debug, Clone)]
pub struct SegView {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: usize,
    pub opts: TcpOptions,
}

/// Where the transport header and the packet's end are in the IPv4 or IPv6 packet at
/// `b[at..]` (past IPv6 extension headers), as offsets into `b`.
fn transport_range(b: &[u8], at: usize) -> Result<std::ops::Range<usize>, WireError> {
    let (_, r) = crate::wire::transport_of(b.get(at..).ok_or(WireError::Truncated)?)?;
    Ok(at + r.start..at + r.end)
}

/// Reads the TCP packet (IPv4 or IPv6) at `b[at..]` (its headers were checked by the first
/// pass).
pub fn read(b: &[u8], at: usize) -> Result<SegView, WireError> {
    let t = TcpPacket::new_checked(&b[transport_range(b, at)?])?;
    let opts = tcp_options::parse(t.options())?;
    Ok(SegView {
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        window: t.window(),
        payload_len: t.payload().len(),
        opts,
    })
}

/// Lowers the MSS option of the SYN or SYN-ACK at `b[at..]` (IPv4 or IPv6, headers checked)
/// to `max` when it offers more; whether it did.
pub fn clamp_mss(b: &mut [u8], at: usize, max: u16) -> bool {
    let Ok(range) = transport_range(b, at) else {
        return false;
    };
    tcp_options::clamp_mss(&mut b[range], max).is_some()
}

/// Sizes the frame to `len` bytes (appending zeros or trimming the end).
pub fn resize<F: Frame>(frame: &mut F, len: usize) -> bool {
    let cur = frame.data().len();
    if len >= cur {
        frame.append(len - cur)
    } else {
        frame.trim(cur - len)
    }
}

/// Writes a TCP segment without data at `frame[at..]` (IPv4 with TOS and identification
/// `(tos, ident)`, or IPv6 with traffic class `tos`), making the frame end with it; its
/// length. `None` if the frame cannot hold it, or for addresses of two families.
pub fn write<F: Frame>(
    frame: &mut F,
    at: usize,
    (src, dst): (IpAddr, IpAddr),
    (tos, ident): (u8, u16),
    t: &TcpRepr<'_>,
) -> Option<usize> {
    let (src, dst) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => return write_v6(frame, at, (s, d), tos, t),
        _ => return None,
    };
    let len = ipv4::HEADER_LEN + t.header_len();
    if !resize(frame, at + len) {
        return None;
    }
    let b = frame.data_mut();
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: ipv4::PROTO_TCP,
        payload_len: t.header_len(),
        tos,
        ident,
        dont_frag: true,
        ttl: DEFAULT_TTL,
    };
    ip.emit(&mut b[at..at + ipv4::HEADER_LEN]);
    t.emit_v4(&mut b[at + ipv4::HEADER_LEN..at + len], src, dst);
    Some(len)
}

/// [`write`] for IPv6.
fn write_v6<F: Frame>(
    frame: &mut F,
    at: usize,
    (src, dst): (Ipv6Addr, Ipv6Addr),
    traffic_class: u8,
    t: &TcpRepr<'_>,
) -> Option<usize> {
    let len = ipv6::HEADER_LEN + t.header_len();
    if !resize(frame, at + len) {
        return None;
    }
    let b = frame.data_mut();
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: ipv6::NEXT_TCP,
        payload_len: t.header_len(),
        traffic_class,
        flow_label: 0,
        hop_limit: ipv6::DEFAULT_HOP_LIMIT,
    };
    ip.emit(&mut b[at..at + ipv6::HEADER_LEN]);
    t.emit_v6(&mut b[at + ipv6::HEADER_LEN..at + len], src, dst);
    Some(len)
}
