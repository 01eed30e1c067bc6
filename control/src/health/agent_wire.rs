//! The wire format between an appliance and the host agents that check backends for it.
//!
//! The appliance sends each agent an *assignment* every check interval: the backends on that
//! agent's host to check (address, port, the VPC whose namespace holds it, the check's timing).
//! The agent answers each assignment with a *report*: its last result for each of them. Both
//! travel over the management path in UDP, sealed as session sync's messages are ([`crate::sync`]):
//! the same key type, the same 16-byte HMAC-SHA256 tag, the same clock window and replay guard,
//! and the same [`Reject`] reasons, counted by the receiver.
//!
//! | offset | size | header field                          |
//! |-------:|-----:|---------------------------------------|
//! |      0 |    4 | magic `SLHC`                          |
//! |      4 |    1 | version (2)                           |
//! |      5 |    1 | kind: 1 assignment, 2 report          |
//! |      6 |    2 | record count                          |
//! |      8 |    8 | sender epoch                          |
//! |     16 |    8 | sequence within the epoch             |
//! |     24 |    8 | sender wall clock, Unix milliseconds  |
//!
//! Both records begin with the backend's identity, [`BACKEND_LEN`] bytes: a flag byte (1: in a
//! VPC), the check type (1: tcp) or the result (1: up, 0: down), the port, the VPC id, and the
//! address (16 bytes, IPv4 mapped). An assignment's record adds the interval and the timeout in
//! milliseconds; a report's adds the reason, [`REASON_LEN`] bytes of UTF-8 padded with zeros.
//! A backend is its (VPC, address, port): 192.0.2.10 in VPC 100 and in VPC 200 are two.
//!
//! A report ends, after its records, with the tunnel-path echoes: a count byte (at most
//! [`MAX_ECHOES`]) and that many 8-byte nonces, the newest probe nonce the agent took out of
//! each tunnel from each appliance (`sluice_dataplane::wire::probe`). Version 1 had no echoes;
//! a message of the other version is refused (`BadVersion`) and counted, never misread.

use crate::sync::{Header, Reject, ReplayGuard, SyncKey, TAG_LEN};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

pub const MAGIC: [u8; 4] = *b"SLHC";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 32;
/// Flag, check or result, port, VPC id, address.
pub const BACKEND_LEN: usize = 1 + 1 + 2 + 4 + 16;
pub const ASSIGN_LEN: usize = BACKEND_LEN + 4 + 4;
pub const REASON_LEN: usize = 64;
pub const REPORT_LEN: usize = BACKEND_LEN + REASON_LEN;
/// Largest message: one unfragmented UDP datagram over IPv4 at MTU 1500.
pub const MAX_MESSAGE: usize = 1472;
pub const MAX_ASSIGNS: usize = (MAX_MESSAGE - HEADER_LEN - TAG_LEN) / ASSIGN_LEN;
/// Most tunnel-path nonces one report echoes.
pub const MAX_ECHOES: usize = 16;
/// The echoes' room at the end of a report: the count and the nonces.
const ECHOES_ROOM: usize = 1 + 8 * MAX_ECHOES;
pub const MAX_REPORTS: usize = (MAX_MESSAGE - HEADER_LEN - TAG_LEN - ECHOES_ROOM) / REPORT_LEN;
const _: () = assert!(HEADER_LEN + MAX_REPORTS * REPORT_LEN + ECHOES_ROOM + TAG_LEN <= MAX_MESSAGE);

const KIND_ASSIGN: u8 = 1;
const KIND_REPORT: u8 = 2;
const CHECK_TCP: u8 = 1;

/// A backend as the agent knows it: its address and port, and the VPC it lives in (`None`:
/// on the host itself, a DSR or physical backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub vpc: Option<u32>,
    pub addr: IpAddr,
    pub port: u16,
}

/// What to check: a backend, by TCP connect, every `interval`, each try at most `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assign {
    pub backend: Backend,
    pub interval: Duration,
    pub timeout: Duration,
}

/// An agent's last result for a backend: up, or down and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Result {
    pub backend: Backend,
    pub result: std::result::Result<(), String>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Assign(Vec<Assign>),
    /// Results, and the tunnel-path nonces echoed.
    Report(Vec<Result>, Vec<u64>),
}

fn put_backend(out: &mut Vec<u8>, b: &Backend, second: u8) {
    out.extend_from_slice(&[u8::from(b.vpc.is_some()), second]);
    out.extend_from_slice(&b.port.to_be_bytes());
    out.extend_from_slice(&b.vpc.unwrap_or(0).to_be_bytes());
    let v6 = match b.addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    out.extend_from_slice(&v6.octets());
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The reason's bytes, cut at [`REASON_LEN`] on a character boundary.
fn put_reason(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out.resize(out.len() + REASON_LEN - end, 0);
}

fn seal(key: &SyncKey, header: &Header, kind: u8, count: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&u16::try_from(count).unwrap_or(u16::MAX).to_be_bytes());
    for word in [header.epoch, header.sequence, header.unix_ms] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(body);
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    out
}

/// One assignment message; the caller keeps to [`MAX_ASSIGNS`] (more are cut off).
pub fn encode_assign(key: &SyncKey, header: &Header, assigns: &[Assign]) -> Vec<u8> {
    let assigns = &assigns[..assigns.len().min(MAX_ASSIGNS)];
    let mut body = Vec::with_capacity(assigns.len() * ASSIGN_LEN);
    for a in assigns {
        put_backend(&mut body, &a.backend, CHECK_TCP);
        body.extend_from_slice(&ms(a.interval).to_be_bytes());
        body.extend_from_slice(&ms(a.timeout).to_be_bytes());
    }
    seal(key, header, KIND_ASSIGN, assigns.len(), &body)
}

/// One report message echoing `echoes`; the caller keeps to [`MAX_REPORTS`] results and
/// [`MAX_ECHOES`] nonces (more are cut off).
pub fn encode_report(key: &SyncKey, header: &Header, results: &[Result], echoes: &[u64]) -> Vec<u8> {
    let results = &results[..results.len().min(MAX_REPORTS)];
    let echoes = &echoes[..echoes.len().min(MAX_ECHOES)];
    let mut body = Vec::with_capacity(results.len() * REPORT_LEN + ECHOES_ROOM);
    for r in results {
        put_backend(&mut body, &r.backend, u8::from(r.result.is_ok()));
        put_reason(&mut body, r.result.as_ref().err().map_or("", String::as_str));
    }
    body.push(echoes.len() as u8);
    for n in echoes {
        body.extend_from_slice(&n.to_be_bytes());
    }
    seal(key, header, KIND_REPORT, results.len(), &body)
}

fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// A record's backend and its second byte; `None` if the flag byte is neither 0 nor 1.
fn get_backend(r: &[u8]) -> Option<(Backend, u8)> {
    let vpc = match r[0] {
        0 => None,
        1 => Some(u32::from_be_bytes(be(r, 4))),
        _ => return None,
    };
    let addr = Ipv6Addr::from(be::<16>(r, 8)).to_canonical();
    Some((Backend { vpc, addr, port: u16::from_be_bytes(be(r, 2)) }, r[1]))
}

fn get_assign(r: &[u8]) -> Option<Assign> {
    let (backend, check) = get_backend(r)?;
    let millis = |at| Duration::from_millis(u64::from(u32::from_be_bytes(be(r, at))));
    (check == CHECK_TCP).then(|| Assign {
        backend,
        interval: millis(BACKEND_LEN),
        timeout: millis(BACKEND_LEN + 4),
    })
}

fn get_result(r: &[u8]) -> Option<Result> {
    let (backend, up) = get_backend(r)?;
    let raw = &r[BACKEND_LEN..];
    let reason = std::str::from_utf8(&raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())]).ok()?;
    let result = match up {
        1 => Ok(()),
        0 => Err(reason.to_string()),
        _ => return None,
    };
    Some(Result { backend, result })
}

/// Verifies and parses a message received at local wall time `now_unix_ms`, in the order of
/// [`crate::sync::decode`]: length, magic, version and kind; the tag; the clock window; the
/// records; the replay guard last (only an accepted message moves it). Never panics.
pub fn decode(
    key: &SyncKey,
    bytes: &[u8],
    now_unix_ms: u64,
    window_ms: u64,
    replay: &mut ReplayGuard,
) -> std::result::Result<(Header, Message), Reject> {
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::Truncated);
    }
    if bytes[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(Reject::BadVersion);
    }
    let (kind, count) = (bytes[5], usize::from(u16::from_be_bytes(be(bytes, 6))));
    let len = match kind {
        KIND_ASSIGN => ASSIGN_LEN,
        KIND_REPORT => REPORT_LEN,
        _ => return Err(Reject::BadLength),
    };
    let records_end = HEADER_LEN + count * len;
    // A report's echoes: the count byte after the records, then the nonces.
    let echoes = match kind {
        KIND_REPORT => match bytes.get(records_end) {
            Some(&n) if usize::from(n) <= MAX_ECHOES => usize::from(n),
            _ => return Err(Reject::BadLength),
        },
        _ => 0,
    };
    let trailer = if kind == KIND_REPORT { 1 + 8 * echoes } else { 0 };
    if bytes.len() != records_end + trailer + TAG_LEN {
        return Err(Reject::BadLength);
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    if !key.verify(body, tag) {
        return Err(Reject::BadTag);
    }
    let word = |at| u64::from_be_bytes(be(bytes, at));
    let header = Header { epoch: word(8), sequence: word(16), unix_ms: word(24) };
    if header.unix_ms.abs_diff(now_unix_ms) > window_ms {
        return Err(Reject::Stale);
    }
    let records = body[HEADER_LEN..records_end].chunks_exact(len);
    let message = if kind == KIND_ASSIGN {
        Message::Assign(records.map(get_assign).collect::<Option<_>>().ok_or(Reject::BadRecord)?)
    } else {
        let nonces = body[records_end + 1..].chunks_exact(8).map(|c| u64::from_be_bytes(be(c, 0))).collect();
        Message::Report(records.map(get_result).collect::<Option<_>>().ok_or(Reject::BadRecord)?, nonces)
    };
    if !replay.check_and_record(header.epoch, header.sequence) {
        return Err(Reject::Replayed);
    }
    Ok((header, message))
}

/// Milliseconds since the Unix epoch now (the messages' clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SyncKey {
        SyncKey::new([b; 32])
    }

    fn backend(vpc: Option<u32>, addr: &str) -> Backend {
        Backend { vpc, addr: addr.parse().unwrap(), port: 8080 }
    }

    fn header(sequence: u64) -> Header {
        Header { epoch: 7, sequence, unix_ms: 1_000_000 }
    }

    #[test]
    fn assignments_and_reports_round_trip_in_both_families() {
        let a = backend(Some(100), "192.0.2.10");
        let b = backend(Some(200), "192.0.2.10");
        let c = backend(None, "2001:db8:19::11");
        let assigns: Vec<Assign> = [a, b, c]
            .into_iter()
            .map(|backend| Assign {
                backend,
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(400),
            })
            .collect();
        let mut guard = ReplayGuard::new();
        let msg = encode_assign(&key(1), &header(1), &assigns);
        assert_eq!(msg.len(), HEADER_LEN + 3 * ASSIGN_LEN + TAG_LEN);
        let (_, got) = decode(&key(1), &msg, 1_000_000, 1000, &mut guard).unwrap();
        assert_eq!(got, Message::Assign(assigns));
        let long = "é".repeat(40);
        let results = vec![
            Result { backend: a, result: Err("connect: Connection refused".into()) },
            Result { backend: b, result: Ok(()) },
            Result { backend: c, result: Err(long.clone()) },
        ];
        let msg = encode_report(&key(1), &header(2), &results, &[]);
        let (_, got) = decode(&key(1), &msg, 1_000_500, 1000, &mut guard).unwrap();
        let Message::Report(got, echoes) = got else { panic!("{got:?}") };
        assert_eq!((&got[..2], echoes), (&results[..2], vec![]));
        assert_eq!(got[2].result, Err("é".repeat(REASON_LEN / 2)), "cut on a character boundary");
    }

    #[test]
    fn forged_replayed_stale_and_malformed_messages_are_refused() {
        let results = vec![Result { backend: backend(Some(100), "192.0.2.10"), result: Ok(()) }];
        let mut guard = ReplayGuard::new();
        let msg = encode_report(&key(1), &header(5), &results, &[42]);
        assert_eq!(decode(&key(2), &msg, 1_000_000, 1000, &mut guard), Err(Reject::BadTag), "wrong key");
        for i in 0..msg.len() {
            let mut m = msg.clone();
            m[i] ^= 0x10;
            assert!(decode(&key(1), &m, 1_000_000, 1000, &mut guard).is_err(), "bit flip at {i}");
        }
        assert_eq!(decode(&key(1), &msg, 1_002_000, 1000, &mut guard), Err(Reject::Stale));
        assert!(decode(&key(1), &msg, 1_000_000, 1000, &mut guard).is_ok(), "the forgeries moved nothing");
        assert_eq!(decode(&key(1), &msg, 1_000_000, 1000, &mut guard), Err(Reject::Replayed));
        assert_eq!(decode(&key(1), &msg[..20], 0, 1000, &mut guard), Err(Reject::Truncated));
        let mut bad_flag = encode_report(&key(1), &header(6), &results, &[]);
        bad_flag[HEADER_LEN] = 9;
        let body_len = bad_flag.len() - TAG_LEN;
        let tag = key(1).tag(&bad_flag[..body_len]);
        bad_flag[body_len..].copy_from_slice(&tag);
        assert_eq!(decode(&key(1), &bad_flag, 1_000_000, 1000, &mut guard), Err(Reject::BadRecord));
    }

    #[test]
    fn reports_echo_tunnel_nonces_and_the_other_version_or_a_bad_count_is_refused() {
        let results = vec![Result { backend: backend(None, "198.19.0.10"), result: Ok(()) }];
        let mut guard = ReplayGuard::new();
        let nonces: Vec<u64> = (0..MAX_ECHOES as u64 + 3).map(|i| i << 40 | 7).collect();
        let msg = encode_report(&key(1), &header(1), &results, &nonces);
        assert_eq!(msg.len(), HEADER_LEN + REPORT_LEN + 1 + 8 * MAX_ECHOES + TAG_LEN, "cut at MAX_ECHOES");
        let (_, got) = decode(&key(1), &msg, 1_000_000, 1000, &mut guard).unwrap();
        assert_eq!(got, Message::Report(results.clone(), nonces[..MAX_ECHOES].to_vec()));
        let reseal = |mut m: Vec<u8>| {
            let end = m.len() - TAG_LEN;
            let tag = key(1).tag(&m[..end]);
            m[end..].copy_from_slice(&tag);
            m
        };
        // A version 1 report (no echoes) from an old agent: refused by version, not misread.
        let mut old = encode_report(&key(1), &header(2), &results, &[]);
        old[4] = 1;
        old.remove(HEADER_LEN + REPORT_LEN);
        let old = reseal(old);
        assert_eq!(decode(&key(1), &old, 1_000_000, 1000, &mut guard), Err(Reject::BadVersion));
        // An echo count the length does not hold, or above the most.
        let mut lying = encode_report(&key(1), &header(3), &results, &[1, 2]);
        lying[HEADER_LEN + REPORT_LEN] = 3;
        assert_eq!(decode(&key(1), &reseal(lying), 1_000_000, 1000, &mut guard), Err(Reject::BadLength));
        let mut many = encode_report(&key(1), &header(4), &results, &[]);
        many[HEADER_LEN + REPORT_LEN] = MAX_ECHOES as u8 + 1;
        many.splice(HEADER_LEN + REPORT_LEN + 1..HEADER_LEN + REPORT_LEN + 1, vec![0; 8 * (MAX_ECHOES + 1)]);
        assert_eq!(decode(&key(1), &reseal(many), 1_000_000, 1000, &mut guard), Err(Reject::BadLength));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600)) {
            let _ = decode(&key(1), &bytes, 0, u64::MAX, &mut ReplayGuard::new());
        }
    }
}
