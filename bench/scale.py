#!/usr/bin/env python3
"""A pipeline config with many services, for the control plane's scale figures
(docs/performance.md, "Control plane at scale").

    bench/scale.py 10000 > /tmp/s10k.yaml              # 10,000 services of 2-8 backends
    bench/scale.py 10000 --change 1 > /tmp/s10k-b.yaml  # the same, service 0's weights changed
    bench/scale.py 50000 --backends 1 > /tmp/s50k.yaml  # backend ids in all: at most 65,536

Service i has 2 + i % 7 backends (2 to 8; `--backends N`: N each), drawn from a pool of
4,000 hosts on the `int` port's /16 (so at most 4,000 next hops), weight 1. VIPs are 8
services (ports 80-87) each. `--change K` gives service K-1's first backend weight 2: an apply
from one file to the other changes one service's Maglev table. Addresses are from
198.18.0.0/15 and exist nowhere; `sluiced check` and the `apply_scale` example read them.
"""
import argparse

HOSTS = 4000


def host(h):
    return f"198.19.{1 + h // 250}.{1 + h % 250}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("services", type=int)
    p.add_argument("--backends", type=int, help="backends per service (default 2 + i % 7)")
    p.add_argument("--change", type=int, default=0, help="change service K-1's first weight")
    p.add_argument("--budget", default="16GiB", help="budget.memory")
    a = p.parse_args()
    out = [
        "ports:",
        "  - { name: ext, device: net_null0, address: 198.18.0.1/24, gateway: 198.18.0.254 }",
        "  - { name: int, device: net_null1, address: 198.19.0.1/16, mtu: 9000 }",
        f"budget: {{ memory: {a.budget} }}",
        "services:",
    ]
    for i in range(a.services):
        v = i // 8
        vip = f"198.18.{10 + v // 250}.{1 + v % 250}"
        n = a.backends or 2 + i % 7
        bs = []
        for k in range(n):
            w = 2 if (k == 0 and i == a.change - 1) else 1
            bs.append(f"{{ address: {host((i * 7 + k * 577) % HOSTS)}, weight: {w} }}")
        out.append(f"  - {{ name: s{i}, vip: {vip}, port: {80 + i % 8}, protocol: tcp, "
                   f"backends: [{', '.join(bs)}] }}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
