#!/usr/bin/env bash
# A/B of two sluiced binaries running at the same time, one per CPU, on copies of one
# local-mode config, so that both see the same moment of this noisy machine (the host moves
# the vCPUs and their memory about; rates taken minutes apart differ by a third):
#   bench/ab-pair.sh OLD_SLUICED NEW_SLUICED CONFIG [ROUNDS] [SECONDS]
# Each round swaps which CPU each binary gets, to cancel any difference between the CPUs.
# The pair shares the L3 and the memory bus, so absolute rates are lower than one binary's
# alone; only the two columns of one round compare. CONFIG is a local-mode config that
# bench/rate.py wrote (/run/sluice-bench/dut-SCENARIO-local.yaml); it must not listen on any
# port (metrics, sync), or the second copy cannot start. Prints, per round, each binary's
# median per-second RX rate after the first two seconds (capture loading and warm-up).
# Needs root.
set -euo pipefail
old=$1 new=$2 cfg=$3 rounds=${4:-4} secs=${5:-36}
tmp=$(mktemp -d)
trap 'rm -r "$tmp"' EXIT
# One copy of the config per CPU: its own worker and control core, its own DPDK file prefix.
for cpu in 0 1; do
    sed -e "s/^  cores: .*/  cores: [$cpu]/" -e "s/^  control_core: .*/  control_core: $cpu/" \
        -e "s/--file-prefix, [A-Za-z0-9_-]*/--file-prefix, sluice-ab-$cpu/" "$cfg" >"$tmp/cpu$cpu.yaml"
    grep -q "cores: \[$cpu\]" "$tmp/cpu$cpu.yaml" || { echo "ab-pair: no 'cores:' line in $cfg" >&2; exit 2; }
done
median() {
    grep -o 'rx_pps=[0-9]*' "$1" | sed 's/rx_pps=//' | tail -n +3 | sort -n |
        awk '{v[NR]=$1} END {if (NR) printf "%.2f", (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2) / 1e6; else printf "-"}'
}
for r in $(seq "$rounds"); do
    # Odd rounds: old on CPU 0; even rounds: old on CPU 1.
    oc=$(( (r + 1) % 2 )); nc=$(( r % 2 ))
    timeout -s INT "$secs" "$old" --config "$tmp/cpu$oc.yaml" --stats-interval 1 >"$tmp/old.log" 2>&1 &
    a=$!
    timeout -s INT "$secs" "$new" --config "$tmp/cpu$nc.yaml" --stats-interval 1 >"$tmp/new.log" 2>&1 &
    b=$!
    wait "$a" || true
    wait "$b" || true
    echo "round $r: old (cpu $oc) $(median "$tmp/old.log") Mpps, new (cpu $nc) $(median "$tmp/new.log") Mpps"
done
