"""The exception path and a real routing daemon: BIRD 2 on the appliance peers (BGP with BFD)
with BIRD 2 on the lab's router through sluiced's kernel interface for its `ext` port, and the
router reaches the VIPs by the routes it learned; no static route to a VIP anywhere.

The first test gives BIRD a static VIP (the path alone); the second has sluiced decide what
is announced (`routing`): a VIP while it has a backend, every VIP withdrawn when the data
path stops (frozen or killed), and before a clean stop."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from lab import CONFIG, GW_EXT_IP, RTR_EXT_IP, VIP, VIP_A, VIP_B, VIP_S, curl, metrics

APPLIANCE_AS, ROUTER_AS = 65001, 65000
KERNEL_IF = "ext0"


def with_exception_path(text):
    """lab.yaml with a kernel interface on `ext`."""
    old = "    device: net_af_packet0\n"
    assert old in text
    return text.replace(old, old + f"    kernel: {KERNEL_IF}\n", 1)


def appliance_bird(vips=(), include=None):
    routes = "".join(f"  route {v}/32 blackhole;\n" for v in vips)
    if include:
        routes += f'  include "{include}";\n'
    return f"""router id {GW_EXT_IP};
log stderr all;
protocol device {{ scan time 10; }}
protocol static vips {{
  ipv4;
{routes}}}
protocol bfd {{ interface "{KERNEL_IF}" {{ interval 100 ms; multiplier 3; }}; }}
protocol bgp upstream {{
  local {GW_EXT_IP} as {APPLIANCE_AS};
  neighbor {RTR_EXT_IP} as {ROUTER_AS};
  bfd on;
  error wait time 2, 30;
  ipv4 {{ import none; export where proto = "vips"; }};
}}
"""


ROUTER_BIRD = f"""router id {RTR_EXT_IP};
log stderr all;
protocol device {{ scan time 10; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol bfd {{ interface "r-gw" {{ interval 100 ms; multiplier 3; }}; }}
protocol bgp appliance1 {{
  local {RTR_EXT_IP} as {ROUTER_AS};
  neighbor {GW_EXT_IP} as {APPLIANCE_AS};
  bfd on;
  error wait time 2, 30;
  ipv4 {{ import all; export none; }};
}}
"""


def wait(what, check, timeout=30, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def learned(lab, vip=VIP):
    """The router's kernel route to `vip`, if BIRD installed one."""
    out = lab.sh("rtr", "ip", "route", "show", f"{vip}/32", capture=True)
    return out if "proto bird" in out else ""


def test_bgp_and_bfd_through_the_exception_path(lab, sluiced):
    # No static route to the VIPs: the router learns them or cannot reach them.
    lab.sh("rtr", "ip", "route", "del", "198.18.10.0/24")
    config = lab.run_dir / "routing.yaml"
    config.write_text(with_exception_path(CONFIG.read_text()))
    gw = lab.start_sluiced(sluiced, config)
    lab.kernel_port("gw", KERNEL_IF, f"{GW_EXT_IP}/24")
    lab.start_agents(Path(sluiced).parent / "sluice-agent")
    lab.start_servers()
    rtr_bird = lab.start_bird("rtr", ROUTER_BIRD)
    gw_bird = lab.start_bird("gw", appliance_bird(vips=[VIP]))

    # The session and BFD come up through sluiced; the router installs the VIP via the port.
    wait("BGP established", lambda: "Established" in lab.birdc("rtr", "show", "protocols", "all", "appliance1"))
    route = wait("the router's route to the VIP", lambda: learned(lab))
    assert f"via {GW_EXT_IP} dev r-gw" in route, route
    bfd = wait("BFD up", lambda: re.search(rf"{GW_EXT_IP}\s+r-gw\s+Up", lab.birdc("rtr", "show", "bfd", "sessions")))
    assert bfd

    # The router reaches the appliance's kernel (ARP and ping answered by it, not by sluiced)
    # and clients reach the VIP over the learned route.
    out = lab.sh("rtr", "ping", "-c", "2", "-i", "0.2", "-W", "2", GW_EXT_IP, capture=True, check=False)
    assert "2 received" in out, out
    ok, body = curl(lab, "cli1", f"http://{VIP}/")
    assert ok, body
    m = metrics(lab)
    assert m["sluice_exception_to_kernel_total"] > 0 and m["sluice_exception_from_kernel_total"] > 0, m
    assert m.get('sluice_drops_total{reason="kernel_limited"}', 0) == 0

    # Withdrawn by BIRD (the VIP gone from its include): gone from the router's FIB.
    lab.birdc("gw", "disable", "vips")
    wait("the route withdrawn", lambda: not learned(lab), timeout=5)
    lab.birdc("gw", "enable", "vips")
    wait("the route back", lambda: learned(lab), timeout=10)

    # A wedged appliance daemon (SIGSTOP: its TCP session stays open) is dropped by BFD,
    # whose packets went through sluiced, well inside the BGP hold time.
    t0 = time.time()
    gw_bird.send_signal(signal.SIGSTOP)
    try:
        wait("BFD to drop the route", lambda: not learned(lab), timeout=5, step=0.02)
        took = time.time() - t0
    finally:
        gw_bird.send_signal(signal.SIGCONT)
    print(f"BFD withdrew the frozen appliance's route in {took * 1000:.0f} ms")
    assert took < 2.0, took
    wait("the route back after BIRD thawed", lambda: learned(lab), timeout=30)

    for p in (gw_bird, rtr_bird):
        lab.stop(p)
    assert lab.stop(gw) == 0


def routing_config(lab):
    """lab.yaml with the exception path and `routing` through the appliance's BIRD."""
    include = lab.run_dir / "vips-gw.conf"
    include.write_text("")
    text = with_exception_path(CONFIG.read_text()) + f"""routing:
  bird: {{ socket: {lab.run_dir / "bird-gw.ctl"}, include: {include} }}
  heartbeat: 0.5
"""
    config = lab.run_dir / "announce.yaml"
    config.write_text(text)
    return config, include


def test_sluiced_decides_what_is_announced(lab, sluiced):
    lab.sh("rtr", "ip", "route", "del", "198.18.10.0/24")
    config, include = routing_config(lab)
    sluicectl = Path(sluiced).parent / "sluicectl"
    gw = lab.start_sluiced(sluiced, config)
    lab.kernel_port("gw", KERNEL_IF, f"{GW_EXT_IP}/24")
    lab.start_agents(Path(sluiced).parent / "sluice-agent")
    lab.start_servers()
    lab.start_bird("rtr", ROUTER_BIRD)
    lab.start_bird("gw", appliance_bird(include=include))

    # Every VIP with a backend that takes flows: announced by sluiced through BIRD.
    vips = [VIP, VIP_A, VIP_B, VIP_S]
    for v in vips:
        route = wait(f"the router's route to {v}", lambda: learned(lab, v))
        assert f"via {GW_EXT_IP} dev r-gw" in route, route
    assert f"route {VIP_B}/32 blackhole;" in include.read_text()
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
    wait("VIP B withdrawn", lambda: not learned(lab, VIP_B), timeout=10)
    assert all(learned(lab, v) for v in (VIP, VIP_A, VIP_S))
    assert f"{VIP_B} withdrawn (no_backend)" in ctl("status")
    ctl("restore", "tenant-b-web", "192.0.2.10:8080")
    wait("VIP B back", lambda: learned(lab, VIP_B), timeout=10)
    assert f"{VIP_B} announced" in ctl("status")

    # sluiced frozen (its workers with it): BFD, which runs through them, drops every route.
    t0 = time.time()
    os.kill(gw.pid, signal.SIGSTOP)
    try:
        wait("every route gone with sluiced frozen", lambda: not any(learned(lab, v) for v in vips), timeout=5,
             step=0.02)
        took = time.time() - t0
    finally:
        os.kill(gw.pid, signal.SIGCONT)
    print(f"a frozen sluiced: routes withdrawn in {took * 1000:.0f} ms")
    assert took < 2.0, took
    for v in vips:
        wait(f"{v} back after sluiced thawed", lambda: learned(lab, v), timeout=30)

    # A clean stop withdraws first: no route left once sluiced has exited.
    assert lab.stop(gw) == 0
    assert not any(learned(lab, v) for v in vips)
    assert include.read_text().count("route ") == 0, include.read_text()
