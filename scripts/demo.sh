#!/usr/bin/env bash
# The main job: set up, build, bring up the namespace lab, run sluiced with pipelines/lab.yaml
# and sluice-agent on the backend hosts, send real traffic (HTTP with curl and wrk, UDP, a 10 MB
# download) from client namespaces through DSR and NAT VIPs, print what went where, stop and
# remove everything. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec /usr/bin/python3 scripts/lab.py demo "$@"
