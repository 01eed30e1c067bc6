//! Bindings to the system DPDK (22.11) and a thin safe layer over them.
//!
//! * [`raw`]: bindgen output for `src/wrapper.h` (EAL, ethdev, mbuf,
//!   mempool, lcore, errno, cycles, launch) plus the `shim_*` functions
//!   from `src/shim.c` that wrap DPDK's `static inline` functions.
//! * The safe layer: [`Eal`], [`Mempool`], [`Mbuf`], [`Port`] with
//!   [`RxQueue`] / [`TxQueue`], and [`Error`].
//!
//! Typical use:
//!
//! ```no_run
//! use arrayvec::ArrayVec;
//! use dpdk_sys::{Eal, Mbuf, Mempool, Port, PortConfig, SOCKET_ID_ANY};
//!
//! # fn main() -> Result<(), dpdk_sys::Error> {
//! Eal::init(&["app", "-l", "0", "--no-huge", "-m", "256", "--no-pci",
//!             "--vdev", "net_ring0"])?;
//! let port_id = dpdk_sys::port_by_name("net_ring0")?;
//! let socket = dpdk_sys::port_info(port_id)?.socket_id;
//! let pool = Mempool::new("pool0", 4095, 256, 2048 + 128, socket)?;
//! let port = Port::configure(port_id, &PortConfig::default(), &pool)?;
//! port.start()?;
//! let mut queues = port.take_queues()?;
//! let (mut rx, mut tx) = queues.pop().unwrap();
//! let mut burst: ArrayVec<Mbuf, 32> = ArrayVec::new();
//! rx.rx_burst(&mut burst);
//! tx.tx_burst(&mut burst);
//! burst.clear(); // frees whatever the driver did not take
//! # let _ = SOCKET_ID_ANY;
//! # Ok(())
//! # }
//! ```

pub mod consts;
mod eal;
mod error;
mod mbuf;
mod mempool;
mod port;

/// Raw bindgen output. Everything here is `unsafe` to call; prefer the safe
/// types at the crate root.
pub mod raw {
    #![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
    #![allow(dead_code, unsafe_op_in_unsafe_fn)]
    #![allow(clippy::all, clippy::undocumented_unsafe_blocks)]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use eal::{rdtsc, Eal, LCORE_ID_ANY, SOCKET_ID_ANY};
pub use error::Error;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{
    port_by_name, port_count, port_info, Port, PortConfig, PortInfo, PortStats, RxQueue, TxQueue,
};

#[cfg(test)]
mod tests {
    //! Tests that run without the EAL: this unit-test binary never calls
    //! `Eal::init`, so every entry point that needs it must refuse cleanly.
    use super::*;

    #[test]
    fn mbuf_is_a_plain_pointer() {
        // rx/tx_burst hand `ArrayVec<Mbuf, N>` storage to C as
        // `struct rte_mbuf **`; this must hold for that to be sound.
        assert_eq!(std::mem::size_of::<Mbuf>(), std::mem::size_of::<*mut raw::rte_mbuf>());
        assert_eq!(std::mem::align_of::<Mbuf>(), std::mem::align_of::<*mut raw::rte_mbuf>());
        assert_eq!(std::mem::size_of::<Option<Mbuf>>(), std::mem::size_of::<Mbuf>());
    }

    /// Thread-safety contract, checked at compile time.
    #[test]
    fn send_sync_contract() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<Mbuf>();
        send::<RxQueue>();
        send::<TxQueue>();
        send::<Mempool>();
        sync::<Mempool>();
        send::<Port>();
        sync::<Port>();
        send::<Error>();
        sync::<Error>();

        // `<T as NotSync<_>>::check` only resolves (to the `()` impl) when T
        // is not Sync; for a Sync T both impls apply and it fails to compile.
        trait NotSync<A> {
            fn check() {}
        }
        impl<T: ?Sized> NotSync<()> for T {}
        impl<T: ?Sized + Sync> NotSync<u8> for T {}
        <Mbuf as NotSync<_>>::check();
        <RxQueue as NotSync<_>>::check();
        <TxQueue as NotSync<_>>::check();
    }

    #[test]
    fn port_config_default() {
        let c = PortConfig::default();
        assert_eq!((c.rx_queues, c.tx_queues), (1, 1));
        assert_eq!((c.rx_desc, c.tx_desc), (1024, 1024));
        assert_eq!(c.mtu, None);
        assert!(c.rss);
        assert!(c.promiscuous);
    }

    #[test]
    fn everything_refuses_before_eal_init() {
        assert!(Eal::get().is_none());
        let e = Mempool::new("unit-pool", 63, 0, 2048 + 128, SOCKET_ID_ANY).unwrap_err();
        assert!(e.to_string().contains("not initialised"), "{e}");
        assert_eq!(e.errno(), None);
        assert!(port_by_name("net_ring0").is_err());
        assert!(port_info(0).is_err());
        assert_eq!(port_count(), 0);
        assert!(Eal::register_thread().is_err());
        Eal::unregister_thread(); // must be a harmless no-op
        assert_eq!(Eal::tsc_hz(), 0);
        assert_eq!(Eal::lcore_id(), None);
    }

    #[test]
    fn eal_init_rejects_bad_argument_lists() {
        let empty: [&str; 0] = [];
        assert!(Eal::init(&empty).is_err());
        assert!(Eal::init(&["prog", "bad\0arg"]).is_err());
        // Neither attempt may have reached rte_eal_init.
        assert!(Eal::get().is_none());
    }

    #[test]
    fn rdtsc_advances_without_eal() {
        let a = rdtsc();
        let mut b = rdtsc();
        for _ in 0..1000 {
            if b > a {
                break;
            }
            std::hint::spin_loop();
            b = rdtsc();
        }
        assert!(b > a);
    }

    #[test]
    fn error_text_comes_from_rte_strerror() {
        let e = Error::from_errno("rte_eth_dev_configure(port 3)", -libc::EINVAL);
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert_eq!(e.op(), "rte_eth_dev_configure(port 3)");
        assert!(e.text().contains("Invalid argument"), "{}", e.text());
        assert!(e.to_string().starts_with("rte_eth_dev_configure(port 3) failed: "));
        // DPDK's own error numbers (>= 1000) have DPDK texts.
        let e = Error::from_errno("x", raw::E_RTE_NO_CONFIG as i32);
        assert!(e.text().to_lowercase().contains("config"), "{}", e.text());
        let e = Error::refused("Port::configure(port 1)", "too many queues");
        assert_eq!(e.to_string(), "Port::configure(port 1) refused: too many queues");
    }

    #[test]
    fn headroom_default_is_rte_pktmbuf_headroom() {
        assert_eq!(Mempool::headroom_default(), 128);
    }
}
