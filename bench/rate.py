#!/usr/bin/env python3
"""The packet-rate harness: how close sluiced comes to what this machine can forward.

    generator (sluice-gen, CPU 0) --net_memif--> device under test (CPU 1) --> net_null

Each round runs three devices under test back to back, in rotating order, against the same
generator: `dpdk-testpmd --forward-mode=io` (forwards without touching packets: the ceiling
of the generator and the memif link), `--forward-mode=5tswap` (touches L2-L4 headers: the
forwarding ceiling Sluice is compared with) and sluiced. Each run warms up, then takes the
median per-second TX rate over a measurement window.

memif moves every packet between the two CPUs' caches, so the rates depend on how far apart
the host placed the VM's vCPUs, which changes on its own every few seconds here (a cache-line
round trip of ~65 ns when they share an L3, ~320 ns when not; `xcore` measures it). A run
counts only if the vCPUs were near before and after it and its per-second rates held steady;
rounds repeat until each device has `--rounds` accepted runs. If 5tswap reaches 90% of io, the
link rather than the forwarder set its rate and the ratio is an upper bound.

Two modes. `memif` (the default) is the setup above. `local` takes the generator and the link
out: each device under test runs alone on CPU 1 and reads a capture of the scenario's packets
from memory (`net_pcap` with `infinite_rx=1`, which copies each packet into a fresh mbuf, as
memif's receive side does), so no second CPU is involved and the host's vCPU placement does
not matter.

Every device forwards what it receives on port 0 out of port 1 (`net_null`), except sluiced in
`syn-proxy-flood`: there it answers each SYN itself with a SYN-ACK out of port 0, the port the
SYN came in on. Port 0 can transmit in both modes: `net_pcap` with an `rx_pcap` and no
`tx_pcap`/`tx_iface` frees each packet it is given and counts it (DPDK's `eth_tx_drop`, as
`net_null` does), and memif carries the replies back to the generator, which receives and frees
them. sluiced's `tx_pps` counts the packets of every port, so it counts the replies.

DPDK's memory (the device under test's: testpmd's and sluiced's) is on ordinary 4 KiB pages
(`--no-huge`, `--memory small`, the default) or on 2 MiB huge pages (`--memory huge`: the
harness reserves the pages, mounts a hugetlbfs of its own for them, and gives both back at the
end), as bare-metal appliances run.

    bench/rate.sh                      # setup, build, all scenarios, both modes
    bench/rate.py --scenarios established --runs 5 --measure 8

Only this machine's numbers, from one invocation, are comparable with each other.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = Path("/run/sluice-bench")
GEN_CPU, DUT_CPU = 0, 1
PORT_MAC = "02:00:00:00:00:01"
# memif ring of 4096 slots (log2 12): with the default 1024 the link, not the forwarders,
# capped every device near 20 Mpps here.
RSIZE = 12
# Cross-core round trips under this many ns mean the two vCPUs share an L3 ("near").
NEAR_NS = 150
# `local` mode: packets in the replayed capture (each held in an mbuf), and pool sizes.
LOCAL_PACKETS = 1 << 20
MBUFS = {"memif": 32767, "local": LOCAL_PACKETS + 65536}
MEMORY = {"memif": 1024, "local": 6144}
# DPDK's memory arguments for the devices under test: `--no-huge`, or a hugetlbfs (set by
# `huge_pages`).
EAL_MEMORY = ["--no-huge"]
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
# Packets per receive and transmit burst, for testpmd as for sluiced: read from `io::BURST`
# in dataplane/src/io.rs, so that both devices under test amortise their per-burst costs alike.
BURST = int(re.search(r"pub const BURST: usize = (\d+);",
                      (ROOT / "dataplane/src/io.rs").read_text()).group(1))

SCENARIOS = {
    "established": {
        "what": "1M established TCP flows (ACK), DSR IPIP, one worker",
        "gen": ["--flows", "1000000", "--tcp-flags", "10"],
    },
    "established-cached": {
        "what": "as `established` with 4096 flows, whose sessions stay in cache: the session table's "
                "work without its DRAM misses (a diagnostic, not a target)",
        "gen": ["--flows", "4096", "--tcp-flags", "10"],
        "modes": ["local"],
    },
    "new-flows": {
        "what": "every packet a new TCP flow (SYN), DSR IPIP, one worker",
        "gen": ["--new-flows", "--tcp-flags", "02"],
    },
    "two-workers": {
        "what": "established flows as above, two workers (local mode: one per CPU, a queue each)",
        "gen": ["--flows", "1000000", "--tcp-flags", "10"],
        "workers": 2,
        "modes": ["local"],
    },
    "nat": {
        "what": "1M established TCP flows (ACK) to a NAT VIP: DNAT to backend:8080, GRE keyed by VPC 100, "
                "one worker (client-to-backend direction)",
        "gen": ["--flows", "1000000", "--tcp-flags", "10", "--vip", "198.18.10.2"],
    },
    "syn-proxy-flood": {
        "what": "every packet a SYN (no TCP options) of a new flow to a SYN-proxied NAT VIP: sluiced answers "
                "each with a cookie SYN-ACK out of the ext port and keeps nothing (testpmd forwards them "
                "port 0 to 1), one worker",
        "gen": ["--new-flows", "--tcp-flags", "02", "--vip", "198.18.10.3"],
    },
    "isolation": {
        "what": "established flows as in `established`, to a DSR VIP whose service has packets/s, bytes/s, "
                "connections/s and sessions limits that always apply, set above what arrives (every packet "
                "pays for the buckets, none is dropped), one worker",
        "gen": ["--flows", "1000000", "--tcp-flags", "10", "--vip", "198.18.10.4"],
    },
}
# Scenarios that need more than this machine has are listed in the report as not run.
NOT_RUN = {}


def workers(scenario):
    return SCENARIOS[scenario].get("workers", 1)


def ext_vdev(args, scenario, sock):
    if args.mode == "memif":
        return f"net_memif0,role=client,socket={sock},rsize={RSIZE}"
    # One replayed capture per queue (worker), each holding its share of the packets.
    n = workers(scenario)
    return "net_pcap0," + ",".join(f"rx_pcap={capture(scenario, n)}" for _ in range(n)) + ",infinite_rx=1"


def capture(scenario, parts=1):
    """The scenario's packets as a capture for `local` mode (made once)."""
    path = RUN / f"{scenario}-{parts}.pcap"
    if not path.exists():
        subprocess.run([str(ROOT / "target/release/sluice-gen"), "--socket", "-", "--pcap", str(path), "--count",
                        str(LOCAL_PACKETS // parts), *SCENARIOS[scenario]["gen"]], check=True)
    return path


def sluiced_config(vdev, mode, n_workers=1):
    neighbors = "\n".join(
        f"      - {{ address: 198.19.0.{10 + i}, mac: '02:00:00:00:01:{10 + i:02x}' }}" for i in range(4))
    backends = "\n".join(f"      - {{ address: 198.19.0.{10 + i} }}" for i in range(4))
    nat_backends = "\n".join(f"      - {{ address: 192.0.2.{10 + i}, port: 8080, host: 198.19.0.{10 + i} }}"
                             for i in range(4))
    return f"""\
dpdk:
  args: [{", ".join(EAL_MEMORY)}, -m, "{MEMORY[mode]}", --no-pci, --no-telemetry, --file-prefix, sluice-bench-dut,
         --log-level, "lib.eal:warning"]
  vdevs: ["{vdev}", "net_null0,no-rx=1"]
  mbufs: {MBUFS[mode]}
workers:
  cores: [{", ".join(str(c) for c in ([DUT_CPU] if n_workers == 1 else range(n_workers)))}]
  control_core: {DUT_CPU}
ports:
  - name: ext
    device: {vdev.split(",")[0]}
    address: 198.18.0.1/24
    mac: "{PORT_MAC}"
  - name: int
    device: net_null0
    address: 198.19.0.1/24
    neighbors:
{neighbors}
services:
  - name: web
    vip: 198.18.10.1
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    backends:
{backends}
  - name: tenant
    vip: 198.18.10.2
    port: 80
    protocol: tcp
    forwarding: nat
    vpc: 100
    backends:
{nat_backends}
  - name: proxied
    vip: 198.18.10.3
    port: 80
    protocol: tcp
    forwarding: nat
    vpc: 100
    synproxy: true
    backends:
{nat_backends}
  - name: limited
    vip: 198.18.10.4
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    limits: {{ packets_per_second: 1000000000, bytes_per_second: 1000000000000,
              connections_per_second: 1000000000, sessions: 4000000 }}
    backends:
{backends}
"""


DUTS = ["testpmd-io", "testpmd-5tswap", "sluiced"]


def dut_command(dut, vdev, cfg, mode, n_workers=1):
    if dut == "sluiced":
        return [str(ROOT / "target/release/sluiced"), "--config", str(cfg), "--stats-interval", "1",
                "--print-stats"]
    fwd = dut.split("-", 1)[1]
    lcores = f"0@{DUT_CPU},1@{DUT_CPU}" if n_workers == 1 else "0@0," + ",".join(f"{i + 1}@{i}" for i in range(n_workers))
    return ["dpdk-testpmd", *EAL_MEMORY, "-m", str(MEMORY[mode]), "--no-pci", "--no-telemetry",
            "--file-prefix", "sluice-bench-testpmd", f"--lcores={lcores}",
            "--log-level", "lib.eal:warning",
            "--vdev", vdev, "--vdev", "net_null0,no-rx=1",
            "--", f"--forward-mode={fwd}", f"--burst={BURST}", f"--total-num-mbufs={MBUFS[mode]}",
            "--stats-period", "1",
            "--auto-start", f"--nb-cores={n_workers}", f"--rxq={n_workers}", f"--txq={n_workers}"]


def dut_rates(dut, text):
    """Per-second TX rates of the device under test, in order."""
    if dut == "sluiced":
        return [float(m) for m in re.findall(r"tx_pps=([0-9.]+)", text)]
    # testpmd prints a block per port each period; port 1 (net_null) is where it transmits.
    rates = []
    for block in re.split(r"#+ NIC statistics for port ", text)[1:]:
        if block.startswith("1 "):
            m = re.search(r"Tx-pps:\s+(\d+)", block)
            if m:
                rates.append(float(m.group(1)))
    return rates


def cookie_check(text):
    """sluiced's final counters (--print-stats): "cookies N = ext tx M" when it sent cookies."""
    def counter(name):
        m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
        return int(m.group(1)) if m else None
    cookies = counter("sluice_synproxy_cookies_sent_total")
    ext_tx = counter('sluice_port_tx_packets_total{port="ext"}')
    if not cookies:
        return ""
    return f", cookies {cookies} {'=' if cookies == ext_tx else '!='} ext tx {ext_tx}"


def busy(text):
    vals = [float(m) for m in re.findall(r"busy=([0-9.]+)%", text)]
    return vals


def xcore():
    out = subprocess.run([str(ROOT / "target/release/xcore"), str(GEN_CPU), str(DUT_CPU)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[-1])


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_once(dut, scenario, args, n):
    """One measurement: (rate, accepted, note, busy). In memif mode a run is accepted when the
    vCPUs were near each other before and after it; in both modes its per-second rates must
    hold steady through the window."""
    memif = args.mode == "memif"
    before = xcore() if memif else 0
    sock = RUN / f"{scenario}-{dut}-{n}.sock"
    sock.unlink(missing_ok=True)
    vdev = ext_vdev(args, scenario, sock)
    # Named by scenario and mode, so an A/B afterwards (bench/ab.sh) takes the one it means.
    cfg = RUN / f"dut-{scenario}-{args.mode}.yaml"
    cfg.write_text(sluiced_config(vdev, args.mode, workers(scenario)))
    dut_log, gen_log = RUN / f"{dut}.log", RUN / "gen.log"
    total = args.warmup + args.measure + 2
    gen = None
    if memif:
        gen = subprocess.Popen([str(ROOT / "target/release/sluice-gen"), "--socket", str(sock), "--rsize", str(RSIZE),
                                "--core", str(GEN_CPU), "--duration", str(total), *SCENARIOS[scenario]["gen"]],
                               stdout=open(gen_log, "w"), stderr=subprocess.STDOUT)
        time.sleep(0.5)
    d = subprocess.Popen(dut_command(dut, vdev, cfg, args.mode, workers(scenario)), stdout=open(dut_log, "w"),
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if gen:
        try:
            gen.wait(timeout=total + 40)
        except subprocess.TimeoutExpired:
            pass
        stop(gen)
    else:
        # Startup loads the capture into mbufs; measure once the device reports rates.
        deadline = time.time() + 120
        while time.time() < deadline and len(dut_rates(dut, dut_log.read_text(errors="replace"))) < total:
            if d.poll() is not None:
                break
            time.sleep(0.5)
    stop(d)
    after = xcore() if memif else 0
    dtext = dut_log.read_text(errors="replace")
    if gen and "gen connected" not in gen_log.read_text(errors="replace"):
        sys.exit(f"generator never connected ({dut}):\n{gen_log.read_text()}\n{dtext}")
    r = dut_rates(dut, dtext)
    # testpmd reports a first all-zero period before traffic; sluiced reports from its start.
    while r and r[0] == 0:
        r.pop(0)
    w = r[args.warmup:args.warmup + args.measure]
    if len(w) < max(1, args.measure // 2):
        # A slow start (memif connecting late): not a measurement.
        return (statistics.median(r) if r else 0.0), False, f"only {len(r)} samples", None
    rate = statistics.median(w)
    b = busy(dtext)[args.warmup:args.warmup + args.measure]
    steady = min(w) >= 0.8 * max(w)
    near = before < NEAR_NS and after < NEAR_NS
    note = (f"rtt {before}/{after} ns, " if memif else "") + ("steady" if steady else "unsteady")
    if dut == "sluiced":
        note += cookie_check(dtext)
    return rate, near and steady, note, (statistics.median(b) if b else None)


class huge_pages:
    """Enough 2 MiB pages for one device under test's `mib` reserved, a hugetlbfs of its own
    mounted, and EAL_MEMORY pointed at it; all given back on exit."""

    def __init__(self, mib):
        self.pages = mib // 2 + 64
        self.dir = RUN / "huge"

    def __enter__(self):
        self.before = int(NR_HUGEPAGES.read_text())
        NR_HUGEPAGES.write_text(str(self.before + self.pages))
        got = int(NR_HUGEPAGES.read_text()) - self.before
        if got < self.pages:
            NR_HUGEPAGES.write_text(str(self.before))
            sys.exit(f"rate.py: only {got} of {self.pages} huge pages of 2 MiB could be reserved")
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(self.dir)], check=True)
        EAL_MEMORY[:] = ["--huge-dir", str(self.dir)]
        return self

    def __exit__(self, *_):
        subprocess.run(["umount", str(self.dir)], check=False)
        NR_HUGEPAGES.write_text(str(self.before))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--mode", choices=["memif", "local"], default="memif")
    ap.add_argument("--rounds", type=int, default=3, help="accepted runs wanted per device and scenario")
    ap.add_argument("--max-rounds", type=int, default=12, help="give up on a scenario after this many rounds")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--measure", type=int, default=4)
    ap.add_argument("--memory", choices=["small", "huge"], default="small",
                    help="DPDK's memory: ordinary pages (--no-huge) or 2 MiB huge pages")
    ap.add_argument("--out", default=None, help="default: bench/results/rate-<mode>[-huge].md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("rate.py needs root (DPDK)")
    RUN.mkdir(parents=True, exist_ok=True)
    if args.memory == "huge":
        with huge_pages(MEMORY[args.mode]):
            measure(args)
    else:
        measure(args)


def measure(args):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        f"Mode {args.mode}. Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {cpu}, "
        f"{os.cpu_count()} CPUs; DPDK memory of the devices under test on "
        + ("2 MiB huge pages (hugetlbfs); " if args.memory == "huge" else "4 KiB pages (--no-huge); ")
        + 
        f"each device {args.measure} s measured after {args.warmup} s warm-up; medians of accepted runs "
        + (f"(vCPUs near: cache-line round trip < {NEAR_NS} ns before and after; rates steady within 20%)."
           if args.mode == "memif" else "(rates steady within 20%)."),
        "",
    ]
    summary = ["| scenario | accepted runs (io/5tswap/sluiced) | sluiced Mpps | testpmd 5tswap Mpps | "
               "sluiced / 5tswap | testpmd io Mpps | sluiced worker busy |", "|---|---:|---:|---:|---:|---:|---:|"]
    detail = ["| scenario | round | device | Mpps | conditions | used |", "|---|---:|---|---:|---|---|"]
    for scenario in args.scenarios.split(","):
        if args.mode not in SCENARIOS[scenario].get("modes", ["memif", "local"]):
            summary.append(f"| {scenario} | not run in {args.mode} mode: needs 3 CPUs (generator + 2 workers) and a "
                           f"generator per memif queue; this machine has {os.cpu_count()} (see local mode) | | | | | |")
            continue
        accepted = {d: [] for d in DUTS}
        busy_all = []
        r = 0
        while r < args.max_rounds and min(len(v) for v in accepted.values()) < args.rounds:
            order = DUTS[r % 3:] + DUTS[:r % 3]
            for dut in order:
                rate, ok, note, b = run_once(dut, scenario, args, r)
                if ok:
                    accepted[dut].append(rate)
                    if b is not None:
                        busy_all.append(b)
                detail.append(f"| {scenario} | {r + 1} | {dut} | {rate / 1e6:.2f} | {note} | {'yes' if ok else 'no'} |")
                print(f"{scenario:<12} round {r + 1} {dut:<15} {rate / 1e6:6.2f} Mpps  {note}"
                      f"{'' if ok else '  (not used)'}", flush=True)
            r += 1
        if min(len(v) for v in accepted.values()) == 0:
            summary.append(f"| {scenario}: {SCENARIOS[scenario]['what']} | no accepted run of every device in {r} "
                           "rounds (vCPUs placed far apart) | | | | | |")
            continue
        io, sw, sl = (statistics.median(accepted[d]) for d in DUTS)
        bound = " (5tswap at the link ceiling: ratio is an upper bound)" if sw >= 0.9 * io else ""
        summary.append(f"| {scenario}: {SCENARIOS[scenario]['what']} | "
                       f"{'/'.join(str(len(accepted[d])) for d in DUTS)} | {sl / 1e6:.2f} | {sw / 1e6:.2f} | "
                       f"{sl / sw:.2f}{bound} | {io / 1e6:.2f} | "
                       f"{statistics.median(busy_all) if busy_all else 0:.0f}% |")
    for sc, why in NOT_RUN.items():
        summary.append(f"| {sc} | not run: {why} | | | | | |")
    report = "\n".join(lines + summary + ["", "Every round:", ""] + detail)
    print()
    print(report)
    suffix = "-huge" if args.memory == "huge" else ""
    out = Path(args.out or ROOT / "bench" / "results" / f"rate-{args.mode}{suffix}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")


if __name__ == "__main__":
    main()
