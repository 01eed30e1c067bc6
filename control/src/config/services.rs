//! The `services` section: each service's address, tunnel, Maglev table, backends,
//! scheduling, SYN proxy, limits and health check.

use super::validate::Validator;
use super::RawMssClamp;
use super::{PortConfig, MAX_SESSIONS};
use super::{RawBackend, RawCheckType, RawForwarding, RawHealth, RawLimit, RawLimits, RawMethod};
use super::{RawNoBackend, RawOnRemoved, RawProtocol, RawScheduler, RawService, RawTunnel, RawWhen};
use crate::health::http::{HttpCheck, Tls};
use crate::health::udp::UdpCheck;
use crate::health::HealthSpec;
use sluice_dataplane::limit::{Limit, Limits, Rate};
use sluice_dataplane::snapshot::{
    rules, BackendSpec, Forwarding, MssClamp, NoBackend, OnRemoved, Protocol, Scheduler, ServiceSpec, Tunnel,
};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

const MAX_WEIGHT: u32 = 1000;

impl Validator<'_> {
    /// Every service, checked, with its health check (`None`: not checked); a service whose
    /// VIP is refused is left out.
    pub(super) fn services(
        &mut self,
        raw: &[RawService],
        ports: &[PortConfig],
    ) -> (Vec<ServiceSpec>, Vec<Option<HealthSpec>>) {
        let mut services = Vec::new();
        let mut health = Vec::new();
        let mut service_names = HashSet::new();
        for (i, s) in raw.iter().enumerate() {
            if s.name.is_empty() || !service_names.insert(s.name.clone()) {
                self.refuse(
                    &format!("services[{i}].name"),
                    format!("service name {:?} is empty or used twice", s.name),
                );
            }
            if let Some((spec, check)) = self.service(i, s, ports) {
                health.push(check);
                services.push(spec);
            }
        }
        (services, health)
    }

    /// `services[i]` but for its name (which is checked against the other services').
    fn service(
        &mut self,
        i: usize,
        s: &RawService,
        ports: &[PortConfig],
    ) -> Option<(ServiceSpec, Option<HealthSpec>)> {
        let f = |k: &str| format!("services[{i}].{k}");
        let vip = self.address(&f("vip"), &s.vip);
        if let Some(v) = vip {
            if ports.iter().any(|p| p.spec.addresses.iter().any(|a| a.addr == v)) {
                self.refuse(&f("vip"), format!("{v} is a port address"));
            }
        }
        if s.port == 0 {
            self.refuse(&f("port"), "port 0 is not a service port");
        }
        let nat = matches!(s.forwarding, RawForwarding::Nat);
        let tunnel = self.tunnel(i, s, nat);
        let table_size = self.table_size(i, s);
        if let Err(m) = rules::backend_count(s.backends.len()) {
            self.refuse(&f("backends"), m);
        }
        let backends = self.backends(i, &s.backends, nat);
        let (scheduler, persistence) = self.scheduling(i, s);
        if s.synproxy {
            let forwarding = if nat { Forwarding::Nat } else { Forwarding::Dsr };
            let protocol = if matches!(s.protocol, RawProtocol::Tcp) { Protocol::Tcp } else { Protocol::Udp };
            if let Err(m) = rules::synproxy(forwarding, protocol) {
                self.refuse(&f("synproxy"), m);
            }
        }
        let mss_clamp = self.mss_clamp(i, s);
        let limits = s.limits.as_ref().map(|l| self.limits(i, l)).unwrap_or_default();
        let health_spec = s.health.as_ref().map(|h| self.health(i, h, vip));
        let spec = ServiceSpec {
            id: None,
            name: s.name.clone(),
            vip: vip?,
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
            mss_clamp,
            limits,
            table_size,
            backends,
        };
        Some((spec, health_spec.flatten()))
    }

    /// `mss_clamp`: `auto` (the default), `off`, or an MSS (TCP services only).
    fn mss_clamp(&mut self, i: usize, s: &RawService) -> MssClamp {
        let field = format!("services[{i}].mss_clamp");
        let clamp = match &s.mss_clamp {
            None => return MssClamp::Auto,
            Some(RawMssClamp::Word(w)) if w == "auto" => MssClamp::Auto,
            Some(RawMssClamp::Word(w)) if w == "off" => MssClamp::Off,
            Some(RawMssClamp::Value(n)) => match rules::mss_clamp(*n) {
                Ok(()) => MssClamp::To(*n as u16),
                Err(m) => {
                    self.refuse(&field, m);
                    return MssClamp::Auto;
                }
            },
            Some(RawMssClamp::Word(_)) => {
                self.refuse(&field, "auto, off, or an MSS from 536 to 9160");
                return MssClamp::Auto;
            }
        };
        if !matches!(s.protocol, RawProtocol::Tcp) && clamp != MssClamp::Auto {
            self.refuse(&field, "an MSS is TCP's: a UDP service has none to clamp");
        }
        clamp
    }

    /// A service's tunnel: `tunnel`, `gre_key` and `vpc` together.
    fn tunnel(&mut self, i: usize, s: &RawService, nat: bool) -> Tunnel {
        let f = |k: &str| format!("services[{i}].{k}");
        match (s.tunnel, s.gre_key, s.vpc) {
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
        }
    }

    /// A service's Maglev table size: a prime, well above its backends' count.
    fn table_size(&mut self, i: usize, s: &RawService) -> u32 {
        let table_size = s.table_size();
        if let Err(m) = rules::table_size(table_size) {
            self.refuse(&format!("services[{i}].table_size"), m);
        } else if s.backends.len().saturating_mul(100) > table_size as usize {
            // Maglev's paper: M > 100 N keeps the imbalance near 1%.
            self.refuse(
                &format!("services[{i}].table_size"),
                format!(
                    "{table_size} slots for {} backends: keep table_size above 100 x backends",
                    s.backends.len()
                ),
            );
        }
        table_size
    }

    /// A service's backends; one whose address or host is refused is left out.
    fn backends(&mut self, i: usize, raw: &[RawBackend], nat: bool) -> Vec<BackendSpec> {
        let mut backends = Vec::new();
        for (b, be) in raw.iter().enumerate() {
            let bf = format!("services[{i}].backends[{b}]");
            let weight = be.weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                self.refuse(&format!("{bf}.weight"), format!("{weight} is outside 0..={MAX_WEIGHT}"));
            }
            let forwarding = if nat { Forwarding::Nat } else { Forwarding::Dsr };
            // Both fields, each at its place (the rule names the first it finds).
            for (port, host) in [(be.port.is_some(), false), (false, be.host.is_some())] {
                if let Err((field, m)) = rules::dsr_backend(forwarding, port, host) {
                    self.refuse(&format!("{bf}.{field}"), m);
                }
            }
            if let Some(Err(m)) = be.port.map(rules::backend_port) {
                self.refuse(&format!("{bf}.port"), m);
            }
            let host = be.host.as_deref().map(|h| self.address(&format!("{bf}.host"), h));
            if let (Some(address), Some(host)) = (
                self.address(&format!("{bf}.address"), &be.address),
                host.unwrap_or(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            ) {
                let mut spec = BackendSpec::new(address, weight);
                spec.port = be.port;
                spec.host = be.host.as_ref().map(|_| host);
                backends.push(spec);
            }
        }
        backends
    }

    /// A service's scheduler and persistence (which needs `ip_hash`).
    fn scheduling(&mut self, i: usize, s: &RawService) -> (Scheduler, u32) {
        let scheduler = match s.scheduler {
            RawScheduler::Maglev => Scheduler::Maglev,
            RawScheduler::IpHash => Scheduler::IpHash,
            RawScheduler::RoundRobin => Scheduler::RoundRobin,
            RawScheduler::LeastConn => Scheduler::LeastConn,
        };
        let persistence = s.persistence.unwrap_or(0);
        if persistence > 0 && scheduler != Scheduler::IpHash {
            self.refuse(&format!("services[{i}].persistence"), "persistence needs scheduler: ip_hash");
        }
        if persistence > 86_400 {
            self.refuse(&format!("services[{i}].persistence"), format!("{persistence} s is more than a day"));
        }
        (scheduler, persistence)
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

    /// A service's `health` section, checked.
    fn health(&mut self, i: usize, h: &RawHealth, vip: Option<IpAddr>) -> Option<HealthSpec> {
        use crate::health::Check;
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
        for (k, types) in misplaced_health_fields(h) {
            self.refuse(&f(k), format!("is for type: {types}"));
        }
        let check = match h.kind {
            RawCheckType::Tcp => Check::Tcp,
            RawCheckType::Http => Check::Http(self.http_check(i, h, vip, None)),
            RawCheckType::Https => {
                let tls = self.tls_check(i, h);
                Check::Http(self.http_check(i, h, vip, Some(tls)))
            }
            RawCheckType::Udp => Check::Udp(self.udp_check(i, h)),
        };
        Some(HealthSpec { check, port: h.port, interval, timeout, rise, fall })
    }

    /// An `http` or `https` check's request and what passes.
    fn http_check(&mut self, i: usize, h: &RawHealth, vip: Option<IpAddr>, tls: Option<Tls>) -> HttpCheck {
        let f = |k: &str| format!("services[{i}].health.{k}");
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.refuse(&f("path"), format!("{path:?}: an absolute path without spaces or controls"));
        } else if let Err(e) = crate::health::http::path(&path) {
            self.refuse(&f("path"), e);
        }
        // The VIP as a Host header has it (RFC 9110 7.2: an IPv6 literal in brackets).
        let literal = |v: IpAddr| if v.is_ipv6() { format!("[{v}]") } else { v.to_string() };
        let host = h.host.clone().unwrap_or_else(|| vip.map_or_else(String::new, literal));
        if host.bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.refuse(&f("host"), format!("{host:?}: no spaces or controls"));
        } else if !host.is_empty() {
            let named = match tls {
                Some(_) => crate::health::http::server_name(&host),
                None => crate::health::http::authority(&host).map(drop),
            };
            if let Err(e) = named {
                self.refuse(&f("host"), e);
            }
        }
        let status = h.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            self.refuse(&f("status"), format!("{status} is not an HTTP status"));
        }
        let get = h.method == Some(RawMethod::Get);
        match &h.body {
            Some(b) if b.is_empty() => self.refuse(&f("body"), "empty (leave it out to pass on any body)"),
            Some(_) if !get => self.refuse(&f("body"), "needs method: get (an answer to HEAD has no body)"),
            _ => {}
        }
        HttpCheck { get, path, host, status, body: h.body.clone(), tls }
    }

    /// An `https` check's certificate verification: on unless `verify: false`, against the
    /// CA certificates of `ca` (a PEM file) or else the Mozilla roots built in.
    fn tls_check(&mut self, i: usize, h: &RawHealth) -> Tls {
        let field = format!("services[{i}].health.ca");
        let verify = h.verify.unwrap_or(true);
        let ca = h.ca.as_ref().and_then(|path| {
            if !verify {
                self.refuse(&field, "is for verify: true");
                return None;
            }
            let certs = crate::readfile::read_text(Path::new(path), crate::readfile::MAX_CA_BYTES)
                .and_then(|pem| crate::health::http::ca_certs(&pem));
            certs.map_err(|e| self.refuse(&field, format!("{path}: {e}"))).ok()
        });
        Tls { verify, ca }
    }

    /// A `udp` check's payload (`send` or `send_hex`) and the bytes its reply must hold
    /// (`expect` or `expect_hex`, optional).
    fn udp_check(&mut self, i: usize, h: &RawHealth) -> UdpCheck {
        let f = |k: &str| format!("services[{i}].health.{k}");
        if h.send.is_none() && h.send_hex.is_none() {
            self.refuse(&f("send"), "type: udp sends a datagram: give it as send (text) or send_hex");
        }
        let send = self.payload(&f("send"), h.send.as_deref(), h.send_hex.as_deref());
        let expect = self.payload(&f("expect"), h.expect.as_deref(), h.expect_hex.as_deref());
        UdpCheck { send: send.unwrap_or_default(), expect }
    }

    /// Bytes given as text (`field`) or as hex digits (`field` + `_hex`), not both, neither
    /// empty nor more than a datagram holds.
    fn payload(&mut self, field: &str, text: Option<&str>, hex: Option<&str>) -> Option<Vec<u8>> {
        let hex_field = format!("{field}_hex");
        let (bytes, at) = match (text, hex) {
            (None, None) => return None,
            (Some(_), Some(_)) => {
                self.refuse(field, format!("give it as text or as hex ({hex_field}), not both"));
                return None;
            }
            (Some(t), None) => (t.as_bytes().to_vec(), field),
            (None, Some(x)) => match crate::health::udp::hex(x) {
                Ok(b) => (b, hex_field.as_str()),
                Err(e) => {
                    self.refuse(&hex_field, e);
                    return None;
                }
            },
        };
        if bytes.is_empty() {
            self.refuse(at, "empty");
            return None;
        }
        if bytes.len() > crate::health::udp::MAX_PAYLOAD {
            self.refuse(at, format!("{} bytes, more than a datagram holds", bytes.len()));
            return None;
        }
        Some(bytes)
    }
}

/// The type-specific fields of a `health` section given for a type they are not for, each
/// with the types it is for.
fn misplaced_health_fields(h: &RawHealth) -> Vec<(&'static str, &'static str)> {
    use RawCheckType::{Http, Https, Udp};
    const HTTP: (&[RawCheckType], &str) = (&[Http, Https], "http or https");
    const TLS: (&[RawCheckType], &str) = (&[Https], "https");
    const UDP: (&[RawCheckType], &str) = (&[Udp], "udp");
    let fields = [
        ("method", h.method.is_some(), HTTP),
        ("path", h.path.is_some(), HTTP),
        ("host", h.host.is_some(), HTTP),
        ("status", h.status.is_some(), HTTP),
        ("body", h.body.is_some(), HTTP),
        ("verify", h.verify.is_some(), TLS),
        ("ca", h.ca.is_some(), TLS),
        ("send", h.send.is_some(), UDP),
        ("send_hex", h.send_hex.is_some(), UDP),
        ("expect", h.expect.is_some(), UDP),
        ("expect_hex", h.expect_hex.is_some(), UDP),
    ];
    fields
        .into_iter()
        .filter(|&(_, given, (types, _))| given && !types.contains(&h.kind))
        .map(|(k, _, (_, names))| (k, names))
        .collect()
}
