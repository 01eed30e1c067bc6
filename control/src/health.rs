//! Health checks: each checked backend gets a thread that probes it every `interval` (a TCP
//! connect; an HTTP or HTTPS request, see [`http`]; a UDP datagram and its reply, see [`udp`])
//! and reports each result to the control thread, which counts `rise` passes in a row to call
//! a backend up and `fall` failures in a row to call it down, then publishes a snapshot
//! without it.
//!
//! Probes leave through the appliance's own kernel stack (the management path), not through
//! DPDK: sluiced's process opens ordinary sockets, routed by the host or namespace it runs in.
//! A backend must be reachable from there at its check address: a DSR backend's address, a
//! NAT backend's own address and port (so VPC backends need a management route or are left
//! unchecked).

pub mod agent_wire;
pub mod agents;
pub mod http;
pub mod udp;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Passes when a TCP connection opens.
    Tcp,
    /// `http` or `https`: passes on the expected status (and body).
    Http(http::HttpCheck),
    /// Passes when a reply to a datagram comes (and holds the expected bytes).
    Udp(udp::UdpCheck),
}

/// Who probes a service's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum By {
    /// The appliance itself, from its kernel (the management path).
    #[default]
    Appliance,
    /// The host agent on each backend's host ([`agents`]).
    Agent,
}

/// A service's health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: Check,
    pub by: By,
    /// Port to probe (`None`: the backend's port).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that bring a down backend up.
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    pub fall: u32,
}

/// What probes one backend, again and again: set up once (an HTTP client's TLS settings).
pub enum Prober {
    Tcp(SocketAddr, Duration),
    Http(Box<http::Prober>),
    Udp(SocketAddr, udp::UdpCheck, Duration),
}

impl Prober {
    pub fn new(addr: SocketAddr, check: &Check, timeout: Duration) -> Prober {
        match check {
            Check::Tcp => Prober::Tcp(addr, timeout),
            Check::Http(c) => Prober::Http(Box::new(http::Prober::new(addr, c, timeout))),
            Check::Udp(c) => Prober::Udp(addr, c.clone(), timeout),
        }
    }

    /// One probe: `Ok` or why it failed (a short reason, for the log and `sluicectl`).
    pub fn probe(&self) -> Result<(), String> {
        match self {
            Prober::Tcp(addr, timeout) => {
                TcpStream::connect_timeout(addr, *timeout).map(drop).map_err(|e| format!("connect: {e}"))
            }
            Prober::Http(p) => p.probe(),
            Prober::Udp(addr, c, timeout) => udp::probe(*addr, c, *timeout),
        }
    }
}

/// One probe of `addr` by `check`: `Ok` or why it failed.
pub fn probe(addr: SocketAddr, check: &Check, timeout: Duration) -> Result<(), String> {
    Prober::new(addr, check, timeout).probe()
}

/// A backend's standing from its probes' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
}

impl State {
    /// Backends start up (sluiced does not wait `rise` intervals before forwarding).
    pub fn new() -> State {
        State { up: true, streak: 0 }
    }

    /// Takes one probe result; returns the new standing if it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if self.up { fall } else { rise } {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// A backend to probe: its stable id (see [`crate::ids`]), the address to probe, how.
#[derive(Debug, Clone)]
pub struct Target {
    pub backend: u32,
    pub addr: SocketAddr,
    pub spec: HealthSpec,
}

/// What a checker thread (or the agents' channel) reports: which backend (by id), the result,
/// and the agent that gave it (`None`: the appliance's own probe).
#[derive(Debug, Clone)]
pub struct Report {
    pub backend: u32,
    pub result: Result<(), String>,
    pub reporter: Option<std::net::IpAddr>,
}

/// Starts one probing thread per target; they stop when `stop` is set.
pub fn start(targets: Vec<Target>, to_control: Sender<Report>, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    targets
        .into_iter()
        .filter_map(|Target { backend, addr, spec }| {
            let tx = to_control.clone();
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("sluice-health".into())
                .spawn(move || {
                    let prober = Prober::new(addr, &spec.check, spec.timeout);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = prober.probe();
                        if tx.send(Report { backend, result, reporter: None }).is_err() {
                            return;
                        }
                        // Sleep out the interval in short steps, so a stop is quick.
                        while started.elapsed() < spec.interval && !stop.load(Ordering::Relaxed) {
                            thread::sleep(Duration::from_millis(20).min(spec.interval));
                        }
                    }
                })
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn fall_then_rise() {
        let mut s = State::new();
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(true, 2, 3), None, "a pass breaks the streak");
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), Some(false), "third failure in a row");
        assert!(!s.up);
        assert_eq!(s.observe(true, 2, 3), None);
        assert_eq!(s.observe(true, 2, 3), Some(true), "second pass in a row");
        assert_eq!(s.observe(true, 2, 3), None);
    }

    #[test]
    fn tcp_check_passes_on_connect_and_fails_when_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe(addr, &Check::Tcp, Duration::from_secs(5)), Ok(()));
        drop(l);
        assert!(probe(addr, &Check::Tcp, Duration::from_secs(5)).is_err());
    }
}
