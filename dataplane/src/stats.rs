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
    /// An EtherType the appliance does not handle (QinQ, LLDP, ...).
    EthertypeUnsupported = "ethertype_unsupported",
    /// ARP shorter than 28 bytes.
    ArpTruncated = "arp_truncated",
    /// ARP for another hardware or protocol type, or another operation.
    ArpUnsupported = "arp_unsupported",
    /// ARP asking for an address that is neither a VIP nor this port's.
    ArpNotForUs = "arp_not_for_us",
    /// A neighbour solicitation or advertisement that fails RFC 4861 7.1's checks: hop limit
    /// not 255, bad ICMPv6 checksum, code not 0, shorter than 24 bytes, an option of length 0
    /// or past the message, a multicast target, a solicitation from the unspecified address
    /// not to a solicited-node address or with a link-layer option, a solicited
    /// advertisement to a multicast address.
    NdInvalid = "nd_invalid",
    /// A neighbour solicitation for an address that is neither a VIP nor this port's, or an
    /// advertisement of no next hop the appliance sends to.
    NdNotForUs = "nd_not_for_us",
    /// IPv4 header longer than the frame, or total length past the frame's end.
    Ipv4Truncated = "ipv4_truncated",
    /// Version not 4, header length under 20, or total length under the header length.
    Ipv4Malformed = "ipv4_malformed",
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// A fragment for a VIP (fragments are not reassembled yet).
    Ipv4Fragment = "ipv4_fragment",
    /// Shorter than the IPv6 header, payload length past the frame's end, or an extension
    /// header running past the payload.
    Ipv6Truncated = "ipv6_truncated",
    /// Version not 6; more extension headers than `wire::ipv6::MAX_EXT_HEADERS` (8),
    /// hop-by-hop options not first, or two fragment headers; a multicast source, or the
    /// unspecified source on anything but neighbour discovery.
    Ipv6Malformed = "ipv6_malformed",
    /// An IPv6 fragment (a packet with a fragment header) to a VIP or an appliance address.
    Ipv6Fragment = "ipv6_fragment",
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
    /// An ICMP or ICMPv6 message shorter than its 8-byte header.
    IcmpTruncated = "icmp_truncated",
    /// An ICMP or ICMPv6 message whose checksum is wrong.
    IcmpBadChecksum = "icmp_bad_checksum",
    /// ICMP other than an echo request to a VIP or appliance address (and other than an
    /// error about a flow, to a VIP).
    IcmpUnsupported = "icmp_unsupported",
    /// ICMPv6 to a VIP or an appliance address other than an echo request or neighbour
    /// discovery: errors (not passed to backends yet), router and multicast listener
    /// messages, an echo request of code other than 0.
    Icmpv6Unsupported = "icmpv6_unsupported",
    /// An ICMP error to a VIP whose quoted packet cannot be read (cut short, not IPv4, not TCP
    /// or UDP, a fragment past the first).
    IcmpErrorMalformed = "icmp_error_malformed",
    /// An ICMP error to a VIP quoting a packet of no service of that VIP, or of a flow no
    /// backend takes.
    IcmpErrorUnknown = "icmp_error_unknown",
    /// TCP or UDP to an appliance address (the appliance has no local stack there).
    LocalUnsupported = "local_unsupported",
    /// The next hop's MAC is not known yet (an ARP request has been sent).
    NeighborUnresolved = "neighbor_unresolved",
    /// The encapsulated packet would exceed the egress port's MTU (and it is not answered
    /// with a too-big message: see `too_big_limited`).
    MtuExceeded = "mtu_exceeded",
    /// A packet too big for the tunnel (DF clear) that could not be fragmented: no buffer
    /// for a fragment, or more than 64 of them.
    FragmentFailed = "fragment_failed",
    /// A fragment past the first to a VIP whose first fragment this worker has not seen (or
    /// not within the fragment table's time).
    FragmentNoFirst = "fragment_no_first",
    /// A packet with DF set too big for the tunnel, while the worker's too-big messages
    /// were over their rate (`pipeline::TOO_BIG_RATE`).
    TooBigLimited = "too_big_limited",
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
    /// Exception path: traffic to a port's own address, other than ARP and routing (BGP,
    /// BFD), over the rate at which it is passed to the kernel.
    KernelLimited = "kernel_limited",
    /// Exception path: the kernel interface did not take the frame (it is down, or its queue
    /// is full: the kernel is not reading it).
    KernelRefused = "kernel_refused",
}

impl DropReason {
    /// The family of the drop counters, one series per reason (label `reason`).
    pub const METRIC: Metric = metric("sluice_drops_total", "Packets dropped, by reason.");
}

/// A counter's Prometheus family: its name (also its line in `--print-stats` and `sluicectl
/// counters`) and its help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
}

const fn metric(name: &'static str, help: &'static str) -> Metric {
    Metric { name, help }
}

/// The families of a per-port counter: summed over the workers (label `port`) and per queue
/// (labels `port`, `queue`; worker N serves queue N of every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMetric {
    pub port: Metric,
    pub queue: Metric,
}

/// The families of a [`Traffic`] counter: per service (label `service`) and per backend
/// (labels `service`, `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficMetric {
    pub service: Metric,
    pub backend: Metric,
}

/// Declares a struct of named [`Counter`]s from one table, each counter once with its
/// description (a [`Metric`] or the like), and from it: the struct (with any fixed fields
/// before and after the counters, declared in the given order, so its layout is as written),
/// its `Default`, `METRICS` (the descriptions, in table order), `counters()` and `each()` (the
/// counters, alone or with their descriptions), and a totals struct of `u64`s with the same
/// field names that sums workers' structs (`add`) and lists its values (`each`).
macro_rules! counter_table {
    (
        $(#[$attr:meta])*
        pub struct $name:ident / $totals:ident: $meta:ty {
            $( $(#[doc = $hdoc:literal])* pub $head:ident: $hty:ty = $hinit:expr, )*
            counters {
                $( $(#[doc = $doc:literal])* $field:ident: $m:expr, )*
            }
            $( $(#[doc = $tdoc:literal])* pub $tail:ident: $tty:ty = $tinit:expr, )*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $( $(#[doc = $hdoc])* pub $head: $hty, )*
            $( $(#[doc = $doc])* pub $field: Counter, )*
            $( $(#[doc = $tdoc])* pub $tail: $tty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $head: $hinit, )* $( $field: Counter::default(), )* $( $tail: $tinit, )* }
            }
        }

        impl $name {
            /// What each counter of the table is, in table order.
            pub const METRICS: &'static [$meta] = &[$( $m, )*];

            /// The table's counters, in its order.
            pub fn counters(&self) -> [&Counter; [$(stringify!($field)),*].len()] {
                [$( &self.$field, )*]
            }

            /// The table's counters with their descriptions, in its order.
            pub fn each(&self) -> impl Iterator<Item = (&'static $meta, &Counter)> {
                Self::METRICS.iter().zip(self.counters())
            }
        }

        #[doc = concat!("The sums of [`", stringify!($name), "`]'s table over the workers.")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $totals {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl $totals {
            /// Adds one worker's counters.
            pub fn add(&mut self, c: &$name) {
                $( self.$field += c.$field.get(); )*
            }

            /// The sums with their descriptions, in table order.
            pub fn each(&self) -> impl Iterator<Item = (&'static $meta, u64)> {
                $name::METRICS.iter().zip([$( self.$field, )*])
            }
        }
    };
}

counter_table! {
    /// Per-port counters kept by each worker for the queue it owns.
    #[derive(Debug)]
    pub struct PortCounters / PortTotals: PortMetric {
        counters {
            rx_packets: PortMetric {
                port: metric("sluice_port_rx_packets_total", "Packets the workers received on the port."),
                queue: metric(
                    "sluice_queue_rx_packets_total",
                    "Packets received on the port's queue (worker N serves queue N of every port).",
                ),
            },
            rx_bytes: PortMetric {
                port: metric("sluice_port_rx_bytes_total", "Bytes the workers received on the port."),
                queue: metric("sluice_queue_rx_bytes_total", "Bytes received on the port's queue."),
            },
            tx_packets: PortMetric {
                port: metric("sluice_port_tx_packets_total", "Packets the driver accepted for sending on the port."),
                queue: metric("sluice_queue_tx_packets_total", "Packets the driver accepted on the port's queue."),
            },
            tx_bytes: PortMetric {
                port: metric("sluice_port_tx_bytes_total", "Bytes the driver accepted for sending on the port."),
                queue: metric("sluice_queue_tx_bytes_total", "Bytes the driver accepted on the port's queue."),
            },
        }
    }
}

/// Most ports a worker polls.
pub const MAX_PORTS: usize = 8;

counter_table! {
    /// One worker's counters. The event counters (the table below) are its own; ports, drops,
    /// the SYN proxy's and traffic per service and backend have tables of their own.
    #[repr(align(64))]
    #[derive(Debug)]
    pub struct WorkerStats / EventTotals: Metric {
        pub ports: [PortCounters; MAX_PORTS] = Default::default(),
        pub drops: [Counter; DropReason::COUNT] = std::array::from_fn(|_| Counter::default()),
        counters {
            /// Packets sent into a tunnel toward a backend.
            tunneled: metric("sluice_tunneled_packets_total", "Packets encapsulated toward a backend."),
            /// NAT replies from backends, reverse-translated and sent toward their clients.
            nat_replies: metric("sluice_nat_replies_total", "NAT replies from backends translated and sent toward clients."),
            arp_replies: metric("sluice_arp_replies_total", "ARP requests answered for VIPs and port addresses."),
            arp_requests: metric("sluice_arp_requests_total", "ARP requests sent to resolve next hops."),
            nd_advertisements: metric(
                "sluice_nd_advertisements_total",
                "Neighbor solicitations answered for VIPs and port addresses (IPv6).",
            ),
            nd_solicitations: metric(
                "sluice_nd_solicitations_total",
                "Neighbor solicitations sent to resolve IPv6 next hops.",
            ),
            nd_unsolicited: metric(
                "sluice_nd_unsolicited_total",
                "Unsolicited neighbor advertisements sent for IPv6 port addresses and VIPs.",
            ),
            icmp_echo_replies: metric(
                "sluice_icmp_echo_replies_total",
                "ICMP echo requests answered for VIPs and port addresses.",
            ),
            neighbors_learned: metric(
                "sluice_neighbors_learned_total",
                "Next-hop MAC addresses learned or changed from ARP or neighbor discovery.",
            ),
            sessions_created: metric("sluice_sessions_created_total", "Sessions created."),
            session_hits: metric("sluice_session_hits_total", "Packets that found their session."),
            sessions_fallback: metric(
                "sluice_sessions_fallback_total",
                "New flows forwarded without a session because the table was full.",
            ),
            sessions_remapped: metric(
                "sluice_sessions_remapped_total",
                "Sessions moved off a backend that left the config.",
            ),
            icmp_errors_forwarded: metric(
                "sluice_icmp_errors_forwarded_total",
                "ICMP errors about a flow passed on: to its backend, or from a nat backend to its client.",
            ),
            mss_clamped: metric(
                "sluice_mss_clamped_total",
                "TCP SYNs and SYN-ACKs whose MSS option was lowered to fit the tunnel path (mss_clamp).",
            ),
            resets_sent: metric("sluice_resets_sent_total", "TCP resets sent for sessions whose backend left the config."),
            /// ICMP unreachables sent for new flows no backend could take (`icmp_unreachable`).
            unreachables_sent: metric(
                "sluice_unreachables_sent_total",
                "ICMP unreachables sent for new flows no backend could take.",
            ),
            fragmented: metric(
                "sluice_packets_fragmented_total",
                "Packets (DF clear) too big for the tunnel, cut into fragments before encapsulation.",
            ),
            fragments_made: metric(
                "sluice_fragments_made_total",
                "Fragments cut from packets too big for the tunnel (each then tunneled, or dropped under a reason).",
            ),
            too_big_sent: metric(
                "sluice_icmp_too_big_sent_total",
                "ICMP fragmentation-needed messages sent to clients whose packets (DF set) were too big for the tunnel.",
            ),
            /// Exception path: frames passed to a port's kernel interface, and frames the
            /// kernel sent out through it.
            to_kernel: metric(
                "sluice_exception_to_kernel_total",
                "Frames passed to the kernel through a port's exception interface.",
            ),
            from_kernel: metric(
                "sluice_exception_from_kernel_total",
                "Frames the kernel sent out of a port through its exception interface.",
            ),
            /// Tunnel-path probes (`pipeline::probe`): sent into a backend's tunnel, and those
            /// that could not be (backend gone, next hop unresolved, no buffer).
            probes_sent: metric(
                "sluice_tunnel_probes_sent_total",
                "Tunnel-path probes sent into a backend's tunnel for its host agent to echo.",
            ),
            probes_failed: metric(
                "sluice_tunnel_probes_failed_total",
                "Tunnel-path probes not sent: backend not in the config, next hop unresolved, or no buffer.",
            ),
        }
        /// SYN proxy: SYN-ACKs with cookies sent; ACKs with a valid cookie (invalid ones are
        /// drops); backend handshakes completed; backends that refused (RST) or could not be
        /// reached; client segments held until the backend answered.
        pub synproxy: SynProxyCounters = SynProxyCounters::default(),
        /// Packets and bytes (as sent, tunnel headers included) toward each service and backend,
        /// indexed by their stable ids.
        pub per_service: Box<[Traffic]> = traffic(MAX_SERVICE_IDS),
        pub per_backend: Box<[Traffic]> = traffic(MAX_BACKEND_IDS),
        /// Isolation, per service id: units offered per rate and drops per limit
        /// (`limit::offered_index`, `limit::dropped_index`).
        pub limits: Box<[Counter]> = counters(MAX_SERVICE_IDS * LIMIT_STRIDE),
        /// Loop iterations, and those that received at least one packet (the busy ratio).
        pub polls: Counter = Counter::default(),
        pub busy_polls: Counter = Counter::default(),
        /// Nanoseconds spent in polls that received packets (the load the overload check reads).
        pub busy_ns: Counter = Counter::default(),
    }
}

counter_table! {
    /// A worker's SYN proxy counters (see [`WorkerStats::synproxy`]).
    #[derive(Debug)]
    pub struct SynProxyCounters / SynProxyTotals: Metric {
        counters {
            cookies_sent: metric(
                "sluice_synproxy_cookies_sent_total",
                "SYN proxy: SYN-ACKs with a cookie sent (no state kept).",
            ),
            acks_valid: metric(
                "sluice_synproxy_acks_valid_total",
                "SYN proxy: ACKs with a valid cookie (invalid ones: drops, reasons syn_cookie_invalid and syn_cookie_stale).",
            ),
            handshakes: metric(
                "sluice_synproxy_handshakes_total",
                "SYN proxy: backend handshakes completed (connections handed to a backend).",
            ),
            backend_failures: metric(
                "sluice_synproxy_backend_failures_total",
                "SYN proxy: backends that refused (RST) or could not be chosen or kept for a client with a valid cookie.",
            ),
            held: metric(
                "sluice_synproxy_held_total",
                "SYN proxy: client segments held until the backend's handshake completed.",
            ),
            /// Backends reset because they answered for an older connection.
            backend_resets: metric(
                "sluice_synproxy_backend_resets_total",
                "SYN proxy: backends that answered the SYN for an older connection on the 4-tuple (TIME_WAIT), reset so the SYN can go again.",
            ),
        }
    }
}

counter_table! {
    /// Packets and bytes toward one service or backend: side by side, one line to touch.
    #[derive(Debug)]
    #[repr(C)]
    pub struct Traffic / TrafficTotals: TrafficMetric {
        counters {
            packets: TrafficMetric {
                service: metric("sluice_service_packets_total", "Packets sent toward the service's backends."),
                backend: metric("sluice_backend_packets_total", "Packets sent toward the backend."),
            },
            bytes: TrafficMetric {
                service: metric(
                    "sluice_service_bytes_total",
                    "Bytes sent toward the service's backends, tunnel headers included.",
                ),
                backend: metric("sluice_backend_bytes_total", "Bytes sent toward the backend, tunnel headers included."),
            },
        }
    }
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

    /// Every family name of every table: `sluice_` and snake_case, counters ending in
    /// `_total`, each once.
    #[test]
    fn metric_names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = vec![DropReason::METRIC.name];
        names.extend(PortCounters::METRICS.iter().flat_map(|m| [m.port.name, m.queue.name]));
        names.extend(WorkerStats::METRICS.iter().chain(SynProxyCounters::METRICS).map(|m| m.name));
        names.extend(Traffic::METRICS.iter().flat_map(|m| [m.service.name, m.backend.name]));
        let mut seen = std::collections::HashSet::new();
        for n in names {
            assert!(seen.insert(n), "duplicate {n}");
            assert!(n.starts_with("sluice_") && n.ends_with("_total"), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    /// A table's `counters()`, `each()` and totals follow its fields, in table order.
    #[test]
    fn tables_list_their_fields_in_order() {
        let w = WorkerStats::default();
        w.tunneled.add(1);
        w.unreachables_sent.add(2);
        w.synproxy.cookies_sent.add(3);
        w.synproxy.backend_resets.add(4);
        w.ports[0].rx_bytes.add(5);
        w.probes_failed.add(7);
        assert_eq!(w.counters().len(), WorkerStats::METRICS.len());
        let (first, last) = (w.each().next().unwrap(), w.each().last().unwrap());
        assert_eq!((first.0.name, first.1.get()), ("sluice_tunneled_packets_total", 1));
        assert_eq!((last.0.name, last.1.get()), ("sluice_tunnel_probes_failed_total", 7));
        let mut t = EventTotals::default();
        t.add(&w);
        t.add(&w);
        assert_eq!((t.tunneled, t.unreachables_sent, t.arp_replies, t.probes_failed), (2, 4, 0, 14));
        assert_eq!(t.each().map(|(_, n)| n).sum::<u64>(), 20);
        let mut sp = SynProxyTotals::default();
        sp.add(&w.synproxy);
        let v: Vec<u64> = sp.each().map(|(_, n)| n).collect();
        assert_eq!(v, [3, 0, 0, 0, 0, 4]);
        let mut p = PortTotals::default();
        p.add(&w.ports[0]);
        assert_eq!(p.each().map(|(m, n)| (m.port.name, n)).nth(1), Some(("sluice_port_rx_bytes_total", 5)));
        assert_eq!(w.ports[0].counters()[1].get(), 5);
        let tr = Traffic::default();
        tr.bytes.add(7);
        assert_eq!(tr.counters().map(Counter::get), [0, 7]);
    }
}
