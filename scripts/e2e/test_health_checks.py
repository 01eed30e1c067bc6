"""Health check types against real servers in the lab, probed from the appliance's kernel
(mgmt0): an `https` check verifying the certificate of `openssl s_server -www` on each backend
host (a CA the test makes, the name web.test), and a `udp` check of the lab's UDP responder
(lab_server.py, which answers "beN:" and the question). Each backend is up; its server
stopped, it is marked down with the reason, one log line and `sluice_backend_healthy` 0;
restarted, it is up again with one more log line.
"""
import subprocess
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import VIP, backend_ip, metrics

INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 3
# A change is due after FALL (or RISE) probes; waits allow ten times that and more, so only a
# check that never changes fails.
CHANGE_BOUND = 10 * (max(RISE, FALL) * INTERVAL + TIMEOUT) + 10
BE1 = backend_ip(1)


def make_certificates(d):
    """A CA and a certificate for web.test that it signs, in directory `d`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sluice lab CA"],
        ["req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=web.test"],
        ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "srv.pem", "-days", "2", "-extfile", "ext"],
    ]
    (d / "ext").write_text("subjectAltName=DNS:web.test\n")
    for args in steps:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)


def config(ca):
    """lab.yaml's appliance (with a DPDK file prefix of this test's own) and three services:
    lab.yaml's `web` with its `http` check (HEAD /, Host: the VIP), an HTTPS one checked with
    verification against `ca`, and the DSR UDP one checked by UDP."""
    head, sep, _ = labmod.CONFIG.read_text().partition("\nservices:\n")
    assert sep and "--file-prefix, sluice-lab," in head
    head = head.replace("--file-prefix, sluice-lab,", "--file-prefix, sluice-slw,")
    timing = f"interval: {INTERVAL}, timeout: {TIMEOUT}, rise: {RISE}, fall: {FALL}"
    backends = f"      - {{ address: {backend_ip(1)} }}\n      - {{ address: {backend_ip(2)} }}\n"
    return (head + sep
            + f"  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    forwarding: dsr\n"
            + f"    tunnel: ipip\n    health: {{ type: http, {timing} }}\n"
            + "    backends:\n" + backends
            + f"  - name: webs\n    vip: {VIP}\n    port: 443\n    protocol: tcp\n    forwarding: dsr\n"
            + "    tunnel: ipip\n"
            + "    health: { type: https, method: get, host: web.test, path: /, body: s_server,\n"
            + f"              ca: {ca}, {timing} }}\n"
            + "    backends:\n" + backends
            + f"  - name: dns\n    vip: {VIP}\n    port: 53\n    protocol: udp\n    forwarding: dsr\n"
            + "    tunnel: gre\n"
            + f"    health: {{ type: udp, send: ping, expect: ':ping', {timing} }}\n"
            + "    backends:\n" + backends)


@pytest.fixture(scope="module")
def hc_lab(sluiced):
    sluicectl = Path(sluiced).parent / "sluicectl"
    assert sluicectl.exists(), "scripts/test.sh builds sluicectl"
    lab = labmod.Lab(prefix="slw")
    lab.up()
    try:
        make_certificates(lab.run_dir)
        lab.config = lab.run_dir / "health.yaml"
        lab.config.write_text(config(lab.run_dir / "ca.pem"))
        # The servers first: the backends start up and stay so until a server stops.
        lab.start_servers()
        lab.tls = {i: start_tls(lab, i) for i in (1, 2)}
        lab.gw = lab.start_sluiced(sluiced, lab.config)

        def ctl(*args):
            r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), *map(str, args)],
                               text=True, capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return r.stdout

        lab.ctl = ctl
        yield lab
    finally:
        lab.down()


def start_tls(lab, i):
    """`openssl s_server -www` on backend host i, port 443, with the web.test certificate."""
    p = lab.spawn(f"be{i}", ["openssl", "s_server", "-4", "-accept", "443", "-www",
                             "-cert", str(lab.run_dir / "srv.pem"), "-key", str(lab.run_dir / "srv.key")],
                  f"tls-be{i}.log")
    lab.wait_for_log(p, "ACCEPT")
    return p


def backend_line(out, service, backend):
    """The `backend` line of `backend` under `service` in `sluicectl services`."""
    current = None
    for line in out.splitlines():
        if line.startswith("service "):
            current = line.split()[1]
        elif current == service and line.strip().startswith(f"backend {backend} "):
            return line.strip()
    raise AssertionError(f"no backend {backend} under {service}:\n{out}")


def wait_for(lab, service, backend, state):
    """Polls until `backend` of `service` is `state` ("up" or "down"); returns the reasons of
    the check seen on the way and the line at the end."""
    deadline = time.time() + CHANGE_BOUND
    reasons, line = set(), ""
    while time.time() < deadline:
        line = backend_line(lab.ctl("services"), service, backend)
        reasons.add(line.split(" check: ", 1)[-1])
        if f" {state} sessions " in line:
            return reasons, line
        time.sleep(0.1)
    raise AssertionError(f"{service} {backend} never {state}: {line}")


def healthy(lab, service, backend):
    return metrics(lab)[f'sluice_backend_healthy{{service="{service}",backend="{backend}"}}']


def changes(lab, service, backend):
    """sluiced's log lines of `backend` of `service` changing standing."""
    log = lab.gw.log_path.read_text(errors="replace")
    return [ln for ln in log.splitlines() if f"health: {service} {backend} is " in ln]


def test_http_check_of_the_lab_server_passes(hc_lab):
    for i in (1, 2):
        _, line = wait_for(hc_lab, "web", backend_ip(i), "up")
        assert line.endswith("check: ok"), line
    assert changes(hc_lab, "web", BE1) == []


def test_https_check_follows_its_tls_server(hc_lab):
    lab = hc_lab
    for i in (1, 2):
        _, line = wait_for(lab, "webs", backend_ip(i), "up")
        assert line.endswith("check: ok"), line
    assert changes(lab, "webs", BE1) == []

    lab.stop(lab.tls[1])
    reasons, line = wait_for(lab, "webs", BE1, "down")
    print(line)
    assert "Connection refused" in line, line
    assert healthy(lab, "webs", BE1) == 0 and healthy(lab, "webs", backend_ip(2)) == 1
    assert " up " in backend_line(lab.ctl("services"), "webs", backend_ip(2)), "be2 is untouched"
    assert " up " in backend_line(lab.ctl("services"), "dns", BE1), "the UDP check is another check"
    down = changes(lab, "webs", BE1)
    assert len(down) == 1 and "is down: Connection refused" in down[0], down

    lab.tls[1] = start_tls(lab, 1)
    _, line = wait_for(lab, "webs", BE1, "up")
    assert line.endswith("check: ok"), line
    assert healthy(lab, "webs", BE1) == 1
    assert [ln.split("health: ", 1)[1] for ln in changes(lab, "webs", BE1)][1:] == [f"webs {BE1} is up"]


def test_udp_check_follows_the_lab_udp_server(hc_lab):
    lab = hc_lab
    for i in (1, 2):
        _, line = wait_for(lab, "dns", backend_ip(i), "up")
        assert line.endswith("check: ok"), line

    lab.stop(lab.servers["be1"])
    reasons, line = wait_for(lab, "dns", BE1, "down")
    print(line, reasons)
    # The stopped server's host answers ICMP port unreachable (the kernel rate-limits those,
    # so a probe may hear nothing instead).
    assert "refused (ICMP port unreachable)" in reasons, reasons
    assert reasons <= {"ok", "refused (ICMP port unreachable)", f"no reply within {int(TIMEOUT * 1000)}ms"}, reasons
    assert healthy(lab, "dns", BE1) == 0 and healthy(lab, "dns", backend_ip(2)) == 1
    assert " up " in backend_line(lab.ctl("services"), "webs", BE1), "the TLS server still runs"
    assert len(changes(lab, "dns", BE1)) == 1

    lab.start_server("be1")
    _, line = wait_for(lab, "dns", BE1, "up")
    assert line.endswith("check: ok"), line
    assert healthy(lab, "dns", BE1) == 1
    assert len(changes(lab, "dns", BE1)) == 2
