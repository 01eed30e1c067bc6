//! Ethernet ports (`rte_ethdev`) and their RX/TX queues.

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrayvec::ArrayVec;

use crate::consts::{ETH_RX_OFFLOAD_RSS_HASH, RSS_HF_DEFAULT};
use crate::eal::{is_ready, require_eal};
use crate::error::{check, Error};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use crate::raw;

const MAX_PORTS: usize = raw::RTE_MAX_ETHPORTS as usize;

/// Ports currently owned by a `Port` value in this process.
static CLAIMED: [AtomicBool; MAX_PORTS] = [const { AtomicBool::new(false) }; MAX_PORTS];

/// Number of usable ports (`rte_eth_dev_count_avail`); 0 before `Eal::init`.
pub fn port_count() -> u16 {
    if !is_ready() {
        return 0;
    }
    // SAFETY: EAL is initialised; this only reads the device table.
    unsafe { raw::rte_eth_dev_count_avail() }
}

/// Port id of the device called `name` (`rte_eth_dev_get_port_by_name`):
/// a vdev name such as `"net_ring0"`, or a PCI address such as
/// `"0000:03:00.0"`.
pub fn port_by_name(name: &str) -> Result<u16, Error> {
    let op = || format!("rte_eth_dev_get_port_by_name({name:?})");
    require_eal(&op())?;
    let c_name = CString::new(name).map_err(|_| Error::refused(op(), "name contains a NUL byte"))?;
    let mut id: u16 = 0;
    // SAFETY: EAL is initialised, c_name is a valid C string and id a valid
    // out-pointer for the duration of the call.
    let rc = unsafe { raw::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut id) };
    check(op, rc)?;
    Ok(id)
}

/// What a device can do (from `rte_eth_dev_info_get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Device name (`"net_ring0"`, `"0000:03:00.0"`, ...).
    pub name: String,
    /// Driver name (`"net_ring"`, `"net_ixgbe"`, ...).
    pub driver: String,
    /// NUMA socket of the device, or [`crate::SOCKET_ID_ANY`] (-1) when
    /// unknown (virtual devices, non-NUMA machines). Pass it to
    /// [`Mempool::new`] so buffers live next to the NIC.
    pub socket_id: i32,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (`flow_type_rss_offloads`,
    /// `RTE_ETH_RSS_*` bits); 0 means no RSS.
    pub rss_offloads: u64,
    /// Supported RX offloads (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offload_capa: u64,
    /// Supported TX offloads (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub max_rx_pktlen: u32,
    pub rx_desc_min: u16,
    pub rx_desc_max: u16,
    pub tx_desc_min: u16,
    pub tx_desc_max: u16,
}

/// Read a device's capabilities without configuring it.
pub fn port_info(port_id: u16) -> Result<PortInfo, Error> {
    let op = || format!("rte_eth_dev_info_get(port {port_id})");
    require_eal(&op())?;
    let mut di = raw::rte_eth_dev_info::default();
    // SAFETY: EAL is initialised; di is a valid out-struct. The function
    // checks the port id itself.
    check(op, unsafe { raw::rte_eth_dev_info_get(port_id, &mut di) })?;

    let mut name_buf = [0 as c_char; raw::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: the buffer has the RTE_ETH_NAME_MAX_LEN bytes the API requires.
    let rc = unsafe { raw::rte_eth_dev_get_name_by_port(port_id, name_buf.as_mut_ptr()) };
    let name = if rc == 0 {
        // SAFETY: on success the buffer holds a NUL-terminated string.
        unsafe { CStr::from_ptr(name_buf.as_ptr()) }.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let driver = if di.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: driver_name points to the driver's static name string.
        unsafe { CStr::from_ptr(di.driver_name) }.to_string_lossy().into_owned()
    };
    // SAFETY: plain query on a valid port.
    let socket_id = unsafe { raw::rte_eth_dev_socket_id(port_id) };
    Ok(PortInfo {
        name,
        driver,
        socket_id,
        max_rx_queues: di.max_rx_queues,
        max_tx_queues: di.max_tx_queues,
        rss_offloads: di.flow_type_rss_offloads,
        rx_offload_capa: di.rx_offload_capa,
        tx_offload_capa: di.tx_offload_capa,
        min_mtu: di.min_mtu,
        max_mtu: di.max_mtu,
        max_rx_pktlen: di.max_rx_pktlen,
        rx_desc_min: di.rx_desc_lim.nb_min,
        rx_desc_max: di.rx_desc_lim.nb_max,
        tx_desc_min: di.tx_desc_lim.nb_min,
        tx_desc_max: di.tx_desc_lim.nb_max,
    })
}

/// How to set a port up. `Default`: 1 RX + 1 TX queue, 1024 descriptors
/// each, device MTU unchanged, RSS on (when it applies), promiscuous on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Wanted RX ring size; clamped to the device's limits.
    pub rx_desc: u16,
    /// Wanted TX ring size; clamped to the device's limits.
    pub tx_desc: u16,
    /// Set this MTU; `None` keeps the device's.
    pub mtu: Option<u16>,
    /// Spread packets over the RX queues with RSS. Only takes effect with
    /// more than one RX queue and a device that supports RSS; see
    /// [`Port::rss_enabled`].
    pub rss: bool,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            rss: true,
            promiscuous: true,
        }
    }
}

/// Basic counters (`rte_eth_stats`). Some virtual drivers (net_ring,
/// net_null in 22.11) count packets but not bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// RX packets dropped by the hardware (RX ring full).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// Marks a port id as owned by one `Port`; released on drop.
struct PortClaim(u16);

impl PortClaim {
    fn acquire(port_id: u16) -> Result<PortClaim, Error> {
        let op = || format!("Port::configure(port {port_id})");
        let slot = CLAIMED
            .get(usize::from(port_id))
            .ok_or_else(|| Error::refused(op(), format!("port id >= {MAX_PORTS}")))?;
        if slot.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Error::refused(op(), "the port is already owned by another Port value"));
        }
        Ok(PortClaim(port_id))
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        CLAIMED[usize::from(self.0)].store(false, Ordering::Release);
    }
}

/// State shared by a `Port` and its queue handles. The device is stopped
/// and closed when the last of them goes away.
struct PortShared {
    id: u16,
    started: AtomicBool,
    // Field order matters: Drop below runs first (stop + close), then the
    // claim is released, then the pool reference is dropped (the device
    // may use the pool until it is closed).
    _claim: PortClaim,
    _pool: Mempool,
}

impl Drop for PortShared {
    fn drop(&mut self) {
        // SAFETY: no queue handle exists any more (each holds an Arc to us),
        // so nothing is in rx/tx burst on this port; we own the port through
        // the claim. Errors are ignored: nothing useful can be done in drop.
        unsafe {
            if self.started.load(Ordering::Acquire) {
                raw::rte_eth_dev_stop(self.id);
            }
            raw::rte_eth_dev_close(self.id);
        }
    }
}

/// A configured Ethernet port, owned by this value.
///
/// At most one `Port` exists per port id at a time. Dropping the `Port`
/// (and every queue handle taken from it) stops and **closes** the device
/// (`rte_eth_dev_close`). In DPDK 22.11 closing releases the port: a virtual
/// device disappears and a PCI device would have to be probed again, so a
/// closed port id cannot be configured again in the same process.
///
/// The methods take `&self` (a `Port` can be shared, e.g. in an `Arc`, with
/// a control thread reading stats); start/stop/take_queues are serialised by
/// an internal lock.
pub struct Port {
    shared: Arc<PortShared>,
    lock: Mutex<()>,
    info: PortInfo,
    cfg: PortConfig,
    rx_desc: u16,
    tx_desc: u16,
    rss_hf: u64,
}

impl Port {
    /// Configure `port_id` (`rte_eth_dev_configure`, queue set-up, MTU).
    /// The port is left stopped; call [`Port::start`].
    ///
    /// * Refuses when the device has fewer queues than asked, or when 0
    ///   queues are asked.
    /// * Clamps the descriptor counts to the device's limits
    ///   (`rte_eth_dev_adjust_nb_rx_tx_desc`); see [`Port::rx_desc`].
    /// * Enables RSS (`RTE_ETH_MQ_RX_RSS`, hash on IP/TCP/UDP as far as the
    ///   device supports it) only if `cfg.rss`, `cfg.rx_queues > 1` and the
    ///   device supports at least one of those hash types.
    /// * Sets `cfg.mtu` if given and different from the current MTU; a
    ///   device that refuses it, or cannot set an MTU at all, is an `Error`.
    /// * Queues use the device's NUMA socket (`rte_eth_dev_socket_id`, which
    ///   may be `SOCKET_ID_ANY`); `pool` may be on any socket. The `Port`
    ///   keeps a clone of `pool`.
    ///
    /// If configuration fails half-way the device is left configured but
    /// not started, and the port id can be configured again.
    pub fn configure(port_id: u16, cfg: &PortConfig, pool: &Mempool) -> Result<Port, Error> {
        let op = |what: &str| format!("{what}(port {port_id})");
        require_eal(&op("Port::configure"))?;
        let claim = PortClaim::acquire(port_id)?;
        let info = port_info(port_id)?;

        if cfg.rx_queues == 0 || cfg.tx_queues == 0 {
            return Err(Error::refused(op("Port::configure"), "at least one RX and one TX queue are needed"));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(Error::refused(
                op("Port::configure"),
                format!(
                    "asked for {} RX / {} TX queues, device {} ({}) has at most {} RX / {} TX",
                    cfg.rx_queues,
                    cfg.tx_queues,
                    info.name,
                    info.driver,
                    info.max_rx_queues,
                    info.max_tx_queues
                ),
            ));
        }
        if let Some(mtu) = cfg.mtu {
            if mtu < info.min_mtu || mtu > info.max_mtu {
                return Err(Error::refused(
                    op("rte_eth_dev_set_mtu"),
                    format!("MTU {mtu} is outside the device range {}..={}", info.min_mtu, info.max_mtu),
                ));
            }
        }

        let mut conf = raw::rte_eth_conf::default();
        let rss_hf = RSS_HF_DEFAULT & info.rss_offloads;
        let rss_on = cfg.rss && cfg.rx_queues > 1 && rss_hf != 0;
        if rss_on {
            conf.rxmode.mq_mode = raw::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut(); // driver default key
            conf.rx_adv_conf.rss_conf.rss_key_len = 0;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            if info.rx_offload_capa & ETH_RX_OFFLOAD_RSS_HASH != 0 {
                conf.rxmode.offloads |= ETH_RX_OFFLOAD_RSS_HASH;
            }
        }

        // SAFETY: EAL is up, we own the port (claim), conf is a valid,
        // fully initialised rte_eth_conf that DPDK copies.
        let rc = unsafe { raw::rte_eth_dev_configure(port_id, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(|| op("rte_eth_dev_configure"), rc)?;

        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: both pointers are valid u16 in/out parameters.
        let rc = unsafe { raw::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut rx_desc, &mut tx_desc) };
        check(|| op("rte_eth_dev_adjust_nb_rx_tx_desc"), rc)?;

        // Negative SOCKET_ID_ANY is passed through the unsigned parameter
        // unchanged, as C callers do; DPDK converts it back to int.
        let socket = info.socket_id as u32;
        for q in 0..cfg.rx_queues {
            // SAFETY: configured port, q < nb_rx_queues, NULL rxconf means
            // the driver defaults, pool is a live pktmbuf pool that the Port
            // keeps alive (clone stored in PortShared) until the device is
            // closed.
            let rc = unsafe {
                raw::rte_eth_rx_queue_setup(port_id, q, rx_desc, socket, std::ptr::null(), pool.as_ptr())
            };
            check(|| format!("rte_eth_rx_queue_setup(port {port_id}, queue {q})"), rc)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured port, q < nb_tx_queues, NULL txconf means
            // the driver defaults.
            let rc = unsafe { raw::rte_eth_tx_queue_setup(port_id, q, tx_desc, socket, std::ptr::null()) };
            check(|| format!("rte_eth_tx_queue_setup(port {port_id}, queue {q})"), rc)?;
        }

        if let Some(mtu) = cfg.mtu {
            let mut current: u16 = 0;
            // SAFETY: valid port and out-pointer.
            let rc = unsafe { raw::rte_eth_dev_get_mtu(port_id, &mut current) };
            if rc != 0 || current != mtu {
                // SAFETY: configured port that we own.
                let rc = unsafe { raw::rte_eth_dev_set_mtu(port_id, mtu) };
                if rc == -libc::ENOTSUP {
                    return Err(Error::with_text(
                        format!("rte_eth_dev_set_mtu(port {port_id}, {mtu})"),
                        libc::ENOTSUP,
                        format!("driver {} cannot change the MTU", info.driver),
                    ));
                }
                check(|| format!("rte_eth_dev_set_mtu(port {port_id}, {mtu})"), rc)?;
            }
        }

        Ok(Port {
            shared: Arc::new(PortShared {
                id: port_id,
                started: AtomicBool::new(false),
                _claim: claim,
                _pool: pool.clone(),
            }),
            lock: Mutex::new(()),
            info,
            cfg: cfg.clone(),
            rx_desc,
            tx_desc,
            rss_hf: if rss_on { rss_hf } else { 0 },
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`, so a poisoned lock carries no broken state.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while queue handles taken from this port are still alive.
    fn queues_out(&self) -> bool {
        if Arc::strong_count(&self.shared) == 1 {
            // Pairs with the Release decrement in Arc::drop of the last
            // queue handle: everything that thread did with the queue
            // (bursts) happens-before what we do next.
            fence(Ordering::Acquire);
            false
        } else {
            true
        }
    }

    /// Start the device (`rte_eth_dev_start`), then enable promiscuous mode
    /// if configured (a driver without promiscuous support is not an error:
    /// see [`Port::promiscuous`]).
    pub fn start(&self) -> Result<(), Error> {
        let _g = self.lock();
        let id = self.shared.id;
        // SAFETY: configured port that we own.
        check(|| format!("rte_eth_dev_start(port {id})"), unsafe { raw::rte_eth_dev_start(id) })?;
        self.shared.started.store(true, Ordering::Release);
        if self.cfg.promiscuous {
            // SAFETY: started port that we own.
            let rc = unsafe { raw::rte_eth_promiscuous_enable(id) };
            if rc != -libc::ENOTSUP {
                check(|| format!("rte_eth_promiscuous_enable(port {id})"), rc)?;
            }
        }
        Ok(())
    }

    /// Stop the device (`rte_eth_dev_stop`). Refused while queue handles
    /// from [`Port::take_queues`] are alive (a worker could be inside a
    /// burst call): drop them (join the workers) first.
    pub fn stop(&self) -> Result<(), Error> {
        let _g = self.lock();
        let id = self.shared.id;
        if self.queues_out() {
            return Err(Error::refused(
                format!("rte_eth_dev_stop(port {id})"),
                "queue handles are still alive; drop them before stopping",
            ));
        }
        // SAFETY: we own the port and no queue handle exists, so no burst
        // call can be running.
        check(|| format!("rte_eth_dev_stop(port {id})"), unsafe { raw::rte_eth_dev_stop(id) })?;
        self.shared.started.store(false, Ordering::Release);
        Ok(())
    }

    /// Hand out one `(RxQueue, TxQueue)` pair per queue index, to be moved
    /// to one worker thread each. Needs a started port with as many RX as TX
    /// queues (otherwise use [`Port::take_rx_tx_queues`]).
    ///
    /// A queue can never be handed out twice: this refuses while any handle
    /// from an earlier call is alive. After they have all been dropped the
    /// queues can be taken again.
    pub fn take_queues(&self) -> Result<Vec<(RxQueue, TxQueue)>, Error> {
        if self.cfg.rx_queues != self.cfg.tx_queues {
            return Err(Error::refused(
                format!("Port::take_queues(port {})", self.shared.id),
                "RX and TX queue counts differ; use take_rx_tx_queues",
            ));
        }
        let (rx, tx) = self.take_rx_tx_queues()?;
        Ok(rx.into_iter().zip(tx).collect())
    }

    /// Like [`Port::take_queues`], with separate lists for RX and TX.
    pub fn take_rx_tx_queues(&self) -> Result<(Vec<RxQueue>, Vec<TxQueue>), Error> {
        let _g = self.lock();
        let op = || format!("Port::take_queues(port {})", self.shared.id);
        if !self.shared.started.load(Ordering::Acquire) {
            return Err(Error::refused(op(), "the port is not started"));
        }
        if self.queues_out() {
            return Err(Error::refused(op(), "the queues were already taken"));
        }
        let rx = (0..self.cfg.rx_queues)
            .map(|q| RxQueue {
                _shared: Arc::clone(&self.shared),
                port: self.shared.id,
                queue: q,
                _not_sync: PhantomData,
            })
            .collect();
        let tx = (0..self.cfg.tx_queues)
            .map(|q| TxQueue {
                _shared: Arc::clone(&self.shared),
                port: self.shared.id,
                queue: q,
                _not_sync: PhantomData,
            })
            .collect();
        Ok((rx, tx))
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// Device capabilities, as read at configure time.
    pub fn info(&self) -> PortInfo {
        self.info.clone()
    }

    /// The configuration this port was set up with.
    pub fn config(&self) -> &PortConfig {
        &self.cfg
    }

    /// RX ring size actually used (after clamping to the device limits).
    pub fn rx_desc(&self) -> u16 {
        self.rx_desc
    }

    /// TX ring size actually used (after clamping to the device limits).
    pub fn tx_desc(&self) -> u16 {
        self.tx_desc
    }

    /// True if RSS was enabled (see [`Port::configure`]).
    pub fn rss_enabled(&self) -> bool {
        self.rss_hf != 0
    }

    /// RSS hash types in use (`RTE_ETH_RSS_*`), 0 without RSS.
    pub fn rss_hf(&self) -> u64 {
        self.rss_hf
    }

    /// MAC address (`rte_eth_macaddr_get`).
    pub fn mac(&self) -> [u8; 6] {
        let mut addr = raw::rte_ether_addr::default();
        // SAFETY: valid port and out-struct.
        let rc = unsafe { raw::rte_eth_macaddr_get(self.shared.id, &mut addr) };
        if rc == 0 {
            addr.addr_bytes
        } else {
            [0; 6]
        }
    }

    /// Program `mac` as the port's address (`rte_eth_dev_default_mac_addr_set`). A multicast
    /// or all-zero address is refused before reaching the driver.
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), Error> {
        let op = || format!("Port::set_mac(port {})", self.shared.id);
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(Error::refused(op(), "not a unicast MAC address"));
        }
        let mut addr = raw::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port owned by this value; `addr` is a valid rte_ether_addr that the
        // driver only reads during the call.
        let rc = unsafe { raw::rte_eth_dev_default_mac_addr_set(self.shared.id, &mut addr) };
        check(op, rc).map(|_| ())
    }

    /// Current MTU (`rte_eth_dev_get_mtu`).
    pub fn mtu(&self) -> u16 {
        let mut mtu = 0;
        // SAFETY: valid port and out-pointer.
        unsafe { raw::rte_eth_dev_get_mtu(self.shared.id, &mut mtu) };
        mtu
    }

    /// True if promiscuous mode is on (`rte_eth_promiscuous_get`).
    pub fn promiscuous(&self) -> bool {
        // SAFETY: plain query on a valid port.
        unsafe { raw::rte_eth_promiscuous_get(self.shared.id) == 1 }
    }

    /// Link status without waiting (`rte_eth_link_get_nowait`).
    pub fn link_up(&self) -> bool {
        let mut link = raw::rte_eth_link::default();
        // SAFETY: valid port and out-struct.
        let rc = unsafe { raw::rte_eth_link_get_nowait(self.shared.id, &mut link) };
        rc == 0 && link.link_status() != 0
    }

    /// Counters; all zero if the driver cannot report them (see
    /// [`Port::try_stats`]).
    pub fn stats(&self) -> PortStats {
        self.try_stats().unwrap_or_default()
    }

    /// Counters (`rte_eth_stats_get`).
    pub fn try_stats(&self) -> Result<PortStats, Error> {
        let id = self.shared.id;
        let mut s = raw::rte_eth_stats::default();
        // SAFETY: valid port and out-struct; stats may be read while other
        // threads run bursts (DPDK's usual control-plane pattern).
        check(|| format!("rte_eth_stats_get(port {id})"), unsafe { raw::rte_eth_stats_get(id, &mut s) })?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Zero the counters (`rte_eth_stats_reset`).
    pub fn reset_stats(&self) -> Result<(), Error> {
        let id = self.shared.id;
        // SAFETY: valid port.
        check(|| format!("rte_eth_stats_reset(port {id})"), unsafe { raw::rte_eth_stats_reset(id) })?;
        Ok(())
    }
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.shared.id)
            .field("name", &self.info.name)
            .field("driver", &self.info.driver)
            .field("rx_queues", &self.cfg.rx_queues)
            .field("tx_queues", &self.cfg.tx_queues)
            .field("rss", &self.rss_enabled())
            .finish()
    }
}

/// The receive side of one queue of a started port. `Send` (move it to its
/// worker) but not `Sync` and not `Clone`: exactly one thread uses a queue.
pub struct RxQueue {
    /// Keeps the device open (and its pool alive) while the handle lives.
    _shared: Arc<PortShared>,
    port: u16,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

/// The transmit side of one queue of a started port. `Send`, not `Sync`,
/// not `Clone`.
pub struct TxQueue {
    /// Keeps the device open while the handle lives.
    _shared: Arc<PortShared>,
    port: u16,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl RxQueue {
    /// Receive up to `out.remaining_capacity()` packets (at most 65535) and
    /// push them onto `out`; returns how many were received.
    ///
    /// No allocation, no lock: the driver writes straight into `out`'s spare
    /// slots. Vector drivers may return nothing when offered fewer than 4
    /// (driver-specific) slots, so keep bursts reasonably large (e.g. 32).
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, out: &mut ArrayVec<Mbuf, N>) -> usize {
        let len = out.len();
        let room = u16::try_from(out.remaining_capacity()).unwrap_or(u16::MAX);
        if room == 0 {
            return 0;
        }
        // SAFETY: `Mbuf` is repr(transparent) over NonNull<rte_mbuf>, so the
        // spare slots form an array of `room` `*mut rte_mbuf`. The port is
        // started and cannot be stopped while we exist (Port::stop refuses),
        // and this handle is the only user of (port, queue).
        let got = unsafe {
            let slots = out.as_mut_ptr().add(len).cast::<*mut raw::rte_mbuf>();
            raw::shim_rte_eth_rx_burst(self.port, self.queue, slots, room)
        };
        let got = usize::from(got).min(usize::from(room));
        // SAFETY: the driver stored `got` valid, non-null mbufs, each with one
        // reference now owned by us, in the slots after `len`.
        unsafe { out.set_len(len + got) };
        got
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl TxQueue {
    /// Transmit packets from the front of `pkts` (at most 65535); returns how
    /// many the driver accepted. Those are removed from `pkts` (the driver
    /// now owns and will free them); the rest stay in `pkts`, in order, still
    /// owned by the caller (retry, or drop them to free them).
    ///
    /// No allocation, no lock: `pkts`' storage is passed to the driver as is.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, pkts: &mut ArrayVec<Mbuf, N>) -> usize {
        let offered = u16::try_from(pkts.len()).unwrap_or(u16::MAX);
        if offered == 0 {
            return 0;
        }
        // SAFETY: `Mbuf` is repr(transparent) over NonNull<rte_mbuf>, so
        // `pkts` is an array of `offered` valid `*mut rte_mbuf` we own. The
        // port is started and this handle is the only user of the queue.
        let sent = unsafe {
            raw::shim_rte_eth_tx_burst(
                self.port,
                self.queue,
                pkts.as_mut_ptr().cast::<*mut raw::rte_mbuf>(),
                offered,
            )
        };
        let sent = usize::from(sent).min(usize::from(offered));
        // The first `sent` mbufs belong to the driver now: remove them
        // without running Mbuf's Drop (that would free them a second time).
        for m in pkts.drain(..sent) {
            std::mem::forget(m);
        }
        sent
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl std::fmt::Debug for RxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RxQueue(port {}, queue {})", self.port, self.queue)
    }
}

impl std::fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxQueue(port {}, queue {})", self.port, self.queue)
    }
}
