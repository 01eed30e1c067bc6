"""Restarts that keep connections (issue 24): sluiced's session table lives in a session
region (`sessions.region`, a file that outlives the process), so a new sluiced attaches to the old one's
sessions and forwards its connections from its first packet. The region is on a hugetlbfs
mount of 2 MiB pages that the test makes (as on a bare-metal appliance; the unit tests and
bench/examples/region_attach.rs cover /dev/shm): files there cannot be written, only mapped.

Long-lived TCP streams (a client sends a deterministic byte stream, the server echoes it; each
side checks every byte) run through four services: `dsr` to the backend hosts, `nat` to the
tenant VMs, the same behind the SYN proxy (whose sequence translation lives only in the
session), and `round_robin` (whose choice a new process would not repeat). sluiced is stopped
with SIGTERM and started again, then killed with SIGKILL and started again: every stream goes
on with no reset and no lost byte. Each outage is printed: from the old process's end to the
new one's "running" line, and the longest any stream waited for its echo (TCP retransmission
backs off, so a stream waits longer than the outage itself). Then a region of another layout
is named and replaced, and a restart on a config without one of a service's backends ends that
backend's connections only.
"""
import json
import mmap
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import VIP, VIP_A, VIP_S

PORT = labmod.ECHO_PORT
RR_PORT = 9001
SECONDS = 40
PER_SERVICE = 2


def config(region):
    """The lab's pipeline, with its session table in `region` and an echo service of each
    kind on port 9000 (round_robin on 9001, to the same VMs' 9000)."""
    vms = (f"      - {{ address: 192.0.2.10, port: {PORT}, host: 198.19.0.11 }}\n"
           f"      - {{ address: 192.0.2.11, port: {PORT}, host: 198.19.0.12 }}\n")
    nat = "    protocol: tcp\n    forwarding: nat\n    vpc: 100\n"
    services = (
        f"  - name: stream-dsr\n    vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    forwarding: dsr\n"
        f"    tunnel: ipip\n    backends:\n      - {{ address: 198.19.0.11 }}\n      - {{ address: 198.19.0.12 }}\n"
        f"  - name: stream-nat\n    vip: {VIP_A}\n    port: {PORT}\n{nat}    backends:\n{vms}"
        f"  - name: stream-proxied\n    vip: {VIP_S}\n    port: {PORT}\n{nat}    synproxy: true\n    backends:\n{vms}"
        f"  - name: stream-rr\n    vip: {VIP_A}\n    port: {RR_PORT}\n{nat}    scheduler: round_robin\n"
        f"    backends:\n{vms}")
    text = labmod.CONFIG.read_text()
    anchor = "  timeouts: { tcp_established: 300, udp: 60 }\n"
    assert anchor in text
    text = text.replace(anchor, anchor + f"  region: {{ path: {region} }}\n")
    return text + services


NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
# The lab's region (capacity 65536) takes 13 pages of 2 MiB.
HUGE_PAGES = 16


@pytest.fixture(scope="module")
def huge_dir():
    """A hugetlbfs mount of its own, with HUGE_PAGES more 2 MiB pages reserved for it; both
    given back after."""
    before = int(NR_HUGEPAGES.read_text())
    mount = Path("/run/sluice-test-restart-slk-huge")
    mount.mkdir(exist_ok=True)
    NR_HUGEPAGES.write_text(str(before + HUGE_PAGES))
    try:
        got = int(NR_HUGEPAGES.read_text())
        assert got >= before + HUGE_PAGES, f"only {got - before} of {HUGE_PAGES} huge pages could be reserved"
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mount)], check=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        NR_HUGEPAGES.write_text(str(before))
        mount.rmdir()


@pytest.fixture(scope="module")
def restart_lab(sluiced, huge_dir):
    lab = labmod.Lab(prefix="slk")
    region = huge_dir / "sessions"
    lab.up()
    try:
        lab.restart_config = lab.run_dir / "restart.yaml"
        lab.restart_config.write_text(config(region))
        lab.gw = lab.start_sluiced(sluiced, lab.restart_config)
        lab.start_agents(Path(sluiced).parent / "sluice-agent")
        lab.start_servers()
        lab.region = region
        yield lab
    finally:
        lab.down()


def retransmitted(lab):
    """TCP segments the clients' kernels have retransmitted so far."""
    total = 0
    for cli in ("cli1", "cli2"):
        out = lab.run_in(cli, ["nstat", "-az", "TcpRetransSegs"]).stdout
        total += sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("TcpRetransSegs"))
    return total


def restart(lab, sluiced, sig):
    """Ends sluiced with `sig` and starts it again on the same config; the outage in ms."""
    lab.gw.send_signal(sig)
    lab.gw.wait(timeout=30)
    gone = time.monotonic()
    old_log = lab.gw.log_path.read_text(errors="replace")
    lab.gw.log_path.rename(lab.run_dir / f"sluiced-before-{sig.name}.log")
    lab.gw = lab.start_sluiced(sluiced, lab.restart_config)
    outage = (time.monotonic() - gone) * 1000
    log = lab.gw.log_path.read_text(errors="replace")
    print(f"\n{sig.name}: sluiced back after {outage:.0f} ms; "
          + " | ".join(l.split("] ", 1)[-1] for l in log.splitlines() if "session region" in l))
    assert "attached" in log, log[-3000:]
    return outage, old_log


def test_streams_of_every_kind_survive_sigterm_and_sigkill(restart_lab, sluiced):
    lab = restart_lab
    client = Path(__file__).resolve().parent.parent / "stream_client.py"
    kinds = [("dsr", VIP, PORT), ("nat", VIP_A, PORT), ("proxied", VIP_S, PORT), ("round_robin", VIP_A, RR_PORT)]
    streams = []
    for i in range(PER_SERVICE * len(kinds)):
        kind, vip, port = kinds[i % len(kinds)]
        cli = "cli1" if i % 2 == 0 else "cli2"
        p = lab.spawn(cli, [sys.executable, str(client), "--host", vip, "--port", str(port),
                            "--seconds", str(SECONDS)], f"restart-stream-{i}.log")
        streams.append((kind, p))
    retrans0 = retransmitted(lab)
    time.sleep(8)
    outages = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        outages[sig.name], _ = restart(lab, sluiced, sig)
        taken = [l for l in lab.gw.log_path.read_text().splitlines() if "taken over" in l]
        assert taken and int(taken[0].split("session region")[1].split(": ")[1].split()[0]) >= len(streams), taken
        status = sluicectl(lab, sluiced, "status").stdout
        assert f"session region {lab.region} (layout " in status and ": attached at start, " in status, status
        time.sleep(8)
    results = []
    for kind, p in streams:
        p.wait(timeout=SECONDS + 90)
        out = p.log_path.read_text().strip().splitlines()
        results.append((kind, json.loads(out[-1]) if out else {"ok": False, "error": "no output"}))
    for kind, r in results:
        print(f"{kind}: {r.get('received')} of {r.get('sent')} bytes, longest wait {r.get('max_gap_ms')} ms, "
              f"{'ok' if r['ok'] else r['error']}")
    print(f"outages: {', '.join(f'{k} {v:.0f} ms' for k, v in outages.items())}; "
          f"{retransmitted(lab) - retrans0} TCP segments retransmitted by the clients")
    assert all(r["ok"] for _, r in results), [r for _, r in results if not r["ok"]]
    assert all(r["received"] > 100_000 for _, r in results), "every stream ran through both restarts"


def sluicectl(lab, sluiced, *args):
    r = subprocess.run([str(Path(sluiced).parent / "sluicectl"), "--socket", str(lab.admin_socket), *args],
                       text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


def upgrade_check(sluiced, config):
    """`sluiced upgrade-check CONFIG`: (exit code, what it printed)."""
    r = subprocess.run([sluiced, "upgrade-check", str(config)], text=True, capture_output=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_a_region_of_another_layout_is_named_and_replaced(restart_lab, sluiced):
    lab = restart_lab
    lab.gw.send_signal(signal.SIGTERM)
    lab.gw.wait(timeout=30)
    # What a binary of another layout left: the version field (bytes 8..12) is not ours.
    # (hugetlbfs files take no write(): through a mapping of the first page.)
    with open(lab.region, "r+b") as f, mmap.mmap(f.fileno(), 2 << 20) as m:
        m[8:12] = (999).to_bytes(4, "little")
    code, said = upgrade_check(sluiced, lab.restart_config)
    print(said)
    assert code == 1 and "layout version 999, this binary's is " in said, said
    lab.gw.log_path.rename(lab.run_dir / "sluiced-before-layout.log")
    lab.gw = lab.start_sluiced(sluiced, lab.restart_config)
    lines = [l for l in lab.gw.log_path.read_text().splitlines() if "session region" in l]
    print("\n" + "\n".join(lines))
    assert any("layout version 999, this binary's is " in l and l.endswith("; starting with no sessions") for l in lines), lines
    assert any("0 session(s) taken over" in l for l in lines), lines
    # And the new region works: a connection through it.
    r = lab.run_in("cli1", ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", f"http://{VIP_A}/"])
    assert r.stdout == "200", (r.stdout, r.stderr)


def rr_sessions(lab, sluiced):
    """stream-rr's sessions as the appliance lists them: {client port: VM address}."""
    r = sluicectl(lab, sluiced, "sessions", "--service", "stream-rr", "--limit", "100")
    on = {}
    for line in r.stdout.splitlines():
        words = line.split()
        client_port = next((w.rsplit(":", 1)[1] for w in words if w.startswith("198.18.1.")), None)
        vm = next((w.rsplit(":", 1)[0] for w in words if w.startswith("192.0.2.")), None)
        if client_port and vm:
            on[client_port] = vm
    return on


def test_a_restart_on_a_config_without_a_backend_ends_only_its_sessions(restart_lab, sluiced):
    lab = restart_lab
    client = Path(__file__).resolve().parent.parent / "stream_client.py"
    before = rr_sessions(lab, sluiced)
    # round_robin alternates: two streams on each VM.
    streams = [lab.spawn("cli1", [sys.executable, str(client), "--host", VIP_A, "--port", str(RR_PORT),
                                  "--seconds", "20"], f"removal-stream-{i}.log") for i in range(4)]
    time.sleep(3)
    # Each stream's VM, by its client port, from the sessions the appliance lists (the earlier
    # test's, still closing, left out).
    on = {port: vm for port, vm in rr_sessions(lab, sluiced).items() if port not in before}
    assert sorted(on.values()) == ["192.0.2.10", "192.0.2.10", "192.0.2.11", "192.0.2.11"], on
    # The next config: stream-rr without the VM at 192.0.2.11 (its sessions: on_backend_removed,
    # remap by default: the next packet goes to the other VM, which resets the connection).
    text = lab.restart_config.read_text()
    rr = text.index("  - name: stream-rr")
    gone = f"      - {{ address: 192.0.2.11, port: {PORT}, host: 198.19.0.12 }}\n"
    assert gone in text[rr:]
    lab.restart_config.write_text(text[:rr] + text[rr:].replace(gone, "", 1))
    # What the operator checks first: the new config keeps the region, all but that backend.
    code, said = upgrade_check(sluiced, lab.restart_config)
    print(said)
    assert code == 0 and "a restart keeps its connections" in said, said
    assert f"backend 192.0.2.11:{PORT} of service tcp {VIP_A}:{RR_PORT} (its sessions follow" in said, said
    lab.gw.send_signal(signal.SIGTERM)
    lab.gw.wait(timeout=30)
    lab.gw.log_path.rename(lab.run_dir / "sluiced-before-removal.log")
    lab.gw = lab.start_sluiced(sluiced, lab.restart_config)
    for p in streams:
        p.wait(timeout=90)
        r = json.loads(p.log_path.read_text().strip().splitlines()[-1])
        vm = on.get(str(r["local_port"]))
        print(f"stream from port {r['local_port']} on {vm}: {'ok' if r['ok'] else r['error']}")
        assert r["ok"] == (vm == "192.0.2.10"), (vm, r)
