//! The checks every section uses (how a refusal is made and located, addresses, names,
//! durations), and the config as a whole: the order of the sections, the file's size and
//! words, DPDK and workers, and what only a restart can change.

use super::{truncate, MAX_ERRORS, MAX_MESSAGE, MAX_NAME_LEN};
use super::{Config, ConfigError, ConfigErrors, RawAddresses, RawConfig, RawDpdk, RawWorkers};
use crate::locate::Locations;
use sluice_dataplane::maglev::MAX_TABLE_SIZE;
use sluice_dataplane::session::MAX_BACKEND_IDS;
use sluice_dataplane::snapshot::rules;
use sluice_dataplane::wire::{parse_mac, Mac};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// Bytes of packet data per buffer by default: a 1500-byte frame fits, with room.
pub const DEFAULT_BUFFER_SIZE: u32 = 2048;

/// Longest EAL argument, vdev or device name: 1024 bytes.
const MAX_ARG_LEN: usize = 1024;
/// Highest CPU number for a worker or the control thread: 1023 (a CPU set holds 1024).
const MAX_CORE: usize = 1023;
/// Most static neighbours of one port: 1024 (next hops are numbered in 16 bits, shared with
/// the backends').
const MAX_NEIGHBORS: usize = 1024;
/// Most services: 65,535 (service ids are 16-bit).
const MAX_SERVICES: usize = u16::MAX as usize;

/// Checks a parsed file section by section, collecting every refusal with its position.
pub(super) struct Validator<'a> {
    pub(super) file: &'a str,
    pub(super) locations: &'a Locations<'a>,
    pub(super) errors: Vec<ConfigError>,
    /// Refusals past the first [`MAX_ERRORS`], counted only.
    pub(super) more: usize,
}

impl Validator<'_> {
    /// The whole file, section by section (refusals come in this order).
    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
        self.names(&raw);
        self.budget(&raw);
        let eal_args = self.dpdk(&raw.dpdk);
        let cores = self.workers(&raw.workers);
        let ports = self.ports(&raw.ports);
        let tunnel_sources = self.addresses("tunnel.source", &raw.tunnel.source);
        let clusters = self.addresses("tunnel.cluster", &raw.tunnel.cluster);
        let (services, health) = self.services(&raw.services, &ports);
        let metrics_listen = self.metrics(raw.metrics.as_ref());
        let (capacity, timeouts) = self.sessions(&raw.sessions);
        let session_region = self.region(raw.sessions.region.as_ref());
        let isolation = self.isolation(raw.isolation.as_ref());
        let sync = raw.sync.as_ref().and_then(|r| self.sync(r, &timeouts));
        let agents = raw.agents.as_ref().and_then(|r| self.agents(r));
        if raw.agents.is_none() {
            self.agents_needed(&health);
        }
        let routing = raw.routing.as_ref().map(|r| self.routing(r));
        let announce = raw.services.iter().map(|s| (s.name.clone(), s.announce.into())).collect();

        Config {
            isolation,
            sync,
            agents,
            routing,
            announce,
            file: self.file.to_string(),
            eal_args,
            mbufs: raw.dpdk.mbufs,
            buffer_size: self.buffer_size(raw.dpdk.buffer_size),
            rx_desc: raw.dpdk.rx_desc.unwrap_or(1024),
            tx_desc: raw.dpdk.tx_desc.unwrap_or(1024),
            worker_cores: cores,
            control_core: raw.workers.control_core,
            ports,
            tunnel_sources,
            clusters,
            services,
            session_capacity: capacity as usize,
            timeouts,
            session_region,
            health,
            metrics_listen,
        }
    }

    /// `dpdk.buffer_size`: 2048 (a 1500-byte frame and room) to 16384 bytes (jumbo frames).
    fn buffer_size(&mut self, size: Option<u32>) -> u16 {
        match size.unwrap_or(DEFAULT_BUFFER_SIZE) {
            n @ 2048..=16384 => n as u16,
            n => {
                self.refuse("dpdk.buffer_size", format!("{n} bytes is outside 2048..=16384"));
                DEFAULT_BUFFER_SIZE as u16
            }
        }
    }

    /// The `dpdk` section; returns the EAL arguments (`args`, then a `--vdev` per vdev).
    fn dpdk(&mut self, raw: &RawDpdk) -> Vec<String> {
        let mut eal_args = raw.args.clone();
        for v in &raw.vdevs {
            eal_args.push("--vdev".into());
            eal_args.push(v.clone());
        }
        if raw.mbufs.is_some_and(|n| n < 1024) {
            self.refuse("dpdk.mbufs", "at least 1024 mbufs");
        }
        let desc_ok = |d: Option<u16>| d.is_none_or(|d| (32..=8192).contains(&d) && d.is_power_of_two());
        if !desc_ok(raw.rx_desc) {
            self.refuse("dpdk.rx_desc", "a power of two from 32 to 8192");
        }
        if !desc_ok(raw.tx_desc) {
            self.refuse("dpdk.tx_desc", "a power of two from 32 to 8192");
        }
        eal_args
    }

    /// The `workers` section's cores (core 1 if none is given).
    fn workers(&mut self, raw: &RawWorkers) -> Vec<usize> {
        let mut cores = raw.cores.clone();
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
        cores
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
            let table = s.table_size().min(MAX_TABLE_SIZE);
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

    /// Refuses every change a running sluiced cannot take without a restart.
    pub(super) fn same_as_running(&mut self, new: &Config, old: &Config) {
        const WHY: &str = "cannot change while sluiced runs (restart it for that); the running value stays";
        if new.eal_args != old.eal_args || new.mbufs != old.mbufs || new.buffer_size != old.buffer_size {
            self.refuse("dpdk", WHY);
        }
        if (new.rx_desc, new.tx_desc) != (old.rx_desc, old.tx_desc) {
            self.refuse("dpdk", WHY);
        }
        if new.worker_cores != old.worker_cores || new.control_core != old.control_core {
            self.refuse("workers", WHY);
        }
        if new.routing != old.routing {
            self.refuse("routing", WHY);
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
            if n.kernel != o.kernel {
                self.refuse(&f("kernel"), WHY);
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
        if new.session_region != old.session_region {
            self.refuse("sessions.region", WHY);
        }
        if new.sync != old.sync {
            self.refuse("sync", WHY);
        }
        if new.agents != old.agents {
            self.refuse("agents", WHY);
        }
    }

    pub(super) fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        truncate(&mut message, MAX_MESSAGE);
        ConfigError {
            file: self.file.to_string(),
            pos: self.locations.find(field),
            field: field.to_string(),
            message,
        }
    }

    pub(super) fn refuse(&mut self, field: &str, message: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            let e = self.error(field, message);
            self.errors.push(e);
        } else {
            self.more += 1;
        }
    }

    /// A duration in seconds, `default` if not given: refused unless finite and within
    /// `min..=max`, and then `default` (so what is returned always converts).
    pub(super) fn seconds(
        &mut self,
        field: &str,
        x: Option<f64>,
        default: f64,
        (min, max): (f64, f64),
    ) -> Duration {
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
    pub(super) fn name(&mut self, field: &str, s: &str, max: usize) {
        if s.len() > max {
            self.refuse(field, format!("{} bytes long: at most {max}", s.len()));
        } else if s.chars().any(char::is_control) {
            self.refuse(field, format!("{s:?} has control characters"));
        }
    }

    /// The refusals, the count of those not listed last.
    pub(super) fn finish(mut self) -> ConfigErrors {
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

    /// An address of a host (of either family; which families a pipeline may use is
    /// `Snapshot::build`'s rule).
    pub(super) fn address(&mut self, field: &str, s: &str) -> Option<IpAddr> {
        let broadcast = |a: &IpAddr| matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
        match s.parse::<IpAddr>() {
            Ok(a) if a.is_unspecified() || broadcast(&a) || a.is_multicast() => {
                self.refuse(field, format!("{a} is not a unicast address"));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.refuse(field, format!("{s:?} is not an IPv4 or IPv6 address"));
                None
            }
        }
    }

    /// A field of one address or a list, at most one of each family.
    pub(super) fn addresses(&mut self, field: &str, raw: &RawAddresses) -> Vec<IpAddr> {
        let list: Vec<IpAddr> = raw.fields(field).filter_map(|(f, s)| self.address(&f, s)).collect();
        if let Err(m) = rules::one_per_family(&mut list.iter().copied()) {
            self.refuse(field, m);
        }
        list
    }

    pub(super) fn mac(&mut self, field: &str, s: &str) -> Option<Mac> {
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
}
