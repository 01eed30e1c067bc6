//! The wire format of session-sync messages between peer appliances.
//!
//! An appliance sends its peers the sessions it forwards, so that when it fails (or is drained)
//! a surviving peer that receives the flow already knows which backend it goes to, and in what
//! SYN-proxy state, and keeps forwarding it exactly as the origin did. Tencent's TGW syncs the
//! sessions of connections that have been up 5 s (shorter ones are cheaper to lose than to
//! sync); Alibaba's LVS batches many session records into one message. This module is only the
//! format: bytes in, verdicts out. Sockets, timers and the choice of what to sync live elsewhere.
//!
//! A message is a header, `count` fixed-size records and a tag, all integers big-endian:
//!
//! | offset | size | header field                         |
//! |-------:|-----:|--------------------------------------|
//! |      0 |    4 | magic `SLSY`                         |
//! |      4 |    1 | version (1)                          |
//! |      5 |    1 | reserved, 0                          |
//! |      6 |    2 | record count                         |
//! |      8 |    8 | sender epoch                         |
//! |     16 |    8 | sequence within the epoch            |
//! |     24 |    8 | sender wall clock, Unix milliseconds |
//!
//! | offset | size | record field  | offset | size | record field  |
//! |-------:|-----:|---------------|-------:|-----:|---------------|
//! |      0 |    1 | op            |     58 |    2 | client_window |
//! |      1 |    1 | protocol      |     60 |    4 | seq_delta     |
//! |      2 |    1 | state         |     64 |    4 | ts_delta      |
//! |      3 |    1 | flags         |     68 |    4 | client_isn    |
//! |      4 |   16 | vip           |     72 |    4 | timeout_ticks |
//! |     20 |    2 | vport         |     76 |    4 | idle_ms       |
//! |     22 |   16 | client        |     80 |    4 | age_ms        |
//! |     38 |    2 | client_port   |        |      |               |
//! |     40 |   16 | backend       |        |      |               |
//! |     56 |    2 | backend_port  |        |      |               |
//!
//! Records start at [`HEADER_LEN`] and are [`RECORD_LEN`] (84) bytes each. Addresses are the 16
//! big-endian bytes of [`Addr`]'s u128 (IPv4 mapped), so IPv6 needs no format change. The
//! message ends in a [`TAG_LEN`]-byte tag: the first 16 bytes of HMAC-SHA256, under the key the
//! peers share, of everything before it. At most [`MAX_RECORDS`] (16) records fit one message
//! of at most [`MAX_MESSAGE`] bytes, so a message (1392 bytes at most) is one unfragmented
//! UDP datagram over IPv4 or IPv6 (1452 bytes of payload at MTU 1500): peers may be of either.
//!
//! Receiving, [`decode`] checks in this order: length, magic and version (cheap, no secret);
//! the tag, compared in constant time (nothing else of a message is trusted before it); the
//! sender's clock against ours (`|unix_ms - now| <= window_ms`, else [`Reject::Stale`]); the
//! records; and last the [`ReplayGuard`], which only an authentic, fresh, well-formed message
//! updates, so a forgery can never move it. The guard refuses a sequence seen before in its
//! epoch, or more than 64 behind the highest, as IPsec's anti-replay window does. The epoch is
//! random per sender start, so a restarted sender, counting from 0 again, is not taken for a
//! replay; the clock window bounds how long a message whose epoch the guard forgot stays usable.
//! Times in records are relative (idle, age) so the peers' clocks need not agree for them.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_dataplane::flow::Addr;
use std::fmt;

pub const VERSION: u8 = 1;
pub const MAGIC: [u8; 4] = *b"SLSY";
pub const HEADER_LEN: usize = 32;
/// op, protocol, state, flags; three (address, port) pairs; client window; six u32s.
pub const RECORD_LEN: usize = 4 + 3 * (16 + 2) + 2 + 6 * 4;
/// HMAC-SHA256 truncated to 16 bytes.
pub const TAG_LEN: usize = 16;
/// Largest message that fits a 1500-byte MTU in IPv4/UDP: 1500 - 20 - 8.
pub const MAX_MESSAGE: usize = 1472;
pub const MAX_RECORDS: usize = (MAX_MESSAGE - HEADER_LEN - TAG_LEN) / RECORD_LEN;
/// Sender epochs a [`ReplayGuard`] remembers; the least recently used is forgotten first.
pub const MAX_EPOCHS: usize = 16;
/// Sequences at and below the highest seen that a [`ReplayGuard`] can still accept once.
pub const REPLAY_WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert = 1,
    Delete = 2,
    /// A (re)started appliance asks its peers for every session they hold (no session in it).
    Resync = 3,
    /// The sender has sent every session it holds since the last `Resync` (no session in it).
    ResyncDone = 4,
}

impl Record {
    /// A record that carries no session, only `op` (`Resync`, `ResyncDone`).
    pub fn control(op: Op) -> Record {
        Record {
            op,
            vip: Addr(0),
            vport: 0,
            protocol: 0,
            client: Addr(0),
            client_port: 0,
            backend: Addr(0),
            backend_port: 0,
            state: 0,
            flags: 0,
            client_window: 0,
            seq_delta: 0,
            ts_delta: 0,
            client_isn: 0,
            timeout_ticks: 0,
            idle_ms: 0,
            age_ms: 0,
        }
    }
}

/// One session, all that a peer needs to forward the flow exactly as the origin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub op: Op,
    /// The service: VIP, port, IP protocol (6 TCP, 17 UDP). Peers number services
    /// themselves, so services are named by what the client addressed.
    pub vip: Addr,
    pub vport: u16,
    pub protocol: u8,
    /// The client's address and port (with the service: the session key).
    pub client: Addr,
    pub client_port: u16,
    /// The backend, by address and port (peers number backends themselves too).
    pub backend: Addr,
    pub backend_port: u16,
    /// The session's TCP state byte and flags byte, as the session table stores them.
    pub state: u8,
    pub flags: u8,
    pub client_window: u16,
    /// SYN-proxy sequence and timestamp deltas and the client's ISN.
    pub seq_delta: u32,
    pub ts_delta: u32,
    pub client_isn: u32,
    /// A timeout override in session ticks (0: by state).
    pub timeout_ticks: u32,
    /// Milliseconds since the origin last saw a packet of the flow, and since it made it.
    pub idle_ms: u32,
    pub age_ms: u32,
}

/// The header every message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Chosen at random when the sender starts: tells its restarts apart.
    pub epoch: u64,
    /// Per epoch, +1 per message sent.
    pub sequence: u64,
    /// The sender's wall clock, Unix milliseconds.
    pub unix_ms: u64,
}

/// The shared key (32 bytes). Its Debug form does not show it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey([u8; 32]);

impl SyncKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        SyncKey(bytes)
    }

    /// Accepts exactly 64 hex digits (either case). Errors never quote the input.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return Err(format!("sync key must be 64 hex digits (32 bytes), got {} bytes", digits.len()));
        }
        let mut key = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hex =
                |d: u8| (d as char).to_digit(16).ok_or("sync key has a character that is not a hex digit");
            key[i] = ((hex(pair[0])? << 4) | hex(pair[1])?) as u8;
        }
        Ok(SyncKey(key))
    }

    /// The [`TAG_LEN`]-byte tag of `body` under this key (health reports seal with it too).
    pub fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let full = self.mac().chain_update(body).finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is `body`'s tag under this key, compared in constant time.
    pub fn verify(&self, body: &[u8], tag: &[u8]) -> bool {
        self.mac().chain_update(body).verify_truncated_left(tag).is_ok()
    }

    /// A fresh MAC under this key. HMAC zero-pads a key shorter than the hash's 64-byte block,
    /// so padding it here is the same MAC as `new_from_slice`, with no error path.
    fn mac(&self) -> Hmac<Sha256> {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        <Hmac<Sha256> as Mac>::new(&block.into())
    }
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncKey(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// More than [`MAX_RECORDS`] records for one message.
    TooManyRecords { count: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooManyRecords { count } => {
                write!(f, "{count} records do not fit one sync message (at most {MAX_RECORDS})")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends one message with `records` (at most [`MAX_RECORDS`]) to `out`.
pub fn encode(
    key: &SyncKey,
    header: &Header,
    records: &[Record],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if records.len() > MAX_RECORDS {
        return Err(EncodeError::TooManyRecords { count: records.len() });
    }
    let start = out.len();
    out.reserve(HEADER_LEN + records.len() * RECORD_LEN + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0]);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for word in [header.epoch, header.sequence, header.unix_ms] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(&[r.op as u8, r.protocol, r.state, r.flags]);
        for (addr, port) in [(r.vip, r.vport), (r.client, r.client_port), (r.backend, r.backend_port)] {
            out.extend_from_slice(&addr.0.to_be_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
        out.extend_from_slice(&r.client_window.to_be_bytes());
        for word in [r.seq_delta, r.ts_delta, r.client_isn, r.timeout_ticks, r.idle_ms, r.age_ms] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
    let tag = key.mac().chain_update(&out[start..]).finalize().into_bytes();
    out.extend_from_slice(&tag[..TAG_LEN]);
    Ok(())
}

/// Splits any number of records into messages of at most [`MAX_RECORDS`] each, numbering them
/// from `*next_sequence` (which it advances); returns the encoded messages. No records, no
/// messages (a caller wanting a keepalive encodes an empty one itself).
pub fn encode_batches(
    key: &SyncKey,
    epoch: u64,
    next_sequence: &mut u64,
    unix_ms: u64,
    records: &[Record],
) -> Vec<Vec<u8>> {
    let mut messages = Vec::with_capacity(records.len().div_ceil(MAX_RECORDS));
    for chunk in records.chunks(MAX_RECORDS) {
        let header = Header { epoch, sequence: *next_sequence, unix_ms };
        let mut out = Vec::new();
        // Cannot fail: chunks() yields at most MAX_RECORDS records.
        if encode(key, &header, chunk, &mut out).is_ok() {
            *next_sequence = next_sequence.wrapping_add(1);
            messages.push(out);
        }
    }
    messages
}

/// Why a message was refused (each is counted by the caller; labels for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than a header and a tag.
    Truncated,
    BadMagic,
    BadVersion,
    /// Length != header + count * record + tag, or count > MAX_RECORDS.
    BadLength,
    BadTag,
    /// Authentic but malformed: unknown op, or the header's reserved byte is not 0.
    BadRecord,
    /// The sender's unix_ms is outside the window around our clock.
    Stale,
    Replayed,
}

impl Reject {
    pub const ALL: &[Reject] = &[
        Reject::Truncated,
        Reject::BadMagic,
        Reject::BadVersion,
        Reject::BadLength,
        Reject::BadTag,
        Reject::BadRecord,
        Reject::Stale,
        Reject::Replayed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::BadLength => "bad_length",
            Reject::BadTag => "bad_tag",
            Reject::BadRecord => "bad_record",
            Reject::Stale => "stale",
            Reject::Replayed => "replayed",
        }
    }
}

/// Reads big-endian fields off the front of a slice; running out is `Truncated`.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Reject::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, Reject> {
        self.bytes::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Result<u16, Reject> {
        self.bytes().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, Reject> {
        self.bytes().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64, Reject> {
        self.bytes().map(u64::from_be_bytes)
    }
    fn addr(&mut self) -> Result<Addr, Reject> {
        self.bytes().map(|b| Addr(u128::from_be_bytes(b)))
    }

    fn record(&mut self) -> Result<Record, Reject> {
        let op = match self.u8()? {
            1 => Op::Upsert,
            2 => Op::Delete,
            3 => Op::Resync,
            4 => Op::ResyncDone,
            _ => return Err(Reject::BadRecord),
        };
        let (protocol, state, flags) = (self.u8()?, self.u8()?, self.u8()?);
        Ok(Record {
            op,
            protocol,
            state,
            flags,
            vip: self.addr()?,
            vport: self.u16()?,
            client: self.addr()?,
            client_port: self.u16()?,
            backend: self.addr()?,
            backend_port: self.u16()?,
            client_window: self.u16()?,
            seq_delta: self.u32()?,
            ts_delta: self.u32()?,
            client_isn: self.u32()?,
            timeout_ticks: self.u32()?,
            idle_ms: self.u32()?,
            age_ms: self.u32()?,
        })
    }
}

/// Verifies and parses a message received at local wall time `now_unix_ms`; see the module doc
/// for the order of checks. Only an accepted message updates `replay`. Never panics.
pub fn decode(
    key: &SyncKey,
    bytes: &[u8],
    now_unix_ms: u64,
    window_ms: u64,
    replay: &mut ReplayGuard,
) -> Result<(Header, Vec<Record>), Reject> {
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::Truncated);
    }
    let mut r = Reader(bytes);
    if r.bytes::<4>()? != MAGIC {
        return Err(Reject::BadMagic);
    }
    if r.u8()? != VERSION {
        return Err(Reject::BadVersion);
    }
    let reserved = r.u8()?;
    let count = r.u16()? as usize;
    if count > MAX_RECORDS || bytes.len() != HEADER_LEN + count * RECORD_LEN + TAG_LEN {
        return Err(Reject::BadLength);
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    key.mac().chain_update(body).verify_truncated_left(tag).map_err(|_| Reject::BadTag)?;

    // Authentic from here on.
    let header = Header { epoch: r.u64()?, sequence: r.u64()?, unix_ms: r.u64()? };
    if header.unix_ms.abs_diff(now_unix_ms) > window_ms {
        return Err(Reject::Stale);
    }
    if reserved != 0 {
        return Err(Reject::BadRecord);
    }
    let records = (0..count).map(|_| r.record()).collect::<Result<Vec<_>, _>>()?;
    if !replay.check_and_record(header.epoch, header.sequence) {
        return Err(Reject::Replayed);
    }
    Ok((header, records))
}

/// One sender epoch's anti-replay state.
#[derive(Debug, Clone, Copy)]
struct EpochWindow {
    epoch: u64,
    highest: u64,
    /// Bit i set: sequence `highest - i` was accepted.
    seen: u64,
    /// The guard's use counter when this epoch was last looked up, for LRU eviction.
    last_used: u64,
}

/// Remembers, per sender epoch, the highest sequence seen and a 64-message window below it
/// (as IPsec's anti-replay window): a sequence seen before, or 64 or more behind the highest,
/// is refused. Tracks at most [`MAX_EPOCHS`] epochs, forgetting the least recently used.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    epochs: Vec<EpochWindow>,
    uses: u64,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `sequence` of `epoch` once and records it (true), or refuses it (false).
    pub fn check_and_record(&mut self, epoch: u64, sequence: u64) -> bool {
        self.uses = self.uses.wrapping_add(1);
        if let Some(w) = self.epochs.iter_mut().find(|w| w.epoch == epoch) {
            w.last_used = self.uses;
            if sequence > w.highest {
                let ahead = sequence - w.highest;
                w.seen = if ahead >= REPLAY_WINDOW { 0 } else { w.seen << ahead };
                w.seen |= 1;
                w.highest = sequence;
                return true;
            }
            let behind = w.highest - sequence;
            if behind >= REPLAY_WINDOW || w.seen & (1 << behind) != 0 {
                return false;
            }
            w.seen |= 1 << behind;
            return true;
        }
        if self.epochs.len() >= MAX_EPOCHS {
            if let Some(lru) = (0..self.epochs.len()).min_by_key(|&i| self.epochs[i].last_used) {
                self.epochs.swap_remove(lru);
            }
        }
        self.epochs.push(EpochWindow { epoch, highest: sequence, seen: 1, last_used: self.uses });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const NOW: u64 = 1_700_000_000_000;
    const WINDOW: u64 = 5_000;

    fn key(b: u8) -> SyncKey {
        SyncKey::new([b; 32])
    }

    fn record(i: u32) -> Record {
        Record {
            op: if i % 3 == 2 { Op::Delete } else { Op::Upsert },
            vip: Addr::v4(Ipv4Addr::new(10, 0, 0, 1)),
            vport: 443,
            protocol: if i & 1 == 0 { 6 } else { 17 },
            client: Addr::v4(Ipv4Addr::from(0xc0a8_0000u32.wrapping_add(i))),
            client_port: 40_000u16.wrapping_add(i as u16),
            backend: Addr(0x2001_0db8_0000_0000_0000_0000_0000_0000 + i as u128),
            backend_port: 8443,
            state: i as u8,
            flags: 0xa5,
            client_window: 0xfff0,
            seq_delta: 0x8000_0000 ^ i,
            ts_delta: i.wrapping_mul(7),
            client_isn: u32::MAX - i,
            timeout_ticks: i % 4,
            idle_ms: i.wrapping_add(100),
            age_ms: i.wrapping_add(6_000),
        }
    }

    fn message(k: &SyncKey, epoch: u64, sequence: u64, unix_ms: u64, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(k, &Header { epoch, sequence, unix_ms }, records, &mut out).expect("fits");
        out
    }

    fn decode_fresh(k: &SyncKey, bytes: &[u8]) -> Result<(Header, Vec<Record>), Reject> {
        decode(k, bytes, NOW, WINDOW, &mut ReplayGuard::new())
    }

    /// Recomputes the tag after a test edits the body, to reach the checks behind it.
    fn reseal(k: &SyncKey, msg: &mut Vec<u8>) {
        msg.truncate(msg.len() - TAG_LEN);
        let tag = k.mac().chain_update(&msg[..]).finalize().into_bytes();
        msg.extend_from_slice(&tag[..TAG_LEN]);
    }

    #[test]
    fn round_trip_and_sizes() {
        assert_eq!((RECORD_LEN, MAX_RECORDS), (84, 16));
        let records: Vec<Record> = (0..5).map(record).collect();
        let header = Header { epoch: 0x0123_4567_89ab_cdef, sequence: 9, unix_ms: NOW };
        let msg = message(&key(1), header.epoch, header.sequence, NOW, &records);
        assert_eq!(msg.len(), HEADER_LEN + 5 * RECORD_LEN + TAG_LEN);
        assert_eq!(decode_fresh(&key(1), &msg), Ok((header, records)));
        // Spot-check the documented offsets.
        assert_eq!(&msg[..8], b"SLSY\x01\x00\x00\x05");
        assert_eq!(msg[16..24], 9u64.to_be_bytes());
        let r0 = &msg[HEADER_LEN..HEADER_LEN + RECORD_LEN];
        assert_eq!(r0[22..38], record(0).client.0.to_be_bytes());
        assert_eq!(r0[80..84], 6_000u32.to_be_bytes());
        let full = message(&key(1), 1, 1, NOW, &[record(0); MAX_RECORDS]);
        assert!(full.len() <= MAX_MESSAGE && full.len() + RECORD_LEN > MAX_MESSAGE);
        assert!(full.len() <= 1500 - 40 - 8, "one unfragmented datagram over IPv6 too");
        let too_many = [record(0); MAX_RECORDS + 1];
        let mut out = Vec::new();
        let err = encode(&key(1), &header, &too_many, &mut out);
        assert_eq!(err, Err(EncodeError::TooManyRecords { count: MAX_RECORDS + 1 }));
        // The padded key is the same HMAC as the library's own key schedule.
        let lib = Hmac::<Sha256>::new_from_slice(&[7; 32]).expect("any length");
        assert_eq!(
            key(7).mac().chain_update(b"x").finalize().into_bytes(),
            lib.chain_update(b"x").finalize().into_bytes()
        );
    }

    #[test]
    fn batches_number_and_keep_every_record_in_order() {
        let records: Vec<Record> = (0..100).map(record).collect();
        let mut next = 41;
        let messages = encode_batches(&key(1), 5, &mut next, NOW, &records);
        assert_eq!(messages.len(), 100usize.div_ceil(MAX_RECORDS));
        assert_eq!(next, 41 + messages.len() as u64);
        let mut guard = ReplayGuard::new();
        let mut seen = Vec::new();
        for (i, msg) in messages.iter().enumerate() {
            let (h, rs) = decode(&key(1), msg, NOW, WINDOW, &mut guard).expect("valid");
            assert_eq!((h.epoch, h.sequence), (5, 41 + i as u64));
            seen.extend(rs);
        }
        assert_eq!(seen, records);
    }

    #[test]
    fn every_bit_flip_and_a_wrong_key_are_refused() {
        let msg = message(&key(1), 3, 4, NOW, &[record(1), record(2)]);
        for bit in 0..msg.len() * 8 {
            let mut bad = msg.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = decode_fresh(&key(1), &bad).expect_err("flipped bit accepted");
            assert!(matches!(
                err,
                Reject::BadMagic | Reject::BadVersion | Reject::BadLength | Reject::BadTag
            ));
        }
        assert_eq!(decode_fresh(&key(2), &msg), Err(Reject::BadTag));
    }

    #[test]
    fn replay_window() {
        let mut guard = ReplayGuard::new();
        // Sent under `sender`'s key, received under key(1).
        let mut recv = |epoch, seq, sender: u8| {
            decode(&key(1), &message(&key(sender), epoch, seq, NOW, &[]), NOW, WINDOW, &mut guard)
        };
        assert!(recv(1, 100, 1).is_ok());
        assert_eq!(recv(1, 100, 1), Err(Reject::Replayed));
        // Out of order within the window: each once.
        for seq in [98, 99, 37] {
            assert!(recv(1, seq, 1).is_ok());
            assert_eq!(recv(1, seq, 1), Err(Reject::Replayed));
        }
        // 64 behind the highest is outside the window, and so is 101 behind.
        assert_eq!(recv(1, 36, 1), Err(Reject::Replayed));
        assert!(recv(1, 200, 1).is_ok());
        assert_eq!(recv(1, 99, 1), Err(Reject::Replayed));
        // Another epoch (the sender restarted) counts on its own.
        assert!(recv(2, 0, 1).is_ok());
        assert!(recv(1, 199, 1).is_ok());
        // A forged far-ahead sequence must not move the window.
        assert_eq!(recv(1, 10_000, 9), Err(Reject::BadTag));
        assert!(recv(1, 150, 1).is_ok());
    }

    #[test]
    fn replay_guard_forgets_least_recently_used_epoch() {
        let mut guard = ReplayGuard::new();
        for epoch in 0..MAX_EPOCHS as u64 {
            assert!(guard.check_and_record(epoch, 0));
        }
        assert!(!guard.check_and_record(0, 0)); // touches epoch 0; epoch 1 is now the oldest
        assert!(guard.check_and_record(99, 0));
        assert!(!guard.check_and_record(0, 0));
        assert!(guard.check_and_record(1, 0)); // forgotten, so new again
    }

    #[test]
    fn stale_both_ways() {
        let k = key(1);
        for (unix_ms, ok) in
            [(NOW - WINDOW, true), (NOW + WINDOW, true), (NOW - WINDOW - 1, false), (NOW + WINDOW + 1, false)]
        {
            let got = decode_fresh(&k, &message(&k, 1, 1, unix_ms, &[record(0)]));
            assert_eq!(got.is_ok(), ok, "{unix_ms}");
            if !ok {
                assert_eq!(got, Err(Reject::Stale));
            }
        }
    }

    #[test]
    fn malformed_messages_get_the_right_reject() {
        let k = key(1);
        let msg = message(&k, 1, 1, NOW, &[record(0), record(1)]);
        let edited = |at: usize, v: u8, seal: bool| {
            let mut m = msg.clone();
            m[at] = v;
            if seal {
                reseal(&k, &mut m);
            }
            decode_fresh(&k, &m)
        };
        assert_eq!(decode_fresh(&k, &[]), Err(Reject::Truncated));
        assert_eq!(decode_fresh(&k, &msg[..HEADER_LEN + TAG_LEN - 1]), Err(Reject::Truncated));
        assert_eq!(decode_fresh(&k, &msg[..msg.len() - 1]), Err(Reject::BadLength));
        assert_eq!(decode_fresh(&k, &[&msg[..], &[0]].concat()), Err(Reject::BadLength));
        assert_eq!(edited(7, MAX_RECORDS as u8 + 1, true), Err(Reject::BadLength));
        assert_eq!(edited(0, b'X', true), Err(Reject::BadMagic));
        assert_eq!(edited(4, 2, true), Err(Reject::BadVersion));
        assert_eq!(edited(5, 1, true), Err(Reject::BadRecord)); // reserved
        assert_eq!(edited(HEADER_LEN + RECORD_LEN, 5, true), Err(Reject::BadRecord)); // op (1 to 4 exist)
        assert_eq!(edited(HEADER_LEN, 0, false), Err(Reject::BadTag));
        let labels: std::collections::HashSet<_> = Reject::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), 8);
    }

    #[test]
    fn key_from_hex() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let k = SyncKey::from_hex(hex).expect("valid");
        assert_eq!(k.0[..3], [0x00, 0x11, 0x22]);
        assert_eq!(k.0[16], 0xff);
        assert!(SyncKey::from_hex(&hex[..62]).is_err());
        assert!(SyncKey::from_hex(&format!("{hex}00")).is_err());
        assert!(SyncKey::from_hex(&hex.replace('a', "g")).is_err());
        assert!(SyncKey::from_hex(&format!("é{}", &hex[2..])).is_err()); // 64 bytes, not hex
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains(&hex[..8]) && !shown.contains("0, 17, 34"), "{shown}");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = decode_fresh(&key(1), &bytes);
            // Also past the cheap checks: a plausible header over arbitrary content.
            let mut m = b"SLSY\x01\x00\x00\x01".to_vec();
            m.extend_from_slice(&bytes);
            let _ = decode_fresh(&key(1), &m);
        }

        #[test]
        fn mutated_messages_decode_to_the_original_or_not_at_all(
            seeds in proptest::collection::vec(any::<u32>(), 0..=MAX_RECORDS),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let records: Vec<Record> = seeds.iter().map(|&s| record(s)).collect();
            let msg = message(&key(1), 7, 8, NOW, &records);
            let mut bad = msg.clone();
            for (at, x) in edits {
                let at = at % bad.len();
                bad[at] ^= x;
            }
            if let Some(c) = cut {
                bad.truncate(c % (msg.len() + 1));
            }
            if let Ok(got) = decode_fresh(&key(1), &bad) {
                prop_assert_eq!(got, (Header { epoch: 7, sequence: 8, unix_ms: NOW }, records));
            }
        }
    }
}
