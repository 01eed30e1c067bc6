//! Bring-up: the cores are there, DPDK's EAL starts, the control thread moves off the workers'
//! cores, and the mempool and ports are configured and started.

use crate::config::{kernel_device, Config, PortConfig as PortEntry};
use dpdk_sys::{Eal, Mempool, Port, PortConfig};
use log::{info, warn};
use sluice_dataplane::io::BURST;
use sluice_dataplane::wire::Mac;
use std::net::IpAddr;
use std::sync::Arc;

/// The started ports (shared with the metrics endpoint's NIC counters), their mempool and the
/// MAC each one sends with.
pub(super) struct Nic {
    /// Declared (and so dropped) before the pool their queues draw from.
    pub(super) ports: Arc<Vec<Port>>,
    pub(super) pool: Mempool,
    pub(super) macs: Vec<Mac>,
}

/// Pins the calling thread to one CPU. (Not via `core_affinity::get_core_ids`, which only
/// lists the CPUs of the caller's current mask: after `rte_eal_init` that is one CPU.)
pub(super) fn pin(core: usize) -> Result<(), String> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(format!("cannot pin to core {core}"))
    }
}

/// The CPUs this process may use, once every worker core is found among them.
pub(super) fn check_cores(config: &Config) -> Result<Vec<usize>, String> {
    let cores: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    for c in &config.worker_cores {
        if !cores.contains(c) {
            return Err(format!(
                "{}: workers.cores: core {c} does not exist here (cores: {cores:?})",
                config.file
            ));
        }
    }
    Ok(cores)
}

/// Starts DPDK's EAL with the config's arguments (a per-process file prefix unless given),
/// then moves the control thread to its core.
pub(super) fn start_eal(config: &Config, cores: &[usize]) -> Result<(), String> {
    let mut args = vec!["sluiced".to_string()];
    args.extend(config.eal_args.iter().cloned());
    if !args.iter().any(|a| a == "--file-prefix" || a.starts_with("--file-prefix=")) {
        args.push(format!("--file-prefix=sluiced-{}", std::process::id()));
    }
    // Each exception path: a TAP interface of that name in sluiced's network namespace.
    for (i, pc) in config.ports.iter().enumerate() {
        if let Some(name) = &pc.kernel {
            args.push(format!("--vdev={},iface={name}", kernel_device(i)));
        }
    }
    info!("starting DPDK: {}", args.join(" "));
    Eal::init(&args).map_err(|e| format!("DPDK EAL: {e}"))?;

    // EAL pinned this (the control) thread to its main lcore's CPU; put it where it belongs.
    let control_core = config
        .control_core
        .or_else(|| cores.iter().copied().find(|c| !config.worker_cores.contains(c)))
        .unwrap_or(0);
    if let Err(e) = pin(control_core) {
        warn!("control thread: {e}");
    }
    Ok(())
}

/// Mbufs for every descriptor of every queue, plus a burst in flight per worker and port,
/// rounded up to 2^n - 1 (the mempool's preferred size).
fn default_mbufs(config: &Config) -> u32 {
    let kernels = config.ports.iter().filter(|p| p.kernel.is_some()).count();
    let queues = ((config.ports.len() + kernels) * config.worker_cores.len()) as u32;
    let need = queues * (u32::from(config.rx_desc) + u32::from(config.tx_desc) + 2 * BURST as u32) + 1024;
    need.next_power_of_two().max(4096) - 1
}

/// The mempool (on the first port's NUMA socket) and every port, configured with a queue
/// pair per worker and started.
pub(super) fn start_ports(config: &Config) -> Result<Nic, String> {
    let mbufs = config.mbufs.unwrap_or_else(|| default_mbufs(config));
    let socket = dpdk_sys::port_info(dpdk_sys::port_by_name(&config.ports[0].device).map_err(|e| {
        format!("{}: ports[0].device: {e} (is the vdev or PCI device listed in dpdk?)", config.file)
    })?)
    .map(|i| i.socket_id)
    .unwrap_or(dpdk_sys::SOCKET_ID_ANY);
    // Each buffer: `buffer_size` bytes of data after DPDK's headroom (RTE_PKTMBUF_HEADROOM).
    let room = config.buffer_size + 128;
    let pool = Mempool::new("sluice_pkts", mbufs, 256, room, socket).map_err(|e| format!("mempool: {e}"))?;
    info!("mempool: {mbufs} mbufs of {} bytes", config.buffer_size);

    let mut ports = Vec::new();
    let mut macs = Vec::new();
    for (i, pc) in config.ports.iter().enumerate() {
        let (port, mac) = start_port(config, i, pc, &pool)?;
        macs.push(mac);
        ports.push(port);
    }
    // The exception paths come after the data ports, in order (`PortSpec::kernel`).
    for (i, pc) in config.ports.iter().enumerate() {
        if let Some(name) = &pc.kernel {
            ports.push(start_kernel_port(config, i, name, macs[i], &pool)?);
        }
    }
    Ok(Nic { ports: Arc::new(ports), pool, macs })
}

/// Starts port `i`'s exception path: its TAP interface `name`, a queue pair per worker, with
/// the port's MAC and MTU, so that what the kernel sends through it goes out as the port's.
fn start_kernel_port(
    config: &Config,
    i: usize,
    name: &str,
    mac: Mac,
    pool: &Mempool,
) -> Result<Port, String> {
    let field = format!("{}: ports[{i}].kernel", config.file);
    let id = dpdk_sys::port_by_name(&kernel_device(i)).map_err(|e| format!("{field}: {e}"))?;
    let n_workers = config.worker_cores.len() as u16;
    let cfg = PortConfig {
        rx_queues: n_workers,
        tx_queues: n_workers,
        rx_desc: config.rx_desc,
        tx_desc: config.tx_desc,
        mtu: Some(config.ports[i].spec.mtu),
        rss: false,
        promiscuous: false,
    };
    let port = Port::configure(id, &cfg, pool).map_err(|e| format!("{field}: {e}"))?;
    port.set_mac(mac).map_err(|e| format!("{field}: its MAC: {e}"))?;
    port.start().map_err(|e| format!("{field}: {e}"))?;
    let spec = &config.ports[i].spec;
    // The kernel speaks for the port's address on it: it gets the address and comes up.
    for a in &spec.addresses {
        match a.addr {
            IpAddr::V4(v4) => sluice_host_sys::netdev::set_ipv4_up(name, v4, a.len),
            IpAddr::V6(v6) => sluice_host_sys::netdev::add_ipv6(name, v6, a.len),
        }
        .map_err(|e| format!("{field}: giving {name} {a}: {e}"))?;
    }
    let addresses: Vec<String> = spec.addresses.iter().map(|a| a.to_string()).collect();
    info!(
        "port {}: exception path {name} (kernel interface) with {}, mac {}",
        spec.name,
        addresses.join(" and "),
        sluice_dataplane::wire::fmt_mac(&mac)
    );
    Ok(port)
}

/// Configures and starts `config.ports[i]`; returns it and the MAC it sends with.
fn start_port(config: &Config, i: usize, pc: &PortEntry, pool: &Mempool) -> Result<(Port, Mac), String> {
    let n_workers = config.worker_cores.len() as u16;
    let field = |k: &str| format!("{}: ports[{i}].{k}", config.file);
    let id = dpdk_sys::port_by_name(&pc.device).map_err(|e| format!("{}: {e}", field("device")))?;
    // net_af_packet reports a 1518-byte frame limit to DPDK whatever its ring's frames
    // hold (2048 bytes by default): above 1500, the kernel interface's MTU is what counts
    // (the lab sets it with `ip link`), so the appliance's own MTU is the config's.
    let af_packet = dpdk_sys::port_info(id).is_ok_and(|i| i.driver == "net_af_packet");
    let device_mtu = if af_packet && pc.spec.mtu > 1500 {
        info!(
            "port {}: net_af_packet; MTU {} is the kernel interface's to carry, not set in DPDK",
            pc.spec.name, pc.spec.mtu
        );
        None
    } else {
        Some(pc.spec.mtu)
    };
    let cfg = PortConfig {
        rx_queues: n_workers,
        tx_queues: n_workers,
        rx_desc: config.rx_desc,
        tx_desc: config.tx_desc,
        mtu: device_mtu,
        rss: true,
        promiscuous: true,
    };
    let port = Port::configure(id, &cfg, pool).map_err(|e| format!("{}: {e}", field("device")))?;
    let mac = match pc.mac {
        Some(want) => set_mac(&port, pc, want).map_err(|e| format!("{}: {e}", field("mac")))?,
        None => port.mac(),
    };
    port.start().map_err(|e| format!("{}: {e}", field("device")))?;
    let info = port.info();
    info!(
        "port {} = {} ({}), mac {}, {} queue(s), rss {}, link {}",
        pc.spec.name,
        pc.device,
        info.driver,
        sluice_dataplane::wire::fmt_mac(&mac),
        n_workers,
        if port.rss_enabled() { "on" } else { "off" },
        if port.link_up() { "up" } else { "down" },
    );
    Ok((port, mac))
}

/// Programs the config's MAC into a port; returns the MAC the port sends with.
fn set_mac(port: &Port, pc: &PortEntry, want: Mac) -> Result<Mac, dpdk_sys::Error> {
    match port.set_mac(want) {
        Ok(()) => Ok(want),
        // The device cannot take the address: in promiscuous mode it still receives
        // frames sent to it, and the pipeline filters and sends with it in software.
        Err(e) if e.errno() == Some(libc::ENOTSUP) && port.promiscuous() => {
            warn!("port {}: {e}; using {} in software", pc.spec.name, sluice_dataplane::wire::fmt_mac(&want));
            Ok(want)
        }
        Err(e) => Err(e),
    }
}
