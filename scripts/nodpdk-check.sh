#!/usr/bin/env bash
# The DPDK-free tools: sluice-control without its `dpdk` feature has no DPDK in its dependency
# tree, builds (into target/nodpdk, so the DPDK binaries in target/ stay), links no DPDK
# library, checks the shipped pipelines, and refuses to run one, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p sluice-control --no-default-features -e normal --prefix none)
if grep -E '^(dpdk-sys|sluice-host-sys) ' <<<"$tree"; then
    echo "nodpdk-check: sluice-control --no-default-features depends on DPDK (above)" >&2
    exit 1
fi
export CARGO_TARGET_DIR=target/nodpdk
cargo build --quiet -p sluice-control --no-default-features --bins
bin=target/nodpdk/debug
for b in sluiced sluicectl; do
    if ldd "$bin/$b" | grep -E 'librte_|libdpdk'; then
        echo "nodpdk-check: $b links DPDK (above)" >&2
        exit 1
    fi
done
for p in pipelines/*.yaml; do
    "$bin/sluiced" check "$p"
done
"$bin/sluicectl" --help >/dev/null
set +e
err=$("$bin/sluiced" --config pipelines/lab.yaml 2>&1 >/dev/null)
code=$?
set -e
want="sluiced: this sluiced was built without DPDK; only check and which are available"
if [[ $code -ne 2 || $err != "$want" ]]; then
    echo "nodpdk-check: running without DPDK: exit $code, said: $err" >&2
    exit 1
fi
echo "nodpdk-check: ok (sluiced and sluicectl without DPDK)"
