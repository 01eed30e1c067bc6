//! The DPDK adapter: `Frame` for `Mbuf`, `Io` over one worker's queues. Safe code only; the
//! `unsafe` stays in `dpdk-sys`.

use crate::io::{Burst, Frame, Io};
use dpdk_sys::{Mbuf, Mempool, RxQueue, TxQueue};

impl Frame for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        Mbuf::prepend(self, n)
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        Mbuf::adj(self, n)
    }

    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        Mbuf::trim(self, n)
    }

    #[inline]
    fn append(&mut self, n: usize) -> bool {
        Mbuf::append(self, n)
    }

    #[inline]
    fn is_contiguous(&self) -> bool {
        Mbuf::is_contiguous(self)
    }
}

/// One worker's view of the NIC: queue `q` of every port (index = port index in the config).
pub struct DpdkIo {
    rx: Vec<RxQueue>,
    tx: Vec<TxQueue>,
    pool: Mempool,
}

impl DpdkIo {
    /// `rx[i]` and `tx[i]` are this worker's queues on port `i`.
    pub fn new(rx: Vec<RxQueue>, tx: Vec<TxQueue>, pool: Mempool) -> DpdkIo {
        DpdkIo { rx, tx, pool }
    }
}

impl Io for DpdkIo {
    type Frame = Mbuf;

    #[inline]
    fn rx_burst(&mut self, port: u16, out: &mut Burst<Mbuf>) {
        if let Some(q) = self.rx.get_mut(usize::from(port)) {
            q.rx_burst(out);
        }
    }

    #[inline]
    fn tx_burst(&mut self, port: u16, pkts: &mut Burst<Mbuf>) -> usize {
        self.tx.get_mut(usize::from(port)).map_or(0, |q| q.tx_burst(pkts))
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.pool.alloc()
    }
}
