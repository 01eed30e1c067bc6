//! Health checks the agent runs for the appliances (`health: { by: agent }` on their side), as
//! Ananta's Host Agent does: an appliance sends an assignment (the backends on this host to
//! check, sealed: [`sluice_control::health::agent_wire`]) every check interval to
//! `--health-listen`; the agent probes each backend by TCP connect from where it lives, and
//! answers every assignment with a sealed report of its last result for each backend in it.
//! Each report also echoes the newest tunnel-path probe nonce of each tunnel
//! ([`crate::echoes`]), which proves to the appliance that its tunnel toward this host works.
//!
//! Where a backend lives: a VPC backend (an assignment with a VPC id) in the network namespace
//! given for that VPC (`--vpc-netns KEY=PATH`), which its prober thread enters once before it
//! probes, so 192.0.2.10 of VPC 100 and 192.0.2.10 of VPC 200 are probed in their own tenant's
//! network; a backend without a VPC (DSR, physical) in the agent's own namespace.
//!
//! Messages that are forged, replayed, stale or malformed change nothing and are counted by
//! reason, as the appliances count theirs. A backend that no assignment has named for
//! [`RETIRE_AFTER`] intervals stops being probed.

use crate::echoes::Echoes;
use sluice_control::health::agent_wire::{self as wire, Assign, Backend, Message};
use sluice_control::health::{probe, Check};
use sluice_control::sync::{Header, Reject, ReplayGuard, SyncKey};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Intervals without an assignment after which a backend's prober stops.
pub const RETIRE_AFTER: u32 = 10;

/// What the health checks run with.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// UDP address the appliances' assignments come to.
    pub listen: SocketAddr,
    pub key: SyncKey,
    /// Each VPC's network namespace (a file such as /run/netns/NAME).
    pub netns: Vec<(u32, PathBuf)>,
    /// Messages whose sender clock is further than this from ours are refused.
    pub window: Duration,
}

/// What the health channel counts.
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub assignments: AtomicU64,
    pub reports_sent: AtomicU64,
    pub send_errors: AtomicU64,
    /// Refused messages by [`Reject`], in `Reject::ALL` order.
    pub refused: [AtomicU64; 8],
}

impl HealthCounters {
    /// One counter a line, as the agent's other counters.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = format!(
            "health_assignments {}\nhealth_reports_sent {}\nhealth_send_errors {}\n",
            get(&self.assignments),
            get(&self.reports_sent),
            get(&self.send_errors)
        );
        for (r, n) in Reject::ALL.iter().zip(&self.refused) {
            out += &format!("health_refused_{} {}\n", r.label(), get(n));
        }
        out
    }
}

/// One backend's prober: its assignment, its last result, when it was last assigned.
struct Prober {
    assign: Assign,
    result: Mutex<Option<Result<(), String>>>,
    assigned: Mutex<Instant>,
    stop: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds `--health-listen` and starts the thread that answers assignments, echoing the
/// tunnel-path nonces in `echoes`.
pub fn start(config: HealthConfig, echoes: Arc<Echoes>) -> io::Result<Arc<HealthCounters>> {
    let socket = UdpSocket::bind(config.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("--health-listen {}: {e}", config.listen)))?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let counters = Arc::new(HealthCounters::default());
    let c = Arc::clone(&counters);
    thread::Builder::new()
        .name("health".into())
        .spawn(move || Channel::new(config, socket, c, echoes).run())?;
    Ok(counters)
}

struct Channel {
    config: HealthConfig,
    socket: UdpSocket,
    counters: Arc<HealthCounters>,
    echoes: Arc<Echoes>,
    guard: ReplayGuard,
    probers: HashMap<Backend, Arc<Prober>>,
    epoch: u64,
    sequence: u64,
}

impl Channel {
    fn new(
        config: HealthConfig,
        socket: UdpSocket,
        counters: Arc<HealthCounters>,
        echoes: Arc<Echoes>,
    ) -> Channel {
        let epoch = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        };
        let (guard, probers) = (ReplayGuard::new(), HashMap::new());
        Channel { config, socket, counters, echoes, guard, probers, epoch, sequence: 0 }
    }

    fn run(mut self) {
        let mut buf = [0u8; wire::MAX_MESSAGE + 1];
        loop {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                self.take(&buf[..n], from);
            }
            self.retire();
        }
    }

    /// One datagram: an authentic assignment is answered; anything else is counted.
    fn take(&mut self, bytes: &[u8], from: SocketAddr) {
        let window = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let assigns = match wire::decode(&self.config.key, bytes, wire::unix_ms(), window, &mut self.guard) {
            Ok((_, Message::Assign(a))) => a,
            Ok((_, Message::Report(..))) => return self.refuse(Reject::BadRecord),
            Err(r) => return self.refuse(r),
        };
        self.counters.assignments.fetch_add(1, Ordering::Relaxed);
        let results: Vec<wire::Result> = assigns.iter().filter_map(|a| self.assigned(*a)).collect();
        let echoes = self.echoes.nonces();
        for chunk in results.chunks(wire::MAX_REPORTS) {
            let header = Header { epoch: self.epoch, sequence: self.sequence, unix_ms: wire::unix_ms() };
            self.sequence += 1;
            let msg = wire::encode_report(&self.config.key, &header, chunk, &echoes);
            let counter = match self.socket.send_to(&msg, from) {
                Ok(_) => &self.counters.reports_sent,
                Err(_) => &self.counters.send_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refuse(&self, r: Reject) {
        let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.counters.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Notes `a` as assigned now (starting its prober if it has none, or its timing changed);
    /// its last result, if it has one yet.
    fn assigned(&mut self, a: Assign) -> Option<wire::Result> {
        let p = match self.probers.get(&a.backend) {
            Some(p) if p.assign == a => Arc::clone(p),
            _ => {
                let p = self.spawn(a);
                if let Some(old) = self.probers.insert(a.backend, Arc::clone(&p)) {
                    old.stop.store(true, Ordering::Relaxed);
                }
                p
            }
        };
        *locked(&p.assigned) = Instant::now();
        let result = locked(&p.result).clone()?;
        Some(wire::Result { backend: a.backend, result })
    }

    /// Stops the probers that no assignment named for [`RETIRE_AFTER`] intervals.
    fn retire(&mut self) {
        self.probers.retain(|_, p| {
            let keep = locked(&p.assigned).elapsed() < p.assign.interval * RETIRE_AFTER;
            if !keep {
                p.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
    }

    /// A prober thread for `a`, in its VPC's namespace if it has one.
    fn spawn(&self, a: Assign) -> Arc<Prober> {
        let p = Arc::new(Prober {
            assign: a,
            result: Mutex::new(None),
            assigned: Mutex::new(Instant::now()),
            stop: AtomicBool::new(false),
        });
        let netns = a
            .backend
            .vpc
            .map(|v| self.config.netns.iter().find(|(k, _)| *k == v).map(|(_, p)| p.clone()).ok_or(v));
        let q = Arc::clone(&p);
        let spawned = thread::Builder::new().name("health-probe".into()).spawn(move || probe_loop(&q, netns));
        if let Err(e) = spawned {
            *locked(&p.result) = Some(Err(format!("no prober thread: {e}")));
        }
        p
    }
}

/// Enters `path`'s network namespace (this thread only).
fn enter_netns(path: &PathBuf) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("netns {}: {e}", path.display()))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("netns {}: {e}", path.display()))
}

/// Probes `p`'s backend every interval until stopped; first enters its VPC's namespace
/// (`Some(Err(vpc))`: this agent has none for it, which is the result).
fn probe_loop(p: &Prober, netns: Option<Result<PathBuf, u32>>) {
    let entered = match &netns {
        None => Ok(()),
        Some(Ok(path)) => enter_netns(path),
        Some(Err(vpc)) => Err(format!("no --vpc-netns for VPC {vpc} on this agent")),
    };
    let b = p.assign.backend;
    let addr = SocketAddr::new(b.addr, b.port);
    let mut up = None;
    while !p.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = entered.clone().and_then(|()| probe(addr, &Check::Tcp, p.assign.timeout));
        if up != Some(result.is_ok()) {
            let vpc = b.vpc.map_or("host".to_string(), |v| format!("VPC {v}"));
            match &result {
                Ok(()) => log::info!("health: {vpc} {addr} passes"),
                Err(e) => log::warn!("health: {vpc} {addr} fails: {e}"),
            }
            up = Some(result.is_ok());
        }
        *locked(&p.result) = Some(result);
        while started.elapsed() < p.assign.interval && !p.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20).min(p.assign.interval));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn channel(key: u8) -> (Channel, UdpSocket) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
        appliance.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let config = HealthConfig {
            listen: socket.local_addr().unwrap(),
            key: SyncKey::new([key; 32]),
            netns: vec![],
            window: Duration::from_secs(5),
        };
        (Channel::new(config, socket, Arc::default(), Arc::default()), appliance)
    }

    fn assignment(key: u8, sequence: u64, backends: &[Backend]) -> Vec<u8> {
        let d = Duration::from_millis(50);
        let assigns: Vec<Assign> =
            backends.iter().map(|b| Assign { backend: *b, interval: d, timeout: d }).collect();
        let header = Header { epoch: 3, sequence, unix_ms: wire::unix_ms() };
        wire::encode_assign(&SyncKey::new([key; 32]), &header, &assigns)
    }

    /// Assigns until the report holds a result for every backend; the results.
    fn results(
        c: &mut Channel,
        appliance: &UdpSocket,
        backends: &[Backend],
        seq: &mut u64,
    ) -> Vec<wire::Result> {
        report(c, appliance, backends, seq).0
    }

    /// Assigns until the report holds a result for every backend; the results and the echoes.
    fn report(
        c: &mut Channel,
        appliance: &UdpSocket,
        backends: &[Backend],
        seq: &mut u64,
    ) -> (Vec<wire::Result>, Vec<u64>) {
        let from = appliance.local_addr().unwrap();
        for _ in 0..100 {
            *seq += 1;
            c.take(&assignment(1, *seq, backends), from);
            let mut buf = [0u8; 2048];
            let Ok(n) = appliance.recv(&mut buf) else { continue };
            let (_, msg) = wire::decode(
                &SyncKey::new([1; 32]),
                &buf[..n],
                wire::unix_ms(),
                5000,
                &mut ReplayGuard::new(),
            )
            .unwrap();
            let Message::Report(r, echoes) = msg else { panic!("{msg:?}") };
            if r.len() == backends.len() {
                return (r, echoes);
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("no full report");
    }

    #[test]
    fn assignments_are_probed_and_reported_by_backend() {
        let (mut c, appliance) = channel(1);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let up =
            Backend { vpc: None, addr: "127.0.0.1".parse().unwrap(), port: l.local_addr().unwrap().port() };
        let no_ns = Backend { vpc: Some(100), ..up };
        let mut seq = 0;
        let r = results(&mut c, &appliance, &[up, no_ns], &mut seq);
        assert_eq!(r[0], wire::Result { backend: up, result: Ok(()) });
        assert_eq!(
            r[1].result,
            Err("no --vpc-netns for VPC 100 on this agent".into()),
            "VPC 100 is not the host"
        );
        drop(l);
        let deadline = Instant::now() + Duration::from_secs(5);
        while results(&mut c, &appliance, &[up], &mut seq)[0].result.is_ok() {
            assert!(Instant::now() < deadline, "a closed port stays up");
        }
    }

    #[test]
    fn reports_echo_the_newest_tunnel_nonces() {
        let (mut c, appliance) = channel(1);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let up =
            Backend { vpc: None, addr: "127.0.0.1".parse().unwrap(), port: l.local_addr().unwrap().port() };
        let mut seq = 0;
        assert_eq!(report(&mut c, &appliance, &[up], &mut seq).1, Vec::<u64>::new(), "no probe yet");
        let from: std::net::IpAddr = "198.19.0.1".parse().unwrap();
        c.echoes.take(from, crate::tunnel::Encap::Gre { key: Some(7) }, 0xfeed);
        assert_eq!(report(&mut c, &appliance, &[up], &mut seq).1, [0xfeed]);
        c.echoes.take(from, crate::tunnel::Encap::Gre { key: Some(7) }, 0xbeef);
        assert_eq!(report(&mut c, &appliance, &[up], &mut seq).1, [0xbeef], "the newest");
    }

    #[test]
    fn forged_and_replayed_assignments_are_refused_and_counted() {
        let (mut c, appliance) = channel(1);
        let from = appliance.local_addr().unwrap();
        let b = Backend { vpc: None, addr: "127.0.0.1".parse().unwrap(), port: 9 };
        c.take(&assignment(2, 1, &[b]), from);
        assert!(c.probers.is_empty(), "a forged assignment starts nothing");
        let good = assignment(1, 2, &[b]);
        c.take(&good, from);
        c.take(&good, from);
        let refused: Vec<u64> = c.counters.refused.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let at = |r| Reject::ALL.iter().position(|x| *x == r).unwrap();
        let mut want = vec![0; 8];
        (want[at(Reject::BadTag)], want[at(Reject::Replayed)]) = (1, 1);
        assert_eq!(refused, want);
        assert_eq!(c.counters.assignments.load(Ordering::Relaxed), 1);
    }
}
