#!/usr/bin/env bash
# The session region's attach time (issue 24), on tmpfs (/dev/shm) and on hugetlbfs:
#   bench/region.sh [SESSIONS ...]          (default 1 M and 16 M; needs root for hugetlbfs)
# Builds bench/examples/region_attach.rs, runs it with its files in /dev/shm, then reserves
# enough 2 MiB pages, mounts a hugetlbfs of its own, runs it there, and gives both back.
# Prints markdown tables (docs/performance.md, "Session region").
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1048576 16777216)

cargo build --quiet --release -p sluice-bench --example region_attach
bin="${CARGO_TARGET_DIR:-target}/release/examples/region_attach"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo
echo "tmpfs (/dev/shm):"
SLUICE_REGION_DIR=/dev/shm "$bin" "${counts[@]}"

# Pages for the largest region: its slots (2 x sessions, a power of two, 64 B each) + 18 MiB.
largest=$(printf '%s\n' "${counts[@]}" | sort -n | tail -1)
slots=64
while [ $slots -lt $((2 * largest)) ]; do slots=$((slots * 2)); done
pages=$(((slots * 64 / 1048576 + 18) / 2 + 1))
nr=/proc/sys/vm/nr_hugepages
before=$(cat "$nr")
mnt=$(mktemp -d /tmp/sluice-bench-huge.XXXXXX)
cleanup() {
    umount "$mnt" 2>/dev/null || true
    rmdir "$mnt"
    echo "$before" >"$nr"
}
trap cleanup EXIT
echo $((before + pages)) >"$nr"
if [ "$(cat "$nr")" -lt $((before + pages)) ]; then
    echo "region.sh: could not reserve $pages huge pages of 2 MiB" >&2
    exit 1
fi
mount -t hugetlbfs -o pagesize=2M nodev "$mnt"
echo
echo "hugetlbfs (2 MiB pages):"
SLUICE_REGION_DIR="$mnt" "$bin" "${counts[@]}"
