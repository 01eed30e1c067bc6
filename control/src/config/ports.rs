//! The `ports` section: names, devices, addresses, MACs, MTUs, VLANs, gateways, neighbours.

use super::validate::Validator;
use super::{PortConfig, RawAddresses, RawPort};
use sluice_dataplane::flow::{max_prefix, Prefix};
use sluice_dataplane::snapshot::{rules, PortSpec};
use std::collections::HashSet;

const DEFAULT_MTU: u16 = 1500;

impl Validator<'_> {
    /// Every port, checked; a port whose address is refused is left out.
    pub(super) fn ports(&mut self, raw: &[RawPort]) -> Vec<PortConfig> {
        if let Err(m) = rules::port_count(raw.len()) {
            self.refuse("ports", m);
        }
        let mut ports = Vec::new();
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            if p.name.is_empty() || !names.insert(p.name.clone()) {
                self.refuse(&f("name"), format!("port name {:?} is empty or used twice", p.name));
            }
            if p.device.is_empty() || !devices.insert(p.device.clone()) {
                self.refuse(&f("device"), format!("device {:?} is empty or used by two ports", p.device));
            }
            ports.extend(self.port(i, p));
        }
        self.kernels(raw, &mut ports);
        ports
    }

    /// The ports' exception paths: a kernel interface name each (unique, as Linux takes it),
    /// numbered after the data ports in order.
    fn kernels(&mut self, raw: &[RawPort], ports: &mut [PortConfig]) {
        let mut names = HashSet::new();
        let mut next = raw.len();
        for (i, p) in raw.iter().enumerate() {
            let Some(name) = p.kernel.as_deref() else { continue };
            let field = format!("ports[{i}].kernel");
            let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || name.len() > 15 || !name.chars().all(ok) {
                self.refuse(&field, "an interface name: 1 to 15 letters, digits, '-', '_' or '.'");
            } else if !names.insert(name.to_string()) {
                self.refuse(&field, format!("interface {name} is another port's too"));
            }
            if let Some(pc) = ports.iter_mut().find(|pc| pc.spec.name == p.name) {
                pc.kernel = Some(name.to_string());
                pc.spec.kernel = u16::try_from(next).ok();
            }
            next += 1;
        }
    }

    /// `ports[i]` but for its name and device (which are checked against the other ports').
    fn port(&mut self, i: usize, p: &RawPort) -> Option<PortConfig> {
        let f = |k: &str| format!("ports[{i}].{k}");
        let addresses = self.port_addresses(&f("address"), &p.address)?;
        let mac = p.mac.as_deref().and_then(|m| self.mac(&f("mac"), m));
        let mtu = p.mtu.unwrap_or(DEFAULT_MTU);
        if !(576..=9000).contains(&mtu) {
            self.refuse(&f("mtu"), format!("{mtu} is outside 576..=9000"));
        }
        if p.vlan.is_some_and(|v| !(1..=4094).contains(&v)) {
            self.refuse(&f("vlan"), "a VLAN id from 1 to 4094");
        }
        let gateways = self.addresses(&f("gateway"), &p.gateway);
        for (field, g) in p.gateway.fields(&f("gateway")) {
            if let Some(Err(m)) = g.parse().ok().map(|g| rules::on_link(g, &addresses)) {
                self.refuse(&field, m);
            }
        }
        let mut neighbors = Vec::new();
        for (n, nb) in p.neighbors.iter().enumerate() {
            let a = self.address(&f(&format!("neighbors[{n}].address")), &nb.address);
            let m = self.mac(&f(&format!("neighbors[{n}].mac")), &nb.mac);
            if let (Some(a), Some(m)) = (a, m) {
                if let Err(e) = rules::on_link(a, &addresses) {
                    self.refuse(&f(&format!("neighbors[{n}].address")), e);
                }
                neighbors.push((a, m));
            }
        }
        Some(PortConfig {
            device: p.device.clone(),
            mac,
            kernel: None,
            spec: PortSpec {
                name: p.name.clone(),
                mac: mac.unwrap_or([0x02, 0, 0, 0, 0, u8::try_from(i + 1).unwrap_or(u8::MAX)]),
                addresses,
                mtu,
                vlan: p.vlan,
                gateways,
                neighbors,
                kernel: None,
            },
        })
    }

    /// A port's `ADDRESS/PREFIX_LEN`, or a list of them (one of each family); `None` if
    /// none is good.
    fn port_addresses(&mut self, field: &str, raw: &RawAddresses) -> Option<Vec<Prefix>> {
        let list: Vec<Prefix> = raw.fields(field).filter_map(|(f, s)| self.port_address(&f, s)).collect();
        if raw.fields(field).next().is_none() {
            self.refuse(field, "a port needs an address");
        } else if let Err(m) = rules::one_per_family(&mut list.iter().map(|p| p.addr)) {
            self.refuse(field, m);
        }
        (!list.is_empty()).then_some(list)
    }

    /// A port's `ADDRESS/PREFIX_LEN`.
    fn port_address(&mut self, field: &str, s: &str) -> Option<Prefix> {
        let Some((a, l)) = s.split_once('/') else {
            self.refuse(field, format!("{s:?} needs a prefix length, as in 198.18.0.1/24"));
            return None;
        };
        match (self.address(field, a), l.parse::<u8>()) {
            (Some(a), Ok(l)) if (1..=max_prefix(a)).contains(&l) => Some(Prefix::new(a, l)),
            (Some(a), _) => {
                self.refuse(field, format!("prefix length in {s:?} must be 1 to {}", max_prefix(a)));
                None
            }
            (None, _) => None,
        }
    }
}
