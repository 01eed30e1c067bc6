#!/usr/bin/env bash
# The monitoring that ships with Sluice (control/monitoring/), checked without DPDK or a lab:
#   - `promtool check rules` and `promtool test rules` on the Prometheus rules (each alert's
#     cases: sluice.rules.test.yml);
#   - the Grafana dashboard is well-formed JSON: a Prometheus datasource variable that every
#     panel and target uses, unique panel ids, every panel on the 24-column grid, each target
#     with an expression and a refId of its own;
#   - every `sluice_*` metric that the rules or the dashboard name (expressions, annotations,
#     descriptions) is declared in the source (control/src, dataplane/src), so a renamed metric
#     fails here. Whether each panel returns data from a real sluiced is
#     scripts/e2e/test_monitoring.py's job.
# Exits 0 when all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=control/monitoring
if ! command -v promtool >/dev/null; then
    echo "monitoring-check: promtool not found (scripts/setup.sh installs prometheus)" >&2
    exit 2
fi
promtool check rules "$dir/sluice.rules.yml"
(cd "$dir" && promtool test rules sluice.rules.test.yml)

# Metric names declared in the source: every string literal "sluice_...".
declared=$(grep -rhoE '"sluice_[a-z0-9_]+"' control/src dataplane/src | tr -d '"' | sort -u)
DECLARED="$declared" python3 - "$dir/grafana-dashboard.json" "$dir/sluice.rules.yml" <<'EOF'
import json
import os
import re
import sys

dashboard_path, rules_path = sys.argv[1], sys.argv[2]
declared = set(os.environ["DECLARED"].split())
problems = []
# A metric name, not a recording rule (level:metric:operations) nor part of one.
METRIC = re.compile(r"(?<![\w:])sluice_[a-z0-9_]+(?![\w:])")


def names(text):
    return set(METRIC.findall(text))


with open(dashboard_path) as f:
    d = json.load(f)
for key in ("title", "uid", "panels", "templating", "schemaVersion"):
    if key not in d:
        problems.append(f"dashboard: no {key!r}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    problems.append("dashboard: no datasource variable `datasource` of Prometheus data sources")
WANT_DS = {"type": "prometheus", "uid": "${datasource}"}
ids = set()
targets = 0
for p in d.get("panels", []):
    title = p.get("title") or f"panel {p.get('id')}"
    if p.get("id") in ids:
        problems.append(f"{title}: panel id {p.get('id')} used twice")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24 or g["w"] < 1:
        problems.append(f"{title}: gridPos {g} is not on the 24-column grid")
    if p.get("type") == "row":
        continue
    if p.get("datasource") != WANT_DS:
        problems.append(f"{title}: datasource {p.get('datasource')} is not the ${{datasource}} variable")
    if not p.get("targets"):
        problems.append(f"{title}: no targets")
    refs = [t.get("refId") for t in p.get("targets", [])]
    if len(set(refs)) != len(refs) or None in refs:
        problems.append(f"{title}: refIds {refs} missing or repeated")
    for t in p.get("targets", []):
        targets += 1
        if t.get("datasource") != WANT_DS:
            problems.append(f"{title} ({t.get('refId')}): target datasource is not the ${{datasource}} variable")
        if not t.get("expr", "").strip():
            problems.append(f"{title} ({t.get('refId')}): no expr")
        if not names(t.get("expr", "")):
            problems.append(f"{title} ({t.get('refId')}): names no sluice_ metric")
        for n in names(t.get("expr", "")) - declared:
            problems.append(f"{title} ({t.get('refId')}): {n} is declared nowhere in the source")
    for n in names(p.get("description", "")) - declared:
        problems.append(f"{title}: description names {n}, declared nowhere in the source")
with open(rules_path) as f:
    for i, line in enumerate(f, 1):
        for n in names(line) - declared:
            problems.append(f"{rules_path}:{i}: {n} is declared nowhere in the source")
for p in problems:
    print(f"monitoring-check: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{dashboard_path}: {len(ids)} panels, {targets} targets, every metric declared")
EOF
echo "monitoring-check: ok"
