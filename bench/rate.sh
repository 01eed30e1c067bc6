#!/usr/bin/env bash
# The packet-rate harness in one command: set up, build (release), run bench/rate.py.
# Needs root and a quiet machine: it uses CPU 0 for the generator and CPU 1 for the device
# under test. Arguments go to rate.py (e.g. --runs 5 --scenarios established).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --packages
cargo build --release -p sluice-control -p sluice-bench --bins
for mode in memif local; do /usr/bin/python3 bench/rate.py --mode "$mode" "$@"; done
