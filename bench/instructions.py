#!/usr/bin/env python3
"""Instructions per established packet, by function, inlined ones included.

    bench/instructions.py                 # the table, functions of sluice's crates
    bench/instructions.py --lines finish  # what inside `finish` costs, line by line
    bench/instructions.py --mode ipv6     # IPv6 clients to an IPv6 VIP over the IPv4 underlay
    bench/instructions.py --new-flows     # per new-flow packet instead (session made)

Runs `worker_loop` (bench/examples) under callgrind twice, for 1.1 M and 2.1 M packets. The
example walks 1 M flows, so the second million packets are all of established flows, and the
difference of the two runs is their cost with set-up cancelled out. With `--new-flows` the runs
are of 100 K and 200 K packets, all of flows not seen before (each makes its session), and
the figure is per new-flow packet. callgrind counts
instructions per address (`--dump-instr=yes`); `addr2line -i` gives each address's chain of
inlined functions, so a function's figure here is inclusive: every instruction inlined into it
counts, wherever the compiler put it. (callgrind's own per-function figures cannot say this: in
an optimised build, most of the worker's functions are inlined into one.)

Counts are of this build and exact; they do not depend on what else the machine is doing.
"""
import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "target/release/examples/worker_loop"
SMALL, LARGE = 1_100_000, 2_100_000
# Both under the walk's 1 M flows: every packet a new flow.
NEW_SMALL, NEW_LARGE = 100_000, 200_000
MODES = ["", "isolation", "too-big", "fragment", "ipv6", "ipv6-underlay", "baseline", "ipv6-baseline"]


def callgrind(packets: int, out: Path, mode: str) -> None:
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--dump-line=no",
         f"--callgrind-out-file={out}", str(EXAMPLE), str(packets)] + ([mode] if mode else []),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def costs(path: Path, binary: str) -> collections.Counter:
    """Exclusive instruction counts per address, for addresses inside `binary`."""
    names, cost = {}, collections.Counter()
    current, addr, skip_next = None, 0, False
    for line in path.read_text().splitlines():
        m = re.match(r"c?ob=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                current = names.get(m.group(1))
            continue
        if line.startswith("calls="):
            skip_next = True  # the next cost line is the call's inclusive cost
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        fields = line.split()
        pos = fields[0]
        if pos.startswith("0x"):
            addr = int(pos, 16)
        elif pos[0] in "+-":
            addr += int(pos)
        if skip_next:
            skip_next = False
            continue
        if current and current.endswith(binary) and len(fields) > 1:
            cost[addr] += int(fields[1])
    return cost


def inline_chains(binary: Path, addrs):
    """addr -> [(function, file:line)], innermost first."""
    out = subprocess.run(["addr2line", "-a", "-i", "-f", "-C", "-e", str(binary)] + [hex(a) for a in addrs],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    chains, cur, i = {}, None, 0
    while i < len(out):
        if out[i].startswith("0x"):
            cur = int(out[i], 16)
            chains[cur] = []
            i += 1
        elif cur is not None and i + 1 < len(out):
            fn = re.sub(r"::h[0-9a-f]{16}$", "", out[i])
            chains[cur].append((fn, out[i + 1].rsplit("/", 1)[-1]))
            i += 2
        else:
            i += 1
    return chains


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", metavar="FUNCTION",
                    help="break FUNCTION (a substring of its name) down by its source lines")
    ap.add_argument("--match", default="sluice", help="list functions whose name contains this")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--mode", default="", choices=MODES,
                    help="worker_loop's scenario: established packets with limits (isolation), "
                         "1500-byte ones too big for the tunnel with DF (too-big) or without (fragment), "
                         "IPv6 clients to an IPv6 VIP over the IPv4 underlay (ipv6) or the IPv6 one "
                         "(ipv6-underlay); the example's own share, packets made and moved only "
                         "(baseline, ipv6-baseline)")
    ap.add_argument("--new-flows", action="store_true",
                    help="per packet of a new flow (runs of 100 K and 200 K packets) instead of an "
                         "established one")
    a = ap.parse_args()
    small_n, large_n = (NEW_SMALL, NEW_LARGE) if a.new_flows else (SMALL, LARGE)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice-bench", "--example", "worker_loop"],
                       check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp, "small"), Path(tmp, "large")
        callgrind(small_n, small, a.mode)
        callgrind(large_n, large, a.mode)
        c_small, c_large = costs(small, EXAMPLE.name), costs(large, EXAMPLE.name)
    diff = {a: c_large[a] - c_small.get(a, 0) for a in c_large}
    diff = {a: v for a, v in diff.items() if v > 0}
    chains = inline_chains(EXAMPLE, sorted(diff))
    scale = large_n - small_n  # packets in the difference, all established (or all new flows)
    total = sum(diff.values()) / scale
    kind = "new-flow" if a.new_flows else "established"
    what = f"{a.mode} {kind} packet" if a.mode else f"{kind} packet"
    print(f"worker_loop{' ' + a.mode if a.mode else ''}, {EXAMPLE.name}: {total:.0f} instructions per {what} "
          f"(this binary's own; libc's memcpy not included)")
    if a.lines:
        rows = collections.Counter()
        for addr, v in diff.items():
            for fn, loc in chains.get(addr, []):
                if a.lines in fn:
                    rows[loc] += v
                    break
        print(f"inside {a.lines}: {sum(rows.values()) / scale:.0f}")
        for loc, v in rows.most_common(a.top):
            print(f"{v / scale:7.1f}  {loc}")
        return 0
    inclusive = collections.Counter()
    for addr, v in diff.items():
        seen = set()
        for fn, _ in chains.get(addr, []):
            if fn not in seen:
                seen.add(fn)
                inclusive[fn] += v
    shown = 0
    for fn, v in inclusive.most_common():
        if a.match in fn and shown < a.top:
            print(f"{v / scale:7.1f}  {fn}")
            shown += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
