//! The routing daemon's part of the control loop: each tick works out which VIPs this
//! appliance announces (`crate::announce`); a thread of its own writes them for BIRD and
//! reconfigures it when they change (retrying every second while BIRD cannot take them), and
//! reads BIRD's BGP sessions every few seconds, so the loop never waits on BIRD.

use crate::announce::{self, locked, Heartbeat, Policy, RoutingState};
use crate::config::{Config, RoutingSpec};
use crate::{bird, bird_config};
use log::{info, warn};
use sluice_dataplane::snapshot::Snapshot;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often an update BIRD refused is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often BIRD's BGP sessions are read.
const POLL: Duration = Duration::from_secs(2);

pub(super) struct Announcer {
    heartbeat: Heartbeat,
    tx: Option<Sender<Vec<IpAddr>>>,
    sent: Option<Vec<IpAddr>>,
    state: Arc<RoutingState>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Starts the thread that talks to the BIRD of `spec`.
    /// With `bgp`, BIRD's configuration is written first, with nothing to announce yet.
    pub(super) fn start(spec: &RoutingSpec) -> Result<Announcer, String> {
        if let Some((path, bgp)) = &spec.bgp {
            bird::write_whole(&spec.include, "")?;
            bird::write_whole(&bird::ipv6_include(&spec.include), "")?;
            bird::write_whole(path, &bird_config::render(bgp, &spec.include))?;
            info!("routing: BIRD's configuration written to {}", path.display());
        }
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(RoutingState::default());
        let (spec2, state2) = (spec.clone(), Arc::clone(&state));
        let thread = thread::Builder::new()
            .name("sluice-announce".into())
            .spawn(move || run(&spec2, &rx, &state2))
            .map_err(|e| format!("announcer thread: {e}"))?;
        info!("routing: announcing VIPs through BIRD at {}", spec.socket.display());
        Ok(Announcer {
            heartbeat: Heartbeat::new(spec.heartbeat),
            tx: Some(tx),
            sent: None,
            state,
            thread: Some(thread),
        })
    }

    /// What the metrics endpoint reads.
    pub(super) fn state(&self) -> Arc<RoutingState> {
        Arc::clone(&self.state)
    }

    /// One tick: the VIPs to announce now, given the snapshot, the workers' poll counts and
    /// whether the peers' sessions are here; sent on to BIRD if they changed.
    pub(super) fn step(&mut self, snap: &Snapshot, config: &Config, polls: &[u64], joined: bool) {
        let alive = self.heartbeat.beat(polls, Instant::now());
        let policy = |name: &str| config.announce.get(name).copied().unwrap_or(Policy::Healthy);
        let standing = announce::standing(snap, policy, (alive, joined));
        {
            let mut old = locked(&self.state.standing);
            if *old != standing {
                for (vip, s) in &standing {
                    match (old.get(vip), s) {
                        (Some(was), now) if was == now => {}
                        (_, Ok(())) => info!("routing: announcing {vip}"),
                        (Some(Ok(())), Err(why)) => warn!("routing: withdrawing {vip}: {}", why.label()),
                        (_, Err(why)) => info!("routing: not announcing {vip}: {}", why.label()),
                    }
                }
                *old = standing.clone();
            }
        }
        let wanted: Vec<IpAddr> = standing.iter().filter(|(_, s)| s.is_ok()).map(|(v, _)| *v).collect();
        if self.sent.as_ref() != Some(&wanted) {
            if let Some(tx) = &self.tx {
                let _ = tx.send(wanted.clone());
            }
            self.sent = Some(wanted);
        }
    }

    /// `sluicectl status`'s routing lines.
    pub(super) fn status(&self) -> String {
        let s = &self.state;
        let announced = locked(&s.announced).clone();
        let mut out = format!(
            "routing: {} VIP(s) announced, {} update(s), {} failed{}\n",
            announced.len(),
            s.updates.load(Relaxed),
            s.failures.load(Relaxed),
            locked(&s.last_error).as_ref().map_or(String::new(), |e| format!("; last error: {e}"))
        );
        for (name, up) in locked(&s.bgp).iter() {
            out.push_str(&format!("  bgp {name} {}\n", if *up { "established" } else { "down" }));
        }
        for (vip, st) in locked(&s.standing).iter() {
            let said = match st {
                Ok(()) if announced.contains(vip) => "announced".to_string(),
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

/// The thread: takes the newest set, writes it for BIRD, reconfigures; reads BIRD's sessions
/// between; until the control loop hangs up (after which the last set still goes out once).
fn run(spec: &RoutingSpec, rx: &Receiver<Vec<IpAddr>>, state: &RoutingState) {
    let mut pending: Option<Vec<IpAddr>> = None;
    let mut next_poll = Instant::now();
    loop {
        let wait =
            if pending.is_some() { RETRY } else { next_poll.saturating_duration_since(Instant::now()) };
        let closed = match rx.recv_timeout(wait) {
            Ok(v) => {
                pending = Some(rx.try_iter().last().unwrap_or(v));
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if let Some(vips) = pending.take() {
            if let Err(e) = update(spec, &vips, state) {
                warn!("routing: BIRD not updated: {e}");
                if !closed {
                    pending = Some(vips);
                }
            }
        }
        if closed {
            return;
        }
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + POLL;
            match bird::bgp_sessions(&spec.socket) {
                Ok(s) => *locked(&state.bgp) = s,
                Err(_) => locked(&state.bgp).clear(),
            }
        }
    }
}

/// Writes `vips` for BIRD and has it reconfigure.
fn update(spec: &RoutingSpec, vips: &[IpAddr], state: &RoutingState) -> Result<(), String> {
    let v6 = bird::ipv6_include(&spec.include);
    let result = bird::write_whole(&spec.include, &announce::bird_include(vips.iter().copied(), false))
        .and_then(|()| bird::write_whole(&v6, &announce::bird_include(vips.iter().copied(), true)))
        .and_then(|()| bird::configure(&spec.socket));
    match &result {
        Ok(_) => {
            *locked(&state.announced) = vips.to_vec();
            state.updates.fetch_add(1, Relaxed);
            *locked(&state.last_error) = None;
        }
        Err(e) => {
            state.failures.fetch_add(1, Relaxed);
            *locked(&state.last_error) = Some(e.clone());
        }
    }
    result.map(|_| ())
}
