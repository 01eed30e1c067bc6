//! sluiced on a real DPDK port: a `net_pcap` vdev reads a capture of many flows and writes
//! what the appliance transmits. Every output packet is checked byte by byte: Ethernet toward
//! the backend's MAC, a valid outer IPv4 header, the right tunnel (IPIP, or GRE with the
//! service's key), the client's packet unchanged inside (valid checksums), the backend Maglev
//! picks for the flow, and one backend per flow. The counters sluiced prints on SIGTERM must
//! account for every packet, including each malformed one under its drop reason.
//!
//! It runs twice: with DPDK's memory on ordinary pages (`--no-huge`, as the lab runs), and on
//! 2 MiB huge pages from a hugetlbfs mount of the test's own (as bare-metal appliances run).

#![cfg(feature = "dpdk")] // Runs sluiced on DPDK: only with the `dpdk` feature.

mod common;

use common::pcap;
use sluice_control::config::Config;
use sluice_dataplane::flow::{Addr, FlowKey};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::wire::checksum;
use sluice_dataplane::wire::{GrePacket, Ipv4Packet, TcpPacket, UdpPacket};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const DNS_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);

/// Where DPDK's memory comes from.
enum Memory<'a> {
    /// Ordinary pages (`--no-huge`).
    Small,
    /// Huge pages of the hugetlbfs mounted here.
    Huge(&'a Path),
}

/// DPDK's memory arguments and the file prefix for `memory`.
fn eal(memory: &Memory) -> (String, String) {
    match memory {
        Memory::Small => ("--no-huge, -m, '256'".into(), format!("sluice-pcap-{}", std::process::id())),
        Memory::Huge(dir) => (
            format!("--huge-dir, '{}', -m, '256'", dir.display()),
            format!("sluice-pcap-huge-{}", std::process::id()),
        ),
    }
}

fn config_yaml(dir: &Path, core: usize, memory: &Memory) -> String {
    let (mem, prefix) = eal(memory);
    format!(
        "\
dpdk:
  args: [{mem}, --no-pci, --file-prefix, {prefix}, --log-level, 'lib.eal:notice']
  vdevs: ['net_pcap0,rx_pcap={dir}/in.pcap,tx_pcap={dir}/out.pcap']
workers:
  cores: [{core}]
ports:
  - name: ext
    device: net_pcap0
    address: 198.18.0.1/24
    mac: 02:00:00:00:00:01
    neighbors:
      - {{ address: 198.18.0.10, mac: 02:00:00:00:00:0a }}
      - {{ address: 198.18.0.11, mac: 02:00:00:00:00:0b }}
      - {{ address: 198.18.0.12, mac: 02:00:00:00:00:0c }}
      - {{ address: 198.18.0.13, mac: 02:00:00:00:00:0d }}
      - {{ address: 198.18.0.20, mac: 02:00:00:00:00:14 }}
      - {{ address: 198.18.0.21, mac: 02:00:00:00:00:15 }}
services:
  - name: web
    vip: 198.18.10.1
    port: 80
    protocol: tcp
    tunnel: ipip
    backends:
      - {{ address: 198.18.0.10, weight: 1 }}
      - {{ address: 198.18.0.11, weight: 2 }}
      - {{ address: 198.18.0.12, weight: 3 }}
      - {{ address: 198.18.0.13, weight: 4 }}
  - name: dns
    vip: 198.18.10.2
    port: 53
    protocol: udp
    tunnel: gre
    gre_key: 7
    backends:
      - {{ address: 198.18.0.20 }}
      - {{ address: 198.18.0.21 }}
",
        dir = dir.display(),
    )
}

/// `pages` more 2 MiB huge pages reserved and a hugetlbfs of its own mounted at a new
/// directory; both given back on drop. Needs root (as every DPDK test here).
struct HugeMount {
    dir: std::path::PathBuf,
    before: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugeMount {
    fn new(pages: u64) -> HugeMount {
        let read = || std::fs::read_to_string(NR_HUGEPAGES).unwrap().trim().parse::<u64>().unwrap();
        let before = read();
        let dir = std::env::temp_dir().join(format!("sluice-pcap-huge-mnt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mount = HugeMount { dir, before };
        std::fs::write(NR_HUGEPAGES, (before + pages).to_string()).unwrap();
        assert!(read() >= before + pages, "only {} of {pages} huge pages reserved", read() - before);
        let ok = Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev"])
            .arg(&mount.dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount hugetlbfs");
        mount
    }
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
    }
}

fn eth(frame: &mut Vec<u8>, ethertype: u16) {
    frame.extend_from_slice(&PORT_MAC);
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
}

/// An Ethernet frame with an IPv4 packet (valid header checksum) carrying `l4` of `proto`,
/// whose TCP/UDP checksum is filled in.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ident: u16, mut l4: Vec<u8>) -> Vec<u8> {
    let mut f = Vec::new();
    eth(&mut f, 0x0800);
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let csum_at = match proto {
        6 => Some(16),
        17 => Some(6),
        _ => None,
    };
    if let Some(at) = csum_at {
        let ph = checksum::pseudo_header_v4(src.octets(), dst.octets(), proto, l4.len() as u16);
        let c = !checksum::fold(checksum::combine(ph, checksum::sum(&l4)));
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[198, 18, 0, 254]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

fn echo_request(dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0, 0x12, 0x34];
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"sluice echo payload");
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(Ipv4Addr::new(198, 18, 0, 254), dst, 1, 1000 + seq, m)
}

struct Input {
    frames: Vec<Vec<u8>>,
    /// Inner IP packet bytes → its flow, for every packet that must be tunneled.
    tunneled: HashMap<Vec<u8>, FlowKey>,
    arp_replies: usize,
    echo_replies: usize,
    drops: HashMap<&'static str, u64>,
}

fn build_input() -> Input {
    let mut inp = Input {
        frames: Vec::new(),
        tunneled: HashMap::new(),
        arp_replies: 0,
        echo_replies: 0,
        drops: HashMap::new(),
    };
    let mut ident = 0u16;
    let push_tunneled = |inp: &mut Input, f: Vec<u8>, key: FlowKey| {
        inp.tunneled.insert(f[14..].to_vec(), key);
        inp.frames.push(f);
    };
    // 600 TCP flows of three packets each, from 600 client addresses and ports.
    for i in 0..600u32 {
        let src = Ipv4Addr::new(198, 18, 1 + (i / 250) as u8, (i % 250) as u8 + 1);
        let sport = 20_000 + (i * 7 % 40_000) as u16;
        let key = FlowKey {
            src: Addr::v4(src),
            dst: Addr::v4(WEB_VIP),
            src_port: sport,
            dst_port: 80,
            protocol: 6,
        };
        for (seq, flags, payload) in [
            (1u32, 0x02u8, &b""[..]),
            (2, 0x18, &b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n"[..]),
            (40, 0x11, &b""[..]),
        ] {
            ident = ident.wrapping_add(1);
            let f = ipv4_frame(src, WEB_VIP, 6, ident, tcp(sport, 80, seq, flags, payload));
            push_tunneled(&mut inp, f, key);
        }
    }
    // 200 UDP flows of two datagrams each.
    for i in 0..200u32 {
        let src = Ipv4Addr::new(198, 18, 5, (i % 250) as u8 + 1);
        let sport = 30_000 + i as u16;
        let key = FlowKey {
            src: Addr::v4(src),
            dst: Addr::v4(DNS_VIP),
            src_port: sport,
            dst_port: 53,
            protocol: 17,
        };
        for q in 0..2u8 {
            ident = ident.wrapping_add(1);
            let f = ipv4_frame(src, DNS_VIP, 17, ident, udp(sport, 53, &[0xab, q, 1, 0, 0, 1]));
            push_tunneled(&mut inp, f, key);
        }
    }
    for t in [WEB_VIP, DNS_VIP, Ipv4Addr::new(198, 18, 0, 1)] {
        inp.frames.push(arp_request(t));
        inp.arp_replies += 1;
    }
    for s in 0..3 {
        inp.frames.push(echo_request(WEB_VIP, s));
        inp.echo_replies += 1;
    }
    let drop = |inp: &mut Input, reason: &'static str, f: Vec<u8>| {
        inp.frames.push(f);
        *inp.drops.entry(reason).or_default() += 1;
    };
    for i in 0..20u16 {
        let f = ipv4_frame(
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 0, 99),
            6,
            i,
            tcp(1000 + i, 80, 1, 2, b""),
        );
        drop(&mut inp, "not_for_us", f);
    }
    for i in 0..10u16 {
        let f = ipv4_frame(Ipv4Addr::new(198, 18, 1, 1), WEB_VIP, 6, i, tcp(1000 + i, 81, 1, 2, b""));
        drop(&mut inp, "no_service", f);
    }
    for i in 0..5u16 {
        let mut f = ipv4_frame(Ipv4Addr::new(198, 18, 1, 1), WEB_VIP, 6, i, tcp(2000 + i, 80, 1, 2, b""));
        f[24] ^= 0x40; // header checksum
        drop(&mut inp, "ipv4_bad_checksum", f);
        let f = ipv4_frame(Ipv4Addr::new(198, 18, 1, 1), WEB_VIP, 6, i, tcp(3000 + i, 80, 1, 2, b""));
        drop(&mut inp, "ipv4_truncated", f[..30].to_vec());
        drop(&mut inp, "eth_truncated", f[..9].to_vec());
        let mut short_tcp = f.clone();
        short_tcp[16..18].copy_from_slice(&30u16.to_be_bytes()); // total 30: 10 bytes of TCP
        short_tcp[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&short_tcp[14..34]);
        short_tcp[24..26].copy_from_slice(&c.to_be_bytes());
        drop(&mut inp, "l4_truncated", short_tcp);
    }
    inp
}

fn counters(stdout: &str) -> HashMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn sluiced_tunnels_a_capture_of_many_flows() {
    run_capture("sluice-pcap", &Memory::Small);
}

#[test]
fn sluiced_tunnels_a_capture_of_many_flows_on_huge_pages() {
    // DPDK's 256 MiB and room to spare.
    let huge = HugeMount::new(160);
    let used = run_capture("sluice-pcap-huge", &Memory::Huge(&huge.dir));
    assert!(used > 0, "no huge page file of sluiced's in {}", huge.dir.display());
}

/// Runs sluiced on the capture with DPDK's memory from `memory` and checks every packet and
/// counter; returns how many of sluiced's files the huge page mount held while it ran.
fn run_capture(name: &str, memory: &Memory) -> usize {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = build_input();
    pcap::write(&dir.join("in.pcap"), &input.frames);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let yaml = config_yaml(&dir, cores - 1, memory);
    let cfg_path = dir.join("pipeline.yaml");
    std::fs::write(&cfg_path, &yaml).unwrap();

    let expected_out = input.tunneled.len() + input.arp_replies + input.echo_replies;
    let stderr = std::fs::File::create(dir.join("sluiced.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .args(["--config", cfg_path.to_str().unwrap(), "--print-stats", "--stats-interval", "0"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start sluiced");

    // Wait for the output capture to hold every expected packet (or sluiced to die).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() || pcap::read(&dir.join("out.pcap")).len() >= expected_out {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let huge_files = match memory {
        Memory::Huge(mount) => std::fs::read_dir(mount)
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&eal(memory).1)))
            .count(),
        Memory::Small => 0,
    };
    // Give late packets a moment to show up as extras, then stop sluiced with SIGTERM.
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let result = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(dir.join("sluiced.log")).unwrap_or_default();
    assert!(result.status.success(), "sluiced failed: {:?}\n{log}", result.status);
    let out = pcap::read(&dir.join("out.pcap"));
    assert_eq!(out.len(), expected_out, "output packets\n{log}");

    // The backend each flow must get: the dataplane's Maglev over the same config.
    let config = Config::parse(&yaml, "pipeline.yaml").unwrap();
    let snap = Snapshot::build(&config.snapshot_spec(1, None), None).unwrap();
    let expected_backend = |k: &FlowKey| -> (IpAddr, usize) {
        let si =
            snap.services.iter().position(|s| Addr::from(s.vip) == k.dst && s.port == k.dst_port).unwrap();
        let b = snap.services[si].select_flow(k).unwrap();
        (snap.services[si].backends[usize::from(b)].address, si)
    };
    let backend_mac: HashMap<IpAddr, [u8; 6]> = config.ports[0].spec.neighbors.iter().copied().collect();

    let mut seen_inner = HashSet::new();
    let mut flow_backend: HashMap<FlowKey, IpAddr> = HashMap::new();
    let mut per_backend: HashMap<IpAddr, usize> = HashMap::new();
    let (mut arp, mut echo) = (0, 0);
    for (n, f) in out.iter().enumerate() {
        let ctx =
            || format!("output packet {n}: {}", f.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(&f[6..12], &PORT_MAC, "{}: source MAC", ctx());
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => {
                assert_eq!(&f[0..6], &ROUTER_MAC, "{}", ctx());
                assert_eq!(&f[20..22], &[0, 2], "{}: ARP reply", ctx());
                assert_eq!(&f[22..28], &PORT_MAC, "{}", ctx());
                arp += 1;
                continue;
            }
            0x0800 => {}
            t => panic!("{}: ethertype {t:#x}", ctx()),
        }
        let outer = Ipv4Packet::new_checked(&f[14..]).unwrap_or_else(|e| panic!("{}: {e:?}", ctx()));
        assert!(outer.verify_checksum(), "{}: outer checksum", ctx());
        assert_eq!(outer.total_len(), f.len() - 14, "{}: no padding, exact length", ctx());
        if outer.protocol() == 1 {
            assert_eq!(outer.src(), WEB_VIP, "{}", ctx());
            assert_eq!(outer.payload()[0], 0, "{}: echo reply", ctx());
            assert_eq!(checksum::fold(checksum::sum(outer.payload())), 0xffff, "{}", ctx());
            echo += 1;
            continue;
        }
        assert_eq!(outer.src(), Ipv4Addr::new(198, 18, 0, 1), "{}: tunnel source", ctx());
        assert_eq!(outer.ttl(), 64, "{}", ctx());
        assert!(outer.dont_frag(), "{}: DF copied from the inner packet", ctx());
        let inner_bytes = match outer.protocol() {
            4 => outer.payload(),
            47 => {
                let g = GrePacket::new_checked(outer.payload()).unwrap();
                assert_eq!((g.protocol(), g.key(), g.header_len()), (0x0800, Some(7), 8), "{}: GRE", ctx());
                &outer.payload()[8..]
            }
            p => panic!("{}: outer protocol {p}", ctx()),
        };
        let key = *input
            .tunneled
            .get(inner_bytes)
            .unwrap_or_else(|| panic!("{}: inner packet not in the input", ctx()));
        assert!(seen_inner.insert(inner_bytes.to_vec()), "{}: sent twice", ctx());
        let inner = Ipv4Packet::new_checked(inner_bytes).unwrap();
        assert!(inner.verify_checksum(), "{}: inner IP checksum", ctx());
        match key.protocol {
            6 => {
                assert_eq!(outer.protocol(), 4, "{}: web uses IPIP", ctx());
                let t = TcpPacket::new_checked(inner.payload()).unwrap();
                assert!(t.verify_checksum_v4(inner.src(), inner.dst()), "{}: inner TCP checksum", ctx());
            }
            _ => {
                assert_eq!(outer.protocol(), 47, "{}: dns uses GRE", ctx());
                let u = UdpPacket::new_checked(inner.payload()).unwrap();
                let ph = checksum::pseudo_header_v4(
                    inner.src().octets(),
                    inner.dst().octets(),
                    17,
                    u.len() as u16,
                );
                assert_eq!(
                    checksum::fold(checksum::combine(ph, checksum::sum(inner.payload()))),
                    0xffff,
                    "{}",
                    ctx()
                );
            }
        }
        let (want, _) = expected_backend(&key);
        assert_eq!(outer.dst(), want, "{}: Maglev's backend for {key:?}", ctx());
        assert_eq!(&f[0..6], &backend_mac[&want], "{}: backend's MAC", ctx());
        let first = *flow_backend.entry(key).or_insert(outer.dst().into());
        assert_eq!(first, outer.dst(), "{}: flow changed backend", ctx());
        *per_backend.entry(outer.dst().into()).or_default() += 1;
    }
    assert_eq!(seen_inner.len(), input.tunneled.len(), "every tunneled packet once");
    assert_eq!((arp, echo), (input.arp_replies, input.echo_replies));
    assert_eq!(flow_backend.len(), 800);
    // Every backend got flows (weights 1..4 over 600 flows; 2 equal over 200).
    assert_eq!(per_backend.len(), 6, "{per_backend:?}");

    let c = counters(&String::from_utf8_lossy(&result.stdout));
    assert_eq!(c["sluice_port_rx_packets_total{port=\"ext\"}"], input.frames.len() as u64, "{c:?}");
    assert_eq!(c["sluice_port_tx_packets_total{port=\"ext\"}"], expected_out as u64);
    assert_eq!(c["sluice_tunneled_packets_total"], input.tunneled.len() as u64);
    assert_eq!(c["sluice_arp_replies_total"], input.arp_replies as u64);
    assert_eq!(c["sluice_icmp_echo_replies_total"], input.echo_replies as u64);
    // One session per flow (600 TCP, 200 UDP); every later packet of a flow found it.
    assert_eq!(c["sluice_sessions_created_total"], 800);
    assert_eq!(c["sluice_session_hits_total"], input.tunneled.len() as u64 - 800);
    assert_eq!(c["sluice_sessions"], 800, "all still live at exit (timeouts are minutes)");
    for (k, v) in c.iter().filter(|(k, _)| k.starts_with("sluice_drops_total")) {
        let reason = k.trim_start_matches("sluice_drops_total{reason=\"").trim_end_matches("\"}");
        assert_eq!(*v, input.drops.get(reason).copied().unwrap_or(0), "drops for {reason}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    huge_files
}
