//! The agent's I/O: the TUN devices, the raw sockets, and one blocking thread for each.
//!
//! - For each family the host has an address of (`--address`, once per family), three raw
//!   sockets bound to it: protocol 4 (IPv4 in IP), 41 (IPv6 in IP) and 47 (GRE). A thread per
//!   socket reads tunneled packets addressed to that address (whole packets from an IPv4
//!   socket; from an IPv6 socket the payload after the outer header, with the sender from
//!   recvfrom), decapsulates them, drops those whose sender is not an `--appliance`, remembers
//!   their flow and writes the inner packet (IPv4 or IPv6) into its TUN.
//! - A TUN thread reads what the local kernel sends out of that TUN, looks its flow up (by its
//!   own 5-tuple, an ICMP or ICMPv6 error's quote, or a fragment's first fragment:
//!   [`Replies`]) and sends it back to the appliance the way it came: over the underlay of the
//!   appliance's family, through the raw socket of the protocol that carries the reply's
//!   family (4 or 41 for IP in IP, 47 with the flow's key for GRE); the kernel adds the outer
//!   IPv4 or IPv6 header, with the bound address as source.
//!
//! The raw sockets are held as `std::net::UdpSocket`s: std's safe `recv_from`/`send_to` over
//! any datagram socket (recvfrom gives an IPv6 raw socket's sender, which the payload no
//! longer holds). They stay raw sockets; nothing UDP is done with them.
//!
//! The flow memory is one `Mutex<FlowMemory>` shared by all threads; the counters are atomics.
//! What a received packet becomes (dropped, or which TUN gets which bytes) is decided by
//! [`Receiver`], which does no I/O and is tested here.

use crate::allow::AllowList;
use crate::echoes::Echoes;
use crate::flows::{FlowMemory, Limits, Remembered, ReturnPath};
use crate::replies::{Carried, Replies, Verdict};
use crate::stats::{add, bump, Stats};
use crate::tunnel::{
    decap, decap_v6, encap_gre, probe_nonce, Decap, DropReason, Encap, Family, FiveTuple, TunMap, PROTOCOLS,
};
use sluice_host_sys::Tun;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

/// Socket receive buffer asked for (the kernel caps it at net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Larger than any IPv4 packet, and than any IPv6 packet's payload (no jumbograms).
const PACKET_BUFFER: usize = 65536;

/// What the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host's addresses, at most one per family: the tunnels' destinations over each
    /// underlay, and the sources of the replies sent back over it.
    pub addresses: Vec<IpAddr>,
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
    /// The appliances' cluster tunnel addresses, at most one per family, to which a flow's
    /// NAT replies go (the routers take them to any live appliance) instead of to the
    /// appliance the flow came from, once the flow is `reply_to_after` seconds old: once every
    /// appliance has the flow's session (session sync's delay). A flow's replies go to the
    /// cluster address of its underlay's family, if there is one.
    pub reply_to: Vec<IpAddr>,
    pub reply_to_after: u64,
}

/// Where a NAT reply on `path` is tunneled, for a flow `age` seconds old: the cluster address
/// of the family of the flow's underlay once the flow is old enough, else the appliance the
/// flow came from.
pub fn reply_destination(reply_to: &[IpAddr], after: u64, path: &ReturnPath, age: u64) -> IpAddr {
    let family = Family::of(path.appliance);
    match reply_to.iter().find(|c| Family::of(**c) == family) {
        Some(&cluster) if age >= after => cluster,
        _ => path.appliance,
    }
}

/// The address of `family` in `addresses`, if any.
fn of_family(addresses: &[IpAddr], family: Family) -> Option<IpAddr> {
    addresses.iter().copied().find(|a| Family::of(*a) == family)
}

/// At most one address of each family in `addresses` (named `what` in the error).
fn one_per_family(addresses: &[IpAddr], what: &str) -> Result<(), String> {
    for (i, a) in addresses.iter().enumerate() {
        if let Some(b) = addresses[..i].iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
            return Err(format!("{what} {b} and {a} are of one family: give at most one IPv4 and one IPv6"));
        }
    }
    Ok(())
}

impl Config {
    /// The TUN names in index order: the physical TUN first, then the VPCs' in given order.
    pub fn tun_names(&self) -> Vec<String> {
        self.physical.iter().cloned().chain(self.vpcs.iter().map(|(_, n)| n.clone())).collect()
    }

    /// An address, at most one per family; at least one TUN and one appliance, no name twice,
    /// no key twice, a total limit no smaller than the per-appliance one; a cluster address
    /// only of a family the host has an address of.
    pub fn validate(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err("no --address given: give the host's IPv4 and/or IPv6 tunnel address".into());
        }
        one_per_family(&self.addresses, "--address")?;
        one_per_family(&self.reply_to, "--reply-to")?;
        if let Some(c) = self.reply_to.iter().find(|c| of_family(&self.addresses, Family::of(**c)).is_none())
        {
            return Err(format!(
                "--reply-to {c}: no --address of its family, so no flow could come over that underlay"
            ));
        }
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
        self.validate_tuns()
    }

    fn validate_tuns(&self) -> Result<(), String> {
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
    /// The tunnel-path probes' nonces, for the health channel's reports.
    echoes: Arc<Echoes>,
    stats: Stats,
}

impl Receiver {
    fn new(config: &Config) -> Receiver {
        Receiver {
            appliances: config.appliances.clone(),
            map: config.tun_map(),
            flows: Mutex::new(FlowMemory::new(config.flow_timeout, config.max_flows)),
            echoes: Arc::default(),
            stats: Stats::new(&config.tun_names()),
        }
    }

    /// The flow memory; a thread that panicked holding it cannot have left it inconsistent
    /// (every method leaves the map valid), so a poisoned lock is taken as is.
    fn flows(&self) -> MutexGuard<'_, FlowMemory> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decapsulates one tunneled IPv4 packet (outer header included) received at `now`: from
    /// an appliance, its flow remembered and (its TUN, the inner packet) returned; a
    /// tunnel-path probe's nonce kept for the health channel (nothing to deliver); otherwise
    /// dropped and counted.
    fn receive<'a>(&self, packet: &'a [u8], now: u64) -> Option<(usize, &'a [u8])> {
        self.counted(decap(packet).and_then(|d| self.admit(d, now))).flatten()
    }

    /// The same for what an IPv6 raw socket of `protocol` read from `from`.
    fn receive_v6<'a>(
        &self,
        from: Ipv6Addr,
        protocol: u8,
        payload: &'a [u8],
        now: u64,
    ) -> Option<(usize, &'a [u8])> {
        self.counted(decap_v6(from, protocol, payload).and_then(|d| self.admit(d, now))).flatten()
    }

    fn counted<T>(&self, r: Result<T, DropReason>) -> Option<T> {
        r.map_err(|reason| self.stats.count_drop(reason)).ok()
    }

    fn admit<'a>(&self, d: Decap<'a>, now: u64) -> Result<Option<(usize, &'a [u8])>, DropReason> {
        // Before anything else: a packet from any other sender must not touch a flow.
        if !self.appliances.contains(d.appliance) {
            return Err(DropReason::NotAppliance);
        }
        let tun = self.map.select(d.encap)?;
        // A probe through a tunnel this host serves: consumed, its nonce kept to echo.
        if let Some(nonce) = probe_nonce(&d) {
            let kept = self.echoes.take(d.appliance, d.encap, nonce);
            bump(if kept { &self.stats.probes_echoed } else { &self.stats.probes_not_kept });
            return Ok(None);
        }
        if let Some(t) = d.tuple {
            let path = ReturnPath { appliance: d.appliance, encap: d.encap };
            match self.flows().remember(tun, &t, path, now) {
                Remembered::New => bump(&self.stats.flows_remembered),
                Remembered::Refreshed => {}
                Remembered::Full => bump(&self.stats.flows_not_remembered),
            }
        }
        Ok(Some((tun, d.inner)))
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

/// One underlay: the raw sockets of [`PROTOCOLS`], in that order, bound to the host's address
/// of `family`.
struct Underlay {
    family: Family,
    sockets: [UdpSocket; 3],
}

struct Shared {
    tuns: Vec<File>,
    /// One per family the host has an address of.
    underlays: Vec<Underlay>,
    rx: Receiver,
    start: Instant,
    reply_to: Vec<IpAddr>,
    reply_to_after: u64,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The same clock in nanoseconds (u64 holds 584 years of them).
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The raw socket that sends `protocol` over the underlay of `family`.
    fn socket(&self, family: Family, protocol: u8) -> Option<&UdpSocket> {
        let u = self.underlays.iter().find(|u| u.family == family)?;
        let i = PROTOCOLS.iter().position(|p| *p == protocol)?;
        Some(&u.sockets[i])
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

fn raw_socket(protocol: u8, address: IpAddr) -> io::Result<UdpSocket> {
    let domain = if address.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(protocol))))?;
    s.bind(&SockAddr::from(SocketAddr::new(address, 0)))?;
    if let Err(e) = s.set_recv_buffer_size(SOCKET_BUFFER) {
        log::warn!("raw socket for protocol {protocol} on {address}: receive buffer: {e}");
    }
    Ok(s.into())
}

/// The raw sockets of [`PROTOCOLS`] bound to `address`.
fn underlay(address: IpAddr) -> io::Result<Underlay> {
    let open = |p: u8| {
        raw_socket(p, address).map_err(|e| {
            io::Error::new(e.kind(), format!("raw socket for protocol {p} bound to {address}: {e}"))
        })
    };
    let [a, b, c] = PROTOCOLS;
    Ok(Underlay { family: Family::of(address), sockets: [open(a)?, open(b)?, open(c)?] })
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
        let underlays = config.addresses.iter().map(|a| underlay(*a)).collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            tuns,
            underlays,
            rx: Receiver::new(config),
            start: Instant::now(),
            reply_to: config.reply_to.clone(),
            reply_to_after: config.reply_to_after,
        });

        for (u, underlay) in shared.underlays.iter().enumerate() {
            for (i, protocol) in PROTOCOLS.into_iter().enumerate() {
                let sh = Arc::clone(&shared);
                let name =
                    format!("rx-{}-{protocol}", if underlay.family == Family::V4 { "v4" } else { "v6" });
                thread::Builder::new().name(name).spawn(move || tunnel_loop(&sh, u, i))?;
            }
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

    /// The tunnel-path probes' nonces, which the health channel echoes.
    pub fn echoes(&self) -> Arc<Echoes> {
        Arc::clone(&self.shared.rx.echoes)
    }

    /// Every counter, one per line.
    pub fn render_stats(&self) -> String {
        let flows = self.shared.rx.flows().len();
        self.shared.rx.stats.render(flows)
    }
}

/// Reads tunneled packets from raw socket `i` (of [`PROTOCOLS`]) of underlay `u`, forever.
fn tunnel_loop(sh: &Shared, u: usize, i: usize) {
    let underlay = &sh.underlays[u];
    let (family, protocol, socket) = (underlay.family, PROTOCOLS[i], &underlay.sockets[i]);
    let stats = &sh.rx.stats;
    let received = stats.received(family, i);
    let mut errors = ErrorLog::new(format!("reading the raw socket for protocol {protocol} ({family:?})"));
    let mut write_errors = ErrorLog::new("writing into a TUN".into());
    let mut buf = vec![0u8; PACKET_BUFFER];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bump(&stats.read_errors);
                errors.log(&e);
                continue;
            }
        };
        bump(received);
        let packet = &buf[..n];
        // The flow is remembered before the write: the kernel may answer before this thread
        // runs again.
        let inner = match (family, from.ip()) {
            (Family::V4, _) => sh.rx.receive(packet, sh.now()),
            (Family::V6, IpAddr::V6(a)) => sh.rx.receive_v6(a, protocol, packet, sh.now()),
            // Not expected of an IPv6 socket; a v4-mapped sender would be IpAddr::V6 anyway.
            (Family::V6, IpAddr::V4(_)) => sh.rx.counted::<()>(Err(DropReason::OuterMalformed)).and(None),
        };
        if let Some((tun, inner)) = inner {
            deliver(sh, tun, inner, &mut write_errors);
        }
    }
}

/// Writes a decapsulated packet into its TUN.
fn deliver(sh: &Shared, tun: usize, inner: &[u8], write_errors: &mut ErrorLog) {
    let mut file = &sh.tuns[tun];
    // One write is one packet: the TUN takes all of it or fails. Without packet information
    // (IFF_NO_PI), the kernel tells IPv4 from IPv6 by the version nibble.
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

/// How `packet` (IPv4 or IPv6) goes back on `path` to `to`: the outer protocol, and the bytes
/// after the outer header (GRE built in `gre`). `None` for bytes of neither family, which
/// [`Replies`] never sends.
fn encapsulate<'a>(packet: &'a [u8], path: &ReturnPath, gre: &'a mut Vec<u8>) -> Option<(u8, &'a [u8])> {
    let inner = Family::of_packet(packet)?;
    let payload = match path.encap {
        Encap::Ipip => packet,
        Encap::Gre { key } => {
            encap_gre(key, inner, packet, gre);
            &gre[..]
        }
    };
    Some((path.encap.protocol(inner), payload))
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
    let to = reply_destination(&sh.reply_to, sh.reply_to_after, &path, age);
    let (protocol, payload) = encapsulate(packet, &path, gre).ok_or(DropReason::SendFailed)?;
    // The flow came over this underlay, so its socket exists.
    let socket = sh.socket(Family::of(to), protocol).ok_or(DropReason::SendFailed)?;
    if let Err(e) = socket.send_to(payload, SocketAddr::new(to, 0)) {
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
    use crate::tunnel::PROTO_IPV6;
    use sluice_dataplane::wire::{ipv4, Ipv4Packet, Ipv4Repr, UdpRepr};
    use std::net::Ipv4Addr;

    const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    /// The second appliance, inside the allowed 198.19.0.0/30 prefix.
    const APPLIANCE_2: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
    const SPOOFER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 66);
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const VM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const APPLIANCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1);
    const SPOOFER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0x66);
    const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0x11);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10);
    const VM6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x10);

    fn config(physical: Option<&str>, vpcs: &[(u32, &str)]) -> Config {
        Config {
            addresses: vec![HOST.into(), HOST6.into()],
            physical: physical.map(String::from),
            vpcs: vpcs.iter().map(|(k, n)| (*k, n.to_string())).collect(),
            appliances: AllowList::new(vec![
                Prefix::host(APPLIANCE),
                "198.19.0.2/31".parse().unwrap(),
                Prefix::host(APPLIANCE6),
            ]),
            flow_timeout: 300,
            max_flows: Limits { per_appliance: 1000, total: 4000 },
            reply_to: vec![],
            reply_to_after: 5,
        }
    }

    #[test]
    fn replies_go_to_the_cluster_address_when_there_is_one() {
        let path = ReturnPath { appliance: APPLIANCE.into(), encap: Encap::Ipip };
        assert_eq!(reply_destination(&[], 5, &path, 100), APPLIANCE);
        let cluster = IpAddr::from(Ipv4Addr::new(198, 18, 9, 1));
        assert_eq!(
            reply_destination(&[cluster], 5, &path, 4),
            APPLIANCE,
            "young: its appliance only knows it"
        );
        assert_eq!(reply_destination(&[cluster], 5, &path, 5), cluster);
        // Each underlay its own cluster address; none of a flow's family: its appliance.
        let cluster6: IpAddr = "2001:db8:9::1".parse().unwrap();
        let path6 = ReturnPath { appliance: APPLIANCE6.into(), encap: Encap::Gre { key: Some(100) } };
        assert_eq!(reply_destination(&[cluster, cluster6], 5, &path6, 9), cluster6);
        assert_eq!(reply_destination(&[cluster6, cluster], 5, &path, 9), cluster);
        assert_eq!(reply_destination(&[cluster], 5, &path6, 9), APPLIANCE6);
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
        encap_gre(Some(100), Family::V4, &inner, &mut gre);
        let mut p = vec![0u8; 20];
        ip(from, HOST, ipv4::PROTO_GRE, gre.len()).emit(&mut p);
        p.extend_from_slice(&gre);
        p
    }

    /// Where the replies of flow CLIENT:`port` -> VM:53 (on VPC 100's TUN, index 1) go.
    fn return_path(rx: &Receiver, port: u16) -> Option<IpAddr> {
        let reply = crate::tunnel::FiveTuple {
            src: VM.into(),
            src_port: 53,
            dst: CLIENT.into(),
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
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE.into()));

        // The same flow, key and tuple from a sender outside the list: nothing of it is kept.
        assert_eq!(rx.receive(&gre_from(SPOOFER, 40000), 0), None);
        assert_eq!(rx.stats.drops(DropReason::NotAppliance), 1);
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE.into()));
        // Nor is a new flow it sends remembered.
        assert_eq!(rx.receive(&gre_from(SPOOFER, 40001), 0), None);
        assert_eq!((rx.stats.drops(DropReason::NotAppliance), rx.flows().len()), (2, 1));
        assert_eq!(rx.stats.flows_remembered.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// The probe that the dataplane's own builder writes toward the first backend of
    /// `vip:port` in its golden appliance (whose tunnel source is APPLIANCE, or APPLIANCE6):
    /// the frame without its Ethernet header.
    fn dataplane_probe(vip: IpAddr, port: u16, nonce: u64) -> Vec<u8> {
        use sluice_dataplane::io::{Frame, VecFrame};
        use sluice_dataplane::pipeline::{probe_to_backend, Ctx, ProbeRequest, Resolve, Verdict};
        use sluice_dataplane::{sched::SchedState, session, testkit};
        let snap = testkit::golden::snapshot();
        let svc = snap.services.iter().find(|s| s.vip == vip && s.port == port).unwrap();
        let req = ProbeRequest { service: svc.id, backend: svc.backends[0].id, nonce };
        let (table, proxy) = (session::SessionTable::new(64, Default::default(), 1), testkit::synproxy());
        let (mut resolve, mut sched) = (Resolve::new(), SchedState::new(0, 1));
        let mut cx = Ctx::new(&snap, &table, &proxy, &mut sched, 1, &mut resolve);
        let mut f = VecFrame::new(&[]);
        assert!(matches!(probe_to_backend(&mut cx, &req, &mut f), Verdict::Tunnel { .. }));
        f.data()[14..].to_vec()
    }

    #[test]
    fn a_probe_through_a_served_tunnel_is_consumed_and_its_nonce_kept_per_tunnel() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(7, "sl-v7"), (8, "sl-v8")]));
        // NAT over GRE key 7 and DSR over IPIP from APPLIANCE; NAT66 over GRE key 8, IPv6.
        let gre7 = dataplane_probe(Ipv4Addr::new(198, 18, 10, 6).into(), 80, 70);
        let ipip = dataplane_probe(Ipv4Addr::new(198, 18, 10, 1).into(), 80, 10);
        let gre8 = dataplane_probe("2001:db8:10::2".parse().unwrap(), 443, 80);
        assert_eq!(rx.receive(&gre7, 0), None, "consumed, not delivered");
        assert_eq!(rx.receive(&ipip, 0), None);
        assert_eq!(rx.receive_v6(APPLIANCE6, ipv4::PROTO_GRE, &gre8[40..], 0), None);
        assert_eq!(rx.echoes.nonces(), [10, 70, 80], "one per tunnel");
        let newer = dataplane_probe(Ipv4Addr::new(198, 18, 10, 6).into(), 80, 71);
        assert_eq!(rx.receive(&newer, 0), None);
        assert_eq!(rx.echoes.nonces(), [10, 71, 80], "the newest per tunnel");
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((get(&rx.stats.probes_echoed), rx.flows().len()), (4, 0), "no flow remembered");
        assert!(DropReason::ALL.iter().all(|r| rx.stats.drops(*r) == 0));

        // A tunnel this host does not serve (no TUN for key 7) proves nothing: dropped as ever.
        let other = Receiver::new(&config(Some("sl-phys"), &[(8, "sl-v8")]));
        assert_eq!(other.receive(&gre7, 0), None);
        assert!(other.echoes.nonces().is_empty());
        assert_eq!(other.stats.drops(DropReason::UnknownVpc), 1);
        // From outside the appliances: dropped before anything.
        let mut spoofed = gre7.clone();
        Ipv4Packet::new_checked(&mut spoofed[..])
            .map(|mut p| {
                p.set_src(SPOOFER);
                p.fill_checksum();
            })
            .unwrap();
        assert_eq!(rx.receive(&spoofed, 0), None);
        assert_eq!((rx.stats.drops(DropReason::NotAppliance), rx.echoes.nonces()), (1, vec![10, 71, 80]));
    }

    #[test]
    fn a_datagram_to_the_probe_port_without_the_magic_is_delivered() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        let mut inner = vec![0u8; 28 + 16];
        let port = sluice_dataplane::wire::probe::PORT;
        UdpRepr { src_port: port, dst_port: port }.emit_v4(&mut inner[20..], CLIENT, VM);
        ip(CLIENT, VM, ipv4::PROTO_UDP, 8 + 16).emit(&mut inner);
        let mut gre = Vec::new();
        encap_gre(Some(100), Family::V4, &inner, &mut gre);
        let mut p = vec![0u8; 20];
        ip(APPLIANCE, HOST, ipv4::PROTO_GRE, gre.len()).emit(&mut p);
        p.extend_from_slice(&gre);
        assert_eq!(rx.receive(&p, 0).map(|(tun, b)| (tun, b.len())), Some((1, inner.len())));
        assert!(rx.echoes.nonces().is_empty());
    }

    #[test]
    fn a_flow_moves_between_appliances() {
        // ECMP rehash or failover: the other appliance now sends the flow; replies follow it.
        let rx = Receiver::new(&config(None, &[(0, "sl-v0"), (100, "sl-v100")]));
        assert!(rx.receive(&gre_from(APPLIANCE, 40000), 0).is_some());
        assert!(rx.receive(&gre_from(APPLIANCE_2, 40000), 1).is_some());
        assert_eq!(return_path(&rx, 40000), Some(APPLIANCE_2.into()));
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
            assert_eq!(return_path(&rx, port), Some(APPLIANCE.into()), "{port}");
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
    type Sent = Vec<(Vec<u8>, IpAddr, Encap, Carried)>;

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
            [(unreachable.clone(), APPLIANCE_2.into(), Encap::Gre { key: Some(100) }, Carried::IcmpError)]
        );
        // Read back as the appliance would: GRE key 100 around the error, whole.
        let mut gre = Vec::new();
        encap_gre(Some(100), Family::V4, &unreachable, &mut gre);
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
            .map(|f| (f.clone(), APPLIANCE.into(), Encap::Gre { key: Some(100) }, Carried::Fragment))
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
        assert!(sent.iter().all(|s| s.1 == IpAddr::from(APPLIANCE) && s.2 == Encap::Gre { key: Some(100) }));
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

    /// UDP CLIENT6:`port` -> VM6:53, as the VM receives it.
    fn query6(port: u16) -> Vec<u8> {
        testpkt::udp6((CLIENT6, port), (VM6, 53), 5)
    }

    #[test]
    fn ipv6_tunnels_from_ipv6_appliances_only_make_ipv6_flows() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100")]));
        // GRE key 100 over IPv6 around IPv6; IPv6 in IPv6; IPv4 in IPv6.
        let g = testpkt::gre6(Some(100), &query6(40000));
        assert_eq!(rx.receive_v6(APPLIANCE6, ipv4::PROTO_GRE, &g, 0), Some((1, &query6(40000)[..])));
        let q = query6(40001);
        assert_eq!(rx.receive_v6(APPLIANCE6, PROTO_IPV6, &q, 0), Some((0, &q[..])));
        let q4 = query(40002);
        assert_eq!(rx.receive_v6(APPLIANCE6, ipv4::PROTO_IPIP, &q4, 0), Some((0, &q4[..])));
        assert_eq!(rx.flows().len(), 3);
        // A sender outside the list, over IPv6: dropped before it touches the flow.
        assert_eq!(rx.receive_v6(SPOOFER6, ipv4::PROTO_GRE, &g, 1), None);
        assert_eq!(drops(&rx, DropReason::NotAppliance), 1);
        // Where each flow's replies go: its appliance over IPv6, the way it came.
        let reply6 = |port| FiveTuple {
            src: VM6.into(),
            src_port: 53,
            dst: CLIENT6.into(),
            dst_port: port,
            protocol: 17,
        };
        let path = |encap| Some(ReturnPath { appliance: APPLIANCE6.into(), encap });
        assert_eq!(rx.flows().lookup(1, &reply6(40000), 1), path(Encap::Gre { key: Some(100) }));
        assert_eq!(rx.flows().lookup(0, &reply6(40001), 1), path(Encap::Ipip));
        // IPv6 inside an IPv4 underlay: its replies go back over IPv4.
        let p = testpkt::ipip(APPLIANCE, HOST, &query6(40003));
        assert_eq!(rx.receive(&p, 0).map(|r| r.0), Some(0));
        let back = rx.flows().lookup(0, &reply6(40003), 1).map(|p| p.appliance);
        assert_eq!(back, Some(APPLIANCE.into()));
    }

    #[test]
    fn ipv6_replies_an_icmpv6_error_and_fragments_go_back_the_way_their_flow_came() {
        let rx = Receiver::new(&config(Some("sl-phys"), &[(100, "sl-v100"), (200, "sl-v200")]));
        let mut replies = Replies::new(7);
        let g = testpkt::gre6(Some(100), &query6(40000));
        assert!(rx.receive_v6(APPLIANCE6, ipv4::PROTO_GRE, &g, 0).is_some());
        let syn = testpkt::tcp6((CLIENT6, 40001), (VM6, 80));
        assert!(rx.receive_v6(APPLIANCE6, ipv4::PROTO_GRE, &testpkt::gre6(Some(100), &syn), 0).is_some());
        let answer = testpkt::udp6((VM6, 53), (CLIENT6, 40000), 10);
        let synack = testpkt::tcp6((VM6, 80), (CLIENT6, 40001));
        // The VM has nothing on port 53 after all: port unreachable quoting what it received.
        let unreachable = testpkt::icmpv6_error(VM6, CLIENT6, 1, 4, [0; 4], &query6(40000));
        let big = testpkt::udp6((VM6, 53), (CLIENT6, 40000), 4000);
        let frags = testpkt::fragments6(&big, 1500, 0x77);
        // The last fragment before the first: held, then sent after it.
        let packets = [
            answer.clone(),
            synack.clone(),
            unreachable.clone(),
            frags[2].clone(),
            frags[0].clone(),
            frags[1].clone(),
        ];
        let sent = route_all(&rx, &mut replies, 1, &packets, 1);
        let key = Encap::Gre { key: Some(100) };
        let a6 = IpAddr::from(APPLIANCE6);
        let want = vec![
            (answer, a6, key, Carried::Packet),
            (synack, a6, key, Carried::Packet),
            (unreachable.clone(), a6, key, Carried::IcmpError),
            (frags[0].clone(), a6, key, Carried::Fragment),
            (frags[2].clone(), a6, key, Carried::Fragment),
            (frags[1].clone(), a6, key, Carried::Fragment),
        ];
        assert_eq!(sent, want);
        assert_eq!(rx.stats.tun(1).fragments_held.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Read back as the appliance would: GRE key 100, type IPv6, around the error, whole.
        let mut gre = Vec::new();
        let (protocol, payload) =
            encapsulate(&unreachable, &ReturnPath { appliance: a6, encap: key }, &mut gre).unwrap();
        assert_eq!(protocol, ipv4::PROTO_GRE);
        let back = crate::tunnel::decap_v6(HOST6, protocol, payload).unwrap();
        assert_eq!((back.encap, back.inner), (key, &unreachable[..]));
        // Another VPC's TUN does not know the flow; nor a flow of another client.
        let other = testpkt::icmpv6_error(VM6, CLIENT6, 1, 4, [0; 4], &query6(40009));
        assert!(route_all(&rx, &mut replies, 2, &[unreachable], 1).is_empty());
        assert!(route_all(&rx, &mut replies, 1, &[other], 1).is_empty());
        assert_eq!(drops(&rx, DropReason::IcmpNoFlow), 2);
    }

    #[test]
    fn replies_are_encapsulated_by_their_own_family() {
        let (v4, v6) = (query(1), query6(1));
        let mut gre = Vec::new();
        let ipip = |a: IpAddr| ReturnPath { appliance: a, encap: Encap::Ipip };
        // IP in IP: 4 or 41 by the reply's family, over whichever underlay.
        for a in [IpAddr::from(APPLIANCE), IpAddr::from(APPLIANCE6)] {
            assert_eq!(encapsulate(&v4, &ipip(a), &mut gre), Some((4, &v4[..])));
            assert_eq!(encapsulate(&v6, &ipip(a), &mut gre), Some((41, &v6[..])));
        }
        let keyed = ReturnPath { appliance: APPLIANCE6.into(), encap: Encap::Gre { key: Some(9) } };
        let (protocol, payload) = encapsulate(&v4, &keyed, &mut gre).unwrap();
        assert_eq!((protocol, &payload[..4]), (47, &[0x20, 0x00, 0x08, 0x00][..]));
        let (_, payload) = encapsulate(&v6, &keyed, &mut gre).unwrap();
        assert_eq!(&payload[..8], &[0x20, 0x00, 0x86, 0xdd, 0, 0, 0, 9][..]);
        assert_eq!(encapsulate(&[0x50; 20], &keyed, &mut gre), None);
    }

    #[test]
    fn validation_of_addresses() {
        let mut c = config(Some("a"), &[]);
        c.addresses = vec![];
        assert!(c.validate().unwrap_err().contains("no --address"));
        c.addresses = vec![HOST6.into()];
        assert!(c.validate().is_ok(), "IPv6 only");
        c.addresses = vec![HOST.into(), Ipv4Addr::new(198, 19, 0, 12).into()];
        assert!(c.validate().unwrap_err().contains("of one family"));
        c.addresses = vec![HOST.into()];
        c.reply_to = vec!["2001:db8:9::1".parse().unwrap()];
        assert!(c.validate().unwrap_err().contains("no --address of its family"));
        c.addresses = vec![HOST.into(), HOST6.into()];
        assert!(c.validate().is_ok());
        c.reply_to.push("2001:db8:9::2".parse().unwrap());
        assert!(c.validate().unwrap_err().contains("--reply-to 2001:db8:9::1 and 2001:db8:9::2"));
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
