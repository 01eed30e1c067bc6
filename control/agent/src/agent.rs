//! The agent's I/O: the TUN devices, the two raw sockets, and one blocking thread for each.
//!
//! - A raw socket thread (IPIP, GRE) reads whole tunneled packets addressed to `--address`,
//!   decapsulates them, drops those whose sender is not an `--appliance`, remembers their flow
//!   and writes the inner packet into its TUN.
//! - A TUN thread reads what the local kernel sends out of that TUN, looks its flow up (by its
//!   own 5-tuple, an ICMP error's quote, or a fragment's first fragment: [`Replies`]) and
//!   sends it back to the appliance through the raw socket of the protocol it came by; the
//!   kernel adds the outer IPv4 header, with the bound address as source.
//!
//! The flow memory is one `Mutex<FlowMemory>` shared by all threads; the counters are atomics.
//! What a received packet becomes (dropped, or which TUN gets which bytes) is decided by
//! [`Receiver`], which does no I/O and is tested here.

use crate::allow::AllowList;
use crate::flows::{FlowMemory, Limits, Remembered, ReturnPath};
use crate::replies::{Carried, Replies, Verdict};
use crate::stats::{add, bump, Stats};
use crate::tunnel::{decap, encap_gre, DropReason, Encap, FiveTuple, TunMap};
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
    /// The senders whose tunnels are accepted; at least one.
    pub appliances: AllowList,
    /// Seconds a flow is remembered unused.
    pub flow_timeout: u64,
    /// Most flows remembered per appliance source address, and in all.
    pub max_flows: Limits,
    /// The appliances' cluster tunnel address, and the age (seconds) from which a flow's NAT
    /// replies go there (the routers take them to any live appliance) instead of to the
    /// appliance the flow came from: once every appliance has the flow's session (session
    /// sync's delay).
    pub reply_to: Option<(Ipv4Addr, u64)>,
}

/// Where a NAT reply on `path` is tunneled, for a flow `age` seconds old: the cluster's
/// address once the flow is old enough, else the appliance the flow came from.
pub fn reply_destination(reply_to: Option<(Ipv4Addr, u64)>, path: &ReturnPath, age: u64) -> Ipv4Addr {
    match reply_to {
        Some((cluster, after)) if age >= after => cluster,
        _ => path.appliance,
    }
}

impl Config {
    /// The TUN names in index order: the physical TUN first, then the VPCs' in given order.
    pub fn tun_names(&self) -> Vec<String> {
        self.physical.iter().cloned().chain(self.vpcs.iter().map(|(_, n)| n.clone())).collect()
    }

    /// At least one TUN and one appliance, no name twice, no key twice, a total limit no
    /// smaller than the per-appliance one.
    pub fn validate(&self) -> Result<(), String> {
        if self.appliances.is_empty() {
            return Err("no --appliance given: tunnels are accepted only from the appliances \
                        (accepting any sender would let a spoofed packet take a flow's replies); \
                        give --appliance ADDRESS or --appliance PREFIX/LEN, repeatable"
                .into());
        }
        if self.max_flows.total < self.max_flows.per_appliance {
            return Err(format!(
                "--max-flows-total {} is below --max-flows {} (flows per appliance)",
                self.max_flows.total, self.max_flows.per_appliance
            ));
        }
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

/// Where a packet out of a TUN is tunneled: its flow's return path, the flow's age in seconds,
/// and what the packet is.
type SendTo = (ReturnPath, u64, Carried);

/// The receive path's decisions, without I/O: who may send, which TUN, which flows; and where
/// what comes out of a TUN goes.
struct Receiver {
    appliances: AllowList,
    map: TunMap,
    flows: Mutex<FlowMemory>,
    stats: Stats,
}

impl Receiver {
    fn new(config: &Config) -> Receiver {
        Receiver {
            appliances: config.appliances.clone(),
            map: config.tun_map(),
            flows: Mutex::new(FlowMemory::new(config.flow_timeout, config.max_flows)),
            stats: Stats::new(&config.tun_names()),
        }
    }

    /// The flow memory; a thread that panicked holding it cannot have left it inconsistent
    /// (every method leaves the map valid), so a poisoned lock is taken as is.
    fn flows(&self) -> MutexGuard<'_, FlowMemory> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decapsulates one tunneled packet received at `now`: from an appliance, its flow
    /// remembered and (its TUN, the inner packet) returned; otherwise dropped and counted.
    fn receive<'a>(&self, packet: &'a [u8], now: u64) -> Option<(usize, &'a [u8])> {
        match self.admit(packet, now) {
            Ok(r) => Some(r),
            Err(r) => {
                self.stats.count_drop(r);
                None
            }
        }
    }

    fn admit<'a>(&self, packet: &'a [u8], now: u64) -> Result<(usize, &'a [u8]), DropReason> {
        let d = decap(packet)?;
        // Before anything else: a packet from any other sender must not touch a flow.
        if !self.appliances.contains(d.appliance) {
            return Err(DropReason::NotAppliance);
        }
        let tun = self.map.select(d.encap)?;
        if let Some(t) = d.tuple {
            let path = ReturnPath { appliance: d.appliance, encap: d.encap };
            match self.flows().remember(tun, &t, path, now) {
                Remembered::New => bump(&self.stats.flows_remembered),
                Remembered::Refreshed => {}
                Remembered::Full => bump(&self.stats.flows_not_remembered),
            }
        }
        Ok((tun, d.inner))
    }

    /// Decides where `packet`, read out of TUN `tun` at `now` (seconds, nanoseconds), goes
    /// (see [`Replies::route`]); calls `send` with the bytes of each packet to tunnel back,
    /// and counts what is held or dropped (also by `send`).
    fn route(
        &self,
        replies: &mut Replies,
        tun: usize,
        packet: &[u8],
        (now, now_ns): (u64, u64),
        mut send: impl FnMut(&[u8], SendTo) -> Result<(), DropReason>,
    ) {
        let lookup = |t: &FiveTuple| self.flows().lookup_aged(tun, t, now);
        replies.route(packet, now_ns, lookup, |bytes, verdict| match verdict {
            Verdict::Send { path, age, carried } => {
                if let Err(r) = send(bytes, (path, age, carried)) {
                    self.stats.count_drop(r);
                }
            }
            Verdict::Held => bump(&self.stats.tun(tun).fragments_held),
            Verdict::Drop(r) => self.stats.count_drop(r),
        });
    }
}

struct Shared {
    tuns: Vec<File>,
    ipip: Socket,
    gre: Socket,
    rx: Receiver,
    start: Instant,
    reply_to: Option<(Ipv4Addr, u64)>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The same clock in nanoseconds (u64 holds 584 years of them).
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
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
            rx: Receiver::new(config),
            start: Instant::now(),
            reply_to: config.reply_to,
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
        let n = sh.rx.flows().sweep(sh.now());
        add(&sh.rx.stats.flows_expired, n);
        n
    }

    /// Every counter, one per line.
    pub fn render_stats(&self) -> String {
        let flows = self.shared.rx.flows().len();
        self.shared.rx.stats.render(flows)
    }
}

/// Reads tunneled packets from the raw socket of `encap`'s protocol, forever.
fn tunnel_loop(sh: &Shared, encap: Encap) {
    let socket = sh.socket(encap);
    let stats = &sh.rx.stats;
    let received = if encap == Encap::Ipip { &stats.received_ipip } else { &stats.received_gre };
    let mut errors = ErrorLog::new(format!("reading the raw socket for protocol {}", encap.protocol()));
    let mut write_errors = ErrorLog::new("writing into a TUN".into());
    let mut buf = vec![0u8; PACKET_BUFFER];
    let mut reader = socket;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bump(&stats.read_errors);
                errors.log(&e);
                continue;
            }
        };
        bump(received);
        // The flow is remembered before the write: the kernel may answer before this thread
        // runs again.
        if let Some((tun, inner)) = sh.rx.receive(&buf[..n], sh.now()) {
            deliver(sh, tun, inner, &mut write_errors);
        }
    }
}

/// Writes a decapsulated packet into its TUN.
fn deliver(sh: &Shared, tun: usize, inner: &[u8], write_errors: &mut ErrorLog) {
    let mut file = &sh.tuns[tun];
    // One write is one packet: the TUN takes all of it or fails.
    if let Err(e) = file.write_all(inner) {
        write_errors.log(&e);
        sh.rx.stats.count_drop(DropReason::TunWriteFailed);
        return;
    }
    let st = sh.rx.stats.tun(tun);
    bump(&st.decapsulated_packets);
    add(&st.decapsulated_bytes, inner.len());
}

/// Reads what the kernel sends out of TUN `tun`, forever.
fn tun_loop(sh: &Shared, tun: usize) {
    let stats = &sh.rx.stats;
    let name = &stats.tuns[tun].0;
    let mut errors = ErrorLog::new(format!("reading TUN {name}"));
    let mut send_errors = ErrorLog::new(format!("sending replies from TUN {name}"));
    let mut buf = vec![0u8; PACKET_BUFFER];
    let mut gre = Vec::with_capacity(PACKET_BUFFER + 8);
    let mut replies = Replies::new(random_seed());
    let mut file = &sh.tuns[tun];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bump(&stats.read_errors);
                errors.log(&e);
                // A TUN whose device is gone fails every read: do not spin.
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        bump(&stats.tun(tun).read_packets);
        sh.rx.route(&mut replies, tun, &buf[..n], (sh.now(), sh.now_ns()), |packet, to| {
            send_back(sh, tun, packet, to, &mut gre, &mut send_errors)
        });
    }
}

/// A seed for a fragment table's hash that senders cannot guess: std's per-process random keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Tunnels one packet out of a TUN back along its flow's return path (`age`: the flow's, in
/// seconds).
fn send_back(
    sh: &Shared,
    tun: usize,
    packet: &[u8],
    (path, age, carried): SendTo,
    gre: &mut Vec<u8>,
    send_errors: &mut ErrorLog,
) -> Result<(), DropReason> {
    let payload = match path.encap {
        Encap::Ipip => packet,
        Encap::Gre { key } => {
            encap_gre(key, packet, gre);
            &gre[..]
        }
    };
    let to = SockAddr::from(SocketAddrV4::new(reply_destination(sh.reply_to, &path, age), 0));
    if let Err(e) = sh.socket(path.encap).send_to(payload, &to) {
        send_errors.log(&e);
        return Err(DropReason::SendFailed);
    }
    let st = sh.rx.stats.tun(tun);
    bump(&st.replies_tunneled);
    add(&st.replies_bytes, packet.len());
    match carried {
        Carried::Packet => {}
        Carried::Fragment => bump(&st.replies_fragments),
        Carried::IcmpError => bump(&st.replies_icmp_errors),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::Prefix;
    use crate::testpkt;
    use crate::tunnel::encap_gre;
    use sluice_dataplane::wire::{Ipv4Repr, UdpRepr};

    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    /// The second appliance, inside the allowed 198.19.0.0/30 prefix.
    const APPLIANCE_2: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
    const SPOOFER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 66);
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const VM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn config(physical: Option<&str>, vpcs: &[(u32, &str)]) -> Config {
        Config {
            address: HOST,
            physical: physical.map(String::from),
            vpcs: vpcs.iter().map(|(k, n)| (*k, n.to_string())).collect(),
            appliances: AllowList::new(vec![Prefix::host(APPLIANCE), "198.19.0.2/31".parse().unwrap()]),
            flow_timeout: 300,
            max_flows: Limits { per_appliance: 1000, total: 4000 },
            reply_to: None,
        }
    }

    #[test]
    fn replies_go_to_the_cluster_address_when_there_is_one() {
        let path = ReturnPath { appliance: APPLIANCE, encap: Encap::Ipip };
        assert_eq!(reply_destination(None, &path, 100), APPLIANCE);
        let cluster = Ipv4Addr::new(198, 18, 9, 1);
        assert_eq!(
            reply_destination(Some((cluster, 5)), &path, 4),
            APPLIANCE,
            "young: its appliance only knows it"
        );
        assert_eq!(reply_destination(Some((cluster, 5)), &path, 5), cluster);
    }

    fn ip(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> Ipv4Repr {
        Ipv4Repr { src, dst, protocol, payload_len, tos: 0, ident: 1, dont_frag: true, ttl: 64 }
    }

    /// GRE with key 100 from `from` to HOST, carrying UDP CLIENT:`port` -> VM:53.
    fn gre_from(from: Ipv4Addr, port: u16) -> Vec<u8> {
        let mut inner = vec![0u8; 28];
        UdpRepr { src_port: port, dst_port: 53 }.emit_v4(&mut inner[20..], CLIENT, VM);
        ip(CLIENT, VM, ipv4::PROTO_UDP, 8).emit(&mut inner);
        let mut gre = Vec::new();
        encap_gre(Some(100), &inner, &mut gre);
        let mut p = vec![0u8; 20];
        ip(from, HOST, ipv4::PROTO_GRE, gre.len()).emit(&mut p);
        p.extend_from_slice(&gre);
        p
    }

    /// Where the replies of flow CLIENT:`port` -> VM:53 (on VPC 100's TUN, index 1) go.
    fn return_path(rx: &Receiver, port: u16) -> Option<Ipv4Addr> {
        let reply = crate::tunnel::FiveTuple {
            src: VM,
            src_port: 53,
            dst: CLIENT,
            dst_port: port,
            protocol: ipv4::PROTO_UDP,
        };
        rx.flows().lookup(1, &reply, 0).map(|p| p.appliance)
    }

    #[test]
    fn a_packet_from_a_non_appliance_is_dropped_counted_and_moves_no_flow() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        let real = gre_from(APPLIANCE, 40000);
        assert_eq!(rx.receive(&real, 0).map(|(tun, _)| tun), Some(1));
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE));

        // The same flow, key and tuple from a sender outside the list: nothing of it is kept.
        assert_eq!(rx.receive(&gre_from(SPOOFER, 40000), 0), None);
        assert_eq!(rx.stats.drops(DropReason::NotAppliance), 1);
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE));
        // Nor is a new flow it sends remembered.
        assert_eq!(rx.receive(&gre_from(SPOOFER, 40001), 0), None);
        assert_eq!((rx.stats.drops(DropReason::NotAppliance), rx.flows().len()), (2, 1));
        assert_eq!(rx.stats.flows_remembered.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_flow_moves_between_appliances() {
        // ECMP rehash or failover: the other appliance now sends the flow; replies follow it.
        let rx = Receiver::new(&config(None, &[(0, "sl-v0"), (100, "sl-v100")]));
        assert!(rx.receive(&gre_from(APPLIANCE, 40000), 0).is_some());
        assert!(rx.receive(&gre_from(APPLIANCE_2, 40000), 1).is_some());
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE_2));
        assert_eq!(rx.stats.drops(DropReason::NotAppliance), 0);
    }

    #[test]
    fn a_flood_from_one_appliance_leaves_another_its_share() {
        let mut c = config(Some("sl-phys"), &[(100, "sl-v100")]);
        c.max_flows = Limits { per_appliance: 10, total: 20 };
        let rx = Receiver::new(&c);
        // A spoofed source inside the allowed prefix sends many flows: all delivered, ten kept.
        for port in 1..=500 {
            assert!(rx.receive(&gre_from(APPLIANCE_2, port), 0).is_some());
        }
        assert_eq!(rx.stats.flows_not_remembered.load(std::sync::atomic::Ordering::Relaxed), 490);
        for port in 1000..1010 {
            assert!(rx.receive(&gre_from(APPLIANCE, port), 0).is_some());
            assert_eq!(return_path(&rx, port), Some(APPLIANCE), "{port}");
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

    /// What [`Receiver::route`] sent for each packet: (bytes, appliance, encap, what).
    type Sent = Vec<(Vec<u8>, Ipv4Addr, Encap, Carried)>;

    /// Routes `packets` out of TUN `tun` at `now` seconds through `replies`.
    fn route_all(rx: &Receiver, replies: &mut Replies, tun: usize, packets: &[Vec<u8>], now: u64) -> Sent {
        let mut sent = Vec::new();
        for p in packets {
            rx.route(replies, tun, p, (now, now * 1_000_000_000), |b, (path, _, carried)| {
                sent.push((b.to_vec(), path.appliance, path.encap, carried));
                Ok(())
            });
        }
        sent
    }

    fn drops(rx: &Receiver, r: DropReason) -> u64 {
        rx.stats.drops(r)
    }

    /// UDP CLIENT:`port` -> VM:53, as the VM receives it.
    fn query(port: u16) -> Vec<u8> {
        testpkt::udp((CLIENT, port), (VM, 53), 5, 1, true)
    }

    #[test]
    fn a_vms_icmp_error_about_a_flow_goes_back_to_its_appliance_with_its_key() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100"), (200, "sl-v200")]));
        let mut replies = Replies::new(7);
        assert_eq!(
            rx.receive(&testpkt::gre(APPLIANCE_2, HOST, Some(100), &query(40000)), 0).map(|r| r.0),
            Some(1)
        );
        // The VM has no socket on port 53: port unreachable, quoting what it received.
        let unreachable = testpkt::icmp_error(VM, CLIENT, 3, 3, [0; 4], &query(40000));
        let sent = route_all(&rx, &mut replies, 1, std::slice::from_ref(&unreachable), 0);
        assert_eq!(
            sent,
            [(unreachable.clone(), APPLIANCE_2, Encap::Gre { key: Some(100) }, Carried::IcmpError)]
        );
        // Read back as the appliance would: GRE key 100 around the error, whole.
        let mut gre = Vec::new();
        encap_gre(Some(100), &unreachable, &mut gre);
        let mut outer = vec![0u8; 20];
        ip(HOST, APPLIANCE_2, ipv4::PROTO_GRE, gre.len()).emit(&mut outer);
        outer.extend_from_slice(&gre);
        let back = decap(&outer).unwrap();
        assert_eq!((back.encap, back.inner), (Encap::Gre { key: Some(100) }, &unreachable[..]));
        // Another VPC's TUN does not know the flow.
        assert!(route_all(&rx, &mut replies, 2, &[unreachable], 0).is_empty());
        assert_eq!(drops(&rx, DropReason::IcmpNoFlow), 1);
    }

    #[test]
    fn icmp_errors_about_no_flow_and_other_icmp_are_dropped_and_counted() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        let mut replies = Replies::new(7);
        assert!(rx.receive(&testpkt::gre(APPLIANCE, HOST, Some(100), &query(40000)), 0).is_some());
        let unknown = testpkt::icmp_error(VM, CLIENT, 3, 3, [0; 4], &query(40001));
        let mut echo_reply = vec![0u8; 28];
        ip(VM, CLIENT, ipv4::PROTO_ICMP, 8).emit(&mut echo_reply);
        assert!(route_all(&rx, &mut replies, 1, &[unknown, echo_reply], 0).is_empty());
        assert_eq!(drops(&rx, DropReason::IcmpNoFlow), 1);
        assert_eq!(drops(&rx, DropReason::ReplyIcmpNotError), 1);
        let text = rx.stats.render(rx.flows().len());
        assert!(text.contains("sluice_agent_drops_total{reason=\"icmp_no_flow\"} 1\n"), "{text}");
    }

    #[test]
    fn every_fragment_of_a_big_udp_reply_goes_back_to_the_flows_appliance() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        let mut replies = Replies::new(7);
        assert!(rx.receive(&testpkt::gre(APPLIANCE, HOST, Some(100), &query(40000)), 0).is_some());
        let big = testpkt::udp((VM, 53), (CLIENT, 40000), 4000, 0x5151, false);
        let frags = testpkt::fragments(&big, 1500);
        assert_eq!(frags.len(), 3);
        let sent = route_all(&rx, &mut replies, 1, &frags, 1);
        let want: Vec<_> = frags
            .iter()
            .map(|f| (f.clone(), APPLIANCE, Encap::Gre { key: Some(100) }, Carried::Fragment))
            .collect();
        assert_eq!(sent, want);
        // Put together again, they are the VM's datagram: nothing lost or changed.
        let payload: Vec<u8> = frags.iter().flat_map(|f| f[20..].to_vec()).collect();
        assert_eq!(payload, big[20..]);

        // Out of order: the last fragment is held, then follows its first.
        let big = testpkt::udp((VM, 53), (CLIENT, 40000), 4000, 0x5152, false);
        let frags = testpkt::fragments(&big, 1500);
        let order = [frags[2].clone(), frags[0].clone(), frags[1].clone()];
        let sent = route_all(&rx, &mut replies, 1, &order, 1);
        let got: Vec<_> = sent.iter().map(|s| s.0.clone()).collect();
        assert_eq!(got, [frags[0].clone(), frags[2].clone(), frags[1].clone()]);
        assert!(sent.iter().all(|s| s.1 == APPLIANCE && s.2 == Encap::Gre { key: Some(100) }));
        assert_eq!(rx.stats.tun(1).fragments_held.load(std::sync::atomic::Ordering::Relaxed), 1);

        // A later fragment whose first never comes: held, then dropped as an orphan 2 s on.
        let lone = testpkt::fragments(&testpkt::udp((VM, 53), (CLIENT, 40000), 4000, 0x5153, false), 1500);
        assert!(route_all(&rx, &mut replies, 1, &lone[1..2], 1).is_empty());
        assert!(route_all(&rx, &mut replies, 1, &[query(1)], 3).is_empty());
        assert_eq!(drops(&rx, DropReason::ReplyFragmentOrphan), 1);
        assert_eq!(replies.held(), 0);
    }

    #[test]
    fn a_failed_send_is_counted() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        let mut replies = Replies::new(7);
        assert!(rx.receive(&testpkt::gre(APPLIANCE, HOST, Some(100), &query(40000)), 0).is_some());
        let answer = testpkt::udp((VM, 53), (CLIENT, 40000), 5, 1, true);
        rx.route(&mut replies, 1, &answer, (0, 0), |_, _| Err(DropReason::SendFailed));
        assert_eq!(drops(&rx, DropReason::SendFailed), 1);
    }

    #[test]
    fn icmp_errors_and_fragments_from_an_appliance_reach_the_tun_and_a_first_fragment_makes_the_flow() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        // Fragmentation needed (MTU 1400) about a packet the VM sent on a flow.
        let sent = testpkt::udp((VM, 53), (CLIENT, 40000), 1600, 3, true);
        let frag_needed = testpkt::icmp_error(CLIENT, VM, 3, 4, [0, 0, 0x05, 0x78], &sent);
        let p = testpkt::gre(APPLIANCE, HOST, Some(100), &frag_needed);
        assert_eq!(rx.receive(&p, 0), Some((1, &frag_needed[..])));
        // The same over IPIP to the physical TUN.
        let p = testpkt::ipip(APPLIANCE, HOST, &frag_needed);
        assert_eq!(rx.receive(&p, 0), Some((0, &frag_needed[..])));
        assert_eq!(rx.flows().len(), 0, "errors make no flow");
        // A big client datagram the appliance cut before encapsulating: every piece delivered,
        // and the first (which has the ports) makes the flow the VM's answer goes back by.
        let big = testpkt::udp((CLIENT, 40000), (VM, 53), 3000, 4, false);
        for f in testpkt::fragments(&big, 1400) {
            let p = testpkt::gre(APPLIANCE, HOST, Some(100), &f);
            assert_eq!(rx.receive(&p, 0), Some((1, &f[..])));
        }
        assert_eq!(rx.flows().len(), 1, "the first fragment's flow");
        // The allow-list holds for them too.
        let p = testpkt::gre(SPOOFER, HOST, Some(100), &frag_needed);
        assert_eq!(rx.receive(&p, 0), None);
        assert_eq!(drops(&rx, DropReason::NotAppliance), 1);
    }

    #[test]
    fn validation() {
        let mut none = config(Some("a"), &[]);
        none.appliances = AllowList::default();
        assert!(none.validate().unwrap_err().contains("no --appliance given"));
        let mut small = config(Some("a"), &[]);
        small.max_flows = Limits { per_appliance: 10, total: 9 };
        assert!(small.validate().unwrap_err().contains("--max-flows-total 9 is below --max-flows 10"));
        assert!(config(Some("a"), &[]).validate().is_ok());
        assert!(config(None, &[(1, "a"), (2, "b")]).validate().is_ok());
        assert!(config(None, &[]).validate().unwrap_err().contains("no TUN"));
        assert!(config(Some("a"), &[(1, "a")]).validate().unwrap_err().contains("twice"));
        assert!(config(None, &[(1, "a"), (1, "b")]).validate().unwrap_err().contains("key 1"));
    }
}
