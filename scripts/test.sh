#!/usr/bin/env bash
# Sets up and runs every test: format and lint checks, unit and property tests, golden
# packets, DPDK integration tests (net_ring, net_null, net_pcap vdevs), and the end-to-end
# tests in network namespaces with real kernel TCP/IP stacks (curl, wrk, hping3), sluiced
# and sluice-agent. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== DPDK-free tools (sluicectl, sluiced check/which)"
scripts/nodpdk-check.sh
echo "== monitoring: Prometheus rules (promtool check and test), Grafana dashboard"
scripts/monitoring-check.sh
echo "== fuzz targets compile (running them: dataplane/fuzz/run.sh)"
cargo check --quiet --manifest-path dataplane/fuzz/Cargo.toml --bins
cargo check --quiet --manifest-path control/fuzz/Cargo.toml --bins
echo "== loom model checks (session table, SYN proxy hold pool)"
scripts/loom.sh
echo "== host agent smoke test (namespaces, GRE/IPIP from python raw sockets)"
SLUICE_AGENT="$PWD/target/release/sluice-agent" control/agent/tests/smoke.sh
echo "== Debian package: build, unpack, sluiced check, systemd-analyze verify, man pages"
scripts/package-check.sh
echo "== end-to-end tests (namespace lab)"
SLUICED="$PWD/target/release/sluiced" /usr/bin/python3 -m pytest -q -p no:cacheprovider scripts/e2e
echo "== all tests passed"
