#!/usr/bin/env bash
# Scrapes a running sluiced's metrics endpoint and lints it with `promtool check metrics`
# (names, types, help, units), as the metrics integration test does with a test endpoint.
#   scripts/promtool-check.sh ADDRESS:PORT       (the config's `metrics.listen`)
# Exits 0 if promtool finds nothing to say.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 ADDRESS:PORT" >&2
    exit 2
fi
addr="$1"
for tool in curl promtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "promtool-check.sh: $tool not found (scripts/setup.sh installs it)" >&2
        exit 2
    fi
done

body="$(curl -fsS --max-time 10 "http://$addr/metrics")"
if ! problems="$(printf '%s\n' "$body" | promtool check metrics 2>&1)" || [ -n "$problems" ]; then
    echo "promtool check metrics on http://$addr/metrics:" >&2
    printf '%s\n' "$problems" >&2
    exit 1
fi
echo "http://$addr/metrics: $(printf '%s\n' "$body" | grep -c '^sluice_') samples, promtool check metrics clean"
