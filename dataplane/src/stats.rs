//! Per-worker counters. Each worker owns one `WorkerStats` (cache-line aligned, so workers
//! never share a line) and is its only writer; the control thread reads and sums them.

/// Where the packet path (`pipeline`) has always found it.
pub use crate::counter::Counter;
use crate::counter::{counters, MAX_BACKEND_IDS, MAX_SERVICE_IDS};
use crate::limit::LIMIT_STRIDE;

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $name:ident = $label:literal, )*) => {
        /// Why a packet was dropped. Indexes the per-worker drop counters.
        #[repr(u8)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $( $(#[doc = $doc])* $name, )* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The metric label, snake_case.
            pub fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (or its 802.1Q tag).
    EthTruncated = "eth_truncated",
    /// Unicast to a MAC that is not the port's.
    ForeignMac = "foreign_mac",
    /// Tagged when the port is untagged, untagged when it is tagged, or another VLAN.
    VlanMismatch = "vlan_mismatch",
    /// An EtherType the appliance does not handle (QinQ, IPv6 until it lands, ...).
    EthertypeUnsupported = "ethertype_unsupported",
    /// ARP shorter than 28 bytes.
    ArpTruncated = "arp_truncated",
    /// ARP for another hardware or protocol type, or another operation.
    ArpUnsupported = "arp_unsupported",
    /// ARP asking for an address that is neither a VIP nor this port's.
    ArpNotForUs = "arp_not_for_us",
    /// IPv4 header longer than the frame, or total length past the frame's end.
    Ipv4Truncated = "ipv4_truncated",
    /// Version not 4, header length under 20, or total length under the header length.
    Ipv4Malformed = "ipv4_malformed",
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// A fragment for a VIP (fragments are not reassembled yet).
    Ipv4Fragment = "ipv4_fragment",
    /// Destination neither a VIP nor an address of the appliance.
    NotForUs = "not_for_us",
    /// A VIP, but no service on that port and protocol.
    NoService = "no_service",
    /// The service has no backend with a positive weight.
    NoBackend = "no_backend",
    /// TCP/UDP header shorter than its minimum.
    L4Truncated = "l4_truncated",
    /// TCP data offset under 5, UDP length under 8.
    L4Malformed = "l4_malformed",
    /// An IP protocol other than TCP, UDP or ICMP to a VIP.
    ProtocolUnsupported = "protocol_unsupported",
    IcmpTruncated = "icmp_truncated",
    IcmpBadChecksum = "icmp_bad_checksum",
    /// ICMP other than an echo request to a VIP or appliance address.
    IcmpUnsupported = "icmp_unsupported",
    /// TCP or UDP to an appliance address (the appliance has no local stack there).
    LocalUnsupported = "local_unsupported",
    /// The next hop's MAC is not known yet (an ARP request has been sent).
    NeighborUnresolved = "neighbor_unresolved",
    /// The encapsulated packet would exceed the egress port's MTU.
    MtuExceeded = "mtu_exceeded",
    /// Not enough headroom in the buffer for the tunnel headers.
    NoHeadroom = "no_headroom",
    /// The packet spans several buffers.
    MultiSegment = "multi_segment",
    /// The TX queue was full.
    TxFull = "tx_full",
    /// UDP of a session whose backend left the config, with the `reset` policy.
    BackendRemoved = "backend_removed",
    /// A tunneled packet to the appliance (a NAT reply) that is not IPIP or GRE version 0
    /// carrying IPv4, or whose GRE checksum fails.
    TunnelMalformed = "tunnel_malformed",
    /// A tunneled NAT reply whose inner packet is not unfragmented TCP/UDP IPv4 with a valid
    /// header.
    NatReplyMalformed = "nat_reply_malformed",
    /// A tunneled reply that matches no NAT session (expired, never made, or another VPC's).
    NatNoSession = "nat_no_session",
    /// No next hop toward the client of a NAT reply (no port holds it and no gateway).
    NoRouteToClient = "no_route_to_client",
    /// SYN proxy: an ACK without a session whose cookie the appliance did not make (a forged
    /// or altered one, an ACK flood, or a connection the appliance no longer knows).
    SynCookieInvalid = "syn_cookie_invalid",
    /// SYN proxy: an ACK whose cookie is older than the validity window.
    SynCookieStale = "syn_cookie_stale",
    /// SYN proxy: a segment that is neither a SYN nor an ACK (a RST, a SYN-ACK, data without
    /// ACK) with no session.
    SynproxyNoSession = "synproxy_no_session",
    /// SYN proxy: a valid ACK, but the session table had no room for its session.
    SynproxyTableFull = "synproxy_table_full",
    /// SYN proxy: client data while the backend's handshake is under way that could not be
    /// held (one segment per connection is; the client retransmits the rest).
    SynproxyNotHeld = "synproxy_not_held",
    /// SYN proxy: from a backend whose handshake is under way, neither its SYN-ACK nor a RST.
    SynproxyBackendUnexpected = "synproxy_backend_unexpected",
    /// SYN proxy: TCP options that cannot be read in a segment that needs translating.
    SynproxyMalformed = "synproxy_malformed",
    /// Isolation: over the service's packets/s limit.
    LimitPackets = "limit_packets",
    /// Isolation: over the service's bytes/s limit.
    LimitBytes = "limit_bytes",
    /// Isolation: a new connection over the service's connections/s limit (no state made).
    LimitConnections = "limit_connections",
    /// Isolation: a new connection while the service has its most concurrent sessions.
    LimitSessions = "limit_sessions",
}

/// Per-port counters kept by each worker for the queue it owns.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
}

/// Most ports a worker polls.
pub const MAX_PORTS: usize = 8;

/// One worker's counters.
#[repr(align(64))]
#[derive(Debug)]
pub struct WorkerStats {
    pub ports: [PortCounters; MAX_PORTS],
    pub drops: [Counter; DropReason::COUNT],
    /// Packets sent into a tunnel toward a backend.
    pub tunneled: Counter,
    /// NAT replies from backends, reverse-translated and sent toward their clients.
    pub nat_replies: Counter,
    pub arp_replies: Counter,
    pub arp_requests: Counter,
    pub icmp_echo_replies: Counter,
    pub neighbors_learned: Counter,
    /// Sessions created, packets that found their session, new flows forwarded without a
    /// session because the table was full, sessions moved off a removed backend, and TCP
    /// resets sent for sessions whose backend was removed.
    pub sessions_created: Counter,
    pub session_hits: Counter,
    pub sessions_fallback: Counter,
    pub sessions_remapped: Counter,
    pub resets_sent: Counter,
    /// ICMP unreachables sent for new flows no backend could take (`icmp_unreachable`).
    pub unreachables_sent: Counter,
    /// SYN proxy: SYN-ACKs with cookies sent; ACKs with a valid cookie (invalid ones are
    /// drops); backend handshakes completed; backends that refused (RST) or could not be
    /// reached; client segments held until the backend answered.
    pub synproxy: SynProxyCounters,
    /// Packets and bytes (as sent, tunnel headers included) toward each service and backend,
    /// indexed by their stable ids.
    pub per_service: Box<[Traffic]>,
    pub per_backend: Box<[Traffic]>,
    /// Isolation, per service id: units offered per rate and drops per limit
    /// (`limit::offered_index`, `limit::dropped_index`).
    pub limits: Box<[Counter]>,
    /// Loop iterations, and those that received at least one packet (the busy ratio).
    pub polls: Counter,
    pub busy_polls: Counter,
    /// Nanoseconds spent in polls that received packets (the load the overload check reads).
    pub busy_ns: Counter,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            ports: Default::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            tunneled: Counter::default(),
            nat_replies: Counter::default(),
            arp_replies: Counter::default(),
            arp_requests: Counter::default(),
            icmp_echo_replies: Counter::default(),
            neighbors_learned: Counter::default(),
            sessions_created: Counter::default(),
            session_hits: Counter::default(),
            sessions_fallback: Counter::default(),
            sessions_remapped: Counter::default(),
            resets_sent: Counter::default(),
            unreachables_sent: Counter::default(),
            synproxy: SynProxyCounters::default(),
            per_service: traffic(MAX_SERVICE_IDS),
            per_backend: traffic(MAX_BACKEND_IDS),
            limits: counters(MAX_SERVICE_IDS * LIMIT_STRIDE),
            polls: Counter::default(),
            busy_polls: Counter::default(),
            busy_ns: Counter::default(),
        }
    }
}

/// A worker's SYN proxy counters (see [`WorkerStats::synproxy`]).
#[derive(Debug, Default)]
pub struct SynProxyCounters {
    pub cookies_sent: Counter,
    pub acks_valid: Counter,
    pub handshakes: Counter,
    pub backend_failures: Counter,
    pub held: Counter,
    pub backend_resets: Counter,
}

/// Packets and bytes toward one service or backend: side by side, one line to touch.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Traffic {
    pub packets: Counter,
    pub bytes: Counter,
}

/// `n` [`Traffic`] pairs at zero, from a zeroed allocation.
fn traffic(n: usize) -> Box<[Traffic]> {
    let c = Box::<[Traffic]>::new_zeroed_slice(n);
    // SAFETY: Traffic is two transparent AtomicU64s (repr(C)), for which all-zero bytes are
    // the valid value 0.
    unsafe { c.assume_init() }
}

impl WorkerStats {
    /// Counts a packet of `bytes` sent toward backend `backend` of service `service` (ids).
    #[inline]
    pub fn count_forward(&self, service: u16, backend: u32, bytes: u64) {
        if let Some(c) = self.per_service.get(usize::from(service)) {
            c.packets.add(1);
            c.bytes.add(bytes);
        }
        if let Some(c) = self.per_backend.get(backend as usize) {
            c.packets.add(1);
            c.bytes.add(bytes);
        }
    }

    #[inline]
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.label()), "duplicate {}", r.label());
            assert!(r.label().chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
            assert_eq!(DropReason::ALL[*r as usize], *r);
        }
    }

    #[test]
    fn stats_are_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        let s = WorkerStats::default();
        s.count_drop(DropReason::TxFull, 3);
        s.count_drop(DropReason::TxFull, 1);
        assert_eq!(s.dropped(DropReason::TxFull), 4);
        assert_eq!(s.dropped(DropReason::NoBackend), 0);
    }
}
