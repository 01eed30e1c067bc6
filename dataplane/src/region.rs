//! The session state's shared-memory region: a file that outlives the process (on hugetlbfs
//! where huge pages are mounted, in `/dev/shm` otherwise), so that a restarted or upgraded
//! sluiced attaches to the old one's sessions and forwards its connections from its first
//! packet.
//!
//! ```text
//! [0, 4 KiB)              header: magic, layout version, slot count, capacity, the table's
//!                         hash seeds, the clock's epoch (checksummed); the SYN proxy's cookie
//!                         keys (checksummed on their own: the control thread rotates them)
//! [4 KiB, +2 x IDS_BYTES) the service and backend identity map, two copies, each with a
//!                         sequence number, length and checksum: the newer valid one counts
//! [SLOTS_AT, +slots x 64) the session table's slots (session.rs), 2 MiB aligned
//! [hold, +HOLD_AREA)      the SYN proxy's held segments (synproxy.rs), at the next 2 MiB
//!                         boundary past the slots
//! ```
//!
//! All integers are little-endian. A region is used only if its magic, layout version,
//! header checksum and slot count are what this binary makes; anything else is reported in one
//! line ([`Mismatch`]) and the caller starts fresh or refuses. The header's fixed part is
//! written once, when the region is made; the identity map and the cookie keys are rewritten
//! by the control thread (never by workers), the map before any session can name a new id.
//! A process killed in the middle of such a write leaves the other copy (or, for the cookie
//! keys, a checksum that fails: fresh keys, and the handshakes under way retry).
//!
//! Parsing (`Header::parse`, `IdMap::decode`) takes bytes and is fuzzed; the mapping is the
//! only `unsafe` here.

use crate::flow::Addr;
use crate::hash::mix64;
use std::path::{Path, PathBuf};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"SLUICE\0R";

/// The layout of everything in the region: the header, the identity map's encoding and the
/// session slots' words (session.rs's table of them). A binary that changes any of them bumps
/// it; a region of another layout is never read.
pub const LAYOUT_VERSION: u32 = 2;

/// The header page.
pub const HEADER_BYTES: usize = 4096;

/// One copy of the identity map: its 24-byte prefix and room for 65,536 services and as many
/// backends (22 and 24 bytes each).
pub const IDS_BYTES: usize = 4 << 20;

/// Where the slots start: past both copies of the map, on a 2 MiB boundary (huge pages).
pub const SLOTS_AT: usize = 10 << 20;

const SLOT_BYTES: usize = 64;

/// Room for the SYN proxy's held segments (its pool's entries, `repr(C)`).
pub const HOLD_AREA: usize = 8 << 20;

const HUGE: u64 = 2 << 20;

/// Offsets in the header page.
const FIXED_END: usize = 64;
const FIXED_SUM: usize = 64;
const COOKIE_AT: usize = 72;
const COOKIE_SUM: usize = COOKIE_AT + 48;

/// The header's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub layout: u32,
    /// Slots in the table (a power of two).
    pub slots: u64,
    /// Sessions the table was made for.
    pub capacity: u64,
    /// The session table's hash seeds.
    pub seeds: [u64; 3],
    /// The monotonic clock's reading (ns) when the region was made: the sessions' ticks count
    /// from it, in every process that attaches.
    pub epoch_ns: u64,
}

/// Why a region file is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    TooShort(usize),
    Magic,
    Layout { found: u32, want: u32 },
    Checksum,
    Slots { found: u64, want: u64 },
    Size { found: u64, want: u64 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::TooShort(n) => write!(f, "{n} bytes, shorter than its header"),
            Mismatch::Magic => write!(f, "not a sluice session region (magic)"),
            Mismatch::Layout { found, want } => {
                write!(f, "layout version {found}, this binary's is {want}")
            }
            Mismatch::Checksum => write!(f, "header checksum does not match (torn or foreign)"),
            Mismatch::Slots { found, want } => {
                write!(f, "{found} slots, the configured capacity makes {want}")
            }
            Mismatch::Size { found, want } => write!(f, "{found} bytes, its header makes {want}"),
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// A checksum of `bytes` (not cryptographic: it tells torn and foreign bytes from ours).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h = mix64(bytes.len() as u64 ^ 0x5eed_5e55_1011_0000);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix64(h ^ u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix64(h ^ u64::from_le_bytes(tail))
}

impl Header {
    /// The header page's fixed part, checksummed.
    pub fn encode(&self, page: &mut [u8]) {
        if page.len() < HEADER_BYTES {
            return;
        }
        page[..8].copy_from_slice(&MAGIC);
        page[8..12].copy_from_slice(&self.layout.to_le_bytes());
        page[12..16].fill(0);
        put64(page, 16, self.slots);
        put64(page, 24, self.capacity);
        for (i, s) in self.seeds.iter().enumerate() {
            put64(page, 32 + 8 * i, *s);
        }
        put64(page, 56, self.epoch_ns);
        let sum = checksum(&page[..FIXED_END]);
        put64(page, FIXED_SUM, sum);
    }

    /// The header of a region file whose first bytes are `page`, if it is one this binary
    /// uses for a table of `want_slots` slots.
    pub fn parse(page: &[u8], want_slots: u64) -> Result<Header, Mismatch> {
        if page.len() < HEADER_BYTES {
            return Err(Mismatch::TooShort(page.len()));
        }
        if page[..8] != MAGIC {
            return Err(Mismatch::Magic);
        }
        let layout = u32::from_le_bytes([page[8], page[9], page[10], page[11]]);
        if layout != LAYOUT_VERSION {
            return Err(Mismatch::Layout { found: layout, want: LAYOUT_VERSION });
        }
        if checksum(&page[..FIXED_END]) != le64(page, FIXED_SUM) {
            return Err(Mismatch::Checksum);
        }
        let h = Header {
            layout,
            slots: le64(page, 16),
            capacity: le64(page, 24),
            seeds: [le64(page, 32), le64(page, 40), le64(page, 48)],
            epoch_ns: le64(page, 56),
        };
        if h.slots != want_slots {
            return Err(Mismatch::Slots { found: h.slots, want: want_slots });
        }
        Ok(h)
    }

    /// Where the held segments start in a region of this many slots: the first 2 MiB
    /// boundary past the slots.
    pub fn hold_at(slots: u64) -> u64 {
        (SLOTS_AT as u64).saturating_add(slots.saturating_mul(SLOT_BYTES as u64)).div_ceil(HUGE) * HUGE
    }

    /// The size of a region file for this many slots: whole 2 MiB pages (hugetlbfs sizes
    /// files only so).
    pub fn file_bytes(slots: u64) -> u64 {
        Self::hold_at(slots).saturating_add(HOLD_AREA as u64)
    }
}

/// The SYN proxy's cookie keys as the header keeps them: the fixed key, then one per slot.
pub type CookieWords = ([u64; 2], [[u64; 2]; 2]);

/// Writes the cookie keys into the header page, checksummed.
pub fn encode_cookie(page: &mut [u8], (base, slots): CookieWords) {
    let words = [base[0], base[1], slots[0][0], slots[0][1], slots[1][0], slots[1][1]];
    for (i, w) in words.iter().enumerate() {
        put64(page, COOKIE_AT + 8 * i, *w);
    }
    if let Some(b) = page.get(COOKIE_AT..COOKIE_SUM) {
        let sum = checksum(b);
        put64(page, COOKIE_SUM, sum);
    }
}

/// The cookie keys in the header page, if they are whole.
pub fn decode_cookie(page: &[u8]) -> Option<CookieWords> {
    let b = page.get(COOKIE_AT..COOKIE_SUM)?;
    if checksum(b) != le64(page, COOKIE_SUM) || b.iter().all(|&x| x == 0) {
        return None;
    }
    let w = |i: usize| le64(page, COOKIE_AT + 8 * i);
    Some(([w(0), w(1)], [[w(2), w(3)], [w(4), w(5)]]))
}

/// Which id each service and backend has: what a restarted process must give the same
/// services and backends for its old sessions to name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// (VIP, port, protocol number) and the service's id.
    pub services: Vec<(Addr, u16, u8, u16)>,
    /// (service id, address, NAT port or 0) and the backend's id.
    pub backends: Vec<(u16, Addr, u16, u32)>,
    /// The next ids to give (ids are never reused within a region's life).
    pub next_service: u32,
    pub next_backend: u32,
}

const SERVICE_BYTES: usize = 22;
const BACKEND_BYTES: usize = 24;
/// A copy's prefix: sequence, payload length, payload checksum.
const COPY_PREFIX: usize = 24;

/// Why an identity map's bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsError {
    Truncated,
    TooLarge,
    /// A byte that must be zero is not: not bytes `encode` wrote.
    Malformed,
}

impl IdMap {
    /// The map as bytes (at most `IDS_BYTES - 24`).
    pub fn encode(&self) -> Result<Vec<u8>, IdsError> {
        let len = 16 + self.services.len() * SERVICE_BYTES + self.backends.len() * BACKEND_BYTES;
        if len > IDS_BYTES - COPY_PREFIX {
            return Err(IdsError::TooLarge);
        }
        let mut b = Vec::with_capacity(len);
        for n in
            [self.services.len() as u32, self.backends.len() as u32, self.next_service, self.next_backend]
        {
            b.extend_from_slice(&n.to_le_bytes());
        }
        for (vip, port, proto, id) in &self.services {
            b.extend_from_slice(&vip.0.to_le_bytes());
            b.extend_from_slice(&port.to_le_bytes());
            b.extend_from_slice(&[*proto, 0]);
            b.extend_from_slice(&id.to_le_bytes());
        }
        for (service, addr, port, id) in &self.backends {
            b.extend_from_slice(&service.to_le_bytes());
            b.extend_from_slice(&addr.0.to_le_bytes());
            b.extend_from_slice(&port.to_le_bytes());
            b.extend_from_slice(&id.to_le_bytes());
        }
        Ok(b)
    }

    /// A map from [`IdMap::encode`]'s bytes.
    pub fn decode(b: &[u8]) -> Result<IdMap, IdsError> {
        let u32_at = |at: usize| -> Result<u32, IdsError> {
            let s = b.get(at..at + 4).ok_or(IdsError::Truncated)?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let (ns, nb) = (u32_at(0)? as usize, u32_at(4)? as usize);
        let want = 16usize
            .checked_add(ns.checked_mul(SERVICE_BYTES).ok_or(IdsError::TooLarge)?)
            .and_then(|x| x.checked_add(nb.checked_mul(BACKEND_BYTES)?))
            .ok_or(IdsError::TooLarge)?;
        if b.len() != want {
            return Err(IdsError::Truncated);
        }
        let backends_at = 16 + ns * SERVICE_BYTES;
        if (0..ns).any(|i| b[16 + i * SERVICE_BYTES + 19] != 0) {
            return Err(IdsError::Malformed);
        }
        let addr = |at: usize| Addr(u128::from_le_bytes(b[at..at + 16].try_into().unwrap_or_default()));
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let services = (0..ns)
            .map(|i| 16 + i * SERVICE_BYTES)
            .map(|at| (addr(at), u16_at(at + 16), b[at + 18], u16_at(at + 20)))
            .collect();
        let backends = (0..nb)
            .map(|i| backends_at + i * BACKEND_BYTES)
            .map(|at| (u16_at(at), addr(at + 2), u16_at(at + 18), u32_at(at + 20).unwrap_or(0)))
            .collect();
        Ok(IdMap { services, backends, next_service: u32_at(8)?, next_backend: u32_at(12)? })
    }
}

/// One copy of the identity map in `area` (`IDS_BYTES` long): (sequence, map) if whole.
pub fn read_copy(area: &[u8]) -> Option<(u64, IdMap)> {
    let (seq, len) = (le64(area, 0), le64(area, 8));
    let len = usize::try_from(len).ok().filter(|&l| l <= IDS_BYTES - COPY_PREFIX)?;
    let payload = area.get(COPY_PREFIX..COPY_PREFIX + len)?;
    if seq == 0 || checksum(payload) != le64(area, 16) {
        return None;
    }
    IdMap::decode(payload).ok().map(|m| (seq, m))
}

/// The newest whole copy of the two in `areas` (`2 x IDS_BYTES`).
pub fn read_ids(areas: &[u8]) -> Option<IdMap> {
    let a = areas.get(..IDS_BYTES).and_then(read_copy);
    let b = areas.get(IDS_BYTES..2 * IDS_BYTES).and_then(read_copy);
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a.1 } else { b.1 }),
        (a, b) => a.or(b).map(|(_, m)| m),
    }
}

/// Which copy a new map goes to (the older or broken one) and its sequence number.
pub fn next_copy(areas: &[u8]) -> (usize, u64) {
    let seq = |i: usize| areas.get(i * IDS_BYTES..(i + 1) * IDS_BYTES).and_then(read_copy).map(|(s, _)| s);
    next_of(seq(0), seq(1))
}

/// Which copy a new map goes to, given the sequence numbers of the whole ones.
fn next_of(a: Option<u64>, b: Option<u64>) -> (usize, u64) {
    match (a, b) {
        (Some(a), Some(b)) if a >= b => (1, a + 1),
        (Some(_), Some(b)) => (0, b + 1),
        (Some(a), None) => (1, a + 1),
        (None, Some(b)) => (0, b + 1),
        (None, None) => (0, 1),
    }
}

/// The region's file: where it is and what is in it.
#[derive(Debug)]
pub struct Region {
    path: PathBuf,
    base: std::ptr::NonNull<u8>,
    len: usize,
    header: Header,
}

// SAFETY: the mapping is shared memory owned by this value until drop; the slots are read and
// written only through atomics (session.rs), the header and identity map only by the control
// thread through `&mut self`-free methods that it alone calls (documented on each).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// What opening a region found.
#[derive(Debug)]
pub enum Opened {
    /// A region of this layout and size, with its sessions: attach to it.
    Attached,
    /// A new, empty region; `why` the file that was there was not used (`None`: there was none).
    Fresh { why: Option<Mismatch> },
}

/// What a region file there is, for a table of `slots` slots.
pub fn inspect(path: &Path, slots: u64) -> Result<Option<Result<Header, Mismatch>>, String> {
    use std::os::unix::fs::FileExt;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let size = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    let mut page = vec![0u8; HEADER_BYTES];
    let n = file.read_at(&mut page, 0).map_err(|e| format!("{}: {e}", path.display()))?;
    let found = Header::parse(&page[..n], slots).and_then(|h| {
        let want = Header::file_bytes(h.slots);
        if size == want {
            Ok(h)
        } else {
            Err(Mismatch::Size { found: size, want })
        }
    });
    Ok(Some(found))
}

/// The identity map in the region file at `path`, read without mapping it (a tool's look at
/// the region of a running or stopped sluiced): `None` if neither copy is whole.
pub fn inspect_ids(path: &Path) -> Result<Option<IdMap>, String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut areas = vec![0u8; 2 * IDS_BYTES];
    file.read_exact_at(&mut areas, HEADER_BYTES as u64).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(read_ids(&areas))
}

impl Region {
    /// Opens the region at `path` for a table of `slots` slots: attaches to the one there if
    /// [`inspect`] finds it usable, else (unless `fresh_allowed` is false, then the mismatch is
    /// the error) makes a new one with `header` (its seeds and epoch are the new table's).
    pub fn open(path: &Path, header: Header, fresh_allowed: bool) -> Result<(Region, Opened), String> {
        let found = inspect(path, header.slots)?;
        let (header, opened) = match found {
            Some(Ok(h)) => (h, Opened::Attached),
            Some(Err(why)) if !fresh_allowed => {
                return Err(format!("session region {}: {why}", path.display()));
            }
            Some(Err(why)) => (header, Opened::Fresh { why: Some(why) }),
            None => (header, Opened::Fresh { why: None }),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = Header::file_bytes(header.slots);
        if matches!(opened, Opened::Fresh { .. }) {
            // Emptied, then sized: every byte zero (an empty table, no map).
            file.set_len(0)
                .and_then(|_| file.set_len(len))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let len = usize::try_from(len).map_err(|_| format!("{}: too large", path.display()))?;
        let base = map_shared(&file, len).map_err(|e| format!("{}: mmap: {e}", path.display()))?;
        let region = Region { path: path.to_path_buf(), base, len, header };
        if matches!(opened, Opened::Fresh { .. }) {
            let mut page = [0u8; HEADER_BYTES];
            header.encode(&mut page);
            region.write_at(0, &page[..FIXED_END + 8]);
        }
        Ok((region, opened))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> Header {
        self.header
    }

    /// The bytes at `[at, at + n)` of the mapping, copied out.
    fn read_at(&self, at: usize, n: usize) -> Vec<u8> {
        let n = n.min(self.len.saturating_sub(at));
        let mut out = vec![0u8; n];
        // SAFETY: [at, at + n) lies inside the mapping (n clipped to it); these bytes are the
        // header and identity map, which only the control thread writes (`write_at`), from the
        // same thread that calls this.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), out.as_mut_ptr(), n) };
        out
    }

    /// Writes `bytes` at `at` (header page and identity map only: never the slots).
    fn write_at(&self, at: usize, bytes: &[u8]) {
        if at.checked_add(bytes.len()).is_none_or(|end| end > SLOTS_AT.min(self.len)) {
            return;
        }
        // SAFETY: the range lies inside the mapping and before the slots, which are the only
        // bytes other threads touch; the control thread is the only writer of these.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(at), bytes.len()) };
    }

    /// The identity map the region holds (control thread only).
    pub fn ids(&self) -> Option<IdMap> {
        read_ids(&self.read_at(HEADER_BYTES, 2 * IDS_BYTES))
    }

    /// Stores `map` (control thread only): into the older copy, its sequence number last, so
    /// that a process killed meanwhile leaves the newer copy whole.
    pub fn store_ids(&self, map: &IdMap) -> Result<(), IdsError> {
        let payload = map.encode()?;
        let seq = |i: usize| read_copy(&self.ids_copy(i)).map(|(s, _)| s);
        let (copy, seq) = next_of(seq(0), seq(1));
        let at = HEADER_BYTES + copy * IDS_BYTES;
        self.write_at(at, &0u64.to_le_bytes());
        self.write_at(at + COPY_PREFIX, &payload);
        self.write_at(at + 8, &(payload.len() as u64).to_le_bytes());
        self.write_at(at + 16, &checksum(&payload).to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.write_at(at, &seq.to_le_bytes());
        Ok(())
    }

    /// Copy `i` of the identity map as far as its length says (its prefix alone if that is
    /// out of range): all [`read_copy`] reads of its 4 MiB.
    fn ids_copy(&self, i: usize) -> Vec<u8> {
        let at = HEADER_BYTES + i * IDS_BYTES;
        let len = le64(&self.read_at(at, COPY_PREFIX), 8);
        let used = usize::try_from(len).ok().filter(|&l| l <= IDS_BYTES - COPY_PREFIX);
        self.read_at(at, used.map_or(COPY_PREFIX, |l| COPY_PREFIX + l))
    }

    /// The SYN proxy's cookie keys the region holds, if whole (control thread only).
    pub fn cookie(&self) -> Option<CookieWords> {
        decode_cookie(&self.read_at(0, HEADER_BYTES))
    }

    /// Stores the cookie keys (control thread only).
    pub fn store_cookie(&self, keys: CookieWords) {
        let mut page = self.read_at(0, HEADER_BYTES);
        encode_cookie(&mut page, keys);
        self.write_at(COOKIE_AT, &page[COOKIE_AT..COOKIE_SUM + 8]);
    }

    /// The slot words: `slots x 8` atomic words from [`SLOTS_AT`], for the session table.
    pub(crate) fn slot_words(&self) -> (std::ptr::NonNull<u8>, usize) {
        // SAFETY: SLOTS_AT + slots x 64 <= len (`file_bytes`), so the offset lies inside the
        // mapping.
        let at = unsafe { self.base.as_ptr().add(SLOTS_AT) };
        (std::ptr::NonNull::new(at).unwrap_or(self.base), self.header.slots as usize)
    }

    /// Where the SYN proxy's held segments are: [`HOLD_AREA`] bytes, 2 MiB aligned.
    pub(crate) fn hold_area(&self) -> std::ptr::NonNull<u8> {
        // SAFETY: hold_at(slots) + HOLD_AREA = len (`file_bytes`), so the offset lies inside
        // the mapping.
        let at = unsafe { self.base.as_ptr().add(Header::hold_at(self.header.slots) as usize) };
        std::ptr::NonNull::new(at).unwrap_or(self.base)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map_shared` mapped, once; the file (and the sessions in
        // it) stays for the next process.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Maps `len` bytes of `file` shared, read-write, and makes them resident (a page first
/// touched by a worker would be a fault on the packet path).
fn map_shared(file: &std::fs::File, len: usize) -> std::io::Result<std::ptr::NonNull<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a new shared mapping of a file this process has open read-write and sized to at
    // least `len`; no existing memory is affected.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: [raw, raw + len) is the mapping just made. MADV_POPULATE_WRITE faults its pages
    // in without changing their contents; where the kernel lacks it the pages fault on first
    // use instead.
    unsafe { libc::madvise(raw, len, libc::MADV_POPULATE_WRITE) };
    std::ptr::NonNull::new(raw.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn header(slots: u64) -> Header {
        Header { layout: LAYOUT_VERSION, slots, capacity: slots / 2, seeds: [1, 2, 3], epoch_ns: 42 }
    }

    #[test]
    fn a_header_reads_back_and_every_kind_of_foreign_header_is_named() {
        let mut page = vec![0u8; HEADER_BYTES];
        header(128).encode(&mut page);
        assert_eq!(Header::parse(&page, 128), Ok(header(128)));
        assert_eq!(Header::parse(&page, 256), Err(Mismatch::Slots { found: 128, want: 256 }));
        assert_eq!(Header::parse(&page[..100], 128), Err(Mismatch::TooShort(100)));
        let mut other = page.clone();
        other[8] = LAYOUT_VERSION as u8 + 1;
        let found = LAYOUT_VERSION + 1;
        assert_eq!(Header::parse(&other, 128), Err(Mismatch::Layout { found, want: LAYOUT_VERSION }));
        let mut torn = page.clone();
        torn[24] ^= 1;
        assert_eq!(Header::parse(&torn, 128), Err(Mismatch::Checksum));
        let mut foreign = page.clone();
        foreign[0] = b'X';
        assert_eq!(Header::parse(&foreign, 128), Err(Mismatch::Magic));
    }

    fn map() -> IdMap {
        let a = Addr::v4(Ipv4Addr::new(198, 18, 10, 1));
        let v6 = Addr(0x2001_0db8_0000_0000_0000_0000_0000_0001);
        IdMap {
            services: vec![(a, 80, 6, 0), (v6, 53, 17, 7)],
            backends: vec![(0, Addr::v4(Ipv4Addr::new(198, 19, 0, 10)), 0, 3), (7, v6, 5353, 9)],
            next_service: 8,
            next_backend: 10,
        }
    }

    #[test]
    fn an_identity_map_reads_back_and_cut_bytes_are_refused() {
        let b = map().encode().unwrap();
        assert_eq!(IdMap::decode(&b), Ok(map()));
        for n in [0, 3, 16, b.len() - 1] {
            assert_eq!(IdMap::decode(&b[..n]), Err(IdsError::Truncated), "{n} bytes");
        }
        let mut pad = b.clone();
        pad[16 + 19] = 1;
        assert_eq!(IdMap::decode(&pad), Err(IdsError::Malformed));
        let mut huge = b.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IdMap::decode(&huge).is_err());
        assert_eq!(IdMap::decode(&IdMap::default().encode().unwrap()), Ok(IdMap::default()));
    }

    /// Writes `m` into `areas` as `Region::store_ids` does, stopping after `steps` of its four
    /// writes (a process killed there).
    fn store(areas: &mut [u8], m: &IdMap, steps: usize) {
        let payload = m.encode().unwrap();
        let (copy, seq) = next_copy(areas);
        let at = copy * IDS_BYTES;
        let writes: [(usize, Vec<u8>); 5] = [
            (at, 0u64.to_le_bytes().to_vec()),
            (at + COPY_PREFIX, payload.clone()),
            (at + 8, (payload.len() as u64).to_le_bytes().to_vec()),
            (at + 16, checksum(&payload).to_le_bytes().to_vec()),
            (at, seq.to_le_bytes().to_vec()),
        ];
        for (off, bytes) in writes.iter().take(steps) {
            areas[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
    }

    #[test]
    fn a_map_store_killed_at_any_step_leaves_the_previous_map() {
        let old = map();
        let mut new = map();
        new.services.push((Addr::v4(Ipv4Addr::new(198, 18, 10, 9)), 443, 6, 8));
        new.next_service = 9;
        for steps in 0..=5 {
            let mut areas = vec![0u8; 2 * IDS_BYTES];
            assert_eq!(read_ids(&areas), None, "nothing stored yet");
            store(&mut areas, &old, 5);
            store(&mut areas, &old, 5);
            store(&mut areas, &new, steps);
            let want = if steps == 5 { &new } else { &old };
            assert_eq!(read_ids(&areas).as_ref(), Some(want), "killed after {steps} writes");
        }
    }

    #[test]
    fn cookie_keys_read_back_unless_torn() {
        let mut page = vec![0u8; HEADER_BYTES];
        assert_eq!(decode_cookie(&page), None, "none stored");
        let keys = ([1, 2], [[3, 4], [5, 6]]);
        encode_cookie(&mut page, keys);
        assert_eq!(decode_cookie(&page), Some(keys));
        page[COOKIE_AT + 20] ^= 0x80;
        assert_eq!(decode_cookie(&page), None);
    }

    #[test]
    fn the_fuzz_seeds_written_by_an_independent_encoder_read_back() {
        // dataplane/fuzz/region-seeds.py recomputes the checksum and the layout in Python.
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/region");
        let read = |name: &str| std::fs::read(seeds.join(name)).unwrap();
        let h = Header::parse(&read("seed-header"), 64).unwrap();
        assert_eq!(h, Header { epoch_ns: 42, ..header(64) });
        assert_eq!(decode_cookie(&read("seed-header")), Some(([1, 2], [[3, 4], [5, 6]])));
        let m = IdMap::decode(&read("seed-ids")).unwrap();
        assert_eq!((m.services.len(), m.backends.len(), m.services[0].1), (1, 1, 80));
        let mut area = read("seed-copy");
        area.resize(IDS_BYTES, 0);
        assert_eq!(read_copy(&area), Some((1, m)));
    }

    #[test]
    fn a_region_file_is_made_then_attached_and_a_foreign_one_replaced_or_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-region-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r");
        let (r, opened) = Region::open(&path, header(64), true).unwrap();
        assert!(matches!(opened, Opened::Fresh { why: None }), "{opened:?}");
        // Stores go to each copy in turn, the newest whole one read back.
        let mut bigger = map();
        for n in 0..3 {
            bigger.next_service += 1;
            r.store_ids(&bigger).unwrap();
            assert_eq!(r.ids().as_ref(), Some(&bigger), "store {n}");
        }
        let areas = r.read_at(HEADER_BYTES, 2 * IDS_BYTES);
        let seqs = [0, 1].map(|i| read_copy(&areas[i * IDS_BYTES..(i + 1) * IDS_BYTES]).map(|c| c.0));
        assert_eq!(seqs, [Some(3), Some(2)]);
        r.store_ids(&map()).unwrap();
        r.store_cookie(([7, 8], [[9, 10], [11, 12]]));
        drop(r);
        let other = Header { seeds: [9, 9, 9], epoch_ns: 1, ..header(64) };
        let (r, opened) = Region::open(&path, other, true).unwrap();
        assert!(matches!(opened, Opened::Attached), "{opened:?}");
        assert_eq!(r.header(), header(64), "the first process's seeds and epoch");
        assert_eq!((r.ids(), r.cookie()), (Some(map()), Some(([7, 8], [[9, 10], [11, 12]]))));
        drop(r);
        let err = Region::open(&path, header(128), false).unwrap_err();
        assert!(err.contains("64 slots, the configured capacity makes 128"), "{err}");
        let (r, opened) = Region::open(&path, header(128), true).unwrap();
        assert!(matches!(opened, Opened::Fresh { why: Some(Mismatch::Slots { .. }) }), "{opened:?}");
        assert_eq!((r.ids(), r.cookie(), r.header()), (None, None, header(128)));
        drop(r);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
