//! The agent's I/O: the TUN devices, the two raw sockets, and one blocking thread for each.
//!
//! - A raw socket thread (IPIP, GRE) reads whole tunneled packets addressed to `--address`,
//!   decapsulates them, remembers their flow and writes the inner packet into its TUN.
//! - A TUN thread reads what the local kernel sends out of that TUN, looks its flow up and
//!   sends it back to the appliance through the raw socket of the protocol it came by; the
//!   kernel adds the outer IPv4 header, with the bound address as source.
//!
//! The flow memory is one `Mutex<FlowMemory>` shared by all threads; the counters are atomics.

use crate::flows::{FlowMemory, Remembered, ReturnPath};
use crate::stats::{add, bump, Stats};
use crate::tunnel::{decap, encap_gre, reply, DropReason, Encap, TunMap};
use sluice_dataplane::wire::ipv4;
use sluice_host_sys::Tun;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

/// Socket receive buffer asked for (the kernel caps it at net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Larger than any IPv4 packet.
const PACKET_BUFFER: usize = 65536;

/// What the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host's address: the tunnels' destination, and the source of the replies.
    pub address: Ipv4Addr,
    /// The TUN for IPIP and keyless GRE.
    pub physical: Option<String>,
    /// (GRE key, TUN name) of each VPC.
    pub vpcs: Vec<(u32, String)>,
    /// Seconds a flow is remembered unused.
    pub flow_timeout: u64,
    /// Most flows remembered at once.
    pub max_flows: usize,
}

impl Config {
    /// The TUN names in index order: the physical TUN first, then the VPCs' in given order.
    pub fn tun_names(&self) -> Vec<String> {
        self.physical.iter().cloned().chain(self.vpcs.iter().map(|(_, n)| n.clone())).collect()
    }

    /// At least one TUN, no name twice, no key twice.
    pub fn validate(&self) -> Result<(), String> {
        let names = self.tun_names();
        if names.is_empty() {
            return Err("no TUN configured: give --physical NAME and/or --vpc KEY=NAME".into());
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("TUN {n} given twice"));
            }
        }
        for (i, (k, _)) in self.vpcs.iter().enumerate() {
            if self.vpcs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(format!("VPC key {k} given twice"));
            }
        }
        Ok(())
    }

    fn tun_map(&self) -> TunMap {
        let vpc_base = usize::from(self.physical.is_some());
        TunMap {
            physical: self.physical.as_ref().map(|_| 0),
            vpcs: self.vpcs.iter().enumerate().map(|(i, (k, _))| (*k, vpc_base + i)).collect(),
        }
    }
}

struct Shared {
    tuns: Vec<File>,
    ipip: Socket,
    gre: Socket,
    map: TunMap,
    flows: Mutex<FlowMemory>,
    stats: Stats,
    start: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The flow memory; a thread that panicked holding it cannot have left it inconsistent
    /// (every method leaves the map valid), so a poisoned lock is taken as is.
    fn flows(&self) -> MutexGuard<'_, FlowMemory> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self, encap: Encap) -> &Socket {
        match encap {
            Encap::Ipip => &self.ipip,
            Encap::Gre { .. } => &self.gre,
        }
    }
}

/// A running agent: its threads run until the process exits.
pub struct Agent {
    shared: Arc<Shared>,
}

/// Logs an I/O error at its 1st, 2nd, 4th, 8th... occurrence: never a line per packet.
struct ErrorLog {
    what: String,
    count: u64,
}

impl ErrorLog {
    fn new(what: String) -> ErrorLog {
        ErrorLog { what, count: 0 }
    }

    fn log(&mut self, e: &io::Error) {
        self.count += 1;
        if self.count.is_power_of_two() {
            log::warn!("{}: {e} ({} so far)", self.what, self.count);
        }
    }
}

fn raw_socket(protocol: u8, address: Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(protocol))))?;
    s.bind(&SockAddr::from(SocketAddrV4::new(address, 0)))?;
    if let Err(e) = s.set_recv_buffer_size(SOCKET_BUFFER) {
        log::warn!("raw socket for protocol {protocol}: receive buffer: {e}");
    }
    Ok(s)
}

impl Agent {
    /// Creates the TUNs, opens and binds the raw sockets, and starts the threads.
    pub fn start(config: &Config) -> io::Result<Agent> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let names = config.tun_names();
        let mut tuns = Vec::new();
        for n in &names {
            let t = Tun::create(n).map_err(|e| io::Error::new(e.kind(), format!("create TUN {n}: {e}")))?;
            tuns.push(t.into_parts().1);
        }
        let open = |p: u8, what: &str| {
            raw_socket(p, config.address).map_err(|e| {
                io::Error::new(e.kind(), format!("raw {what} socket bound to {}: {e}", config.address))
            })
        };
        let shared = Arc::new(Shared {
            tuns,
            ipip: open(ipv4::PROTO_IPIP, "IPIP")?,
            gre: open(ipv4::PROTO_GRE, "GRE")?,
            map: config.tun_map(),
            flows: Mutex::new(FlowMemory::new(config.flow_timeout, config.max_flows)),
            stats: Stats::new(&names),
            start: Instant::now(),
        });

        for encap in [Encap::Ipip, Encap::Gre { key: None }] {
            let sh = Arc::clone(&shared);
            let name = if encap == Encap::Ipip { "rx-ipip" } else { "rx-gre" };
            thread::Builder::new().name(name.into()).spawn(move || tunnel_loop(&sh, encap))?;
        }
        for (i, n) in names.iter().enumerate() {
            let sh = Arc::clone(&shared);
            thread::Builder::new().name(format!("tun-{n}")).spawn(move || tun_loop(&sh, i))?;
        }
        Ok(Agent { shared })
    }

    /// Forgets the flows unused for the timeout; returns how many.
    pub fn sweep(&self) -> usize {
        let sh = &self.shared;
        let n = sh.flows().sweep(sh.now());
        add(&sh.stats.flows_expired, n);
        n
    }

    /// Every counter, one per line.
    pub fn render_stats(&self) -> String {
        let flows = self.shared.flows().len();
        self.shared.stats.render(flows)
    }
}

/// Reads tunneled packets from the raw socket of `encap`'s protocol, forever.
fn tunnel_loop(sh: &Shared, encap: Encap) {
    let socket = sh.socket(encap);
    let received = if encap == Encap::Ipip { &sh.stats.received_ipip } else { &sh.stats.received_gre };
    let mut errors = ErrorLog::new(format!("reading the raw socket for protocol {}", encap.protocol()));
    let mut write_errors = ErrorLog::new("writing into a TUN".into());
    let mut buf = vec![0u8; PACKET_BUFFER];
    let mut reader = socket;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bump(&sh.stats.read_errors);
                errors.log(&e);
                continue;
            }
        };
        bump(received);
        if let Err(r) = deliver(sh, &buf[..n], &mut write_errors) {
            sh.stats.count_drop(r);
        }
    }
}

/// Decapsulates one tunneled packet, remembers its flow, writes it into its TUN.
fn deliver(sh: &Shared, packet: &[u8], write_errors: &mut ErrorLog) -> Result<(), DropReason> {
    let d = decap(packet)?;
    let tun = sh.map.select(d.encap)?;
    // Remembered before the write: the kernel may answer before this thread runs again.
    if let Some(t) = d.tuple {
        let path = ReturnPath { appliance: d.appliance, encap: d.encap };
        match sh.flows().remember(tun, &t, path, sh.now()) {
            Remembered::New => bump(&sh.stats.flows_remembered),
            Remembered::Refreshed => {}
            Remembered::Full => bump(&sh.stats.flows_not_remembered),
        }
    }
    let mut file = &sh.tuns[tun];
    // One write is one packet: the TUN takes all of it or fails.
    if let Err(e) = file.write_all(d.inner) {
        write_errors.log(&e);
        return Err(DropReason::TunWriteFailed);
    }
    let st = sh.stats.tun(tun);
    bump(&st.decapsulated_packets);
    add(&st.decapsulated_bytes, d.inner.len());
    Ok(())
}

/// Reads what the kernel sends out of TUN `tun`, forever.
fn tun_loop(sh: &Shared, tun: usize) {
    let name = &sh.stats.tuns[tun].0;
    let mut errors = ErrorLog::new(format!("reading TUN {name}"));
    let mut send_errors = ErrorLog::new(format!("sending replies from TUN {name}"));
    let mut buf = vec![0u8; PACKET_BUFFER];
    let mut gre = Vec::with_capacity(PACKET_BUFFER + 8);
    let mut file = &sh.tuns[tun];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bump(&sh.stats.read_errors);
                errors.log(&e);
                // A TUN whose device is gone fails every read: do not spin.
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        bump(&sh.stats.tun(tun).read_packets);
        if let Err(r) = send_back(sh, tun, &buf[..n], &mut gre, &mut send_errors) {
            sh.stats.count_drop(r);
        }
    }
}

/// Tunnels one packet out of a TUN back to the appliance its flow came from.
fn send_back(
    sh: &Shared,
    tun: usize,
    packet: &[u8],
    gre: &mut Vec<u8>,
    send_errors: &mut ErrorLog,
) -> Result<(), DropReason> {
    let (packet, tuple) = reply(packet)?;
    let path = sh.flows().lookup(tun, &tuple, sh.now()).ok_or(DropReason::NoFlow)?;
    let payload = match path.encap {
        Encap::Ipip => packet,
        Encap::Gre { key } => {
            encap_gre(key, packet, gre);
            &gre[..]
        }
    };
    let to = SockAddr::from(SocketAddrV4::new(path.appliance, 0));
    if let Err(e) = sh.socket(path.encap).send_to(payload, &to) {
        send_errors.log(&e);
        return Err(DropReason::SendFailed);
    }
    let st = sh.stats.tun(tun);
    bump(&st.replies_tunneled);
    add(&st.replies_bytes, packet.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(physical: Option<&str>, vpcs: &[(u32, &str)]) -> Config {
        Config {
            address: Ipv4Addr::new(198, 19, 0, 11),
            physical: physical.map(String::from),
            vpcs: vpcs.iter().map(|(k, n)| (*k, n.to_string())).collect(),
            flow_timeout: 300,
            max_flows: 1000,
        }
    }

    #[test]
    fn tun_order_and_map() {
        let c = config(Some("sl-phys"), &[(100, "sl-v100"), (200, "sl-v200")]);
        assert_eq!(c.tun_names(), ["sl-phys", "sl-v100", "sl-v200"]);
        let m = c.tun_map();
        assert_eq!(m.select(Encap::Ipip), Ok(0));
        assert_eq!(m.select(Encap::Gre { key: Some(200) }), Ok(2));

        let c = config(None, &[(100, "sl-v100")]);
        assert_eq!(c.tun_names(), ["sl-v100"]);
        assert_eq!(c.tun_map().select(Encap::Gre { key: Some(100) }), Ok(0));
        assert_eq!(c.tun_map().select(Encap::Ipip), Err(DropReason::NoPhysicalTun));
    }

    #[test]
    fn validation() {
        assert!(config(Some("a"), &[]).validate().is_ok());
        assert!(config(None, &[(1, "a"), (2, "b")]).validate().is_ok());
        assert!(config(None, &[]).validate().unwrap_err().contains("no TUN"));
        assert!(config(Some("a"), &[(1, "a")]).validate().unwrap_err().contains("twice"));
        assert!(config(None, &[(1, "a"), (1, "b")]).validate().unwrap_err().contains("key 1"));
    }
}
