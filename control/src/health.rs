//! Health checks: each checked backend gets a thread that probes it every `interval` (a TCP
//! connect, or an HTTP/1.1 HEAD or GET with a Host header, expecting one status) and reports
//! each result to the control thread, which counts `rise` passes in a row to call a backend up
//! and `fall` failures in a row to call it down, then publishes a snapshot without it.
//!
//! Probes leave through the appliance's own kernel stack (the management path), not through
//! DPDK: sluiced's process opens ordinary sockets, routed by the host or namespace it runs in.
//! A backend must be reachable from there at its check address: a DSR backend's address, a
//! NAT backend's own address and port (so VPC backends need a management route or are left
//! unchecked).

use std::io::{Read, Write};
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
    /// Passes when the answer's status is `status`.
    Http { get: bool, path: String, host: String, status: u16 },
}

/// A service's health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: Check,
    /// Port to probe (`None`: the backend's port).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that bring a down backend up.
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    pub fall: u32,
}

/// One probe: `Ok` or why it failed.
pub fn probe(addr: SocketAddr, check: &Check, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let Check::Http { get, path, host, status } = check else {
        return Ok(());
    };
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let method = if *get { "GET" } else { "HEAD" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
    // The status line is all that is needed: read until its end (or 1 KiB).
    let mut buf = [0u8; 1024];
    let mut have = 0;
    while !buf[..have].contains(&b'\n') && have < buf.len() {
        s.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..have]);
    let line = line.lines().next().unwrap_or("");
    let got = parse_status(line).ok_or_else(|| format!("not an HTTP status line: {line:?}"))?;
    if got == *status {
        Ok(())
    } else {
        Err(format!("status {got}, want {status}"))
    }
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
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

/// What a checker thread reports: which backend (by id), the result.
#[derive(Debug, Clone)]
pub struct Report {
    pub backend: u32,
    pub result: Result<(), String>,
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
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = probe(addr, &spec.check, spec.timeout);
                        if tx.send(Report { backend, result }).is_err() {
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
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("HTTP/2 200"), None);
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 20 OK"), None);
    }

    /// A one-shot HTTP server on loopback answering `answer`; returns its address and the
    /// request it received.
    fn server(answer: &'static str) -> (SocketAddr, JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, h)
    }

    #[test]
    fn http_head_with_host_and_expected_status() {
        let (addr, h) = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let check =
            Check::Http { get: false, path: "/healthz".into(), host: "web.example".into(), status: 200 };
        assert_eq!(probe(addr, &check, Duration::from_secs(5)), Ok(()));
        let req = h.join().unwrap();
        assert!(req.starts_with("HEAD /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nHost: web.example\r\n"), "{req}");
    }

    #[test]
    fn http_get_with_another_status_fails() {
        let (addr, h) = server("HTTP/1.1 503 Unavailable\r\n\r\n");
        let check = Check::Http { get: true, path: "/".into(), host: "h".into(), status: 200 };
        let e = probe(addr, &check, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("status 503"), "{e}");
        assert!(h.join().unwrap().starts_with("GET / HTTP/1.1\r\n"));
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
