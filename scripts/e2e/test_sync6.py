"""Session sync's failover over IPv6 (issue 23): test_sync.py's failover (failover.py) in the
dual-stack lab (`Lab(dual=True, appliances=2, bgp=True)`). Each appliance's BIRD peers with
the router's over IPv6 too, through the exception path, and announces the IPv6 VIPs and the
IPv6 cluster address on that session; the router's ECMP routes to the IPv6 VIPs are the ones
BGP gave it (no static route), next hops the appliances' IPv6 addresses. IPv6 clients run
long-lived streams to a NAT66 VIP and a SYN-proxied NAT66 VIP, each with one tenant VM over
either underlay, and silent IPv6 downloads beside them (from tenant B's VM, over the IPv6
underlay only); session sync runs over the appliances' IPv6 management addresses. A is
killed (SIGKILL) once the streams are older than sync's 5 s; the router drops it by BFD, and
every stream and download that went through A ends whole through B: the agents send the
replies of old flows to the cluster address of their underlay's family, IPv4 or IPv6, which
both appliances announce.

Each appliance's BIRD also names its kernel interface's link-local address as a next hop
beside the global one; a router may take that one (FRR does for a directly connected peer),
so the router must reach it through the data port: checked by pinging it before the failover.
"""
import pytest

import failover
import lab as labmod
from failover import V6


@pytest.fixture(scope="module")
def pair6(sluiced):
    lab = labmod.Lab(prefix="sl6s", appliances=2, bgp=True, dual=True)
    lab.up()
    try:
        failover.start_pair(lab, sluiced, V6)
        yield lab
    finally:
        lab.down()


def test_ipv6_streams_survive_the_death_of_their_appliance(pair6, sluiced):
    lab = pair6
    # The IPv6 VIPs' routes came over the IPv6 sessions (their next hops are the appliances'
    # IPv6 addresses), and so did the IPv6 cluster address's.
    assert lab.learned(failover.CLUSTER6) == sorted(V6.exts)
    sessions = lab.birdc("rtr", "show", "protocols")
    print(sessions)
    for gw in ("gw", "gw2"):
        assert any(line.split()[0] == f"appliance_{gw}6" and "Established" in line for line in sessions.splitlines())
    # The kernel interface's link-local address answers through the data port (sluiced passes
    # its neighbor discovery and its traffic to the kernel), so it can serve as a next hop.
    for gw in ("gw", "gw2"):
        shown = lab.run_in(gw, ["ip", "-6", "-o", "addr", "show", "dev", labmod.KERNEL_IF, "scope", "link"])
        link_local = shown.stdout.split()[3].split("/")[0]
        ping = lab.run_in("rtr", ["ping", "-6", "-c", "2", "-W", "2", f"{link_local}%{labmod.APPLIANCE_LINKS6[gw][2]}"])
        assert ping.returncode == 0, (gw, link_local, ping.stdout, ping.stderr)
    failover.fail_over(lab, sluiced, V6)
