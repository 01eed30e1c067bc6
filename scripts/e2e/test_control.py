"""The control plane against a running sluiced in the lab: live config apply (sluicectl and
SIGHUP) under continuous traffic, refused configs, drain and restore, and sluicectl's views.
"""
import collections
import hashlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import VIP_A, VIP_B, access, curl, wrk
from lab_server import blob as expected_blob

ROOT = labmod.ROOT


def without_tenant_b(text):
    """lab.yaml without its last service (tenant-b-web) and with tenant A's weights 1:2."""
    head, _, _ = text.partition("  # Tenant B's server")
    assert "tenant-b-web" not in head
    return head


@pytest.fixture(scope="module")
def ctl_lab(sluiced):
    agent = Path(sluiced).parent / "sluice-agent"
    sluicectl = Path(sluiced).parent / "sluicectl"
    assert agent.exists() and sluicectl.exists(), "scripts/test.sh builds sluice-agent and sluicectl"
    lab = labmod.Lab(prefix="slc")
    lab.up()
    try:
        lab.config = lab.run_dir / "live.yaml"
        lab.config.write_text(without_tenant_b(labmod.CONFIG.read_text()))
        lab.gw = lab.start_sluiced(sluiced, lab.config)
        lab.start_agents(agent)
        lab.logs = lab.start_servers()

        def ctl(*args, socket=None):
            r = subprocess.run([str(sluicectl), "--socket", str(socket or lab.admin_socket), *map(str, args)],
                               text=True, capture_output=True, timeout=60)
            return r.returncode, r.stdout, r.stderr

        lab.ctl = ctl
        yield lab
    finally:
        lab.down()


def tcp_by_server(lab, names):
    return collections.Counter(n for name in names for n, proto, _, _, what in access(lab.logs[name])
                               if proto == "tcp" and what == "/")


def settled_generation(lab, timeout=30):
    """The config generation once every checked backend is up and it has not changed for
    longer than a backend takes to fall (3 x 0.5 s in lab.yaml)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        code, out, _ = lab.ctl("status")
        assert code == 0, out
        gen = int(next(line.split()[1] for line in out.splitlines() if line.startswith("generation ")))
        _, services, _ = lab.ctl("services")
        if gen == last and " down " not in services:
            return gen
        last = gen
        time.sleep(2)
    raise AssertionError(f"health never settled: {out}\n{services}")


def test_live_apply_under_traffic(ctl_lab):
    lab = ctl_lab
    # Health checks can republish while the lab's servers start (a backend seen down before its
    # server listens, then up): generations count from where things settled.
    gen = settled_generation(lab)
    ok, _ = curl(lab, "cli1", f"http://{VIP_B}/", timeout=2)
    assert not ok, "service B does not exist yet"

    # A long download on an established connection, and wrk's many short ones, run through
    # every apply below.
    blob = lab.run_dir / "blob"
    load = {}
    wrk_thread = threading.Thread(target=lambda: load.update(r=wrk(lab, "cli2", f"http://{VIP_A}/", connections=16,
                                                                    seconds=10)))
    # Slow the download to span the applies: curl's own rate limit.
    download = threading.Thread(target=lambda: setattr(lab, "dl", subprocess.run(
        ["ip", "netns", "exec", lab.ns("cli1"), "curl", "-sS", "--limit-rate", "2M", "-o", str(blob),
         f"http://{VIP_A}/blob"], capture_output=True, text=True, timeout=120)))
    wrk_thread.start()
    download.start()
    time.sleep(2)

    # 1. A broken config is refused with file, line and field; the running one stays.
    broken = lab.run_dir / "broken.yaml"
    broken.write_text(labmod.CONFIG.read_text().replace("port: 8080, host: 198.19.0.12, weight: 2",
                                                        "port: 8080, host: 198.19.0.12, weight: 2000"))
    code, out, err = lab.ctl("apply", broken)
    assert code == 1, (code, out, err)
    assert f"{broken}:" in err and "services[2].backends[1].weight" in err, err
    assert f"generation {gen} keeps running" in err, err
    # A change only a restart can make is refused too, naming the field.
    restart = lab.run_dir / "restart.yaml"
    restart.write_text(labmod.CONFIG.read_text().replace("capacity: 65536", "capacity: 131072"))
    code, _, err = lab.ctl("apply", restart)
    assert code == 1 and "sessions.capacity" in err and "restart" in err, err

    # 2. Add service B and change A's weights to 3:1.
    new = lab.run_dir / "new.yaml"
    new.write_text(labmod.CONFIG.read_text()
                   .replace("host: 198.19.0.11, weight: 1 }", "host: 198.19.0.11, weight: 3 }")
                   .replace("host: 198.19.0.12, weight: 2 }", "host: 198.19.0.12, weight: 1 }"))
    code, out, err = lab.ctl("apply", new)
    assert code == 0, err
    assert f"generation {gen + 1}" in out, out
    ok, body = curl(lab, "cli1", f"http://{VIP_B}/")
    assert ok and body.strip() == "b1", body

    wrk_thread.join()
    download.join()
    reqs, errors, out = load["r"]
    assert errors == 0, out
    assert reqs >= 1000, out
    assert lab.dl.returncode == 0, lab.dl.stderr
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hashlib.sha256(expected_blob()).hexdigest(), \
        "the download across the applies is intact"

    # New flows follow the new weights (3:1): of 240 requests, a1's share within 0.12 of 0.75
    # (n = 240: one sigma is 0.028).
    for name in ("a1", "a2"):
        lab.logs[name].write_text("")
    for _ in range(120):
        for cli in ("cli1", "cli2"):
            ok, body = curl(lab, cli, f"http://{VIP_A}/")
            assert ok, body
    seen = tcp_by_server(lab, ("a1", "a2"))
    assert abs(seen["a1"] / sum(seen.values()) - 0.75) < 0.12, seen

    # 3. SIGHUP re-reads the file sluiced was started with.
    lab.config.write_text(new.read_text())
    lab.gw.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline:
        code, out, _ = lab.ctl("status")
        if f"generation {gen + 2}" in out:
            break
        time.sleep(0.2)
    assert f"generation {gen + 2}" in out, out


def test_sluicectl_views_drain_and_restore(ctl_lab):
    lab = ctl_lab
    code, out, _ = lab.ctl("services")
    assert code == 0
    assert "service tenant-a-web 198.18.10.2:80" in out, out
    assert "backend 192.0.2.11:8080 host 198.19.0.12" in out, out

    # Drain a2: new flows all go to a1, and it says drained; restore: a2 takes flows again.
    code, out, err = lab.ctl("drain", "tenant-a-web", "192.0.2.11:8080")
    assert code == 0, err
    assert "drained" in lab.ctl("services")[1]
    for name in ("a1", "a2"):
        lab.logs[name].write_text("")
    for _ in range(60):
        ok, body = curl(lab, "cli1", f"http://{VIP_A}/")
        assert ok and body.strip() == "a1", body
    code, _, err = lab.ctl("restore", "tenant-a-web", "192.0.2.11:8080")
    assert code == 0, err
    for _ in range(80):
        assert curl(lab, "cli1", f"http://{VIP_A}/")[0]
    assert tcp_by_server(lab, ("a2",))["a2"] > 0

    code, _, err = lab.ctl("drain", "tenant-a-web", "192.0.2.99:8080")
    assert code == 1 and "no backend" in err, err
    code, _, err = lab.ctl("drain", "nope", "x")
    assert code == 1 and "no service" in err, err

    # Sessions: the clients' flows, filtered by service and client.
    code, out, _ = lab.ctl("sessions", "--service", "tenant-a-web", "--client", "198.18.1.10", "--limit", "5")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1].endswith("shown") and int(lines[-1].split()[0]) > 0, out
    assert all(line.startswith("tenant-a-web 198.18.1.10:") for line in lines[:-1]) and len(lines) <= 6, out

    code, out, _ = lab.ctl("counters")
    assert code == 0 and "sluice_nat_replies_total" in out

    # Nothing listening: a clear error and exit 2.
    code, _, err = lab.ctl("status", socket=lab.run_dir / "nothing.sock")
    assert code == 2 and "sluiced is not running" in err, err


def wait_for(lab, text, service_line, timeout=20):
    """Polls `sluicectl services` until the line starting with `service_line` contains `text`."""
    deadline = time.time() + timeout
    out = ""
    while time.time() < deadline:
        out = lab.ctl("services")[1]
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(service_line)), "")
        if text in line:
            return time.time()
        time.sleep(0.1)
    raise AssertionError(f"{service_line!r} never showed {text!r}:\n{out}")


def test_health_checks_take_a_dead_backend_out_and_bring_it_back(ctl_lab):
    # lab.yaml checks `web` (DSR) with HEAD / every 0.5 s, fall 3, rise 2, from the
    # appliance's kernel (mgmt0).
    lab = ctl_lab
    wait_for(lab, " up ", "backend 198.19.0.11")
    lab.stop(lab.servers["be1"])
    stopped = time.time()
    marked = wait_for(lab, " down ", "backend 198.19.0.11")
    # fall x interval = 1.5 s, plus one probe's timeout and the control loop's 50 ms; the
    # figure is reported, not asserted (tests do not assert on time).
    print(f"be1 marked down {marked - stopped:.2f} s after its server stopped")
    for name in ("be1", "be2"):
        lab.logs[name].write_text("")
    for _ in range(60):
        ok, body = curl(lab, "cli1", f"http://{labmod.VIP}/")
        assert ok and body.strip() == "be2", body
    assert tcp_by_server(lab, ("be2",))["be2"] == 60

    lab.start_server("be1")
    wait_for(lab, " up ", "backend 198.19.0.11")
    for _ in range(80):
        ok, body = curl(lab, "cli1", f"http://{labmod.VIP}/")
        assert ok, body
    assert tcp_by_server(lab, ("be1",))["be1"] > 0, "be1 takes new flows again"


def test_prometheus_scrapes_sluiced(ctl_lab, tmp_path):
    """promtool accepts the endpoint, and a real Prometheus (in the appliance's namespace,
    on loopback) scrapes it: the target is up and queries return sluiced's series."""
    import json
    import urllib.parse

    lab = ctl_lab
    for _ in range(20):
        assert curl(lab, "cli1", f"http://{VIP_A}/")[0]
    text = lab.sh("gw", "curl", "-sS", "http://127.0.0.1:9109/metrics", capture=True)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'sluice_service_packets_total{service="tenant-a-web"}' in text

    (tmp_path / "prom.yml").write_text(
        "global: { scrape_interval: 1s }\n"
        "scrape_configs:\n"
        "  - job_name: sluiced\n"
        "    static_configs: [ { targets: ['127.0.0.1:9109'] } ]\n")
    prom = lab.spawn("gw", ["prometheus", f"--config.file={tmp_path / 'prom.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'data'}", "--web.listen-address=127.0.0.1:9190"],
                     "prometheus.log")
    try:
        def query(q):
            out = lab.sh("gw", "curl", "-sS", "http://127.0.0.1:9190/api/v1/query?query=" + urllib.parse.quote(q),
                         capture=True, check=False)
            try:
                return json.loads(out)["data"]["result"]
            except (ValueError, KeyError):
                return []

        deadline = time.time() + 60
        up = served = []
        while time.time() < deadline:
            up = query('up{job="sluiced"}')
            served = query('sluice_backend_packets_total{service="tenant-a-web"}')
            if up and up[0]["value"][1] == "1" and len(served) == 2:
                break
            time.sleep(0.5)
        assert up and up[0]["value"][1] == "1", up
        assert {s["metric"]["backend"] for s in served} == {"192.0.2.10:8080", "192.0.2.11:8080"}, served
        assert sum(float(s["value"][1]) for s in served) > 0
        healthy = query('sluice_backend_healthy{service="web"}')
        assert {s["metric"]["backend"] for s in healthy} == {"198.19.0.11", "198.19.0.12"}, healthy
        gen = query("sluice_config_generation")
        assert gen and float(gen[0]["value"][1]) >= 1, gen
    finally:
        lab.stop(prom)
