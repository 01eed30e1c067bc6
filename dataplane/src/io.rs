//! What the packet path needs from a packet buffer and from a NIC queue. DPDK implements
//! these for `Mbuf` and its queues (feature `dpdk`); [`VecFrame`] and [`MemIo`] implement them
//! in plain memory for tests, fuzzing and benchmarks.

use arrayvec::ArrayVec;
use std::collections::VecDeque;

/// Packets per RX/TX burst. 64 rather than DPDK's customary 32: the worker prefetches a whole
/// burst's session slots before finishing any of them, and a longer burst gives each slot
/// longer to arrive (1-5% more established packets per second than 32 with 1M flows, 128 was
/// slower again; docs/performance.md). `bench/rate.py` gives testpmd the same burst.
pub const BURST: usize = 64;
/// A burst of frames, on the stack.
pub type Burst<F> = ArrayVec<F, BURST>;

/// One packet buffer: contiguous bytes with room to grow at the front (for tunnel headers).
pub trait Frame {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the packet by `n` bytes at the front; false (and no change) if there is no room.
    /// The new bytes' contents are unspecified (DPDK leaves an earlier packet's bytes there):
    /// the caller writes every one of them.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false (and no change) if the packet is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the end; false (and no change) if the packet is shorter.
    fn trim(&mut self, n: usize) -> bool;
    /// Grows the packet by `n` zeroed bytes at the end; false (and no change) if no room.
    fn append(&mut self, n: usize) -> bool;
    /// False when the packet spans several buffers (the packet path then drops it).
    fn is_contiguous(&self) -> bool {
        true
    }
}

/// The queues one worker owns: queue `q` of every port, where `q` is fixed per worker.
pub trait Io {
    type Frame: Frame;
    /// Receives up to `out.remaining_capacity()` frames from `port`.
    fn rx_burst(&mut self, port: u16, out: &mut Burst<Self::Frame>);
    /// Transmits from the front of `pkts`; sent frames leave `pkts`, unsent ones stay.
    /// Returns how many were sent.
    fn tx_burst(&mut self, port: u16, pkts: &mut Burst<Self::Frame>) -> usize;
    /// A fresh, empty frame for packets the worker originates (ARP requests).
    fn alloc(&mut self) -> Option<Self::Frame>;
}

/// Headroom of a [`VecFrame`], the same as DPDK's default `RTE_PKTMBUF_HEADROOM`.
pub const VEC_HEADROOM: usize = 128;
const VEC_CAPACITY: usize = 2048 + VEC_HEADROOM;

/// A frame in a `Vec`, with DPDK-like headroom and a fixed capacity.
#[derive(Clone, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for VecFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VecFrame({} bytes)", self.end - self.start)
    }
}

impl VecFrame {
    /// A frame holding `bytes` after [`VEC_HEADROOM`] bytes of headroom.
    /// Panics if `bytes` exceeds the 2048-byte data room (test inputs only).
    pub fn new(bytes: &[u8]) -> VecFrame {
        assert!(bytes.len() <= VEC_CAPACITY - VEC_HEADROOM);
        let mut buf = vec![0u8; VEC_CAPACITY];
        buf[VEC_HEADROOM..VEC_HEADROOM + bytes.len()].copy_from_slice(bytes);
        VecFrame { buf, start: VEC_HEADROOM, end: VEC_HEADROOM + bytes.len() }
    }

    /// As `new` but with only `headroom` bytes in front (to test refusal paths).
    pub fn with_headroom(bytes: &[u8], headroom: usize) -> VecFrame {
        let mut f = VecFrame::new(bytes);
        let shift = VEC_HEADROOM - headroom.min(VEC_HEADROOM);
        f.buf.drain(..shift);
        f.start -= shift;
        f.end -= shift;
        f
    }

    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Makes this frame hold `bytes` after the default headroom again (reusing the buffer).
    pub fn reset(&mut self, bytes: &[u8]) {
        let end = VEC_HEADROOM + bytes.len().min(self.buf.len() - VEC_HEADROOM);
        self.buf[VEC_HEADROOM..end].copy_from_slice(&bytes[..end - VEC_HEADROOM]);
        self.start = VEC_HEADROOM;
        self.end = end;
    }
}

impl Frame for VecFrame {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }

    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }

    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.buf.len() {
            return false;
        }
        self.buf[self.end..self.end + n].fill(0);
        self.end += n;
        true
    }
}

/// An in-memory NIC: per-port RX queues the test fills and TX queues it reads back.
#[derive(Debug, Default)]
pub struct MemIo {
    pub rx: Vec<VecDeque<VecFrame>>,
    pub tx: Vec<Vec<VecFrame>>,
    /// When set, each tx_burst accepts at most this many frames (to exercise TX-full paths).
    pub tx_limit: Option<usize>,
    /// When false, `alloc` fails (to exercise allocation failure).
    pub can_alloc: bool,
}

impl MemIo {
    pub fn new(ports: usize) -> MemIo {
        MemIo {
            rx: (0..ports).map(|_| VecDeque::new()).collect(),
            tx: (0..ports).map(|_| Vec::new()).collect(),
            tx_limit: None,
            can_alloc: true,
        }
    }
}

impl Io for MemIo {
    type Frame = VecFrame;

    fn rx_burst(&mut self, port: u16, out: &mut Burst<VecFrame>) {
        let q = &mut self.rx[usize::from(port)];
        while !out.is_full() {
            match q.pop_front() {
                Some(f) => out.push(f),
                None => break,
            }
        }
    }

    fn tx_burst(&mut self, port: u16, pkts: &mut Burst<VecFrame>) -> usize {
        let n = self.tx_limit.map_or(pkts.len(), |l| l.min(pkts.len()));
        self.tx[usize::from(port)].extend(pkts.drain(..n));
        n
    }

    fn alloc(&mut self) -> Option<VecFrame> {
        self.can_alloc.then(|| VecFrame::new(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_frame_ops() {
        let mut f = VecFrame::new(&[1, 2, 3, 4]);
        assert!(f.prepend(2));
        assert_eq!(f.data(), &[0, 0, 1, 2, 3, 4]);
        assert!(f.adj(3));
        assert_eq!(f.data(), &[2, 3, 4]);
        assert!(f.trim(1));
        assert!(f.append(2));
        assert_eq!(f.data(), &[2, 3, 0, 0]);
        assert!(!f.adj(5) && !f.trim(5));
        f.reset(&[7, 7, 7]);
        assert_eq!((f.data(), f.headroom()), (&[7u8, 7, 7][..], VEC_HEADROOM));
        let mut tight = VecFrame::with_headroom(&[9], 4);
        assert_eq!(tight.headroom(), 4);
        assert!(!tight.prepend(5));
        assert!(tight.prepend(4));
        assert_eq!(tight.data(), &[0, 0, 0, 0, 9]);
    }

    #[test]
    fn mem_io_partial_tx_keeps_unsent() {
        let mut io = MemIo::new(1);
        io.tx_limit = Some(2);
        let mut b: Burst<VecFrame> = (0..5u8).map(|i| VecFrame::new(&[i])).collect();
        assert_eq!(io.tx_burst(0, &mut b), 2);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].data(), &[2]);
        assert_eq!(io.tx[0].len(), 2);
    }
}
