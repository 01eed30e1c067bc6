#!/usr/bin/env bash
# The main job: set up, build, bring up the namespace lab, run sluiced with
# pipelines/lab-dsr.yaml, send real traffic from the client namespace through the VIPs, print
# what reached which backend, stop and remove everything. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec /usr/bin/python3 scripts/lab.py demo "$@"
