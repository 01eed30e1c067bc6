//! An owned packet buffer.

use std::ptr::NonNull;

use crate::consts::MBUF_F_RX_RSS_HASH;
use crate::raw;

/// One packet buffer (`struct rte_mbuf`), owning exactly one reference to it.
///
/// * Dropping it frees it (`rte_pktmbuf_free`, all segments).
/// * It is `Send` (it can be freed on any thread) but not `Sync`, and not
///   `Clone`.
/// * `repr(transparent)` over a non-null `*mut rte_mbuf`, so a slice of
///   `Mbuf` is a valid array of `struct rte_mbuf *` for burst calls.
///
/// The byte accessors ([`Mbuf::data`], [`Mbuf::data_mut`]) cover the first
/// segment only; [`Mbuf::len`] is the whole packet (`pkt_len`). For a
/// single-segment mbuf (everything allocated here, and what most drivers
/// return) the two are equal and every method below keeps them equal.
#[repr(transparent)]
pub struct Mbuf {
    ptr: NonNull<raw::rte_mbuf>,
}

// SAFETY: an Mbuf is the unique owner of its mbuf reference; the mbuf
// memory is not tied to a thread, and rte_pktmbuf_free may run on any thread
// for pools with multi-producer ops (the default; see `Mempool`).
unsafe impl Send for Mbuf {}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference to a valid mbuf chain and give
        // it back here, once.
        unsafe { raw::shim_rte_pktmbuf_free(self.ptr.as_ptr()) };
    }
}

impl Mbuf {
    #[inline]
    pub(crate) fn from_non_null(ptr: NonNull<raw::rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Take ownership of a raw mbuf.
    ///
    /// # Panics
    /// If `ptr` is null.
    ///
    /// # Safety
    /// `ptr` must point to a valid packet mbuf (first segment of a chain)
    /// whose reference the caller owns and hands over: nobody else may free
    /// it, and nobody else may access its data or metadata while the returned
    /// `Mbuf` lives. Its pool must outlive the `Mbuf`.
    #[inline]
    pub unsafe fn from_raw(ptr: *mut raw::rte_mbuf) -> Mbuf {
        Mbuf { ptr: NonNull::new(ptr).expect("Mbuf::from_raw: null pointer") }
    }

    /// Give up ownership; the caller must eventually free the mbuf (e.g. with
    /// `rte_pktmbuf_free` or [`Mbuf::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> *mut raw::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The raw pointer, still owned by `self`.
    #[inline]
    pub fn as_ptr(&self) -> *const raw::rte_mbuf {
        self.ptr.as_ptr()
    }

    #[inline]
    fn m(&self) -> &raw::rte_mbuf {
        // SAFETY: ptr is valid for the lifetime of self and nobody else
        // mutates the mbuf while we own it (see from_raw's contract).
        unsafe { self.ptr.as_ref() }
    }

    /// Bytes of the first segment (`buf_addr + data_off`, `data_len` long).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's
        // buffer (a DPDK invariant maintained by every mbuf operation), the
        // memory is initialised (written by us, a driver, or DPDK's pool
        // set-up) and the borrow of self prevents mutation.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Mutable bytes of the first segment.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m();
        let (base, off, len) = (m.buf_addr.cast::<u8>(), m.data_off, m.data_len);
        // SAFETY: as in `data`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(base.add(usize::from(off)), usize::from(len)) }
    }

    /// Packet length over all segments (`pkt_len`).
    #[inline]
    pub fn len(&self) -> usize {
        self.m().pkt_len as usize
    }

    /// True if the packet has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.m().pkt_len == 0
    }

    /// Free bytes in front of the data (first segment).
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: valid mbuf, read-only access.
        usize::from(unsafe { raw::shim_rte_pktmbuf_headroom(self.ptr.as_ptr()) })
    }

    /// Free bytes after the data of the last segment (what [`Mbuf::append`]
    /// can use).
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: valid mbuf chain; lastseg walks `next` pointers of our own
        // chain and tailroom only reads fields.
        usize::from(unsafe {
            let last = raw::shim_rte_pktmbuf_lastseg(self.ptr.as_ptr());
            raw::shim_rte_pktmbuf_tailroom(last)
        })
    }

    /// Grow the packet by `n` bytes at the front (`rte_pktmbuf_prepend`).
    /// Returns false, with the packet unchanged, if the headroom is smaller
    /// than `n`.
    ///
    /// The new bytes are **not** cleared: they hold whatever the buffer held
    /// (an earlier packet's headroom), so the caller writes all of them, as
    /// a header builder does. Clearing them cost a `memset` call per packet
    /// on the tunnel path. (Use [`Mbuf::append`] where stale bytes could
    /// reach the wire unwritten, e.g. padding: it zeroes.)
    #[inline]
    pub fn prepend(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // rte_pktmbuf_prepend's own steps, inline, without a call into the shim per packet
        // (it works on the first segment, whatever the chain).
        // SAFETY: valid mbuf we own exclusively; `&mut self` makes this the only access to
        // its fields. The check below keeps the new data start inside the buffer (data_off
        // is the headroom), and data_len + n stays within buf_len, a u16. The bytes this
        // exposes are initialised memory: the pool's memory comes from the OS zero-filled
        // (hugepages or anonymous mmap) and DPDK only ever writes it, so `data_mut` reads no
        // uninitialised memory.
        let m = unsafe { self.ptr.as_mut() };
        if n16 > m.data_off {
            return false;
        }
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        true
    }

    /// Remove `n` bytes from the front (`rte_pktmbuf_adj`). Returns false,
    /// with the packet unchanged, if the first segment has fewer than `n`
    /// bytes.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: valid mbuf we own exclusively; adj checks the length.
        !unsafe { raw::shim_rte_pktmbuf_adj(self.ptr.as_ptr(), n16) }.is_null()
    }

    /// Grow the packet by `n` zeroed bytes at the end (`rte_pktmbuf_append`).
    /// Returns false, with the packet unchanged, if the tailroom is smaller
    /// than `n`.
    #[inline]
    pub fn append(&mut self, n: usize) -> bool {
        match self.append_raw(n) {
            Some(p) => {
                // SAFETY: append_raw returned the start of `n` bytes inside
                // the last segment's buffer, now part of the packet.
                unsafe { std::ptr::write_bytes(p, 0, n) };
                true
            }
            None => false,
        }
    }

    /// Append a copy of `bytes` at the end. Returns false, with the packet
    /// unchanged, if the tailroom is too small.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        match self.append_raw(bytes.len()) {
            Some(p) => {
                // SAFETY: p is the start of bytes.len() writable bytes inside
                // our mbuf, which cannot overlap `bytes` (a shared borrow that
                // cannot point into a buffer we hold mutably).
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
                true
            }
            None => false,
        }
    }

    /// rte_pktmbuf_append without initialising the new bytes.
    #[inline]
    fn append_raw(&mut self, n: usize) -> Option<*mut u8> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: valid mbuf we own exclusively; append checks the tailroom
        // and returns NULL without changes, or the start of the new bytes.
        let p = unsafe { raw::shim_rte_pktmbuf_append(self.ptr.as_ptr(), n16) };
        (!p.is_null()).then_some(p.cast::<u8>())
    }

    /// Remove `n` bytes from the end (`rte_pktmbuf_trim`). Returns false, with
    /// the packet unchanged, if the last segment has fewer than `n` bytes.
    #[inline]
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        if self.m().nb_segs != 1 {
            // SAFETY: valid mbuf we own exclusively; trim checks the length.
            return unsafe { raw::shim_rte_pktmbuf_trim(self.ptr.as_ptr(), n16) == 0 };
        }
        // One segment: rte_pktmbuf_trim's steps, inline (the last segment is the first).
        // SAFETY: valid mbuf we own exclusively; `&mut self` makes this the only access.
        let m = unsafe { self.ptr.as_mut() };
        if n16 > m.data_len {
            return false;
        }
        m.data_len -= n16;
        m.pkt_len -= u32::from(n16);
        true
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    /// True if the whole packet is in one segment (so [`Mbuf::data`] is the
    /// whole packet).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.m().nb_segs == 1
    }

    /// The RSS hash computed by the NIC, if the driver set one
    /// (`RTE_MBUF_F_RX_RSS_HASH` in `ol_flags`).
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.m();
        if m.ol_flags & MBUF_F_RX_RSS_HASH != 0 {
            // SAFETY: every member of the `hash` union is plain integers, so
            // reading `rss` is always defined; the flag says it is meaningful.
            Some(unsafe { m.__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// Offload flags (`ol_flags`, `RTE_MBUF_F_*`).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.m().ol_flags
    }

    /// Input port set by the driver on receive.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Reference count of the first segment (1 for everything this crate
    /// hands out).
    #[inline]
    pub fn refcnt(&self) -> u16 {
        // SAFETY: valid mbuf, read-only access.
        unsafe { raw::shim_rte_mbuf_refcnt_read(self.ptr.as_ptr()) }
    }

    /// Prefetch the start of the packet data into the caches.
    #[inline]
    pub fn prefetch_data(&self) {
        let m = self.m();
        // SAFETY: the address is inside this mbuf's buffer; prefetch only
        // hints the cache and never faults or writes.
        unsafe {
            let p = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            raw::shim_rte_prefetch0(p.cast());
        }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len())
            .field("nb_segs", &self.nb_segs())
            .field("headroom", &self.headroom())
            .finish()
    }
}
