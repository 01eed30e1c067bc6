//! systemd's readiness protocol as sluiced speaks it: a Unix datagram socket stands for
//! systemd's `NOTIFY_SOCKET`. `READY=1` reaches it only once every worker has said it
//! forwards; a worker that ends before saying so means no `READY=1` at all; `STOPPING=1` on a
//! stop; nothing, and no error, without `NOTIFY_SOCKET`.
//!
//! One test in this file: it sets `NOTIFY_SOCKET`, which the process's other threads would see.

#![cfg(feature = "dpdk")] // sd_notify is the runtime's, which needs the `dpdk` feature.

use sluice_control::notify::{self, Startup};
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::thread;

/// The socket systemd would listen on, its path in `NOTIFY_SOCKET`.
struct Systemd {
    path: PathBuf,
    socket: UnixDatagram,
}

impl Systemd {
    fn listen() -> Systemd {
        let path = std::env::temp_dir().join(format!("sluice-notify-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        Systemd { path, socket }
    }

    /// The next message sent, or `None` if none is waiting (each is sent before the call that
    /// sends it returns, so none is still on its way).
    fn message(&self) -> Option<String> {
        let mut buf = [0u8; 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts `workers` threads standing for workers, of which the first `forwarding` say they
/// forward and the others end without a word, as a worker that fails to start does.
fn workers(workers: usize, forwarding: usize) -> Startup {
    let (startup, up) = Startup::new(workers);
    for w in 0..workers {
        let up = up.clone();
        thread::spawn(move || {
            if w < forwarding {
                up.send(()).unwrap();
            }
        });
    }
    startup
}

#[test]
fn ready_only_once_every_worker_forwards() {
    let systemd = Systemd::listen();

    // Two of three workers forward, one ends: never ready.
    let err = workers(3, 2).ready_when_up("forwarding: 3 worker(s)").unwrap_err();
    assert_eq!(err, "1 of 3 workers ended before they forwarded");
    assert_eq!(systemd.message(), None);

    // All forward: ready, once.
    workers(3, 3).ready_when_up("forwarding: 3 worker(s)").unwrap();
    assert_eq!(systemd.message().as_deref(), Some("READY=1\nSTATUS=forwarding: 3 worker(s)\n"));
    assert_eq!(systemd.message(), None);

    notify::stopping();
    assert_eq!(systemd.message().as_deref(), Some("STOPPING=1\n"));

    // Not under systemd: nothing is sent, and that is no error.
    std::env::remove_var("NOTIFY_SOCKET");
    workers(1, 1).ready_when_up("forwarding: 1 worker(s)").unwrap();
    notify::stopping();
    assert_eq!(systemd.message(), None);
}
