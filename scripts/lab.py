#!/usr/bin/env python3
"""The namespace lab: clients, a router, the Sluice appliance, backend hosts and tenant VMs,
joined by veth pairs, with real Linux TCP/IP stacks on every side of sluiced.

    <p>-cli1, <p>-cli2   clients 198.18.1.(10+N)/24, default route via the router
          |  bridge br-cli in <p>-rtr
    <p>-rtr              the router in front of the appliance (an ECMP router in production):
          |              198.18.1.1 (clients), 198.18.0.254 (to sluiced), 198.19.0.254 (backend
          |              network, where DSR replies come back); VIPs 198.18.10.0/24 are on-link
          |              toward sluiced, so the router ARPs for each VIP
          |  veth r-gw <-> gw-ext
    <p>-gw               sluiced: DPDK net_af_packet on gw-ext (198.18.0.1) and gw-int
          |              (198.19.0.1); the kernel has no address on these veths, DPDK owns them
          |  veth gw-int <-> sw-gw
    <p>-sw               a bridge joining the appliance, the router and the backend hosts
          |  veth sw-beN <-> be0        (MTU 1500 everywhere; the VMs' TUNs 1472: room for
          |                             the agent's tunnel header back)
    <p>-beN              backend host N, 198.19.0.(10+N)/24, runs sluice-agent; DSR: the VIP on
          |              lo, servers in the host; the agent's `phys0` TUN takes decapsulated
          |              DSR packets into the host's kernel
    <p>-bNvK             tenant VM on host N in VPC K (the agent's TUN moved into it): NAT
                         backends, 192.0.2.x from the documentation range; VPC 100 and VPC 200
                         both have a 192.0.2.10, on host 1

With `dual=True`, the lab is dual-stack (IPv6 from 2001:db8::/32): clients 2001:db8:1::(10+N)
behind the router's 2001:db8:1::1; the router's link to sluiced 2001:db8::fe (sluiced's `ext`
2001:db8::1) with the IPv6 VIPs 2001:db8:10::/64 on-link toward it (so the router asks for
them by neighbour discovery); the backend network 2001:db8:19::/64 (sluiced's `int` ::1, its
kernel's mgmt0 ::2, host N ::(10+N), the router ::fe); the tenant VMs' IPv6 addresses
2001:db8:c0::x beside their IPv4 ones, overlapping across the VPCs as those do (VM6).
`dual_config` adds the IPv6 addresses and services to a config: an IPv6 VIP over the IPv4
underlay, over the IPv6 underlay, an IPv4 VIP whose backends are reached over the IPv6
underlay only, and NAT66: the tenants' IPv6 VIPs to their VMs' IPv6 addresses. With two
appliances too, gw2 has 2001:db8:2::1 toward the router (2001:db8:2::fe), ::3 and ::4 on the
backend network; with `bgp`, each appliance's BIRD peers with the router's over IPv6 as well,
for the IPv6 VIPs (ECMP hashed on the 5-tuple as for IPv4).

With `narrow=True`, a third client behind a narrower path: <p>-cli3 (198.18.5.10/24, MTU 1500)
-- <p>-mid (a router) -- a link of MTU 1400 -- <p>-rtr. Packets too big for that link get ICMP
"fragmentation needed" from the router that has to send them on it (path MTU discovery).

Every address is from 198.18.0.0/15 or 192.0.2.0/24 and exists only inside these namespaces.
`up` is idempotent (it removes a lab of the same prefix first); `down` ends the processes the
lab started (by pid) and deletes its namespaces.

    python3 scripts/lab.py up [--prefix sl]
    python3 scripts/lab.py down [--prefix sl]
    python3 scripts/lab.py demo          # the README's main job, see demo()
"""
import argparse
import collections
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pipelines" / "lab.yaml"
VIP = "198.18.10.1"          # DSR: web tcp/80 (IPIP), dns udp/53 (GRE)
VIP_A = "198.18.10.2"        # NAT, tenant A (VPC 100): web tcp/80 -> :8080, dns udp/53 -> :5353
VIP_B = "198.18.10.3"        # NAT, tenant B (VPC 200): web tcp/80 -> :8080
VIP_S = "198.18.10.4"        # NAT, tenant A (VPC 100) behind the SYN proxy: web tcp/80 -> :8080
CLIENT_IPS = ["198.18.1.10", "198.18.1.11"]
CLIENT_IP = CLIENT_IPS[0]
RTR_CLI_IP, RTR_EXT_IP, RTR_INT_IP = "198.18.1.1", "198.18.0.254", "198.19.0.254"
GW_EXT_IP = "198.18.0.1"
GW_INT_IP = "198.19.0.1"
GW_MGMT_IP = "198.19.0.2"   # the appliance's kernel on the backend network: health checks
# A second appliance (Lab(appliances=2)): its own link to the router, the same backend network.
GW2_EXT_IP, RTR_EXT2_IP = "198.18.2.1", "198.18.2.254"
GW2_INT_IP, GW2_MGMT_IP = "198.19.0.3", "198.19.0.4"
ECHO_PORT = 9000             # the VMs' echo servers (long-lived streams)
# Routing (Lab(bgp=True)): BIRD 2 on the router and on each appliance, over the appliance's
# exception path for its `ext` port; the appliances share an AS, as an anycast cluster does.
ROUTER_AS, APPLIANCE_AS = 65000, 65001
KERNEL_IF = "ext0"
APPLIANCE_LINKS = {"gw": (GW_EXT_IP, RTR_EXT_IP, "r-gw"), "gw2": (GW2_EXT_IP, RTR_EXT2_IP, "r-gw2")}
INT_MTU = 1500
# The VMs' TUNs: the backend network's MTU less the agent's keyed GRE header back (20 + 8).
VM_MTU = INT_MTU - 28
# Lab(narrow=True): cli3 behind a router (mid) whose link to the main router has MTU 1400.
NARROW_CLIENT_IP, MID_CLI_IP, MID_RTR_IP, RTR_MID_IP = "198.18.5.10", "198.18.5.1", "198.18.4.2", "198.18.4.1"
NARROW_MTU = 1400
# Lab(dual=True): IPv6 beside every IPv4 address above (see the module's docs).
CLIENT6_IPS = ["2001:db8:1::10", "2001:db8:1::11"]
RTR_CLI6, RTR_EXT6, RTR_INT6 = "2001:db8:1::1", "2001:db8::fe", "2001:db8:19::fe"
GW_EXT6, GW_INT6, GW_MGMT6 = "2001:db8::1", "2001:db8:19::1", "2001:db8:19::2"
VIP6 = "2001:db8:10::1"      # DSR: web tcp/80 over the IPv4 underlay (IPIP), dns udp/53 over IPv6 (GRE)
VIP_U6 = "198.18.10.5"       # DSR: an IPv4 VIP, web tcp/80, whose backends are reached over IPv6 only
VIP6_A = "2001:db8:10::2"    # NAT66, tenant A (VPC 100): web tcp/80 -> :8080 (IPv4 underlay), dns udp/53 -> :5353 (IPv6)
VIP6_B = "2001:db8:10::3"    # NAT66, tenant B (VPC 200): web tcp/80 -> :8080 (IPv6 underlay)
# Tenant VMs: (host, vpc, address, name)
VMS = [(1, 100, "192.0.2.10", "a1"), (2, 100, "192.0.2.11", "a2"), (1, 200, "192.0.2.10", "b1")]
# Lab(dual=True): their IPv6 addresses, by name; a1 and b1 share one as they share 192.0.2.10.
VM6 = {"a1": "2001:db8:c0::10", "a2": "2001:db8:c0::11", "b1": "2001:db8:c0::10"}
# Lab(dual=True, appliances=2): gw2's IPv6 beside its IPv4 (its link to the router is
# 2001:db8:2::/64); each appliance's IPv6 link to the router as APPLIANCE_LINKS has its IPv4 one.
GW2_EXT6, RTR_EXT2_6 = "2001:db8:2::1", "2001:db8:2::fe"
GW2_INT6, GW2_MGMT6 = "2001:db8:19::3", "2001:db8:19::4"
APPLIANCE_LINKS6 = {"gw": (GW_EXT6, RTR_EXT6, "r-gw"), "gw2": (GW2_EXT6, RTR_EXT2_6, "r-gw2")}


def backend_ip(n):
    return f"198.19.0.{10 + n}"


def backend_ip6(n):
    return f"2001:db8:19::{10 + n}"


def dual_config(text):
    """A lab config (lab.yaml's text) made dual-stack: the ports' IPv6 addresses and the
    router's as the IPv6 gateway, and the IPv6 services appended (services is the last
    section)."""
    ports = [("    address: 198.18.0.1/24\n    gateway: 198.18.0.254",
              f"    address: [198.18.0.1/24, '{GW_EXT6}/64']\n    gateway: [198.18.0.254, '{RTR_EXT6}']"),
             ("    address: 198.19.0.1/24\n", f"    address: [198.19.0.1/24, '{GW_INT6}/64']\n")]
    for old, new in ports:
        assert old in text, old
        text = text.replace(old, new, 1)
    v4_hosts = "".join(f"      - {{ address: {backend_ip(i)} }}\n" for i in (1, 2))
    v6_hosts = "".join(f"      - {{ address: '{backend_ip6(i)}' }}\n" for i in (1, 2))
    return text + dual_dsr_services(v4_hosts, v6_hosts) + nat66_services()


def dual_dsr_services(v4_hosts, v6_hosts):
    """The dual lab's IPv6 `dsr` services (see `dual_config`)."""
    return f"""  # IPv6 (Lab(dual=True)): an IPv6 VIP over the IPv4 underlay (IPv6 in IPIP, protocol 41)...
  - name: web6
    vip: '{VIP6}'
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    backends:
{v4_hosts}  # ...over the IPv6 underlay (GRE over IPv6; a key is a VPC to the host agents)...
  - name: dns6
    vip: '{VIP6}'
    port: 53
    protocol: udp
    forwarding: dsr
    tunnel: gre
    backends:
{v6_hosts}  # ...and an IPv4 VIP whose backends are reached over IPv6 only (IPv4 in IPv6), checked
  # over IPv6 from the appliance's kernel (mgmt0, 2001:db8:19::2).
  - name: web-u6
    vip: {VIP_U6}
    port: 80
    protocol: tcp
    forwarding: dsr
    tunnel: ipip
    health: {{ type: http, host: web, interval: 0.5, timeout: 0.4, rise: 2, fall: 3 }}
    backends:
{v6_hosts}"""


def second_appliance(text, file_prefix):
    """Appliance A's config `text` (lab.yaml's, dual-stack or not) made gw2's: its ports'
    addresses and gateways of each family there, and DPDK's file prefix `file_prefix`."""
    swaps = [("198.18.0.1/24", f"{GW2_EXT_IP}/24"), ("198.18.0.254", RTR_EXT2_IP),
             ("198.19.0.1/24", f"{GW2_INT_IP}/24")]
    if f"'{GW_EXT6}/64'" in text:
        swaps += [(f"'{GW_EXT6}/64'", f"'{GW2_EXT6}/64'"), (f"'{RTR_EXT6}'", f"'{RTR_EXT2_6}'"),
                  (f"'{GW_INT6}/64'", f"'{GW2_INT6}/64'")]
    for old, new in swaps:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    text, n = re.subn(r"--file-prefix, [\w-]+,", f"--file-prefix, {file_prefix},", text, count=1)
    assert n == 1, "a DPDK file prefix"
    return text


SHOP6_PORT = 81   # tenant A's SYN-proxied NAT66 service, on VIP6_A


def nat66_services():
    """NAT66 (Lab(dual=True)): the tenants' IPv6 VIPs to their VMs' IPv6 addresses, in GRE
    keyed by the VPC over either underlay."""
    return f"""  # NAT66: tenant A's IPv6 VIP to its VMs in VPC 100 over the IPv4 underlay (GRE 0x86DD)...
  - name: tenant-a-web6
    vip: '{VIP6_A}'
    port: 80
    protocol: tcp
    forwarding: nat
    vpc: 100
    backends:
      - {{ address: '{VM6["a1"]}', port: 8080, host: {backend_ip(1)}, weight: 1 }}
      - {{ address: '{VM6["a2"]}', port: 8080, host: {backend_ip(2)}, weight: 2 }}
  # ...its UDP over the IPv6 underlay (GRE over IPv6)...
  - name: tenant-a-dns6
    vip: '{VIP6_A}'
    port: 53
    protocol: udp
    forwarding: nat
    vpc: 100
    backends:
      - {{ address: '{VM6["a1"]}', port: 5353, host: '{backend_ip6(1)}' }}
  # ...its shop through the SYN proxy (cookies for IPv6 SYNs; the VM's handshake opened by
  # the client's ACK)...
  - name: tenant-a-shop6
    vip: '{VIP6_A}'
    port: {SHOP6_PORT}
    protocol: tcp
    forwarding: nat
    vpc: 100
    synproxy: true
    backends:
      - {{ address: '{VM6["a1"]}', port: 8080, host: {backend_ip(1)} }}
      - {{ address: '{VM6["a2"]}', port: 8080, host: '{backend_ip6(2)}' }}
  # ...and tenant B's VM, a1's IPv6 address on a1's host: only the GRE key tells them apart.
  - name: tenant-b-web6
    vip: '{VIP6_B}'
    port: 80
    protocol: tcp
    forwarding: nat
    vpc: 200
    backends:
      - {{ address: '{VM6["b1"]}', port: 8080, host: '{backend_ip6(1)}' }}
"""


def run(cmd, check=True, capture=False, timeout=60):
    """Runs a command (a list); returns stdout when capture is set."""
    r = subprocess.run(cmd, check=False, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout if capture else r.returncode


class Lab:
    def __init__(self, prefix="sl", backends=2, run_dir=None, appliances=1, bgp=False, narrow=False, dual=False):
        self.prefix = prefix
        self.narrow = narrow
        self.dual = dual
        self.backends = backends
        self.appliances = appliances
        self.bgp = bgp
        self.run_dir = Path(run_dir or ROOT / "lab-run" / prefix)
        self.procs = []

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def vm(self, host, vpc):
        return f"b{host}v{vpc}"

    def namespaces(self):
        return ([self.ns(f"cli{i}") for i in range(1, len(CLIENT_IPS) + 1)]
                + [self.ns("rtr"), self.ns("gw"), self.ns("sw")]
                + ([self.ns("gw2")] if self.appliances == 2 else [])
                + [self.ns(f"be{i}") for i in range(1, self.backends + 1)]
                + [self.ns(self.vm(h, v)) for h, v, _, _ in VMS]
                + ([self.ns("mid"), self.ns("cli3")] if self.narrow else []))

    def sh(self, name, *cmd, check=True, capture=False, timeout=60):
        """Runs a command inside namespace `name` (short name, e.g. "cli1")."""
        return run(["ip", "netns", "exec", self.ns(name), *cmd], check=check, capture=capture, timeout=timeout)

    def sysctl(self, name, *settings):
        for s in settings:
            self.sh(name, "sysctl", "-qw", s)

    # ---- topology ------------------------------------------------------------------------

    def _veth(self, ns_a, a, ns_b, b, mtu=1500):
        run(["ip", "link", "add", a, "netns", self.ns(ns_a), "type", "veth", "peer", "name", b, "netns", self.ns(ns_b)])
        for ns, dev in ((ns_a, a), (ns_b, b)):
            # No offloads: a checksum left to "hardware" would reach af_packet unfinished, and
            # GSO would hand DPDK frames larger than the MTU.
            self.sh(ns, "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                    check=False)
            self.sh(ns, "ip", "link", "set", dev, "mtu", str(mtu), "up")

    def _bridge(self, ns, br, mtu=1500):
        self.sh(ns, "ip", "link", "add", br, "mtu", str(mtu), "type", "bridge")
        self.sh(ns, "ip", "link", "set", br, "up")

    def up(self):
        self.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        off = "0" if self.dual else "1"
        for n in self.namespaces():
            run(["ip", "netns", "add", n])
            run(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"])
            # IPv6 off unless the lab is dual-stack: router solicitations and MLD would only be
            # noise on the appliance. Dual-stack: static addresses only, at once (no duplicate
            # address detection, router advertisements or solicitations).
            # rp_filter off: tunnels deliver packets on interfaces that are not the route back.
            run(["ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv6.conf.all.disable_ipv6={off}",
                 f"net.ipv6.conf.default.disable_ipv6={off}", "net.ipv4.conf.all.rp_filter=0",
                 "net.ipv4.conf.default.rp_filter=0"])
            if self.dual:
                run(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                     "net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.default.autoconf=0",
                     "net.ipv6.conf.default.router_solicitations=0"])
        # Clients and the router.
        self._bridge("rtr", "br-cli")
        self.sh("rtr", "ip", "addr", "add", f"{RTR_CLI_IP}/24", "dev", "br-cli")
        for i, ip in enumerate(CLIENT_IPS, 1):
            self._veth(f"cli{i}", "cli0", "rtr", f"r-cli{i}")
            self.sh("rtr", "ip", "link", "set", f"r-cli{i}", "master", "br-cli")
            self.sh(f"cli{i}", "ip", "addr", "add", f"{ip}/24", "dev", "cli0")
            self.sh(f"cli{i}", "ip", "route", "add", "default", "via", RTR_CLI_IP)
        self.sysctl("rtr", "net.ipv4.ip_forward=1")
        # Router <-> appliance.
        self._veth("rtr", "r-gw", "gw", "gw-ext")
        self._dpdk_owned("gw", "gw-ext")
        self.sh("rtr", "ip", "addr", "add", f"{RTR_EXT_IP}/24", "dev", "r-gw")
        if not self.bgp:
            self.sh("rtr", "ip", "route", "add", "198.18.10.0/24", "dev", "r-gw")
        # Backend network: appliance, router and backend hosts on one bridge.
        self._bridge("sw", "br0", INT_MTU)
        self._veth("gw", "gw-int", "sw", "sw-gw", INT_MTU)
        self._dpdk_owned("gw", "gw-int")
        self.sh("sw", "ip", "link", "set", "sw-gw", "master", "br0")
        # The appliance's management path: its own kernel's interface on the backend network,
        # which health checks leave from (DPDK owns gw-int).
        self._veth("gw", "mgmt0", "sw", "sw-mgmt", INT_MTU)
        self.sh("sw", "ip", "link", "set", "sw-mgmt", "master", "br0")
        self.sh("gw", "ip", "addr", "add", f"{GW_MGMT_IP}/24", "dev", "mgmt0")
        self._veth("rtr", "r-sw", "sw", "sw-rtr", INT_MTU)
        self.sh("sw", "ip", "link", "set", "sw-rtr", "master", "br0")
        self.sh("rtr", "ip", "addr", "add", f"{RTR_INT_IP}/24", "dev", "r-sw")
        for i in range(1, self.backends + 1):
            be = f"be{i}"
            self._veth(be, "be0", "sw", f"sw-be{i}", INT_MTU)
            self.sh("sw", "ip", "link", "set", f"sw-be{i}", "master", "br0")
            self.sh(be, "ip", "addr", "add", f"{backend_ip(i)}/24", "dev", "be0")
            self.sh(be, "ip", "route", "add", "default", "via", RTR_INT_IP)
            # DSR: the VIP is local to the host, but only the appliance answers ARP for it.
            self.sh(be, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
            self.sysctl(be, "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
        if self.appliances == 2:
            self._second_appliance()
        if self.narrow:
            self._narrow_client()
        if self.dual:
            self._dual()
        if self.appliances == 2 and not self.bgp:
            self.route_vips(["gw", "gw2"])

    def _dual(self):
        """The IPv6 half of a dual-stack lab (see the module's docs)."""
        self.sh("rtr", "ip", "-6", "addr", "add", f"{RTR_CLI6}/64", "dev", "br-cli")
        for i, ip in enumerate(CLIENT6_IPS, 1):
            self.sh(f"cli{i}", "ip", "-6", "addr", "add", f"{ip}/64", "dev", "cli0")
            self.sh(f"cli{i}", "ip", "-6", "route", "add", "default", "via", RTR_CLI6)
        self.sysctl("rtr", "net.ipv6.conf.all.forwarding=1")
        self.sh("rtr", "ip", "-6", "addr", "add", f"{RTR_EXT6}/64", "dev", "r-gw")
        if not self.bgp and self.appliances == 1:
            self.sh("rtr", "ip", "-6", "route", "add", "2001:db8:10::/64", "dev", "r-gw")
        self.sh("rtr", "ip", "-6", "addr", "add", f"{RTR_INT6}/64", "dev", "r-sw")
        self.sh("gw", "ip", "-6", "addr", "add", f"{GW_MGMT6}/64", "dev", "mgmt0")
        if self.appliances == 2:
            self.sh("rtr", "ip", "-6", "addr", "add", f"{RTR_EXT2_6}/64", "dev", "r-gw2")
            self.sh("gw2", "ip", "-6", "addr", "add", f"{GW2_MGMT6}/64", "dev", "mgmt0")
            self.sysctl("rtr", "net.ipv6.fib_multipath_hash_policy=1")
        for i in range(1, self.backends + 1):
            be = f"be{i}"
            self.sh(be, "ip", "-6", "addr", "add", f"{backend_ip6(i)}/64", "dev", "be0")
            self.sh(be, "ip", "-6", "route", "add", "default", "via", RTR_INT6)
            self.sh(be, "ip", "-6", "addr", "add", f"{VIP6}/128", "dev", "lo")
            self.sh(be, "ip", "addr", "add", f"{VIP_U6}/32", "dev", "lo")

    def _narrow_client(self):
        """cli3 behind mid, whose link to the router has MTU 1400 (both ends): the router must
        send "fragmentation needed" for bigger packets toward cli3, and mid for bigger ones
        from it. The router answers every one (no ICMP rate limit: the test is not about it)."""
        self._veth("rtr", "r-mid", "mid", "mid-rtr", NARROW_MTU)
        self._veth("mid", "mid-cli", "cli3", "cli0")
        self.sh("rtr", "ip", "addr", "add", f"{RTR_MID_IP}/24", "dev", "r-mid")
        self.sh("mid", "ip", "addr", "add", f"{MID_RTR_IP}/24", "dev", "mid-rtr")
        self.sh("mid", "ip", "addr", "add", f"{MID_CLI_IP}/24", "dev", "mid-cli")
        self.sh("cli3", "ip", "addr", "add", f"{NARROW_CLIENT_IP}/24", "dev", "cli0")
        self.sh("cli3", "ip", "route", "add", "default", "via", MID_CLI_IP)
        self.sh("mid", "ip", "route", "add", "default", "via", RTR_MID_IP)
        self.sh("rtr", "ip", "route", "add", "198.18.5.0/24", "via", MID_RTR_IP)
        self.sysctl("mid", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0")
        self.sysctl("rtr", "net.ipv4.icmp_ratelimit=0")

    def _dpdk_owned(self, ns, dev):
        """`dev` is read by sluiced's net_af_packet, which sees a frame before the kernel does
        but does not take it from the kernel: the kernel must stay out (no ARP answer on it, and
        packets from anywhere not routed through it refused), or it would answer for the port's
        address beside the exception path, twice."""
        self.sysctl(ns, f"net.ipv4.conf.{dev}.arp_ignore=1", f"net.ipv4.conf.{dev}.rp_filter=1")
        if self.dual:
            self.sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6=1")

    def _second_appliance(self):
        """gw2: a second sluiced on its own link to the router (198.18.2.0/24) and on the same
        backend network; the router splits flows to the VIPs between the two by a multipath
        route hashed on the 5-tuple (an ECMP router)."""
        self._veth("rtr", "r-gw2", "gw2", "gw-ext")
        self._dpdk_owned("gw2", "gw-ext")
        self.sh("rtr", "ip", "addr", "add", f"{RTR_EXT2_IP}/24", "dev", "r-gw2")
        self._veth("gw2", "gw-int", "sw", "sw-gw2", INT_MTU)
        self._dpdk_owned("gw2", "gw-int")
        self.sh("sw", "ip", "link", "set", "sw-gw2", "master", "br0")
        self._veth("gw2", "mgmt0", "sw", "sw-mgmt2", INT_MTU)
        self.sh("sw", "ip", "link", "set", "sw-mgmt2", "master", "br0")
        self.sh("gw2", "ip", "addr", "add", f"{GW2_MGMT_IP}/24", "dev", "mgmt0")
        self.sysctl("rtr", "net.ipv4.fib_multipath_hash_policy=1")

    def route_vips(self, appliances):
        """The router's static route to the VIPs (IPv6 ones too in a dual lab): through each of
        `appliances` (multipath)."""
        families = [("-4", "198.18.10.0/24", APPLIANCE_LINKS)]
        families += [("-6", "2001:db8:10::/64", APPLIANCE_LINKS6)] if self.dual else []
        for family, vips, links in families:
            hops = []
            for a in appliances:
                hops += ["nexthop", "via", links[a][0], "dev", links[a][2]]
            self.sh("rtr", "ip", family, "route", "replace", vips, *hops)
            self.sh("rtr", "ip", family, "route", "flush", "cache", check=False)

    def down(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()
        existing = run(["ip", "netns", "list"], capture=True)
        names = {line.split()[0] for line in existing.splitlines() if line.strip()}
        for n in self.namespaces():
            if n in names:
                run(["ip", "netns", "del", n], check=False)
        left = [line for line in run(["ip", "netns", "list"], capture=True).splitlines()
                if line.startswith(f"{self.prefix}-")]
        assert not left, f"namespaces left behind: {left}"

    # ---- processes ------------------------------------------------------------------------

    def spawn(self, name, cmd, log_name):
        """Starts `cmd` in namespace `name`, output to run_dir/log_name; tracked for cleanup."""
        log = open(self.run_dir / log_name, "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *cmd], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        p.log_path = self.run_dir / log_name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        """Ends a process this lab started (by its pid), escalating to SIGKILL."""
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def wait_for_log(self, p, text, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in p.log_path.read_text(errors="replace"):
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{text!r} not seen in {p.log_path}:\n{p.log_path.read_text(errors='replace')}")

    def start_sluiced(self, sluiced, config=CONFIG, extra=(), gw="gw"):
        sock = self.run_dir / ("admin.sock" if gw == "gw" else f"admin-{gw}.sock")
        if gw == "gw":
            self.admin_socket = sock
        p = self.spawn(gw, [str(sluiced), "--config", str(config), "--stats-interval", "2",
                            "--admin-socket", str(sock), *extra], "sluiced.log" if gw == "gw" else f"sluiced-{gw}.log")
        self.wait_for_log(p, "running:")
        return p

    def start_dual(self, sluiced, file_prefix, extra=()):
        """The dual-stack lab's sluiced (lab.yaml made dual by `dual_config`, with DPDK file
        prefix `file_prefix` of its own), the host agents and the servers; returns the servers'
        logs."""
        text = dual_config(CONFIG.read_text()).replace("--file-prefix, sluice-lab,", f"--file-prefix, {file_prefix},")
        assert file_prefix in text
        config = self.run_dir / f"{file_prefix}.yaml"
        config.write_text(text)
        self.gw = self.start_sluiced(sluiced, config, extra)
        self.start_agents(sluiced.parent / "sluice-agent")
        return self.start_servers()

    def run_in(self, name, cmd, timeout=30):
        """`cmd` in namespace `name`: the finished process, its output as text."""
        return subprocess.run(["ip", "netns", "exec", self.ns(name), *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def start_bird(self, name, conf=None):
        """BIRD 2 in namespace `name` with config text `conf` (None: the file run_dir/bird-NAME.conf
        that sluiced wrote from its `routing.bgp`), in the foreground (so the lab holds its
        pid); its control socket is run_dir/bird-NAME.ctl, for `birdc`."""
        path = self.run_dir / f"bird-{name}.conf"
        if conf is not None:
            path.write_text(conf)
        assert path.exists(), f"{path}: sluiced writes it at start"
        sock = self.run_dir / f"bird-{name}.ctl"
        sock.unlink(missing_ok=True)
        p = self.spawn(name, ["bird", "-f", "-c", str(path), "-s", str(sock)], f"bird-{name}.log")
        deadline = time.time() + 10
        while not sock.exists():
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"bird in {name}: {p.log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        p.sock = sock
        return p

    def birdc(self, name, *cmd):
        """A `birdc` command to the BIRD of namespace `name`; its output."""
        return self.sh(name, "birdc", "-s", str(self.run_dir / f"bird-{name}.ctl"), *cmd, capture=True)

    def routing_config(self, text, gw="gw"):
        """A pipeline `text` (for appliance `gw`) with the exception path on `ext` and
        `routing`: BGP with BFD (100 ms x 3) to the router, each VIP tagged with the community
        APPLIANCE_AS:100, in the BIRD configuration that sluiced writes for its BIRD. In a dual
        lab, a second neighbour: the router's IPv6 address, for the IPv6 VIPs."""
        address, router, _ = APPLIANCE_LINKS[gw]
        neighbors = f"{{ address: {router}, as: {ROUTER_AS} }}"
        if self.dual:
            neighbors += f", {{ address: '{APPLIANCE_LINKS6[gw][1]}', as: {ROUTER_AS} }}"
        old = "    device: net_af_packet0\n"
        assert old in text
        text = text.replace(old, old + f"    kernel: {KERNEL_IF}\n", 1)
        bird = (f"{{ socket: {self.run_dir / f'bird-{gw}.ctl'}, include: {self.run_dir / f'vips-{gw}.conf'}, "
                f"config: {self.run_dir / f'bird-{gw}.conf'} }}")
        return text + (f"routing:\n  bird: {bird}\n"
                       f"  bgp:\n    as: {APPLIANCE_AS}\n    router_id: {address}\n"
                       f"    neighbors: [{neighbors}]\n"
                       "    bfd: { interval: 0.1, multiplier: 3 }\n"
                       f"    communities: [\"{APPLIANCE_AS}:100\"]\n"
                       "  heartbeat: 0.5\n")

    def start_routing(self, gws, static=(), router=True):
        """Once sluiced runs on each of `gws`: its exception path gets the port's address,
        BIRD starts on the router and on each appliance; the router's too unless `router` is
        false (it runs already). An appliance's BIRD runs the configuration its sluiced wrote
        (`routing_config`), or with `static` VIPs a hand-written one announcing only those.
        Returns {name: BIRD process}."""
        birds = {"rtr": self.start_bird("rtr", router_bird(gws, self.dual))} if router else {}
        for gw in gws:
            address = APPLIANCE_LINKS[gw][0]
            self.kernel_port(gw, KERNEL_IF, f"{address}/24")
            birds[gw] = self.start_bird(gw, appliance_bird(gw, static) if static else None)
        return birds

    def learned(self, vip):
        """The router's next hops toward `vip` (either family) that its routing daemon
        installed (empty: no route)."""
        family, length = ("-6", 128) if ":" in vip else ("-4", 32)
        out = self.sh("rtr", "ip", family, "route", "show", f"{vip}/{length}", capture=True)
        if "proto bird" not in out and "proto bgp" not in out:   # BIRD's, or FRR's
            return []
        return sorted(set(re.findall(r"via (?:inet6 )?([0-9a-f.:]+)", out)))

    def start_frr(self, gws):
        """FRR 8 as the router instead of BIRD: zebra, bfdd and bgpd in the foreground with
        private paths under run_dir/frr (owned by user frr), peering with `gws` as
        `router_frr` says. Returns the control directory for `vtysh`."""
        run = self.run_dir / "frr"
        run.mkdir(exist_ok=True)
        for daemon, conf in router_frr(gws).items():
            (run / f"{daemon}.conf").write_text(conf)
        subprocess.run(["chown", "-R", "frr:frr", str(run)], check=True)
        common = ["-z", str(run / "zserv.api"), "--vty_socket", str(run), "-P", "0"]
        for daemon in ("zebra", "bfdd", "bgpd"):
            extra = ["--bfdctl", str(run / "bfdd.sock")] if daemon == "bfdd" else []
            p = self.spawn("rtr", [f"/usr/lib/frr/{daemon}", *common, *extra, "-f", str(run / f"{daemon}.conf"),
                                   "-i", str(run / f"{daemon}.pid")], f"frr-{daemon}.log")
            deadline = time.time() + 10
            while not (run / f"{daemon}.vty").exists():
                if p.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"FRR {daemon}: {p.log_path.read_text(errors='replace')}")
                time.sleep(0.05)
        return run

    def vtysh(self, run, *command):
        """One FRR command, through the router's vtysh; its output."""
        return self.sh("rtr", "vtysh", "--vty_socket", str(run), "-c", " ".join(command), capture=True)

    def kernel_port(self, gw, ifname, address, timeout=30):
        """Waits until sluiced's exception path `ifname` in `gw` is up with the port's
        `address` (ADDR/LEN), which sluiced gives it at start."""
        deadline = time.time() + timeout
        while True:
            out = self.sh(gw, "ip", "-o", "addr", "show", "dev", ifname, check=False, capture=True)
            link = self.sh(gw, "ip", "-o", "link", "show", "dev", ifname, check=False, capture=True)
            if f"inet {address} " in out and re.search(r"[<,]UP[,>]", link):
                return
            if time.time() > deadline:
                raise RuntimeError(f"{ifname} in {gw} never came up with {address}: {out!r} {link!r}")
            time.sleep(0.1)

    def start_agents(self, agent, reply_to=None, health=None):
        """sluice-agent on every backend host; then each VPC's TUN goes into its VM namespace
        and gets the VM's address and a default route through it. The agents take tunnels only
        from the appliances: their `int` port addresses (the lab sets no `tunnel.source`).
        `reply_to`: the appliances' cluster tunnel address (or a list, one of each family), for
        NAT replies of flows past session sync's delay. `health`: (key file, port): each agent
        also takes health-check assignments on its address and that port, and probes each
        VPC's backends inside that VPC's VM namespace."""
        return [self.start_agent(agent, i, reply_to, health) for i in range(1, self.backends + 1)]

    def start_agent(self, agent, i, reply_to=None, health=None):
        """The agent of backend host i (as start_agents starts each)."""
        two = self.appliances == 2
        appliances = [GW_INT_IP] + ([GW2_INT_IP] if two else [])
        appliances += ([GW_INT6] + ([GW2_INT6] if two else [])) if self.dual else []
        vpcs = [(v, addr, name) for h, v, addr, name in VMS if h == i]
        cmd = [str(agent), "--address", backend_ip(i), "--physical", "phys0"]
        if self.dual:
            cmd += ["--address", backend_ip6(i)]
        for a in appliances:
            cmd += ["--appliance", a]
        for v, _, _ in vpcs:
            cmd += ["--vpc", f"{v}=v{v}"]
        for c in [reply_to] if isinstance(reply_to, str) else reply_to or []:
            cmd += ["--reply-to", c]
        if health:
            key_file, port = health
            cmd += ["--health-listen", f"{backend_ip(i)}:{port}", "--health-key-file", str(key_file)]
            cmd += [arg for v, _, _ in vpcs for arg in ("--vpc-netns", f"{v}=/run/netns/{self.ns(self.vm(i, v))}")]
        p = self.spawn(f"be{i}", cmd, f"agent-be{i}.log")
        self.wait_for_log(p, "running:")
        self.sh(f"be{i}", "ip", "link", "set", "phys0", "up")
        for v, addr, name in vpcs:
            vm = self.vm(i, v)
            self.sh(f"be{i}", "ip", "link", "set", f"v{v}", "netns", self.ns(vm))
            self.sh(vm, "ip", "addr", "add", f"{addr}/24", "dev", f"v{v}")
            self.sh(vm, "ip", "link", "set", f"v{v}", "mtu", str(VM_MTU), "up")
            self.sh(vm, "ip", "route", "add", "default", "dev", f"v{v}")
            if self.dual:
                self.sh(vm, "ip", "-6", "addr", "add", f"{VM6[name]}/64", "dev", f"v{v}")
                self.sh(vm, "ip", "-6", "route", "add", "default", "dev", f"v{v}")
        return p

    def start_servers(self):
        """HTTP and UDP servers: DSR ones in the backend hosts (ports 80, 53), NAT ones in the
        tenant VMs (8080, 5353); echo servers for long-lived streams in both (ECHO_PORT).
        Returns {name: access log path}."""
        logs = {}
        self.servers = {}
        server = str(ROOT / "scripts" / "lab_server.py")
        v6 = ["--ipv6"] if self.dual else []
        places = [(f"be{i}", f"be{i}", ["--http", "80", "--udp", "53", "--echo", str(ECHO_PORT), *v6])
                  for i in range(1, self.backends + 1)]
        places += [(self.vm(h, v), name, ["--http", "8080", "--udp", "5353", "--echo", str(ECHO_PORT), *v6])
                   for h, v, _, name in VMS]
        for ns, name, ports in places:
            log = self.run_dir / f"{name}.access"
            log.write_text("")
            self.server_args = getattr(self, "server_args", {})
            self.server_args[name] = (ns, [sys.executable, server, "--name", name, *ports, "--log", str(log)])
            self.start_server(name)
            logs[name] = log
        return logs

    def start_server(self, name):
        """(Re)starts the lab server `name` as start_servers did."""
        ns, cmd = self.server_args[name]
        p = self.spawn(ns, cmd, f"{name}.log")
        self.wait_for_log(p, "serving:")
        self.servers[name] = p
        return p

    def capture(self, name, dev, pcap, bpf):
        p = self.spawn(name, ["tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-w", str(self.run_dir / pcap), bpf], pcap + ".log")
        self.wait_for_log(p, "listening on")
        return p


def appliance_bird(gw, static):
    """A hand-written BIRD 2 for appliance `gw` (its sluiced has no `routing`): BGP with BFD to
    the router over the exception path, announcing the `static` VIPs."""
    address, router, _ = APPLIANCE_LINKS[gw]
    routes = "".join(f"  route {v}/32 blackhole;\n" for v in static)
    return f"""router id {address};
log stderr all;
debug protocols {{ states }};
protocol device {{ scan time 10; }}
protocol static vips {{
  ipv4;
{routes}}}
protocol bfd {{ interface "{KERNEL_IF}" {{ interval 100 ms; multiplier 3; }}; }}
protocol bgp upstream {{
  local {address} as {APPLIANCE_AS};
  neighbor {router} as {ROUTER_AS};
  bfd on;
  error wait time 2, 30;
  ipv4 {{ import none; export where proto = "vips"; }};
}}
"""


def router_bird(gws, dual=False):
    """BIRD 2 on the router: a BGP session with BFD to each appliance of `gws` (with `dual`,
    a second one over IPv6 for the IPv6 VIPs); what they announce goes to the kernel, equal
    paths merged (ECMP, hashed on the 5-tuple)."""
    families = [("ipv4", "", APPLIANCE_LINKS)] + ([("ipv6", "6", APPLIANCE_LINKS6)] if dual else [])
    out = f"""router id {RTR_EXT_IP};
log stderr all;
debug protocols {{ states }};
protocol device {{ scan time 10; }}
"""
    for channel, _, _ in families:
        out += f"protocol kernel {{ {channel} {{ import none; export all; }}; merge paths on; }}\n"
    links = "".join(f' interface "{APPLIANCE_LINKS[gw][2]}" {{ interval 100 ms; multiplier 3; }};' for gw in gws)
    out += f"protocol bfd {{{links} }}\n"
    for gw in gws:
        for channel, suffix, table in families:
            address, router, _ = table[gw]
            out += f"""protocol bgp appliance_{gw}{suffix} {{
  local {router} as {ROUTER_AS};
  neighbor {address} as {APPLIANCE_AS};
  bfd on;
  error wait time 2, 30;
  {channel} {{ import all; export none; }};
}}
"""
    return out


def router_frr(gws):
    """FRR 8 on the router, the configuration docs/operations.md gives: eBGP with BFD
    (100 ms x 3) to each appliance of `gws`, /32s inside the VIP and cluster ranges imported,
    nothing exported, ECMP over up to 8 paths. {daemon: its configuration}."""
    bgp = [f"router bgp {ROUTER_AS}", f" bgp router-id {RTR_EXT_IP}", " bgp bestpath as-path multipath-relax"]
    bfd = ["bfd"]
    for gw in gws:
        address = APPLIANCE_LINKS[gw][0]
        bgp += [f" neighbor {address} remote-as {APPLIANCE_AS}", f" neighbor {address} bfd",
                f" neighbor {address} timers connect 2"]
        bfd += [f" peer {address}", "  receive-interval 100", "  transmit-interval 100", "  detect-multiplier 3",
                " exit"]
    bgp += [" address-family ipv4 unicast", "  maximum-paths 8"]
    for gw in gws:
        address = APPLIANCE_LINKS[gw][0]
        bgp += [f"  neighbor {address} route-map SLUICE-VIPS in", f"  neighbor {address} route-map NOTHING out"]
    bgp += [" exit-address-family", "!",
            "ip prefix-list VIPS seq 5 permit 198.18.10.0/24 ge 32",
            "ip prefix-list VIPS seq 10 permit 198.18.9.0/24 ge 32",
            "route-map SLUICE-VIPS permit 10", " match ip address prefix-list VIPS", "route-map NOTHING deny 10"]
    return {"zebra": "no zebra nexthop kernel enable\n", "bfdd": "\n".join(bfd) + "\n",
            "bgpd": "\n".join(bgp) + "\n"}


def access(log):
    """Lines of a lab_server access log, split: (name, proto, client_ip, client_port, what)."""
    return [tuple(line.split()) for line in Path(log).read_text().splitlines() if line.strip()]


# ---- reading what the backends received -------------------------------------------------------

def read_pcap(path):
    """Frames of a little-endian pcap file (as tcpdump writes them here)."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)
    frames, at = [], 24
    while at + 16 <= len(data):
        incl = struct.unpack_from("<I", data, at + 8)[0]
        frames.append(data[at + 16:at + 16 + incl])
        at += 16 + incl
    return frames


def ip4(b):
    return ".".join(str(x) for x in b)


def decode_tunneled(frame):
    """(outer_src, outer_dst, kind, gre_key, inner_flow) for an IPIP or GRE frame, else None.
    inner_flow is (proto, src, sport, dst, dport)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    o = frame[14:]
    ihl = (o[0] & 0x0F) * 4
    proto, src, dst = o[9], ip4(o[12:16]), ip4(o[16:20])
    key = None
    if proto == 4:
        inner, kind = o[ihl:], "ipip"
    elif proto == 47:
        flags = struct.unpack_from("!H", o, ihl)[0]
        glen = 4 + (4 if flags & 0x8000 else 0)
        if flags & 0x2000:
            key = struct.unpack_from("!I", o, ihl + glen)[0]
            glen += 4
        glen += 4 if flags & 0x1000 else 0
        inner, kind = o[ihl + glen:], "gre"
    else:
        return None
    iihl = (inner[0] & 0x0F) * 4
    iproto = inner[9]
    sport, dport = struct.unpack_from("!HH", inner, iihl)
    return src, dst, kind, key, (iproto, ip4(inner[12:16]), sport, ip4(inner[16:20]), dport)


def sluiced_which(sluiced, config, flow):
    proto, src, sport, dst, dport = flow
    out = run([str(sluiced), "which", str(config), {6: "tcp", 17: "udp"}[proto], f"{src}:{sport}", f"{dst}:{dport}"],
              capture=True)
    return out.split()[1]


def counters(text, number=int):
    """Parses the `name{labels} value` lines of sluiced's metrics (as --print-stats prints them,
    or as its metrics endpoint serves them, with `number=float`)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = number(v)
    return out


def metrics(lab, gw="gw"):
    """The metrics endpoint of the sluiced in namespace `gw`, parsed."""
    return counters(lab.sh(gw, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9109/metrics", capture=True),
                    float)


# ---- traffic -----------------------------------------------------------------------------------

def curl(lab, cli, url, out="-", timeout=10):
    """One HTTP GET from client namespace `cli`; returns (ok, body or error)."""
    r = subprocess.run(["ip", "netns", "exec", lab.ns(cli), "curl", "-sS", "--max-time", str(timeout), "-o", out, url],
                       text=out == "-", capture_output=True, timeout=timeout + 5)
    return r.returncode == 0, (r.stdout if out == "-" else "") or r.stderr


def udp_ask(lab, cli, host, port, msg, timeout=2.0):
    """One UDP request/response from client namespace `cli`; returns the answer or None."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(%r)\n"
            "s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))\n"
            "try:\n print(s.recv(65535).decode())\nexcept socket.timeout:\n sys.exit(3)\n" % timeout)
    r = subprocess.run(["ip", "netns", "exec", lab.ns(cli), sys.executable, "-c", code, host, str(port), msg],
                       text=True, capture_output=True, timeout=timeout + 5)
    return r.stdout.strip() if r.returncode == 0 else None


def wrk(lab, cli, url, connections=16, seconds=4, threads=2):
    """wrk from client namespace `cli`: (requests, non-2xx + socket errors, full output)."""
    out = lab.sh(cli, "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", url,
                 capture=True, timeout=seconds + 30)
    return wrk_result(out)


def wrk_result(out):
    """wrk's output: (requests, non-2xx + socket errors, the output)."""
    reqs = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = 0
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Non-2xx"):
            errors += int(line.split()[-1])
        if line.startswith("Socket errors"):
            errors += sum(int(x.strip(",")) for x in line.split()[3::2])
    return reqs, errors, out


# ---- the main job ----------------------------------------------------------------------------

def demo(args):
    sluiced, agent = Path(args.sluiced), Path(args.agent)
    lab = Lab(prefix=args.prefix)
    print(f"== lab up: {len(lab.namespaces())} namespaces ({lab.prefix}-*)")
    lab.up()
    try:
        print("== sluiced in", lab.ns("gw"), "with", CONFIG.relative_to(ROOT), "; sluice-agent on each backend host")
        gw = lab.start_sluiced(sluiced, CONFIG, ["--print-stats"])
        lab.start_agents(agent)
        logs = lab.start_servers()

        print(f"== cli1 pings the VIPs (the router resolves each VIP by ARP)")
        for vip in (VIP, VIP_A):
            out = lab.sh("cli1", "ping", "-c", "2", "-i", "0.2", "-W", "2", vip, capture=True, check=False)
            print("   " + next((l for l in out.splitlines() if "received" in l), out.strip()))
        print("== HTTP: 200 requests from each client (curl, one connection each) to every VIP")
        for vip, what in ((VIP, "dsr web"), (VIP_A, "nat tenant A"), (VIP_B, "nat tenant B"),
                          (VIP_S, "syn proxy")):
            ok = 0
            for cli in ("cli1", "cli2"):
                for _ in range(100):
                    ok += curl(lab, cli, f"http://{vip}/")[0]
            print(f"   {vip:<13} {what:<13} {ok}/200 ok")
        print("== wrk: 4 s, 16 connections, from cli2 to the tenant A VIP")
        reqs, errors, _ = wrk(lab, "cli2", f"http://{VIP_A}/")
        print(f"   {reqs} requests, {errors} errors")
        print("== UDP: 20 requests to each UDP VIP")
        for vip, what in ((VIP, "dsr dns"), (VIP_A, "nat tenant A dns")):
            answers = collections.Counter((udp_ask(lab, "cli1", vip, 53, f"q{i}") or "timeout:").split(":")[0]
                                          for i in range(20))
            print(f"   {vip:<13} {what:<17} answered by {dict(answers)}")
        print("== 10 MB download through the tenant A VIP")
        blob = lab.run_dir / "blob"
        ok, err = curl(lab, "cli1", f"http://{VIP_A}/blob", out=str(blob), timeout=60)
        print(f"   {'ok' if ok else 'FAILED ' + err.strip()}: {blob.stat().st_size if blob.exists() else 0} bytes")

        print("== a SYN flood (hping3, 20000 SYNs from a spoofed lab address) at the SYN-proxied VIP,")
        print("   with a capture of SYNs in tenant A's VMs, while cli2 makes 20 requests")
        caps = [lab.capture(lab.vm(h, 100), "v100", f"demo-{n}.pcap", "tcp[tcpflags] & tcp-syn != 0")
                for h, n in ((1, "a1"), (2, "a2"))]
        flood = lab.spawn("cli1", ["hping3", "-q", "-c", "20000", "-i", "u50", "-S", "-a", "198.18.64.1", "-p", "80",
                                   VIP_S], "demo-hping.log")
        results = [curl(lab, "cli2", f"http://{VIP_S}/") for _ in range(20)]
        ok = sum(r[0] for r in results)
        flood.wait(timeout=120)
        time.sleep(0.5)
        seen = collections.Counter()
        for (h, n), p in zip(((1, "a1"), (2, "a2")), caps):
            lab.stop(p)
            for f in read_pcap(lab.run_dir / f"demo-{n}.pcap"):
                seen[ip4(f[12:16])] += 1
        print(f"   {ok}/20 requests ok; SYNs the VMs saw, by source: {dict(seen)}")
        for err in sorted({r[1].strip() for r in results if not r[0]}):
            print(f"   failed: {err}")

        print("== what each server saw (from its access log): requests by client address")
        for name, log in logs.items():
            by_client = collections.Counter(f"{proto} {ip}" for _, proto, ip, _, _ in access(log))
            print(f"   {name:<4} " + ", ".join(f"{k}: {v}" for k, v in sorted(by_client.items())) or "-")
        print("== stopping sluiced; its counters (non-zero):")
        lab.stop(gw)
        c = counters(gw.log_path.read_text())
        for k in sorted(c):
            if c[k]:
                print(f"   {k} {c[k]}")
    finally:
        lab.down()
        print("== lab down")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "demo"])
    ap.add_argument("--prefix", default="sl")
    ap.add_argument("--sluiced", default=str(ROOT / "target" / "release" / "sluiced"))
    ap.add_argument("--agent", default=str(ROOT / "target" / "release" / "sluice-agent"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab needs root (network namespaces, DPDK)")
    if args.command == "up":
        Lab(prefix=args.prefix).up()
    elif args.command == "down":
        Lab(prefix=args.prefix).down()
    else:
        demo(args)


if __name__ == "__main__":
    main()
