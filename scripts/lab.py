#!/usr/bin/env python3
"""The namespace lab: a client, the Sluice appliance and backend hosts, joined by veth pairs.

    <p>-cli   client, 198.18.0.2/24 on cli0; VIPs 198.18.10.0/24 routed via 198.18.0.1
      |  veth cli0 <-> gw-ext
    <p>-gw    sluiced: DPDK net_af_packet on gw-ext (198.18.0.1) and gw-int (198.19.0.1);
      |       the kernel has no address on these veths, DPDK owns them
      |  veth gw-int <-> sw-gw
    <p>-sw    a bridge joining the appliance and the backend hosts
      |  veth sw-beN <-> be0
    <p>-beN   backend host N, 198.19.0.(10+N)/24 on be0

Every address is from 198.18.0.0/15 and exists only inside these namespaces. `up` is
idempotent (it removes a lab of the same prefix first); `down` ends the processes the lab
started (by pid) and deletes its namespaces.

    python3 scripts/lab.py up [--prefix sl]
    python3 scripts/lab.py down [--prefix sl]
    python3 scripts/lab.py demo          # the README's main job, see demo()
"""
import argparse
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIP = "198.18.10.1"
CLIENT_IP = "198.18.0.2"
GW_EXT_IP = "198.18.0.1"
GW_INT_IP = "198.19.0.1"


def backend_ip(n):
    return f"198.19.0.{10 + n}"


def run(cmd, check=True, capture=False, timeout=60):
    """Runs a command (a list); returns stdout when capture is set."""
    r = subprocess.run(cmd, check=False, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout if capture else r.returncode


class Lab:
    def __init__(self, prefix="sl", backends=2, run_dir=None):
        self.prefix = prefix
        self.backends = backends
        self.run_dir = Path(run_dir or ROOT / "lab-run" / prefix)
        self.procs = []

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def namespaces(self):
        return [self.ns("cli"), self.ns("gw"), self.ns("sw")] + [self.ns(f"be{i}") for i in range(1, self.backends + 1)]

    def sh(self, name, *cmd, check=True, capture=False, timeout=60):
        """Runs a command inside namespace `name` (short name, e.g. "cli")."""
        return run(["ip", "netns", "exec", self.ns(name), *cmd], check=check, capture=capture, timeout=timeout)

    # ---- topology ------------------------------------------------------------------------

    def _veth(self, ns_a, a, ns_b, b):
        run(["ip", "link", "add", a, "netns", self.ns(ns_a), "type", "veth", "peer", "name", b, "netns", self.ns(ns_b)])
        for ns, dev in ((ns_a, a), (ns_b, b)):
            # No offloads: a checksum left to "hardware" would reach af_packet unfinished, and
            # GSO would hand DPDK frames larger than the MTU.
            self.sh(ns, "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                    check=False)
            self.sh(ns, "ip", "link", "set", dev, "up")

    def up(self):
        self.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for n in self.namespaces():
            run(["ip", "netns", "add", n])
            run(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"])
            # IPv6 off: router solicitations and MLD would only be noise on the appliance.
            run(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            run(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
        self._veth("cli", "cli0", "gw", "gw-ext")
        self._veth("gw", "gw-int", "sw", "sw-gw")
        self.sh("sw", "ip", "link", "add", "br0", "type", "bridge")
        self.sh("sw", "ip", "link", "set", "br0", "up")
        self.sh("sw", "ip", "link", "set", "sw-gw", "master", "br0")
        for i in range(1, self.backends + 1):
            self._veth(f"be{i}", "be0", "sw", f"sw-be{i}")
            self.sh("sw", "ip", "link", "set", f"sw-be{i}", "master", "br0")
            self.sh(f"be{i}", "ip", "addr", "add", f"{backend_ip(i)}/24", "dev", "be0")
        self.sh("cli", "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "cli0")
        self.sh("cli", "ip", "route", "add", "198.18.10.0/24", "via", GW_EXT_IP)

    def down(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()
        existing = run(["ip", "netns", "list"], capture=True)
        names = {line.split()[0] for line in existing.splitlines() if line.strip()}
        for n in self.namespaces():
            if n in names:
                run(["ip", "netns", "del", n], check=False)

    # ---- processes ------------------------------------------------------------------------

    def spawn(self, name, cmd, log_name):
        """Starts `cmd` in namespace `name`, output to run_dir/log_name; tracked for cleanup."""
        log = open(self.run_dir / log_name, "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *cmd], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        p.log_path = self.run_dir / log_name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        """Ends a process this lab started (by its pid), escalating to SIGKILL."""
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def wait_for_log(self, p, text, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in p.log_path.read_text(errors="replace"):
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{text!r} not seen in {p.log_path}:\n{p.log_path.read_text(errors='replace')}")

    def start_sluiced(self, sluiced, config, extra=()):
        p = self.spawn("gw", [str(sluiced), "--config", str(config), "--stats-interval", "2", *extra], "sluiced.log")
        self.wait_for_log(p, "running:")
        return p

    def capture(self, name, dev, pcap, bpf):
        p = self.spawn(name, ["tcpdump", "-i", dev, "-n", "-U", "-w", str(self.run_dir / pcap), bpf], pcap + ".log")
        self.wait_for_log(p, "listening on")
        return p


# ---- reading what the backends received -------------------------------------------------------

def read_pcap(path):
    """Frames of a little-endian pcap file (as tcpdump writes them here)."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)
    frames, at = [], 24
    while at + 16 <= len(data):
        incl = struct.unpack_from("<I", data, at + 8)[0]
        frames.append(data[at + 16:at + 16 + incl])
        at += 16 + incl
    return frames


def ip4(b):
    return ".".join(str(x) for x in b)


def decode_tunneled(frame):
    """(outer_src, outer_dst, kind, gre_key, inner_flow) for an IPIP or GRE frame, else None.
    inner_flow is (proto, src, sport, dst, dport)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    o = frame[14:]
    ihl = (o[0] & 0x0F) * 4
    proto, src, dst = o[9], ip4(o[12:16]), ip4(o[16:20])
    key = None
    if proto == 4:
        inner, kind = o[ihl:], "ipip"
    elif proto == 47:
        flags = struct.unpack_from("!H", o, ihl)[0]
        glen = 4 + (4 if flags & 0x8000 else 0)
        if flags & 0x2000:
            key = struct.unpack_from("!I", o, ihl + glen)[0]
            glen += 4
        glen += 4 if flags & 0x1000 else 0
        inner, kind = o[ihl + glen:], "gre"
    else:
        return None
    iihl = (inner[0] & 0x0F) * 4
    iproto = inner[9]
    sport, dport = struct.unpack_from("!HH", inner, iihl)
    return src, dst, kind, key, (iproto, ip4(inner[12:16]), sport, ip4(inner[16:20]), dport)


def sluiced_which(sluiced, config, flow):
    proto, src, sport, dst, dport = flow
    out = run([str(sluiced), "which", str(config), {6: "tcp", 17: "udp"}[proto], f"{src}:{sport}", f"{dst}:{dport}"],
              capture=True)
    return out.split()[1]


def counters(text):
    """Parses the `name{labels} value` lines sluiced prints with --print-stats."""
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = int(v)
    return out


# ---- the main job ----------------------------------------------------------------------------

def demo(args):
    sluiced = Path(args.sluiced)
    config = ROOT / "pipelines" / "lab-dsr.yaml"
    lab = Lab(prefix=args.prefix)
    print(f"== lab up ({', '.join(lab.namespaces())})")
    lab.up()
    try:
        print("== sluiced in", lab.ns("gw"), "with", config.relative_to(ROOT))
        gw = lab.start_sluiced(sluiced, config, ["--print-stats"])
        caps = [lab.capture(f"be{i}", "be0", f"be{i}.pcap", "ip proto 4 or ip proto 47") for i in (1, 2)]

        print(f"== client pings the VIP {VIP}")
        print(lab.sh("cli", "ping", "-c", "3", "-i", "0.2", "-W", "1", VIP, capture=True, check=False).strip())
        print(f"== client: 200 TCP SYNs (hping3, one source port each) to {VIP}:80, "
              f"100 UDP datagrams to {VIP}:53")
        lab.sh("cli", "hping3", "-q", "-S", "-p", "80", "-c", "200", "-i", "u3000", VIP, check=False)
        lab.sh("cli", "hping3", "-q", "--udp", "-p", "53", "-d", "32", "-c", "100", "-i", "u3000", VIP, check=False)
        time.sleep(0.5)
        for c in caps:
            lab.stop(c, signal.SIGINT)

        print("== what the backend hosts received (IPIP for web, GRE key 53 for dns)")
        print(f"   {'backend':<14}{'tcp pkts':>9}{'tcp flows':>10}{'udp pkts':>9}{'udp flows':>10}")
        owner = {}
        for i in (1, 2):
            rows = [d for d in map(decode_tunneled, read_pcap(lab.run_dir / f"be{i}.pcap")) if d]
            tcp = [r for r in rows if r[4][0] == 6]
            udp = [r for r in rows if r[4][0] == 17]
            for r in rows:
                owner.setdefault(r[4], set()).add(backend_ip(i))
            print(f"   {backend_ip(i):<14}{len(tcp):>9}{len({r[4] for r in tcp}):>10}"
                  f"{len(udp):>9}{len({r[4] for r in udp}):>10}")
        split = [f for f, b in owner.items() if len(b) > 1]
        print(f"   flows seen on more than one backend: {len(split)}")
        sample = list(owner)[:10]
        agree = sum(sluiced_which(sluiced, config, f) in owner[f] for f in sample)
        print(f"   `sluiced which` agrees with the wire for {agree}/{len(sample)} sampled flows")

        print("== stopping sluiced; its counters:")
        lab.stop(gw)
        c = counters(gw.log_path.read_text())
        for k in sorted(c):
            if c[k]:
                print(f"   {k} {c[k]}")
    finally:
        lab.down()
        print("== lab down")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "demo"])
    ap.add_argument("--prefix", default="sl")
    ap.add_argument("--sluiced", default=str(ROOT / "target" / "release" / "sluiced"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab needs root (network namespaces, DPDK)")
    if args.command == "up":
        Lab(prefix=args.prefix).up()
    elif args.command == "down":
        Lab(prefix=args.prefix).down()
    else:
        demo(args)


if __name__ == "__main__":
    main()
