//! The SYN proxy's shared state and its byte-level translations.
//!
//! A SYN-proxied service (`nat` only: the proxy must see both directions) answers a client's
//! SYN itself, with a SYN cookie ([`crate::cookie`]) and no state. A valid ACK makes the
//! session (`Connecting`), and the ACK itself is turned into the SYN to the backend, carrying
//! the options the client offered. The backend's SYN-ACK completes the session: from then on
//! the two halves differ by
//!
//! - `seq_delta` = backend ISN - cookie: added to acknowledgement numbers and SACK edges toward
//!   the backend, taken from sequence numbers toward the client;
//! - `ts_delta` = backend's first TSval - the appliance's: added to echoed timestamps (TSecr)
//!   toward the backend, taken from timestamps (TSval) toward the client;
//! - the window scale: the appliance offered the client [`WSCALE`]; a backend that chose
//!   another has its windows rescaled.
//!
//! The client's first data segment (with the handshake ACK, or just after it) is kept in a
//! [`HoldPool`] until the backend answers, then sent with the ACK that completes the backend's
//! handshake. The appliance's SYN-ACK offers a window of [`FIRST_WINDOW`] bytes, so a client
//! has at most one segment in flight before the backend is there.
//!
//! The packet logic is in `pipeline` (it needs the snapshot and the frame); what is here takes
//! bytes and numbers.

use crate::cookie::CookieKeys;
use crate::sync::{AtomicU64, Ordering};
use crate::wire::tcp_options::{self, TcpOptions};
use crate::wire::{checksum, tcp, TcpPacket, WireError};

/// The window scale the appliance offers a client that offers one (Linux's, with its default
/// buffers, so most backends choose the same and no rescaling is needed).
pub const WSCALE: u8 = 7;

/// The window the appliance's SYN-ACK offers: room for one segment and no more. Not the MSS:
/// Linux splits its segments to half the largest window it has seen once that is above 536
/// bytes (`tcp_bound_to_half_wnd`), so a window of 1460 lets it send 730 + 730 bytes, and the
/// second segment, with the first already held, would be lost until the client's
/// retransmission timer. At 536 or less a window is one segment, from any stack. The
/// backend's own window takes over once it answers.
pub const FIRST_WINDOW: u16 = 536;

/// The appliance's TCP timestamp clock: milliseconds (as Linux).
#[inline]
pub fn ts_clock(now_ns: u64) -> u32 {
    (now_ns / 1_000_000) as u32
}

/// State shared by every worker: cookie keys (rotated by the control thread) and held
/// segments.
#[derive(Debug)]
pub struct SynProxy {
    pub keys: CookieKeys,
    pub hold: HoldPool,
}

impl SynProxy {
    /// With the cookie keys made of these random values (see [`CookieKeys::new`]).
    pub fn new(base: [u64; 2], seeds: [[u64; 2]; 2]) -> SynProxy {
        Self::with_hold(base, seeds, HoldPool::new(HOLD_ENTRIES))
    }

    /// With these cookie keys and this pool (a session region's: [`HoldPool::in_region`]).
    pub fn with_hold(base: [u64; 2], seeds: [[u64; 2]; 2], hold: HoldPool) -> SynProxy {
        SynProxy { keys: CookieKeys::new(base, seeds), hold }
    }
}

// ---- held segments -------------------------------------------------------------------------

/// Bytes a held segment can take: an IP packet of a 1500-byte MTU, with room to spare.
#[cfg(not(loom))]
pub const HOLD_BYTES: usize = 1536;
#[cfg(loom)]
pub const HOLD_BYTES: usize = 16;
const HOLD_WORDS: usize = HOLD_BYTES / 8;

/// Entries of the pool: one per session slot modulo this (a power of two).
#[cfg(not(loom))]
pub const HOLD_ENTRIES: usize = 4096;
#[cfg(loom)]
pub const HOLD_ENTRIES: usize = 2;

/// A held segment older than this (ticks, about 4 s) may be overwritten: its handshake has
/// failed or its session expired, and the client will retransmit.
pub const HOLD_STALE_TICKS: u32 = 64;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const TAKING: u64 = 3;

/// The state word: state (8) | length (16) | tick (32, when FULL).
#[inline]
fn word(state: u64, len: usize, tick: u32) -> u64 {
    state | (len as u64) << 8 | u64::from(tick) << 32
}

/// One held segment. The data are atomic words (copied with relaxed loads and stores,
/// published by the state word's release store). `repr(C)`: a session region keeps entries
/// across processes, so their layout is part of the region's.
#[derive(Debug)]
#[repr(C)]
struct Entry {
    state: AtomicU64,
    /// The session's hash: whose segment this is.
    owner: AtomicU64,
    data: [AtomicU64; HOLD_WORDS],
}

/// Why a segment could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// Larger than [`HOLD_BYTES`].
    TooLong,
    /// The entry holds another session's segment (or this session's, already).
    Busy,
}

/// `n` FREE entries, all zero (FREE is 0), from a zeroed allocation: 6 MiB of pool cost no
/// time to make (each `SynProxy::new` in tests and tools) and no memory until touched.
#[cfg(not(loom))]
fn free_entries(n: usize) -> Box<[Entry]> {
    const { assert!(FREE == 0) };
    let e = Box::<[Entry]>::new_zeroed_slice(n);
    // SAFETY: Entry is only std AtomicU64s (no padding-sensitive or non-zeroable fields), for
    // which all-zero bytes are the valid value 0: state FREE, owner 0, data 0.
    unsafe { e.assume_init() }
}

/// Under loom, atomics are loom's (not zeroable): built one by one.
#[cfg(loom)]
fn free_entries(n: usize) -> Box<[Entry]> {
    (0..n)
        .map(|_| Entry {
            state: AtomicU64::new(FREE),
            owner: AtomicU64::new(0),
            data: std::array::from_fn(|_| AtomicU64::new(0)),
        })
        .collect()
}

/// Segments held for sessions whose backend handshake is under way, shared by all workers
/// without locks. Entry `slot % len` belongs to the session in session-table slot `slot`, so
/// a session finds its entry without a lookup; the owner's hash tells sessions sharing an
/// entry apart. States: FREE -> WRITING -> FULL (holder), FULL -> TAKING -> FREE (taker).
#[derive(Debug)]
pub struct HoldPool {
    entries: Entries,
}

/// Where a pool's entries are.
#[derive(Debug)]
enum Entries {
    Heap(Box<[Entry]>),
    /// `len` entries at `at` in a session region's mapping, which the Arc keeps.
    #[cfg(not(loom))]
    Region {
        at: std::ptr::NonNull<Entry>,
        len: usize,
        _region: std::sync::Arc<crate::region::Region>,
    },
}

// SAFETY: the region's entries are atomics in a mapping that the Arc keeps alive; shared
// access hands out only &Entry, which is Sync.
#[cfg(not(loom))]
unsafe impl Send for Entries {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for Entries {}

impl HoldPool {
    pub fn new(n: usize) -> HoldPool {
        let n = n.max(1).next_power_of_two();
        HoldPool { entries: Entries::Heap(free_entries(n)) }
    }

    /// The pool of a session region ([`HOLD_ENTRIES`] entries), with the segments the last
    /// process held: entries it was writing or taking when it stopped are freed (their
    /// clients retransmit). Returns the pool and how many segments it kept.
    #[cfg(not(loom))]
    pub fn in_region(region: std::sync::Arc<crate::region::Region>) -> (HoldPool, usize) {
        const { assert!(HOLD_ENTRIES * std::mem::size_of::<Entry>() <= crate::region::HOLD_AREA) };
        let at = region.hold_area().cast::<Entry>();
        let pool = HoldPool { entries: Entries::Region { at, len: HOLD_ENTRIES, _region: region } };
        let mut kept = 0;
        for e in pool.all() {
            match e.state.load(Ordering::Relaxed) & 0xff {
                FREE => {}
                FULL => kept += 1,
                _ => e.state.store(FREE, Ordering::Relaxed),
            }
        }
        (pool, kept)
    }

    fn all(&self) -> &[Entry] {
        match &self.entries {
            Entries::Heap(b) => b,
            // SAFETY: `at` is HOLD_ENTRIES entries inside the region's mapping (HOLD_AREA
            // bytes at a 2 MiB boundary, checked above), alive while the Arc is; every bit
            // pattern is a valid Entry (atomic words; a state that means nothing reads as
            // neither FREE nor FULL and is freed on attach).
            #[cfg(not(loom))]
            Entries::Region { at, len, .. } => unsafe { std::slice::from_raw_parts(at.as_ptr(), *len) },
        }
    }

    fn entry(&self, slot: usize) -> &Entry {
        let all = self.all();
        &all[slot & (all.len() - 1)]
    }

    /// Keeps `bytes` for the session at `slot` with hash `owner`.
    pub fn hold(&self, slot: usize, owner: u64, bytes: &[u8], now: u32) -> Result<(), HoldError> {
        if bytes.len() > HOLD_BYTES {
            return Err(HoldError::TooLong);
        }
        let e = self.entry(slot);
        let cur = e.state.load(Ordering::Acquire);
        let stale = cur & 0xff == FULL && crate::session::idle(now, (cur >> 32) as u32) > HOLD_STALE_TICKS;
        if cur & 0xff != FREE && !stale {
            return Err(HoldError::Busy);
        }
        if e.state.compare_exchange(cur, WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(HoldError::Busy);
        }
        e.owner.store(owner, Ordering::Relaxed);
        for (i, w) in e.data.iter().enumerate().take(bytes.len().div_ceil(8)) {
            let mut b = [0u8; 8];
            let chunk = &bytes[8 * i..(8 * i + 8).min(bytes.len())];
            b[..chunk.len()].copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        e.state.store(word(FULL, bytes.len(), now), Ordering::Release);
        Ok(())
    }

    /// Takes the segment held for (`slot`, `owner`), copying it into `out` if given; its
    /// length, or `None` if there is none (or `out` is too short: then it stays).
    pub fn take(&self, slot: usize, owner: u64, out: Option<&mut [u8]>) -> Option<usize> {
        let e = self.entry(slot);
        let cur = e.state.load(Ordering::Relaxed);
        if cur & 0xff != FULL {
            return None;
        }
        e.state.compare_exchange(cur, TAKING, Ordering::Acquire, Ordering::Relaxed).ok()?;
        let len = (cur >> 8 & 0xffff) as usize;
        if e.owner.load(Ordering::Relaxed) != owner || out.as_ref().is_some_and(|o| o.len() < len) {
            e.state.store(cur, Ordering::Release);
            return None;
        }
        if let Some(out) = out {
            for (i, w) in e.data.iter().enumerate().take(len.div_ceil(8)) {
                let b = w.load(Ordering::Relaxed).to_ne_bytes();
                let n = (len - 8 * i).min(8);
                out[8 * i..8 * i + n].copy_from_slice(&b[..n]);
            }
        }
        e.state.store(FREE, Ordering::Release);
        Some(len)
    }

    /// Whether (`slot`, `owner`) has a segment held.
    pub fn holds(&self, slot: usize, owner: u64) -> bool {
        let e = self.entry(slot);
        e.state.load(Ordering::Acquire) & 0xff == FULL && e.owner.load(Ordering::Relaxed) == owner
    }
}

// ---- translation ---------------------------------------------------------------------------

/// The TCP segment of the IP packet (IPv4 or IPv6) at `b[ip..]`, and its options.
fn segment(b: &mut [u8], ip: usize) -> Result<(TcpPacket<&mut [u8]>, TcpOptions), WireError> {
    let packet = b.get_mut(ip..).ok_or(WireError::Truncated)?;
    let (_, range) = crate::wire::transport_of(packet)?;
    let t = TcpPacket::new_checked(&mut packet[range])?;
    let opts = tcp_options::parse(t.options())?;
    Ok((t, opts))
}

/// Folds word changes into the segment's checksum.
fn fix_checksum(t: &mut TcpPacket<&mut [u8]>, words: &[(u32, u32)], halves: &[(u16, u16)]) {
    let mut c = t.checksum();
    for &(old, new) in words {
        c = checksum::update32(c, old, new);
    }
    for &(old, new) in halves {
        c = checksum::update16(c, old, new);
    }
    t.set_checksum(c);
}

/// A client's segment on its way to the backend (the TCP/IPv4 packet at `b[ip..]`): the
/// acknowledgement number and SACK edges move into the backend's sequence space, the echoed
/// timestamp into its clock.
pub fn client_to_backend(b: &mut [u8], ip: usize, seq_delta: u32, ts_delta: u32) -> Result<(), WireError> {
    let (mut t, opts) = segment(b, ip)?;
    let mut words: arrayvec::ArrayVec<(u32, u32), 11> = arrayvec::ArrayVec::new();
    if t.flags() & tcp::ACK != 0 {
        let old = t.ack();
        let new = old.wrapping_add(seq_delta);
        t.set_ack(new);
        words.push((old, new));
    }
    words.extend(tcp_options::shift_sack(t.options_mut(), &opts, seq_delta));
    words.extend(tcp_options::shift_timestamps(t.options_mut(), &opts, |v| v, |e| e.wrapping_add(ts_delta)));
    fix_checksum(&mut t, &words, &[]);
    Ok(())
}

/// A backend's segment on its way to the client: the sequence number moves into the
/// appliance's sequence space (the cookie's), the timestamp into the appliance's clock, and
/// the window from the backend's scale (`backend_ws`) to the one offered the client
/// (`client_ws`), if they differ.
pub fn backend_to_client(
    b: &mut [u8],
    ip: usize,
    seq_delta: u32,
    ts_delta: u32,
    scales: Option<(u8, u8)>,
) -> Result<(), WireError> {
    let (mut t, opts) = segment(b, ip)?;
    let mut words: arrayvec::ArrayVec<(u32, u32), 3> = arrayvec::ArrayVec::new();
    let old = t.seq();
    let new = old.wrapping_sub(seq_delta);
    t.set_seq(new);
    words.push((old, new));
    words.extend(tcp_options::shift_timestamps(t.options_mut(), &opts, |v| v.wrapping_sub(ts_delta), |e| e));
    let mut halves: arrayvec::ArrayVec<(u16, u16), 1> = arrayvec::ArrayVec::new();
    if let Some((backend_ws, client_ws)) = scales.filter(|(b, c)| b != c) {
        if t.flags() & tcp::SYN == 0 {
            let old = t.window();
            let new = rescale(old, backend_ws, client_ws);
            t.set_window(new);
            halves.push((old, new));
        }
    }
    fix_checksum(&mut t, &words, &halves);
    Ok(())
}

/// The backend's window scale, kept in a proxied session's flags.
pub fn backend_wscale(flags: u8) -> u8 {
    (flags & crate::session::flags::BACKEND_WSCALE) >> crate::session::flags::BACKEND_WSCALE_SHIFT
}

/// A window field scaled by `2^from` as one scaled by `2^to` (rounded down, at most 65535).
pub fn rescale(window: u16, from: u8, to: u8) -> u16 {
    let bytes = u64::from(window) << from.min(14);
    (bytes >> to.min(14)).min(0xffff) as u16
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr, PROTO_TCP};
    use crate::wire::TcpRepr;
    use std::net::Ipv4Addr;

    const C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn packet(seq: u32, ack: u32, flags: u8, window: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let t = TcpRepr { src_port: 40000, dst_port: 8080, seq, ack, flags, window, options };
        let hl = t.header_len();
        let mut b = vec![0u8; 20 + hl + payload.len()];
        Ipv4Repr {
            src: C,
            dst: B,
            protocol: PROTO_TCP,
            payload_len: hl + payload.len(),
            tos: 0,
            ident: 1,
            dont_frag: true,
            ttl: 64,
        }
        .emit(&mut b[..20]);
        b[20 + hl..].copy_from_slice(payload);
        t.emit_v4(&mut b[20..], C, B);
        b
    }

    fn check(b: &[u8]) -> (u32, u32, u16, TcpOptions) {
        let ip = Ipv4Packet::new_checked(b).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum_v4(ip.src(), ip.dst()), "TCP checksum after the change");
        let o = tcp_options::parse(&ip.payload()[20..t.header_len()]).unwrap();
        (t.seq(), t.ack(), t.window(), o)
    }

    // NOP NOP TS(1000, 2000) NOP NOP SACK(5000-6000)
    fn opts() -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&1000u32.to_be_bytes());
        o.extend_from_slice(&2000u32.to_be_bytes());
        o.extend_from_slice(&[1, 1, 5, 10]);
        o.extend_from_slice(&5000u32.to_be_bytes());
        o.extend_from_slice(&6000u32.to_be_bytes());
        o
    }

    #[test]
    fn a_client_segment_moves_to_the_backend_space() {
        let mut b = packet(7, 0xffff_fff0, tcp::ACK | tcp::PSH, 500, &opts(), b"GET /");
        client_to_backend(&mut b, 0, 0x20, 5).unwrap();
        let (seq, ack, win, o) = check(&b);
        assert_eq!((seq, ack, win), (7, 0x10, 500), "ack wraps; seq and window stay");
        assert_eq!(o.timestamps, Some((1000, 2005)), "only the echo moves");
        assert_eq!(o.sack.as_slice(), &[(5032, 6032)]);
        assert_eq!(&b[b.len() - 5..], b"GET /");
    }

    #[test]
    fn a_backend_segment_moves_to_the_client_space() {
        let mut b = packet(100, 200, tcp::ACK, 1000, &opts(), b"HTTP");
        backend_to_client(&mut b, 0, 30, 999, Some((9, 7))).unwrap();
        let (seq, ack, win, o) = check(&b);
        assert_eq!((seq, ack), (70, 200), "seq moves, ack (the client's space) stays");
        assert_eq!(win, 4000, "scale 9 to 7: four times the field");
        assert_eq!(o.timestamps, Some((1, 2000)));
        assert_eq!(o.sack.as_slice(), &[(5000, 6000)], "backend SACKs name client bytes");
        // Equal scales (or none): the window is left alone.
        let mut b = packet(100, 200, tcp::ACK, 1000, &[], b"");
        backend_to_client(&mut b, 0, 0, 0, Some((7, 7))).unwrap();
        assert_eq!(check(&b).2, 1000);
    }

    #[test]
    fn rescaling_rounds_down_and_saturates() {
        assert_eq!(rescale(1000, 7, 7), 1000);
        assert_eq!(rescale(1000, 0, 7), 7);
        assert_eq!(rescale(40000, 9, 7), 0xffff);
        assert_eq!(rescale(3, 7, 9), 0);
    }

    #[test]
    fn malformed_segments_are_refused_unchanged() {
        let mut b = packet(1, 2, tcp::ACK, 3, &[2, 3, 5, 0], b"");
        let before = b.clone();
        assert_eq!(client_to_backend(&mut b, 0, 1, 1), Err(WireError::Malformed));
        assert_eq!(b, before);
        assert!(backend_to_client(&mut b[..30], 0, 1, 1, None).is_err());
    }

    proptest::proptest! {
        #[test]
        fn translating_any_bytes_never_panics(
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            at in 0usize..40,
            d in proptest::prelude::any::<u32>(),
            ws in proptest::prelude::any::<(u8, u8)>(),
        ) {
            let mut b = b;
            let _ = client_to_backend(&mut b, at, d, d.rotate_left(7));
            let _ = backend_to_client(&mut b, at, d, d ^ 0x5555, Some(ws));
        }
    }

    #[test]
    fn the_pool_holds_one_segment_per_entry_and_gives_it_back_once() {
        let pool = HoldPool::new(4);
        let seg: Vec<u8> = (0..=200u8).collect();
        assert_eq!(pool.hold(5, 77, &seg, 10), Ok(()));
        assert!(pool.holds(5, 77));
        assert!(!pool.holds(5, 78));
        assert_eq!(pool.hold(1, 99, &seg, 10), Err(HoldError::Busy), "slot 1 shares entry 1 with 5");
        assert_eq!(pool.take(5, 78, None), None, "another owner's");
        let mut out = [0u8; 300];
        assert_eq!(pool.take(5, 77, Some(&mut out[..100])), None, "too short: it stays");
        assert_eq!(pool.take(5, 77, Some(&mut out)), Some(201));
        assert_eq!(&out[..201], &seg[..]);
        assert_eq!(pool.take(5, 77, Some(&mut out)), None, "once");
        assert_eq!(pool.hold(1, 1, &[0; HOLD_BYTES + 1], 10), Err(HoldError::TooLong));
    }

    #[test]
    fn a_stale_segment_gives_way() {
        let pool = HoldPool::new(1);
        pool.hold(0, 1, b"old", 10).unwrap();
        assert_eq!(pool.hold(0, 2, b"new", 10 + HOLD_STALE_TICKS), Err(HoldError::Busy));
        assert_eq!(pool.hold(0, 2, b"new", 11 + HOLD_STALE_TICKS), Ok(()));
        let mut out = [0u8; 8];
        assert_eq!(pool.take(0, 2, Some(&mut out)), Some(3));
        assert_eq!(&out[..3], b"new");
    }
}

/// Model check of holding against completing (`scripts/loom.sh`): a client's worker holds a
/// segment while a backend's worker completes the handshake. Each publishes (the segment; the
/// established session), fences, and looks at the other's; whoever then takes the segment
/// sends it. It must be sent exactly once, whatever the interleaving.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{fence, AtomicU64 as LAtomic};
    use loom::sync::Arc;

    #[test]
    fn a_held_segment_is_sent_exactly_once() {
        loom::model(|| {
            let pool = Arc::new(HoldPool::new(1));
            let established = Arc::new(LAtomic::new(0));
            let sent = Arc::new(LAtomic::new(0));
            let client = {
                let (pool, established, sent) = (pool.clone(), established.clone(), sent.clone());
                loom::thread::spawn(move || {
                    pool.hold(0, 9, b"GET", 1).unwrap();
                    fence(Ordering::SeqCst);
                    if established.load(Ordering::Relaxed) == 1 && pool.take(0, 9, None).is_some() {
                        // Took it back: the client's worker forwards its own packet.
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            established.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let mut out = [0u8; HOLD_BYTES];
            if let Some(n) = pool.take(0, 9, Some(&mut out)) {
                assert_eq!(&out[..n], b"GET");
                sent.fetch_add(1, Ordering::Relaxed);
            }
            client.join().unwrap();
            assert_eq!(sent.load(Ordering::Relaxed), 1);
        });
    }
}
