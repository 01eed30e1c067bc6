//! Health checks run by the host agents (`health: { by: agent }`), as Ananta's Host Agent runs
//! them: the appliance assigns each agent the backends on its host, the agent probes them
//! locally (a VPC backend from inside its tenant's network namespace) and reports, and the
//! appliance turns the reports into one result per backend per interval for the same rise/fall
//! counting as its own probes ([`super::State`]).
//!
//! The rule that combines them: every `interval` each agent-checked backend gets one result:
//! the last one its agent reported since the previous interval, or, if none came, a failure
//! "agent X: no report". So a backend is up while its agent keeps saying it is up; a
//! backend its agent calls down, or whose agent falls silent (dead, or its path cut), goes
//! down after `fall` intervals, and comes back after `rise` good reports.
//!
//! The tunnel-path probe: each time an agent's backends are due, the appliance also asks
//! worker 0 (through the [`ProbeQueue`]) to send a probe with a fresh nonce through the
//! tunnel of one of that agent's backends (each in turn), encapsulated as that backend's
//! traffic is; the agent takes it out of the tunnel and echoes the nonce in its next report.
//! So the rule becomes: a backend's result for an interval is its agent's report only if the
//! agent has echoed a nonce sent within the last [`ECHO_WINDOW`] intervals (the probe and the
//! echo's ride on the next report take up to two, and a tick's slack); otherwise it is a failure "agent X: tunnel
//! probe unanswered", counted by the same `fall` as a silent agent. A broken tunnel (or an
//! agent that no longer reads it) thus takes the host's backends out after `fall` intervals
//! even while its management path and its VMs are fine. An agent gets [`ECHO_WINDOW`]
//! intervals after its first probe before the rule applies to it.
//!
//! Messages ([`super::agent_wire`]) are sealed with the key in `agents.key` as session sync's
//! are; a refused message (forged, replayed, stale, malformed), one from an address that is
//! no agent's, and a result for a backend not assigned to its sender change nothing and are
//! counted ([`AgentCounters`]).

use super::agent_wire::{self as wire, Assign, Message};
use super::Report;
use crate::sync::{Header, Reject, ReplayGuard, SyncKey};
use sluice_dataplane::pipeline::{ProbeQueue, ProbeRequest};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The `agents` section: where the appliance listens for reports, the agents' port, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsSpec {
    pub listen: SocketAddr,
    /// The UDP port every agent takes assignments on (`sluice-agent --health-listen`).
    pub port: u16,
    pub key: SyncKey,
    /// Messages whose sender clock is further than this from ours are refused.
    pub window: Duration,
}

/// Intervals within which a probe's nonce must have been echoed (see the module docs): the
/// agent usually answers an assignment before the probe sent with it arrives, so its echo
/// rides on the report to the next assignment, read after that round's results; one more
/// interval is the slack for the control loop's tick.
pub const ECHO_WINDOW: u32 = 3;
/// Probes remembered per agent, awaiting their echo.
const SENT_KEPT: usize = 16;

/// A backend that an agent checks: its id (and its service's, for the tunnel-path probe),
/// its agent (the host's address), and how the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub id: u32,
    pub service: u16,
    pub agent: IpAddr,
    pub assign: Assign,
}

/// Refusals beyond [`Reject`]'s, in the order they follow it in [`AgentCounters::refused`].
pub const MORE_REFUSALS: [&str; 2] = ["unknown_agent", "unknown_backend"];

/// What the channel counts, for the metrics.
#[derive(Debug, Default)]
pub struct AgentCounters {
    pub assigns_sent: AtomicU64,
    pub send_errors: AtomicU64,
    /// Refused messages by [`Reject`] (in `Reject::ALL` order), then [`MORE_REFUSALS`] (a
    /// message from no agent's address; a result for a backend its sender does not check).
    pub refused: [AtomicU64; 10],
    /// Accepted report messages, by agent.
    pub reports: Mutex<BTreeMap<IpAddr, u64>>,
    /// Tunnel-path probes queued for worker 0 and echoes that matched one, by agent.
    pub tunnel: Mutex<BTreeMap<IpAddr, (u64, u64)>>,
    /// Probes not queued: the queue to worker 0 was full.
    pub probes_not_queued: AtomicU64,
}

impl AgentCounters {
    fn refuse(&self, i: usize) {
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// One agent-checked backend's round: when its next result is due, and the agent's last word.
struct Slot {
    target: AgentTarget,
    due: Instant,
    last: Option<Result<(), String>>,
}

/// One agent's tunnel-path probes: those sent (nonce, when), the newest echoed one's send
/// time, the first probe's, and which of its backends the next probe goes to.
struct Probes {
    sent: VecDeque<(u64, Instant)>,
    echoed: Option<Instant>,
    first: Instant,
    next: usize,
}

impl Probes {
    /// Whether the tunnel counts as working at `now` for checks every `interval`.
    fn answered(&self, now: Instant, interval: Duration) -> bool {
        let window = interval * ECHO_WINDOW;
        match self.echoed {
            Some(at) => now.saturating_duration_since(at) <= window,
            None => now.saturating_duration_since(self.first) < window,
        }
    }
}

/// The appliance's end of the channel: one non-blocking UDP socket, the targets' rounds.
pub struct Channel {
    spec: AgentsSpec,
    socket: UdpSocket,
    slots: Vec<Slot>,
    /// (agent, backend) to its slot.
    index: HashMap<(IpAddr, wire::Backend), usize>,
    guard: ReplayGuard,
    epoch: u64,
    sequence: u64,
    /// Tunnel-path probes by agent, and the keyed hash that makes their nonces.
    probes: HashMap<IpAddr, Probes>,
    nonces: (std::collections::hash_map::RandomState, u64),
    pub counters: Arc<AgentCounters>,
}

impl Channel {
    pub fn new(spec: &AgentsSpec, epoch: u64) -> std::io::Result<Channel> {
        let socket = UdpSocket::bind(spec.listen)?;
        socket.set_nonblocking(true)?;
        Ok(Channel {
            spec: spec.clone(),
            socket,
            slots: Vec::new(),
            index: HashMap::new(),
            guard: ReplayGuard::new(),
            epoch,
            sequence: 0,
            probes: HashMap::new(),
            nonces: (std::collections::hash_map::RandomState::new(), 0),
            counters: Arc::default(),
        })
    }

    /// Takes the running config's targets; a backend kept keeps its round, new ones are
    /// assigned at once and due an interval from now.
    pub fn set_targets(&mut self, targets: Vec<AgentTarget>, now: Instant) {
        let mut old: HashMap<u32, Slot> = self.slots.drain(..).map(|s| (s.target.id, s)).collect();
        for target in targets {
            let slot = match old.remove(&target.id) {
                Some(s) if s.target == target => s,
                _ => Slot { due: now + target.assign.interval, last: None, target },
            };
            self.slots.push(slot);
        }
        self.index = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.target.agent, s.target.assign.backend), i))
            .collect();
        let agents: Vec<IpAddr> = self.agents();
        self.probes.retain(|a, _| agents.contains(a));
        for a in agents {
            self.assign(a);
        }
    }

    fn agents(&self) -> Vec<IpAddr> {
        let mut agents: Vec<IpAddr> = self.slots.iter().map(|s| s.target.agent).collect();
        agents.sort();
        agents.dedup();
        agents
    }

    /// Reads every report waiting, then gives the results due by `now`, assigns again the
    /// agents whose backends were due and queues a tunnel-path probe toward each of them.
    pub fn step(&mut self, now: Instant, queue: &ProbeQueue) -> Vec<Report> {
        self.receive();
        let mut out = Vec::new();
        let mut again = Vec::new();
        for s in &mut self.slots {
            if now < s.due {
                continue;
            }
            let interval = s.target.assign.interval;
            s.due = now + interval;
            let agent = s.target.agent;
            let mut result = s.last.take().unwrap_or_else(|| Err("no report".to_string()));
            if result.is_ok() && self.probes.get(&agent).is_some_and(|p| !p.answered(now, interval)) {
                result = Err("tunnel probe unanswered".to_string());
            }
            let result = result.map_err(|e| format!("agent {agent}: {e}"));
            out.push(Report { backend: s.target.id, result, reporter: Some(agent) });
            again.push(agent);
        }
        again.sort();
        again.dedup();
        for a in again {
            self.assign(a);
            self.probe(a, now, queue);
        }
        out
    }

    /// Queues a probe with a fresh nonce toward the next of `agent`'s backends.
    fn probe(&mut self, agent: IpAddr, now: Instant, queue: &ProbeQueue) {
        let mine: Vec<&AgentTarget> =
            self.slots.iter().map(|s| &s.target).filter(|t| t.agent == agent).collect();
        let p = self.probes.entry(agent).or_insert_with(|| Probes {
            sent: VecDeque::new(),
            echoed: None,
            first: now,
            next: 0,
        });
        let Some(t) = mine.get(p.next % mine.len().max(1)) else { return };
        p.next = p.next.wrapping_add(1);
        self.nonces.1 += 1;
        let nonce = std::hash::BuildHasher::hash_one(&self.nonces.0, self.nonces.1);
        if queue.push(ProbeRequest { service: t.service, backend: t.id, nonce }).is_err() {
            self.counters.probes_not_queued.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if p.sent.len() == SENT_KEPT {
            p.sent.pop_front();
        }
        p.sent.push_back((nonce, now));
        self.counters.tunnel.lock().unwrap_or_else(PoisonError::into_inner).entry(agent).or_default().0 += 1;
    }

    /// Notes the nonces `agent` echoed: the newest probe among them that it was sent.
    fn echoed(&mut self, agent: IpAddr, nonces: &[u64]) {
        let Some(p) = self.probes.get_mut(&agent) else { return };
        let matched = p.sent.iter().filter(|(n, _)| nonces.contains(n)).map(|(_, at)| *at).max();
        if let Some(at) = matched {
            p.echoed = Some(p.echoed.map_or(at, |e| e.max(at)));
            let mut m = self.counters.tunnel.lock().unwrap_or_else(PoisonError::into_inner);
            m.entry(agent).or_default().1 += 1;
        }
    }

    /// Sends agent `agent` its backends (in messages of at most [`wire::MAX_ASSIGNS`]).
    fn assign(&mut self, agent: IpAddr) {
        let assigns: Vec<Assign> =
            self.slots.iter().filter(|s| s.target.agent == agent).map(|s| s.target.assign).collect();
        for chunk in assigns.chunks(wire::MAX_ASSIGNS) {
            let header = Header { epoch: self.epoch, sequence: self.sequence, unix_ms: wire::unix_ms() };
            self.sequence += 1;
            let msg = wire::encode_assign(&self.spec.key, &header, chunk);
            match self.socket.send_to(&msg, SocketAddr::new(agent, self.spec.port)) {
                Ok(_) => self.counters.assigns_sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    fn receive(&mut self) {
        let mut buf = [0u8; wire::MAX_MESSAGE + 1];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            self.take(&buf[..n], from.ip());
        }
    }

    /// One datagram from `from`: its results kept, or it is refused and counted.
    pub fn take(&mut self, bytes: &[u8], from: IpAddr) {
        let from = from.to_canonical();
        if !self.slots.iter().any(|s| s.target.agent == from) {
            return self.counters.refuse(Reject::ALL.len());
        }
        let window = u64::try_from(self.spec.window.as_millis()).unwrap_or(u64::MAX);
        let (results, echoes) =
            match wire::decode(&self.spec.key, bytes, wire::unix_ms(), window, &mut self.guard) {
                Ok((_, Message::Report(r, e))) => (r, e),
                Ok((_, Message::Assign(_))) => return self.counters.refuse(reject_index(Reject::BadRecord)),
                Err(r) => return self.counters.refuse(reject_index(r)),
            };
        *self.counters.reports.lock().unwrap_or_else(PoisonError::into_inner).entry(from).or_default() += 1;
        self.echoed(from, &echoes);
        for r in results {
            match self.index.get(&(from, r.backend)) {
                Some(&i) => self.slots[i].last = Some(r.result),
                None => self.counters.refuse(Reject::ALL.len() + 1),
            }
        }
    }
}

fn reject_index(r: Reject) -> usize {
    Reject::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: u8) -> AgentsSpec {
        AgentsSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            port: 1,
            key: SyncKey::new([key; 32]),
            window: Duration::from_secs(5),
        }
    }

    const AGENT: &str = "127.0.0.1";

    fn target(id: u32, vpc: u32) -> AgentTarget {
        let backend = wire::Backend { vpc: Some(vpc), addr: "192.0.2.10".parse().unwrap(), port: 8080 };
        let interval = Duration::from_millis(100);
        AgentTarget {
            id,
            service: 1,
            agent: AGENT.parse().unwrap(),
            assign: Assign { backend, interval, timeout: interval },
        }
    }

    fn queue() -> ProbeQueue {
        ProbeQueue::new(16)
    }

    fn report(key: u8, sequence: u64, vpc: u32, up: bool) -> Vec<u8> {
        echo(key, sequence, vpc, up, &[])
    }

    fn echo(key: u8, sequence: u64, vpc: u32, up: bool, nonces: &[u64]) -> Vec<u8> {
        let backend = wire::Backend { vpc: Some(vpc), addr: "192.0.2.10".parse().unwrap(), port: 8080 };
        let result = if up { Ok(()) } else { Err("connect: refused".to_string()) };
        let header = Header { epoch: 9, sequence, unix_ms: wire::unix_ms() };
        wire::encode_report(&SyncKey::new([key; 32]), &header, &[wire::Result { backend, result }], nonces)
    }

    fn refused(c: &Channel) -> Vec<u64> {
        c.counters.refused.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn each_interval_gives_the_last_report_or_a_silence_failure_per_vpc() {
        let mut c = Channel::new(&spec(1), 1).unwrap();
        let t0 = Instant::now();
        c.set_targets(vec![target(1, 100), target(2, 200)], t0);
        assert!(c.step(t0, &queue()).is_empty(), "nothing due before an interval");
        c.take(&report(1, 1, 100, false), AGENT.parse().unwrap());
        c.take(&report(1, 2, 200, true), AGENT.parse().unwrap());
        let got = c.step(t0 + Duration::from_millis(100), &queue());
        let results: Vec<_> = got.iter().map(|r| (r.backend, r.result.clone())).collect();
        assert_eq!(
            results,
            [(1, Err("agent 127.0.0.1: connect: refused".into())), (2, Ok(()))],
            "192.0.2.10 of VPC 100 and of VPC 200 are two backends"
        );
        let got = c.step(t0 + Duration::from_millis(200), &queue());
        assert!(got.iter().all(|r| r.result == Err("agent 127.0.0.1: no report".into())));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn forged_replayed_foreign_and_unknown_reports_change_nothing_and_are_counted() {
        let mut c = Channel::new(&spec(1), 1).unwrap();
        let t0 = Instant::now();
        c.set_targets(vec![target(1, 100)], t0);
        let agent: IpAddr = AGENT.parse().unwrap();
        let good = report(1, 1, 100, true);
        c.take(&good, agent);
        c.take(&report(2, 2, 100, true), agent);
        c.take(&good, agent);
        c.take(&report(1, 3, 100, true), "127.0.0.2".parse().unwrap());
        c.take(&report(1, 4, 300, true), agent);
        let mut want = vec![0u64; 10];
        want[Reject::ALL.iter().position(|r| *r == Reject::BadTag).unwrap()] = 1;
        want[Reject::ALL.iter().position(|r| *r == Reject::Replayed).unwrap()] = 1;
        want[Reject::ALL.len()] = 1;
        want[Reject::ALL.len() + 1] = 1;
        assert_eq!(refused(&c), want);
        assert_eq!(c.counters.reports.lock().unwrap().get(&agent), Some(&2));
        let got = c.step(t0 + Duration::from_millis(100), &queue());
        assert_eq!(got[0].result, Ok(()), "only the good report counted");
    }

    #[test]
    fn a_backend_is_up_only_while_its_agent_echoes_a_recent_tunnel_probe() {
        let mut c = Channel::new(&spec(1), 1).unwrap();
        let (q, agent): (ProbeQueue, IpAddr) = (queue(), AGENT.parse().unwrap());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        c.set_targets(vec![target(1, 100), target(2, 200)], t0);
        let mut seq = 0;
        let mut up_report = |c: &mut Channel, nonces: &[u64]| {
            seq += 1;
            c.take(&echo(1, seq, 100, true, nonces), agent);
            seq += 1;
            c.take(&echo(1, seq, 200, true, nonces), agent);
        };
        // Interval 1: reports up, the first probe goes (to backend 1, then 2 in turn).
        up_report(&mut c, &[]);
        assert!(c.step(ms(100), &q).iter().all(|r| r.result.is_ok()), "a new agent's grace");
        let first = q.pop().unwrap();
        assert_eq!((first.service, first.backend), (1, 1));
        assert!(q.is_empty(), "one probe per agent per interval");
        // The agent echoes it: up while the echo is recent.
        up_report(&mut c, &[first.nonce]);
        assert!(c.step(ms(200), &q).iter().all(|r| r.result.is_ok()));
        let second = q.pop().unwrap();
        assert_eq!(second.backend, 2, "each backend's tunnel in turn");
        assert_ne!(second.nonce, first.nonce);
        up_report(&mut c, &[first.nonce]);
        assert!(c.step(ms(300), &q).iter().all(|r| r.result.is_ok()));
        q.pop().unwrap();
        // The tunnel breaks: reports still say up, but only the old nonce comes back.
        up_report(&mut c, &[first.nonce]);
        assert!(c.step(ms(400), &q).iter().all(|r| r.result.is_ok()), "sent 300 ms ago: within the window");
        q.pop().unwrap();
        up_report(&mut c, &[first.nonce]);
        let got = c.step(ms(500), &q);
        assert_eq!(got.len(), 2);
        for r in &got {
            assert_eq!(r.result, Err("agent 127.0.0.1: tunnel probe unanswered".into()), "{r:?}");
        }
        // A forged or foreign nonce does not count.
        let fresh = q.pop().unwrap();
        up_report(&mut c, &[fresh.nonce ^ 1]);
        assert!(c.step(ms(600), &q).iter().all(|r| r.result.is_err()));
        // Repaired: the newest probe's echo makes the reports count again.
        let newest = q.pop().unwrap();
        up_report(&mut c, &[newest.nonce]);
        assert!(c.step(ms(700), &q).iter().all(|r| r.result.is_ok()));
        let counts = *c.counters.tunnel.lock().unwrap().get(&agent).unwrap();
        assert_eq!(counts, (7, 10), "7 probes queued; 10 report messages (5 rounds of 2) echoed one of them");
        // A full queue: the probe is counted as not queued, not remembered.
        let full = ProbeQueue::new(1);
        full.push(first).unwrap();
        c.step(ms(800), &full);
        assert_eq!(c.counters.probes_not_queued.load(Ordering::Relaxed), 1);
    }
}
