#!/usr/bin/env bash
# A/B of two sluiced binaries on one config, alternating, so that both see the same machine:
#   bench/ab.sh OLD_SLUICED NEW_SLUICED CONFIG [ROUNDS] [SECONDS]
# CONFIG is a local-mode config that bench/rate.py wrote, one per scenario
# (/run/sluice-bench/dut-SCENARIO-local.yaml after a run; both binaries must accept it). Prints each run's per-second RX rates after the first
# two (capture loading and warm-up). Needs root.
set -euo pipefail
old=$1 new=$2 cfg=$3 rounds=${4:-3} secs=${5:-12}
log=$(mktemp -d)
for r in $(seq "$rounds"); do
    for v in old new; do
        bin=$old; [ "$v" = new ] && bin=$new
        timeout -s INT "$secs" "$bin" --config "$cfg" --stats-interval 1 >"$log/$v-$r.log" 2>&1 || true
        echo "$v round $r: $(grep -o 'rx_pps=[0-9]*' "$log/$v-$r.log" | sed 's/rx_pps=//' | tail -n +3 | tr '\n' ' ')"
    done
done
rm -r "$log"
