//! The session table: one table shared by all workers and the control thread, no locks.
//!
//! Open addressing with linear probing over 64-byte slots (one cache line each), a power of two
//! of them, at most half full. Each slot is eight atomic words guarded by a per-slot seqlock:
//!
//! ```text
//! w0  meta: sequence (32) | state (8) | tag (16)        state: EMPTY, BUSY, LIVE, TOMB
//! w1  key: client address, low 64 bits
//! w2  key: client address, high 64 bits
//! w3  key: client port (16) | kind (8) | ident (32: service id)
//! w4  backend id (32) | created tick (32)
//! w5  activity: last-seen tick (32) | end synced (1) | TCP state (7) | flags (8) | client window (16)
//! w6  SYN-proxy deltas: sequence (32) | timestamp (32)
//! w7  timeout override in ticks (32; 0: by state) | SYN proxy: the client's ISN (32)
//! ```
//!
//! A writer owns a slot by a compare-and-swap of `meta` to BUSY (sequence + 1), writes the
//! words, and publishes with a release store of LIVE (sequence + 1 again). A reader loads
//! `meta` (acquire), the words, fences, and loads `meta` again: equal means no writer came in
//! between. Key and backend never change while a slot is LIVE (a remap rewrites it under BUSY);
//! the activity word changes on packets, by a plain relaxed store of the worker that owns the
//! flow, and any value of it is valid. Slots are never freed (the array is allocated once), so
//! no memory reclamation is needed.
//!
//! Expiry is the control thread's sweep: a LIVE slot whose last-seen tick is older than its
//! timeout becomes TOMB; a TOMB followed by EMPTY becomes EMPTY (sweeping backwards lets that
//! cascade). Inserts reuse the first TOMB or EMPTY slot of the probe sequence after checking
//! that the key is not LIVE further on. A bitmap beside the slots marks those in use, so the
//! sweep reads only them (and prefetches them a few bitmap words ahead): a pass costs what the
//! live sessions cost, not what the table's size does. A full pass over a 512 MiB table used to
//! read all of it: 5% of a CPU each second on the project's VM (docs/performance.md,
//! 2026-12-02), taken from the worker when the control thread shares its CPU.
//!
//! Known races, both rare and both harmless to forwarding (a flow that misses its session gets
//! a new one, and Maglev gives it the same backend unless the backend set changed): two inserts
//! of the same key at the same moment can both succeed (the later copy is never found and
//! expires); and an insert can land just past a slot whose tombstone the sweep clears at that
//! moment, which hides it the same way.
//!
//! Memory: 64 bytes per slot (and a bit), slots = the next power of two at or above twice the
//! configured capacity; at full capacity that is 128 to 256 bytes per session (16 M sessions:
//! 2 GiB of slots and 4 MiB of bitmap).

use crate::counter::{counters, Counter, MAX_SERVICE_IDS};
use crate::flow::Addr;
use crate::hash::mix64;
use crate::prefetch::{prefetch, prefetch_index};
use crate::sync::{fence, AtomicU64, Ordering};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// Ticks are 2^26 ns (about 67 ms): coarse enough that the activity word rarely changes, fine
/// enough for timeouts. A `u32` of them lasts 9 years.
pub const TICK_SHIFT: u32 = 26;

/// The tick of a monotonic nanosecond time.
#[inline]
pub fn tick(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// Seconds to ticks (rounded up).
pub fn ticks(secs: u32) -> u32 {
    ((u64::from(secs) * 1_000_000_000).div_ceil(1 << TICK_SHIFT)) as u32
}

/// Last-seen is refreshed when it is this old (~1 s): timeouts can run up to a second long.
pub const TOUCH_TICKS: u32 = 16;

/// Probes per lookup or insert before giving up. At half load linear probing keeps most keys
/// home: filling 1 M sessions into 2 M slots put 75% at home, 99.5% within 7 slots, the worst
/// 41 away. Lookups of absent keys stop at the first empty slot, so this only caps pathology.
pub const MAX_PROBE: usize = 256;

/// How many bitmap words (of 64 slots) ahead of itself the sweep prefetches slots in use.
const SWEEP_AHEAD: usize = 4;

/// Where the rest of the workspace has always found it (declared with the other id spaces).
pub use crate::counter::MAX_BACKEND_IDS;

const EMPTY: u64 = 0;
const BUSY: u64 = 1;
const LIVE: u64 = 2;
const TOMB: u64 = 3;

#[inline]
fn meta(seq: u32, state: u64, tag: u16) -> u64 {
    u64::from(seq) << 32 | state << 24 | u64::from(tag)
}

#[inline]
fn seq_of(m: u64) -> u32 {
    (m >> 32) as u32
}

#[inline]
fn state_of(m: u64) -> u64 {
    (m >> 24) & 0xff
}

#[inline]
fn tag_of(m: u64) -> u16 {
    m as u16
}

/// What a key names.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A connection: client address and port, service id.
    Flow = 1,
    /// A client's persistence to a backend (`ip_hash` with a timeout): client address, port 0.
    Persist = 2,
}

/// The key of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub addr: Addr,
    pub port: u16,
    pub kind: KeyKind,
    /// The service id for `Flow` and `Persist`.
    pub ident: u32,
}

impl SessionKey {
    pub fn flow(addr: Addr, port: u16, service_id: u16) -> SessionKey {
        SessionKey { addr, port, kind: KeyKind::Flow, ident: u32::from(service_id) }
    }

    pub fn persist(addr: Addr, service_id: u16) -> SessionKey {
        SessionKey { addr, port: 0, kind: KeyKind::Persist, ident: u32::from(service_id) }
    }

    #[inline]
    fn words(&self) -> [u64; 3] {
        [
            self.addr.0 as u64,
            (self.addr.0 >> 64) as u64,
            u64::from(self.port) | u64::from(self.kind as u8) << 16 | u64::from(self.ident) << 32,
        ]
    }

    fn from_words(w: [u64; 3]) -> Option<SessionKey> {
        let kind = match (w[2] >> 16) as u8 {
            1 => KeyKind::Flow,
            2 => KeyKind::Persist,
            _ => return None,
        };
        Some(SessionKey {
            addr: Addr(u128::from(w[0]) | u128::from(w[1]) << 64),
            port: w[2] as u16,
            kind,
            ident: (w[2] >> 32) as u32,
        })
    }
}

/// TCP as the appliance sees it (client to server; with DSR it never sees the other half).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// Not TCP (UDP, persistence entries).
    NotTcp = 0,
    SynSent = 1,
    Established = 2,
    /// The client sent a FIN (all of a close that a `dsr` service's appliance sees).
    Closing = 3,
    /// A RST was seen (either way).
    Closed = 4,
    /// SYN proxy: the client finished its handshake with the appliance (a valid cookie); the
    /// backend's is under way. Times out as `SynSent`.
    Connecting = 5,
    /// The server sent a FIN, the client not yet (only where replies pass: `nat`). Times out as
    /// `Closing`.
    ServerClosing = 6,
    /// FINs both ways: the connection is over. Times out as `Closing` (late ACKs and
    /// retransmissions still reach the backend).
    Finished = 7,
}

impl TcpState {
    /// The state a byte names (what `as u8` gives; anything else is `NotTcp`).
    pub fn from_u8(v: u8) -> TcpState {
        use TcpState::*;
        // A table rather than a match: one load on the per-packet path.
        const BY_VALUE: [TcpState; 8] =
            [NotTcp, SynSent, Established, Closing, Closed, Connecting, ServerClosing, Finished];
        BY_VALUE.get(usize::from(v)).copied().unwrap_or(NotTcp)
    }

    /// A FIN or a RST was seen, either way.
    pub fn is_closing(self) -> bool {
        matches!(self, TcpState::Closing | TcpState::ServerClosing | TcpState::Finished | TcpState::Closed)
    }

    /// The connection is over: FINs both ways, or a RST.
    pub fn has_ended(self) -> bool {
        matches!(self, TcpState::Finished | TcpState::Closed)
    }

    /// The state after a packet with `flags` (TCP flag bits; `None` for UDP).
    pub fn next(current: Option<TcpState>, flags: Option<u8>) -> TcpState {
        use crate::wire::tcp::{ACK, FIN, RST, SYN};
        let Some(f) = flags else { return TcpState::NotTcp };
        // Most segments: an established connection's, with none of the flags that change it.
        if current == Some(TcpState::Established) && f & (RST | FIN | SYN) == 0 {
            return TcpState::Established;
        }
        if f & RST != 0 {
            TcpState::Closed
        } else if f & FIN != 0 {
            match current {
                Some(TcpState::Closed) => TcpState::Closed,
                Some(TcpState::ServerClosing | TcpState::Finished) => TcpState::Finished,
                _ => TcpState::Closing,
            }
        } else if f & SYN != 0 && f & ACK == 0 {
            match current {
                Some(TcpState::Established) => TcpState::Established,
                _ => TcpState::SynSent,
            }
        } else {
            match current {
                Some(s) if s.is_closing() => s,
                _ => TcpState::Established,
            }
        }
    }
}

impl TcpState {
    /// The state after a packet from the server (NAT sees replies): a RST closes, a FIN starts
    /// closing (or finishes, after the client's), anything else leaves the state as the
    /// client's packets made it.
    pub fn after_reply(current: TcpState, flags: Option<u8>) -> TcpState {
        use crate::wire::tcp::{FIN, RST};
        match flags {
            None => current,
            Some(f) if f & RST != 0 => TcpState::Closed,
            Some(f) if f & FIN != 0 => match current {
                TcpState::Closed => TcpState::Closed,
                TcpState::Closing | TcpState::Finished => TcpState::Finished,
                _ => TcpState::ServerClosing,
            },
            Some(_) => current,
        }
    }
}

/// Ticks from `then` to `now`; 0 if `then` is later. (A worker may stamp a session with a
/// tick newer than the `now` a sweep started with: read as a wrapped difference, that session
/// would look four billion ticks idle and be expired while in use.)
#[inline]
pub fn idle(now: u32, then: u32) -> u32 {
    (now.wrapping_sub(then) as i32).max(0) as u32
}

/// Flags of a session.
pub mod flags {
    /// Installed from a peer appliance, not created here.
    pub const SYNCED: u8 = 1;
    /// A SYN-proxied connection: sequence numbers and timestamps are translated.
    pub const PROXIED: u8 = 2;
    /// SYN proxy: the client offered window scaling, so the appliance offered
    /// [`crate::synproxy::WSCALE`] and the backend's windows are rescaled to it.
    pub const CLIENT_WSCALE: u8 = 4;
    /// SYN proxy: the backend's window scale, in these bits (`<< BACKEND_WSCALE_SHIFT`).
    pub const BACKEND_WSCALE: u8 = 0x78;
    pub const BACKEND_WSCALE_SHIFT: u32 = 3;
    /// SYN proxy: the client offered timestamps (and was given the appliance's).
    pub const CLIENT_TS: u8 = 0x80;
}

/// What a session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The stable id of the backend (see `snapshot::BackendSpec::id`).
    pub backend: u32,
    pub state: TcpState,
    pub flags: u8,
    pub created: u32,
    pub last_seen: u32,
    /// SYN proxy: added to acknowledgement numbers toward the backend, taken from sequence
    /// numbers toward the client (0 without SYN proxy). While `Connecting`: the cookie, the
    /// appliance's initial sequence number toward the client.
    pub seq_delta: u32,
    /// SYN proxy: added to echoed timestamps toward the backend, taken from timestamps
    /// toward the client. While `Connecting`: the timestamp the appliance sent the client.
    pub ts_delta: u32,
    /// A timeout in ticks that overrides the state's (0: none).
    pub timeout: u32,
    /// SYN proxy: the client's initial sequence number.
    pub client_isn: u32,
    /// SYN proxy: the window field of the client's handshake ACK (for ACKs the appliance
    /// sends the backend on the client's behalf).
    pub client_window: u16,
    /// Session sync: the connection's end has been sent to the peers (a delete record), so it
    /// goes once. Set by the control thread (`replace`), kept by the workers' `touch`; a
    /// touch racing that replace can lose it, and the delete goes again at the next pass.
    pub end_synced: bool,
}

impl Session {
    pub fn new(backend: u32, state: TcpState, now: u32) -> Session {
        Session {
            backend,
            state,
            flags: 0,
            created: now,
            last_seen: now,
            seq_delta: 0,
            ts_delta: 0,
            timeout: 0,
            client_isn: 0,
            client_window: 0,
            end_synced: false,
        }
    }

    fn words(&self) -> [u64; 4] {
        [
            u64::from(self.backend) | u64::from(self.created) << 32,
            activity(self.last_seen, self.state, self),
            u64::from(self.seq_delta) | u64::from(self.ts_delta) << 32,
            u64::from(self.timeout) | u64::from(self.client_isn) << 32,
        ]
    }

    fn from_words(w: [u64; 4]) -> Session {
        Session {
            backend: w[0] as u32,
            created: (w[0] >> 32) as u32,
            last_seen: w[1] as u32,
            state: TcpState::from_u8((w[1] >> 32) as u8 & !END_SYNCED),
            flags: (w[1] >> 40) as u8,
            seq_delta: w[2] as u32,
            ts_delta: (w[2] >> 32) as u32,
            timeout: w[3] as u32,
            client_isn: (w[3] >> 32) as u32,
            client_window: (w[1] >> 48) as u16,
            end_synced: (w[1] >> 32) as u8 & END_SYNCED != 0,
        }
    }
}

/// The bit of the activity word's state byte that holds [`Session::end_synced`].
const END_SYNCED: u8 = 0x80;

/// Whether two keys' words are equal, compared in registers. (`==` on the arrays compiled to
/// 16-byte loads of words just stored one by one, which the CPU cannot forward from the
/// stores: a stall on every lookup.)
#[inline(always)]
fn same_key(a: &[u64; 3], b: &[u64; 3]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) == 0
}

/// The activity word: last-seen and state as given, flags, client window and end-synced as in
/// `s`.
#[inline]
fn activity(last_seen: u32, state: TcpState, s: &Session) -> u64 {
    let end = if s.end_synced { END_SYNCED } else { 0 };
    u64::from(last_seen)
        | u64::from(state as u8 | end) << 32
        | u64::from(s.flags) << 40
        | u64::from(s.client_window) << 48
}

/// Idle timeouts by state, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub tcp_closed: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_syn: 30, tcp_established: 900, tcp_closing: 30, tcp_closed: 10, udp: 120 }
    }
}

#[derive(Debug, Clone, Copy)]
struct TimeoutTicks([u32; 8]);

impl TimeoutTicks {
    fn new(t: &Timeouts) -> TimeoutTicks {
        TimeoutTicks([
            ticks(t.udp),
            ticks(t.tcp_syn),
            ticks(t.tcp_established),
            ticks(t.tcp_closing),
            ticks(t.tcp_closed),
            ticks(t.tcp_syn),
            ticks(t.tcp_closing),
            ticks(t.tcp_closing),
        ])
    }

    fn of(&self, s: &Session) -> u32 {
        if s.timeout != 0 {
            s.timeout
        } else {
            self.0[s.state as usize]
        }
    }
}

#[repr(C, align(64))]
struct Slot {
    w: [AtomicU64; 8],
}

impl Slot {
    #[cfg(loom)]
    fn new() -> Slot {
        Slot { w: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

/// The slot array. Large tables are an anonymous mapping aligned to 2 MiB, marked for
/// transparent huge pages, and made resident when made: huge pages let a 2 GiB table be
/// mapped by ~1000 TLB entries instead of half a million 4 KiB ones, so a random slot costs one
/// DRAM access rather than a page walk and then one; and a page first touched by a worker
/// would be a page fault on the packet path, the kernel zeroing 2 MiB while packets wait. So
/// the whole table is memory from the start (512 MiB for the default 4 M sessions), as DPDK's
/// own memory is. Small tables come from the heap, zeroed.
#[cfg(not(loom))]
struct Slots {
    ptr: std::ptr::NonNull<Slot>,
    len: usize,
    backing: Backing,
}

/// Where a table's slots are.
#[cfg(not(loom))]
enum Backing {
    Heap,
    /// An anonymous mapping of this many bytes (munmap on drop).
    Anonymous(usize),
    /// A shared-memory region that outlives the process ([`crate::region`]).
    Region(std::sync::Arc<crate::region::Region>),
}

#[cfg(not(loom))]
const HUGE_PAGE: usize = 2 << 20;

#[cfg(not(loom))]
impl Slots {
    fn zeroed(n: usize) -> Slots {
        let layout = std::alloc::Layout::array::<Slot>(n).expect("session table size overflows");
        let size = layout.size();
        if size < HUGE_PAGE {
            // SAFETY: a non-zero size (n >= 64 slots).
            let raw = unsafe { std::alloc::alloc_zeroed(layout) };
            let Some(ptr) = std::ptr::NonNull::new(raw.cast::<Slot>()) else {
                std::alloc::handle_alloc_error(layout);
            };
            return Slots { ptr, len: n, backing: Backing::Heap };
        }
        // Map one huge page more than needed, then give back the ends to leave an aligned run.
        let len = size + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(layout);
        }
        let start = raw as usize;
        let aligned = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        // SAFETY: both ranges lie inside the mapping just made and outside [aligned, +size),
        // which is what we keep; munmap of an empty range is skipped.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            let end = aligned + size;
            if start + len > end {
                libc::munmap(end as *mut libc::c_void, start + len - end);
            }
            // A hint about backing, never about contents; without THP it fails harmlessly.
            libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        }
        populate(aligned, size);
        let ptr = std::ptr::NonNull::new(aligned as *mut Slot)
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Slots { ptr, len: n, backing: Backing::Anonymous(size) }
    }
}

/// Makes the `size` bytes of fresh anonymous mapping at `at` resident (zero-filled, as they
/// were), before anything shares them.
#[cfg(not(loom))]
fn populate(at: usize, size: usize) {
    // SAFETY: [at, at + size) is a private anonymous mapping this thread alone holds (made by
    // `Slots::zeroed`, not yet shared); MADV_POPULATE_WRITE faults its pages in, writable,
    // without changing their contents.
    if unsafe { libc::madvise(at as *mut libc::c_void, size, libc::MADV_POPULATE_WRITE) } == 0 {
        return;
    }
    // Kernels before 5.14: a write of zero (what is there already) to every 4 KiB page.
    for page in (at..at + size).step_by(4096) {
        // SAFETY: as above; `page` lies inside the mapping and is 8-byte aligned.
        unsafe { std::ptr::write_volatile(page as *mut u64, 0) };
    }
}

#[cfg(not(loom))]
impl std::ops::Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        // SAFETY: `ptr` points to `len` Slots, owned by this value until `drop` (a region's
        // mapping lives as long as the Arc held here). Anonymous mappings and alloc_zeroed are
        // all-zero, an EMPTY slot; a region's slots hold any words, and every bit pattern is a
        // valid AtomicU64 (states that mean nothing read as neither LIVE nor EMPTY).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: releases exactly what `zeroed` made, once (a region's mapping is the
        // region's to release). AtomicU64 needs no drop.
        unsafe {
            match self.backing {
                Backing::Anonymous(size) => {
                    libc::munmap(self.ptr.as_ptr().cast(), size);
                }
                Backing::Region(_) => {}
                Backing::Heap => std::alloc::dealloc(
                    self.ptr.as_ptr().cast(),
                    std::alloc::Layout::array::<Slot>(self.len).unwrap_or(std::alloc::Layout::new::<Slot>()),
                ),
            }
        }
    }
}

// SAFETY: Slots owns its memory exclusively, like a Box<[Slot]>; Slot is Send + Sync (atomics).
#[cfg(not(loom))]
unsafe impl Send for Slots {}
// SAFETY: as above: shared access only hands out &[Slot], and Slot is Sync.
#[cfg(not(loom))]
unsafe impl Sync for Slots {}

#[cfg(not(loom))]
fn zeroed_slots(n: usize) -> Slots {
    Slots::zeroed(n)
}

/// The slots of a session region.
#[cfg(not(loom))]
fn region_slots(region: std::sync::Arc<crate::region::Region>) -> Slots {
    let (at, n) = region.slot_words();
    // The region puts its slots on a 2 MiB boundary of a page-aligned mapping: 64-byte
    // aligned as a Slot must be.
    let ptr = at.cast::<Slot>();
    Slots { ptr, len: n, backing: Backing::Region(region) }
}

/// `n` atomic words at zero.
#[cfg(not(loom))]
fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
    let words = Box::<[AtomicU64]>::new_zeroed_slice(n);
    // SAFETY: AtomicU64 has the layout of u64, and all-zero bytes are the valid value 0.
    unsafe { words.assume_init() }
}

#[cfg(loom)]
fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// `n` counters at zero, from a zeroed allocation (touched only where used).
fn zeroed_counts(n: usize) -> Box<[AtomicU32]> {
    let counts = Box::<[AtomicU32]>::new_zeroed_slice(n);
    // SAFETY: AtomicU32 has the layout of u32, and all-zero bytes are the valid value 0.
    unsafe { counts.assume_init() }
}

#[cfg(loom)]
fn zeroed_slots(n: usize) -> Box<[Slot]> {
    (0..n).map(|_| Slot::new()).collect()
}

/// A consistent read of a LIVE slot.
struct Read {
    meta: u64,
    key: [u64; 3],
    value: [u64; 4],
}

/// Where an insert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Inserted at this slot.
    Inserted(usize),
    /// The key is already there (at this slot, with this session).
    Exists(usize, Session),
    /// No free slot within `MAX_PROBE` of its home.
    Full,
}

/// What [`SessionTable::recover`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sessions taken over.
    pub live: usize,
    /// Slots a killed writer left half written: discarded.
    pub torn: usize,
}

/// What one sweep step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Slots in the range swept.
    pub scanned: usize,
    /// Slots read: those marked in use.
    pub visited: usize,
    /// LIVE slots seen (and kept).
    pub live: usize,
    pub expired: usize,
    /// Tombstones turned back into empty slots.
    pub cleared: usize,
}

#[cfg(loom)]
type Slots = Box<[Slot]>;

/// +1 or -1 on a shared count; never below zero, whatever order decrements and increments
/// arrive in.
fn up_down(a: Option<&AtomicU32>, up: bool) {
    if let Some(a) = a {
        if up {
            a.fetch_add(1, Relaxed);
        } else {
            let _ = a.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        }
    }
}

/// The shared session table. `Send + Sync`; all methods take `&self`.
pub struct SessionTable {
    slots: Slots,
    /// One bit per slot (slot i: bit i % 64 of word i / 64), set for every slot that is not
    /// EMPTY, so that the sweep reads only those: its cost follows the live sessions, not the
    /// table's size. An insert sets its slot's bit after publishing the slot; only the sweep
    /// clears bits, of slots it found EMPTY ([`SessionTable::mark_free`]). A bit may be set for
    /// an EMPTY slot, and for a moment after an insert a slot may be in use with its bit still
    /// clear (a sweep passing then misses it once: it is new).
    used: Box<[AtomicU64]>,
    mask: usize,
    capacity: usize,
    seeds: [u64; 3],
    timeouts: TimeoutTicks,
    full: AtomicBool,
    /// Sessions per backend id (least-connections): +1 when a flow session is created, -1
    /// when it is removed or moved off the backend.
    active: Box<[AtomicU32]>,
    /// Sessions made per backend id since start (metrics: new sessions per backend).
    created: Box<[Counter]>,
    /// Flow sessions per service id (the concurrent-sessions limit), kept as `active` is.
    per_service: Box<[AtomicU32]>,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("slots", &self.slots.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SessionTable {
    /// A table for `capacity` sessions (rounded up: slots = next power of two >= 2 x capacity).
    /// `seed` keys the hash (use a random one: clients must not be able to aim collisions).
    pub fn new(capacity: usize, timeouts: Timeouts, seed: u64) -> SessionTable {
        let n = Self::slots_for(capacity);
        Self::with_slots(zeroed_slots(n), capacity, timeouts, Self::seeds_of(seed))
    }

    /// Slots of a table for `capacity` sessions: the next power of two at or above twice it.
    pub fn slots_for(capacity: usize) -> usize {
        (capacity.max(1) * 2).next_power_of_two().max(64)
    }

    /// The hash seeds a table keyed by `seed` uses (a session region keeps them).
    pub fn seeds_of(seed: u64) -> [u64; 3] {
        [mix64(seed ^ 1), mix64(seed ^ 2), mix64(seed ^ 3)]
    }

    /// The table in a session region, for `capacity` sessions (at most half its slots),
    /// keyed by the region's seeds, with whatever sessions it holds: [`SessionTable::recover`]
    /// them before any worker runs.
    #[cfg(not(loom))]
    pub fn in_region(
        region: std::sync::Arc<crate::region::Region>,
        capacity: usize,
        timeouts: Timeouts,
    ) -> SessionTable {
        let seeds = region.header().seeds;
        let slots = region_slots(region);
        let capacity = capacity.min(slots.len() / 2);
        Self::with_slots(slots, capacity, timeouts, seeds)
    }

    fn with_slots(slots: Slots, capacity: usize, timeouts: Timeouts, seeds: [u64; 3]) -> SessionTable {
        let n = slots.len();
        SessionTable {
            slots,
            used: zeroed_words(n / 64),
            mask: n - 1,
            capacity,
            seeds,
            timeouts: TimeoutTicks::new(&timeouts),
            full: AtomicBool::new(false),
            active: zeroed_counts(MAX_BACKEND_IDS),
            created: counters(MAX_BACKEND_IDS),
            per_service: zeroed_counts(MAX_SERVICE_IDS),
        }
    }

    /// The session region the table's slots live in, if they do.
    #[cfg(not(loom))]
    pub fn region(&self) -> Option<&crate::region::Region> {
        match &self.slots.backing {
            Backing::Region(r) => Some(r),
            _ => None,
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of the slot array and its bitmap.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>() + self.used.len() * 8
    }

    /// The slot-choosing hash of a key.
    #[inline(always)]
    pub fn hash(&self, key: &SessionKey) -> u64 {
        let w = key.words();
        mix64(
            (w[0] ^ self.seeds[0]).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ (w[1] ^ self.seeds[1]).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                ^ (w[2] ^ self.seeds[2]).wrapping_mul(0x1656_67b1_9e37_79f9),
        )
    }

    /// Brings the key's home slot into cache ahead of a lookup.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(s) = self.slots.get(hash as usize & self.mask) {
            prefetch(s as *const Slot);
        }
    }

    /// Whether new sessions should not be created (set by the sweep; see [`SessionTable::sweep`]).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.full.load(Relaxed)
    }

    pub fn set_full(&self, full: bool) {
        self.full.store(full, Relaxed);
    }

    /// Sessions on a backend id now.
    pub fn active(&self, backend: u32) -> u32 {
        self.active.get(backend as usize).map_or(0, |a| a.load(Relaxed))
    }

    /// Flow sessions of a service id now.
    #[inline]
    pub fn service_active(&self, service: u16) -> u32 {
        self.per_service.get(usize::from(service)).map_or(0, |a| a.load(Relaxed))
    }

    /// Sessions made for a backend id since the table was created.
    pub fn created(&self, backend: u32) -> u64 {
        self.created.get(backend as usize).map_or(0, |c| c.get())
    }

    fn count(&self, backend: u32, up: bool) {
        up_down(self.active.get(backend as usize), up);
    }

    fn count_service(&self, key: &SessionKey, up: bool) {
        up_down(self.per_service.get(key.ident as usize), up);
    }

    #[inline]
    fn slot(&self, i: usize) -> &Slot {
        &self.slots[i & self.mask]
    }

    /// A consistent read of slot `i`: `Ok(read)` if LIVE, `Err(state)` otherwise. A slot
    /// being written (BUSY) is waited for, briefly.
    fn read(&self, i: usize) -> Result<Read, u64> {
        let s = self.slot(i);
        for _ in 0..64 {
            let m1 = s.w[0].load(Ordering::Acquire);
            match state_of(m1) {
                LIVE => {}
                BUSY => {
                    std::hint::spin_loop();
                    #[cfg(loom)]
                    loom::thread::yield_now();
                    continue;
                }
                other => return Err(other),
            }
            let key = [
                s.w[1].load(Ordering::Relaxed),
                s.w[2].load(Ordering::Relaxed),
                s.w[3].load(Ordering::Relaxed),
            ];
            let value = [
                s.w[4].load(Ordering::Relaxed),
                s.w[5].load(Ordering::Relaxed),
                s.w[6].load(Ordering::Relaxed),
                s.w[7].load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            if s.w[0].load(Ordering::Relaxed) == m1 {
                return Ok(Read { meta: m1, key, value });
            }
        }
        Err(BUSY)
    }

    /// Finds a key. Returns its slot and session.
    #[inline]
    pub fn lookup(&self, key: &SessionKey, hash: u64) -> Option<(usize, Session)> {
        let (want, tag) = (key.words(), (hash >> 48) as u16);
        let home = hash as usize & self.mask;
        for d in 0..MAX_PROBE {
            let i = (home + d) & self.mask;
            match self.read(i) {
                Ok(r) if tag_of(r.meta) == tag && same_key(&r.key, &want) => {
                    return Some((i, Session::from_words(r.value)))
                }
                Ok(_) | Err(TOMB) | Err(BUSY) => {}
                Err(_) => return None, // EMPTY ends the probe sequence
            }
        }
        None
    }

    /// Inserts a session unless its key is already there.
    pub fn insert(&self, key: &SessionKey, hash: u64, session: &Session) -> Insert {
        let (want, tag) = (key.words(), (hash >> 48) as u16);
        let home = hash as usize & self.mask;
        'retry: for _ in 0..4 {
            let mut free: Option<(usize, u64)> = None;
            for d in 0..MAX_PROBE {
                let i = (home + d) & self.mask;
                match self.read(i) {
                    Ok(r) if tag_of(r.meta) == tag && same_key(&r.key, &want) => {
                        return Insert::Exists(i, Session::from_words(r.value));
                    }
                    Ok(_) | Err(BUSY) => {}
                    Err(state) => {
                        if free.is_none() {
                            free = Some((i, self.slot(i).w[0].load(Ordering::Relaxed)));
                        }
                        if state == EMPTY {
                            break;
                        }
                    }
                }
            }
            let Some((i, m)) = free else { return Insert::Full };
            if !matches!(state_of(m), EMPTY | TOMB) {
                continue 'retry;
            }
            let s = self.slot(i);
            if s.w[0]
                .compare_exchange(
                    m,
                    meta(seq_of(m).wrapping_add(1), BUSY, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue 'retry;
            }
            for (k, w) in want.iter().enumerate() {
                s.w[1 + k].store(*w, Ordering::Relaxed);
            }
            for (k, w) in session.words().iter().enumerate() {
                s.w[4 + k].store(*w, Ordering::Relaxed);
            }
            s.w[0].store(meta(seq_of(m).wrapping_add(2), LIVE, tag), Ordering::Release);
            self.mark_used(i);
            if key.kind == KeyKind::Flow {
                self.count(session.backend, true);
                self.count_service(key, true);
                if let Some(c) = self.created.get(session.backend as usize) {
                    // Any thread may insert: an atomic add, not the one-writer `Counter::add`.
                    c.fetch_add(1);
                }
            }
            return Insert::Inserted(i);
        }
        Insert::Full
    }

    /// Records a packet on the session at `slot` (found by `lookup`): last-seen tick and state.
    /// A relaxed store, and only when the state changed or last-seen is [`TOUCH_TICKS`] old:
    /// storing on every packet would dirty (and later write back) a cache line per packet, for
    /// timeouts measured in seconds.
    #[inline]
    pub fn touch(&self, slot: usize, seen: &Session, now: u32, state: TcpState) {
        if now.wrapping_sub(seen.last_seen) >= TOUCH_TICKS || seen.state != state {
            self.slot(slot).w[5].store(activity(now, state, seen), Ordering::Relaxed);
        }
    }

    /// Rewrites a session's backend (a remap), if the slot still holds `key`. True on success.
    pub fn set_backend(&self, slot: usize, key: &SessionKey, backend: u32, now: u32) -> bool {
        let s = self.slot(slot);
        let Ok(r) = self.read(slot) else { return false };
        if !same_key(&r.key, &key.words()) {
            return false;
        }
        if s.w[0]
            .compare_exchange(
                r.meta,
                meta(seq_of(r.meta).wrapping_add(1), BUSY, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        let old = Session::from_words(r.value);
        let new = Session { backend, last_seen: now, ..old };
        for (k, w) in new.words().iter().enumerate() {
            s.w[4 + k].store(*w, Ordering::Relaxed);
        }
        s.w[0].store(meta(seq_of(r.meta).wrapping_add(2), LIVE, tag_of(r.meta)), Ordering::Release);
        if key.kind == KeyKind::Flow {
            self.count(old.backend, false);
            self.count(backend, true);
        }
        true
    }

    /// Replaces the session at `slot` with `f(current)` if the slot still holds `key` and `f`
    /// gives a session; one attempt (a concurrent writer makes it fail). The new session, if
    /// written. (The SYN proxy moves a session from `Connecting` to established this way.)
    pub fn replace(
        &self,
        slot: usize,
        key: &SessionKey,
        f: impl FnOnce(&Session) -> Option<Session>,
    ) -> Option<Session> {
        let s = self.slot(slot);
        let r = self.read(slot).ok()?;
        if !same_key(&r.key, &key.words()) {
            return None;
        }
        let old = Session::from_words(r.value);
        let new = f(&old)?;
        s.w[0]
            .compare_exchange(
                r.meta,
                meta(seq_of(r.meta).wrapping_add(1), BUSY, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        for (k, w) in new.words().iter().enumerate() {
            s.w[4 + k].store(*w, Ordering::Relaxed);
        }
        s.w[0].store(meta(seq_of(r.meta).wrapping_add(2), LIVE, tag_of(r.meta)), Ordering::Release);
        if key.kind == KeyKind::Flow && new.backend != old.backend {
            self.count(old.backend, false);
            self.count(new.backend, true);
        }
        Some(new)
    }

    /// Removes the session at `slot` if it still holds `key`. True if this call removed it.
    pub fn remove(&self, slot: usize, key: &SessionKey) -> bool {
        let Ok(r) = self.read(slot) else { return false };
        if !same_key(&r.key, &key.words()) {
            return false;
        }
        self.kill(slot, &r)
    }

    /// LIVE -> TOMB for a read slot, if unchanged since.
    fn kill(&self, slot: usize, r: &Read) -> bool {
        let ok = self.slot(slot).w[0]
            .compare_exchange(
                r.meta,
                meta(seq_of(r.meta).wrapping_add(1), TOMB, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if let Some(k) = SessionKey::from_words(r.key).filter(|k| ok && k.kind == KeyKind::Flow) {
            self.count(Session::from_words(r.value).backend, false);
            self.count_service(&k, false);
        }
        ok
    }

    /// Takes over the slots another process left (a session region attached at start): reads
    /// every slot once; a slot its writer was killed in the middle of (BUSY, or a state that
    /// means nothing) becomes a tombstone, so the probe sequences through it stay whole and the
    /// sweep clears it; every slot in use is marked for the sweep, and the per-backend and
    /// per-service counts are counted again. Call before any worker or sweep runs.
    pub fn recover(&self) -> Recovered {
        let mut out = Recovered::default();
        for i in 0..self.slots.len() {
            let m = self.slot(i).w[0].load(Ordering::Acquire);
            match state_of(m) {
                EMPTY => continue,
                LIVE => match self.read(i) {
                    Ok(r) => {
                        out.live += 1;
                        if let Some(k) = SessionKey::from_words(r.key).filter(|k| k.kind == KeyKind::Flow) {
                            self.count(Session::from_words(r.value).backend, true);
                            self.count_service(&k, true);
                        }
                    }
                    Err(_) => continue,
                },
                TOMB => {}
                _ => {
                    self.slot(i).w[0].store(meta(seq_of(m).wrapping_add(1), TOMB, 0), Ordering::Release);
                    out.torn += 1;
                }
            }
            self.mark_used(i);
        }
        out
    }

    /// Expires idle sessions in slots `start..start + count` (wrapping), scanning backwards so
    /// that clearing tombstones cascades. `expired` is told of each session removed.
    pub fn sweep(
        &self,
        now: u32,
        start: usize,
        count: usize,
        expired: impl FnMut(&SessionKey, &Session),
    ) -> Sweep {
        self.sweep_with(now, start, count, expired, |_, _| {})
    }

    /// [`sweep`](Self::sweep), also telling `live` of each session that stays (session sync
    /// walks the table this way, in the same pass).
    pub fn sweep_with(
        &self,
        now: u32,
        start: usize,
        count: usize,
        mut expired: impl FnMut(&SessionKey, &Session),
        mut live: impl FnMut(&SessionKey, &Session),
    ) -> Sweep {
        let mut out = Sweep::default();
        let n = count.min(self.slots.len());
        out.scanned = n;
        // Slots start..start + left are still to do, from the top down; only those with their
        // bit set are read.
        let mut left = n;
        let mut word = usize::MAX;
        while left > 0 {
            let top = (start + left - 1) & self.mask;
            let bit = top % 64;
            if top / 64 != word {
                // Into a new word: ask for the slots in use SWEEP_AHEAD words further down, so
                // that their lines load while this word's slots are done.
                word = top / 64;
                self.prefetch_used(word.wrapping_sub(SWEEP_AHEAD) & (self.mask >> 6));
            }
            // This word's bits for slots top - bit ..= top.
            let bits =
                self.used.get(top / 64).map_or(0, |w| w.load(Ordering::Acquire)) & (u64::MAX >> (63 - bit));
            if bits == 0 {
                left = left.saturating_sub(bit + 1);
                continue;
            }
            let gap = bit - (63 - bits.leading_zeros() as usize);
            if gap >= left {
                break;
            }
            left -= gap + 1;
            let i = top - gap;
            out.visited += 1;
            if self.sweep_slot(i, now, &mut out, &mut expired, &mut live) {
                self.mark_free(i);
            }
        }
        out
    }

    /// Prefetches the slots in use of `used[word]`.
    fn prefetch_used(&self, word: usize) {
        let mut bits = self.used.get(word).map_or(0, |w| w.load(Ordering::Relaxed));
        while bits != 0 {
            prefetch_index(&self.slots, word * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }

    /// Sets slot `i`'s bit in `used`, after its writer published it.
    #[inline]
    fn mark_used(&self, i: usize) {
        if let Some(w) = self.used.get(i / 64) {
            w.fetch_or(1 << (i % 64), Ordering::Release);
        }
    }

    /// Clears the bit of slot `i`, which the sweep found EMPTY, unless a writer has taken the
    /// slot since. The writer sets the bit after its publishing store, so either its set comes
    /// after this clear (the bit stays set), or this clear reads it and so sees the store on
    /// the slot, and sets the bit again.
    fn mark_free(&self, i: usize) {
        let Some(w) = self.used.get(i / 64) else { return };
        let bit = 1u64 << (i % 64);
        w.fetch_and(!bit, Ordering::AcqRel);
        if state_of(self.slot(i).w[0].load(Ordering::Acquire)) != EMPTY {
            w.fetch_or(bit, Ordering::Release);
        }
    }

    /// The sweep's work on slot `i`: expire it if idle, clear it if a tombstone with nothing
    /// after it. True if the slot is EMPTY now.
    fn sweep_slot(
        &self,
        i: usize,
        now: u32,
        out: &mut Sweep,
        expired: &mut impl FnMut(&SessionKey, &Session),
        live: &mut impl FnMut(&SessionKey, &Session),
    ) -> bool {
        match self.read(i) {
            Ok(r) => {
                let s = Session::from_words(r.value);
                if idle(now, s.last_seen) > self.timeouts.of(&s) && self.kill(i, &r) {
                    out.expired += 1;
                    if let Some(key) = SessionKey::from_words(r.key) {
                        expired(&key, &s);
                    }
                } else {
                    out.live += 1;
                    if let Some(key) = SessionKey::from_words(r.key) {
                        live(&key, &s);
                    }
                }
                false
            }
            Err(TOMB) => {
                // A tombstone before an empty slot can become empty: no key lives past it
                // on behalf of a home before it. But an insert may have scanned past this
                // slot while it was still live and be about to claim the empty one after
                // it; emptying this slot under it would strand its key. So fence the next
                // slot first (a tombstone with a new sequence number: that insert's claim
                // fails and it scans again, and finds this slot), empty this one, and lift
                // the fence unless someone took the slot meanwhile.
                let next_slot = self.slot(i + 1);
                let next = next_slot.w[0].load(Ordering::Acquire);
                if state_of(next) != EMPTY {
                    return false;
                }
                let fence = meta(seq_of(next).wrapping_add(1), TOMB, 0);
                if next_slot.w[0].compare_exchange(next, fence, Ordering::AcqRel, Ordering::Relaxed).is_err()
                {
                    return false;
                }
                let m = self.slot(i).w[0].load(Ordering::Relaxed);
                let cleared = state_of(m) == TOMB
                    && self.slot(i).w[0]
                        .compare_exchange(
                            m,
                            meta(seq_of(m).wrapping_add(1), EMPTY, 0),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok();
                out.cleared += usize::from(cleared);
                let _ = next_slot.w[0].compare_exchange(
                    fence,
                    meta(seq_of(fence).wrapping_add(1), EMPTY, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                cleared
            }
            Err(state) => state == EMPTY,
        }
    }

    /// Calls `f` with every LIVE session (a consistent read of each; the table keeps changing
    /// meanwhile).
    pub fn for_each(&self, mut f: impl FnMut(&SessionKey, &Session)) {
        for i in 0..self.slots.len() {
            if let Ok(r) = self.read(i) {
                if let Some(k) = SessionKey::from_words(r.key) {
                    f(&k, &Session::from_words(r.value));
                }
            }
        }
    }

    /// Counts LIVE sessions (walks the whole table).
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(|_, _| n += 1);
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> SessionKey {
        SessionKey::flow(Addr::v4(Ipv4Addr::from(0xc612_0000 + i)), (i % 60000) as u16 + 1, (i % 3) as u16)
    }

    /// A mapped table is resident from the start: no worker takes its page faults.
    #[test]
    fn a_large_table_is_resident_when_made() {
        let t = SessionTable::new(1 << 16, Timeouts::default(), 1); // 128 K slots, 8 MiB
        let Backing::Anonymous(size) = t.slots.backing else { panic!("not mapped") };
        let at = t.slots.ptr.as_ptr() as usize;
        let pages = size / 4096;
        let mut resident = vec![0u8; pages];
        // SAFETY: [at, at + size) is the table's mapping, alive while `t` is; `resident` has one
        // byte per 4 KiB page of it.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, size, resident.as_mut_ptr()) };
        assert_eq!(r, 0);
        assert_eq!(resident.iter().filter(|&&b| b & 1 != 0).count(), pages, "every page resident");
        assert!(t.is_empty(), "and still all zero: every slot empty");
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        let t = SessionTable::new(1000, Timeouts::default(), 7);
        assert_eq!(t.slot_count(), 2048);
        assert_eq!(t.memory_bytes(), 2048 * 64 + 2048 / 8);
    }

    #[test]
    fn words_round_trip() {
        let k = SessionKey::flow(Addr(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210), 443, 7);
        assert_eq!(SessionKey::from_words(k.words()), Some(k));
        let p = SessionKey::persist(Addr::v4(Ipv4Addr::new(198, 18, 0, 2)), 65535);
        assert_eq!(SessionKey::from_words(p.words()), Some(p));
        let s = Session {
            backend: 0xdead_beef,
            state: TcpState::Closing,
            flags: flags::SYNCED,
            created: 5,
            last_seen: u32::MAX,
            seq_delta: 0x8000_0001,
            ts_delta: 9,
            timeout: 44,
            client_isn: 0xfedc_ba98,
            client_window: 0xfffe,
            end_synced: false,
        };
        assert_eq!(Session::from_words(s.words()), s);
        let p = Session { state: TcpState::Connecting, flags: 0xff, ..s };
        assert_eq!(Session::from_words(p.words()), p);
        for state in [TcpState::Finished, TcpState::NotTcp] {
            let e = Session { state, end_synced: true, ..s };
            assert_eq!(Session::from_words(e.words()), e);
        }
    }

    #[test]
    fn replace_rewrites_a_session_once() {
        use TcpState::{Connecting, Established};
        let t = SessionTable::new(100, Timeouts::default(), 1);
        let (k, h) = (key(2), t.hash(&key(2)));
        let Insert::Inserted(i) = t.insert(&k, h, &Session::new(3, Connecting, 1)) else { panic!() };
        let established = |s: &Session| {
            (s.state == Connecting).then_some(Session { state: Established, seq_delta: 5, ..*s })
        };
        assert_eq!(t.replace(i, &k, established).map(|s| s.seq_delta), Some(5));
        assert_eq!(t.lookup(&k, h).map(|(_, s)| (s.state, s.seq_delta)), Some((Established, 5)));
        assert_eq!(t.replace(i, &k, established), None, "only from Connecting: once");
        assert_eq!(t.replace(i, &key(3), |s| Some(*s)), None, "another key's slot");
        t.replace(i, &k, |s| Some(Session { backend: 4, ..*s }));
        assert_eq!((t.active(3), t.active(4)), (0, 1), "a new backend takes the count");
    }

    #[test]
    fn insert_lookup_remove() {
        let t = SessionTable::new(100, Timeouts::default(), 1);
        let k = key(1);
        let h = t.hash(&k);
        assert_eq!(t.lookup(&k, h), None);
        let s = Session { client_window: 777, ..Session::new(42, TcpState::SynSent, 10) };
        let Insert::Inserted(i) = t.insert(&k, h, &s) else { panic!() };
        assert_eq!(t.lookup(&k, h), Some((i, s)));
        assert_eq!(t.insert(&k, h, &Session::new(43, TcpState::SynSent, 11)), Insert::Exists(i, s));
        assert_eq!(t.active(42), 1);
        t.touch(i, &s, 12, TcpState::Established);
        let (_, now) = t.lookup(&k, h).unwrap();
        assert_eq!(now.client_window, s.client_window, "a touch keeps the rest of the word");
        assert_eq!(
            (now.last_seen, now.state, now.backend),
            (12, TcpState::Established, 42),
            "state changed: stored"
        );
        t.touch(i, &now, 13, TcpState::Established);
        assert_eq!(t.lookup(&k, h).unwrap().1.last_seen, 12, "same state, 1 tick later: not stored");
        t.touch(i, &now, 12 + TOUCH_TICKS, TcpState::Established);
        assert_eq!(t.lookup(&k, h).unwrap().1.last_seen, 12 + TOUCH_TICKS, "a second later: stored");
        assert!(t.set_backend(i, &k, 7, 13));
        assert_eq!(t.lookup(&k, h).unwrap().1.backend, 7);
        assert_eq!((t.active(42), t.active(7)), (0, 1));
        assert!(!t.remove(i, &key(2)), "another key: refused");
        assert!(t.remove(i, &k));
        assert!(!t.remove(i, &k));
        assert_eq!(t.lookup(&k, h), None);
        assert_eq!(t.active(7), 0);
    }

    #[test]
    fn sessions_are_counted_per_service() {
        let t = SessionTable::new(1000, Timeouts::default(), 1);
        // key(i) is of service i % 3.
        let slots: Vec<(usize, SessionKey)> = (0..30)
            .map(|i| {
                let k = key(i);
                let Insert::Inserted(slot) = t.insert(&k, t.hash(&k), &Session::new(1, TcpState::SynSent, 0))
                else {
                    panic!()
                };
                (slot, k)
            })
            .collect();
        assert_eq!((0..3).map(|s| t.service_active(s)).collect::<Vec<_>>(), [10, 10, 10]);
        // A persistence entry is not a connection.
        let p = SessionKey::persist(Addr::v4(Ipv4Addr::new(198, 18, 0, 1)), 1);
        t.insert(&p, t.hash(&p), &Session::new(1, TcpState::NotTcp, 0));
        assert_eq!(t.service_active(1), 10);
        for (slot, k) in slots.iter().filter(|(_, k)| k.ident == 2) {
            assert!(t.remove(*slot, k));
        }
        assert_eq!((0..3).map(|s| t.service_active(s)).collect::<Vec<_>>(), [10, 10, 0]);
        // Expiry counts down too.
        t.sweep(u32::MAX / 2, 0, t.slot_count(), |_, _| {});
        assert_eq!((t.service_active(0), t.service_active(1)), (0, 0));
    }

    #[test]
    fn state_machine() {
        use crate::wire::tcp::{ACK, FIN, PSH, RST, SYN};
        use TcpState::*;
        assert_eq!(TcpState::next(None, Some(SYN)), SynSent);
        assert_eq!(TcpState::next(Some(SynSent), Some(ACK)), Established);
        assert_eq!(TcpState::next(Some(Established), Some(ACK | PSH)), Established);
        assert_eq!(TcpState::next(Some(Established), Some(SYN)), Established, "a retransmitted SYN");
        assert_eq!(TcpState::next(Some(Established), Some(FIN | ACK)), Closing);
        assert_eq!(TcpState::next(Some(Closing), Some(ACK)), Closing);
        assert_eq!(TcpState::next(Some(Established), Some(RST)), Closed);
        assert_eq!(TcpState::next(None, Some(ACK)), Established, "mid-flow: established");
        assert_eq!(TcpState::next(None, None), TcpState::NotTcp);
    }

    /// A FIN each way ends a connection, in either order; one FIN (twice) does not; a RST ends
    /// it from any state and stays; the last ACK changes nothing.
    #[test]
    fn fins_both_ways_or_a_rst_end_a_connection() {
        use crate::wire::tcp::{ACK, FIN, RST};
        use TcpState::*;
        let (client, server) = (|s, f| TcpState::next(Some(s), Some(f)), TcpState::after_reply);
        assert_eq!(server(Established, Some(FIN | ACK)), ServerClosing);
        assert_eq!(server(ServerClosing, Some(FIN | ACK)), ServerClosing, "the server's FIN again");
        assert_eq!(client(ServerClosing, ACK), ServerClosing, "the client still sends");
        assert_eq!(client(ServerClosing, FIN | ACK), Finished);
        assert_eq!(client(Closing, FIN | ACK), Closing, "the client's FIN again");
        assert_eq!(server(Closing, Some(ACK)), Closing, "the server still sends");
        assert_eq!(server(Closing, Some(FIN | ACK)), Finished);
        assert_eq!(client(Finished, ACK), Finished);
        assert_eq!(server(Finished, Some(ACK)), Finished);
        assert_eq!(client(Finished, RST), Closed);
        assert_eq!(server(Established, Some(RST)), Closed);
        assert_eq!(client(Closed, FIN | ACK), Closed);
        assert_eq!(server(Closed, Some(FIN | ACK)), Closed);
        let ended: Vec<TcpState> = (0..=7).map(TcpState::from_u8).filter(|s| s.has_ended()).collect();
        assert_eq!(ended, [Closed, Finished]);
        let closing: Vec<TcpState> = (0..=7).map(TcpState::from_u8).filter(|s| s.is_closing()).collect();
        assert_eq!(closing, [Closing, Closed, ServerClosing, Finished]);
        assert_eq!((0..=7).map(|v| TcpState::from_u8(v) as u8).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// The end-synced mark lives beside the state: packets that change the state or refresh
    /// last-seen keep it, and it never reads as a state.
    #[test]
    fn the_end_synced_mark_survives_touches() {
        let t = SessionTable::new(100, Timeouts::default(), 1);
        let (k, h) = (key(5), t.hash(&key(5)));
        let Insert::Inserted(i) = t.insert(&k, h, &Session::new(3, TcpState::Finished, 10)) else { panic!() };
        let marked = t.replace(i, &k, |s| Some(Session { end_synced: true, ..*s })).unwrap();
        assert_eq!(t.lookup(&k, h).unwrap().1, marked);
        t.touch(i, &marked, 50, TcpState::Closed);
        let (_, s) = t.lookup(&k, h).unwrap();
        assert_eq!((s.state, s.last_seen, s.end_synced), (TcpState::Closed, 50, true));
        // Ended sessions time out as closing ones did: Finished as Closing, Closed as before.
        let to = Timeouts { tcp_closing: 7, tcp_closed: 3, ..Timeouts::default() };
        let ticks_of = TimeoutTicks::new(&to);
        let of = |state| ticks_of.of(&Session { end_synced: true, ..Session::new(1, state, 0) });
        assert_eq!(
            [
                of(TcpState::Closing),
                of(TcpState::ServerClosing),
                of(TcpState::Finished),
                of(TcpState::Closed)
            ],
            [ticks(7), ticks(7), ticks(7), ticks(3)]
        );
    }

    #[test]
    fn sweep_expires_by_state_and_clears_tombstones() {
        let to = Timeouts { tcp_syn: 1, tcp_established: 10, tcp_closing: 1, tcp_closed: 1, udp: 5 };
        let t = SessionTable::new(1000, to, 3);
        let t0 = 100;
        let mk = |i: u32, st: TcpState| {
            let k = key(i);
            let h = t.hash(&k);
            assert!(matches!(t.insert(&k, h, &Session::new(i, st, t0)), Insert::Inserted(_)));
            (k, h)
        };
        let syn = mk(1, TcpState::SynSent);
        let est = mk(2, TcpState::Established);
        let udp = mk(3, TcpState::NotTcp);
        let mut gone = Vec::new();
        // After 2 s: the SYN (1 s) is gone, established (10 s) and UDP (5 s) stay.
        let s1 = t.sweep(t0 + ticks(2), 0, t.slot_count(), |k, _| gone.push(*k));
        assert_eq!((s1.expired, s1.live), (1, 2));
        assert_eq!(gone, [syn.0]);
        assert!(t.lookup(&syn.0, syn.1).is_none() && t.lookup(&est.0, est.1).is_some());
        let s2 = t.sweep(t0 + ticks(6), 0, t.slot_count(), |_, _| {});
        assert_eq!((s2.expired, s2.live), (1, 1));
        assert!(t.lookup(&udp.0, udp.1).is_none());
        let s3 = t.sweep(t0 + ticks(60), 0, t.slot_count(), |_, _| {});
        assert_eq!((s3.expired, s3.live), (1, 0));
        // A slot expired in a pass is cleared in a later one; all three end up empty again.
        let s4 = t.sweep(t0 + ticks(60), 0, t.slot_count(), |_, _| {});
        assert_eq!(s1.cleared + s2.cleared + s3.cleared + s4.cleared, 3);
        let tombs = t.slots.iter().filter(|s| state_of(s.w[0].load(Ordering::Relaxed)) == TOMB).count();
        assert_eq!(tombs, 0);
        assert!(t.is_empty());
    }

    /// The sweep reads only slots marked in use, in any slice of the table, and a slot it
    /// empties stops being read.
    #[test]
    fn a_sweep_reads_only_the_slots_in_use() {
        let to = Timeouts { udp: 1, ..Timeouts::default() };
        let t = SessionTable::new(4096, to, 3);
        let keys: Vec<SessionKey> = (0..100).map(key).collect();
        for k in &keys {
            assert!(matches!(
                t.insert(k, t.hash(k), &Session::new(1, TcpState::NotTcp, 0)),
                Insert::Inserted(_)
            ));
        }
        let (mut seen, mut visited) = (0, 0);
        // In slices that start and end inside bitmap words, wrapping past the end.
        let slice = 1000;
        for at in (0..t.slot_count()).step_by(slice) {
            let count = slice.min(t.slot_count() - at);
            let r = t.sweep_with(0, 77 + at, count, |_, _| panic!("nothing is idle yet"), |_, _| seen += 1);
            visited += r.visited;
        }
        assert_eq!(seen, 100);
        assert_eq!(visited, 100, "of {} slots", t.slot_count());
        // Expired in one pass, cleared in the next; then nothing is read.
        let late = ticks(10);
        assert_eq!(t.sweep(late, 0, t.slot_count(), |_, _| {}).expired, 100);
        assert_eq!(t.sweep(late, 0, t.slot_count(), |_, _| {}).cleared, 100);
        assert_eq!(t.sweep(late, 0, t.slot_count(), |_, _| {}).visited, 0);
        // A slot freed and used again is read again.
        let k = key(7);
        assert!(matches!(
            t.insert(&k, t.hash(&k), &Session::new(1, TcpState::NotTcp, late)),
            Insert::Inserted(_)
        ));
        let r = t.sweep(late, 0, t.slot_count(), |_, _| {});
        assert_eq!((r.visited, r.live), (1, 1));
    }

    #[test]
    fn a_per_session_timeout_overrides_the_state() {
        let t = SessionTable::new(10, Timeouts::default(), 3);
        let k = SessionKey::persist(Addr::v4(Ipv4Addr::new(198, 18, 0, 9)), 1);
        let h = t.hash(&k);
        let s = Session { timeout: ticks(3), ..Session::new(5, TcpState::NotTcp, 0) };
        t.insert(&k, h, &s);
        assert_eq!(t.sweep(ticks(2), 0, t.slot_count(), |_, _| {}).expired, 0);
        assert_eq!(t.sweep(ticks(4), 0, t.slot_count(), |_, _| {}).expired, 1);
    }

    #[test]
    fn full_neighbourhood_is_reported_not_hidden() {
        // A tiny table: 64 slots. Fill every slot, then an insert has nowhere to go.
        let t = SessionTable::new(1, Timeouts::default(), 9);
        let mut n = 0;
        let mut i = 0;
        while n < t.slot_count() && i < 100_000 {
            let k = key(i);
            if matches!(t.insert(&k, t.hash(&k), &Session::new(1, TcpState::NotTcp, 0)), Insert::Inserted(_))
            {
                n += 1;
            }
            i += 1;
        }
        assert_eq!(n, t.slot_count());
        let k = key(1_000_000);
        assert_eq!(t.insert(&k, t.hash(&k), &Session::new(1, TcpState::NotTcp, 0)), Insert::Full);
        assert_eq!(t.len(), 64);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Lookup(u32),
        Remove(u32),
        Touch(u32, u32),
        Advance(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..200, 0u32..50).prop_map(|(k, b)| Op::Insert(k, b)),
            (0u32..200).prop_map(Op::Lookup),
            (0u32..200).prop_map(Op::Remove),
            (0u32..200, 0u32..40).prop_map(|(k, d)| Op::Touch(k, d)),
            (0u32..40).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The table against a HashMap model: inserts, lookups, removes, activity and expiry
        /// (UDP timeout 1 s = 15 ticks) in any order give the same answers.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..400)) {
            let to = Timeouts { udp: 1, ..Timeouts::default() };
            let limit = ticks(1);
            let t = SessionTable::new(64, to, 11);
            let mut model: HashMap<u32, (u32, u32)> = HashMap::new(); // key -> (backend, last_seen)
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op::Insert(k, b) => {
                        let sk = key(k);
                        let r = t.insert(&sk, t.hash(&sk), &Session::new(b, TcpState::NotTcp, now));
                        match model.get(&k) {
                            Some(&(mb, _)) => prop_assert!(matches!(r, Insert::Exists(_, s) if s.backend == mb)),
                            None => {
                                prop_assert!(matches!(r, Insert::Inserted(_)));
                                model.insert(k, (b, now));
                            }
                        }
                    }
                    Op::Lookup(k) => {
                        let sk = key(k);
                        let got = t.lookup(&sk, t.hash(&sk)).map(|(_, s)| (s.backend, s.last_seen));
                        prop_assert_eq!(got, model.get(&k).copied());
                    }
                    Op::Remove(k) => {
                        let sk = key(k);
                        if let Some((i, _)) = t.lookup(&sk, t.hash(&sk)) {
                            prop_assert!(t.remove(i, &sk));
                        }
                        model.remove(&k);
                    }
                    Op::Touch(k, d) => {
                        let sk = key(k);
                        if let Some((i, s)) = t.lookup(&sk, t.hash(&sk)) {
                            t.touch(i, &s, now + d, TcpState::NotTcp);
                            // Stored only when at least TOUCH_TICKS newer.
                            if (now + d).wrapping_sub(s.last_seen) >= TOUCH_TICKS {
                                model.insert(k, (s.backend, now + d));
                            }
                        }
                    }
                    Op::Advance(d) => {
                        now += d;
                        let mut expired = Vec::new();
                        t.sweep(now, 0, t.slot_count(), |sk, _| expired.push(*sk));
                        let want: Vec<u32> =
                            model.iter().filter(|(_, &(_, seen))| idle(now, seen) > limit).map(|(&k, _)| k).collect();
                        prop_assert_eq!(expired.len(), want.len());
                        for k in want {
                            prop_assert!(expired.contains(&key(k)));
                            model.remove(&k);
                        }
                        // Every session left is seen by a sweep, in slices of any size.
                        let mut live = 0;
                        for start in (0..t.slot_count()).step_by(13) {
                            t.sweep_with(now, start, 13.min(t.slot_count() - start), |_, _| {}, |_, _| live += 1);
                        }
                        prop_assert_eq!(live, model.len());
                    }
                }
            }
        }
    }

    /// The control thread inserts while workers look up: every key a worker looks up after the
    /// insert returned is found, with the inserted session, never torn.
    #[test]
    fn concurrent_insert_and_lookup() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let t = Arc::new(SessionTable::new(200_000, Timeouts::default(), 5));
        let published = Arc::new(AtomicUsize::new(0));
        let n = 100_000u32;
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (t, published) = (Arc::clone(&t), Arc::clone(&published));
                std::thread::spawn(move || {
                    let mut checked = 0u64;
                    loop {
                        let upto = published.load(std::sync::atomic::Ordering::Acquire);
                        for i in (r as usize..upto).step_by(97) {
                            let k = key(i as u32);
                            let (_, s) = t.lookup(&k, t.hash(&k)).expect("published key found");
                            assert_eq!((s.backend, s.created), (i as u32, i as u32 ^ 0x5555), "torn read");
                            checked += 1;
                        }
                        if upto == n as usize {
                            return checked;
                        }
                    }
                })
            })
            .collect();
        for i in 0..n {
            let k = key(i);
            let s = Session { created: i ^ 0x5555, ..Session::new(i, TcpState::Established, 0) };
            assert!(matches!(t.insert(&k, t.hash(&k), &s), Insert::Inserted(_)));
            published.store(i as usize + 1, std::sync::atomic::Ordering::Release);
        }
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(t.len(), n as usize);
    }
}

#[cfg(all(test, not(loom)))]
mod idle_tests {
    use super::*;
    use crate::flow::Addr;
    use std::net::Ipv4Addr;

    #[test]
    fn a_session_stamped_after_the_sweep_began_is_not_expired() {
        let t = SessionTable::new(16, Timeouts::default(), 1);
        let k = SessionKey::flow(Addr::v4(Ipv4Addr::new(198, 18, 1, 10)), 4000, 1);
        let now = 1000;
        // A worker stamped it one tick after the sweep read the clock.
        t.insert(&k, t.hash(&k), &Session::new(1, TcpState::Established, now + 1));
        let s = t.sweep(now, 0, t.slot_count(), |_, _| {});
        assert_eq!((s.expired, s.live), (0, 1));
        assert_eq!(idle(now, now + 1), 0);
        assert_eq!(idle(now + 5, now), 5);
        assert_eq!(idle(3, u32::MAX), 4, "across the wrap");
    }
}

/// Model checks of the slot protocol (`RUSTFLAGS="--cfg loom" cargo test -p sluice-dataplane
/// --lib --release session::loom`): every interleaving loom explores.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use std::net::Ipv4Addr;

    fn small() -> SessionTable {
        SessionTable {
            slots: (0..4).map(|_| Slot::new()).collect(),
            used: zeroed_words(1),
            mask: 3,
            capacity: 2,
            seeds: [1, 2, 3],
            timeouts: TimeoutTicks::new(&Timeouts::default()),
            full: AtomicBool::new(false),
            active: (0..4).map(|_| AtomicU32::new(0)).collect(),
            created: counters(4),
            per_service: (0..4).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn key(i: u32) -> SessionKey {
        SessionKey::flow(Addr::v4(Ipv4Addr::from(i)), 1, 0)
    }

    /// A reader racing an insert sees nothing or the whole session, never a mix. The reader
    /// polls with yields so that loom tries it at every point of the writer's progress.
    #[test]
    fn lookup_during_insert_is_never_torn() {
        loom::model(|| {
            let t = Arc::new(small());
            let t2 = Arc::clone(&t);
            let k = key(9);
            let h = t.hash(&k);
            let w = loom::thread::spawn(move || {
                let s = Session { created: 77, seq_delta: 88, ..Session::new(3, TcpState::SynSent, 5) };
                t2.insert(&k, h, &s);
            });
            loop {
                if let Some((_, s)) = t.lookup(&k, h) {
                    assert_eq!((s.backend, s.created, s.seq_delta, s.last_seen), (3, 77, 88, 5));
                    break;
                }
                loom::thread::yield_now();
            }
            w.join().unwrap();
        });
    }

    /// A table attached after its writer was killed mid-insert (a slot left BUSY): once
    /// `recover` has run, a worker's insert of a key homed on that slot and the sweep racing it
    /// both finish (no spin on the dead writer's slot), and a session past it stays found.
    #[test]
    fn a_torn_slot_recovered_takes_an_insert_while_the_sweep_runs() {
        loom::model(|| {
            let t = Arc::new(small());
            let (torn, past) = (key(1), key(2));
            let home = t.hash(&torn) as usize & t.mask;
            // The dead writer's slot at `torn`'s home, and a session one slot on.
            t.slot(home).w[0].store(meta(7, BUSY, 0), Ordering::Relaxed);
            let s = Session::new(2, TcpState::Established, 5);
            let hp = (t.hash(&past) & !(t.mask as u64)) | ((home as u64 + 1) & t.mask as u64);
            assert!(matches!(t.insert(&past, hp, &s), Insert::Inserted(_)));
            assert_eq!(t.recover(), Recovered { live: 1, torn: 1 });
            let t2 = Arc::clone(&t);
            let sweeper = loom::thread::spawn(move || {
                t2.sweep(6, 0, 4, |_, _| {});
            });
            let h = t.hash(&torn);
            assert!(matches!(
                t.insert(&torn, h, &Session::new(1, TcpState::SynSent, 6)),
                Insert::Inserted(_)
            ));
            sweeper.join().unwrap();
            assert_eq!(t.lookup(&torn, h).map(|(_, s)| s.backend), Some(1));
            assert_eq!(t.lookup(&past, hp).map(|(_, s)| s.backend), Some(2));
        });
    }

    /// A remap racing a lookup: the reader sees the old backend or the new, whole.
    #[test]
    fn lookup_during_remap_sees_old_or_new() {
        loom::model(|| {
            let t = Arc::new(small());
            let k = key(4);
            let h = t.hash(&k);
            let Insert::Inserted(i) =
                t.insert(&k, h, &Session { created: 1, ..Session::new(1, TcpState::Established, 1) })
            else {
                panic!()
            };
            let t2 = Arc::clone(&t);
            // The remap changes two words (backend and last-seen); a torn read would mix them.
            let w = loom::thread::spawn(move || assert!(t2.set_backend(i, &k, 2, 9)));
            loop {
                if let Some((_, s)) = t.lookup(&k, h) {
                    let seen = (s.backend, s.last_seen);
                    assert!(seen == (1, 1) || seen == (2, 9), "torn: {seen:?}");
                    if s.backend == 2 {
                        break;
                    }
                }
                loom::thread::yield_now();
            }
            w.join().unwrap();
        });
    }

    /// An insert that scanned past a live session, racing that session's removal and a sweep
    /// that clears its tombstone: the new key must stay reachable from its home.
    #[test]
    fn an_insert_is_not_stranded_by_a_sweep_clearing_the_slot_before_it() {
        loom::model(|| {
            let t = Arc::new(small());
            let (a, b) = (key(1), key(2));
            // Both keys get home slot 1 (the hash is the caller's to give).
            let Insert::Inserted(i) = t.insert(&a, 1, &Session::new(1, TcpState::Established, 1)) else {
                panic!()
            };
            let t2 = Arc::clone(&t);
            let sweeper = loom::thread::spawn(move || {
                assert!(t2.remove(i, &a));
                t2.sweep(1, 1, 1, |_, _| {});
            });
            let r = t.insert(&b, 1, &Session::new(2, TcpState::Established, 1));
            assert!(matches!(r, Insert::Inserted(_)), "{r:?}");
            sweeper.join().unwrap();
            assert!(t.lookup(&b, 1).is_some(), "the key inserted is found from its home");
        });
    }

    /// An insert racing a sweep that finds the slot empty and clears its bit: the session
    /// ends up marked in use, so the next sweep still sees it.
    #[test]
    fn a_sweep_clearing_a_bit_does_not_hide_an_insert() {
        loom::model(|| {
            let t = Arc::new(small());
            // Slot 1 empty with its bit set, as a sweep finds a slot it emptied before.
            t.used[0].fetch_or(0b10, Ordering::Relaxed);
            let t2 = Arc::clone(&t);
            let sweeper = loom::thread::spawn(move || {
                t2.sweep(1, 1, 1, |_, _| {});
            });
            let k = key(3);
            assert!(matches!(
                t.insert(&k, 1, &Session::new(1, TcpState::Established, 1)),
                Insert::Inserted(1)
            ));
            sweeper.join().unwrap();
            let r = t.sweep(1, 0, 4, |_, _| {});
            assert_eq!(r.live, 1, "the session is swept: {r:?}");
        });
    }

    /// Two threads removing the same session: exactly one succeeds, the count drops once.
    #[test]
    fn one_remove_wins() {
        loom::model(|| {
            let t = Arc::new(small());
            let k = key(5);
            let h = t.hash(&k);
            let Insert::Inserted(i) = t.insert(&k, h, &Session::new(1, TcpState::Established, 1)) else {
                panic!()
            };
            let t2 = Arc::clone(&t);
            let w = loom::thread::spawn(move || t2.remove(i, &k));
            let mine = t.remove(i, &k);
            let theirs = w.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(t.active(1), 0);
        });
    }
}
