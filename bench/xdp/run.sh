#!/usr/bin/env bash
# The exception path, TAP vs AF_XDP, measured on this machine (bench/xdp/measure.py):
# installs what is missing, builds the steering program and sluiced, runs both parts.
#   bench/xdp/run.sh [measure.py arguments...]      e.g. --rounds 7 --out /tmp/xdp.md
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

need=()
command -v clang >/dev/null || need+=(clang llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -e /usr/include/xdp/libxdp.h ] || need+=(libxdp-dev)
command -v bird >/dev/null || need+=(bird2)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v dpdk-testpmd >/dev/null || need+=(dpdk dpdk-dev libdpdk-dev)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

obj="$here/steer.bpf.o"
clang -O2 -g -Wall -target bpf -I/usr/include/"$(uname -m)"-linux-gnu \
    -c "$here/steer.bpf.c" -o "$obj"

# sluiced for the exception part (the TAP side); built in this checkout.
(cd "$root" && cargo build --release -q -p sluice-control)

exec python3 "$here/measure.py" --obj "$obj" --sluiced "$root/target/release/sluiced" "$@"
