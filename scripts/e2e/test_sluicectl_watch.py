"""sluicectl's operator views against a running sluiced in the lab: `watch` in a detached tmux
session showing a service's rate rise while wrk runs (and `q` quitting it with exit 0), and
`stats`, `stats --rate`, `upgrade` and `-o json` of the views. Its own lab (prefix `slv`) and
DPDK file prefix, so it runs beside other labs.
"""
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import VIP_B, wrk

SERVICE = "tenant-b-web"
VIP = f"{VIP_B}:80"


@pytest.fixture(scope="module")
def watch_lab(sluiced):
    agent = Path(sluiced).parent / "sluice-agent"
    sluicectl = Path(sluiced).parent / "sluicectl"
    assert agent.exists() and sluicectl.exists(), "build sluice-agent and sluicectl beside sluiced"
    lab = labmod.Lab(prefix="slv")
    lab.up()
    try:
        config = lab.run_dir / "slv.yaml"
        text = labmod.CONFIG.read_text().replace("--file-prefix, sluice-lab,", "--file-prefix, slv-lab,")
        assert "slv-lab" in text
        config.write_text(text)
        lab.start_sluiced(sluiced, config)
        lab.start_agents(agent)
        lab.start_servers()
        lab.sluicectl = sluicectl

        def ctl(*args):
            r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), *map(str, args)],
                               text=True, capture_output=True, timeout=60)
            return r.returncode, r.stdout, r.stderr

        lab.ctl = ctl
        yield lab
    finally:
        lab.down()


class Tmux:
    """A detached tmux session on a server of this test's own (its socket `socket`), killed by
    its name; the socket file is removed after."""

    def __init__(self, name, socket, width=160, height=50):
        self.socket = socket
        self.base = ["tmux", "-S", str(socket)]
        self.name = name
        self.size = ["-x", str(width), "-y", str(height)]

    def start(self, command):
        subprocess.run([*self.base, "new-session", "-d", "-s", self.name, *self.size, command], check=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm-256color"}, timeout=10)

    def capture(self):
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", self.name], check=True, text=True,
                              capture_output=True, timeout=10).stdout

    def keys(self, *keys):
        subprocess.run([*self.base, "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def kill(self):
        subprocess.run([*self.base, "kill-session", "-t", self.name], capture_output=True, timeout=10)
        self.socket.unlink(missing_ok=True)


def shown_rate(screen):
    """The packets/s `watch` shows for the service (None: not on screen, or no rate yet).
    Its row: name, VIP, sessions, packets/s, bytes/s, connections/s."""
    for line in screen.splitlines():
        cells = line.replace("│", " ").split()
        if len(cells) >= 6 and cells[:2] == [SERVICE, VIP]:
            return int(cells[3]) if re.fullmatch(r"\d+", cells[3]) else None
    return None


def test_watch_shows_the_rate_rise_under_wrk(watch_lab):
    lab = watch_lab
    rc = lab.run_dir / "watch.rc"
    rc.unlink(missing_ok=True)
    tmux = Tmux("slv-watch", lab.run_dir / "tmux.sock")
    tmux.start(f"{lab.sluicectl} --socket {lab.admin_socket} watch; echo $? > {rc}; sleep 60")
    try:
        # Quiet first: the service is on screen with a rate near 0.
        deadline, before = time.time() + 20, None
        while before is None and time.time() < deadline:
            time.sleep(1)
            before = shown_rate(tmux.capture())
        assert before is not None, tmux.capture()
        assert before < 20, tmux.capture()

        load = {}
        t = threading.Thread(target=lambda: load.update(r=wrk(lab, "cli1", f"http://{VIP_B}/", connections=16,
                                                               seconds=8)))
        t.start()
        seen = []
        for _ in range(8):
            time.sleep(1)
            seen.append(shown_rate(tmux.capture()))
        screen = tmux.capture()
        t.join()
        reqs, errors, out = load["r"]
        print(f"watch: packets/s {before} before wrk, {seen} during ({reqs} requests in 8 s)")
        assert reqs >= 1000 and errors == 0, out
        # Each request is at least one packet toward the backend (wrk keeps its connections):
        # a clear rise above 500 packets/s.
        assert max(r or 0 for r in seen) > 500, (seen, screen)

        tmux.keys("q")
        deadline = time.time() + 10
        while not rc.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert rc.exists() and rc.read_text().strip() == "0", tmux.capture()
    finally:
        tmux.kill()


def test_stats_rate_upgrade_and_json(watch_lab):
    lab = watch_lab
    t = threading.Thread(target=lambda: wrk(lab, "cli2", f"http://{VIP_B}/", connections=8, seconds=4))
    t.start()
    time.sleep(1)
    code, out, err = lab.ctl("-o", "json", "stats", "--rate", "--interval", "2")
    t.join()
    assert code == 0, err
    rates = json.loads(out)
    assert 1900 <= rates["interval_ms"] <= 2600, rates
    svc = next(s for s in rates["services"] if s["name"] == SERVICE)
    assert svc["packets"] > 500 and svc["bytes"] > svc["packets"] * 40, svc
    assert sum(b["packets"] for b in svc["backends"]) == pytest.approx(svc["packets"], rel=0.01), svc

    code, out, _ = lab.ctl("stats")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith(f"service {SERVICE} {VIP} "))
    assert int(line.split()[4]) > 1000, line  # packets since start
    code, out, _ = lab.ctl("-o", "json", "stats")
    assert next(s for s in json.loads(out)["services"] if s["name"] == SERVICE)["connections"] >= 8

    code, out, _ = lab.ctl("upgrade")
    assert code == 0 and out.startswith("session region: none"), out
    assert "sluiced upgrade-check CONFIG" in out and "systemctl restart sluiced" in out, out

    # Every view as JSON; text unchanged beside it.
    for view, key in (("status", "generation"), ("services", "services"), ("sessions", "matched"),
                      ("counters", "counters"), ("upgrade", "procedure")):
        code, out, err = lab.ctl("-o", "json", view)
        assert code == 0 and key in json.loads(out), (view, out, err)
    code, out, _ = lab.ctl("-o", "json", "services")
    svc = next(s for s in json.loads(out)["services"] if s["name"] == SERVICE)
    assert svc["vip"] == VIP and svc["backends"][0]["state"] == "up", svc
    code, text, _ = lab.ctl("services")
    assert f"service {SERVICE} {VIP} Tcp Nat" in text, text

    # Errors: the same exit codes, and JSON on stdout too.
    code, out, err = lab.ctl("-o", "json", "drain", SERVICE, "192.0.2.99:8080")
    assert code == 1 and "error" in json.loads(out) and "no backend" in err, (out, err)
    r = subprocess.run([str(lab.sluicectl), "--socket", str(lab.run_dir / "nothing.sock"), "-o", "json", "stats"],
                       text=True, capture_output=True, timeout=30)
    assert r.returncode == 2 and "not running" in json.loads(r.stdout)["error"], r
