//! What a stage hands on: the verdict on a packet, or the next stage's work.

use crate::encap::Inner;
use crate::session::{Session, SessionKey};
use crate::stats::DropReason;
use std::net::IpAddr;

/// What to do with a packet after [`super::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ARP reply, built in place; send it out of `port`.
    ArpReply {
        port: u16,
    },
    /// A neighbor advertisement answering a solicitation for a VIP or the port's address,
    /// built in place; send it out of `port`.
    NeighborAdvert {
        port: u16,
    },
    /// An ICMP or ICMPv6 echo reply, built in place; send it out of `port`.
    EchoReply {
        port: u16,
    },
    /// Encapsulated toward a backend of a service (indexes in the snapshot, and their stable
    /// ids, which the traffic counters go by); send it out of `port`.
    Tunnel {
        port: u16,
        service: u16,
        backend: u16,
        service_id: u16,
        backend_id: u32,
    },
    /// A NAT reply from a backend, out of its tunnel and translated back to VIP:port; send it
    /// out of `port` toward the client.
    NatReply {
        port: u16,
        service: u16,
    },
    /// A TCP RST to the client, built in place (its session's backend was removed and the
    /// service's policy is `reset`); send it out of `port`.
    Reset {
        port: u16,
    },
    /// ICMP destination unreachable to the client, built in place (no backend, policy
    /// `icmp_unreachable`); send it out of `port`.
    Unreachable {
        port: u16,
    },
    /// A packet (DF clear) too big for the tunnel toward backend `backend` of service
    /// `service` (indexes), its IPv4 header at `frame[at..]`: the worker cuts it into
    /// fragments that fit ([`super::fragment_to_backend`]) and sends each out of `port`.
    Fragment {
        port: u16,
        service: u16,
        backend: u16,
        at: u8,
    },
    /// ICMP fragmentation needed to the client, built in place (its packet, DF set, is too big
    /// for the tunnel); send it out of `port`.
    TooBig {
        port: u16,
    },
    /// SYN proxy: the SYN-ACK with a cookie answering a client's SYN, built in place; send it
    /// out of `port`.
    SynAck {
        port: u16,
    },
    /// Exception path: the frame, unchanged, to the kernel through port `port` (a port's
    /// kernel interface).
    ToKernel {
        port: u16,
    },
    /// Exception path: a frame the kernel sent, unchanged, out of data port `port`.
    FromKernel {
        port: u16,
    },
    /// Used up with nothing to send (an ARP reply or announcement, or a neighbor
    /// advertisement or solicitation, the appliance learned from).
    Consumed,
    Drop(DropReason),
}

/// An IPv4 packet at `frame[at..]` to put into the tunnel toward backend `backend` (an index)
/// of service `service` (an index in the snapshot).
#[derive(Debug, Clone, Copy)]
pub struct ToBackend {
    pub at: usize,
    pub inner: Inner,
    pub service: u16,
    pub backend: u16,
}

/// An IP packet (IPv4 or IPv6, of `client`'s family) at `frame[at..at + len]` to send to
/// `client`, as service `service`.
#[derive(Debug, Clone, Copy)]
pub struct ToClient {
    pub at: usize,
    pub len: usize,
    pub client: IpAddr,
    pub service: u16,
}

/// A client's segment that the SYN proxy takes (the service is SYN-proxied).
#[derive(Debug, Clone, Copy)]
pub enum ProxyTurn {
    /// No session yet: a SYN, or the ACK that may carry a cookie.
    First { flags: u8 },
    /// The backend's handshake is under way: session `s` in table slot `slot`.
    Connecting { slot: usize, s: Session, flags: u8 },
}

/// A client's packet after a stage.
#[derive(Debug, Clone, Copy)]
pub enum FromClient {
    Done(Verdict),
    Tunnel(ToBackend),
    /// Answer the client with a TCP RST (its connection cannot go on).
    Reset,
    /// A new flow no backend can take: the service's `on_no_backend` policy.
    NoBackend,
    Proxy(ProxyTurn),
    /// Forward it by its session again: the SYN proxy released it now the backend is there.
    Forward,
}

/// A backend's answer to the appliance's SYN, out of its tunnel at `frame[at..]`, for session
/// `s` (key `key`, table slot `slot` and hash `hash`), from backend `backend` (an index) of
/// service `service`.
#[derive(Debug, Clone, Copy)]
pub struct BackendSegment {
    pub at: usize,
    pub service: u16,
    pub backend: u16,
    pub key: SessionKey,
    pub slot: usize,
    pub hash: u64,
    pub s: Session,
}

/// A backend's packet (a NAT reply) after a stage.
#[derive(Debug, Clone, Copy)]
pub enum FromBackend {
    Done(Verdict),
    Tunnel(ToBackend),
    Client(ToClient),
    /// The SYN proxy's turn: the answer to its SYN, in a `Connecting` session.
    ProxyAnswer(BackendSegment),
    /// The SYN proxy's turn: a SYN-ACK again, in a finished session (the ACK was lost).
    ProxyAck(BackendSegment),
}

impl From<Verdict> for FromClient {
    #[inline(always)]
    fn from(v: Verdict) -> Self {
        FromClient::Done(v)
    }
}

impl From<Verdict> for FromBackend {
    #[inline(always)]
    fn from(v: Verdict) -> Self {
        FromBackend::Done(v)
    }
}

/// A drop, as any stage's outcome.
#[inline(always)]
pub fn dropped<T: From<Verdict>>(reason: DropReason) -> T {
    T::from(Verdict::Drop(reason))
}
