//! The routing daemon's part of the control loop: each tick works out which VIPs this
//! appliance announces (`crate::announce`); a thread of its own writes them for BIRD and
//! reconfigures it when they change, retrying every second while BIRD cannot take them, so
//! the loop never waits on BIRD.

use crate::announce::{self, Heartbeat, Policy, Withdrawn};
use crate::bird;
use crate::config::{Config, RoutingSpec};
use log::{info, warn};
use sluice_dataplane::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often an update BIRD refused is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What BIRD was last told, and how that went.
#[derive(Debug, Default)]
struct Outcome {
    announced: Vec<IpAddr>,
    error: Option<String>,
    updates: u64,
    failures: u64,
}

pub(super) struct Announcer {
    heartbeat: Heartbeat,
    tx: Option<Sender<Vec<IpAddr>>>,
    sent: Option<Vec<IpAddr>>,
    standing: BTreeMap<IpAddr, Result<(), Withdrawn>>,
    outcome: Arc<Mutex<Outcome>>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Starts the thread that talks to the BIRD of `spec`.
    pub(super) fn start(spec: &RoutingSpec) -> Result<Announcer, String> {
        let (tx, rx) = mpsc::channel();
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let (spec2, out2) = (spec.clone(), Arc::clone(&outcome));
        let thread = thread::Builder::new()
            .name("sluice-announce".into())
            .spawn(move || run(&spec2, &rx, &out2))
            .map_err(|e| format!("announcer thread: {e}"))?;
        info!("routing: announcing VIPs through BIRD at {}", spec.socket.display());
        Ok(Announcer {
            heartbeat: Heartbeat::new(spec.heartbeat),
            tx: Some(tx),
            sent: None,
            standing: BTreeMap::new(),
            outcome,
            thread: Some(thread),
        })
    }

    /// One tick: the VIPs to announce now, given the snapshot and the workers' poll counts;
    /// sent on to BIRD if they changed.
    pub(super) fn step(&mut self, snap: &Snapshot, config: &Config, polls: &[u64]) {
        let alive = self.heartbeat.beat(polls, Instant::now());
        let policy = |name: &str| config.announce.get(name).copied().unwrap_or(Policy::Healthy);
        let standing = announce::standing(snap, policy, alive);
        if standing != self.standing {
            for (vip, s) in &standing {
                if self.standing.get(vip) != Some(s) {
                    match s {
                        Ok(()) => info!("routing: announcing {vip}"),
                        Err(why) => warn!("routing: withdrawing {vip}: {}", why.label()),
                    }
                }
            }
            self.standing = standing;
        }
        let wanted: Vec<IpAddr> = self.standing.iter().filter(|(_, s)| s.is_ok()).map(|(v, _)| *v).collect();
        if self.sent.as_ref() != Some(&wanted) {
            if let Some(tx) = &self.tx {
                let _ = tx.send(wanted.clone());
            }
            self.sent = Some(wanted);
        }
    }

    /// `sluicectl status`'s routing lines.
    pub(super) fn status(&self) -> String {
        let o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = format!(
            "routing: {} VIP(s) announced, {} update(s), {} failed{}\n",
            o.announced.len(),
            o.updates,
            o.failures,
            o.error.as_ref().map_or(String::new(), |e| format!("; last error: {e}"))
        );
        for (vip, s) in &self.standing {
            let said = match s {
                Ok(()) if o.announced.contains(vip) => "announced".to_string(),
                Ok(()) => "to announce".to_string(),
                Err(why) => format!("withdrawn ({})", why.label()),
            };
            out.push_str(&format!("  {vip} {said}\n"));
        }
        out
    }

    /// Withdraws every VIP and waits (a bounded while) for BIRD to have it: the first step of
    /// a clean stop.
    pub(super) fn withdraw_all(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Vec::new());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: takes the newest set, writes it for BIRD, reconfigures; until the control loop
/// hangs up (after which the last set still goes out once).
fn run(spec: &RoutingSpec, rx: &Receiver<Vec<IpAddr>>, outcome: &Mutex<Outcome>) {
    let mut pending: Option<Vec<IpAddr>> = None;
    loop {
        let next = if pending.is_some() {
            rx.recv_timeout(RETRY)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let closed = match next {
            Ok(v) => {
                pending = Some(rx.try_iter().last().unwrap_or(v));
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if let Some(vips) = pending.take() {
            if let Err(e) = update(spec, &vips, outcome) {
                warn!("routing: BIRD not updated: {e}");
                if !closed {
                    pending = Some(vips);
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Writes `vips` for BIRD and has it reconfigure.
fn update(spec: &RoutingSpec, vips: &[IpAddr], outcome: &Mutex<Outcome>) -> Result<(), String> {
    let result = bird::write_include(&spec.include, &announce::bird_include(vips.iter().copied()))
        .and_then(|()| bird::configure(&spec.socket));
    let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
    match &result {
        Ok(_) => {
            o.announced = vips.to_vec();
            o.updates += 1;
            o.error = None;
        }
        Err(e) => {
            o.failures += 1;
            o.error = Some(e.clone());
        }
    }
    result.map(|_| ())
}
