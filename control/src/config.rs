//! The YAML pipeline config: parsed, validated and turned into a dataplane snapshot spec.
//!
//! Every refusal names the file, line, column and field. Unknown keys are refused.
//! See docs/config.md for the reference. This file parses and locates; the rules are checked
//! section by section in `validate` (the whole, DPDK, workers), `ports`, `services` and
//! `operation` (sessions, metrics, isolation, sync), and by the dataplane's build of the
//! snapshot.

mod operation;
mod ports;
mod routing;
mod services;
mod validate;

use crate::locate::{IndexError, Locations, Pos, MAX_DEPTH};
use serde::Deserialize;
use sluice_dataplane::session::Timeouts;
use sluice_dataplane::snapshot::{PortSpec, ServiceSpec, Snapshot, SnapshotSpec};
use sluice_dataplane::wire::Mac;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use validate::Validator;

// ---- the file, as written --------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    dpdk: RawDpdk,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    tunnel: RawTunnelGlobal,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    sessions: RawSessions,
    metrics: Option<RawMetrics>,
    isolation: Option<RawIsolation>,
    sync: Option<RawSync>,
    agents: Option<RawAgents>,
    budget: Option<RawBudget>,
    routing: Option<RawRouting>,
}

/// `routing`: the routing daemon that announces the VIPs (BIRD 2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    bird: RawBird,
    /// BGP and BFD toward the routers: with it, sluiced writes BIRD's whole configuration.
    bgp: Option<RawBgp>,
    /// Seconds a worker may stand still before every VIP is withdrawn.
    heartbeat: Option<f64>,
    /// At most this many seconds between withdrawing the VIPs and stopping (a drain).
    drain: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBird {
    /// BIRD's control socket.
    socket: String,
    /// The file sluiced writes (BIRD's static protocol includes it).
    include: String,
    /// Where sluiced writes BIRD's configuration (with `bgp`).
    config: Option<String>,
}

/// `routing.bgp`: this appliance's AS and router id, its neighbours, BFD's timers and the
/// communities every VIP route carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    #[serde(rename = "as")]
    local_as: u32,
    router_id: String,
    neighbors: Vec<RawBgpNeighbor>,
    #[serde(default)]
    bfd: RawBfd,
    #[serde(default)]
    communities: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgpNeighbor {
    address: String,
    #[serde(rename = "as")]
    remote_as: u32,
    /// BFD on this session (true by default).
    bfd: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBfd {
    /// Seconds between BFD packets, both ways.
    interval: Option<f64>,
    /// Packets missed before the session is down.
    multiplier: Option<u32>,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum RawAnnounce {
    #[default]
    Healthy,
    Always,
}

/// What the config's tables may take in memory (see `budget`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    memory: Option<RawSize>,
}

/// A size in bytes: a number, or a string such as `512MiB` or `2 GiB`.
#[derive(Debug, Clone, Copy)]
struct RawSize(u64);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes, or a number with KiB, MiB, GiB or TiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v).map(RawSize).map_err(|_| E::custom("a size is not negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                crate::budget::parse_size(v).map(RawSize).ok_or_else(|| {
                    E::custom("a size: bytes, or a whole number with KiB, MiB, GiB or TiB (as in 2GiB)")
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Session sync with peer appliances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    listen: String,
    #[serde(default)]
    peers: Vec<String>,
    key: Option<String>,
    key_file: Option<String>,
    after: Option<u32>,
    refresh: Option<u32>,
    window: Option<u32>,
}

/// Health checks by the host agents: where their reports come in, their port, the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    listen: String,
    port: Option<u16>,
    key: Option<String>,
    key_file: Option<String>,
    window: Option<u32>,
}

/// The UDP port host agents take assignments on by default (`agents.port`).
pub const DEFAULT_AGENT_PORT: u16 = 7947;

/// When isolation is on: the overload check.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIsolation {
    interval: Option<f64>,
    high: Option<RawLoad>,
    low: Option<RawLoad>,
    calm_checks: Option<u32>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    busy: Option<f64>,
    packets_per_second: Option<u64>,
    sessions: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawWhen {
    #[default]
    Always,
    OnOverload,
}

/// A limit: a number, or `{ value: N, when: on_overload }`.
#[derive(Debug, Clone, Copy)]
enum RawLimit {
    Plain(u64),
    Full { value: u64, when: Option<RawWhen> },
}

// By hand rather than `untagged`, so that a wrong value is named for what it is, at its field.
impl<'de> Deserialize<'de> for RawLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLimit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or { value: N, when: always | on_overload }")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawLimit, E> {
                Ok(RawLimit::Plain(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawLimit, E> {
                u64::try_from(v)
                    .map(RawLimit::Plain)
                    .map_err(|_| E::custom("a limit is positive, not negative"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawLimit, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Full {
                    value: u64,
                    when: Option<RawWhen>,
                }
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawLimit::Full { value: f.value, when: f.when })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// The default for every limit of the service that does not say.
    #[serde(default)]
    when: RawWhen,
    packets_per_second: Option<RawLimit>,
    bytes_per_second: Option<RawLimit>,
    connections_per_second: Option<RawLimit>,
    sessions: Option<RawLimit>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    capacity: Option<u64>,
    #[serde(default)]
    timeouts: RawTimeouts,
    region: Option<RawRegion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    path: String,
    on_mismatch: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp_syn: Option<u32>,
    tcp_established: Option<u32>,
    tcp_closing: Option<u32>,
    tcp_closed: Option<u32>,
    udp: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDpdk {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    vdevs: Vec<String>,
    mbufs: Option<u32>,
    /// Bytes of packet data a buffer holds.
    buffer_size: Option<u32>,
    rx_desc: Option<u16>,
    tx_desc: Option<u16>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    #[serde(default)]
    cores: Vec<usize>,
    control_core: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    device: String,
    /// One address, or a list (one of each family).
    address: RawAddresses,
    mac: Option<String>,
    mtu: Option<u16>,
    vlan: Option<u16>,
    #[serde(default)]
    gateway: RawAddresses,
    #[serde(default)]
    neighbors: Vec<RawNeighbor>,
    /// The name of the port's exception path: a kernel interface sluiced creates (DPDK
    /// `net_tap`) with the port's MAC, for the routing daemon and the port's own traffic.
    kernel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    address: String,
    mac: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTunnelGlobal {
    #[serde(default)]
    source: RawAddresses,
    /// The cluster's tunnel addresses (one of each family): host agents send NAT replies to
    /// them (`--reply-to`), every appliance announces them and takes what arrives for them.
    #[serde(default)]
    cluster: RawAddresses,
}

/// A field that takes one address or a list of them (a dual-stack port's, one per family):
/// the strings, and whether they came as a list (so that a refusal names `field[i]`).
#[derive(Debug, Default)]
pub(crate) struct RawAddresses {
    items: Vec<String>,
    list: bool,
}

impl RawAddresses {
    /// Each address with its field's path under `field`.
    pub(crate) fn fields<'a>(&'a self, field: &'a str) -> impl Iterator<Item = (String, &'a str)> + 'a {
        let list = self.list;
        (self.items.iter().enumerate())
            .map(move |(i, s)| (if list { format!("{field}[{i}]") } else { field.to_string() }, s.as_str()))
    }
}

// By hand, so that a wrong value is named for what it is, at its field.
impl<'de> Deserialize<'de> for RawAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAddresses;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address, or a list of addresses (one of each family)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAddresses, E> {
                Ok(RawAddresses { items: vec![v.to_string()], list: false })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawAddresses, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if items.len() == 2 {
                        return Err(de::Error::custom("at most two addresses, one of each family"));
                    }
                    items.push(s);
                }
                Ok(RawAddresses { items, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum RawForwarding {
    #[default]
    Dsr,
    Nat,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawTunnel {
    Ipip,
    Gre,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum RawScheduler {
    #[default]
    Maglev,
    IpHash,
    RoundRobin,
    LeastConn,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum RawOnRemoved {
    #[default]
    Remap,
    Reset,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum RawNoBackend {
    #[default]
    Drop,
    Reset,
    IcmpUnreachable,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawCheckType {
    #[default]
    Http,
    Https,
    Tcp,
    Udp,
}

/// `health.by`: who probes.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawBy {
    #[default]
    Appliance,
    Agent,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawMethod {
    #[default]
    Head,
    Get,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(rename = "type", default)]
    kind: RawCheckType,
    #[serde(default)]
    by: RawBy,
    port: Option<u16>,
    method: Option<RawMethod>,
    path: Option<String>,
    host: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    verify: Option<bool>,
    ca: Option<String>,
    send: Option<String>,
    send_hex: Option<String>,
    expect: Option<String>,
    expect_hex: Option<String>,
    interval: Option<f64>,
    timeout: Option<f64>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: String,
    port: u16,
    protocol: RawProtocol,
    #[serde(default)]
    forwarding: RawForwarding,
    tunnel: Option<RawTunnel>,
    gre_key: Option<u32>,
    vpc: Option<u32>,
    #[serde(default)]
    scheduler: RawScheduler,
    persistence: Option<u32>,
    #[serde(default)]
    on_backend_removed: RawOnRemoved,
    #[serde(default)]
    on_no_backend: RawNoBackend,
    #[serde(default)]
    synproxy: bool,
    mss_clamp: Option<RawMssClamp>,
    #[serde(default)]
    announce: RawAnnounce,
    limits: Option<RawLimits>,
    health: Option<RawHealth>,
    table_size: Option<u32>,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

impl RawService {
    /// Its Maglev table's size: `table_size`, or the step its backend count is in
    /// ([`sluice_dataplane::maglev::size_for`]).
    fn table_size(&self) -> u32 {
        self.table_size.unwrap_or_else(|| sluice_dataplane::maglev::size_for(self.backends.len()))
    }
}

/// `mss_clamp`: `auto`, `off` or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMssClamp {
    Value(u64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: String,
    port: Option<u16>,
    host: Option<String>,
    weight: Option<u32>,
}

// ---- errors ------------------------------------------------------------------------------------

/// `sessions.region`: where the session table's region is, and what to do with one there
/// that this binary cannot use (another layout or size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    pub path: std::path::PathBuf,
    /// `on_mismatch: refuse`: do not start (else start with no sessions, replacing it).
    pub refuse_mismatch: bool,
}

/// One refusal: where, which field, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub pos: Option<Pos>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: ", self.file, p.line, p.col)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// All refusals found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- the validated config ----------------------------------------------------------------------

/// A port as the runtime needs it: which DPDK device, and the dataplane's view of it.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub device: String,
    /// A MAC to program into the device; otherwise the device's own is used.
    pub mac: Option<Mac>,
    /// The kernel interface of its exception path, by name (`spec.kernel` is its port index).
    pub kernel: Option<String>,
    pub spec: PortSpec,
}

/// Where sluiced tells BIRD what to announce, and how long a worker may stand still.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSpec {
    pub socket: std::path::PathBuf,
    pub include: std::path::PathBuf,
    /// BIRD's configuration, written by sluiced from `bgp` (else the operator's own).
    pub bgp: Option<(std::path::PathBuf, crate::bird_config::Bgp)>,
    pub heartbeat: std::time::Duration,
    pub drain: std::time::Duration,
}

/// The DPDK device name of port `i`'s exception path (a `net_tap` vdev).
pub fn kernel_device(i: usize) -> String {
    format!("net_tap_sluice{i}")
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    /// EAL arguments after the program name: `dpdk.args` then one `--vdev` per `dpdk.vdevs`.
    pub eal_args: Vec<String>,
    pub mbufs: Option<u32>,
    /// Bytes of packet data per buffer (`dpdk.buffer_size`): the largest frame a port takes.
    pub buffer_size: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub worker_cores: Vec<usize>,
    pub control_core: Option<usize>,
    pub ports: Vec<PortConfig>,
    /// Tunnels' outer source addresses (`tunnel.source`), at most one of each family.
    pub tunnel_sources: Vec<IpAddr>,
    /// The cluster's tunnel addresses (`tunnel.cluster`), at most one of each family.
    pub clusters: Vec<IpAddr>,
    pub services: Vec<ServiceSpec>,
    /// Most sessions the table holds (it has twice as many slots).
    pub session_capacity: usize,
    pub timeouts: Timeouts,
    /// The shared-memory file the session table lives in, so that a restart keeps it
    /// (`sessions.region`; `None`: the table is the process's own).
    pub session_region: Option<RegionSpec>,
    /// Health checks per service (by index into `services`; `None`: not checked).
    pub health: Vec<Option<crate::health::HealthSpec>>,
    /// Where the Prometheus endpoint listens (`None`: no endpoint).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The overload check that switches `on_overload` limits on and off.
    pub isolation: crate::isolation::IsolationSpec,
    /// Session sync with peer appliances (`None`: no sync).
    pub sync: Option<crate::peers::SyncSpec>,
    /// Health checks by the host agents (`None`: no `agents` section).
    pub agents: Option<crate::health::agents::AgentsSpec>,
    /// The routing daemon that announces the VIPs, if any; each service's announce policy by
    /// name.
    pub routing: Option<RoutingSpec>,
    pub announce: std::collections::HashMap<String, crate::announce::Policy>,
}

impl Config {
    /// Reads and validates a config file (a regular file of at most
    /// [`MAX_CONFIG_BYTES`](crate::readfile::MAX_CONFIG_BYTES)).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_built(path).map(|(config, _)| config)
    }

    /// [`Config::load`], with the snapshot its check built (without ids or device MACs): a
    /// start builds its first snapshot over it, taking over its tables.
    pub fn load_built(path: &Path) -> Result<(Config, Snapshot), ConfigErrors> {
        let (text, file) = read_config(path)?;
        Config::parse_with(&text, &file, None, (|c: &Config| Ok(c.snapshot_spec(0, None)), None))
    }

    /// Validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let check = |c: &Config| Ok(c.snapshot_spec(0, None));
        Config::parse_with(text, file, None, (check, None)).map(|(config, _)| config)
    }

    /// Reads and validates a config file to replace `running` without a restart: on top of
    /// the usual checks, every setting that only a restart can change (DPDK, workers, ports'
    /// devices, MACs and MTUs, the session table) must be as it runs now. The dataplane's
    /// checks are the build of the snapshot to publish, from the spec that `spec` makes of
    /// the config (with ids); it takes over the Maglev tables of `previous` (the running
    /// snapshot) that it would build alike.
    pub fn load_for_apply(
        path: &Path,
        running: &Config,
        (spec, previous): (impl FnOnce(&Config) -> Result<SnapshotSpec, String>, Option<&Snapshot>),
    ) -> Result<(Config, Snapshot), ConfigErrors> {
        let (text, file) = read_config(path)?;
        Config::parse_with(&text, &file, Some(running), (spec, previous))
    }

    fn parse_with(
        text: &str,
        file: &str,
        running: Option<&Config>,
        (spec, previous): (impl FnOnce(&Config) -> Result<SnapshotSpec, String>, Option<&Snapshot>),
    ) -> Result<(Config, Snapshot), ConfigErrors> {
        let raw = deserialize(text, file)?;
        let locations = Locations::index(text);
        let mut v = Validator { file, locations: &locations, errors: Vec::new(), more: 0 };
        let config = v.config(raw);
        if let Some(old) = running {
            v.same_as_running(&config, old);
        }
        if !v.errors.is_empty() {
            return Err(v.finish());
        }
        // The dataplane's own checks (duplicates, routes, table sizes) run on its build,
        // whose size the budget check above has bounded.
        let spec = spec(&config).map_err(|m| ConfigErrors(vec![v.error("", m)]))?;
        match Snapshot::build(&spec, previous) {
            Ok(snapshot) => Ok((config, snapshot)),
            Err(e) => Err(ConfigErrors(vec![v.error(&e.path, e.message)])),
        }
    }

    /// The dataplane spec, with port MACs from the devices where the config sets none.
    pub fn snapshot_spec(&self, generation: u64, device_macs: Option<&[Mac]>) -> SnapshotSpec {
        let mut ports: Vec<PortSpec> = self.ports.iter().map(|p| p.spec.clone()).collect();
        if let Some(macs) = device_macs {
            for (p, m) in ports.iter_mut().zip(macs) {
                p.mac = *m;
            }
        }
        SnapshotSpec {
            generation,
            ports,
            tunnel_sources: self.tunnel_sources.clone(),
            clusters: self.clusters.clone(),
            services: self.services.clone(),
        }
    }
}

/// The document as written. serde_yaml's parser is quadratic in the nesting, so the nesting is
/// bounded before it sees the text: by a scan that parses nothing when the text is plainly
/// shallow, else by the locator's parser. When serde_yaml refuses a text that only the scan
/// has seen, the locator's parser reads it too: its refusal (a second document, the depth, a
/// syntax error) comes first, with where it is.
fn deserialize(text: &str, file: &str) -> Result<RawConfig, ConfigErrors> {
    let refuse = |e| ConfigErrors(vec![index_error(file, e)]);
    let shallow = Locations::plainly_shallow(text, MAX_DEPTH).map_err(refuse)?;
    if !shallow {
        Locations::index_checked(text, MAX_DEPTH).map_err(refuse)?;
    }
    serde_yaml::from_str(text).map_err(|e| {
        if shallow {
            if let Err(i) = Locations::index_checked(text, MAX_DEPTH) {
                return refuse(i);
            }
        }
        ConfigErrors(vec![serde_error(file, &e)])
    })
}

/// Reads a config file, bounded (see [`crate::readfile`]); also returns its name for messages.
fn read_config(path: &Path) -> Result<(String, String), ConfigErrors> {
    let file = path.display().to_string();
    match crate::readfile::read_text(path, crate::readfile::MAX_CONFIG_BYTES) {
        Ok(text) => Ok((text, file)),
        Err(message) => {
            Err(ConfigErrors(vec![ConfigError { file, pos: None, field: String::new(), message }]))
        }
    }
}

fn index_error(file: &str, e: IndexError) -> ConfigError {
    let (pos, message) = match e {
        IndexError::Syntax(pos, what) => (pos, format!("not valid YAML: {what}")),
        IndexError::TooDeep(pos) => (pos, format!("nested more than {MAX_DEPTH} deep")),
        IndexError::SecondDocument(pos) => {
            (pos, "a second YAML document starts here; a config is one document".to_string())
        }
    };
    ConfigError { file: file.to_string(), pos: Some(pos), field: String::new(), message }
}

fn serde_error(file: &str, e: &serde_yaml::Error) -> ConfigError {
    // serde_yaml's message is "<path>: <what> at line L column C"; keep path and what.
    let msg = e.to_string();
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let (field, message) = match msg.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => (String::new(), msg),
    };
    ConfigError {
        file: file.to_string(),
        pos: e.location().map(|l| Pos { line: l.line(), col: l.column() }),
        field,
        message: without_values(&message),
    }
}

/// A serde message without the values it quotes from the file: `invalid type: string
/// "root:x:0:0..."` becomes `invalid type: string`, and `unknown field `x`` becomes `unknown
/// field` (the position points at it), so a file that is not a config (a password file, a
/// key) is never echoed. What serde expected (the schema's names) stays, and so do the names
/// of missing and duplicate fields (the schema's too).
fn without_values(msg: &str) -> String {
    // The schema's part comes last and quotes nothing from the file; it starts after the
    // last quote that closes a value (a quoted string has its own quotes escaped).
    let after_quote = [msg.rfind("\", expected "), msg.rfind("`, expected ")].into_iter().flatten().max();
    let (found, expected) = match after_quote.map(|i| i + 1).or_else(|| msg.rfind(", expected ")) {
        Some(i) => msg.split_at(i),
        None => (msg, ""),
    };
    let schema_name = found.starts_with("missing field `") || found.starts_with("duplicate field `");
    let found = match found.find(['"', '`', '\'']) {
        Some(i) if !schema_name => found[..i].trim_end(),
        _ => found,
    };
    // `expected struct RawConfig` names a type of this file, not of the config.
    let expected = if expected.contains("struct Raw") { ", expected a mapping" } else { expected };
    let mut out = format!("{found}{expected}");
    truncate(&mut out, MAX_MESSAGE);
    out
}

/// Cuts `s` to at most `max` bytes (at a character boundary), marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
}

/// Most refusals listed for one file: 50; the rest are counted ("and N more"). A generated
/// file with one mistake repeated makes as many refusals as it has services.
pub const MAX_ERRORS: usize = 50;
/// Longest message of one refusal: 300 bytes, so that a value quoted from the file (a
/// 10 MB string where an address belongs) does not make the refusal as long.
const MAX_MESSAGE: usize = 300;
/// Sessions by default: 4 M (8 M slots of 64 bytes: 512 MiB, touched as they fill).
pub const DEFAULT_SESSIONS: u64 = 4_000_000;
/// Most sessions a table may be configured for: 2^27 slots (8 GiB).
pub const MAX_SESSIONS: u64 = 1 << 26;
/// Longest service or port name: 64 bytes (names are labels in metrics and the admin API).
pub const MAX_NAME_LEN: usize = 64;

impl From<RawAnnounce> for crate::announce::Policy {
    fn from(a: RawAnnounce) -> Self {
        match a {
            RawAnnounce::Healthy => crate::announce::Policy::Healthy,
            RawAnnounce::Always => crate::announce::Policy::Always,
        }
    }
}
