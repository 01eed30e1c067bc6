"""The exception path and a real routing daemon: BIRD 2 on the appliance peers (BGP with BFD)
with BIRD 2 on the lab's router through sluiced's kernel interface for its `ext` port, and the
router reaches the VIP by the route it learned; no static route to a VIP anywhere.

The VIP set is still BIRD's static include here (sluiced deciding what is announced comes
next, issue 21): this is the path such announcements take, tested end to end."""
import re
import signal
import time
from pathlib import Path

from lab import CONFIG, GW_EXT_IP, RTR_EXT_IP, VIP, curl, metrics

APPLIANCE_AS, ROUTER_AS = 65001, 65000
KERNEL_IF = "ext0"


def with_exception_path(text):
    """lab.yaml with a kernel interface on `ext`."""
    old = "    device: net_af_packet0\n"
    assert old in text
    return text.replace(old, old + f"    kernel: {KERNEL_IF}\n", 1)


def appliance_bird(vips):
    routes = "".join(f"  route {v}/32 blackhole;\n" for v in vips)
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


def learned(lab):
    """The router's kernel route to the VIP, if BIRD installed one."""
    out = lab.sh("rtr", "ip", "route", "show", f"{VIP}/32", capture=True)
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
    gw_bird = lab.start_bird("gw", appliance_bird([VIP]))

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
