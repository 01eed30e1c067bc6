//! DPDK integration tests. `rte_eal_init` works once per process, so every
//! test that needs the EAL lives in this one binary and calls [`eal()`],
//! which initialises it on first use. Tests run in parallel threads; each
//! one uses its own virtual device and its own mempool, so they do not
//! interfere (a `Port` closes its device when dropped).
//!
//! Devices (no hugepages, no PCI):
//! * `net_ring0..2`: with no arguments, net_ring creates one 1024-slot ring
//!   per queue pair and uses it for both directions, i.e. TX queue i loops
//!   back into RX queue i (checked by `ring_loopback_roundtrip`).
//! * `net_null0..2`: RX makes 64-byte packets from the port's mempool, TX
//!   frees everything.
//!
//! Needs root (DPDK wants /var/run/dpdk and physical memory info).

use std::ffi::{CStr, CString};
use std::sync::{Arc, Barrier, OnceLock};

use arrayvec::ArrayVec;
use dpdk_sys::consts::{MBUF_F_RX_RSS_HASH, RSS_HF_DEFAULT};
use dpdk_sys::{raw, Eal, Mbuf, Mempool, Port, PortConfig, SOCKET_ID_ANY};

const DATA_ROOM: u16 = 2048 + 128;

fn eal_args() -> Vec<String> {
    let prefix = format!("dpdk-sys-test-{}", std::process::id());
    let mut args: Vec<String> = [
        "dpdk-sys-test",
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "--no-shconf",
        "--log-level",
        "warning",
        "--file-prefix",
        &prefix,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dev in [
        "net_ring0",
        "net_ring1",
        "net_ring2",
        "net_null0",
        "net_null1",
        "net_null2",
        "net_ring3", // only looked up, never configured
        "net_null3", // only looked up, never configured
    ] {
        args.push("--vdev".into());
        args.push(dev.into());
    }
    args
}

fn eal() -> Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    *EAL.get_or_init(|| {
        let eal = Eal::init(&eal_args()).expect("rte_eal_init");
        // With --no-shconf DPDK keeps nothing in its runtime directory but
        // still creates it; remove it so test runs leave no trace (only
        // succeeds while it is empty).
        // SAFETY: EAL is initialised; the function returns a pointer to a
        // static NUL-terminated path.
        let dir = unsafe { CStr::from_ptr(raw::rte_eal_get_runtime_dir()) };
        let _ = std::fs::remove_dir(dir.to_string_lossy().as_ref());
        eal
    })
}

fn pool(name: &str, n: u32, cache: u32) -> Mempool {
    eal();
    Mempool::new(name, n, cache, DATA_ROOM, SOCKET_ID_ANY).expect("mempool")
}

fn port_id(name: &str) -> u16 {
    eal();
    dpdk_sys::port_by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Payload of test packet `i`: a length and bytes that differ per packet.
fn payload(i: usize) -> Vec<u8> {
    (0..60 + i).map(|j| (i * 31 + j * 7) as u8).collect()
}

fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(m.data()[..4].try_into().unwrap())
}

#[test]
fn eal_init_only_once() {
    eal();
    let err = Eal::init(&eal_args()).expect_err("second init must fail");
    assert!(err.to_string().contains("once"), "{err}");
    assert!(Eal::get().is_some());
    assert!(Eal::tsc_hz() > 0);
    let a = dpdk_sys::rdtsc();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let ticks = dpdk_sys::rdtsc() - a;
    // 5 ms at tsc_hz: at least 2.5 ms worth of ticks.
    assert!(ticks > Eal::tsc_hz() / 400, "ticks {ticks}");
}

#[test]
fn port_lookup() {
    eal();
    assert!(dpdk_sys::port_count() >= 1);
    let err = dpdk_sys::port_by_name("net_does_not_exist").unwrap_err();
    assert!(err.errno().is_some(), "{err}");
    // Names map to distinct ids of the right devices (these two vdevs are
    // never configured, so no other test closes them meanwhile).
    let (ring, null) = (port_id("net_ring3"), port_id("net_null3"));
    assert_ne!(ring, null);
    assert_eq!(dpdk_sys::port_info(ring).unwrap().name, "net_ring3");
    assert_eq!(dpdk_sys::port_info(null).unwrap().driver, "net_null");
}

/// (a) net_ring loopback: 32 distinct packets out and back, byte for byte;
/// queue i only feeds queue i.
#[test]
fn ring_loopback_roundtrip() {
    let pool = pool("t-loop", 1023, 32);
    let id = port_id("net_ring0");
    let cfg = PortConfig { rx_queues: 2, tx_queues: 2, ..PortConfig::default() };
    let port = Port::configure(id, &cfg, &pool).expect("configure");
    assert_eq!(port.info().driver, "net_ring");
    // net_ring reports no RSS hash types, so RSS stays off even with 2 queues.
    assert!(!port.rss_enabled());
    port.start().expect("start");
    assert!(port.link_up());
    let mut queues = port.take_queues().expect("queues");
    assert_eq!(queues.len(), 2);
    let (mut rx1, mut tx1) = queues.pop().unwrap();
    let (mut rx0, mut tx0) = queues.pop().unwrap();
    assert_eq!((rx0.queue_id(), tx1.queue_id()), (0, 1));

    let mut out: ArrayVec<Mbuf, 32> = ArrayVec::new();
    for i in 0..32 {
        let mut m = pool.alloc().expect("alloc");
        assert!(m.extend_from_slice(&payload(i)));
        out.push(m);
    }
    assert_eq!(pool.in_use(), 32);
    assert_eq!(tx0.tx_burst(&mut out), 32);
    assert!(out.is_empty());
    // Handed to the ring, not freed.
    assert_eq!(pool.in_use(), 32);

    let mut got: ArrayVec<Mbuf, 64> = ArrayVec::new();
    assert_eq!(rx1.rx_burst(&mut got), 0, "queue 1 must not see queue 0's packets");
    assert_eq!(rx0.rx_burst(&mut got), 32);
    assert_eq!(got.len(), 32);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.len(), 60 + i);
        assert_eq!(m.data(), &payload(i)[..], "packet {i}");
        assert!(m.is_contiguous());
        assert_eq!(m.refcnt(), 1);
    }
    got.clear();
    assert_eq!(pool.in_use(), 0);

    // Queue 1 loops back into queue 1; rx_burst appends after what is there.
    let mut out: ArrayVec<Mbuf, 8> = ArrayVec::new();
    for i in 0..5 {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&payload(100 + i)));
        out.push(m);
    }
    assert_eq!(tx1.tx_burst(&mut out), 5);
    let mut got: ArrayVec<Mbuf, 8> = ArrayVec::new();
    got.push(pool.alloc().unwrap()); // already one (empty) packet in the array
    assert_eq!(rx0.rx_burst(&mut got), 0);
    assert_eq!(rx1.rx_burst(&mut got), 5);
    assert_eq!(got.len(), 6);
    assert!(got[0].is_empty());
    for i in 0..5 {
        assert_eq!(got[i + 1].data(), &payload(100 + i)[..]);
    }
    // Full array: nothing is taken from the ring.
    let mut one: ArrayVec<Mbuf, 1> = ArrayVec::new();
    one.push(pool.alloc().unwrap());
    assert_eq!(rx1.rx_burst(&mut one), 0);
    drop(one);
    drop(got);
    assert_eq!(pool.in_use(), 0);

    let s = port.stats();
    assert_eq!((s.ipackets, s.opackets), (37, 37));
    drop((rx0, tx0, rx1, tx1));
    port.stop().expect("stop");
}

/// (b) partial TX: the ring fills up, the unsent packets stay in the
/// ArrayVec (in order, still ours) and nothing leaks.
#[test]
fn ring_partial_tx_keeps_unsent() {
    let pool = pool("t-partial", 2047, 0);
    let id = port_id("net_ring1");
    let cfg = PortConfig { rx_desc: 64, tx_desc: 64, ..PortConfig::default() };
    let port = Port::configure(id, &cfg, &pool).expect("configure");
    port.start().expect("start");
    let (mut rx, mut tx) = port.take_queues().unwrap().pop().unwrap();

    let mut seq = 0u32;
    let mut sent_total = 0usize;
    let mut leftover: Option<ArrayVec<Mbuf, 32>> = None;
    for _ in 0..100 {
        let mut burst: ArrayVec<Mbuf, 32> = ArrayVec::new();
        assert!(pool.alloc_bulk(&mut burst, 32));
        for m in burst.iter_mut() {
            assert!(m.extend_from_slice(&seq.to_be_bytes()));
            seq += 1;
        }
        let n = tx.tx_burst(&mut burst);
        sent_total += n;
        assert_eq!(burst.len(), 32 - n);
        if n < 32 {
            leftover = Some(burst);
            break;
        }
    }
    let mut leftover = leftover.expect("the ring never filled up");
    // net_ring's default ring has 1024 slots, 1023 usable.
    assert_eq!(sent_total, 1023);
    assert!(!leftover.is_empty());
    // The unsent ones are exactly the tail of what we offered, in order.
    for (k, m) in leftover.iter().enumerate() {
        assert_eq!(seq_of(m) as usize, sent_total + k);
        assert_eq!(m.refcnt(), 1);
    }
    assert_eq!(pool.in_use() as usize, sent_total + leftover.len());
    // Still full: a retry sends nothing and changes nothing.
    let before = leftover.len();
    assert_eq!(tx.tx_burst(&mut leftover), 0);
    assert_eq!(leftover.len(), before);
    drop(leftover);
    assert_eq!(pool.in_use() as usize, sent_total);

    // Drain: everything that was accepted comes back once, in order.
    let mut next = 0usize;
    loop {
        let mut got: ArrayVec<Mbuf, 64> = ArrayVec::new();
        if rx.rx_burst(&mut got) == 0 {
            break;
        }
        for m in &got {
            assert_eq!(seq_of(m) as usize, next);
            next += 1;
        }
    }
    assert_eq!(next, sent_total);
    assert_eq!(pool.in_use(), 0);
    let s = port.stats();
    assert_eq!(s.opackets as usize, sent_total);
    assert_eq!(s.ipackets as usize, sent_total);
}

/// Configuration refusals and the queue hand-out rules.
#[test]
fn ring_refusals_and_queue_ownership() {
    let pool = pool("t-refuse", 255, 0);
    let id = port_id("net_ring2");
    let info = dpdk_sys::port_info(id).unwrap();
    assert_eq!(info.max_rx_queues, 16);

    let too_many = PortConfig { rx_queues: info.max_rx_queues + 1, ..PortConfig::default() };
    let err = Port::configure(id, &too_many, &pool).unwrap_err();
    assert!(err.to_string().contains("at most 16 RX"), "{err}");
    let zero = PortConfig { tx_queues: 0, ..PortConfig::default() };
    assert!(Port::configure(id, &zero, &pool).is_err());
    let tiny_mtu = PortConfig { mtu: Some(info.min_mtu - 1), ..PortConfig::default() };
    let err = Port::configure(id, &tiny_mtu, &pool).unwrap_err();
    assert!(err.to_string().contains("outside the device range"), "{err}");
    // net_ring has no MTU setter: a different MTU is refused with ENOTSUP.
    let mtu = PortConfig { mtu: Some(1400), ..PortConfig::default() };
    let err = Port::configure(id, &mtu, &pool).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOTSUP), "{err}");
    assert!(err.to_string().contains("cannot change the MTU"), "{err}");

    // Asking for the MTU it already has is fine.
    let same_mtu = PortConfig { mtu: Some(1500), ..PortConfig::default() };
    let port = Port::configure(id, &same_mtu, &pool).expect("configure");
    assert_eq!(port.mtu(), 1500);
    assert!(!port.rss_enabled());
    // One owner per port.
    let err = Port::configure(id, &PortConfig::default(), &pool).unwrap_err();
    assert!(err.to_string().contains("already owned"), "{err}");

    assert!(port.take_queues().is_err(), "not started yet");
    port.start().unwrap();
    let queues = port.take_queues().expect("first take");
    assert!(port.take_queues().is_err(), "second take while the first is alive");
    assert!(port.stop().is_err(), "stop while queues are alive");
    // Moving a queue to another thread keeps it alive: still refused.
    let (rx, tx) = queues.into_iter().next().unwrap();
    let h = std::thread::spawn(move || (rx.queue_id(), tx.queue_id()));
    assert_eq!(h.join().unwrap(), (0, 0));
    port.stop().expect("stop once the queues are gone");
    assert!(port.take_queues().is_err(), "stopped");
    port.start().unwrap();
    let again = port.take_queues().expect("take again after the first set died");
    assert_eq!(again.len(), 1);
}

/// (c) prepend/adj/append/trim, including refusals when out of room.
#[test]
fn mbuf_edit_semantics() {
    let pool = pool("t-edit", 63, 0);
    let mut m = pool.alloc().unwrap();
    let head = Mempool::headroom_default();
    let room = usize::from(DATA_ROOM) - head;
    assert_eq!((m.len(), m.headroom(), m.tailroom()), (0, head, room));
    assert!(m.is_empty() && m.is_contiguous() && m.nb_segs() == 1);

    let consistent = |m: &Mbuf| {
        assert_eq!(m.data().len(), m.len(), "data_len != pkt_len");
        assert_eq!(m.headroom() + m.len() + m.tailroom(), usize::from(DATA_ROOM));
    };

    // append zeroes new bytes even where old data was.
    assert!(m.append(100));
    assert_eq!(m.len(), 100);
    assert!(m.data().iter().all(|&b| b == 0));
    m.data_mut().fill(0xAA);
    assert!(m.trim(100));
    assert_eq!(m.len(), 0);
    assert!(m.append(100));
    assert!(m.data().iter().all(|&b| b == 0), "append must zero");
    consistent(&m);

    // trim / adj remove from the right end.
    let bytes: Vec<u8> = (0..100u8).collect();
    m.data_mut().copy_from_slice(&bytes);
    assert!(m.trim(10));
    assert_eq!(m.data(), &bytes[..90]);
    assert!(m.adj(5));
    assert_eq!(m.data(), &bytes[5..90]);
    assert_eq!(m.headroom(), head + 5);
    consistent(&m);

    // prepend grows at the front; the new bytes are the buffer's old ones (not cleared).
    m.data_mut()[0] = 0xEE;
    assert!(m.prepend(3));
    assert_eq!(m.data()[3], 0xEE);
    assert_eq!(m.len(), 88);
    m.data_mut()[..3].fill(0xBB);
    assert!(m.adj(3));
    assert!(m.prepend(3));
    assert_eq!(&m.data()[..4], &[0xBB, 0xBB, 0xBB, 0xEE], "prepend exposes the old bytes, unchanged");
    consistent(&m);

    // Refusals leave the packet unchanged.
    let snapshot = m.data().to_vec();
    let (hr, tr) = (m.headroom(), m.tailroom());
    assert!(!m.prepend(hr + 1));
    assert!(!m.append(tr + 1));
    assert!(!m.adj(m.len() + 1));
    assert!(!m.trim(m.len() + 1));
    assert!(!m.prepend(usize::from(u16::MAX) + 1));
    assert!(!m.append(1 << 20));
    assert!(!m.extend_from_slice(&vec![1u8; tr + 1]));
    assert_eq!(m.data(), &snapshot[..]);
    assert_eq!((m.headroom(), m.tailroom()), (hr, tr));

    // Exactly filling the room works, one more byte does not.
    assert!(m.prepend(hr));
    assert_eq!(m.headroom(), 0);
    assert!(!m.prepend(1));
    assert!(m.append(tr));
    assert_eq!(m.tailroom(), 0);
    assert!(!m.append(1));
    assert_eq!(m.len(), usize::from(DATA_ROOM));
    consistent(&m);
    // adj/trim down to nothing.
    let len = m.len();
    assert!(m.adj(len / 2));
    assert!(m.trim(len - len / 2));
    assert!(m.is_empty());
    consistent(&m);

    // into_raw / from_raw keep exactly one owner.
    let p = m.into_raw();
    assert_eq!(pool.in_use(), 1);
    // SAFETY: p came from into_raw just above and nothing else uses it.
    let m = unsafe { Mbuf::from_raw(p) };
    assert_eq!(m.refcnt(), 1);
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn mbuf_rss_hash_and_port_fields() {
    let pool = pool("t-rss-flag", 63, 0);
    let m = pool.alloc().unwrap();
    assert_eq!(m.rss_hash(), None);
    let p = m.into_raw();
    // SAFETY: we own p (from into_raw) exclusively; we only write plain
    // integer fields, as a driver would on receive.
    unsafe {
        (*p).ol_flags |= MBUF_F_RX_RSS_HASH;
        (*p).__bindgen_anon_2.hash.rss = 0xdead_beef;
        (*p).port = 7;
    }
    // SAFETY: p is still the one reference taken out above.
    let m = unsafe { Mbuf::from_raw(p) };
    assert_eq!(m.rss_hash(), Some(0xdead_beef));
    assert_eq!(m.port(), 7);
    assert_ne!(m.ol_flags() & MBUF_F_RX_RSS_HASH, 0);
    drop(m);
    // Reallocation resets the flags.
    let m = pool.alloc().unwrap();
    assert_eq!(m.rss_hash(), None);
}

#[test]
fn mempool_counts_exhaustion_and_bulk() {
    let pool = pool("t-count", 63, 0);
    assert_eq!(pool.capacity(), 63);
    assert_eq!((pool.available(), pool.in_use()), (63, 0));
    let mut all = Vec::new();
    while let Some(m) = pool.alloc() {
        all.push(m);
    }
    assert_eq!(all.len(), 63);
    assert_eq!((pool.available(), pool.in_use()), (0, 63));
    all.clear();
    assert_eq!((pool.available(), pool.in_use()), (63, 0));

    let mut bulk: ArrayVec<Mbuf, 64> = ArrayVec::new();
    assert!(!pool.alloc_bulk(&mut bulk, 64), "only 63 in the pool");
    assert!(bulk.is_empty());
    assert_eq!(pool.in_use(), 0, "a failed bulk alloc takes nothing");
    assert!(pool.alloc_bulk(&mut bulk, 40));
    assert!(pool.alloc_bulk(&mut bulk, 23));
    assert_eq!(bulk.len(), 63);
    assert!(!pool.alloc_bulk(&mut bulk, 1), "no room in the ArrayVec");
    assert!(bulk.iter().all(|m| m.is_empty() && m.refcnt() == 1));
    assert_eq!(pool.in_use(), 63);
    bulk.truncate(10);
    assert_eq!(pool.in_use(), 10);
    // Mbufs can be freed on another thread.
    let h = std::thread::spawn(move || drop(bulk));
    h.join().unwrap();
    assert_eq!(pool.in_use(), 0);

    // Duplicate pool names are an error, not a second pool.
    let err = Mempool::new("t-count", 63, 0, DATA_ROOM, SOCKET_ID_ANY).unwrap_err();
    assert!(err.errno().is_some(), "{err}");
}

fn pool_exists(name: &str) -> bool {
    let c = CString::new(name).unwrap();
    // SAFETY: EAL is up; lookup only reads the mempool list.
    !unsafe { raw::rte_mempool_lookup(c.as_ptr()) }.is_null()
}

#[test]
fn mempool_drop_frees_only_when_nothing_is_out() {
    let p = pool("t-free", 63, 0);
    assert!(pool_exists("t-free"));
    drop(p);
    assert!(!pool_exists("t-free"), "an idle pool is freed on drop");

    let p = pool("t-leak", 63, 0);
    let mut m = p.alloc().unwrap();
    drop(p);
    assert!(pool_exists("t-leak"), "a pool with mbufs out must be kept");
    // The mbuf is still fully usable and can be freed.
    assert!(m.extend_from_slice(b"still alive"));
    assert_eq!(m.data(), b"still alive");
    drop(m);
}

/// (d) net_null: configure / start / stats, RX fills from our pool, TX frees.
#[test]
fn null_port_configure_start_stats() {
    let pool = pool("t-null", 511, 0);
    let id = port_id("net_null0");
    let cfg = PortConfig { mtu: Some(1400), ..PortConfig::default() };
    let port = Port::configure(id, &cfg, &pool).expect("configure");
    let info = port.info();
    assert_eq!(info.driver, "net_null");
    assert_eq!(info.name, "net_null0");
    assert_eq!(port.id(), id);
    assert_eq!(port.mtu(), 1400);
    assert!(!port.rss_enabled(), "one RX queue: no RSS");
    assert!(port.rx_desc() > 0 && port.tx_desc() > 0);
    let mac = [0x02, 0x53, 0x4c, 0x00, 0x00, 0x07];
    assert_ne!(port.mac(), mac);
    port.set_mac(mac).expect("set_mac");
    assert_eq!(port.mac(), mac);
    assert!(port.set_mac([0x01, 0, 0x5e, 0, 0, 1]).is_err(), "multicast refused");
    assert!(port.set_mac([0; 6]).is_err(), "zero refused");
    assert_eq!(port.mac(), mac);
    port.start().expect("start");
    assert!(port.link_up());
    assert_eq!(port.stats(), dpdk_sys::PortStats::default());

    let (mut rx, mut tx) = port.take_queues().unwrap().pop().unwrap();
    let mut burst: ArrayVec<Mbuf, 32> = ArrayVec::new();
    assert_eq!(rx.rx_burst(&mut burst), 32);
    assert_eq!(pool.in_use(), 32, "net_null allocates RX packets from our pool");
    for m in &burst {
        assert_eq!(m.len(), 64);
        assert_eq!(m.port(), id);
    }
    assert_eq!(tx.tx_burst(&mut burst), 32);
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 0, "net_null TX frees what it sends");
    let s = port.stats();
    assert_eq!((s.ipackets, s.opackets), (32, 32));
    assert_eq!((s.ierrors, s.oerrors, s.rx_nombuf), (0, 0, 0));
    port.reset_stats().unwrap();
    assert_eq!(port.stats().ipackets, 0);

    drop((rx, tx));
    drop(port);
    // Dropping the Port closed the device, which removes a vdev.
    assert!(dpdk_sys::port_by_name("net_null0").is_err());
}

#[test]
fn null_port_rss_with_several_queues() {
    let pool = pool("t-rss", 511, 0);
    let id = port_id("net_null1");
    let info = dpdk_sys::port_info(id).unwrap();
    assert_ne!(info.rss_offloads & RSS_HF_DEFAULT, 0, "net_null supports RSS");

    let huge = PortConfig { rx_queues: info.max_rx_queues + 1, tx_queues: 2, ..PortConfig::default() };
    assert!(Port::configure(id, &huge, &pool).is_err());

    let cfg = PortConfig { rx_queues: 2, tx_queues: 3, ..PortConfig::default() };
    let port = Port::configure(id, &cfg, &pool).expect("configure");
    assert!(port.rss_enabled());
    assert_eq!(port.rss_hf(), RSS_HF_DEFAULT & info.rss_offloads);
    // The device really got the RSS configuration.
    let mut conf = raw::rte_eth_rss_conf::default();
    // SAFETY: valid configured port; conf is a valid out-struct and a NULL
    // key pointer means "do not return the key".
    let rc = unsafe { raw::rte_eth_dev_rss_hash_conf_get(id, &mut conf) };
    assert_eq!(rc, 0);
    assert_eq!(conf.rss_hf, port.rss_hf());

    port.start().unwrap();
    assert!(port.take_queues().is_err(), "2 RX vs 3 TX: no pairs");
    let (rxs, txs) = port.take_rx_tx_queues().unwrap();
    assert_eq!((rxs.len(), txs.len()), (2, 3));
    // Each worker owns one RX queue.
    let handles: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            std::thread::spawn(move || {
                let mut b: ArrayVec<Mbuf, 8> = ArrayVec::new();
                rx.rx_burst(&mut b)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 8);
    }
    assert_eq!(port.stats().ipackets, 16);
    drop(txs);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn null_port_without_rss_when_disabled() {
    let pool = pool("t-norss", 255, 0);
    let id = port_id("net_null2");
    let cfg =
        PortConfig { rx_queues: 2, tx_queues: 2, rss: false, promiscuous: false, ..PortConfig::default() };
    let port = Port::configure(id, &cfg, &pool).expect("configure");
    assert!(!port.rss_enabled());
    assert_eq!(port.rss_hf(), 0);
    port.start().unwrap();
    assert_eq!(port.take_queues().unwrap().len(), 2);
}

#[test]
fn worker_threads_register_for_an_lcore() {
    let pool = pool("t-lcore", 255, 32);
    let main_lcore = 0u32; // "-l 0"
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                assert_eq!(Eal::lcore_id(), None);
                let id = Eal::register_thread().expect("register");
                assert_ne!(id, main_lcore);
                assert_eq!(Eal::lcore_id(), Some(id));
                assert_eq!(Eal::register_thread().unwrap(), id, "idempotent");
                // Both threads hold their ids at the same time.
                barrier.wait();
                let m = pool.alloc().unwrap();
                drop(m);
                barrier.wait();
                Eal::unregister_thread();
                assert_eq!(Eal::lcore_id(), None);
                id
            })
        })
        .collect();
    let ids: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(ids[0], ids[1], "each thread gets its own lcore id");
    // Freed mbufs may sit in the lcore caches; they still count as available.
    assert_eq!(pool.in_use(), 0);
}
