//! The first pass over a frame: Ethernet checks, then what the packet is for. Parses and
//! decides only; nothing here writes the frame.

use super::context::{Ctx, Network, ToService};
use crate::io::Frame;
use crate::stats::DropReason;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmp_error;
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::ipv6;
use crate::wire::{self, TcpPacket, UdpPacket, WireError};
use std::net::IpAddr;

/// A tunneled packet to the appliance's address (a NAT reply): the outer IPv4 or IPv6 header
/// at `frame[l2..]`, `header_len` long (IPv6: its extension headers included), the packet
/// `total` long, tunnel protocol `proto` (IPv4's protocol or IPv6's next header, which share
/// their numbers: 4 IPv4 in IP, 41 IPv6 in IP, 47 GRE).
#[derive(Debug, Clone, Copy)]
pub struct Tunneled {
    pub l2: usize,
    pub header_len: usize,
    pub total: usize,
    pub proto: u8,
}

impl Tunneled {
    /// Whether `proto` is a tunnel that carries NAT replies back.
    #[inline]
    pub fn carries(proto: u8) -> bool {
        matches!(proto, ipv4::PROTO_GRE | ipv4::PROTO_IPIP | ipv6::NEXT_IPV6)
    }
}

/// What a frame is for.
#[derive(Debug, Clone, Copy)]
pub enum Class {
    Service(ToService),
    Local(Local),
    /// IPv6, its header at `frame[l2..]`: for `classify6`, the first pass's IPv6 half.
    Ipv6 {
        l2: usize,
    },
}

/// A frame that is not for a service.
#[derive(Debug, Clone, Copy)]
pub enum Local {
    Drop(DropReason),
    /// ARP, its header at `frame[l2..]`.
    Arp {
        l2: usize,
    },
    /// ICMP to a VIP or an appliance address, its IPv4 header at `frame[l2..]`.
    Icmp {
        l2: usize,
    },
    /// A neighbor solicitation or advertisement (unchecked), its IPv6 header at `frame[l2..]`
    /// and the message at `frame[at..end]`.
    Ndisc {
        l2: usize,
        at: usize,
        end: usize,
    },
    /// An ICMPv6 echo request to a VIP or an appliance address, its IPv6 header at
    /// `frame[l2..]` and the message at `frame[at..]`.
    Echo6 {
        l2: usize,
        at: usize,
    },
    /// An ICMP or ICMPv6 error to a VIP (about one of its flows), its IP header at `frame[l2..]`.
    IcmpError {
        l2: usize,
    },
    NatReply(Tunneled),
    /// A TCP or UDP fragment to a VIP, its IP header at `frame[l2..]`.
    Fragment {
        l2: usize,
    },
    /// To the receiving port's own address, which has an exception path (port `kernel`);
    /// `routing`: BGP or BFD, which no rate holds back.
    ToKernel {
        kernel: u16,
        routing: bool,
    },
    /// From the kernel interface of data port `port`.
    FromKernel {
        port: u16,
    },
}

impl From<DropReason> for Class {
    #[inline(always)]
    fn from(r: DropReason) -> Class {
        Class::Local(Local::Drop(r))
    }
}

/// Classifies one frame received on `rx_port`.
#[inline(always)]
pub fn frame<F: Frame>(cx: &Ctx<'_>, rx_port: u16, frame: &F) -> Class {
    if !frame.is_contiguous() {
        return Class::from(DropReason::MultiSegment);
    }
    let Some(port) = cx.snap.ports.get(usize::from(rx_port)) else {
        return match cx.snap.kernel_port_of(rx_port) {
            Some(port) => Class::Local(Local::FromKernel { port }),
            None => Class::from(DropReason::NotForUs),
        };
    };
    let (l2, ethertype) = {
        let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
            return Class::from(DropReason::EthTruncated);
        };
        let dst = eth.dst();
        // Unicast must be ours; broadcast and multicast go on (ARP, then not_for_us).
        if !wire::same_mac(&dst, &port.mac) && !wire::is_group(&dst) {
            return Class::from(DropReason::ForeignMac);
        }
        if eth.vlan() != port.vlan {
            return Class::from(DropReason::VlanMismatch);
        }
        (eth.header_len(), eth.ethertype())
    };
    match ethertype {
        ethernet::ETHERTYPE_ARP => Class::Local(Local::Arp { l2 }),
        ethernet::ETHERTYPE_IPV4 => ipv4(cx, rx_port, frame.data(), l2),
        ethernet::ETHERTYPE_IPV6 => Class::Ipv6 { l2 },
        _ => Class::from(DropReason::EthertypeUnsupported),
    }
}

/// An IPv4 packet at `data[l2..]`, received on `rx_port`.
fn ipv4(cx: &Ctx<'_>, rx_port: u16, data: &[u8], l2: usize) -> Class {
    let ip = match data.get(l2..).map(Ipv4Header::parse) {
        Some(Ok(ip)) => ip,
        None | Some(Err(WireError::Truncated)) => return Class::from(DropReason::Ipv4Truncated),
        Some(Err(_)) => return Class::from(DropReason::Ipv4Malformed),
    };
    if !ip.checksum_ok {
        return Class::from(DropReason::Ipv4BadChecksum);
    }
    let (dst, proto) = (IpAddr::V4(ip.dst), ip.protocol);
    let l4 = proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP;

    // Fast path: unfragmented TCP/UDP to a service, found with one lookup.
    let mut l4_error = None;
    if l4 && !ip.is_fragment() {
        match to_service(cx, rx_port, data, l2, &ip) {
            Ok(Some(p)) => return Class::Service(p),
            Ok(None) => {}
            Err(e) => l4_error = Some(e),
        }
    }

    // A NAT reply: a backend's host tunnels it to the appliance's address.
    if Tunneled::carries(proto) && cx.snap.has_nat && !ip.is_fragment() && cx.snap.is_local(dst) {
        let (header_len, total) = (usize::from(ip.header_len), usize::from(ip.total_len));
        return Class::Local(Local::NatReply(Tunneled { l2, header_len, total, proto }));
    }

    // The port's own traffic, when it has an exception path: the kernel's.
    let port = cx.snap.ports.get(usize::from(rx_port));
    if let Some(kernel) = port.and_then(|p| p.kernel.filter(|_| p.has_address(dst))) {
        let routing = !ip.is_fragment() && routing(proto, data.get(l2 + usize::from(ip.header_len)..));
        return Class::Local(Local::ToKernel { kernel, routing });
    }

    // Everything else.
    let vip = cx.snap.is_vip(dst);
    if !vip && !cx.snap.is_local(dst) {
        return Class::from(DropReason::NotForUs);
    }
    if ip.is_fragment() {
        if vip && l4 {
            return Class::Local(Local::Fragment { l2 });
        }
        return Class::from(DropReason::Ipv4Fragment);
    }
    Class::from(match proto {
        ipv4::PROTO_ICMP if vip && icmp_type(data, l2, &ip).is_some_and(icmp_error::is_error) => {
            return Class::Local(Local::IcmpError { l2 })
        }
        ipv4::PROTO_ICMP => return Class::Local(Local::Icmp { l2 }),
        _ if l4 && vip => match l4_error {
            Some(WireError::Truncated) => DropReason::L4Truncated,
            Some(_) => DropReason::L4Malformed,
            None => DropReason::NoService,
        },
        _ if l4 => DropReason::LocalUnsupported,
        _ => DropReason::ProtocolUnsupported,
    })
}

/// The type of the ICMP message in the IPv4 packet `ip` at `data[l2..]`, if it has one.
fn icmp_type(data: &[u8], l2: usize, ip: &Ipv4Header) -> Option<u8> {
    data.get(l2 + usize::from(ip.header_len)).copied().filter(|_| ip.total_len > u16::from(ip.header_len))
}

/// BGP (TCP port 179 either way) and BFD (UDP to 3784 single hop, 4784 multihop, 3785 echo):
/// what keeps the appliance's routes, so what the exception path never holds back.
pub(super) fn routing(proto: u8, l4: Option<&[u8]>) -> bool {
    let Some(l4) = l4 else { return false };
    match proto {
        ipv4::PROTO_TCP => {
            TcpPacket::new_checked(l4).is_ok_and(|t| t.src_port() == 179 || t.dst_port() == 179)
        }
        ipv4::PROTO_UDP => {
            UdpPacket::new_checked(l4).is_ok_and(|u| matches!(u.dst_port(), 3784 | 3785 | 4784))
        }
        _ => false,
    }
}

/// Unfragmented TCP or UDP: the packet to a service, if its destination is one (`None` if
/// not; the error if its transport header cannot be read).
#[inline(always)]
fn to_service(
    cx: &Ctx<'_>,
    rx_port: u16,
    data: &[u8],
    l2: usize,
    ip: &Ipv4Header,
) -> Result<Option<ToService>, WireError> {
    // Inside the buffer: Ipv4Header::parse checked header_len <= total_len <= its length.
    let payload =
        data.get(l2 + usize::from(ip.header_len)..l2 + usize::from(ip.total_len)).unwrap_or_default();
    let l4 = super::context::transport(ip.protocol, payload, true)?;
    Ok(ToService::find(cx, (rx_port, l2), &Network::v4(ip), l4, false))
}
