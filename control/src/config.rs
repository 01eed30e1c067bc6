//! The YAML pipeline config: parsed, validated and turned into a dataplane snapshot spec.
//!
//! Every refusal names the file, line, column and field. Unknown keys are refused.
//! See docs/config.md for the reference.

use crate::locate::{IndexError, Locations, Pos, MAX_DEPTH};
use serde::Deserialize;
use sluice_dataplane::limit::{Limit, Limits, Rate};
use sluice_dataplane::maglev::{is_prime, DEFAULT_TABLE_SIZE, MAX_BACKENDS};
use sluice_dataplane::session::{Timeouts, MAX_BACKEND_IDS};
use sluice_dataplane::snapshot::{
    BackendSpec, Forwarding, NoBackend, OnRemoved, PortSpec, Protocol, Scheduler, ServiceSpec, Snapshot,
    SnapshotSpec, Tunnel,
};
use sluice_dataplane::stats::MAX_PORTS;
use sluice_dataplane::wire::{parse_mac, Mac};
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

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
    budget: Option<RawBudget>,
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
    address: String,
    mac: Option<String>,
    mtu: Option<u16>,
    vlan: Option<u16>,
    gateway: Option<String>,
    #[serde(default)]
    neighbors: Vec<RawNeighbor>,
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
    source: Option<String>,
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
    Tcp,
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
    port: Option<u16>,
    #[serde(default)]
    method: RawMethod,
    path: Option<String>,
    host: Option<String>,
    status: Option<u16>,
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
    limits: Option<RawLimits>,
    health: Option<RawHealth>,
    table_size: Option<u32>,
    #[serde(default)]
    backends: Vec<RawBackend>,
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
    pub spec: PortSpec,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    /// EAL arguments after the program name: `dpdk.args` then one `--vdev` per `dpdk.vdevs`.
    pub eal_args: Vec<String>,
    pub mbufs: Option<u32>,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub worker_cores: Vec<usize>,
    pub control_core: Option<usize>,
    pub ports: Vec<PortConfig>,
    pub tunnel_source: Option<Ipv4Addr>,
    pub services: Vec<ServiceSpec>,
    /// Most sessions the table holds (it has twice as many slots).
    pub session_capacity: usize,
    pub timeouts: Timeouts,
    /// Health checks per service (by index into `services`; `None`: not checked).
    pub health: Vec<Option<crate::health::HealthSpec>>,
    /// Where the Prometheus endpoint listens (`None`: no endpoint).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The overload check that switches `on_overload` limits on and off.
    pub isolation: crate::isolation::IsolationSpec,
    /// Session sync with peer appliances (`None`: no sync).
    pub sync: Option<crate::peers::SyncSpec>,
}

impl Config {
    /// Reads and validates a config file (a regular file of at most
    /// [`MAX_CONFIG_BYTES`](crate::readfile::MAX_CONFIG_BYTES)).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let (text, file) = read_config(path)?;
        Config::parse(&text, &file)
    }

    /// Validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with(text, file, None)
    }

    /// Reads and validates a config file to replace `running` without a restart: on top of
    /// the usual checks, every setting that only a restart can change (DPDK, workers, ports'
    /// devices, MACs and MTUs, the session table) must be as it runs now.
    pub fn load_for_apply(path: &Path, running: &Config) -> Result<Config, ConfigErrors> {
        let (text, file) = read_config(path)?;
        Config::parse_with(&text, &file, Some(running))
    }

    fn parse_with(text: &str, file: &str, running: Option<&Config>) -> Result<Config, ConfigErrors> {
        // The nesting is bounded before serde_yaml (whose parser is quadratic in it) sees the text.
        let locations = match Locations::index_checked(text, MAX_DEPTH) {
            Ok(l) => l,
            Err(e) => return Err(ConfigErrors(vec![index_error(file, e)])),
        };
        let raw: RawConfig = match serde_yaml::from_str(text) {
            Ok(r) => r,
            Err(e) => return Err(ConfigErrors(vec![serde_error(file, &e)])),
        };
        let mut v = Validator { file, locations: &locations, errors: Vec::new(), more: 0 };
        let config = v.config(raw);
        if let Some(old) = running {
            v.same_as_running(&config, old);
        }
        if !v.errors.is_empty() {
            return Err(v.finish());
        }
        // The dataplane's own checks (duplicates, routes, table sizes) run on a trial build,
        // whose size the budget check above has bounded.
        if let Err(e) = Snapshot::build(&config.snapshot_spec(0, None), None) {
            return Err(ConfigErrors(vec![v.error(&e.path, e.message)]));
        }
        Ok(config)
    }

    /// The dataplane spec, with port MACs from the devices where the config sets none.
    pub fn snapshot_spec(&self, generation: u64, device_macs: Option<&[Mac]>) -> SnapshotSpec {
        let mut ports: Vec<PortSpec> = self.ports.iter().map(|p| p.spec.clone()).collect();
        if let Some(macs) = device_macs {
            for (p, m) in ports.iter_mut().zip(macs) {
                p.mac = *m;
            }
        }
        SnapshotSpec { generation, ports, tunnel_source: self.tunnel_source, services: self.services.clone() }
    }
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

/// 80% of `x`, as a low-water mark below a high one (without overflow).
fn four_fifths(x: u64) -> u64 {
    x / 5 * 4 + x % 5 * 4 / 5
}

struct Validator<'a> {
    file: &'a str,
    locations: &'a Locations,
    errors: Vec<ConfigError>,
    /// Refusals past the first [`MAX_ERRORS`], counted only.
    more: usize,
}

/// Most refusals listed for one file: 50; the rest are counted ("and N more"). A generated
/// file with one mistake repeated makes as many refusals as it has services.
pub const MAX_ERRORS: usize = 50;
/// Longest message of one refusal: 300 bytes, so that a value quoted from the file (a
/// 10 MB string where an address belongs) does not make the refusal as long.
const MAX_MESSAGE: usize = 300;

const DEFAULT_MTU: u16 = 1500;
/// Sessions by default: 4 M (8 M slots of 64 bytes: 512 MiB, touched as they fill).
pub const DEFAULT_SESSIONS: u64 = 4_000_000;
/// Most sessions a table may be configured for: 2^27 slots (8 GiB).
pub const MAX_SESSIONS: u64 = 1 << 26;
const MAX_WEIGHT: u32 = 1000;
/// Largest Maglev table: 4,194,301 slots (8 MiB), the largest prime below 2^22.
const MAX_TABLE_SIZE: u32 = 4_194_301;
/// Longest service or port name: 64 bytes (names are labels in metrics and the admin API).
pub const MAX_NAME_LEN: usize = 64;
/// Longest EAL argument, vdev or device name: 1024 bytes.
const MAX_ARG_LEN: usize = 1024;
/// Highest CPU number for a worker or the control thread: 1023 (a CPU set holds 1024).
const MAX_CORE: usize = 1023;
/// Most static neighbours of one port: 1024 (next hops are numbered in 16 bits, shared with
/// the backends').
const MAX_NEIGHBORS: usize = 1024;
/// Most services: 65,535 (service ids are 16-bit).
const MAX_SERVICES: usize = u16::MAX as usize;

impl Validator<'_> {
    /// A service's `health` section, checked.
    fn health(
        &mut self,
        i: usize,
        h: &RawHealth,
        vip: Option<Ipv4Addr>,
    ) -> Option<crate::health::HealthSpec> {
        use crate::health::{Check, HealthSpec};
        let f = |k: &str| format!("services[{i}].health.{k}");
        let interval = self.seconds(&f("interval"), h.interval, 2.0, (0.05, 3600.0));
        let timeout = self.seconds(&f("timeout"), h.timeout, 1.0, (0.05, 3600.0));
        if timeout > interval {
            self.refuse(&f("timeout"), format!("{timeout:?} is longer than the interval ({interval:?})"));
        }
        let (rise, fall) = (h.rise.unwrap_or(2), h.fall.unwrap_or(3));
        for (k, v) in [("rise", rise), ("fall", fall)] {
            if !(1..=100).contains(&v) {
                self.refuse(&f(k), format!("{v} is outside 1..=100"));
            }
        }
        if h.port == Some(0) {
            self.refuse(&f("port"), "port 0");
        }
        let check = match h.kind {
            RawCheckType::Tcp => {
                for (k, given) in [
                    ("path", h.path.is_some()),
                    ("host", h.host.is_some()),
                    ("status", h.status.is_some()),
                    ("method", h.method != RawMethod::Head),
                ] {
                    if given {
                        self.refuse(&f(k), "is for type: http");
                    }
                }
                Check::Tcp
            }
            RawCheckType::Http => {
                let path = h.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    self.refuse(&f("path"), format!("{path:?}: an absolute path without spaces or controls"));
                }
                let host = h.host.clone().unwrap_or_else(|| vip.map_or_else(String::new, |v| v.to_string()));
                if host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    self.refuse(&f("host"), format!("{host:?}: no spaces or controls"));
                }
                let status = h.status.unwrap_or(200);
                if !(100..=599).contains(&status) {
                    self.refuse(&f("status"), format!("{status} is not an HTTP status"));
                }
                Check::Http { get: h.method == RawMethod::Get, path, host, status }
            }
        };
        Some(HealthSpec { check, port: h.port, interval, timeout, rise, fall })
    }

    /// The `sync` section, checked. Copies age on a peer as the origin's sessions do, so they
    /// must be refreshed well within the shortest timeout they can have.
    fn sync(&mut self, r: &RawSync, timeouts: &Timeouts) -> Option<crate::peers::SyncSpec> {
        use std::net::SocketAddr;
        // A peer is an address to send to; listen may be the unspecified address.
        let addr = |v: &mut Self, field: &str, s: &str| match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && (field == "sync.listen" || !a.ip().is_unspecified()) => Some(a),
            _ => {
                v.refuse(field, format!("{s:?} is not ADDRESS:PORT"));
                None
            }
        };
        let listen = addr(self, "sync.listen", &r.listen);
        let mut peers = Vec::new();
        if r.peers.is_empty() {
            self.refuse("sync.peers", "at least one peer (ADDRESS:PORT)");
        }
        for (i, p) in r.peers.iter().enumerate() {
            peers.extend(addr(self, &format!("sync.peers[{i}]"), p));
        }
        let hex = match (&r.key, &r.key_file) {
            (Some(k), None) => Some(("sync.key", k.trim().to_string())),
            (None, Some(f)) => match crate::readfile::read_text(Path::new(f), crate::readfile::MAX_KEY_BYTES)
            {
                Ok(t) => Some(("sync.key_file", t.trim().to_string())),
                Err(e) => {
                    self.refuse("sync.key_file", format!("{f}: {e}"));
                    None
                }
            },
            _ => {
                self.refuse("sync", "give the shared key as key (64 hex digits) or key_file, one of them");
                None
            }
        };
        let key = hex.and_then(|(field, h)| match crate::sync::SyncKey::from_hex(&h) {
            Ok(k) => Some(k),
            Err(e) => {
                self.refuse(field, e);
                None
            }
        });
        let after = r.after.unwrap_or(5);
        if !(1..=3600).contains(&after) {
            self.refuse("sync.after", format!("{after} s is outside 1..=3600"));
        }
        let shortest = timeouts.tcp_established.min(timeouts.udp);
        let refresh = r.refresh.unwrap_or((shortest / 3).clamp(1, 30));
        if refresh == 0 || u64::from(refresh) * 2 > u64::from(shortest) {
            self.refuse(
                "sync.refresh",
                format!("{refresh} s: at least 1 and at most half the shortest established/udp timeout ({shortest} s)"),
            );
        }
        let window = r.window.unwrap_or(30);
        if !(1..=3600).contains(&window) {
            self.refuse("sync.window", format!("{window} s is outside 1..=3600"));
        }
        Some(crate::peers::SyncSpec {
            listen: listen?,
            peers,
            key: key?,
            after: std::time::Duration::from_secs(after.into()),
            refresh: std::time::Duration::from_secs(refresh.into()),
            window: std::time::Duration::from_secs(window.into()),
        })
    }

    /// A service's `limits` section, checked.
    fn limits(&mut self, i: usize, l: &RawLimits) -> Limits {
        let one = |v: &mut Self, k: &str, raw: Option<RawLimit>, max: u64| -> Option<Limit> {
            let (value, when) = match raw? {
                RawLimit::Plain(n) => (n, l.when),
                RawLimit::Full { value, when } => (value, when.unwrap_or(l.when)),
            };
            if !(1..=max).contains(&value) {
                v.refuse(&format!("services[{i}].limits.{k}"), format!("{value} is outside 1..={max}"));
            }
            Some(Limit { value: value.clamp(1, max), on_overload: when == RawWhen::OnOverload })
        };
        // Rates up to 2^40 per second keep the buckets' arithmetic exact (see limit::Bucket).
        const MAX_RATE: u64 = 1 << 40;
        let mut out = Limits::default();
        out.rates[Rate::Packets as usize] = one(self, "packets_per_second", l.packets_per_second, MAX_RATE);
        out.rates[Rate::Bytes as usize] = one(self, "bytes_per_second", l.bytes_per_second, MAX_RATE);
        out.rates[Rate::Connections as usize] =
            one(self, "connections_per_second", l.connections_per_second, MAX_RATE);
        out.sessions = one(self, "sessions", l.sessions, MAX_SESSIONS);
        if out.is_empty() {
            self.refuse(
                &format!("services[{i}].limits"),
                "no limit given (packets_per_second, bytes_per_second, connections_per_second, sessions)",
            );
        }
        out
    }

    /// The `isolation` section (the overload check), checked; defaults without one.
    fn isolation(&mut self, raw: Option<&RawIsolation>) -> crate::isolation::IsolationSpec {
        use crate::isolation::{IsolationSpec, Load};
        let d = IsolationSpec::default();
        let Some(raw) = raw else { return d };
        let interval =
            self.seconds("isolation.interval", raw.interval, d.interval.as_secs_f64(), (0.1, 3600.0));
        let calm_checks = raw.calm_checks.unwrap_or(d.calm_checks);
        if !(1..=1000).contains(&calm_checks) {
            self.refuse("isolation.calm_checks", format!("{calm_checks} is outside 1..=1000"));
        }
        let load = |v: &mut Self, which: &str, r: RawLoad| -> Load {
            // Refused, a busy mark is left out (NaN compares false with everything).
            let busy = r.busy.filter(|&b| {
                let ok = b > 0.0 && b <= 1.0;
                if !ok {
                    v.refuse(&format!("isolation.{which}.busy"), format!("{b} is outside (0, 1]"));
                }
                ok
            });
            for (k, x) in [("packets_per_second", r.packets_per_second), ("sessions", r.sessions)] {
                if x == Some(0) {
                    v.refuse(&format!("isolation.{which}.{k}"), "0: leave it out to not check it");
                }
            }
            Load { busy, packets_per_second: r.packets_per_second, sessions: r.sessions }
        };
        let high = match raw.high {
            Some(h) => load(self, "high", h),
            None => d.high,
        };
        if high.busy.is_none() && high.packets_per_second.is_none() && high.sessions.is_none() {
            self.refuse("isolation.high", "no mark given (busy, packets_per_second, sessions)");
        }
        // A low-water mark not given is 80% of its high one.
        let low_raw = raw.low.unwrap_or_default();
        let low = load(self, "low", low_raw);
        let low = Load {
            busy: low.busy.or(high.busy.map(|b| b * 0.8)),
            packets_per_second: low.packets_per_second.or(high.packets_per_second.map(four_fifths)),
            sessions: low.sessions.or(high.sessions.map(four_fifths)),
        };
        for (k, l, h) in [
            ("busy", low.busy.map(|b| (b * 1e6) as u64), high.busy.map(|b| (b * 1e6) as u64)),
            ("packets_per_second", low.packets_per_second, high.packets_per_second),
            ("sessions", low.sessions, high.sessions),
        ] {
            match (l, h) {
                (Some(l), Some(h)) if l > h => {
                    self.refuse(&format!("isolation.low.{k}"), "above its high-water mark");
                }
                (Some(_), None) => {
                    self.refuse(&format!("isolation.low.{k}"), "has no high-water mark to go with");
                }
                _ => {}
            }
        }
        IsolationSpec { interval, high, low, calm_checks }
    }

    /// Refuses every change a running sluiced cannot take without a restart.
    fn same_as_running(&mut self, new: &Config, old: &Config) {
        const WHY: &str = "cannot change while sluiced runs (restart it for that); the running value stays";
        if new.eal_args != old.eal_args || new.mbufs != old.mbufs {
            self.refuse("dpdk", WHY);
        }
        if (new.rx_desc, new.tx_desc) != (old.rx_desc, old.tx_desc) {
            self.refuse("dpdk", WHY);
        }
        if new.worker_cores != old.worker_cores || new.control_core != old.control_core {
            self.refuse("workers", WHY);
        }
        if new.ports.len() != old.ports.len() {
            self.refuse("ports", format!("{} ports instead of {}: {WHY}", new.ports.len(), old.ports.len()));
        }
        for (i, (n, o)) in new.ports.iter().zip(&old.ports).enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            if n.spec.name != o.spec.name {
                self.refuse(&f("name"), WHY);
            }
            if n.device != o.device {
                self.refuse(&f("device"), WHY);
            }
            if n.mac != o.mac {
                self.refuse(&f("mac"), WHY);
            }
            if n.spec.mtu != o.spec.mtu {
                self.refuse(&f("mtu"), WHY);
            }
        }
        if new.metrics_listen != old.metrics_listen {
            self.refuse("metrics.listen", WHY);
        }
        if new.session_capacity != old.session_capacity {
            self.refuse("sessions.capacity", WHY);
        }
        if new.timeouts != old.timeouts {
            self.refuse("sessions.timeouts", WHY);
        }
        if new.sync != old.sync {
            self.refuse("sync", WHY);
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        truncate(&mut message, MAX_MESSAGE);
        ConfigError {
            file: self.file.to_string(),
            pos: self.locations.find(field),
            field: field.to_string(),
            message,
        }
    }

    fn refuse(&mut self, field: &str, message: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            let e = self.error(field, message);
            self.errors.push(e);
        } else {
            self.more += 1;
        }
    }

    /// A duration in seconds, `default` if not given: refused unless finite and within
    /// `min..=max`, and then `default` (so what is returned always converts).
    fn seconds(&mut self, field: &str, x: Option<f64>, default: f64, (min, max): (f64, f64)) -> Duration {
        let fallback = Duration::try_from_secs_f64(default).unwrap_or(Duration::ZERO);
        let Some(x) = x else { return fallback };
        if !(x.is_finite() && (min..=max).contains(&x)) {
            self.refuse(field, format!("{x} s is outside {min}..={max}"));
            return fallback;
        }
        Duration::try_from_secs_f64(x).unwrap_or(fallback)
    }

    /// A name (of a service, a port, a device): printable, at most `max` bytes; refused with
    /// its length rather than its text when too long.
    fn name(&mut self, field: &str, s: &str, max: usize) {
        if s.len() > max {
            self.refuse(field, format!("{} bytes long: at most {max}", s.len()));
        } else if s.chars().any(char::is_control) {
            self.refuse(field, format!("{s:?} has control characters"));
        }
    }

    /// The refusals, the count of those not listed last.
    fn finish(mut self) -> ConfigErrors {
        if self.more > 0 {
            self.errors.push(ConfigError {
                file: self.file.to_string(),
                pos: None,
                field: String::new(),
                message: format!("and {} more errors (the first {MAX_ERRORS} are listed)", self.more),
            });
        }
        ConfigErrors(self.errors)
    }

    fn ipv4(&mut self, field: &str, s: &str) -> Option<Ipv4Addr> {
        match s.parse::<Ipv4Addr>() {
            Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
                self.refuse(field, format!("{a} is not a unicast address"));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.refuse(field, format!("{s:?} is not an IPv4 address"));
                None
            }
        }
    }

    fn mac(&mut self, field: &str, s: &str) -> Option<Mac> {
        match parse_mac(s) {
            Some(m) if m[0] & 1 == 0 && m != [0; 6] => Some(m),
            Some(_) => {
                self.refuse(field, format!("{s} is not a unicast MAC address"));
                None
            }
            None => {
                self.refuse(field, format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
                None
            }
        }
    }

    /// The names and words of the file: services' and ports' names, devices, EAL arguments.
    fn names(&mut self, raw: &RawConfig) {
        for (i, a) in raw.dpdk.args.iter().enumerate() {
            self.name(&format!("dpdk.args[{i}]"), a, MAX_ARG_LEN);
        }
        for (i, a) in raw.dpdk.vdevs.iter().enumerate() {
            self.name(&format!("dpdk.vdevs[{i}]"), a, MAX_ARG_LEN);
        }
        for (i, p) in raw.ports.iter().enumerate() {
            self.name(&format!("ports[{i}].name"), &p.name, MAX_NAME_LEN);
            self.name(&format!("ports[{i}].device"), &p.device, MAX_ARG_LEN);
            if p.neighbors.len() > MAX_NEIGHBORS {
                self.refuse(&format!("ports[{i}].neighbors"), format!("at most {MAX_NEIGHBORS} neighbors"));
            }
        }
        for (i, s) in raw.services.iter().enumerate() {
            self.name(&format!("services[{i}].name"), &s.name, MAX_NAME_LEN);
        }
        let cores = raw.workers.cores.iter().enumerate().map(|(i, c)| (format!("workers.cores[{i}]"), *c));
        for (field, c) in cores.chain(raw.workers.control_core.map(|c| ("workers.control_core".into(), c))) {
            if c > MAX_CORE {
                self.refuse(&field, format!("{c}: a CPU number from 0 to {MAX_CORE}"));
            }
        }
    }

    /// The config's size, before anything is built: how many services and backends, and
    /// their tables' memory (estimated, see [`crate::budget`]) against `budget.memory`. The
    /// service that takes the total over the budget is named.
    fn budget(&mut self, raw: &RawConfig) {
        use crate::budget::{human, service_bytes, DEFAULT_MEMORY, MAX_MEMORY, MIN_MEMORY};
        let limit = raw.budget.as_ref().and_then(|b| b.memory).map_or(DEFAULT_MEMORY, |m| m.0);
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&limit) {
            let (min, max) = (human(MIN_MEMORY), human(MAX_MEMORY));
            self.refuse("budget.memory", format!("{} is outside {min}..={max}", human(limit)));
        }
        let limit = limit.clamp(MIN_MEMORY, MAX_MEMORY);
        if raw.services.len() > MAX_SERVICES {
            self.refuse("services", format!("{} services: at most {MAX_SERVICES}", raw.services.len()));
        }
        let backends: usize = raw.services.iter().map(|s| s.backends.len()).sum();
        if backends > MAX_BACKEND_IDS {
            self.refuse("services", format!("{backends} backends in all: at most {MAX_BACKEND_IDS}"));
        }
        let mut total = 0u64;
        for (i, s) in raw.services.iter().enumerate() {
            // A table size beyond the largest is refused on its own; it counts as the largest.
            let table = s.table_size.unwrap_or(DEFAULT_TABLE_SIZE).min(MAX_TABLE_SIZE);
            let bytes = service_bytes(table, s.backends.len());
            total = total.saturating_add(bytes);
            if total > limit {
                let field = if service_bytes(table, 0) >= bytes / 2 { "table_size" } else { "backends" };
                self.refuse(
                    &format!("services[{i}].{field}"),
                    format!(
                        "the services up to this one need about {} for their tables, more than \
                         budget.memory ({}); this one {} (table_size {table}, {} backends)",
                        human(total),
                        human(limit),
                        human(bytes),
                        s.backends.len()
                    ),
                );
                return;
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        self.names(&raw);
        self.budget(&raw);
        let mut eal_args = raw.dpdk.args;
        for v in &raw.dpdk.vdevs {
            eal_args.push("--vdev".into());
            eal_args.push(v.clone());
        }
        if raw.dpdk.mbufs.is_some_and(|n| n < 1024) {
            self.refuse("dpdk.mbufs", "at least 1024 mbufs");
        }
        let desc_ok = |d: Option<u16>| d.is_none_or(|d| (32..=8192).contains(&d) && d.is_power_of_two());
        if !desc_ok(raw.dpdk.rx_desc) {
            self.refuse("dpdk.rx_desc", "a power of two from 32 to 8192");
        }
        if !desc_ok(raw.dpdk.tx_desc) {
            self.refuse("dpdk.tx_desc", "a power of two from 32 to 8192");
        }

        let mut cores = raw.workers.cores;
        if cores.is_empty() {
            cores.push(1);
        }
        let mut seen = HashSet::new();
        for (i, c) in cores.iter().enumerate() {
            if !seen.insert(*c) {
                self.refuse(&format!("workers.cores[{i}]"), format!("core {c} listed twice"));
            }
        }
        if cores.len() > 64 {
            self.refuse("workers.cores", "at most 64 workers");
        }

        if raw.ports.is_empty() {
            self.refuse("ports", "at least one port is needed");
        }
        if raw.ports.len() > MAX_PORTS {
            self.refuse("ports", format!("at most {MAX_PORTS} ports"));
        }
        let mut ports = Vec::new();
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        for (i, p) in raw.ports.iter().enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            if p.name.is_empty() || !names.insert(p.name.clone()) {
                self.refuse(&f("name"), format!("port name {:?} is empty or used twice", p.name));
            }
            if p.device.is_empty() || !devices.insert(p.device.clone()) {
                self.refuse(&f("device"), format!("device {:?} is empty or used by two ports", p.device));
            }
            let (address, prefix_len) = match p.address.split_once('/') {
                Some((a, l)) => match (self.ipv4(&f("address"), a), l.parse::<u8>()) {
                    (Some(a), Ok(l)) if (1..=32).contains(&l) => (a, l),
                    (Some(_), _) => {
                        self.refuse(
                            &f("address"),
                            format!("prefix length in {:?} must be 1 to 32", p.address),
                        );
                        continue;
                    }
                    (None, _) => continue,
                },
                None => {
                    self.refuse(
                        &f("address"),
                        format!("{:?} needs a prefix length, as in 198.18.0.1/24", p.address),
                    );
                    continue;
                }
            };
            let mac = p.mac.as_deref().and_then(|m| self.mac(&f("mac"), m));
            let mtu = p.mtu.unwrap_or(DEFAULT_MTU);
            if !(576..=9000).contains(&mtu) {
                self.refuse(&f("mtu"), format!("{mtu} is outside 576..=9000"));
            }
            if p.vlan.is_some_and(|v| !(1..=4094).contains(&v)) {
                self.refuse(&f("vlan"), "a VLAN id from 1 to 4094");
            }
            let mask = u32::MAX << (32 - u32::from(prefix_len));
            let inside = |a: Ipv4Addr| u32::from(a) & mask == u32::from(address) & mask;
            let gateway = p.gateway.as_deref().and_then(|g| self.ipv4(&f("gateway"), g));
            if let Some(g) = gateway {
                if !inside(g) {
                    self.refuse(&f("gateway"), format!("{g} is not inside {}", p.address));
                }
            }
            let mut neighbors = Vec::new();
            for (n, nb) in p.neighbors.iter().enumerate() {
                let a = self.ipv4(&f(&format!("neighbors[{n}].address")), &nb.address);
                let m = self.mac(&f(&format!("neighbors[{n}].mac")), &nb.mac);
                if let (Some(a), Some(m)) = (a, m) {
                    if !inside(a) {
                        self.refuse(
                            &f(&format!("neighbors[{n}].address")),
                            format!("{a} is not inside {}", p.address),
                        );
                    }
                    neighbors.push((a, m));
                }
            }
            ports.push(PortConfig {
                device: p.device.clone(),
                mac,
                spec: PortSpec {
                    name: p.name.clone(),
                    mac: mac.unwrap_or([0x02, 0, 0, 0, 0, u8::try_from(i + 1).unwrap_or(u8::MAX)]),
                    address,
                    prefix_len,
                    mtu,
                    vlan: p.vlan,
                    gateway,
                    neighbors,
                },
            });
        }

        let tunnel_source = raw.tunnel.source.as_deref().and_then(|s| self.ipv4("tunnel.source", s));

        let mut services = Vec::new();
        let mut health = Vec::new();
        let mut service_names = HashSet::new();
        for (i, s) in raw.services.iter().enumerate() {
            let f = |k: &str| format!("services[{i}].{k}");
            if s.name.is_empty() || !service_names.insert(s.name.clone()) {
                self.refuse(&f("name"), format!("service name {:?} is empty or used twice", s.name));
            }
            let vip = self.ipv4(&f("vip"), &s.vip);
            if let Some(v) = vip {
                if ports.iter().any(|p| p.spec.address == v) {
                    self.refuse(&f("vip"), format!("{v} is a port address"));
                }
            }
            if s.port == 0 {
                self.refuse(&f("port"), "port 0 is not a service port");
            }
            let nat = matches!(s.forwarding, RawForwarding::Nat);
            let tunnel = match (s.tunnel, s.gre_key, s.vpc) {
                (_, _, Some(_)) if !nat => {
                    self.refuse(&f("vpc"), "vpc needs forwarding: nat");
                    Tunnel::Ipip
                }
                (_, Some(_), Some(_)) => {
                    self.refuse(&f("gre_key"), "a NAT service's GRE key is its vpc; give only vpc");
                    Tunnel::Ipip
                }
                (Some(RawTunnel::Ipip), _, Some(_)) => {
                    self.refuse(
                        &f("tunnel"),
                        "a VPC is reached over GRE (its id is the key); IPIP is the physical network",
                    );
                    Tunnel::Ipip
                }
                (_, None, Some(vpc)) => Tunnel::Gre { key: Some(vpc) },
                (None | Some(RawTunnel::Ipip), Some(_), None) => {
                    self.refuse(&f("gre_key"), "gre_key needs tunnel: gre");
                    Tunnel::Ipip
                }
                (None | Some(RawTunnel::Ipip), None, None) => Tunnel::Ipip,
                (Some(RawTunnel::Gre), key, None) => Tunnel::Gre { key },
            };
            let table_size = s.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
            if !is_prime(table_size) || table_size > MAX_TABLE_SIZE {
                self.refuse(
                    &f("table_size"),
                    format!("{table_size} must be a prime no larger than {MAX_TABLE_SIZE}"),
                );
            } else if s.backends.len().saturating_mul(100) > table_size as usize {
                // Maglev's paper: M > 100 N keeps the imbalance near 1%.
                self.refuse(
                    &f("table_size"),
                    format!(
                        "{table_size} slots for {} backends: keep table_size above 100 x backends",
                        s.backends.len()
                    ),
                );
            }
            if s.backends.len() > MAX_BACKENDS {
                self.refuse(&f("backends"), format!("at most {MAX_BACKENDS} backends"));
            }
            let mut backends = Vec::new();
            for (b, be) in s.backends.iter().enumerate() {
                let bf = format!("services[{i}].backends[{b}]");
                let weight = be.weight.unwrap_or(1);
                if weight > MAX_WEIGHT {
                    self.refuse(&format!("{bf}.weight"), format!("{weight} is outside 0..={MAX_WEIGHT}"));
                }
                if !nat {
                    if be.port.is_some() {
                        self.refuse(
                            &format!("{bf}.port"),
                            "a DSR backend answers on the service's port; port is for forwarding: nat",
                        );
                    }
                    if be.host.is_some() {
                        self.refuse(
                            &format!("{bf}.host"),
                            "host is for forwarding: nat (a DSR backend's address is its host)",
                        );
                    }
                }
                if be.port == Some(0) {
                    self.refuse(&format!("{bf}.port"), "port 0 is not a backend port");
                }
                let host = be.host.as_deref().map(|h| self.ipv4(&format!("{bf}.host"), h));
                if let (Some(address), Some(host)) = (
                    self.ipv4(&format!("{bf}.address"), &be.address),
                    host.unwrap_or(Some(Ipv4Addr::UNSPECIFIED)),
                ) {
                    let mut spec = BackendSpec::new(address, weight);
                    spec.port = be.port;
                    spec.host = be.host.as_ref().map(|_| host);
                    backends.push(spec);
                }
            }
            let scheduler = match s.scheduler {
                RawScheduler::Maglev => Scheduler::Maglev,
                RawScheduler::IpHash => Scheduler::IpHash,
                RawScheduler::RoundRobin => Scheduler::RoundRobin,
                RawScheduler::LeastConn => Scheduler::LeastConn,
            };
            let persistence = s.persistence.unwrap_or(0);
            if persistence > 0 && scheduler != Scheduler::IpHash {
                self.refuse(&f("persistence"), "persistence needs scheduler: ip_hash");
            }
            if persistence > 86_400 {
                self.refuse(&f("persistence"), format!("{persistence} s is more than a day"));
            }
            if s.synproxy && !nat {
                self.refuse(
                    &f("synproxy"),
                    "SYN proxy needs forwarding: nat: with DSR the backend answers the client \
                     directly, so the appliance cannot translate its sequence numbers",
                );
            } else if s.synproxy && !matches!(s.protocol, RawProtocol::Tcp) {
                self.refuse(&f("synproxy"), "SYN proxy is for TCP services");
            }
            let limits = s.limits.as_ref().map(|l| self.limits(i, l)).unwrap_or_default();
            let health_spec = s.health.as_ref().map(|h| self.health(i, h, vip));
            let Some(vip) = vip else {
                continue;
            };
            health.push(health_spec.flatten());
            services.push(ServiceSpec {
                id: None,
                name: s.name.clone(),
                vip,
                port: s.port,
                protocol: match s.protocol {
                    RawProtocol::Tcp => Protocol::Tcp,
                    RawProtocol::Udp => Protocol::Udp,
                },
                forwarding: match s.forwarding {
                    RawForwarding::Dsr => Forwarding::Dsr,
                    RawForwarding::Nat => Forwarding::Nat,
                },
                tunnel,
                scheduler,
                persistence,
                on_backend_removed: match s.on_backend_removed {
                    RawOnRemoved::Remap => OnRemoved::Remap,
                    RawOnRemoved::Reset => OnRemoved::Reset,
                },
                on_no_backend: match s.on_no_backend {
                    RawNoBackend::Drop => NoBackend::Drop,
                    RawNoBackend::Reset => NoBackend::Reset,
                    RawNoBackend::IcmpUnreachable => NoBackend::IcmpUnreachable,
                },
                synproxy: s.synproxy,
                limits,
                table_size,
                backends,
            });
        }

        let metrics_listen =
            raw.metrics.as_ref().and_then(|m| match m.listen.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.refuse("metrics.listen", format!("{:?} is not ADDRESS:PORT", m.listen));
                    None
                }
            });
        let capacity = raw.sessions.capacity.unwrap_or(DEFAULT_SESSIONS);
        if !(1..=MAX_SESSIONS).contains(&capacity) {
            self.refuse("sessions.capacity", format!("{capacity} is outside 1..={MAX_SESSIONS}"));
        }
        let d = Timeouts::default();
        let t = &raw.sessions.timeouts;
        let timeouts = Timeouts {
            tcp_syn: t.tcp_syn.unwrap_or(d.tcp_syn),
            tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
            tcp_closing: t.tcp_closing.unwrap_or(d.tcp_closing),
            tcp_closed: t.tcp_closed.unwrap_or(d.tcp_closed),
            udp: t.udp.unwrap_or(d.udp),
        };
        for (name, v) in [
            ("tcp_syn", timeouts.tcp_syn),
            ("tcp_established", timeouts.tcp_established),
            ("tcp_closing", timeouts.tcp_closing),
            ("tcp_closed", timeouts.tcp_closed),
            ("udp", timeouts.udp),
        ] {
            if !(1..=86_400).contains(&v) {
                self.refuse(&format!("sessions.timeouts.{name}"), format!("{v} s is outside 1..=86400"));
            }
        }

        let isolation = self.isolation(raw.isolation.as_ref());
        let sync = raw.sync.as_ref().and_then(|r| self.sync(r, &timeouts));

        Config {
            isolation,
            sync,
            file: self.file.to_string(),
            eal_args,
            mbufs: raw.dpdk.mbufs,
            rx_desc: raw.dpdk.rx_desc.unwrap_or(1024),
            tx_desc: raw.dpdk.tx_desc.unwrap_or(1024),
            worker_cores: cores,
            control_core: raw.workers.control_core,
            ports,
            tunnel_source,
            services,
            session_capacity: capacity as usize,
            timeouts,
            health,
            metrics_listen,
        }
    }
}
