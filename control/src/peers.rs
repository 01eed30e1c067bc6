//! Session sync between appliances (TGW's cluster sync): what to send and when, and installing
//! what peers send. The message format is `crate::sync`; this is the control thread's part.
//!
//! **Sending.** The sweep walks the session table a slice at a time, a full pass a second. A
//! flow session made here (not one a peer sent) is sent to every peer at the first pass after
//! it has been up `after` (5 s): connections shorter than that cost nothing and are not
//! protected. It is sent again every `refresh`, before a peer's copy could expire (a copy ages
//! from the origin's last-seen time, as the original). A connection that is over (FINs both
//! ways, or a RST) goes as a delete at the first pass that sees it so, once (the session's
//! `end_synced` mark), and is never sent again; any other session goes as a delete when the
//! sweep expires it. Whether a session is due is a function of its age at this pass and at the
//! previous one ([`due`]), so nothing else is kept per session. Sessions that came from a peer
//! are not sent on (no echoes); a session's second failover is not protected.
//!
//! **Receiving.** Only from configured peers, only messages whose tag verifies under the shared
//! key, within the time window and not replayed (`sync::decode`). Services and backends are
//! named by address, so each appliance may number its own. A record is installed with the
//! `SYNCED` flag and the origin's idle time and age; it never replaces a session made here, and
//! replaces a synced copy only with one the origin saw more recently. Workers see installed
//! sessions at their next lookup; nothing stops them.

use crate::sync::{self, Op, Record, Reject, ReplayGuard, SyncKey};
use log::warn;
use sluice_dataplane::flow::Addr;
use sluice_dataplane::session::{
    self, flags, idle, Insert, KeyKind, Session, SessionKey, SessionTable, TcpState, TICK_SHIFT,
};
use sluice_dataplane::snapshot::{Service, Snapshot};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The `sync` section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSpec {
    /// UDP address to receive on (the appliance's management path).
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    /// The shared key (64 hex digits in the config or a file).
    pub key: SyncKey,
    /// A session is sent once it has been up this long.
    pub after: Duration,
    /// And again this often while it lives.
    pub refresh: Duration,
    /// Messages whose sender clock is further than this from ours are refused.
    pub window: Duration,
}

/// Milliseconds per session tick.
const TICK_MS: f64 = (1u64 << TICK_SHIFT) as f64 / 1e6;

fn ms_to_ticks(ms: u32) -> u32 {
    (f64::from(ms) / TICK_MS) as u32
}

fn ticks_to_ms(t: u32) -> u32 {
    (f64::from(t) * TICK_MS).min(f64::from(u32::MAX)) as u32
}

/// Whether a session `age` ticks old now, `prev` ticks old at the previous pass, is due: it
/// reached `after` since, or another `refresh` went by.
pub fn due(prev: u32, age: u32, after: u32, refresh: u32) -> bool {
    if age < after {
        return false;
    }
    if prev < after {
        return true;
    }
    let refresh = refresh.max(1);
    (age - after) / refresh != (prev - after) / refresh
}

/// Services by stable id, for records about sessions of this snapshot.
pub struct ServiceIndex<'a> {
    by_id: HashMap<u16, &'a Service>,
    by_vip: HashMap<(Addr, u16, u8), &'a Service>,
}

impl<'a> ServiceIndex<'a> {
    pub fn new(snap: &'a Snapshot) -> ServiceIndex<'a> {
        ServiceIndex {
            by_id: snap.services.iter().map(|s| (s.id, s)).collect(),
            by_vip: snap
                .services
                .iter()
                .map(|s| ((Addr::from(s.vip), s.port, s.protocol.number()), s))
                .collect(),
        }
    }
}

/// The record a peer needs for a session of ours (`None`: not a flow, or its service or
/// backend is gone).
pub fn record_of(ix: &ServiceIndex<'_>, key: &SessionKey, s: &Session, now: u32, op: Op) -> Option<Record> {
    if key.kind != KeyKind::Flow {
        return None;
    }
    let svc = ix.by_id.get(&u16::try_from(key.ident).ok()?)?;
    let b = svc.backends.get(usize::from(svc.backend_by_id(s.backend)?))?;
    Some(Record {
        op,
        vip: Addr::from(svc.vip),
        vport: svc.port,
        protocol: svc.protocol.number(),
        client: key.addr,
        client_port: key.port,
        backend: Addr::from(b.address),
        backend_port: b.port,
        state: s.state as u8,
        flags: s.flags,
        client_window: s.client_window,
        seq_delta: s.seq_delta,
        ts_delta: s.ts_delta,
        client_isn: s.client_isn,
        timeout_ticks: s.timeout,
        idle_ms: ticks_to_ms(idle(now, s.last_seen)),
        age_ms: ticks_to_ms(idle(now, s.created)),
    })
}

/// What became of a received record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Installed,
    Updated,
    /// A session made here has the key: it stays.
    KeptLocal,
    /// The copy here is as recent or more.
    Unchanged,
    Removed,
    /// No such service or backend here (configs differ).
    Unknown,
    Full,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Installed,
        Outcome::Updated,
        Outcome::KeptLocal,
        Outcome::Unchanged,
        Outcome::Removed,
        Outcome::Unknown,
        Outcome::Full,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Updated => "updated",
            Outcome::KeptLocal => "kept_local",
            Outcome::Unchanged => "unchanged",
            Outcome::Removed => "removed",
            Outcome::Unknown => "unknown",
            Outcome::Full => "full",
        }
    }
}

/// Installs (or removes) one received record at tick `now`.
pub fn install(table: &SessionTable, ix: &ServiceIndex<'_>, r: &Record, now: u32) -> Outcome {
    let Some(svc) = ix.by_vip.get(&(r.vip, r.vport, r.protocol)) else { return Outcome::Unknown };
    let key = SessionKey::flow(r.client, r.client_port, svc.id);
    let hash = table.hash(&key);
    if r.op == Op::Delete {
        return match table.lookup(&key, hash) {
            Some((_, s)) if s.flags & flags::SYNCED == 0 => Outcome::KeptLocal,
            Some((slot, _)) if table.remove(slot, &key) => Outcome::Removed,
            _ => Outcome::Unchanged,
        };
    }
    let Some(b) =
        svc.backends.iter().find(|b| Addr::from(b.address) == r.backend && b.port == r.backend_port)
    else {
        return Outcome::Unknown;
    };
    let s = Session {
        backend: b.id,
        state: TcpState::from_u8(r.state),
        flags: r.flags | flags::SYNCED,
        created: now.wrapping_sub(ms_to_ticks(r.age_ms)),
        last_seen: now.wrapping_sub(ms_to_ticks(r.idle_ms)),
        seq_delta: r.seq_delta,
        ts_delta: r.ts_delta,
        timeout: r.timeout_ticks,
        client_isn: r.client_isn,
        client_window: r.client_window,
        end_synced: false,
    };
    match table.insert(&key, hash, &s) {
        Insert::Inserted(_) => Outcome::Installed,
        Insert::Full => Outcome::Full,
        Insert::Exists(_, cur) if cur.flags & flags::SYNCED == 0 => Outcome::KeptLocal,
        Insert::Exists(slot, cur) => {
            // A newer copy from the origin: later last-seen, or a state change.
            let newer = session::idle(s.last_seen, cur.last_seen) > 0 || cur.state != s.state;
            if newer && table.replace(slot, &key, |_| Some(s)).is_some() {
                Outcome::Updated
            } else {
                Outcome::Unchanged
            }
        }
    }
}

/// Why a delete record went to the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The connection ended (FINs both ways, or a RST).
    Ended = 0,
    /// The sweep expired the session.
    Expired = 1,
}

impl DeleteReason {
    pub const ALL: [DeleteReason; 2] = [DeleteReason::Ended, DeleteReason::Expired];

    pub fn label(self) -> &'static str {
        match self {
            DeleteReason::Ended => "ended",
            DeleteReason::Expired => "expired",
        }
    }
}

/// Sync's counters, for metrics and `sluicectl`.
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub messages_sent: AtomicU64,
    pub records_sent: AtomicU64,
    /// Of those, deletes by `DeleteReason` (counted once per peer, as `records_sent`).
    pub deletes_sent: [AtomicU64; 2],
    pub bytes_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub messages_received: AtomicU64,
    pub records_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Refused messages by `Reject` (in `Reject::ALL` order), then from a non-peer.
    pub rejected: [AtomicU64; 9],
    /// Received records by `Outcome` (in `Outcome::ALL` order).
    pub outcomes: [AtomicU64; 7],
    /// Milliseconds between the sender's clock in the last accepted message and ours.
    pub lag_ms: AtomicU64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full (its
    /// `SO_RXQ_OVFL` count, cumulative since the socket was made; the kernel stamps it on the
    /// datagrams queued after the drops, so it is known at the next one).
    pub kernel_drops: AtomicU64,
    /// The receive buffer the kernel granted, in bytes.
    pub receive_buffer: AtomicU64,
}

/// What the kernel charges a full sync datagram against the receive buffer (its skb's
/// truesize: the 1472-byte payload in a 2 KiB buffer plus the skb itself), rounded up.
const DATAGRAM_TRUESIZE: usize = 2560;
/// The receive buffer's floor (about 1600 full messages) and ceiling.
const MIN_RECEIVE_BUFFER: usize = 4 << 20;
const MAX_RECEIVE_BUFFER: usize = 256 << 20;

/// The receive buffer that holds a full refresh's worst burst: every peer sending, between
/// two of our reads (one sweep slice apart), one slice of a table of `capacity` sessions.
pub fn receive_buffer_bytes(capacity: usize, peers: usize, slices: usize) -> usize {
    let records = capacity.div_ceil(slices.max(1)).saturating_mul(peers);
    let messages = records.div_ceil(sync::MAX_RECORDS);
    messages.saturating_mul(DATAGRAM_TRUESIZE).clamp(MIN_RECEIVE_BUFFER, MAX_RECEIVE_BUFFER)
}

/// Asks for `bytes` of receive buffer (past `rmem_max` when privileged) and for the kernel's
/// drop count on every datagram; returns the size granted.
fn tune_socket(socket: &UdpSocket, bytes: usize) -> std::io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let want = bytes.min(i32::MAX as usize / 2);
    if setsockopt(socket, sockopt::RcvBufForce, &want).is_err() {
        setsockopt(socket, sockopt::RcvBuf, &want)?;
    }
    setsockopt(socket, sockopt::RxqOvfl, &1)?;
    Ok(getsockopt(socket, sockopt::RcvBuf)?)
}

/// One datagram and, when the kernel attached it, its drop count so far; `cmsg` is room for
/// that count (`nix::cmsg_space!(u32)`, made once per drain of the socket).
fn receive_one(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())?;
    let from = msg.address.as_ref().and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port()))))
    });
    let from = from.ok_or_else(|| std::io::Error::other("a datagram without a source address"))?;
    let drops = msg.cmsgs().ok().and_then(|mut it| {
        it.find_map(|c| match c {
            ControlMessageOwned::RxqOvfl(n) => Some(n),
            _ => None,
        })
    });
    Ok((msg.bytes, from, drops))
}

/// The control thread's sync: a UDP socket, the sender's numbering, the receiver's replay
/// guard, the records of the pass under way.
pub struct Syncer {
    spec: SyncSpec,
    key: SyncKey,
    socket: UdpSocket,
    epoch: u64,
    sequence: u64,
    guard: ReplayGuard,
    /// `spec.after` and `spec.refresh` in session ticks.
    after: u32,
    refresh: u32,
    pending: Vec<Record>,
    /// Per sweep slice, the tick of its previous visit.
    visited: Vec<u32>,
    /// A peer asked for everything (`Resync`): slices of the full pass still to walk, every
    /// session counting as due (those synced to us too, so that a connection survives a
    /// second failover); `ResyncDone` goes out when it is over.
    full_pass: Option<usize>,
    /// Since start: the peers whose full copy is awaited, and until when (see [`Syncer::joined`]).
    joining: Option<(std::time::Instant, Vec<std::net::IpAddr>)>,
    pub counters: std::sync::Arc<SyncCounters>,
}

/// The longest a (re)started appliance waits for its peers' full copies before it announces
/// anyway (a peer sends one in a sweep pass, a second).
pub const JOIN_WAIT: Duration = Duration::from_secs(3);

impl Syncer {
    /// A syncer for a session table of `capacity`, swept in `slices` per pass.
    pub fn new(spec: &SyncSpec, epoch: u64, slices: usize, capacity: usize) -> std::io::Result<Syncer> {
        let socket = UdpSocket::bind(spec.listen)?;
        socket.set_nonblocking(true)?;
        let granted = tune_socket(&socket, receive_buffer_bytes(capacity, spec.peers.len(), slices))?;
        let counters = SyncCounters::default();
        counters.receive_buffer.store(granted as u64, Relaxed);
        Ok(Syncer {
            key: spec.key.clone(),
            spec: spec.clone(),
            socket,
            epoch,
            sequence: 1,
            guard: ReplayGuard::new(),
            after: session::ticks(spec.after.as_secs() as u32),
            refresh: session::ticks(spec.refresh.as_secs() as u32),
            pending: vec![Record::control(Op::Resync)],
            visited: vec![0; slices],
            full_pass: None,
            joining: Some((
                std::time::Instant::now() + JOIN_WAIT,
                spec.peers.iter().map(|p| p.ip()).collect(),
            )),
            counters: std::sync::Arc::new(counters),
        })
    }

    /// Whether this appliance has its peers' sessions (each peer's full copy has arrived) or
    /// has waited [`JOIN_WAIT`] for them: until then it should not attract flows.
    pub fn joined(&mut self, now: std::time::Instant) -> bool {
        let Some((until, waiting)) = &self.joining else { return true };
        if waiting.is_empty() {
            log::info!("sync: joined: every peer's sessions are here");
        } else if now >= *until {
            let names: Vec<String> = waiting.iter().map(|a| a.to_string()).collect();
            warn!("sync: joined after {JOIN_WAIT:?} without the full copy of {}", names.join(", "));
        } else {
            return false;
        }
        self.joining = None;
        true
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A live session of `table` seen by the sweep in slice `slice` at tick `now`.
    pub fn live(
        &mut self,
        table: &SessionTable,
        ix: &ServiceIndex<'_>,
        slice: usize,
        key: &SessionKey,
        s: &Session,
        now: u32,
    ) {
        if s.state == TcpState::Connecting || key.kind != KeyKind::Flow {
            return;
        }
        if s.state.has_ended() {
            // Over: never sent again, not even to a rejoining peer.
            self.ended(table, ix, key, s, now);
            return;
        }
        if self.full_pass.is_some() {
            self.pending.extend(record_of(ix, key, s, now, Op::Upsert));
            return;
        }
        if s.flags & flags::SYNCED != 0 {
            return;
        }
        let since = idle(now, self.visited.get(slice).copied().unwrap_or(now));
        let age = idle(now, s.created);
        if due(age.saturating_sub(since), age, self.after, self.refresh) {
            if let Some(r) = record_of(ix, key, s, now, Op::Upsert) {
                self.pending.push(r);
            }
        }
    }

    /// A connection of ours that is over (FINs both ways, or a RST) and old enough that peers
    /// may hold it: they are told now, at the first pass that sees it so, rather than when the
    /// sweep expires it a closing timeout later (the session stays here until then, for late
    /// ACKs and retransmissions). Once: the table's `end_synced` mark says it went, set before
    /// the record is sent; a writer racing the mark makes it fail, and the next pass tries
    /// again. (A worker's touch is no writer: one during the mark can be lost, a last-seen a
    /// moment older or `Closed` read as `Finished`, harmless to a connection that is over; or
    /// can lose the mark, and the delete goes again.) A lost datagram is not sent again: the
    /// peer's copy then expires by its own timeout, as before.
    fn ended(
        &mut self,
        table: &SessionTable,
        ix: &ServiceIndex<'_>,
        key: &SessionKey,
        s: &Session,
        now: u32,
    ) {
        if s.flags & flags::SYNCED != 0 || s.end_synced || idle(now, s.created) < self.after {
            return;
        }
        let Some((slot, _)) = table.lookup(key, table.hash(key)) else { return };
        let mark = |cur: &Session| {
            // The same connection (not a new one on its 4-tuple), still unmarked.
            (cur.created == s.created && cur.state.has_ended() && !cur.end_synced)
                .then_some(Session { end_synced: true, ..*cur })
        };
        if table.replace(slot, key, mark).is_some() {
            self.delete(ix, key, s, now, DeleteReason::Ended);
        }
    }

    /// A session the sweep expired: peers holding it are told (unless they were at its end).
    pub fn expired(&mut self, ix: &ServiceIndex<'_>, key: &SessionKey, s: &Session, now: u32) {
        if s.flags & flags::SYNCED == 0 && !s.end_synced && idle(now, s.created) >= self.after {
            self.delete(ix, key, s, now, DeleteReason::Expired);
        }
    }

    fn delete(&mut self, ix: &ServiceIndex<'_>, key: &SessionKey, s: &Session, now: u32, why: DeleteReason) {
        if let Some(r) = record_of(ix, key, s, now, Op::Delete) {
            self.pending.push(r);
            self.counters.deletes_sent[why as usize].fetch_add(self.spec.peers.len() as u64, Relaxed);
        }
    }

    /// The end of a slice's visit: remembers its tick and sends what is pending.
    pub fn slice_done(&mut self, slice: usize, now: u32, unix_ms: u64) {
        if let Some(v) = self.visited.get_mut(slice) {
            *v = now;
        }
        if let Some(left) = self.full_pass.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.full_pass = None;
                self.pending.push(Record::control(Op::ResyncDone));
            }
        }
        self.flush(unix_ms);
    }

    /// Sends the pending records to every peer, in messages that fit the MTU.
    pub fn flush(&mut self, unix_ms: u64) {
        if self.pending.is_empty() {
            return;
        }
        let c = &self.counters;
        let messages =
            sync::encode_batches(&self.key, self.epoch, &mut self.sequence, unix_ms, &self.pending);
        for m in &messages {
            for peer in &self.spec.peers {
                match self.socket.send_to(m, peer) {
                    Ok(n) => {
                        c.messages_sent.fetch_add(1, Relaxed);
                        c.bytes_sent.fetch_add(n as u64, Relaxed);
                    }
                    Err(_) => {
                        c.send_errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        c.records_sent.fetch_add((self.pending.len() * self.spec.peers.len()) as u64, Relaxed);
        self.pending.clear();
    }

    /// Takes every message waiting on the socket and installs what they carry.
    pub fn receive(&mut self, table: &SessionTable, ix: &ServiceIndex<'_>, now: u32, unix_ms: u64) {
        let mut buf = [0u8; 2048];
        let mut cmsg = nix::cmsg_space!(u32);
        let c = std::sync::Arc::clone(&self.counters);
        loop {
            let (n, from) = match receive_one(&self.socket, &mut buf, &mut cmsg) {
                Ok((n, from, drops)) => {
                    if let Some(d) = drops {
                        c.kernel_drops.fetch_max(u64::from(d), Relaxed);
                    }
                    (n, from)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("sync: receive: {e}");
                    return;
                }
            };
            if !self.spec.peers.iter().any(|p| p.ip() == from.ip()) {
                c.rejected[Reject::ALL.len()].fetch_add(1, Relaxed);
                continue;
            }
            let window = self.spec.window.as_millis() as u64;
            match sync::decode(&self.key, &buf[..n], unix_ms, window, &mut self.guard) {
                Ok((header, records)) => {
                    c.messages_received.fetch_add(1, Relaxed);
                    c.bytes_received.fetch_add(n as u64, Relaxed);
                    c.records_received.fetch_add(records.len() as u64, Relaxed);
                    c.lag_ms.store(unix_ms.saturating_sub(header.unix_ms), Relaxed);
                    for r in &records {
                        match r.op {
                            Op::Resync => {
                                // A whole pass from the next slice on (one already under way
                                // is extended to a whole one).
                                self.full_pass = Some(self.visited.len() + 1);
                                continue;
                            }
                            Op::ResyncDone => {
                                if let Some((_, waiting)) = self.joining.as_mut() {
                                    waiting.retain(|a| *a != from.ip());
                                }
                                continue;
                            }
                            Op::Upsert | Op::Delete => {}
                        }
                        let o = install(table, ix, r, now);
                        if let Some(i) = Outcome::ALL.iter().position(|x| *x == o) {
                            c.outcomes[i].fetch_add(1, Relaxed);
                        }
                    }
                }
                Err(why) => {
                    if let Some(i) = Reject::ALL.iter().position(|x| *x == why) {
                        c.rejected[i].fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// Wall-clock milliseconds (the messages' timestamps).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::session::Timeouts;
    use sluice_dataplane::snapshot::{
        BackendSpec, Forwarding, PortSpec, Protocol, ServiceSpec, SnapshotSpec, Tunnel,
    };
    use std::net::Ipv4Addr;

    #[test]
    fn a_session_is_due_once_after_five_seconds_then_every_refresh() {
        let (after, refresh) = (75, 450); // ticks: ~5 s and ~30 s
                                          // Visited every 15 ticks (a pass a second).
        let sent: Vec<u32> = (0..2000u32)
            .step_by(15)
            .filter(|&age| due(age.saturating_sub(15), age, after, refresh))
            .collect();
        assert_eq!(sent.first(), Some(&75));
        assert!(sent.windows(2).all(|w| w[1] - w[0] == 450), "{sent:?}");
        assert_eq!(sent.len(), 5);
        assert!(!due(10, 74, after, refresh), "younger than after: never");
        assert!(due(0, 500, after, refresh), "first seen old: sent");
    }

    /// Two appliances' snapshots of the same pipeline with services and backends numbered
    /// differently (as independently configured peers may).
    fn snapshot(first_id: u16) -> Snapshot {
        let port = |name: &str, a: [u8; 4]| PortSpec {
            name: name.into(),
            mac: [2, 0, 0, 0, 0, a[3]],
            addresses: vec![sluice_dataplane::flow::Prefix::new(a, 24)],
            mtu: 1500,
            vlan: None,
            gateways: vec![],
            neighbors: vec![],
            kernel: None,
        };
        let mut nat = ServiceSpec::dsr(
            "tenant",
            [198, 18, 10, 2].into(),
            80,
            Protocol::Tcp,
            vec![
                BackendSpec {
                    id: Some(u32::from(first_id) + 10),
                    ..BackendSpec::nat([192, 0, 2, 10].into(), 8080, [198, 19, 0, 11].into(), 1)
                },
                BackendSpec {
                    id: Some(u32::from(first_id) + 11),
                    ..BackendSpec::nat([192, 0, 2, 11].into(), 8080, [198, 19, 0, 12].into(), 1)
                },
            ],
        );
        nat.forwarding = Forwarding::Nat;
        nat.tunnel = Tunnel::Gre { key: Some(100) };
        nat.id = Some(first_id);
        let spec = SnapshotSpec {
            generation: 1,
            ports: vec![port("ext", [198, 18, 0, 1]), port("int", [198, 19, 0, 1])],
            tunnel_sources: vec![],
            clusters: vec![],
            services: vec![nat],
        };
        Snapshot::build(&spec, None).unwrap()
    }

    #[test]
    fn a_record_installs_on_a_peer_that_numbers_things_otherwise() {
        let (a, b) = (snapshot(3), snapshot(7));
        let (ia, ib) = (ServiceIndex::new(&a), ServiceIndex::new(&b));
        let (ta, tb) = (
            SessionTable::new(1000, Timeouts::default(), 1),
            SessionTable::new(1000, Timeouts::default(), 2),
        );
        let client = Addr::v4(Ipv4Addr::new(198, 18, 1, 10));
        let key = SessionKey::flow(client, 40000, 3);
        let s = Session {
            flags: flags::PROXIED | flags::CLIENT_TS,
            seq_delta: 0x1234_5678,
            ts_delta: 99,
            client_isn: 7,
            client_window: 64240,
            ..Session::new(14, TcpState::Established, 100)
        };
        assert!(matches!(ta.insert(&key, ta.hash(&key), &s), Insert::Inserted(_)));
        // At A's tick 400 (idle 300 ticks ~ 20 s, age the same), B's clock at tick 5000.
        let r = record_of(&ia, &key, &s, 400, Op::Upsert).unwrap();
        assert_eq!((r.backend, r.backend_port), (Addr::v4(Ipv4Addr::new(192, 0, 2, 11)), 8080));
        assert_eq!(install(&tb, &ib, &r, 5000), Outcome::Installed);
        let kb = SessionKey::flow(client, 40000, 7);
        let (_, got) = tb.lookup(&kb, tb.hash(&kb)).expect("installed under B's service id");
        assert_eq!(got.backend, 18, "B's id of 192.0.2.11:8080");
        assert_eq!(got.flags, s.flags | flags::SYNCED);
        assert_eq!(
            (got.seq_delta, got.ts_delta, got.client_isn, got.client_window),
            (s.seq_delta, 99, 7, 64240)
        );
        assert!((idle(5000, got.last_seen) as i64 - 300).abs() <= 1, "{}", got.last_seen);
        // The same record again: unchanged; a later one (less idle): updated.
        assert_eq!(install(&tb, &ib, &r, 5000), Outcome::Unchanged);
        let fresher = Record { idle_ms: 0, ..r };
        assert_eq!(install(&tb, &ib, &fresher, 5000), Outcome::Updated);
        // A delete removes the copy.
        assert_eq!(install(&tb, &ib, &Record { op: Op::Delete, ..r }, 5001), Outcome::Removed);
        assert!(tb.lookup(&kb, tb.hash(&kb)).is_none());
        // Unknown service or backend: nothing.
        assert_eq!(install(&tb, &ib, &Record { vport: 81, ..r }, 5001), Outcome::Unknown);
        assert_eq!(install(&tb, &ib, &Record { backend_port: 1, ..r }, 5001), Outcome::Unknown);
    }

    #[test]
    fn a_synced_record_never_overrides_a_local_session() {
        let b = snapshot(7);
        let ib = ServiceIndex::new(&b);
        let tb = SessionTable::new(1000, Timeouts::default(), 2);
        let client = Addr::v4(Ipv4Addr::new(198, 18, 1, 11));
        let kb = SessionKey::flow(client, 5555, 7);
        let local = Session::new(17, TcpState::Established, 4990);
        tb.insert(&kb, tb.hash(&kb), &local);
        let r = Record {
            op: Op::Upsert,
            vip: Addr::v4(Ipv4Addr::new(198, 18, 10, 2)),
            vport: 80,
            protocol: 6,
            client,
            client_port: 5555,
            backend: Addr::v4(Ipv4Addr::new(192, 0, 2, 11)),
            backend_port: 8080,
            state: TcpState::Established as u8,
            flags: 0,
            client_window: 0,
            seq_delta: 1,
            ts_delta: 0,
            client_isn: 0,
            timeout_ticks: 0,
            idle_ms: 0,
            age_ms: 10_000,
        };
        assert_eq!(install(&tb, &ib, &r, 5000), Outcome::KeptLocal);
        assert_eq!(install(&tb, &ib, &Record { op: Op::Delete, ..r }, 5000), Outcome::KeptLocal);
        assert_eq!(tb.lookup(&kb, tb.hash(&kb)).unwrap().1, local);
    }

    #[test]
    fn two_syncers_over_loopback_carry_sessions_and_refuse_strangers() {
        let a_snap = snapshot(3);
        let b_snap = snapshot(7);
        let key = SyncKey::new([7u8; 32]);
        let spec = |listen: &str, peer: SocketAddr| SyncSpec {
            listen: listen.parse().unwrap(),
            peers: vec![peer],
            key: key.clone(),
            after: Duration::from_secs(5),
            refresh: Duration::from_secs(30),
            window: Duration::from_secs(30),
        };
        // B first, on an ephemeral port; A sends to it.
        let mut b = Syncer::new(&spec("127.0.0.1:0", "127.0.0.1:9".parse().unwrap()), 2, 20, 10_000).unwrap();
        let b_addr = b.local_addr().unwrap();
        let mut a = Syncer::new(&spec("127.0.0.1:0", b_addr), 1, 20, 10_000).unwrap();
        b.spec.peers = vec![a.local_addr().unwrap()];
        let ta = SessionTable::new(10_000, Timeouts::default(), 1);
        let tb = SessionTable::new(10_000, Timeouts::default(), 2);
        let ia = ServiceIndex::new(&a_snap);
        let ib = ServiceIndex::new(&b_snap);
        // 100 sessions on A: 60 up for 10 s, 40 for 1 s.
        let now = 1000;
        for i in 0..100u32 {
            let k = SessionKey::flow(Addr::v4(Ipv4Addr::from(0xc612_0100 + i)), 40000, 3);
            let created = if i < 60 { now - 150 } else { now - 15 };
            ta.insert(&k, ta.hash(&k), &Session { created, ..Session::new(13, TcpState::Established, now) });
        }
        let slots = ta.slot_count();
        let mut seen = Vec::new();
        ta.sweep_with(now, 0, slots, |_, _| {}, |k, s| seen.push((*k, *s)));
        for (k, s) in &seen {
            a.live(&ta, &ia, 0, k, s, now);
        }
        a.slice_done(0, now, unix_ms());
        std::thread::sleep(Duration::from_millis(50));
        b.receive(&tb, &ib, 7000, unix_ms());
        let c = std::sync::Arc::clone(&b.counters);
        assert_eq!(c.outcomes[0].load(Relaxed), 60, "only sessions up 5 s are sent");
        assert_eq!(tb.len(), 60);
        assert!(a.counters.messages_sent.load(Relaxed) >= 3);
        // The next pass a second later sends nothing new.
        ta.sweep_with(now + 15, 0, slots, |_, _| {}, |k, s| a.live(&ta, &ia, 0, k, s, now + 15));
        a.slice_done(0, now + 15, unix_ms());
        assert_eq!(a.counters.records_sent.load(Relaxed), 61, "60 sessions and A's Resync at its start");
        // A stranger's datagram (not a peer's address) and a forged one from the peer.
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        stranger.send_to(b"SLSY garbage", b_addr).unwrap();
        a.socket.send_to(&[0u8; 100], b_addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        b.receive(&tb, &ib, 7000, unix_ms());
        assert_eq!(c.rejected[Reject::ALL.len()].load(Relaxed), 1, "not a peer");
        assert_eq!(c.rejected.iter().map(|x| x.load(Relaxed)).sum::<u64>(), 2);
        assert_eq!(tb.len(), 60, "nothing changed");
    }

    /// A (numbering as `snapshot(3)`) syncing to B (as `snapshot(7)`) over loopback.
    struct Pair {
        a: Syncer,
        b: Syncer,
        ta: SessionTable,
        tb: SessionTable,
        sa: Snapshot,
        sb: Snapshot,
    }

    /// A sync spec on loopback (any port) with one peer and the default timings.
    fn loopback_spec(key: &SyncKey, peer: SocketAddr) -> SyncSpec {
        SyncSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: vec![peer],
            key: key.clone(),
            after: Duration::from_secs(5),
            refresh: Duration::from_secs(30),
            window: Duration::from_secs(30),
        }
    }

    impl Pair {
        fn new() -> Pair {
            let key = SyncKey::new([5u8; 32]);
            let spec = |peer: SocketAddr| loopback_spec(&key, peer);
            let mut b = Syncer::new(&spec("127.0.0.1:9".parse().unwrap()), 2, 1, 1000).unwrap();
            let a = Syncer::new(&spec(b.local_addr().unwrap()), 1, 1, 1000).unwrap();
            b.spec.peers = vec![a.local_addr().unwrap()];
            Pair {
                a,
                b,
                ta: SessionTable::new(1000, Timeouts::default(), 1),
                tb: SessionTable::new(1000, Timeouts::default(), 2),
                sa: snapshot(3),
                sb: snapshot(7),
            }
        }

        /// A's session for `client` (port 40000), made at `created`, last seen at `now`.
        fn add(&self, client: u32, created: u32, now: u32) -> SessionKey {
            let k = SessionKey::flow(Addr::v4(Ipv4Addr::from(client)), 40000, 3);
            let s = Session { created, ..Session::new(13, TcpState::Established, now) };
            assert!(matches!(self.ta.insert(&k, self.ta.hash(&k), &s), Insert::Inserted(_)));
            k
        }

        /// Packets with TCP flags `flags` on A's session `k` at `now`, from the client
        /// (`reply` false) or the server, as the workers record them.
        fn packet(&self, k: &SessionKey, now: u32, flags: u8, reply: bool) {
            let (slot, s) = self.ta.lookup(k, self.ta.hash(k)).expect("A has it");
            let state = if reply {
                TcpState::after_reply(s.state, Some(flags))
            } else {
                TcpState::next(Some(s.state), Some(flags))
            };
            self.ta.touch(slot, &s, now, state);
        }

        /// One whole sweep pass of A's table at tick `now` (a slice), and B taking what it sent.
        fn pass(&mut self, now: u32) {
            let (ia, ib) = (ServiceIndex::new(&self.sa), ServiceIndex::new(&self.sb));
            let cell = std::cell::RefCell::new(&mut self.a);
            let ta = &self.ta;
            ta.sweep_with(
                now,
                0,
                ta.slot_count(),
                |k, s| cell.borrow_mut().expired(&ia, k, s, now),
                |k, s| cell.borrow_mut().live(ta, &ia, 0, k, s, now),
            );
            self.a.slice_done(0, now, unix_ms());
            std::thread::sleep(Duration::from_millis(50));
            self.b.receive(&self.tb, &ib, now + 4000, unix_ms());
        }

        /// B's copy of A's session `k` (B numbers the service 7).
        fn on_b(&self, k: &SessionKey) -> Option<Session> {
            let kb = SessionKey::flow(k.addr, k.port, 7);
            self.tb.lookup(&kb, self.tb.hash(&kb)).map(|(_, s)| s)
        }

        fn sent(&self) -> u64 {
            self.a.counters.records_sent.load(Relaxed)
        }

        fn outcome(&self, o: Outcome) -> u64 {
            let i = Outcome::ALL.iter().position(|x| *x == o).unwrap();
            self.b.counters.outcomes[i].load(Relaxed)
        }
    }

    #[test]
    fn a_connection_that_ends_is_deleted_on_the_peer_at_the_next_pass_once() {
        use sluice_dataplane::wire::tcp::{ACK, FIN, RST};
        let mut p = Pair::new();
        let now = 1000;
        // Up 10 s: one ends with FINs both ways, one with a RST, one is half-closed (the
        // client's FIN; the server may send for hours yet), one goes on.
        let (fins, rst, half, open) = (
            p.add(0xc612_0101, now - 150, now),
            p.add(0xc612_0102, now - 150, now),
            p.add(0xc612_0103, now - 150, now),
            p.add(0xc612_0104, now - 150, now),
        );
        p.pass(now);
        assert_eq!(p.outcome(Outcome::Installed), 4);
        for k in [&fins, &rst, &half, &open] {
            assert_eq!(p.on_b(k).map(|s| s.state), Some(TcpState::Established));
        }
        let sent = p.sent();
        p.packet(&fins, now + 3, FIN | ACK, false);
        p.packet(&fins, now + 4, FIN | ACK, true);
        p.packet(&fins, now + 5, ACK, false);
        p.packet(&rst, now + 3, RST, true);
        p.packet(&half, now + 3, FIN | ACK, false);
        // The next pass (a second on): B's copies of the two ended connections are gone; A
        // keeps its own until the closing timeouts.
        p.pass(now + 15);
        assert_eq!(p.sent(), sent + 2, "two deletes");
        assert_eq!(p.a.counters.deletes_sent[DeleteReason::Ended as usize].load(Relaxed), 2);
        assert_eq!(p.outcome(Outcome::Removed), 2);
        assert!(p.on_b(&fins).is_none() && p.on_b(&rst).is_none());
        assert!(p.on_b(&half).is_some() && p.on_b(&open).is_some());
        assert_eq!(p.ta.len(), 4);
        // Later passes send no second delete, nor an upsert (the refresh at 30 s included).
        for t in (now + 30..now + 400).step_by(15) {
            p.pass(t);
        }
        assert_eq!(p.sent(), sent + 2 + 2, "the half-closed and the open one's refresh");
        assert_eq!(p.outcome(Outcome::Installed), 4, "the ended ones are not sent again");
        // Nor when the sweep expires them (10 s after the RST, 30 s after the last FIN).
        assert_eq!(p.ta.len(), 3, "the RST one expired");
        p.pass(now + 5 + session::ticks(31));
        assert!(p.ta.lookup(&fins, p.ta.hash(&fins)).is_none(), "the FIN one expired");
        assert_eq!(
            p.a.counters.deletes_sent[DeleteReason::Expired as usize].load(Relaxed),
            1,
            "the half-closed one"
        );
        assert_eq!(p.a.counters.deletes_sent[DeleteReason::Ended as usize].load(Relaxed), 2);
    }

    #[test]
    fn a_delete_at_the_end_leaves_the_peers_own_session_alone() {
        use sluice_dataplane::wire::tcp::RST;
        let mut p = Pair::new();
        let now = 1000;
        let k = p.add(0xc612_0201, now - 150, now);
        // B has a session of its own for the same client and port (made there, live).
        let kb = SessionKey::flow(k.addr, k.port, 7);
        let own = Session::new(17, TcpState::Established, 4990);
        assert!(matches!(p.tb.insert(&kb, p.tb.hash(&kb), &own), Insert::Inserted(_)));
        p.pass(now);
        assert_eq!(p.outcome(Outcome::KeptLocal), 1);
        p.packet(&k, now + 3, RST, false);
        p.pass(now + 15);
        assert_eq!(p.a.counters.deletes_sent[DeleteReason::Ended as usize].load(Relaxed), 1);
        assert_eq!(p.outcome(Outcome::KeptLocal), 2, "the delete kept it too");
        assert_eq!(p.outcome(Outcome::Removed), 0);
        assert_eq!(p.on_b(&k), Some(own));
    }

    #[test]
    fn a_restarted_peer_gets_everything_then_knows_it_has_joined() {
        let snap = snapshot(3);
        let key = SyncKey::new([7u8; 32]);
        let spec = |peer: SocketAddr| loopback_spec(&key, peer);
        let mut b = Syncer::new(&spec("127.0.0.1:9".parse().unwrap()), 2, 20, 10_000).unwrap();
        b.joining = None;
        b.pending.clear();
        let tb = SessionTable::new(10_000, Timeouts::default(), 2);
        let ix = ServiceIndex::new(&snap);
        // B holds 30 young sessions of its own (not yet due) and 20 a peer synced to it.
        let now = 1000;
        for i in 0..50u32 {
            let k = SessionKey::flow(Addr::v4(Ipv4Addr::from(0xc612_0200 + i)), 40000, 3);
            let flags = if i < 30 { 0 } else { flags::SYNCED };
            tb.insert(
                &k,
                tb.hash(&k),
                &Session { flags, ..Session::new(13, TcpState::Established, now - 10) },
            );
        }
        // A (re)starts: its first flush asks for everything.
        let mut a = Syncer::new(&spec(b.local_addr().unwrap()), 1, 20, 10_000).unwrap();
        b.spec.peers = vec![a.local_addr().unwrap()];
        let ta = SessionTable::new(10_000, Timeouts::default(), 1);
        assert!(!a.joined(std::time::Instant::now()), "no copy yet");
        a.slice_done(0, now, unix_ms());
        std::thread::sleep(Duration::from_millis(50));
        b.receive(&tb, &ix, now, unix_ms());
        // B's next whole pass sends every session, then says it is done.
        let mut seen = Vec::new();
        tb.sweep_with(now, 0, tb.slot_count(), |_, _| {}, |k, s| seen.push((*k, *s)));
        for (k, s) in &seen {
            b.live(&tb, &ix, 0, k, s, now);
        }
        for slice in 0..20 {
            b.slice_done(slice, now, unix_ms());
        }
        assert!(b.full_pass.is_some(), "a whole pass from the slice after the request");
        b.slice_done(0, now, unix_ms());
        assert!(b.full_pass.is_none());
        std::thread::sleep(Duration::from_millis(50));
        a.receive(&ta, &ix, now, unix_ms());
        assert_eq!(ta.len(), 50, "its own young ones and those synced to it");
        assert!(a.joined(std::time::Instant::now()));
        // Without a full pass, synced and young sessions stay where they are.
        let sent = b.counters.records_sent.load(Relaxed);
        for (k, s) in &seen {
            b.live(&tb, &ix, 0, k, s, now);
        }
        b.slice_done(1, now, unix_ms());
        assert_eq!(b.counters.records_sent.load(Relaxed), sent);
    }

    #[test]
    fn a_peer_that_never_answers_is_waited_for_a_bounded_time() {
        let spec = SyncSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: vec!["127.0.0.1:9".parse().unwrap()],
            key: SyncKey::new([7u8; 32]),
            after: Duration::from_secs(5),
            refresh: Duration::from_secs(30),
            window: Duration::from_secs(30),
        };
        let mut a = Syncer::new(&spec, 1, 20, 10_000).unwrap();
        let t0 = std::time::Instant::now();
        assert!(!a.joined(t0));
        assert!(a.joined(t0 + JOIN_WAIT + Duration::from_millis(1)));
        assert!(a.joined(t0), "once joined, it stays so");
    }

    #[test]
    fn the_receive_buffer_holds_a_slice_of_a_full_table_from_every_peer() {
        let b = receive_buffer_bytes(4_000_000, 2, 20);
        let messages = (4_000_000 / 20 * 2usize).div_ceil(sync::MAX_RECORDS);
        assert!(b >= messages * DATAGRAM_TRUESIZE, "{b} bytes for {messages} messages");
        assert_eq!(receive_buffer_bytes(100, 1, 20), MIN_RECEIVE_BUFFER);
        assert_eq!(receive_buffer_bytes(usize::MAX, 64, 1), MAX_RECEIVE_BUFFER);
        assert_eq!(receive_buffer_bytes(1000, 1, 0), MIN_RECEIVE_BUFFER, "no slices is one slice");
    }

    #[test]
    fn datagrams_the_kernel_drops_on_a_full_buffer_are_counted() {
        let key = SyncKey::new([9u8; 32]);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let spec = SyncSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: vec![sender.local_addr().unwrap()],
            key,
            after: Duration::from_secs(5),
            refresh: Duration::from_secs(30),
            window: Duration::from_secs(30),
        };
        let mut s = Syncer::new(&spec, 1, 20, 1000).unwrap();
        let granted = s.counters.receive_buffer.load(Relaxed) as usize;
        assert!(granted >= MIN_RECEIVE_BUFFER, "asked for {MIN_RECEIVE_BUFFER}, got {granted}");
        // Three times what the buffer holds, nothing read meanwhile: the kernel drops the rest.
        let to = s.local_addr().unwrap();
        let sent = 3 * granted / DATAGRAM_TRUESIZE;
        for _ in 0..sent {
            sender.send_to(&[0u8; sync::MAX_MESSAGE], to).unwrap();
        }
        let table = SessionTable::new(64, Timeouts::default(), 1);
        let snap = snapshot(1);
        let ix = ServiceIndex::new(&snap);
        s.receive(&table, &ix, 1000, unix_ms());
        // The kernel stamps its drop count on datagrams queued after the drops: one more.
        sender.send_to(&[0u8; sync::MAX_MESSAGE], to).unwrap();
        s.receive(&table, &ix, 1000, unix_ms());
        let sent = sent + 1;
        let drops = s.counters.kernel_drops.load(Relaxed) as usize;
        let refused: u64 = s.counters.rejected.iter().map(|x| x.load(Relaxed)).sum();
        assert!(drops > 0, "{sent} sent, {refused} read, none counted as dropped");
        assert_eq!(drops + refused as usize, sent, "every datagram read or counted dropped");
    }
}
