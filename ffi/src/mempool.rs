//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::eal::require_eal;
use crate::error::Error;
use crate::mbuf::Mbuf;
use crate::raw;

/// A pool of packet buffers.
///
/// Cloning is cheap and shares the same pool (ports keep a clone, so a pool
/// lives at least as long as any port that receives into it). When the last
/// clone is dropped the pool is freed with `rte_mempool_free`, **but only if
/// no mbuf from it is still out** (`in_use() == 0`); otherwise the pool is
/// leaked on purpose, so an outstanding [`Mbuf`] never points into freed
/// memory.
///
/// Caveat: `in_use()` cannot see an `rte_pktmbuf_free` that is still
/// *running* on another thread at that very instant (the mbuf already
/// counts as returned while DPDK finishes writing the lcore cache). Drop the
/// last handle after the threads that free mbufs from this pool have been
/// joined or otherwise synchronised with, which is the normal shutdown
/// order.
///
/// The pool uses DPDK's default mempool ops (`ring_mp_mc` unless the EAL was
/// started with `--mbuf-pool-ops-name`); the `Send`/`Sync` guarantees below
/// rely on those ops being multi-producer/multi-consumer.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ptr: NonNull<raw::rte_mempool>,
    name: String,
}

// SAFETY: an rte_mempool created by rte_pktmbuf_pool_create with the default
// multi-producer/multi-consumer ops may be used from any thread; per-lcore
// caches are indexed by the calling thread's own lcore id.
unsafe impl Send for PoolInner {}
// SAFETY: as above; every operation exposed through &Mempool (alloc,
// counters) is thread-safe in DPDK for MP/MC pools.
unsafe impl Sync for PoolInner {}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: ptr is the live pool this value created. No port holds it
        // any more (ports own a Mempool clone) and nothing can allocate from
        // it concurrently (we hold the last reference). If some mbuf is still
        // out, freeing would leave it dangling, so we leak instead.
        unsafe {
            if raw::rte_mempool_in_use_count(self.ptr.as_ptr()) == 0 {
                raw::rte_mempool_free(self.ptr.as_ptr());
            }
        }
    }
}

impl Mempool {
    /// Create a pool of `n_mbufs` packet buffers (`rte_pktmbuf_pool_create`).
    ///
    /// * `name`: unique in the process (DPDK memzone name, at most 25 bytes).
    /// * `cache_size`: per-lcore cache (0 to disable, at most 512; threads
    ///   without an lcore id never use it).
    /// * `data_room`: bytes per buffer **including** the headroom
    ///   ([`Mempool::headroom_default`], 128), e.g. `2048 + 128`.
    /// * `socket_id`: NUMA node for the memory, or [`crate::SOCKET_ID_ANY`].
    ///   For a NIC, use the port's socket
    ///   ([`crate::PortInfo::socket_id`]).
    pub fn new(
        name: &str,
        n_mbufs: u32,
        cache_size: u32,
        data_room: u16,
        socket_id: i32,
    ) -> Result<Mempool, Error> {
        let op = || format!("rte_pktmbuf_pool_create({name:?})");
        require_eal(&op())?;
        let c_name = CString::new(name).map_err(|_| Error::refused(op(), "pool name contains a NUL byte"))?;
        // SAFETY: EAL is initialised; c_name is a valid C string that outlives
        // the call (DPDK copies the name).
        let ptr = unsafe {
            raw::rte_pktmbuf_pool_create(c_name.as_ptr(), n_mbufs, cache_size, 0, data_room, socket_id)
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::from_rte_errno(op()))?;
        Ok(Mempool { inner: Arc::new(PoolInner { ptr, name: name.to_string() }) })
    }

    /// Default headroom reserved at the front of each buffer
    /// (`RTE_PKTMBUF_HEADROOM`).
    pub const fn headroom_default() -> usize {
        raw::RTE_PKTMBUF_HEADROOM as usize
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Total number of mbufs in the pool.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the pool is alive; `size` is set at creation and never
        // changes afterwards.
        unsafe { (*self.inner.ptr.as_ptr()).size }
    }

    /// Mbufs available for allocation (including those in lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive; the counter only reads pool state.
        unsafe { raw::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }

    /// Mbufs currently out of the pool: owned by `Mbuf`s, queued in a
    /// device, or leaked.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive; the counter only reads pool state.
        unsafe { raw::rte_mempool_in_use_count(self.inner.ptr.as_ptr()) }
    }

    /// Allocate one empty mbuf (`rte_pktmbuf_alloc`); `None` if the pool is
    /// exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive and is a pktmbuf pool; rte_pktmbuf_alloc
        // returns NULL or a freshly reset mbuf with refcnt 1 that we now own.
        let m = unsafe { raw::shim_rte_pktmbuf_alloc(self.inner.ptr.as_ptr()) };
        NonNull::new(m).map(Mbuf::from_non_null)
    }

    /// Allocate exactly `count` mbufs and push them onto `out`, or none at all
    /// (`rte_pktmbuf_alloc_bulk`). Returns false if `out` has less than
    /// `count` free slots or the pool has fewer than `count` mbufs.
    #[inline]
    pub fn alloc_bulk<const N: usize>(&self, out: &mut ArrayVec<Mbuf, N>, count: usize) -> bool {
        if count > out.remaining_capacity() {
            return false;
        }
        let Ok(count_c) = u32::try_from(count) else {
            return false;
        };
        let len = out.len();
        // SAFETY: `Mbuf` is repr(transparent) over NonNull<rte_mbuf>, i.e. it
        // has the layout of `*mut rte_mbuf`; slots len..len+count are inside
        // the ArrayVec's capacity (checked above). On success DPDK writes
        // `count` valid, owned mbuf pointers there; on failure it writes
        // nothing we read.
        let rc = unsafe {
            let slots = out.as_mut_ptr().add(len).cast::<*mut raw::rte_mbuf>();
            raw::shim_rte_pktmbuf_alloc_bulk(self.inner.ptr.as_ptr(), slots, count_c)
        };
        if rc != 0 {
            return false;
        }
        // SAFETY: the `count` slots after `len` now hold initialised Mbufs.
        unsafe { out.set_len(len + count) };
        true
    }

    /// The raw pool pointer, for calling DPDK directly. It stays valid while
    /// this `Mempool` (or a clone) lives.
    pub fn as_ptr(&self) -> *mut raw::rte_mempool {
        self.inner.ptr.as_ptr()
    }
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.inner.name)
            .field("capacity", &self.capacity())
            .field("in_use", &self.in_use())
            .finish()
    }
}
