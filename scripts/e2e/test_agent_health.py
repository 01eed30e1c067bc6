"""Health checks run by the host agents (`health: { by: agent }`), end to end in the lab (prefix
sla, DPDK file prefix sluice-sla): sluiced assigns each backend host's sluice-agent its
backends over the management path (sealed UDP), the agents probe them by TCP, a VPC's
backends from inside that tenant's VM namespace, and report back, sealed.

1. Tenant A's VM a1 and tenant B's VM b1 share 192.0.2.10 on host 1. a1's server stops: A's
   backend goes down within the fall bound (reported by agent 198.19.0.11), B's 192.0.2.10
   stays up and serves; A's VIP sends its new flows to a2 only. a1's server restarts: up, and
   it takes new flows again.
2. Host 2's agent is killed: its backends (the DSR `web` backend and A's 192.0.2.11) go down
   for want of reports ("agent 198.19.0.12: no report"); restarted, they come back up.
3. A forged report (wrong key) and a replayed genuine one (captured from the wire while a1
   was down) change nothing, and are counted by reason.
4. Host 1's tunnel path is cut while its management path works (the backend network's bridge
   isolates sluiced's DPDK port from host 1's: neither tunneled packets nor the tunnel-path
   probes reach the agent, while sluiced's kernel, on another bridge port, still exchanges
   assignments and reports with it): all three of host 1's backends go down as "tunnel probe
   unanswered" although the agent keeps reporting its VMs up; host 2's stay up. Repaired,
   they come back up.
"""
import hashlib
import hmac
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import GW_MGMT_IP, VIP, VIP_A, VIP_B, backend_ip, curl, metrics, read_pcap

INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 3
REPORT_PORT, AGENT_PORT = 7946, 7947
# A down VM is seen by the agent's next probe (up to an interval late), reported at the
# appliance's next round (up to another), and counted over FALL rounds: (FALL + 2) x INTERVAL
# at most; the slack covers sluicectl's polling on a 2-core machine.
FALL_BOUND = (FALL + 2) * INTERVAL + TIMEOUT + 1.0
CHANGE_BOUND = 10 * (max(RISE, FALL) * INTERVAL + TIMEOUT) + 10
KEY = "5a" * 32
A1 = "192.0.2.10:8080"


def config(key_file):
    head, sep, _ = labmod.CONFIG.read_text().partition("\nservices:\n")
    assert sep and "--file-prefix, sluice-lab," in head
    head = head.replace("--file-prefix, sluice-lab,", "--file-prefix, sluice-sla,")
    check = f"health: {{ type: tcp, by: agent, interval: {INTERVAL}, timeout: {TIMEOUT}, rise: {RISE}, fall: {FALL} }}"
    agents = (f"agents:\n  listen: {GW_MGMT_IP}:{REPORT_PORT}\n  port: {AGENT_PORT}\n"
              f"  key_file: {key_file}\n  window: 600\n")
    return (head.rstrip() + "\n" + agents + sep
            + f"  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    forwarding: dsr\n"
            + f"    tunnel: ipip\n    {check}\n    backends:\n"
            + f"      - {{ address: {backend_ip(1)} }}\n      - {{ address: {backend_ip(2)} }}\n"
            + f"  - name: tenant-a-web\n    vip: {VIP_A}\n    port: 80\n    protocol: tcp\n    forwarding: nat\n"
            + f"    vpc: 100\n    {check}\n    backends:\n"
            + f"      - {{ address: 192.0.2.10, port: 8080, host: {backend_ip(1)} }}\n"
            + f"      - {{ address: 192.0.2.11, port: 8080, host: {backend_ip(2)} }}\n"
            + f"  - name: tenant-b-web\n    vip: {VIP_B}\n    port: 80\n    protocol: tcp\n    forwarding: nat\n"
            + f"    vpc: 200\n    {check}\n    backends:\n"
            + f"      - {{ address: 192.0.2.10, port: 8080, host: {backend_ip(1)} }}\n")


@pytest.fixture(scope="module")
def ah_lab(sluiced):
    sluicectl = Path(sluiced).parent / "sluicectl"
    agent = Path(sluiced).parent / "sluice-agent"
    assert sluicectl.exists() and agent.exists(), "build sluice-control and sluice-agent"
    lab = labmod.Lab(prefix="sla")
    lab.up()
    try:
        key_file = lab.run_dir / "agents.key"
        key_file.write_text(KEY + "\n")
        lab.config = lab.run_dir / "agent-health.yaml"
        lab.config.write_text(config(key_file))
        lab.health = (key_file, AGENT_PORT)
        lab.agent_bin = agent
        lab.agents = lab.start_agents(agent, health=lab.health)
        lab.start_servers()
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


def backend_line(out, service, backend):
    current = None
    for line in out.splitlines():
        if line.startswith("service "):
            current = line.split()[1]
        elif current == service and line.strip().startswith(f"backend {backend} "):
            return line.strip()
    raise AssertionError(f"no backend {backend} under {service}:\n{out}")


def wait_for(lab, service, backend, state, bound=CHANGE_BOUND, watch=()):
    """Polls until `backend` of `service` is `state`; returns (seconds taken, its line). Each
    (service, backend) in `watch` must stay up meanwhile."""
    start = time.time()
    line = ""
    while time.time() < start + bound:
        out = lab.ctl("services")
        for s, b in watch:
            other = backend_line(out, s, b)
            assert " up sessions " in other, other
        line = backend_line(out, service, backend)
        if f" {state} sessions " in line:
            return time.time() - start, line
        time.sleep(0.1)
    raise AssertionError(f"{service} {backend} not {state} within {bound:.1f} s: {line}")


def served_by(lab, vip, n=12):
    """Names of the VMs that answered n new connections to `vip`."""
    names = []
    for _ in range(n):
        ok, body = curl(lab, "cli1", f"http://{vip}/")
        assert ok, body
        names.append(body.strip())
    return names


def changes(lab, service, backend):
    log = lab.gw.log_path.read_text(errors="replace")
    return [ln for ln in log.splitlines() if f"health: {service} {backend} is " in ln]


def test_all_backends_up_as_their_agents_report(ah_lab):
    lab = ah_lab
    for service, backend, agent in [("web", backend_ip(1), 1), ("web", backend_ip(2), 2),
                                    ("tenant-a-web", A1, 1), ("tenant-a-web", "192.0.2.11:8080", 2),
                                    ("tenant-b-web", A1, 1)]:
        _, line = wait_for(lab, service, backend, "up")
        deadline = time.time() + CHANGE_BOUND
        while not line.endswith(f"check: agent {backend_ip(agent)}: ok"):
            assert time.time() < deadline, line
            time.sleep(0.2)
            line = backend_line(lab.ctl("services"), service, backend)
    m = metrics(lab)
    assert m[f'sluice_agent_reports_total{{agent="{backend_ip(1)}"}}'] > 0, m


def test_a_tenants_vm_down_leaves_the_other_tenants_same_address_up(ah_lab):
    lab = ah_lab
    cap = lab.capture("gw", "mgmt0", "reports.pcap", f"udp and src port {AGENT_PORT}")
    lab.stop(lab.servers["a1"])
    took, line = wait_for(lab, "tenant-a-web", A1, "down", bound=FALL_BOUND, watch=[("tenant-b-web", A1)])
    print(f"a1 down after {took:.2f} s: {line}")
    assert f"agent {backend_ip(1)}: connect" in line, line
    lab.stop(cap)
    assert set(served_by(lab, VIP_A)) == {"a2"}, "A's new flows go to a2 only"
    assert set(served_by(lab, VIP_B, 4)) == {"b1"}, "B's 192.0.2.10 keeps serving"
    assert len(changes(lab, "tenant-a-web", A1)) == 1
    assert changes(lab, "tenant-b-web", A1) == []

    lab.start_server("a1")
    wait_for(lab, "tenant-a-web", A1, "up", watch=[("tenant-b-web", A1)])
    assert "a1" in served_by(lab, VIP_A, 20), "a1 takes new flows again"
    assert len(changes(lab, "tenant-a-web", A1)) == 2


def report_message(key, sequence, up):
    """A report of A1 in VPC 100 (as the agents send them), sealed with `key`."""
    addr = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.10")
    record = bytes([1, 1 if up else 0]) + struct.pack("!HI", 8080, 100) + addr + b"forged".ljust(64, b"\0")
    header = b"SLHC" + bytes([2, 2]) + struct.pack("!HQQQ", 1, 0xF00D, sequence, int(time.time() * 1000))
    body = header + record + bytes([0])  # no tunnel-path echoes
    return body + hmac.new(bytes.fromhex(key), body, hashlib.sha256).digest()[:16]


def captured_down_report(lab):
    """A genuine report from agent 1 that holds A1 (VPC 100) down, from the capture."""
    for frame in read_pcap(lab.run_dir / "reports.pcap"):
        ip = frame[14:]
        payload = ip[(ip[0] & 0xF) * 4 + 8:]
        for at in range(32, len(payload) - 16, 88):
            r = payload[at:at + 88]
            if r[0] == 1 and r[1] == 0 and struct.unpack("!HI", r[2:8]) == (8080, 100) and r[20:24] == bytes([192, 0, 2, 10]):
                return payload
    raise AssertionError("no report of a1 down captured")


def send_from_agent(lab, payload, times):
    """Sends `payload` to sluiced's report socket from host 1 (the agent's address), `times`
    times over more than FALL rounds."""
    code = ("import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],0))\n"
            "p=bytes.fromhex(sys.argv[4])\n"
            "for _ in range(int(sys.argv[5])):\n s.sendto(p,(sys.argv[2],int(sys.argv[3])));time.sleep(0.2)\n")
    lab.sh("be1", "python3", "-c", code, backend_ip(1), GW_MGMT_IP, str(REPORT_PORT), payload.hex(), str(times))


def refused(lab, reason):
    return metrics(lab)[f'sluice_agent_reports_refused_total{{reason="{reason}"}}']


def test_forged_and_replayed_reports_change_nothing_and_are_counted(ah_lab):
    lab = ah_lab
    wait_for(lab, "tenant-a-web", A1, "up")
    before = len(changes(lab, "tenant-a-web", A1))
    bad_tag, replayed = refused(lab, "bad_tag"), refused(lab, "replayed")
    times = int(2 * FALL * INTERVAL / 0.2) + 1
    send_from_agent(lab, report_message("a5" * 32, 1, up=False), times)
    send_from_agent(lab, captured_down_report(lab), times)
    wait_for(lab, "tenant-a-web", A1, "up", bound=1)
    assert len(changes(lab, "tenant-a-web", A1)) == before, "a forged or replayed report moved it"
    assert refused(lab, "bad_tag") == bad_tag + times
    assert refused(lab, "replayed") == replayed + times


def test_a_killed_agent_takes_its_hosts_backends_down(ah_lab):
    lab = ah_lab
    be2, a2 = backend_ip(2), "192.0.2.11:8080"
    lab.stop(lab.agents[1], signal.SIGKILL)
    for service, backend in [("web", be2), ("tenant-a-web", a2)]:
        took, line = wait_for(lab, service, backend, "down", watch=[("web", backend_ip(1))])
        print(f"{service} {backend} down after {took:.2f} s: {line}")
        assert f"agent {be2}: no report" in line, line
    lab.agents[1] = lab.start_agent(lab.agent_bin, 2, health=lab.health)
    for service, backend in [("web", be2), ("tenant-a-web", a2)]:
        _, line = wait_for(lab, service, backend, "up")
        assert f"agent {be2}" in line, line


def isolate(lab, on):
    """Bridge port isolation on the backend network between sluiced's DPDK port (sw-gw) and
    host 1 (sw-be1): isolated ports forward nothing to each other, and everything to the rest
    (sluiced's kernel on sw-mgmt, host 2, the router)."""
    for port in ("sw-gw", "sw-be1"):
        lab.sh("sw", "bridge", "link", "set", "dev", port, "isolated", "on" if on else "off")


def test_a_broken_tunnel_takes_its_hosts_backends_down_while_its_agent_reports(ah_lab):
    lab = ah_lab
    be1, be2 = backend_ip(1), backend_ip(2)
    host1 = [("web", be1), ("tenant-a-web", A1), ("tenant-b-web", A1)]
    for service, backend in host1 + [("web", be2)]:
        wait_for(lab, service, backend, "up")
    key = f'sluice_agent_reports_total{{agent="{be1}"}}'
    reports = metrics(lab)[key]
    isolate(lab, True)
    try:
        for service, backend in host1:
            took, line = wait_for(lab, service, backend, "down", watch=[("web", be2)])
            print(f"{service} {backend} down after {took:.2f} s: {line}")
            assert f"agent {be1}: tunnel probe unanswered" in line, line
        assert metrics(lab)[key] > reports, "the agent kept reporting over the management path"
    finally:
        isolate(lab, False)
    for service, backend in host1:
        _, line = wait_for(lab, service, backend, "up")
    m = metrics(lab)
    for agent in (be1, be2):
        assert m[f'sluice_agent_tunnel_echoes_total{{agent="{agent}"}}'] > 0, m
        assert m[f'sluice_agent_tunnel_probes_total{{agent="{agent}"}}'] > 0, m
