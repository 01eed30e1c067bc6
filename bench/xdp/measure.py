#!/usr/bin/env python3
"""The exception path, measured: DPDK's net_tap (what sluiced does) against net_af_xdp with a
steering XDP program (steer.bpf.c), on veth pairs in network namespaces of our own.

Two parts, each A/B interleaved in rounds (ABBA order) so that both sides see the same drift
of this shared 2-vCPU VM; the report gives per-round figures and medians of this one run.

rate: the data path's packet rate.
    xdpm-gen: dpdk-testpmd txonly, net_af_packet on xdpm-g0, CPU 0
        --veth--> xdpm-dut: dpdk-testpmd 5tswap on xdpm-d0, CPU 1, either
            xdp:    net_af_xdp,xdp_prog=steer.bpf.o (the VIP steered in, the rest passed)
            packet: net_af_packet (today's lab device)
    and back to the generator (which does not read it). The port keeps its kernel address
    198.18.0.1/24 in both modes. Reported: the DUT's per-second RX and TX rates (median of the
    window), the generator's TX, per-CPU time split from /proc/stat, the DUT's RSS.

exception: the port's own traffic (ping, BGP + BFD between BIRD 2 on each side).
    xdpm-rtr: the router, 198.18.0.254/24 on xdpm-r0, BIRD AS 65000
        --veth--> xdpm-lb: the appliance, DPDK on xdpm-l0, BIRD AS 65001 exporting a VIP
            tap: sluiced (net_af_packet on xdpm-l0, `kernel: xdpm-k0`), the address and BIRD
                 on the TAP: every frame of the exception path crosses sluiced's worker
            xdp: the address and BIRD on xdpm-l0 itself; DPDK (sluiced if it can, else
                 testpmd) on net_af_xdp with the steering program: the kernel keeps the port
    Reported: time from BIRD's start to the VIP in the router's FIB with BFD up, ping RTT
    (median, p99) from the router to the port address, and what a frozen DPDK process
    (SIGSTOP) does to the router's route.

Addresses are 198.18.0.0/15 only, inside namespaces named xdpm-*, which this script creates
and removes (also on error); it kills only the processes it started, by pid.

    bench/xdp/run.sh                       # installs, builds, runs both parts
    bench/xdp/measure.py --rounds 5 --parts rate,exception --obj /tmp/steer.bpf.o
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "xdpm-"
NAMESPACES = ["xdpm-gen", "xdpm-dut", "xdpm-rtr", "xdpm-lb"]
GEN_CPU, DUT_CPU = 0, 1
VIP = "198.18.10.1"
CLUSTER = "198.18.20.1"      # the cluster tunnel address: steered too
PORT_IP, RTR_IP = "198.18.0.1", "198.18.0.254"
CLIENT_IP = "198.18.100.1"
EAL = ["--no-huge", "-m", "512", "--no-pci"]

# The generator's device: net_af_packet as in the lab, or net_af_xdp (default XDP program;
# whatever comes back is redirected to its socket and dropped there, never reaching the stack).
GEN_VDEV = {"packet": "net_af_packet0,iface=xdpm-g0", "xdp": "net_af_xdp0,iface=xdpm-g0"}

PROCS = []      # (name, Popen) of everything started, for cleanup


# ---- small helpers -----------------------------------------------------------------------

def log(*a):
    print(*a, flush=True)


def sh(*cmd, ns=None, check=True, capture=False):
    if ns:
        cmd = ("ip", "netns", "exec", ns) + cmd
    r = subprocess.run(cmd, check=False, text=True,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout if capture else r.returncode


def spawn(name, ns, cmd, logdir):
    f = open(logdir / f"{name}.log", "w")
    p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdin=subprocess.DEVNULL,
                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    p.log_path = logdir / f"{name}.log"
    p.name = name
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGINT, timeout=8):
    """Stops one process we started, by its pid: `sig`, then SIGKILL after `timeout`."""
    if p is None or p.poll() is not None:
        return
    try:
        os.kill(p.pid, signal.SIGCONT)
        os.kill(p.pid, sig)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass


def wait_for(pred, timeout, what, step=0.05, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: {proc.name} exited {proc.returncode}: "
                               f"{tail(proc.log_path)}")
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}"
                       + (f": {tail(proc.log_path)}" if proc is not None else ""))


def tail(path, n=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def mac_of(ns, dev):
    return json.loads(sh("ip", "-j", "link", "show", dev, ns=ns, capture=True))[0]["address"]


def xdp_state(ns, dev):
    """(mode, prog id) of the XDP program on `dev`: mode 1 native (driver), 2 generic (skb)."""
    info = json.loads(sh("ip", "-d", "-j", "link", "show", dev, ns=ns, capture=True))[0]
    x = info.get("xdp")
    if not x:
        return None, None
    prog = x.get("prog") or (x.get("attached") or [{}])[0].get("prog") or {}
    return {1: "native", 2: "generic", 3: "offload"}.get(x.get("mode"), x.get("mode")), prog.get("id")


# ---- namespaces ----------------------------------------------------------------------------

def cleanup_namespaces():
    for ns in NAMESPACES:
        if ns in sh("ip", "netns", "list", capture=True).split():
            sh("ip", "netns", "del", ns, check=False)


def veth_pair(ns_a, a, ns_b, b):
    sh("ip", "netns", "add", ns_a, check=False)
    sh("ip", "netns", "add", ns_b, check=False)
    # One queue each way: the AF_XDP socket binds queue 0, where every frame arrives.
    sh("ip", "link", "add", a, "numtxqueues", "1", "numrxqueues", "1", "netns", ns_a, "type", "veth",
       "peer", "name", b, "numtxqueues", "1", "numrxqueues", "1", "netns", ns_b)
    for ns, d in ((ns_a, a), (ns_b, b)):
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        # No offloads, as in scripts/lab.py: a checksum left to "hardware" would reach DPDK
        # (and through sluiced the TAP, whose kernel then drops it) unfinished.
        sh("ethtool", "-K", d, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
           ns=ns, check=False)
        sh("ip", "link", "set", d, "up", ns=ns)


# ---- bpf(2) through ctypes: the steering map and counters ---------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = 321   # x86_64
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM = 1, 2
BPF_PROG_GET_FD_BY_ID, BPF_MAP_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 13, 14, 15


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return r, buf


def obj_info(fd, size):
    info = ctypes.create_string_buffer(size)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, size, ctypes.addressof(info)))
    return info.raw


def prog_maps(prog_id):
    """{name: fd} of the maps the XDP program `prog_id` uses."""
    fd, _ = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("=III", prog_id, 0, 0))
    try:
        ids = (ctypes.c_uint32 * 16)()
        info = ctypes.create_string_buffer(256)
        raw = bytearray(256)
        struct.pack_into("=I", raw, 52, 16)                       # nr_map_ids
        struct.pack_into("=Q", raw, 56, ctypes.addressof(ids))    # map_ids
        ctypes.memmove(info, bytes(raw), 256)
        bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, 256, ctypes.addressof(info)))
        n = struct.unpack_from("=I", info.raw, 52)[0]
    finally:
        os.close(fd)
    out = {}
    for mid in list(ids)[:n]:
        mfd, _ = bpf(BPF_MAP_GET_FD_BY_ID, struct.pack("=III", mid, 0, 0))
        name = obj_info(mfd, 80)[24:40].split(b"\0")[0].decode()
        out[name] = mfd
    return out


def map_update(fd, key, value):
    k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
    bpf(BPF_MAP_UPDATE_ELEM, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))


def percpu_sum(fd, index):
    ncpu = possible_cpus()
    k, v = ctypes.create_string_buffer(struct.pack("=I", index)), ctypes.create_string_buffer(8 * ncpu)
    bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
    return sum(struct.unpack(f"={ncpu}Q", v.raw))


def possible_cpus():
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def steer(ns, dev, addresses):
    """Fills the steering program's map on `dev` with `addresses`; returns its maps."""
    mode, pid = wait_for(lambda: (lambda s: s if s[1] else None)(xdp_state(ns, dev)), 10,
                         f"an XDP program on {dev}")
    maps = prog_maps(pid)
    for a in addresses:
        map_update(maps["steer_dst"], bytes(int(x) for x in a.split(".")), struct.pack("=I", 1))
    return mode, maps


def steer_counts(maps):
    return {"redirected": percpu_sum(maps["steer_stats"], 0), "passed": percpu_sum(maps["steer_stats"], 1)}


def close_maps(maps):
    for fd in (maps or {}).values():
        os.close(fd)


# ---- CPU accounting ------------------------------------------------------------------------

def cpu_times():
    """{cpu: (user+nice, system, softirq, idle, total)} in jiffies."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        m = re.match(r"cpu(\d+)\s+(.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()]
            out[int(m.group(1))] = (v[0] + v[1], v[2], v[6], v[3] + v[4], sum(v[:8]))
    return out


def cpu_split(before, after):
    res = {}
    for c in before:
        d = [a - b for a, b in zip(after[c], before[c])]
        t = d[4] or 1
        res[c] = {"usr": round(100 * d[0] / t), "sys": round(100 * d[1] / t),
                  "softirq": round(100 * d[2] / t), "idle": round(100 * d[3] / t)}
    return res


def backlog_drops():
    """Frames the kernel dropped because a CPU's input backlog was full (netif_rx)."""
    return sum(int(l.split()[1], 16) for l in Path("/proc/net/softnet_stat").read_text().splitlines())


def kernel_drops():
    """Counters of where the kernel drops frames on the way: the backlog (softnet_stat), the
    DUT veth's receive queue and XDP (ethtool -S), the generator veth's and DUT veth's
    interface counters."""
    out = {"backlog": backlog_drops()}
    for k, v in re.findall(r"(rx_queue_0_drops|rx_queue_0_xdp_drops|rx_queue_0_xdp_redirect):\s+(\d+)",
                           sh("ethtool", "-S", "xdpm-d0", ns="xdpm-dut", capture=True)):
        out[k] = int(v)
    for ns, dev in (("xdpm-gen", "xdpm-g0"), ("xdpm-dut", "xdpm-d0")):
        st = json.loads(sh("ip", "-s", "-j", "link", "show", dev, ns=ns, capture=True))[0]["stats64"]
        for d in ("rx", "tx"):
            out[f"{dev}_{d}_packets"] = st[d]["packets"]
            out[f"{dev}_{d}_dropped"] = st[d]["dropped"]
    return out


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


# ---- part a: packet rate -------------------------------------------------------------------

def testpmd_samples(path):
    """Per-second (rx_pps, tx_pps) of a one-port testpmd with --stats-period 1."""
    text = Path(path).read_text(errors="replace")
    rx = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", text)]
    tx = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", text)]
    return list(zip(rx, tx))


def testpmd_totals(path):
    text = Path(path).read_text(errors="replace")
    out = {}
    for key in ("RX-missed", "RX-dropped", "RX-packets", "TX-packets"):
        v = re.findall(rf"{key}:\s+(\d+)", text)
        if v:
            out[key] = int(v[-1])
    return out


def rate_run(mode, args, logdir, rnd):
    dev_vdev = {"xdp": f"net_af_xdp0,iface=xdpm-d0,xdp_prog={args.obj}",
                "packet": "net_af_packet0,iface=xdpm-d0"}[mode]
    tag = f"rate-{mode}-{rnd}"
    dut = spawn(f"{tag}-dut", "xdpm-dut", [
        "dpdk-testpmd", *EAL, "--file-prefix", "xdpm-dut", f"--lcores=0@{DUT_CPU},1@{DUT_CPU}",
        "--vdev", dev_vdev, "--", "--forward-mode=5tswap", "--stats-period", "1",
        "--total-num-mbufs=16384"], logdir)
    maps = None
    gen = None
    try:
        wait_for(lambda: "Port statistics" in dut.log_path.read_text(errors="replace"), 30,
                 "the DUT testpmd", proc=dut)
        xdp = None
        if mode == "xdp":
            xdp, maps = steer("xdpm-dut", "xdpm-d0", [VIP, CLUSTER])
        dmac = mac_of("xdpm-dut", "xdpm-d0")
        gen = spawn(f"{tag}-gen", "xdpm-gen", [
            "dpdk-testpmd", *EAL, "--file-prefix", "xdpm-gen", f"--lcores=0@{GEN_CPU},1@{GEN_CPU}",
            "--vdev", GEN_VDEV[args.gen], "--", "--forward-mode=txonly",
            f"--eth-peer=0,{dmac}", f"--tx-ip={CLIENT_IP},{VIP}", "--txonly-multi-flow",
            "--stats-period", "1", "--total-num-mbufs=16384"], logdir)
        wait_for(lambda: "Port statistics" in gen.log_path.read_text(errors="replace"), 30,
                 "the generator testpmd", proc=gen)
        n0 = len(testpmd_samples(dut.log_path))
        time.sleep(args.warmup)
        c0, k0 = cpu_times(), kernel_drops()
        time.sleep(args.secs)
        c1, k1 = cpu_times(), kernel_drops()
        rss = rss_kib(dut.pid)
        counts = steer_counts(maps) if maps else None
        dut_s = testpmd_samples(dut.log_path)[n0 + args.warmup:n0 + args.warmup + args.secs]
        gen_s = testpmd_samples(gen.log_path)
        gen_s = gen_s[-args.secs - 1:-1] if len(gen_s) > args.secs else gen_s
        if not dut_s:
            raise RuntimeError(f"no DUT samples: {tail(dut.log_path)}")
    finally:
        stop(gen)
        stop(dut)
        close_maps(maps)
    return {
        "mode": mode, "round": rnd,
        "dut_rx_pps": statistics.median(s[0] for s in dut_s),
        "dut_tx_pps": statistics.median(s[1] for s in dut_s),
        "gen_tx_pps": statistics.median(s[1] for s in gen_s) if gen_s else None,
        "dut_totals": testpmd_totals(dut.log_path),
        "kernel": {k: k1[k] - k0[k] for k in k1 if k in k0},
        "cpu": cpu_split(c0, c1), "dut_rss_kib": rss, "xdp_mode": xdp, "steer": counts,
        "samples": [s[1] for s in dut_s],
    }


def part_rate(args, logdir):
    veth_pair("xdpm-gen", "xdpm-g0", "xdpm-dut", "xdpm-d0")
    sh("ip", "addr", "add", f"{PORT_IP}/24", "dev", "xdpm-d0", ns="xdpm-dut")
    runs = []
    for r in range(args.rounds):
        order = ["xdp", "packet"] if r % 2 == 0 else ["packet", "xdp"]
        for mode in order:
            res = rate_run(mode, args, logdir, r)
            log(f"  rate round {r} {mode:6}: DUT rx {res['dut_rx_pps'] / 1e6:.3f} tx "
                f"{res['dut_tx_pps'] / 1e6:.3f} Mpps, generator tx "
                f"{(res['gen_tx_pps'] or 0) / 1e6:.3f} Mpps, cpu {res['cpu']}, "
                f"rss {res['dut_rss_kib']} KiB, xdp {res['xdp_mode']} {res['steer'] or ''}, "
                f"kernel {res['kernel']}")
            runs.append(res)
    for ns in ("xdpm-gen", "xdpm-dut"):
        sh("ip", "netns", "del", ns, check=False)
    return runs


# ---- part b: the exception path ------------------------------------------------------------

def bird_conf(router, iface, vip=None):
    if router:
        return f"""router id {RTR_IP};
protocol device {{ scan time 10; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol bfd {{ interface "{iface}" {{ interval 100 ms; multiplier 3; }}; }}
protocol bgp appliance {{
  local {RTR_IP} as 65000; neighbor {PORT_IP} as 65001; bfd on; error wait time 2, 30;
  ipv4 {{ import all; export none; }};
}}
"""
    return f"""router id {PORT_IP};
protocol device {{ scan time 10; }}
protocol static vips {{ ipv4; route {vip}/32 blackhole; }}
protocol bfd {{ interface "{iface}" {{ interval 100 ms; multiplier 3; }}; }}
protocol bgp upstream {{
  local {PORT_IP} as 65001; neighbor {RTR_IP} as 65000; bfd on; error wait time 2, 30;
  ipv4 {{ import none; export where proto = "vips"; }};
}}
"""


def start_bird(name, ns, conf, logdir):
    path = logdir / f"{name}.conf"
    path.write_text(conf)
    sock = logdir / f"{name}.ctl"
    sock.unlink(missing_ok=True)
    p = spawn(name, ns, ["bird", "-f", "-c", str(path), "-s", str(sock)], logdir)
    wait_for(sock.exists, 10, f"bird {name}", proc=p)
    p.sock = sock
    return p


def birdc(ns, bird, *cmd):
    return sh("birdc", "-s", str(bird.sock), *cmd, ns=ns, capture=True, check=False)


def router_has_vip():
    return "proto bird" in sh("ip", "route", "show", f"{VIP}/32", ns="xdpm-rtr", capture=True)


def sluiced_config(mode, rtr_mac, args, logdir):
    if mode == "tap":
        vdev, device, extra = "net_af_packet0,iface=xdpm-l0", "net_af_packet0", "    kernel: xdpm-k0\n"
    else:
        vdev, device = f"net_af_xdp0,iface=xdpm-l0,xdp_prog={args.obj}", "net_af_xdp0"
        # ARP replies are the kernel's now (XDP_PASS): sluiced cannot learn the router's MAC.
        extra = f"    neighbors:\n      - {{ address: {RTR_IP}, mac: \"{rtr_mac}\" }}\n"
    text = f"""dpdk:
  args: [--no-huge, -m, "512", --no-pci, --file-prefix, xdpm-sluiced, --log-level, "lib.eal:notice"]
  vdevs: ["{vdev}"]
workers:
  cores: [{DUT_CPU}]
  control_core: {GEN_CPU}
ports:
  - name: ext
    device: {device}
    address: {PORT_IP}/24
    gateway: {RTR_IP}
{extra}sessions:
  capacity: 65536
services:
  - name: web
    vip: {VIP}
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    backends:
      - {{ address: 198.18.0.11 }}
"""
    path = logdir / f"sluiced-{mode}.yaml"
    path.write_text(text)
    return path


def start_dpdk_exception(mode, args, logdir, rnd):
    """The DPDK process on the appliance's port: sluiced (tap: with its exception path) or,
    for xdp when sluiced cannot, testpmd 5tswap. Returns (process, what)."""
    rtr_mac = mac_of("xdpm-rtr", "xdpm-r0")
    if args.sluiced and (mode == "tap" or args.sluiced_xdp):
        conf = sluiced_config(mode, rtr_mac, args, logdir)
        p = spawn(f"exc-{mode}-{rnd}-sluiced", "xdpm-lb", [str(args.sluiced), "--config", str(conf)], logdir)
        if mode == "tap":
            wait_for(lambda: sh("ip", "link", "show", "xdpm-k0", ns="xdpm-lb", check=False) == 0,
                     30, "sluiced's TAP xdpm-k0", proc=p)
        else:
            wait_for(lambda: xdp_state("xdpm-lb", "xdpm-l0")[1], 30, "sluiced's XDP program", proc=p)
            time.sleep(1)
        return p, "sluiced"
    if mode == "tap":
        raise RuntimeError("the tap side needs sluiced (--sluiced)")
    p = spawn(f"exc-{mode}-{rnd}-testpmd", "xdpm-lb", [
        "dpdk-testpmd", *EAL, "--file-prefix", "xdpm-lb", f"--lcores=0@{DUT_CPU},1@{DUT_CPU}",
        "--vdev", f"net_af_xdp0,iface=xdpm-l0,xdp_prog={args.obj}", "--",
        "--forward-mode=5tswap", "--stats-period", "5", "--total-num-mbufs=16384"], logdir)
    wait_for(lambda: "Port statistics" in p.log_path.read_text(errors="replace"), 30, "testpmd", proc=p)
    return p, "testpmd 5tswap"


def ping_rtts(count, interval):
    """RTTs of the replies (duplicates left out) and how many echo requests got none."""
    out = sh("ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", PORT_IP,
             ns="xdpm-rtr", capture=True, check=False)
    rtts = [float(m.group(1)) for m in re.finditer(r"time=([\d.]+) ms(.*)", out)
            if "DUP" not in m.group(2)]
    return rtts, count - len(rtts)


def flooded_ping(args, logdir, tag, rb):
    """Ping RTTs while the router's side floods the VIP (testpmd txonly through
    net_af_packet on the router's own veth, which its kernel and BIRD keep using), and
    whether BFD stayed up."""
    lmac = mac_of("xdpm-lb", "xdpm-l0")
    gen = spawn(f"{tag}-flood", "xdpm-rtr", [
        "dpdk-testpmd", *EAL, "--file-prefix", "xdpm-flood", f"--lcores=0@{GEN_CPU},1@{GEN_CPU}",
        "--vdev", "net_af_packet0,iface=xdpm-r0", "--", "--forward-mode=txonly",
        f"--eth-peer=0,{lmac}", f"--tx-ip={CLIENT_IP},{VIP}", "--txonly-multi-flow",
        "--stats-period", "1", "--total-num-mbufs=16384"], logdir)
    try:
        wait_for(lambda: "Port statistics" in gen.log_path.read_text(errors="replace"), 30,
                 "the flood's testpmd", proc=gen)
        time.sleep(2)
        t0, b0 = time.time(), backlog_drops()
        # Ping in the background; meanwhile watch the router's route to the VIP.
        out = logdir / f"{tag}-flood-ping.txt"
        with open(out, "w") as f:
            ping = subprocess.Popen(["ip", "netns", "exec", "xdpm-rtr", "ping", "-n", "-c", str(args.pings),
                                     "-i", "0.01", "-W", "1", PORT_IP], stdout=f, stderr=subprocess.STDOUT)
        PROCS.append(ping)
        ping.name, ping.log_path = "ping", out
        gone, t = 0.0, time.time()
        while ping.poll() is None:
            time.sleep(0.05)
            now = time.time()
            if not router_has_vip():
                gone += now - t
            t = now
        text = out.read_text()
        rtts = [float(m.group(1)) for m in re.finditer(r"time=([\d.]+) ms(.*)", text) if "DUP" not in m.group(2)]
        lost = args.pings - len(rtts)
        backlog = backlog_drops() - b0
        flaps = "Up" not in birdc("xdpm-rtr", rb, "show", "bfd", "sessions")
        tx = [s[1] for s in testpmd_samples(gen.log_path)][-int(time.time() - t0) - 1:]
    finally:
        stop(gen)
    return {"offered_pps": statistics.median(tx) if tx else None, "n": len(rtts), "lost": lost,
            "median_ms": round(statistics.median(rtts), 3) if rtts else None,
            "p99_ms": sorted(rtts)[int(0.99 * (len(rtts) - 1))] if rtts else None,
            "bfd_down_after": flaps, "backlog_drops": backlog, "route_gone_s": round(gone, 2)}


def exception_run(mode, args, logdir, rnd):
    res = {"mode": mode, "round": rnd}
    if mode == "xdp":
        sh("ip", "addr", "replace", f"{PORT_IP}/24", "dev", "xdpm-l0", ns="xdpm-lb")
        blind = 0
    else:
        sh("ip", "addr", "flush", "dev", "xdpm-l0", ns="xdpm-lb")
        blind = 1
    # tap: net_af_packet leaves the veth's frames to the kernel as well (a NIC bound to DPDK
    # would not), and the TAP has the veth's MAC: without this the kernel answers pings and
    # ARP, and takes BGP, a second time by way of the veth (DUP! replies). Strict reverse-path
    # filtering (the router is reached by the TAP) and arp_ignore keep it to the TAP.
    sh("sysctl", "-qw", f"net.ipv4.conf.xdpm-l0.rp_filter={blind}",
       f"net.ipv4.conf.xdpm-l0.arp_ignore={blind}", ns="xdpm-lb")
    sh("ip", "neigh", "flush", "all", ns="xdpm-rtr", check=False)
    dp, what = start_dpdk_exception(mode, args, logdir, rnd)
    res["dpdk"] = what
    maps = birds = None
    try:
        if mode == "xdp":
            res["xdp_mode"], maps = steer("xdpm-lb", "xdpm-l0", [VIP, CLUSTER])
            iface = "xdpm-l0"
        else:
            sh("ip", "addr", "add", f"{PORT_IP}/24", "dev", "xdpm-k0", ns="xdpm-lb")
            sh("ip", "link", "set", "xdpm-k0", "up", ns="xdpm-lb")
            iface = "xdpm-k0"
        t0 = time.time()
        birds = [start_bird(f"exc-{mode}-{rnd}-bird-rtr", "xdpm-rtr", bird_conf(True, "xdpm-r0"), logdir),
                 start_bird(f"exc-{mode}-{rnd}-bird-lb", "xdpm-lb", bird_conf(False, iface, VIP), logdir)]
        rb = birds[0]
        wait_for(lambda: router_has_vip() and "Up" in birdc("xdpm-rtr", rb, "show", "bfd", "sessions"),
                 30, "BGP with BFD up and the VIP in the router's FIB", step=0.02)
        res["bgp_bfd_up_s"] = round(time.time() - t0, 2)
        rtts, lost = ping_rtts(args.pings, 0.01)
        res["ping"] = {"n": len(rtts), "lost": lost,
                       "median_ms": round(statistics.median(rtts), 3) if rtts else None,
                       "p99_ms": sorted(rtts)[int(0.99 * (len(rtts) - 1))] if rtts else None,
                       "max_ms": max(rtts) if rtts else None}
        if args.flood:
            res["flood"] = flooded_ping(args, logdir, f"exc-{mode}-{rnd}", rb)
            # Sessions that went down under the flood come back before the freeze test.
            t2 = time.time()
            wait_for(lambda: router_has_vip() and "Up" in birdc("xdpm-rtr", rb, "show", "bfd", "sessions"),
                     40, "BGP and BFD back after the flood", step=0.05)
            res["flood"]["recovered_s"] = round(time.time() - t2, 2)
            time.sleep(1)
        if maps:
            res["steer"] = steer_counts(maps)
        # A frozen DPDK process: does the router stop sending to this appliance?
        os.kill(dp.pid, signal.SIGSTOP)
        t1 = time.time()
        try:
            wait_for(lambda: not router_has_vip(), args.freeze, "withdrawal", step=0.01)
            res["frozen_withdrawn_ms"] = round(1000 * (time.time() - t1))
        except RuntimeError:
            res["frozen_withdrawn_ms"] = None   # still announced after args.freeze s
        res["frozen_ping_lost"] = ping_rtts(20, 0.01)[1]
        os.kill(dp.pid, signal.SIGCONT)
        res["bfd_after_freeze"] = "Up" in birdc("xdpm-rtr", rb, "show", "bfd", "sessions")
    finally:
        for b in birds or []:
            stop(b, signal.SIGTERM)
        stop(dp)
        close_maps(maps)
    return res


def part_exception(args, logdir):
    veth_pair("xdpm-rtr", "xdpm-r0", "xdpm-lb", "xdpm-l0")
    sh("ip", "addr", "add", f"{RTR_IP}/24", "dev", "xdpm-r0", ns="xdpm-rtr")
    runs = []
    for r in range(args.exc_rounds):
        order = ["xdp", "tap"] if r % 2 == 0 else ["tap", "xdp"]
        for mode in order:
            res = exception_run(mode, args, logdir, r)
            log(f"  exception round {r} {mode}: {res}")
            runs.append(res)
    for ns in ("xdpm-rtr", "xdpm-lb"):
        sh("ip", "netns", "del", ns, check=False)
    return runs


# ---- report --------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def lost(r):
    """The share of the generator's frames the DUT did not receive, in the window."""
    if not r["gen_tx_pps"]:
        return "?"
    return f"{100 * max(0.0, 1 - r['dut_rx_pps'] / r['gen_tx_pps']):.0f}%"


def flood_cell(f):
    if not f:
        return "-"
    return (f"({(f['offered_pps'] or 0) / 1e6:.2f}) {f['median_ms']} / {f['p99_ms']}, {f['lost']}, "
            f"BFD {'down' if f['bfd_down_after'] else 'up'} at the end, VIP route gone {f['route_gone_s']} s; "
            f"backlog drops {f['backlog_drops']}")


def report(args, rate, exc, started):
    cpu = re.search(r"Model name:\s*(.*)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    lines = [f"# Exception path: TAP vs AF_XDP ({started:%Y-%m-%d %H:%M} UTC)", "",
             f"Host: {cpu.group(1).strip() if cpu else '?'}, {os.cpu_count()} vCPUs, kernel {os.uname().release}",
             f"Command: `bench/xdp/measure.py {' '.join(sys.argv[1:])}`", ""]
    if rate:
        lines += [f"## rate: testpmd 5tswap on a veth, generator testpmd txonly (net_af_{args.gen}) on its peer", "",
                  "| round | mode | DUT rx Mpps | DUT tx Mpps | generator tx Mpps | lost | CPU0 usr/sys/softirq/idle % | CPU1 usr/sys/softirq/idle % | DUT RSS MiB |",
                  "|---:|---|---:|---:|---:|---:|---|---|---:|"]
        for r in rate:
            c = r["cpu"]
            lines.append(f"| {r['round']} | {r['mode']} | {r['dut_rx_pps'] / 1e6:.3f} | {r['dut_tx_pps'] / 1e6:.3f} | "
                         f"{(r['gen_tx_pps'] or 0) / 1e6:.3f} | {lost(r)} | "
                         + " | ".join("/".join(str(c[i][k]) for k in ("usr", "sys", "softirq", "idle")) for i in sorted(c))
                         + f" | {(r['dut_rss_kib'] or 0) / 1024:.0f} |")
        mx = med(r["dut_tx_pps"] for r in rate if r["mode"] == "xdp")
        mp = med(r["dut_tx_pps"] for r in rate if r["mode"] == "packet")
        gx = med(r["gen_tx_pps"] for r in rate if r["mode"] == "xdp")
        gp = med(r["gen_tx_pps"] for r in rate if r["mode"] == "packet")
        lines += ["", f"Medians over {args.rounds} rounds: net_af_xdp {mx / 1e6:.3f} Mpps, net_af_packet "
                  f"{mp / 1e6:.3f} Mpps forwarded; **af_xdp / af_packet = {mx / mp:.2f}** "
                  f"(generator sent {gx / 1e6:.3f} and {gp / 1e6:.3f} Mpps).",
                  f"XDP attach mode: {sorted(set(str(r['xdp_mode']) for r in rate if r['mode'] == 'xdp'))}; "
                  f"steering counters of the last xdp run: {[r['steer'] for r in rate if r['mode'] == 'xdp'][-1]}", ""]
    if exc:
        lines += ["## exception: BIRD 2 BGP + BFD (100 ms x 3) and ping, router -> port address", "",
                  "| round | mode | DPDK process | BGP+BFD up, VIP in router FIB (s) | ping median ms | p99 ms | lost | under a VIP flood (Mpps offered): ping median / p99 ms, lost of N, BFD, router's route | frozen DPDK: VIP withdrawn after |",
                  "|---:|---|---|---:|---:|---:|---:|---|---|"]
        for r in exc:
            p = r.get("ping", {})
            fw = r.get("frozen_withdrawn_ms")
            lines.append(f"| {r['round']} | {r['mode']} | {r['dpdk']} | {r.get('bgp_bfd_up_s')} | "
                         f"{p.get('median_ms')} | {p.get('p99_ms')} | {p.get('lost')} | {flood_cell(r.get('flood'))} | "
                         f"{f'{fw} ms' if fw is not None else f'not withdrawn in {args.freeze} s'} |")
        for mode in ("xdp", "tap"):
            rs = [r for r in exc if r["mode"] == mode]
            lines.append(f"\n{mode}: median ping {med(r['ping']['median_ms'] for r in rs)} ms, "
                         f"p99 {med(r['ping']['p99_ms'] for r in rs)} ms, BGP+BFD up in "
                         f"{med(r['bgp_bfd_up_s'] for r in rs)} s; under the flood: median ping "
                         f"{med(r['flood']['median_ms'] for r in rs if r.get('flood'))} ms, p99 "
                         f"{med(r['flood']['p99_ms'] for r in rs if r.get('flood'))} ms")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="rate,exception")
    ap.add_argument("--rounds", type=int, default=5, help="rate rounds (each: one run of each mode)")
    ap.add_argument("--exc-rounds", type=int, default=3)
    ap.add_argument("--gen", choices=sorted(GEN_VDEV), default="xdp",
                    help="the rate generator's device")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--pings", type=int, default=300)
    ap.add_argument("--no-flood", dest="flood", action="store_false",
                    help="skip the ping under a VIP flood")
    ap.add_argument("--freeze", type=float, default=3.0, help="seconds to wait for a withdrawal")
    ap.add_argument("--obj", type=Path, default=Path(__file__).resolve().parent / "steer.bpf.o")
    ap.add_argument("--sluiced", type=Path, default=ROOT / "target/release/sluiced")
    ap.add_argument("--no-sluiced-xdp", dest="sluiced_xdp", action="store_false",
                    help="use testpmd, not sluiced, on net_af_xdp in the exception part")
    ap.add_argument("--out", type=Path, help="write the markdown report here too")
    ap.add_argument("--logdir", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, XDP)")
    args.obj = args.obj.resolve()
    if not args.obj.exists():
        sys.exit(f"{args.obj}: build it first (bench/xdp/run.sh does)")
    if not args.sluiced.exists():
        log(f"note: {args.sluiced} missing: the exception part's tap side is skipped")
        args.sluiced = None
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="xdpm-"))
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"logs in {logdir}")
    started = datetime.now(timezone.utc)
    parts = args.parts.split(",")
    rate = exc = None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    cleanup_namespaces()
    try:
        if "rate" in parts:
            rate = part_rate(args, logdir)
        if "exception" in parts and args.sluiced:
            exc = part_exception(args, logdir)
    finally:
        for p in PROCS:
            stop(p, timeout=5)
        cleanup_namespaces()
    (logdir / "results.json").write_text(json.dumps({"rate": rate, "exception": exc}, indent=1))
    text = report(args, rate, exc, started)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
