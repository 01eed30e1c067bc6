"""The exception path and real routing daemons: BIRD 2 on the appliance peers (BGP with BFD)
with BIRD 2 on the lab's router through sluiced's kernel interface for its `ext` port, and the
router reaches the VIPs only by the routes it learned (`Lab(bgp=True)`: no static route to a
VIP anywhere).

The first test gives BIRD a static VIP (the path alone); the others have sluiced decide what
is announced (`routing`, with the BIRD configuration sluiced writes from `routing.bgp`): a
VIP while it has a backend, every VIP withdrawn when the data path stops (frozen) and before
a clean stop; faults visible; with two appliances, a VIP whose backends fail their health
checks withdrawn by both, and one appliance drained under load."""
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import CONFIG, GW_EXT_IP, VIP, VIP_A, VIP_B, VIP_S, curl, metrics

# The BGP session sluiced's BIRD configuration names after the router's address.
PEER = "peer_" + labmod.RTR_EXT_IP.replace(".", "_")


@pytest.fixture
def bgp_lab():
    lab = labmod.Lab(prefix="slr", bgp=True)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def wait(what, check, timeout=30, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def test_bgp_and_bfd_through_the_exception_path(bgp_lab, sluiced):
    lab = bgp_lab
    # The exception path only: BIRD announces a static VIP, sluiced has no `routing`.
    config = lab.run_dir / "routing.yaml"
    config.write_text(lab.routing_config(CONFIG.read_text()).split("routing:\n")[0])
    gw = lab.start_sluiced(sluiced, config)
    lab.start_agents(Path(sluiced).parent / "sluice-agent")
    lab.start_servers()
    birds = lab.start_routing(["gw"], static=[VIP])

    # The session and BFD come up through sluiced; the router installs the VIP via the port.
    wait("BGP established", lambda: "Established" in lab.birdc("rtr", "show", "protocols", "all", "appliance_gw"))
    assert wait("the router's route to the VIP", lambda: lab.learned(VIP)) == [GW_EXT_IP]
    assert wait("BFD up", lambda: re.search(rf"{GW_EXT_IP}\s+r-gw\s+Up", lab.birdc("rtr", "show", "bfd", "sessions")))
    assert lab.learned(VIP_A) == [], "only what BIRD was given"

    # The router reaches the appliance's kernel (ARP and ping answered by it, not by sluiced)
    # and clients reach the VIP over the learned route.
    out = lab.sh("rtr", "ping", "-c", "2", "-i", "0.2", "-W", "2", GW_EXT_IP, capture=True, check=False)
    assert "2 received" in out and "DUP!" not in out, out
    ok, body = curl(lab, "cli1", f"http://{VIP}/")
    assert ok, body
    m = metrics(lab)
    assert m["sluice_exception_to_kernel_total"] > 0 and m["sluice_exception_from_kernel_total"] > 0, m
    assert m.get('sluice_drops_total{reason="kernel_limited"}', 0) == 0

    # Withdrawn by BIRD: gone from the router's FIB; back when announced again.
    lab.birdc("gw", "disable", "vips")
    wait("the route withdrawn", lambda: not lab.learned(VIP), timeout=5)
    lab.birdc("gw", "enable", "vips")
    wait("the route back", lambda: lab.learned(VIP), timeout=10)

    # A wedged appliance daemon (SIGSTOP: its TCP session stays open) is dropped by BFD,
    # whose packets went through sluiced, well inside the BGP hold time.
    t0 = time.time()
    birds["gw"].send_signal(signal.SIGSTOP)
    try:
        wait("BFD to drop the route", lambda: not lab.learned(VIP), timeout=5, step=0.02)
        took = time.time() - t0
        why = lab.birdc("rtr", "show", "protocols", "all", "appliance_gw")
    finally:
        birds["gw"].send_signal(signal.SIGCONT)
    print(f"BFD withdrew the frozen appliance daemon's route in {took * 1000:.0f} ms")
    assert "BFD session down" in why, why
    wait("the route back after BIRD thawed", lambda: lab.learned(VIP), timeout=30)

    # The kernel side of the exception path down: what sluiced hands it is refused and lost,
    # visible in the metrics, the status and the log; BFD then drops the route (nothing is
    # announced that the router cannot reach). Up again: back.
    lab.sh("gw", "ip", "link", "set", labmod.KERNEL_IF, "down")
    wait("the route gone with the kernel side down", lambda: not lab.learned(VIP), timeout=10)
    wait("frames the kernel refused", lambda: metrics(lab).get('sluice_drops_total{reason="kernel_refused"}', 0) > 0)
    status = subprocess.run([str(Path(sluiced).parent / "sluicectl"), "--socket", str(lab.admin_socket), "status"],
                            text=True, capture_output=True, timeout=30).stdout
    assert re.search(r"exception path: \d+ frame\(s\) to the kernel, \d+ from it; lost: [1-9]\d* \(not taken", status), status
    wait("the loss logged", lambda: "exception path: the kernel did not take" in gw.log_path.read_text(), timeout=10)
    lab.sh("gw", "ip", "link", "set", labmod.KERNEL_IF, "up")
    wait("the route back with the kernel side up", lambda: lab.learned(VIP), timeout=60)
    assert lab.stop(gw) == 0


def test_sluiced_decides_what_is_announced(bgp_lab, sluiced):
    lab = bgp_lab
    config = lab.run_dir / "announce.yaml"
    config.write_text(lab.routing_config(CONFIG.read_text()))
    include = lab.run_dir / "vips-gw.conf"
    sluicectl = Path(sluiced).parent / "sluicectl"
    gw = lab.start_sluiced(sluiced, config)
    lab.start_agents(Path(sluiced).parent / "sluice-agent")
    lab.start_servers()
    lab.start_routing(["gw"])

    # Every VIP with a backend that takes flows: announced by sluiced through BIRD.
    vips = [VIP, VIP_A, VIP_B, VIP_S]
    for v in vips:
        assert wait(f"the router's route to {v}", lambda: lab.learned(v)) == [GW_EXT_IP]
    assert f"route {VIP_B}/32 blackhole;" in include.read_text()
    route = lab.birdc("rtr", "show", "route", "all", f"{VIP_B}/32")
    assert f"BGP.community: ({labmod.APPLIANCE_AS},100)" in route, route
    ok, body = curl(lab, "cli1", f"http://{VIP_A}/")
    assert ok, body

    def ctl(*args):
        r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), *args], text=True, capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    # Tenant B's one backend drained: its VIP has nothing to offer and is withdrawn; the
    # others stay. Restored: announced again.
    ctl("drain", "tenant-b-web", "192.0.2.10:8080")
    wait("VIP B withdrawn", lambda: not lab.learned(VIP_B), timeout=10)
    assert all(lab.learned(v) for v in (VIP, VIP_A, VIP_S))
    status = ctl("status")
    assert f"{VIP_B} withdrawn (no_backend)" in status, status
    assert f"bgp {PEER} established" in status, status
    m = metrics(lab)
    assert m[f'sluice_vip_announced{{vip="{VIP_B}"}}'] == 0 and m[f'sluice_vip_announced{{vip="{VIP_A}"}}'] == 1, m
    assert m['sluice_vips_withdrawn{reason="no_backend"}'] == 1
    assert m[f'sluice_bgp_session_up{{protocol="{PEER}"}}'] == 1
    assert m['sluice_routing_updates_total{result="ok"}'] >= 2
    ctl("restore", "tenant-b-web", "192.0.2.10:8080")
    wait("VIP B back", lambda: lab.learned(VIP_B), timeout=10)
    assert f"{VIP_B} announced" in ctl("status")

    # sluiced frozen (its workers with it): BFD, which runs through them, drops every route.
    t0 = time.time()
    gw.send_signal(signal.SIGSTOP)
    try:
        wait("every route gone with sluiced frozen", lambda: not any(lab.learned(v) for v in vips), timeout=5,
             step=0.02)
        took = time.time() - t0
        why = lab.birdc("rtr", "show", "protocols", "all", "appliance_gw")
    finally:
        gw.send_signal(signal.SIGCONT)
    print(f"a frozen sluiced: routes withdrawn in {took * 1000:.0f} ms")
    assert "BFD session down" in why, why
    for v in vips:
        wait(f"{v} back after sluiced thawed", lambda: lab.learned(v), timeout=30)

    # A clean stop withdraws first: the include is empty and no route is left.
    assert lab.stop(gw) == 0
    assert include.read_text().count("route ") == 0, include.read_text()
    assert not any(lab.learned(v) for v in vips)


def test_routing_faults_are_visible_and_never_announce_what_cannot_be_reached(bgp_lab, sluiced):
    """BIRD not running yet, then peering with a router that expects another AS: sluiced says
    so in its status and metrics, retries, and the router learns nothing until it is fixed."""
    lab = bgp_lab
    config = lab.run_dir / "faults.yaml"
    config.write_text(lab.routing_config(CONFIG.read_text()))
    sluicectl = Path(sluiced).parent / "sluicectl"
    gw = lab.start_sluiced(sluiced, config)
    lab.kernel_port("gw", labmod.KERNEL_IF, f"{GW_EXT_IP}/24")

    def status():
        r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), "status"], text=True,
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    # No BIRD: every update fails, is retried, and says why.
    wait("failed updates", lambda: metrics(lab).get('sluice_routing_updates_total{result="failed"}', 0) >= 2)
    assert "last error: BIRD at" in status(), status()
    assert metrics(lab)['sluice_routing_updates_total{result="ok"}'] == 0

    # A router that expects another AS for this appliance: BGP never comes up, nothing is
    # learned, and sluiced shows the session down.
    wrong = labmod.router_bird(["gw"]).replace(f"as {labmod.APPLIANCE_AS};", f"as {labmod.APPLIANCE_AS + 7};")
    assert wrong != labmod.router_bird(["gw"])
    rtr = lab.start_bird("rtr", wrong)
    lab.start_bird("gw")   # the configuration sluiced wrote
    wait("the update taken once BIRD runs", lambda: metrics(lab).get('sluice_routing_updates_total{result="ok"}', 0) >= 1)
    wait("the session seen down", lambda: f"bgp {PEER} down" in status(), timeout=10)
    assert metrics(lab)[f'sluice_bgp_session_up{{protocol="{PEER}"}}'] == 0
    time.sleep(3)
    assert not lab.learned(VIP), "nothing learned over a session that is not up"

    # The router fixed: the session comes up and the VIPs are learned.
    lab.stop(rtr)
    lab.start_bird("rtr", labmod.router_bird(["gw"]))
    assert wait("the route once the AS is right", lambda: lab.learned(VIP), timeout=60) == [GW_EXT_IP]
    wait("the session seen up", lambda: f"bgp {PEER} established" in status(), timeout=10)
    assert lab.stop(gw) == 0


def test_an_frr_router_learns_the_vips_and_drops_a_frozen_appliance(bgp_lab, sluiced):
    """FRR (zebra, bgpd, bfdd) as the router, configured as docs/operations.md says: it learns
    what sluiced's BIRD announces, with the communities, over BGP with BFD; a frozen sluiced
    is dropped by BFD."""
    lab = bgp_lab
    config = lab.run_dir / "frr.yaml"
    config.write_text(lab.routing_config(CONFIG.read_text()))
    gw = lab.start_sluiced(sluiced, config)
    lab.start_agents(Path(sluiced).parent / "sluice-agent")
    lab.start_servers()
    frr = lab.start_frr(["gw"])
    lab.start_routing(["gw"], router=False)
    vips = [VIP, VIP_A, VIP_B, VIP_S]
    for v in vips:
        assert wait(f"FRR's route to {v}", lambda: lab.learned(v), timeout=60) == [GW_EXT_IP]
    assert re.search(r"Status: up", lab.vtysh(frr, "show bfd peers")), lab.vtysh(frr, "show bfd peers")
    route = lab.vtysh(frr, "show", "ip", "bgp", f"{VIP_B}/32")
    assert f"Community: {labmod.APPLIANCE_AS}:100" in route, route
    ok, body = curl(lab, "cli1", f"http://{VIP_A}/")
    assert ok, body

    t0 = time.time()
    gw.send_signal(signal.SIGSTOP)
    try:
        wait("every route gone with sluiced frozen", lambda: not any(lab.learned(v) for v in vips), timeout=10,
             step=0.02)
        took = time.time() - t0
        peers = lab.vtysh(frr, "show bfd peers")
    finally:
        gw.send_signal(signal.SIGCONT)
    print(f"FRR dropped the frozen appliance's routes in {took * 1000:.0f} ms")
    assert re.search(r"Status: down", peers), peers
    for v in vips:
        wait(f"{v} back after sluiced thawed", lambda: lab.learned(v), timeout=60)
    assert lab.stop(gw) == 0


# A VIP of its own whose one service is health-checked (DSR to both backend hosts).
VIP_C = "198.18.10.5"
CHECKED = f"""  - name: checked
    vip: {VIP_C}
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    health: {{ type: http, interval: 0.5, timeout: 0.4, rise: 2, fall: 3 }}
    backends:
      - {{ address: 198.19.0.11 }}
      - {{ address: 198.19.0.12 }}
"""


@pytest.fixture(scope="module")
def pair(sluiced):
    """Two appliances (the sync test's pair, plus `checked`), both on every VIP's route."""
    from failover import V4, configs
    lab = labmod.Lab(prefix="sld", appliances=2, bgp=True)
    lab.up()
    try:
        a, b = (c.replace("\ntunnel:\n", "\n" + CHECKED + "tunnel:\n", 1) for c in configs(V4))
        assert CHECKED in a and CHECKED in b
        (lab.run_dir / "a.yaml").write_text(lab.routing_config(a, "gw"))
        (lab.run_dir / "b.yaml").write_text(lab.routing_config(b, "gw2"))
        lab.a = lab.start_sluiced(sluiced, lab.run_dir / "a.yaml")
        lab.start_sluiced(sluiced, lab.run_dir / "b.yaml", gw="gw2")
        lab.start_agents(Path(sluiced).parent / "sluice-agent")
        lab.start_servers()
        lab.start_routing(["gw", "gw2"])
        lab.both = sorted([labmod.GW_EXT_IP, labmod.GW2_EXT_IP])
        for v in (VIP, VIP_A, VIP_C):
            wait(f"both appliances on {v}'s route", lambda: lab.learned(v) == lab.both, timeout=60)
        yield lab
    finally:
        lab.down()


def status_of(lab, sluiced, gw):
    sock = lab.run_dir / ("admin.sock" if gw == "gw" else f"admin-{gw}.sock")
    r = subprocess.run([str(Path(sluiced).parent / "sluicectl"), "--socket", str(sock), "status"], text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_vip_whose_backends_all_fail_their_checks_is_withdrawn_by_every_appliance(pair, sluiced):
    """Both backend hosts' servers stop: `checked`'s backends fail their health checks on
    both appliances, which withdraw its VIP; the others stay (VIP's UDP service has no
    checks, VIP_A's VMs are up). One server back: both announce it again."""
    lab = pair
    for name in ("be1", "be2"):
        lab.stop(lab.servers[name])
    t0 = time.time()
    wait("the checked VIP withdrawn by both", lambda: lab.learned(VIP_C) == [], timeout=20)
    print(f"{VIP_C} left the router's FIB {time.time() - t0:.1f} s after its servers stopped")
    assert lab.learned(VIP) == lab.both and lab.learned(VIP_A) == lab.both
    for gw in ("gw", "gw2"):
        status = status_of(lab, sluiced, gw)
        assert f"{VIP_C} withdrawn (no_backend)" in status and f"{VIP_A} announced" in status, status
        m = metrics(lab, gw)
        assert m[f'sluice_vip_announced{{vip="{VIP_C}"}}'] == 0 and m['sluice_vips_withdrawn{reason="no_backend"}'] == 1

    lab.start_server("be1")
    wait("the checked VIP back on both", lambda: lab.learned(VIP_C) == lab.both, timeout=20)
    lab.start_server("be2")
    ok, body = curl(lab, "cli1", f"http://{VIP_A}/")
    assert ok, body


def test_a_drained_appliance_leaves_under_load_without_an_error(pair, sluiced):
    """`sluicectl drain-appliance` on A while wrk runs keep-alive connections through both:
    A withdraws, the router moves A's flows to B (which picks the same backends: Maglev), A
    stops once nothing reaches it; wrk sees no error."""
    lab = pair
    load = lab.spawn("cli1", ["wrk", "-t", "2", "-c", "16", "-d", "8s", "--timeout", "5s", f"http://{VIP_A}/"],
                     "wrk.log")
    time.sleep(2)
    m = metrics(lab, "gw")
    assert m["sluice_tunneled_packets_total"] > 0, "A carried part of the load before the drain"
    r = subprocess.run([str(Path(sluiced).parent / "sluicectl"), "--socket", str(lab.admin_socket),
                        "drain-appliance"], text=True, capture_output=True, timeout=30)
    assert r.returncode == 0 and "draining" in r.stdout, r
    t0 = time.time()
    assert lab.a.wait(timeout=30) == 0
    print(f"A stopped {time.time() - t0:.2f} s after drain-appliance")
    assert lab.learned(VIP_A) == [labmod.GW2_EXT_IP]
    assert load.wait(timeout=30) == 0
    reqs, errors, out = labmod.wrk_result(load.log_path.read_text())
    print(f"wrk through the drain: {reqs} requests, {errors} errors")
    assert reqs > 100 and errors == 0, out
    assert "drained: last packet forwarded" in lab.a.log_path.read_text()
