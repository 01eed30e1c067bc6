"""The monitoring that ships with Sluice (control/monitoring/) against a real Prometheus
scraping a real sluiced in the lab while it carries traffic: the rules file loads with every
group and rule healthy and every recording rule yields series; every panel query of the
Grafana dashboard returns data (a query naming a metric sluiced does not export returns
nothing and fails, naming the panel); nothing alerts while all is well, and
SluiceBackendDown fires for a backend whose server is killed.

The lab's config is lab.yaml with what the dashboard's panels need beside it: a `sync`
section (its peer, on the backend network, is not there: the sync families are exported and
count what is sent), limits on one service, and a DPDK file prefix of this test's own.
"""
import json
import time
import urllib.parse

import pytest

import lab as labmod
from lab import VIP, VIP_A, VIP_S, curl, udp_ask

ROOT = labmod.ROOT
MONITORING = ROOT / "control" / "monitoring"
PROM = "http://127.0.0.1:9190"
# Dashboard variables, as Grafana would fill them in: every appliance, a fixed rate window.
RATE_WINDOW = "20s"
VARIABLES = {"$__rate_interval": RATE_WINDOW, "${__rate_interval}": RATE_WINDOW, "$instance": ".*",
             "${instance}": ".*", "$__interval": "1s", "$__range": "1m"}
SYNC_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def monitoring_config(text):
    """lab.yaml with this test's DPDK file prefix, limits on tenant-a-web (high enough that
    nothing is held back) and a `sync` section."""
    text = text.replace("--file-prefix, sluice-lab,", "--file-prefix, sluice-slg,")
    assert "sluice-slg" in text
    head, sep, rest = text.partition("  - name: tenant-a-web\n")
    assert sep
    limits = "    limits: { connections_per_second: 100000, packets_per_second: { value: 1000000, when: on_overload } }\n"
    text = head + sep + limits + rest
    return text + (f"sync:\n  listen: {labmod.GW_MGMT_IP}:7946\n  peers: [{labmod.GW2_MGMT_IP}:7946]\n"
                   f"  key: {SYNC_KEY}\n")


@pytest.fixture(scope="module")
def mon_lab(sluiced, tmp_path_factory):
    lab = labmod.Lab(prefix="slg")
    lab.up()
    try:
        config = lab.run_dir / "monitoring.yaml"
        config.write_text(monitoring_config(labmod.CONFIG.read_text()))
        lab.gw = lab.start_sluiced(sluiced, config)
        lab.start_agents(sluiced.parent / "sluice-agent")
        lab.logs = lab.start_servers()
        data = tmp_path_factory.mktemp("prometheus-slg")
        (data / "prom.yml").write_text(
            "global: { scrape_interval: 1s, evaluation_interval: 1s }\n"
            f"rule_files: ['{MONITORING / 'sluice.rules.yml'}']\n"
            "scrape_configs:\n"
            "  - job_name: sluiced\n"
            "    static_configs: [ { targets: ['127.0.0.1:9109'] } ]\n")
        lab.prom = lab.spawn("gw", ["prometheus", f"--config.file={data / 'prom.yml'}",
                                    f"--storage.tsdb.path={data / 'tsdb'}", "--web.listen-address=127.0.0.1:9190"],
                             "prometheus.log")
        yield lab
    finally:
        lab.down()


def api(lab, path, **params):
    """GET Prometheus's HTTP API `path` in the appliance's namespace; the answer's `data`."""
    url = f"{PROM}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    out = lab.sh("gw", "curl", "-sS", "--max-time", "10", url, capture=True, check=False)
    try:
        answer = json.loads(out)
    except ValueError:
        return None
    assert answer.get("status") == "success", answer
    return answer["data"]


def query(lab, expr):
    data = api(lab, "query", query=expr)
    assert data is None or data["resultType"] == "vector", (expr, data)
    return [] if data is None else data["result"]


def substitute(expr):
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"a dashboard variable this test does not fill in: {expr}"
    return expr


def panel_targets():
    """(panel title, refId, expr) of every target of every panel of the dashboard."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    out = []
    for p in dashboard["panels"]:
        for child in [p] + p.get("panels", []):
            for t in child.get("targets", []):
                out.append((child["title"], t["refId"], t["expr"]))
    assert len(out) >= 20, out
    return out


class Traffic:
    """wrk through the DSR and a NAT VIP, curl through the SYN-proxied one and UDP to the DSR
    VIP's dns, in the background until stopped."""

    def __init__(self, lab):
        self.lab = lab
        self.wrks = [lab.spawn("cli1", ["wrk", "-t", "1", "-c", "4", "-d", "600s", f"http://{VIP}/"], "wrk-dsr.log"),
                     lab.spawn("cli2", ["wrk", "-t", "1", "-c", "4", "-d", "600s", f"http://{VIP_A}/"], "wrk-nat.log")]

    def more(self):
        assert curl(self.lab, "cli1", f"http://{VIP_S}/")[0]
        assert udp_ask(self.lab, "cli2", VIP, 53, "monitoring") is not None

    def stop(self):
        for p in self.wrks:
            assert p.poll() is None, p.log_path.read_text()
            self.lab.stop(p)


def wait_until(what, check, timeout, step=1.0):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        time.sleep(step)


def test_rules_load_and_every_dashboard_panel_returns_data(mon_lab):
    lab = mon_lab
    traffic = Traffic(lab)
    try:
        # Enough samples that every rate window holds several: 30 scrapes of sluiced, and
        # every backend of the traffic's services seen by it.
        for _ in range(5):
            traffic.more()
        wait_until("Prometheus up and scraping sluiced",
                   lambda: [s for s in query(lab, 'up{job="sluiced"}') if s["value"][1] == "1"], 60)
        wait_until("30 scrapes", lambda: query(lab, "count_over_time(sluice_build_info[1m]) >= 30"), 90)
        traffic.more()

        def evaluated_groups():
            groups = (api(lab, "rules") or {}).get("groups", [])
            done = all(r.get("lastEvaluation", "").startswith("20") for g in groups for r in g["rules"])
            return groups if groups and done else None

        groups = wait_until("every rule evaluated", evaluated_groups, 30)
        assert {g["name"] for g in groups} == {"sluice.recording", "sluice.alerts"}, groups
        bad = [(g["name"], r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"]
               if r["health"] != "ok"]
        assert not bad, bad
        recorded = [r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"]
        assert len(recorded) >= 8, recorded
        empty_rules = [name for name in recorded if not query(lab, name)]
        assert not empty_rules, f"recording rules with no series: {empty_rules}"

        traffic.more()
        empty = []
        for title, ref, expr in panel_targets():
            result = query(lab, substitute(expr))
            print(f"{title} ({ref}): {len(result)} series")
            if not result:
                empty.append(f"{title!r} ({ref}): {expr}")
        assert not empty, "dashboard panels without data:\n" + "\n".join(empty)

        # The traffic is there, not only the series: packets toward both services carrying it.
        rates = {s["metric"]["service"]: float(s["value"][1]) for s in query(
            lab, f"sum by (service) (rate(sluice_service_packets_total[{RATE_WINDOW}]))")}
        assert rates.get("web", 0) > 0 and rates.get("tenant-a-web", 0) > 0, rates

        # Nothing alerts while every backend is up and the traffic flows.
        firing = query(lab, 'ALERTS{alertstate="firing"}')
        assert not firing, [s["metric"] for s in firing]
    finally:
        traffic.stop()


def test_backend_down_alert_fires(mon_lab):
    """be1's server killed: its health checks fail and SluiceBackendDown fires for it (and
    only it) once the rule's `for` has passed; back up, it resolves."""
    lab = mon_lab
    wait_until("Prometheus scraping", lambda: query(lab, 'up{job="sluiced"} == 1'), 60)
    assert not query(lab, 'ALERTS{alertname="SluiceBackendDown"}')
    lab.stop(lab.servers["be1"])
    try:
        firing = wait_until(
            "SluiceBackendDown firing",
            lambda: query(lab, 'ALERTS{alertname="SluiceBackendDown",alertstate="firing"}'), 120)
        assert {(s["metric"]["service"], s["metric"]["backend"]) for s in firing} == {("web", "198.19.0.11")}, firing
    finally:
        lab.start_server("be1")
    wait_until("SluiceBackendDown resolved",
               lambda: not query(lab, 'ALERTS{alertname="SluiceBackendDown"}'), 60)
