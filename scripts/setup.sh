#!/usr/bin/env bash
# Installs what Sluice needs on Debian 12 and builds it (release). Idempotent; needs root.
#   scripts/setup.sh            packages + release build
#   scripts/setup.sh --packages packages only
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (apt-get, network namespaces, DPDK)" >&2
    exit 1
fi

PACKAGES=(
    # DPDK 22.11 (shared libraries, PMDs, dpdk-testpmd) and what bindgen/cc need
    dpdk dpdk-dev libdpdk-dev libclang-dev clang pkg-config libpcap-dev
    # the namespace lab and the end-to-end tests
    iproute2 ethtool iputils-ping tcpdump hping3 curl wrk python3 python3-pytest prometheus
    # test_nat66.py floods with IPv6 SYNs it builds with scapy (hping3 has no IPv6)
    python3-scapy
    # TLS servers and certificates for the https health check's tests (openssl s_server)
    openssl
    # sluicectl watch's test runs it in a detached terminal
    tmux
    # routing daemons: BIRD 2 on the appliances and the lab's router (exception path, BGP,
    # BFD); FRR as the router in one test
    bird2 frr
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pkg-config --atleast-version=22.11 libdpdk

if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found (install Rust with rustup)" >&2
    exit 1
fi
if [ "${1:-}" != "--packages" ]; then
    echo "== cargo build --release"
    cargo build --release --workspace --bins
fi
