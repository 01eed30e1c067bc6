//! The Prometheus scrape endpoint.
//!
//! [`SluiceCollector`] implements the `prometheus` crate's `Collector`. The counters stay where
//! they are, per core, each written by its worker only; at every scrape `collect` reads them
//! and sums them (with [`Totals::sum`], as `--print-stats` does), reads the session table, the
//! config snapshot in effect (for per-service and per-backend series) and the control thread's
//! [`ApplyState`], and builds the metric families on the spot. Nothing on the packet path
//! changes and nothing is cached between scrapes except each worker's poll counts (for the
//! busy ratio).
//!
//! `metrics_server` answers `GET /metrics` on a TCP address with the text exposition format
//! (re-exported here: [`serve`], [`LIMITS`]).
//!
//! Adding a worker counter is one line in one of `sluice_dataplane::stats`'s tables (its
//! field, family name and help): the worker stats, the totals, `--print-stats` and the family
//! here all come from it, as the NICs' counters come from `NIC_FAMILIES`. Adding another
//! family: declare it in the `families!` list below (constant, type, name, label names, help),
//! then emit it from `collect`. Per-service and per-backend families take one line each
//! through `per_service` and `per_backend`, which label a sample with the service's name and
//! the backend's address (DSR) or `address:port` (NAT) from the current snapshot. For example,
//! a gauge of the backends' weights:
//!
//! ```ignore
//! self.per_backend(&backends, &BACKEND_WEIGHT, |_, b| Some(f64::from(b.weight))).push_to(out);
//! ```

pub use crate::metrics_server::{serve, LIMITS, MAX_REQUEST_HEAD};
use crate::report::{self, Totals};
use crate::serving::{Refusal, Refusals};
use arc_swap::ArcSwap;
use log::debug;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::Registry;
use sluice_dataplane::session::SessionTable;
use sluice_dataplane::snapshot::{Backend, Service, Snapshot};
use sluice_dataplane::stats::{
    DropReason, Metric, PortCounters, PortMetric, SynProxyCounters, Traffic, TrafficMetric, WorkerStats,
    MAX_PORTS,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

// ---- what the control thread shares ---------------------------------------------------------

/// What the control thread last did with a config, for the `sluice_config_*` metrics. The
/// control thread records each attempt; scrapes read it. The fields are separate atomics: a
/// scrape that races an apply may see one field new and another still old.
#[derive(Debug, Default)]
pub struct ApplyState {
    /// The generation of the config in effect (the snapshot's).
    generation: AtomicU64,
    /// `NONE`, `APPLIED` or `REFUSED`: the last attempt's outcome.
    last_result: AtomicU8,
    /// Unix time of the last attempt, in seconds (`f64` bits).
    last_time: AtomicU64,
    applied: AtomicU64,
    refused: AtomicU64,
}

const NONE: u8 = 0;
const APPLIED: u8 = 1;
const REFUSED: u8 = 2;

impl ApplyState {
    /// Nothing attempted yet, generation 0.
    pub fn new() -> ApplyState {
        ApplyState::default()
    }

    /// A config was applied, now: `generation` is in effect. (The config sluiced starts with
    /// counts too: record it once its snapshot is built.)
    pub fn record_applied(&self, generation: u64) {
        self.record_applied_at(generation, SystemTime::now());
    }

    pub fn record_applied_at(&self, generation: u64, at: SystemTime) {
        self.generation.store(generation, Ordering::Relaxed);
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.last_time.store(unix_seconds(at).to_bits(), Ordering::Relaxed);
        self.last_result.store(APPLIED, Ordering::Release);
    }

    /// A config was refused, now: the running one, and its generation, stay.
    pub fn record_refused(&self) {
        self.record_refused_at(SystemTime::now());
    }

    pub fn record_refused_at(&self, at: SystemTime) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.last_time.store(unix_seconds(at).to_bits(), Ordering::Relaxed);
        self.last_result.store(REFUSED, Ordering::Release);
    }

    /// The generation of the config in effect (0 before the first apply).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Whether the last attempt applied its config; `None` before the first attempt.
    pub fn last_success(&self) -> Option<bool> {
        match self.last_result.load(Ordering::Acquire) {
            NONE => None,
            r => Some(r == APPLIED),
        }
    }

    /// Unix time of the last attempt in seconds; `None` before the first attempt.
    pub fn last_time(&self) -> Option<f64> {
        self.last_success().map(|_| f64::from_bits(self.last_time.load(Ordering::Relaxed)))
    }

    pub fn applied_count(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the NICs' own counters (`rte_eth_stats`), one entry per port in `port_names` order.
pub type NicStatsFn = Box<dyn Fn() -> Vec<dpdk_sys::PortStats> + Send + Sync>;

/// The health hook: a backend's health by its stable id, `None` if it is not checked; where
/// `sluice_backend_healthy` comes from.
pub type HealthFn = Box<dyn Fn(u32) -> Option<bool> + Send + Sync>;

/// Everything a scrape reads. All of it is shared with the running appliance.
pub struct MetricsSource {
    /// One per worker, in worker order. Worker `q` serves queue `q` of every port.
    pub stats: Vec<Arc<WorkerStats>>,
    /// The ports, in port index order (at most `MAX_PORTS`).
    pub port_names: Vec<String>,
    pub sessions: Arc<SessionTable>,
    /// The config snapshot in effect.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub apply: Arc<ApplyState>,
    /// The sweeper's live-session count at its last full pass (walking the table at every
    /// scrape would cost a pass over all of it).
    pub sessions_live: Arc<AtomicU64>,
    /// Sessions the sweeper has expired so far.
    pub sessions_expired: Arc<AtomicU64>,
    /// The NICs' counters (`sluice_nic_*`); `None`: not exported.
    pub nic_stats: Option<NicStatsFn>,
    /// Backend health (`sluice_backend_healthy`); `None` (today): not exported.
    pub health: Option<HealthFn>,
    /// The overload check (`sluice_isolation_*`); `None`: not exported.
    pub isolation: Option<Arc<crate::isolation::IsolationState>>,
    /// Session sync (`sluice_sync_*`); `None`: no sync configured.
    pub sync: Option<Arc<crate::peers::SyncCounters>>,
    /// Health checks by the host agents (`sluice_agent_*`); `None`: no `agents` configured.
    pub agents: Option<Arc<crate::health::agents::AgentCounters>>,
    /// Routing (`sluice_vip_*`, `sluice_bgp_*`); `None`: no `routing` configured.
    pub routing: Option<Arc<crate::announce::RoutingState>>,
    /// The local endpoints' refused connections (`sluice_control_connections_refused_total`),
    /// by endpoint name (`admin`, `metrics`); empty: not exported.
    pub connections: Vec<(&'static str, Arc<Refusals>)>,
}

// ---- the families -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A metric family's name, type, label names and help.
#[derive(Debug, Clone, Copy)]
struct Def {
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
}

impl Def {
    /// A family declared in one of the counter tables (`stats.rs`, `report.rs`).
    const fn counter(m: Metric, labels: &'static [&'static str]) -> Def {
        Def { name: m.name, kind: Kind::Counter, labels, help: m.help }
    }

    const fn gauge(m: Metric, labels: &'static [&'static str]) -> Def {
        Def { kind: Kind::Gauge, ..Def::counter(m, labels) }
    }
}

macro_rules! families {
    ($( $id:ident: $kind:ident $name:literal [$($label:literal),*] $help:literal; )*) => {
        $( const $id: Def = Def { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help }; )*
        /// The families declared here (the rest come from the counter tables: [`families`]).
        const FAMILIES: &[&Def] = &[$(&$id),*];
    };
}

families! {
    SESSION_CAPACITY: Gauge "sluice_session_capacity" []
        "Sessions the table is sized for; new flows go without a session beyond it.";
    SESSION_SLOTS: Gauge "sluice_session_slots" []
        "Slots in the session table (a power of two, at least twice the capacity).";
    SESSION_TABLE_FULL: Gauge "sluice_session_table_full" []
        "1 while the table is full and new flows are forwarded without a session.";
    WORKER_POLLS: Counter "sluice_worker_polls_total" ["worker"]
        "Iterations of the worker's poll loop.";
    WORKER_BUSY_POLLS: Counter "sluice_worker_busy_polls_total" ["worker"]
        "Iterations of the worker's poll loop that received at least one packet.";
    WORKER_BUSY_RATIO: Gauge "sluice_worker_busy_ratio" ["worker"]
        "Share of the worker's polls that received packets since the previous scrape (since start at the first).";
    SERVICE_USABLE_BACKENDS: Gauge "sluice_service_usable_backends" ["service"]
        "Backends of the service with a positive weight, which can take new flows.";
    BACKEND_ACTIVE_SESSIONS: Gauge "sluice_backend_active_sessions" ["service", "backend"]
        "Sessions on the backend now.";
    BACKEND_WEIGHT: Gauge "sluice_backend_weight" ["service", "backend"]
        "The backend's weight in the config in effect (0: drained or disabled).";
    BACKEND_HEALTHY: Gauge "sluice_backend_healthy" ["service", "backend"]
        "1 if the backend passes its health checks, 0 if not.";
    SERVICE_NEW_SESSIONS: Counter "sluice_service_sessions_created_total" ["service"]
        "Sessions made for the service's current backends.";
    BACKEND_NEW_SESSIONS: Counter "sluice_backend_sessions_created_total" ["service", "backend"]
        "Sessions made for the backend.";
    SERVICE_LIMIT: Gauge "sluice_service_limit" ["service", "limit", "when"]
        "A configured limit of the service: per second for packets, bytes and connections; a count for sessions.";
    SERVICE_LIMITED: Counter "sluice_service_limited_total" ["service", "limit"]
        "Packets of the service dropped by a limit (connections and sessions: new connections refused before any state).";
    SERVICE_ACTIVE_SESSIONS: Gauge "sluice_service_active_sessions" ["service"]
        "Connections (flow sessions) of the service now.";
    ISOLATION_ACTIVE: Gauge "sluice_isolation_active" []
        "1 while the appliance counts as overloaded and on_overload limits apply.";
    ISOLATION_CHECKS: Counter "sluice_isolation_checks_total" []
        "Overload checks made (one per isolation.interval).";
    ISOLATION_SWITCHES: Counter "sluice_isolation_switches_total" ["to"]
        "Times isolation was switched on or off.";
    ISOLATION_LOAD: Gauge "sluice_isolation_load" ["measure"]
        "The load the last overload check measured: busiest worker's busy ratio, packets per second received, live sessions.";
    SYNC_MESSAGES: Counter "sluice_sync_messages_total" ["direction"]
        "Session-sync messages sent (one per peer) and accepted.";
    SYNC_RECORDS: Counter "sluice_sync_records_total" ["direction"]
        "Session records sent (counted once per peer) and received in accepted messages.";
    SYNC_DELETES: Counter "sluice_sync_deletes_sent_total" ["reason"]
        "Delete records sent (counted once per peer): for connections that ended (FINs both ways, or a RST), and for sessions the sweep expired.";
    SYNC_BYTES: Counter "sluice_sync_bytes_total" ["direction"]
        "UDP payload bytes of session-sync messages sent and accepted.";
    AGENT_ASSIGNS: Counter "sluice_agent_assignments_sent_total" []
        "Health-check assignments sent to the host agents.";
    AGENT_SEND_ERRORS: Counter "sluice_agent_send_errors_total" []
        "Health-check assignments the socket refused to send.";
    AGENT_REPORTS: Counter "sluice_agent_reports_total" ["agent"]
        "Health reports accepted, by agent (its host address).";
    AGENT_PROBES: Counter "sluice_agent_tunnel_probes_total" ["agent"]
        "Tunnel-path probes queued for worker 0 to send through one of the agent's backends' tunnels, by agent.";
    AGENT_ECHOES: Counter "sluice_agent_tunnel_echoes_total" ["agent"]
        "Health reports that echoed the nonce of a tunnel-path probe sent to the agent, by agent.";
    AGENT_PROBES_NOT_QUEUED: Counter "sluice_agent_tunnel_probes_not_queued_total" []
        "Tunnel-path probes not queued: the queue to worker 0 was full.";
    AGENT_REFUSED: Counter "sluice_agent_reports_refused_total" ["reason"]
        "Health reports refused: bad tag, replayed, stale, malformed, from no agent, or for a backend its sender does not check.";
    SYNC_SEND_ERRORS: Counter "sluice_sync_send_errors_total" []
        "Session-sync messages the socket refused to send.";
    SYNC_REJECTED: Counter "sluice_sync_rejected_total" ["reason"]
        "Session-sync messages refused: bad tag, replayed, stale, malformed, or not from a peer.";
    SYNC_OUTCOMES: Counter "sluice_sync_records_applied_total" ["outcome"]
        "What became of received records: installed, updated, kept_local (a session made here stays), unchanged, removed, unknown (no such service or backend here), full.";
    SYNC_KERNEL_DROPS: Counter "sluice_sync_kernel_drops_total" []
        "Session-sync datagrams the kernel dropped because the sync socket's receive buffer was full.";
    SYNC_RECEIVE_BUFFER: Gauge "sluice_sync_receive_buffer_bytes" []
        "The sync socket's receive buffer, as the kernel granted it.";
    SYNC_LAG: Gauge "sluice_sync_lag_seconds" []
        "Sender's clock in the last accepted message, behind ours.";
    VIP_ANNOUNCED: Gauge "sluice_vip_announced" ["vip"]
        "1 while the VIP is announced to the routers (BIRD took it), 0 while it is withdrawn.";
    VIPS_WITHDRAWN: Gauge "sluice_vips_withdrawn" ["reason"]
        "VIPs withdrawn, by why: no_backend (none of its services has a backend that takes flows), workers_stalled.";
    ROUTING_UPDATES: Counter "sluice_routing_updates_total" ["result"]
        "Updates of the VIPs given to the routing daemon (include written, configure), by result (ok, failed).";
    BGP_SESSION_UP: Gauge "sluice_bgp_session_up" ["protocol"]
        "1 while the routing daemon's BGP session is established, read from BIRD every 2 s.";
    CONFIG_GENERATION: Gauge "sluice_config_generation" []
        "Generation of the config in effect.";
    CONFIG_LAST_SUCCESS: Gauge "sluice_config_last_apply_success" []
        "1 if the last config apply succeeded, 0 if it was refused.";
    CONFIG_LAST_TIME: Gauge "sluice_config_last_apply_timestamp_seconds" []
        "Unix time of the last config apply, successful or not.";
    CONFIG_APPLIES: Counter "sluice_config_applies_total" ["result"]
        "Config applies, by result (applied, refused).";
    CONNECTIONS_REFUSED: Counter "sluice_control_connections_refused_total" ["endpoint", "reason"]
        "Connections to the admin socket or the metrics endpoint refused: over_cap (already serving its most connections) or timed_out (request or answer not through by its deadline).";
    BUILD_INFO: Gauge "sluice_build_info" ["version", "profile"]
        "Always 1; the labels say which build of sluiced runs.";
}

/// Reads one counter of a NIC's `rte_eth_stats`.
type NicField = fn(&dpdk_sys::PortStats) -> u64;

/// The NICs' own counters (`rte_eth_stats`), label `port`: each family with the field it reads.
const NIC_FAMILIES: [(Def, NicField); 8] = {
    const fn nic(name: &'static str, help: &'static str) -> Def {
        Def::counter(Metric { name, help }, &["port"])
    }
    [
        (nic("sluice_nic_rx_packets_total", "Packets the NIC received (rte_eth_stats ipackets)."), |s| {
            s.ipackets
        }),
        (
            nic(
                "sluice_nic_rx_bytes_total",
                "Bytes the NIC received (ibytes; some virtual drivers do not count bytes).",
            ),
            |s| s.ibytes,
        ),
        (nic("sluice_nic_tx_packets_total", "Packets the NIC sent (opackets)."), |s| s.opackets),
        (nic("sluice_nic_tx_bytes_total", "Bytes the NIC sent (obytes)."), |s| s.obytes),
        (
            nic(
                "sluice_nic_rx_missed_packets_total",
                "Packets the NIC dropped because its RX ring was full (imissed).",
            ),
            |s| s.imissed,
        ),
        (nic("sluice_nic_rx_errors_total", "Erroneous packets the NIC received (ierrors)."), |s| s.ierrors),
        (nic("sluice_nic_tx_errors_total", "Packets the NIC failed to send (oerrors)."), |s| s.oerrors),
        (
            nic("sluice_nic_rx_mbuf_allocation_failures_total", "RX buffer allocation failures (rx_nombuf)."),
            |s| s.rx_nombuf,
        ),
    ]
};

/// Families from the counter tables elsewhere: the workers' (`stats.rs`: ports and queues,
/// events, drops, SYN proxy, traffic per service and backend) and the sweep's (`report.rs`).
const DROPS: Def = Def::counter(DropReason::METRIC, &["reason"]);
const SESSIONS: Def = Def::gauge(report::SESSIONS_LIVE, &[]);
const SESSIONS_EXPIRED: Def = Def::counter(report::SESSIONS_EXPIRED, &[]);

fn port_family(m: &PortMetric) -> Def {
    Def::counter(m.port, &["port"])
}

fn queue_family(m: &PortMetric) -> Def {
    Def::counter(m.queue, &["port", "queue"])
}

/// An event or SYN proxy counter, summed over the workers.
fn event_family(m: &Metric) -> Def {
    Def::counter(*m, &[])
}

fn service_family(m: &TrafficMetric) -> Def {
    Def::counter(m.service, &["service"])
}

fn backend_family(m: &TrafficMetric) -> Def {
    Def::counter(m.backend, &["service", "backend"])
}

/// Every family the collector may emit.
fn families() -> Vec<Def> {
    let mut v: Vec<Def> = FAMILIES.iter().map(|d| **d).collect();
    v.extend(NIC_FAMILIES.iter().map(|(d, _)| *d));
    v.extend([DROPS, SESSIONS, SESSIONS_EXPIRED]);
    v.extend(PortCounters::METRICS.iter().flat_map(|m| [port_family(m), queue_family(m)]));
    v.extend(WorkerStats::METRICS.iter().chain(SynProxyCounters::METRICS).map(event_family));
    v.extend(Traffic::METRICS.iter().flat_map(|m| [service_family(m), backend_family(m)]));
    v
}

/// The samples of one family, built at scrape time.
struct Family {
    def: Def,
    metrics: Vec<proto::Metric>,
}

impl Family {
    fn new(def: &Def) -> Family {
        Family { def: *def, metrics: Vec::new() }
    }

    /// A sample; `labels` are the values of the family's label names, in order.
    fn add(&mut self, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), self.def.labels.len(), "{}", self.def.name);
        let pairs = self
            .def
            .labels
            .iter()
            .zip(labels)
            .map(|(name, value)| {
                let mut l = LabelPair::default();
                l.set_name((*name).to_string());
                l.set_value((*value).to_string());
                l
            })
            .collect();
        let mut m = proto::Metric::from_label(pairs);
        match self.def.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    /// Appends the family to `out` unless it has no samples.
    fn push_to(self, out: &mut Vec<MetricFamily>) {
        if self.metrics.is_empty() {
            return;
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.def.name.to_string());
        mf.set_help(self.def.help.to_string());
        mf.set_field_type(match self.def.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        mf.set_metric(self.metrics);
        out.push(mf);
    }
}

/// A family with one unlabelled sample.
fn single(def: &Def, value: f64, out: &mut Vec<MetricFamily>) {
    let mut f = Family::new(def);
    f.add(&[], value);
    f.push_to(out);
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The backends of a snapshot with their labels. A (service, backend) label pair seen twice is
/// kept once: a duplicate series would make Prometheus refuse the whole scrape. (Validated
/// configs have unique service names and backends.)
fn labelled_backends(snap: &Snapshot) -> Vec<(&Service, &Backend, String)> {
    let mut seen = HashSet::new();
    let mut v = Vec::new();
    for s in &snap.services {
        for b in &s.backends {
            // As `sluicectl` names it: the address for DSR, `address:port` for NAT.
            let label = crate::labels::backend_label(s.forwarding, b.address, b.port);
            if seen.insert((s.name.as_str(), label.clone())) {
                v.push((s, b, label));
            } else {
                debug!("metrics: backend {label} of service {} listed twice; exported once", s.name);
            }
        }
    }
    v
}

// ---- the collector ---------------------------------------------------------------------------

/// The `prometheus` collector over a running appliance's state (see the module docs).
pub struct SluiceCollector {
    source: MetricsSource,
    descs: Vec<Desc>,
    /// Each worker's (polls, busy polls) at the previous scrape, for the busy ratio.
    previous_polls: Mutex<Vec<(u64, u64)>>,
}

impl SluiceCollector {
    pub fn new(source: MetricsSource) -> prometheus::Result<SluiceCollector> {
        let descs = families()
            .iter()
            .map(|d| {
                Desc::new(
                    d.name.to_string(),
                    d.help.to_string(),
                    d.labels.iter().map(|l| (*l).to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<Desc>>>()?;
        Ok(SluiceCollector { source, descs, previous_polls: Mutex::new(Vec::new()) })
    }

    fn n_ports(&self) -> usize {
        self.source.port_names.len().min(MAX_PORTS)
    }

    fn ports(&self, t: &Totals, out: &mut Vec<MetricFamily>) {
        let mut fams: Vec<Family> =
            PortCounters::METRICS.iter().map(|m| Family::new(&port_family(m))).collect();
        for (p, name) in t.ports.iter().zip(&self.source.port_names) {
            for (f, (_, n)) in fams.iter_mut().zip(p.each()) {
                f.add(&[name], n as f64);
            }
        }
        for f in fams {
            f.push_to(out);
        }
    }

    fn queues(&self, out: &mut Vec<MetricFamily>) {
        let mut fams: Vec<Family> =
            PortCounters::METRICS.iter().map(|m| Family::new(&queue_family(m))).collect();
        for (q, w) in self.source.stats.iter().enumerate() {
            let queue = q.to_string();
            for (pc, name) in w.ports.iter().zip(&self.source.port_names[..self.n_ports()]) {
                for (f, c) in fams.iter_mut().zip(pc.counters()) {
                    f.add(&[name, &queue], c.get() as f64);
                }
            }
        }
        for f in fams {
            f.push_to(out);
        }
    }

    fn nics(&self, out: &mut Vec<MetricFamily>) {
        let Some(read) = &self.source.nic_stats else { return };
        let stats = read();
        for (def, get) in &NIC_FAMILIES {
            let mut f = Family::new(def);
            for (s, name) in stats.iter().zip(&self.source.port_names) {
                f.add(&[name], get(s) as f64);
            }
            f.push_to(out);
        }
    }

    /// The event and SYN proxy counters, summed over the workers.
    fn events(&self, t: &Totals, out: &mut Vec<MetricFamily>) {
        for (m, n) in t.events.each().chain(t.synproxy.each()) {
            single(&event_family(m), n as f64, out);
        }
    }

    /// Every reason, 0 included: a series that appears only at its first drop makes
    /// `rate()` and `increase()` miss that drop.
    fn drops(&self, t: &Totals, out: &mut Vec<MetricFamily>) {
        let mut f = Family::new(&DROPS);
        for r in DropReason::ALL {
            f.add(&[r.label()], t.drops[*r as usize] as f64);
        }
        f.push_to(out);
    }

    fn sessions(&self, t: &Totals, out: &mut Vec<MetricFamily>) {
        let table = &self.source.sessions;
        single(&SESSIONS, t.sessions_live as f64, out);
        single(&SESSION_CAPACITY, table.capacity() as f64, out);
        single(&SESSION_SLOTS, table.slot_count() as f64, out);
        single(&SESSION_TABLE_FULL, flag(table.is_full()), out);
        single(&SESSIONS_EXPIRED, t.sessions_expired as f64, out);
    }

    /// Poll counters, and the busy ratio since the previous scrape (whoever made it: two
    /// Prometheus servers scraping the same sluiced each see a shorter interval). For a ratio
    /// over a chosen window, use `rate(sluice_worker_busy_polls_total[W]) /
    /// rate(sluice_worker_polls_total[W])`.
    fn workers(&self, out: &mut Vec<MetricFamily>) {
        let mut polls = Family::new(&WORKER_POLLS);
        let mut busy = Family::new(&WORKER_BUSY_POLLS);
        let mut ratio = Family::new(&WORKER_BUSY_RATIO);
        let mut previous = self.previous_polls.lock().unwrap_or_else(PoisonError::into_inner);
        previous.resize(self.source.stats.len(), (0, 0));
        for (w, (st, prev)) in self.source.stats.iter().zip(previous.iter_mut()).enumerate() {
            let worker = w.to_string();
            // Busy first: the worker counts a poll before it counts it busy, so busy <= polls.
            let b = st.busy_polls.get();
            let n = st.polls.get();
            let (dn, db) = (n.saturating_sub(prev.0), b.saturating_sub(prev.1));
            *prev = (n, b);
            polls.add(&[&worker], n as f64);
            busy.add(&[&worker], b as f64);
            ratio.add(&[&worker], if dn == 0 { 0.0 } else { (db as f64 / dn as f64).min(1.0) });
        }
        drop(previous);
        for f in [polls, busy, ratio] {
            f.push_to(out);
        }
    }

    /// One sample per service of the snapshot (`value` `None`: none for that service).
    fn per_service(&self, snap: &Snapshot, def: &Def, value: impl Fn(&Service) -> Option<f64>) -> Family {
        let mut f = Family::new(def);
        let mut seen = HashSet::new();
        for s in snap.services.iter().filter(|s| seen.insert(s.name.as_str())) {
            if let Some(v) = value(s) {
                f.add(&[&s.name], v);
            }
        }
        f
    }

    /// One sample per backend of the snapshot (`value` `None`: none for that backend).
    fn per_backend(
        &self,
        backends: &[(&Service, &Backend, String)],
        def: &Def,
        value: impl Fn(&Service, &Backend) -> Option<f64>,
    ) -> Family {
        let mut f = Family::new(def);
        for (s, b, label) in backends {
            if let Some(v) = value(s, b) {
                f.add(&[&s.name, label], v);
            }
        }
        f
    }

    fn services(&self, snap: &Snapshot, out: &mut Vec<MetricFamily>) {
        self.per_service(snap, &SERVICE_USABLE_BACKENDS, |s| {
            Some(s.backends.iter().filter(|b| b.takes_new_flows()).count() as f64)
        })
        .push_to(out);
        let backends = labelled_backends(snap);
        let table = &self.source.sessions;
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| self.source.stats.iter().map(|w| f(w)).sum::<u64>();
        // Counter `k` of the table of traffic `i` (a service or backend id) in `c`.
        let at = |c: &[Traffic], i: usize, k: usize| c.get(i).map_or(0, |t| t.counters()[k].get());
        for (k, m) in Traffic::METRICS.iter().enumerate() {
            self.per_service(snap, &service_family(m), |s| {
                Some(sum(&|w| at(&w.per_service, usize::from(s.id), k)) as f64)
            })
            .push_to(out);
            self.per_backend(&backends, &backend_family(m), |_, b| {
                Some(sum(&|w| at(&w.per_backend, b.id as usize, k)) as f64)
            })
            .push_to(out);
        }
        self.per_service(snap, &SERVICE_NEW_SESSIONS, |s| {
            Some(s.backends.iter().map(|b| table.created(b.id)).sum::<u64>() as f64)
        })
        .push_to(out);
        self.per_backend(&backends, &BACKEND_NEW_SESSIONS, |_, b| Some(table.created(b.id) as f64))
            .push_to(out);
        self.per_backend(&backends, &BACKEND_ACTIVE_SESSIONS, |_, b| Some(f64::from(table.active(b.id))))
            .push_to(out);
        self.per_backend(&backends, &BACKEND_WEIGHT, |_, b| Some(f64::from(b.weight))).push_to(out);
        if let Some(health) = &self.source.health {
            self.per_backend(&backends, &BACKEND_HEALTHY, |_, b| health(b.id).map(flag)).push_to(out);
        }
    }

    /// Limits as configured, drops per limit, connections per service; the overload check.
    fn limits(&self, snap: &Snapshot, out: &mut Vec<MetricFamily>) {
        use sluice_dataplane::limit::{dropped_index, Which, RATES};
        let mut conf = Family::new(&SERVICE_LIMIT);
        let mut limited = Family::new(&SERVICE_LIMITED);
        let mut seen = HashSet::new();
        for s in snap.services.iter().filter(|s| !s.limits.is_empty() && seen.insert(s.name.as_str())) {
            let when =
                |l: &sluice_dataplane::limit::Limit| if l.on_overload { "on_overload" } else { "always" };
            for r in RATES {
                if let Some(l) = s.limits.rate(r) {
                    conf.add(&[&s.name, Which::from(r).label(), when(&l)], l.value as f64);
                }
            }
            if let Some(l) = s.limits.sessions {
                conf.add(&[&s.name, "sessions", when(&l)], l.value as f64);
            }
            for w in Which::ALL {
                let n: u64 = self
                    .source
                    .stats
                    .iter()
                    .map(|st| st.limits.get(dropped_index(s.id, w)).map_or(0, |c| c.get()))
                    .sum();
                limited.add(&[&s.name, w.label()], n as f64);
            }
        }
        conf.push_to(out);
        limited.push_to(out);
        let table = &self.source.sessions;
        self.per_service(snap, &SERVICE_ACTIVE_SESSIONS, |s| Some(f64::from(table.service_active(s.id))))
            .push_to(out);
        let Some(iso) = &self.source.isolation else { return };
        use std::sync::atomic::Ordering::Relaxed;
        single(&ISOLATION_ACTIVE, flag(iso.active.load(Relaxed)), out);
        single(&ISOLATION_CHECKS, iso.checks.load(Relaxed) as f64, out);
        let mut sw = Family::new(&ISOLATION_SWITCHES);
        sw.add(&["on"], iso.switched_on.load(Relaxed) as f64);
        sw.add(&["off"], iso.switched_off.load(Relaxed) as f64);
        sw.push_to(out);
        let mut load = Family::new(&ISOLATION_LOAD);
        load.add(&["busy"], f64::from_bits(iso.busy_bits.load(Relaxed)));
        load.add(&["packets_per_second"], iso.packets_per_second.load(Relaxed) as f64);
        load.add(&["sessions"], iso.sessions.load(Relaxed) as f64);
        load.push_to(out);
    }

    fn sync(&self, out: &mut Vec<MetricFamily>) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(c) = &self.source.sync else { return };
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        for (def, sent, received) in [
            (&SYNC_MESSAGES, &c.messages_sent, &c.messages_received),
            (&SYNC_RECORDS, &c.records_sent, &c.records_received),
            (&SYNC_BYTES, &c.bytes_sent, &c.bytes_received),
        ] {
            let mut f = Family::new(def);
            f.add(&["sent"], get(sent));
            f.add(&["received"], get(received));
            f.push_to(out);
        }
        let mut f = Family::new(&SYNC_DELETES);
        for (r, n) in crate::peers::DeleteReason::ALL.iter().zip(&c.deletes_sent) {
            f.add(&[r.label()], get(n));
        }
        f.push_to(out);
        single(&SYNC_SEND_ERRORS, get(&c.send_errors), out);
        let mut f = Family::new(&SYNC_REJECTED);
        for (r, n) in crate::sync::Reject::ALL.iter().zip(&c.rejected) {
            f.add(&[r.label()], get(n));
        }
        f.add(&["not_a_peer"], get(&c.rejected[crate::sync::Reject::ALL.len()]));
        f.push_to(out);
        let mut f = Family::new(&SYNC_OUTCOMES);
        for (o, n) in crate::peers::Outcome::ALL.iter().zip(&c.outcomes) {
            f.add(&[o.label()], get(n));
        }
        f.push_to(out);
        single(&SYNC_KERNEL_DROPS, get(&c.kernel_drops), out);
        single(&SYNC_RECEIVE_BUFFER, get(&c.receive_buffer), out);
        single(&SYNC_LAG, get(&c.lag_ms) / 1000.0, out);
    }

    fn agents(&self, out: &mut Vec<MetricFamily>) {
        use crate::health::agents::MORE_REFUSALS;
        use std::sync::atomic::Ordering::Relaxed;
        let Some(c) = &self.source.agents else { return };
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        single(&AGENT_ASSIGNS, get(&c.assigns_sent), out);
        single(&AGENT_SEND_ERRORS, get(&c.send_errors), out);
        let mut f = Family::new(&AGENT_REPORTS);
        for (agent, n) in c.reports.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            f.add(&[&agent.to_string()], *n as f64);
        }
        f.push_to(out);
        let (mut probes, mut echoes) = (Family::new(&AGENT_PROBES), Family::new(&AGENT_ECHOES));
        for (agent, (sent, echoed)) in c.tunnel.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            probes.add(&[&agent.to_string()], *sent as f64);
            echoes.add(&[&agent.to_string()], *echoed as f64);
        }
        probes.push_to(out);
        echoes.push_to(out);
        single(&AGENT_PROBES_NOT_QUEUED, get(&c.probes_not_queued), out);
        let mut f = Family::new(&AGENT_REFUSED);
        let labels = crate::sync::Reject::ALL.iter().map(|r| r.label()).chain(MORE_REFUSALS);
        for (label, n) in labels.zip(&c.refused) {
            f.add(&[label], get(n));
        }
        f.push_to(out);
    }

    fn routing(&self, out: &mut Vec<MetricFamily>) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(r) = &self.source.routing else { return };
        use crate::announce::locked;
        let announced = locked(&r.announced).clone();
        let (mut vips, mut withdrawn) = (Family::new(&VIP_ANNOUNCED), Family::new(&VIPS_WITHDRAWN));
        let standing = locked(&r.standing).clone();
        for vip in standing.keys() {
            vips.add(&[&vip.to_string()], flag(announced.contains(vip)));
        }
        for why in crate::announce::Withdrawn::ALL {
            let n = standing.values().filter(|s| **s == Err(why)).count();
            withdrawn.add(&[why.label()], n as f64);
        }
        vips.push_to(out);
        withdrawn.push_to(out);
        let mut f = Family::new(&ROUTING_UPDATES);
        f.add(&["ok"], r.updates.load(Relaxed) as f64);
        f.add(&["failed"], r.failures.load(Relaxed) as f64);
        f.push_to(out);
        let mut f = Family::new(&BGP_SESSION_UP);
        for (name, up) in locked(&r.bgp).iter() {
            f.add(&[name], flag(*up));
        }
        f.push_to(out);
    }

    fn config(&self, out: &mut Vec<MetricFamily>) {
        let a = &self.source.apply;
        single(&CONFIG_GENERATION, a.generation() as f64, out);
        if let Some(ok) = a.last_success() {
            single(&CONFIG_LAST_SUCCESS, flag(ok), out);
        }
        if let Some(t) = a.last_time() {
            single(&CONFIG_LAST_TIME, t, out);
        }
        let mut f = Family::new(&CONFIG_APPLIES);
        f.add(&["applied"], a.applied_count() as f64);
        f.add(&["refused"], a.refused_count() as f64);
        f.push_to(out);
    }
}

/// `sluice_control_connections_refused_total`: every endpoint, every reason (0s included).
fn connections(endpoints: &[(&'static str, Arc<Refusals>)], out: &mut Vec<MetricFamily>) {
    let mut f = Family::new(&CONNECTIONS_REFUSED);
    for (endpoint, refusals) in endpoints {
        for r in Refusal::ALL {
            f.add(&[endpoint, r.label()], refusals.get(r) as f64);
        }
    }
    f.push_to(out);
}

fn build_info(out: &mut Vec<MetricFamily>) {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let mut f = Family::new(&BUILD_INFO);
    f.add(&[env!("CARGO_PKG_VERSION"), profile], 1.0);
    f.push_to(out);
}

impl Collector for SluiceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let src = &self.source;
        let mut t = Totals::sum(&src.stats, self.n_ports());
        t.sessions_live = src.sessions_live.load(Ordering::Relaxed);
        t.sessions_expired = src.sessions_expired.load(Ordering::Relaxed);
        let snap = src.snapshot.load();
        let mut out = Vec::new();
        self.ports(&t, &mut out);
        self.queues(&mut out);
        self.nics(&mut out);
        self.events(&t, &mut out);
        self.drops(&t, &mut out);
        self.sessions(&t, &mut out);
        self.workers(&mut out);
        self.services(&snap, &mut out);
        self.limits(&snap, &mut out);
        self.sync(&mut out);
        self.agents(&mut out);
        self.routing(&mut out);
        self.config(&mut out);
        connections(&src.connections, &mut out);
        build_info(&mut out);
        out
    }
}

/// A registry with a [`SluiceCollector`] over `source` in it.
pub fn registry(source: MetricsSource) -> prometheus::Result<Registry> {
    let r = Registry::new();
    r.register(Box::new(SluiceCollector::new(source)?))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::session::{Session, SessionKey, TcpState, Timeouts};
    use sluice_dataplane::snapshot::{BackendSpec, PortSpec, Protocol, ServiceSpec, SnapshotSpec, Tunnel};
    use std::net::Ipv4Addr;

    fn snapshot(services: Vec<ServiceSpec>) -> Snapshot {
        let spec = SnapshotSpec {
            generation: 4,
            ports: vec![PortSpec {
                name: "ext".into(),
                mac: [2, 0, 0, 0, 0, 1],
                addresses: vec![sluice_dataplane::flow::Prefix::new(Ipv4Addr::new(198, 19, 0, 1), 24)],
                mtu: 1500,
                vlan: None,
                gateways: vec![],
                neighbors: vec![],
                kernel: None,
            }],
            tunnel_sources: vec![],
            clusters: vec![],
            services,
        };
        Snapshot::build(&spec, None).expect("snapshot")
    }

    fn source(snap: Snapshot, n_workers: usize) -> MetricsSource {
        MetricsSource {
            stats: (0..n_workers).map(|_| Arc::new(WorkerStats::default())).collect(),
            port_names: vec!["ext".into()],
            sessions: Arc::new(SessionTable::new(100, Timeouts::default(), 1)),
            snapshot: Arc::new(ArcSwap::from_pointee(snap)),
            apply: Arc::new(ApplyState::new()),
            sessions_live: Arc::new(AtomicU64::new(0)),
            sessions_expired: Arc::new(AtomicU64::new(0)),
            nic_stats: None,
            health: None,
            isolation: None,
            sync: None,
            agents: None,
            routing: None,
            connections: vec![],
        }
    }

    fn web() -> ServiceSpec {
        ServiceSpec::dsr(
            "web",
            Ipv4Addr::new(198, 18, 10, 1).into(),
            80,
            Protocol::Tcp,
            vec![
                BackendSpec::new(Ipv4Addr::new(198, 19, 0, 11).into(), 1),
                BackendSpec::new(Ipv4Addr::new(198, 19, 0, 12).into(), 0),
            ],
        )
    }

    fn gauge(mfs: &[MetricFamily], name: &str, labels: &[&str]) -> Option<f64> {
        let mf = mfs.iter().find(|m| m.name() == name)?;
        mf.get_metric()
            .iter()
            .find(|m| m.get_label().iter().map(|l| l.value()).eq(labels.iter().copied()))
            .map(|m| match mf.get_field_type() {
                MetricType::COUNTER => m.get_counter().get_value(),
                _ => m.get_gauge().get_value(),
            })
    }

    fn limited_web() -> ServiceSpec {
        use sluice_dataplane::limit::{Limit, Limits};
        let l = |value, on_overload| Some(Limit { value, on_overload });
        ServiceSpec {
            limits: Limits { rates: [l(1000, true), None, l(50, false)], sessions: l(200, false) },
            ..web()
        }
    }

    #[test]
    fn limits_and_the_overload_check_are_exported() {
        use sluice_dataplane::limit::{dropped_index, Which};
        let mut src = source(snapshot(vec![limited_web()]), 2);
        let iso = Arc::new(crate::isolation::IsolationState::default());
        iso.active.store(true, Ordering::Relaxed);
        iso.checks.store(12, Ordering::Relaxed);
        iso.switched_on.store(2, Ordering::Relaxed);
        iso.switched_off.store(1, Ordering::Relaxed);
        iso.busy_bits.store(0.25f64.to_bits(), Ordering::Relaxed);
        iso.packets_per_second.store(40_000, Ordering::Relaxed);
        src.isolation = Some(iso);
        let id = src.snapshot.load().services[0].id;
        src.stats[0].limits[dropped_index(id, Which::Packets)].add(7);
        src.stats[1].limits[dropped_index(id, Which::Packets)].add(5);
        src.stats[1].limits[dropped_index(id, Which::Sessions)].add(3);
        let mfs = SluiceCollector::new(src).expect("collector").collect();
        assert_eq!(gauge(&mfs, "sluice_service_limit", &["web", "packets", "on_overload"]), Some(1000.0));
        assert_eq!(gauge(&mfs, "sluice_service_limit", &["web", "connections", "always"]), Some(50.0));
        assert_eq!(gauge(&mfs, "sluice_service_limit", &["web", "sessions", "always"]), Some(200.0));
        assert_eq!(gauge(&mfs, "sluice_service_limit", &["web", "bytes", "always"]), None, "not configured");
        assert_eq!(gauge(&mfs, "sluice_service_limited_total", &["web", "packets"]), Some(12.0), "summed");
        assert_eq!(gauge(&mfs, "sluice_service_limited_total", &["web", "sessions"]), Some(3.0));
        assert_eq!(gauge(&mfs, "sluice_service_limited_total", &["web", "bytes"]), Some(0.0));
        assert_eq!(gauge(&mfs, "sluice_service_active_sessions", &["web"]), Some(0.0));
        assert_eq!(gauge(&mfs, "sluice_isolation_active", &[]), Some(1.0));
        assert_eq!(gauge(&mfs, "sluice_isolation_checks_total", &[]), Some(12.0));
        assert_eq!(gauge(&mfs, "sluice_isolation_switches_total", &["on"]), Some(2.0));
        assert_eq!(gauge(&mfs, "sluice_isolation_switches_total", &["off"]), Some(1.0));
        assert_eq!(gauge(&mfs, "sluice_isolation_load", &["busy"]), Some(0.25));
        assert_eq!(gauge(&mfs, "sluice_isolation_load", &["packets_per_second"]), Some(40_000.0));
    }

    #[test]
    fn every_family_is_declared_with_its_labels_and_type() {
        let mut src = source(snapshot(vec![limited_web()]), 2);
        src.isolation = Some(Default::default());
        src.sync = Some(Default::default());
        let agents = crate::health::agents::AgentCounters::default();
        agents.reports.lock().unwrap().insert("198.19.0.11".parse().unwrap(), 1);
        agents.tunnel.lock().unwrap().insert("198.19.0.11".parse().unwrap(), (3, 2));
        src.agents = Some(Arc::new(agents));
        src.nic_stats = Some(Box::new(|| vec![dpdk_sys::PortStats::default()]));
        src.health = Some(Box::new(|_| Some(true)));
        src.connections = vec![("admin", Arc::default())];
        let routing = crate::announce::RoutingState::default();
        routing.standing.lock().unwrap().insert("198.18.10.1".parse().unwrap(), Ok(()));
        routing.bgp.lock().unwrap().push(("upstream".into(), true));
        src.routing = Some(Arc::new(routing));
        src.apply.record_refused();
        let c = SluiceCollector::new(src).expect("collector");
        let mfs = c.collect();
        let families = families();
        let names: HashSet<&str> = families.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), families.len(), "a family declared twice");
        let mut emitted = HashSet::new();
        for mf in &mfs {
            let def =
                families.iter().find(|d| d.name == mf.name()).unwrap_or_else(|| panic!("{}", mf.name()));
            assert!(emitted.insert(mf.name()), "{} emitted twice", mf.name());
            let kind = if def.kind == Kind::Counter { MetricType::COUNTER } else { MetricType::GAUGE };
            assert_eq!(mf.get_field_type(), kind, "{}", def.name);
            assert_eq!(def.kind == Kind::Counter, def.name.ends_with("_total"), "{}", def.name);
            for m in mf.get_metric() {
                let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
                assert_eq!(names, def.labels, "{}", def.name);
            }
        }
        // With every hook set and an apply recorded, every declared family shows up.
        let missing: Vec<&str> = families.iter().map(|d| d.name).filter(|n| !emitted.contains(n)).collect();
        assert!(missing.is_empty(), "never emitted: {missing:?}");
        assert_eq!(c.desc().len(), families.len());
    }

    #[test]
    fn hooks_absent_means_no_nic_or_health_series() {
        let c = SluiceCollector::new(source(snapshot(vec![web()]), 1)).expect("collector");
        let mfs = c.collect();
        for mf in &mfs {
            assert!(!mf.name().starts_with("sluice_nic_"), "{}", mf.name());
            assert_ne!(mf.name(), "sluice_backend_healthy");
            // Nothing attempted yet: no apply result or time to report.
            assert_ne!(mf.name(), "sluice_config_last_apply_success");
            assert_ne!(mf.name(), "sluice_config_last_apply_timestamp_seconds");
        }
    }

    #[test]
    fn health_hook_labels_backends_and_skips_unchecked_ones() {
        let mut src = source(snapshot(vec![web()]), 1);
        src.health = Some(Box::new(|id| (id == 0).then_some(false)));
        let mfs = SluiceCollector::new(src).expect("collector").collect();
        assert_eq!(gauge(&mfs, "sluice_backend_healthy", &["web", "198.19.0.11"]), Some(0.0));
        assert_eq!(gauge(&mfs, "sluice_backend_healthy", &["web", "198.19.0.12"]), None);
    }

    #[test]
    fn busy_ratio_is_since_the_previous_scrape() {
        let src = source(snapshot(vec![web()]), 2);
        let w0 = Arc::clone(&src.stats[0]);
        let c = SluiceCollector::new(src).expect("collector");
        w0.polls.add(100);
        w0.busy_polls.add(25);
        let first = c.collect();
        assert_eq!(gauge(&first, "sluice_worker_busy_ratio", &["0"]), Some(0.25));
        // No polls at all on worker 1: 0, not NaN.
        assert_eq!(gauge(&first, "sluice_worker_busy_ratio", &["1"]), Some(0.0));
        w0.polls.add(10);
        w0.busy_polls.add(10);
        let second = c.collect();
        assert_eq!(gauge(&second, "sluice_worker_busy_ratio", &["0"]), Some(1.0));
        assert_eq!(gauge(&second, "sluice_worker_polls_total", &["0"]), Some(110.0));
        assert_eq!(gauge(&second, "sluice_worker_busy_polls_total", &["0"]), Some(35.0));
    }

    #[test]
    fn nat_backends_are_labelled_address_and_port() {
        let mut nat = ServiceSpec::dsr(
            "tenant",
            Ipv4Addr::new(198, 18, 10, 2).into(),
            8080,
            Protocol::Tcp,
            vec![BackendSpec::nat(
                Ipv4Addr::new(10, 0, 0, 5).into(),
                8000,
                Ipv4Addr::new(198, 19, 0, 21).into(),
                3,
            )],
        );
        nat.forwarding = sluice_dataplane::snapshot::Forwarding::Nat;
        nat.tunnel = Tunnel::Gre { key: Some(100) };
        let src = source(snapshot(vec![web(), nat]), 1);
        let table = Arc::clone(&src.sessions);
        let key = SessionKey::flow(sluice_dataplane::flow::Addr::v4(Ipv4Addr::new(1, 2, 3, 4)), 999, 1);
        // Backend ids are numbered in order: web's two, then tenant's.
        table.insert(&key, table.hash(&key), &Session::new(2, TcpState::Established, 0));
        let mfs = SluiceCollector::new(src).expect("collector").collect();
        assert_eq!(gauge(&mfs, "sluice_backend_weight", &["tenant", "10.0.0.5:8000"]), Some(3.0));
        assert_eq!(gauge(&mfs, "sluice_backend_active_sessions", &["tenant", "10.0.0.5:8000"]), Some(1.0));
        assert_eq!(gauge(&mfs, "sluice_backend_active_sessions", &["web", "198.19.0.11"]), Some(0.0));
        assert_eq!(gauge(&mfs, "sluice_service_usable_backends", &["web"]), Some(1.0));
        assert_eq!(gauge(&mfs, "sluice_service_usable_backends", &["tenant"]), Some(1.0));
    }

    #[test]
    fn duplicate_service_names_are_exported_once() {
        let mut other = web();
        other.port = 81;
        let mfs = SluiceCollector::new(source(snapshot(vec![web(), other]), 1)).expect("collector").collect();
        let weights = mfs.iter().find(|m| m.name() == "sluice_backend_weight").expect("weights");
        assert_eq!(weights.get_metric().len(), 2);
        let usable = mfs.iter().find(|m| m.name() == "sluice_service_usable_backends").expect("usable");
        assert_eq!(usable.get_metric().len(), 1);
    }

    #[test]
    fn apply_state_records_attempts() {
        let a = ApplyState::new();
        assert_eq!((a.generation(), a.last_success(), a.last_time()), (0, None, None));
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        a.record_applied_at(3, t);
        assert_eq!((a.generation(), a.last_success(), a.last_time()), (3, Some(true), Some(1_700_000_000.5)));
        a.record_refused_at(t + std::time::Duration::from_secs(2));
        assert_eq!(
            (a.generation(), a.last_success(), a.last_time()),
            (3, Some(false), Some(1_700_000_002.5))
        );
        assert_eq!((a.applied_count(), a.refused_count()), (1, 1));
    }

    #[test]
    fn refused_connections_are_exported_by_endpoint_and_reason() {
        let mut src = source(snapshot(vec![web()]), 1);
        let (admin, http) = (Arc::new(Refusals::default()), Arc::new(Refusals::default()));
        src.connections = vec![("admin", Arc::clone(&admin)), ("metrics", Arc::clone(&http))];
        let c = SluiceCollector::new(src).expect("collector");
        admin.count(Refusal::OverCap);
        http.count(Refusal::TimedOut);
        http.count(Refusal::TimedOut);
        let mfs = c.collect();
        let name = "sluice_control_connections_refused_total";
        assert_eq!(gauge(&mfs, name, &["admin", "over_cap"]), Some(1.0));
        assert_eq!(gauge(&mfs, name, &["admin", "timed_out"]), Some(0.0));
        assert_eq!(gauge(&mfs, name, &["metrics", "over_cap"]), Some(0.0));
        assert_eq!(gauge(&mfs, name, &["metrics", "timed_out"]), Some(2.0));
    }
}
