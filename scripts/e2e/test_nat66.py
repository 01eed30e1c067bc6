"""NAT66 end to end, in a dual-stack lab (`Lab(dual=True)`, addresses from 2001:db8::/32):
IPv6 clients reach IPv6 `nat` VIPs, which sluiced translates to the tenant VMs' own IPv6
addresses and ports in GRE keyed by the VPC (over the IPv4 underlay for tenant A's web, over
the IPv6 underlay for its DNS and for tenant B); sluice-agent on the host decapsulates into
the VPC's TUN and tunnels the VM's replies back, which sluiced sends on from the VIP:

- curl -6 through the VIP reaches a tenant VM, which logs the client's own IPv6 address, and
  a 10 MB download arrives byte-identical;
- wrk through the VIP without errors;
- two tenants whose VMs have one IPv6 address on one host are told apart by the GRE key;
- a UDP exchange over the IPv6 underlay;
- a SYN-proxied NAT66 service: cookies for the clients' IPv6 SYNs, the VM's handshake opened
  on the ACK (over either underlay), a 10 MB download through the translated sequence numbers
  and wrk; a flood of IPv6 SYNs from spoofed documentation addresses never reaches the VMs
  while a client is served (and, the control, does reach them at the unproxied VIP);
- sluiced's counters: NAT replies translated, no drops but the lab's background noise.
"""
import hashlib
import ipaddress
import struct
import sys
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import CLIENT6_IPS, SHOP6_PORT, VIP6_A, VIP6_B, VM6, access

TENANT_A, TENANT_B = {"a1", "a2"}, {"b1"}


@pytest.fixture(scope="module")
def nat66_lab(sluiced):
    lab = labmod.Lab(prefix="sn6", dual=True)
    lab.up()
    try:
        lab.logs = lab.start_dual(sluiced, "sluice-lab-n6", ["--print-stats"])
        yield lab
    finally:
        lab.down()



def curl6(lab, cli, url, out="-", timeout=10):
    """curl -6 from `cli`: (ok, body or error, the address and port that answered)."""
    r = lab.run_in(cli, ["curl", "-6", "-sS", "-g", "--max-time", str(timeout), "-o", out,
                          "-w", "\n%{remote_ip} %{remote_port}", url], timeout + 5)
    body, _, peer = r.stdout.rpartition("\n")
    return r.returncode == 0, body if r.returncode == 0 else r.stderr, peer


def clients_seen(lab, names, proto):
    """The client addresses that the named servers logged for `proto` (tcp, udp)."""
    return {ip for n in names for _, p, ip, _, _ in access(lab.logs[n]) if p == proto}


def clear_logs(lab):
    for log in lab.logs.values():
        log.write_text("")


def test_curl_through_an_ipv6_nat_vip_reaches_a_tenant_vm(nat66_lab):
    lab = nat66_lab
    clear_logs(lab)
    bodies = set()
    for cli in ("cli1", "cli2"):
        for _ in range(12):
            ok, body, peer = curl6(lab, cli, f"http://[{VIP6_A}]/")
            assert ok, body
            # The handshake completed with VIP:80, so the VM's replies left sluiced from there.
            assert peer == f"{VIP6_A} 80", peer
            bodies.add(body.strip())
    assert bodies <= TENANT_A and bodies, bodies
    assert clients_seen(lab, TENANT_A, "tcp") == set(CLIENT6_IPS), "the VMs saw the clients' own addresses"
    out = lab.run_dir / "download66"
    ok, err, _ = curl6(lab, "cli1", f"http://[{VIP6_A}]/blob", out=str(out), timeout=60)
    assert ok, err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(blob()).digest(), "10 MB intact"
    print(f"NAT66: curl -6 answered by {sorted(bodies)}, both clients seen by the VMs, 10 MB intact")


def test_wrk_through_an_ipv6_nat_vip(nat66_lab):
    lab = nat66_lab
    reqs, errors, out = labmod.wrk(lab, "cli2", f"http://[{VIP6_A}]/", connections=16, seconds=3)
    print(f"NAT66: wrk {reqs} requests, {errors} errors")
    assert reqs > 100 and errors == 0, out


def test_tenants_with_one_ipv6_address_are_told_apart(nat66_lab):
    # a1 (VPC 100) and b1 (VPC 200) are both [2001:db8:c0::10]:8080 on backend host 1.
    lab = nat66_lab
    assert VM6["a1"] == VM6["b1"]
    clear_logs(lab)
    for _ in range(20):
        ok, body, _ = curl6(lab, "cli1", f"http://[{VIP6_B}]/")
        assert ok and body.strip() == "b1", body
        ok, body, _ = curl6(lab, "cli1", f"http://[{VIP6_A}]/")
        assert ok and body.strip() in TENANT_A, body
    # cli1's requests only: one of wrk's (from cli2) may land after the logs were cleared.
    count = lambda names: sum(1 for n in names for _, p, ip, _, _ in access(lab.logs[n])
                              if p == "tcp" and ip == CLIENT6_IPS[0])
    assert (count(TENANT_B), count(TENANT_A)) == (20, 20)


def test_udp_over_the_ipv6_underlay(nat66_lab):
    lab = nat66_lab
    clear_logs(lab)
    # Asked up to three times, as a resolver does (the first datagram may find the backend
    # host's neighbour entry not yet resolved).
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.settimeout(1)\n"
            "for _ in range(3):\n"
            " s.sendto(sys.argv[2].encode(),(sys.argv[1],53))\n"
            " try:\n  d,a=s.recvfrom(65535);print(d.decode(),a[0],a[1]);break\n"
            " except TimeoutError:\n  pass\n")
    for i in range(10):
        r = lab.run_in("cli1", ["python3", "-c", code, VIP6_A, f"q66-{i}"])
        assert r.returncode == 0 and r.stdout.split() == [f"a1:q66-{i}", VIP6_A, "53"], (r.stdout, r.stderr)
    assert clients_seen(lab, {"a1"}, "udp") == {CLIENT6_IPS[0]}


def test_syn_proxy_for_an_ipv6_vip(nat66_lab):
    lab = nat66_lab
    before = labmod.metrics(lab)
    clear_logs(lab)
    url = f"http://[{VIP6_A}]:{SHOP6_PORT}/"
    bodies = set()
    for _ in range(10):
        ok, body, peer = curl6(lab, "cli1", url)
        assert ok, body
        assert peer == f"{VIP6_A} {SHOP6_PORT}", peer
        bodies.add(body.strip())
    assert bodies <= TENANT_A and bodies, bodies
    assert clients_seen(lab, TENANT_A, "tcp") == {CLIENT6_IPS[0]}, "the VMs saw the client's own address"
    # Sequence numbers translated over a whole download: the VM's ISN is not the cookie.
    out = lab.run_dir / "download-shop6"
    ok, err, _ = curl6(lab, "cli2", f"{url}blob", out=str(out), timeout=60)
    assert ok, err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(blob()).digest(), "10 MB intact"
    after = labmod.metrics(lab)
    grew = {k: after[k] - before.get(k, 0) for k in
            ("sluice_synproxy_cookies_sent_total", "sluice_synproxy_acks_valid_total",
             "sluice_synproxy_handshakes_total")}
    assert all(v >= 11 for v in grew.values()), grew
    reqs, errors, wrk = labmod.wrk(lab, "cli2", url, connections=16, seconds=3)
    assert reqs > 100 and errors == 0, wrk
    print(f"SYN proxy, IPv6 VIP: answered by {sorted(bodies)}, 10 MB intact, wrk {reqs} requests; {grew}")


# Spoofed flood sources: documentation addresses no lab host has (their SYN-ACKs die at the
# router).
FLOOD6_SOURCES = [f"2001:db8:64::{i}" for i in range(1, 5)]
FLOOD6_COUNT = 200_000
# Sends argv[4] TCP SYNs to [argv[2]]:argv[3] from the sources in argv[6:], round robin with
# random ports and sequence numbers, as Ethernet frames on cli0 to the router (MAC argv[1]),
# argv[5] seconds apart. hping3 has no IPv6; this is its `-S -a SOURCE -i` for it.
FLOOD6 = """
import random, socket, sys, time
from scapy.all import Ether, IPv6, TCP, raw
router, vip, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
gap, sources = float(sys.argv[5]), sys.argv[6:]
mac = open("/sys/class/net/cli0/address").read().strip()
frames = [raw(Ether(src=mac, dst=router) / IPv6(src=sources[i % len(sources)], dst=vip, hlim=64)
              / TCP(sport=random.randrange(1024, 65536), dport=port, flags="S", seq=random.getrandbits(32)))
          for i in range(4096)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("cli0", 0))
for i in range(count):
    s.send(frames[i % len(frames)])
    if gap:
        time.sleep(gap)
print(count)
"""


def flood6(lab, port, count, gap=0.0):
    router = lab.sh("rtr", "cat", "/sys/class/net/br-cli/address", capture=True).strip()
    return lab.spawn("cli1", [sys.executable, "-c", FLOOD6, router, VIP6_A, str(port), str(count), str(gap),
                              *FLOOD6_SOURCES],
                     f"flood6-{port}.log")


def syns6_in(pcap):
    """The source address of each IPv6 SYN (without ACK, TCP right after the fixed header) in a
    capture on a VM's TUN (raw IP) or an Ethernet interface."""
    data = Path(pcap).read_bytes()
    linktype = struct.unpack_from("<I", data, 20)[0]
    out = []
    for f in labmod.read_pcap(pcap):
        ip = f[14:] if linktype == 1 else f
        if len(ip) >= 60 and ip[0] >> 4 == 6 and ip[6] == 6 and ip[40 + 13] & 0x12 == 0x02:
            out.append(str(ipaddress.IPv6Address(ip[8:24])))
    return out


def vm_syns6(lab, tag, during):
    """IPv6 SYNs that reached tenant A's VMs while `during()` ran."""
    caps = [(lab.capture(lab.vm(host, 100), "v100", f"{tag}-{name}.pcap", "ip6 and tcp"), lab.run_dir / f"{tag}-{name}.pcap")
            for host, name in ((1, "a1"), (2, "a2"))]
    result = during()
    time.sleep(0.5)
    syns = []
    for p, pcap in caps:
        lab.stop(p, timeout=5)
        syns += syns6_in(pcap)
    return result, syns


def test_an_ipv6_syn_flood_never_reaches_the_vms(nat66_lab):
    lab = nat66_lab
    before = labmod.metrics(lab)

    def flood_and_serve():
        p = flood6(lab, SHOP6_PORT, FLOOD6_COUNT)
        served = [curl6(lab, "cli2", f"http://[{VIP6_A}]:{SHOP6_PORT}/")[0] for _ in range(30)]
        assert p.wait(timeout=120) == 0
        return served

    served, syns = vm_syns6(lab, "flood6", flood_and_serve)
    cookies = labmod.metrics(lab)["sluice_synproxy_cookies_sent_total"] - before["sluice_synproxy_cookies_sent_total"]
    print(f"IPv6 SYN flood: {cookies:.0f} cookies sent, legitimate requests {sum(served)}/30")
    assert all(served), served
    # Most of the flood was answered (an overloaded veth or ring may lose some on the way).
    assert cookies > FLOOD6_COUNT // 2, cookies
    assert not [s for s in syns if s in FLOOD6_SOURCES], "no flood SYN reached a VM"
    # The captures do see SYNs: the appliance's, opening the legitimate client's connections.
    assert syns.count(CLIENT6_IPS[1]) >= 30, syns[:5]


def test_the_same_ipv6_flood_at_an_unproxied_vip_does_reach_the_vms(nat66_lab):
    """The control for the test above: without the proxy the captures see the flood."""
    lab = nat66_lab
    _, syns = vm_syns6(lab, "unproxied6", lambda: flood6(lab, 80, 20, gap=0.01).wait(timeout=60))
    assert sum(1 for s in syns if s in FLOOD6_SOURCES) >= 18, syns


def test_sluiced_counters_after_the_traffic(nat66_lab):
    lab = nat66_lab
    # Run last in the module (pytest keeps file order): stop sluiced and read its counters.
    assert lab.stop(lab.gw) == 0
    c = labmod.counters(lab.gw.log_path.read_text())
    assert c["sluice_nat_replies_total"] > 1000, c
    # The router's and hosts' ARP and neighbour solicitations for each other on the shared
    # segments, and stray kernel multicast.
    # And a SYN-proxied connection's second data segment while its VM's handshake is under
    # way (one is held; the client retransmits the rest), which wrk may send.
    noise = ('reason="arp_not_for_us"', 'reason="nd_not_for_us"', 'reason="not_for_us"',
             'reason="synproxy_not_held"')
    unexpected = {k: v for k, v in c.items() if k.startswith("sluice_drops_total") and v
                  and not any(n in k for n in noise)}
    assert not unexpected, unexpected


def blob():
    import lab_server
    return lab_server.blob()
