//! sluice-gen: a DPDK packet generator for the packet-rate harness (bench/rate.py).
//!
//! Sends 60-byte TCP (or UDP) packets toward a VIP on a `net_memif` server port as fast as one
//! core allows, walking a flow space (`--flows N` established flows, or `--new-flows`), and
//! prints the packets it got onto the link each second: `gen tx_pps <n>`.

use arrayvec::ArrayVec;
use clap::Parser;
use dpdk_sys::{Eal, Mbuf, Mempool, Port, PortConfig};
use sluice_bench::{FlowWalk, Template, Traffic};
use sluice_dataplane::wire::parse_mac;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// memif socket (the generator is the server).
    #[arg(long)]
    socket: String,
    /// memif ring size, log2 (the peer must use the same).
    #[arg(long, default_value_t = 12)]
    rsize: u8,
    /// CPU to run on.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Number of established flows to cycle over.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u32,
    /// Every packet a new flow instead.
    #[arg(long)]
    new_flows: bool,
    /// Send UDP instead of TCP.
    #[arg(long)]
    udp: bool,
    /// TCP flags (hex): 10 = ACK (established), 02 = SYN.
    #[arg(long, default_value = "10")]
    tcp_flags: String,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    dst_mac: String,
    #[arg(long, default_value = "198.18.10.1")]
    vip: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Instead of sending, write this many packets to --pcap and exit (no DPDK).
    #[arg(long)]
    count: Option<u64>,
    #[arg(long)]
    pcap: Option<std::path::PathBuf>,
}

/// Writes `count` packets of the walk to a classic pcap file.
fn write_pcap(
    path: &std::path::Path,
    template: &Template,
    walk: &mut FlowWalk,
    count: u64,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.write_all(&v.to_le_bytes())?;
    }
    let mut b = [0u8; 60];
    for i in 0..count {
        template.fill(walk, &mut b);
        for v in [0u32, (i % 1_000_000) as u32, 60, 60] {
            f.write_all(&v.to_le_bytes())?;
        }
        f.write_all(&b)?;
    }
    f.flush()
}

fn main() {
    let a = Args::parse();
    if let (Some(count), Some(path)) = (a.count, &a.pcap) {
        let dst_mac = parse_mac(&a.dst_mac).expect("bad --dst-mac");
        let flags = u8::from_str_radix(&a.tcp_flags, 16).expect("bad --tcp-flags");
        let template =
            Template::new(dst_mac, [0x02, 0x47, 0x45, 0x4e, 0, 1], a.vip, a.dport, (!a.udp).then_some(flags));
        let traffic = if a.new_flows { Traffic::NewFlows } else { Traffic::Established { flows: a.flows } };
        if let Err(e) = write_pcap(path, &template, &mut FlowWalk::new(traffic), count) {
            eprintln!("sluice-gen: {}: {e}", path.display());
            std::process::exit(2);
        }
        return;
    }
    let eal_args = vec![
        "sluice-gen".to_string(),
        "--no-huge".into(),
        "-m".into(),
        "1024".into(),
        "--no-pci".into(),
        "--no-telemetry".into(),
        format!("--file-prefix=sluice-gen-{}", std::process::id()),
        format!("--lcores=0@{}", a.core),
        "--log-level=lib.eal:warning".into(),
        "--vdev".into(),
        format!("net_memif0,role=server,socket={},rsize={}", a.socket, a.rsize),
    ];
    if let Err(e) = Eal::init(&eal_args) {
        eprintln!("sluice-gen: EAL: {e}");
        std::process::exit(2);
    }
    let run = || -> Result<(), String> {
        let id = dpdk_sys::port_by_name("net_memif0").map_err(|e| e.to_string())?;
        let pool = Mempool::new("gen", 16383, 256, 2048 + 128, dpdk_sys::SOCKET_ID_ANY)
            .map_err(|e| e.to_string())?;
        let port = Port::configure(id, &PortConfig { rss: false, ..PortConfig::default() }, &pool)
            .map_err(|e| e.to_string())?;
        port.start().map_err(|e| e.to_string())?;
        let (mut rx, mut tx) = port.take_queues().map_err(|e| e.to_string())?.pop().ok_or("no queue")?;

        let dst_mac = parse_mac(&a.dst_mac).ok_or("bad --dst-mac")?;
        let flags = u8::from_str_radix(&a.tcp_flags, 16).map_err(|_| "bad --tcp-flags")?;
        let template =
            Template::new(dst_mac, [0x02, 0x47, 0x45, 0x4e, 0, 1], a.vip, a.dport, (!a.udp).then_some(flags));
        let traffic = if a.new_flows { Traffic::NewFlows } else { Traffic::Established { flows: a.flows } };
        let mut walk = FlowWalk::new(traffic);

        // Wait for the device under test to connect.
        let connect_by = Instant::now() + Duration::from_secs(30);
        while !port.link_up() {
            if Instant::now() > connect_by {
                return Err("no memif peer connected within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("gen connected");

        let end = Instant::now() + Duration::from_secs(a.duration);
        let mut next_report = Instant::now() + Duration::from_secs(1);
        let (mut sent, mut last_sent) = (0u64, 0u64);
        let mut burst: ArrayVec<Mbuf, 32> = ArrayVec::new();
        let mut sink: ArrayVec<Mbuf, 32> = ArrayVec::new();
        let mut iterations = 0u64;
        loop {
            iterations += 1;
            let want = 32 - burst.len();
            if pool.alloc_bulk(&mut burst, want) {
                for m in burst.iter_mut().filter(|m| m.is_empty()) {
                    if m.append(60) {
                        template.fill(&mut walk, m.data_mut());
                    }
                }
            }
            sent += tx.tx_burst(&mut burst) as u64;
            // Whatever the peer did not take stays in `burst` and goes out next time.
            rx.rx_burst(&mut sink);
            sink.clear();
            if iterations.is_multiple_of(1024) {
                let now = Instant::now();
                if now >= next_report {
                    let dt = now.duration_since(next_report - Duration::from_secs(1)).as_secs_f64();
                    println!("gen tx_pps {:.0}", (sent - last_sent) as f64 / dt);
                    last_sent = sent;
                    next_report = now + Duration::from_secs(1);
                    if now >= end {
                        break;
                    }
                }
            }
        }
        println!("gen sent {sent}");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("sluice-gen: {e}");
        std::process::exit(2);
    }
}
