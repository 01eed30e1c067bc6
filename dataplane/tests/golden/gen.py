#!/usr/bin/env python3
"""Generates dataplane/tests/golden/cases.txt: golden packets for the pipeline.

Expected outputs are built by scapy, an implementation independent of ours: if our header
layout or checksum arithmetic is wrong, the bytes differ. Run after changing the cases:

    pip install scapy && python3 dataplane/tests/golden/gen.py > dataplane/tests/golden/cases.txt

The appliance these cases assume is built by `testkit::golden::spec()` in
dataplane/src/testkit/golden.rs; keep the two in step.
"""
import socket

from scapy.all import ARP, Dot1Q, Ether, GRE, ICMP, IP, IPOption, Raw, TCP, UDP, fragment, raw
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment)
from scapy.utils6 import in6_getnsma, in6_getnsmac

# Appliance (see dataplane/src/testkit/golden.rs)
EXT_MAC, EXT_IP = "02:00:00:00:00:01", "198.18.0.1"    # port 0, 198.18.0.0/24
INT_MAC, INT_IP = "02:00:00:00:01:01", "198.19.0.1"    # port 1, 198.19.0.0/24
TINY_MAC, TINY_IP = "02:00:00:00:02:01", "198.20.0.1"  # port 2, 198.20.0.0/24, MTU 576
TAG_MAC, TAG_IP = "02:00:00:00:03:01", "198.21.0.1"    # port 3, 198.21.0.0/24, VLAN 100
B10_MAC, B11_MAC = "02:00:00:00:01:0a", "02:00:00:00:01:0b"  # static neighbours on port 1
VIP, VIP2, VIP_DEAD, VIP_UNRES, VIP_TINY = "198.18.10.1", "198.18.10.2", "198.18.10.3", "198.18.10.4", "198.18.10.5"
# NAT: tcp 80 -> 192.0.2.10:8080 in VPC 7 on host 198.19.0.10 (GRE key 7); udp 53 ->
# 192.0.2.20:5353 on the physical network, host 198.19.0.11 (IPIP).
VIP_NAT, NAT_BE, NAT_BE_UDP = "198.18.10.6", "192.0.2.10", "192.0.2.20"
# Services whose only backend failed its health checks: on_no_backend reset (.7), icmp (.8).
VIP_DOWN_RST, VIP_DOWN_ICMP = "198.18.10.7", "198.18.10.8"
# A client on port 0's segment
CLI_MAC, CLI_IP = "02:00:00:00:00:99", "198.18.0.2"
# IPv6 on ports 0 and 1 (testkit::golden::with_ipv6): the router 2001:db8:18::2 (CLI_MAC) is
# port 0's gateway, a next hop whose MAC is learned; 2001:db8:19::a is a static neighbour.
EXT6, ROUTER6, INT6 = "2001:db8:18::1", "2001:db8:18::2", "2001:db8:19::1"
CLI6 = "2001:db8:18::99"  # on port 0's link, not a next hop

cases = []


def case(name, port, frame, out, verdict, pre=None):
    """`pre`: (port, frame) processed first on the same session table (its outcome is not
    checked here), e.g. the client packet that makes the session a NAT reply belongs to."""
    inp = frame if isinstance(frame, bytes) else raw(frame)
    outs = out if isinstance(out, list) else [] if out is None else [out]
    outb = [o if isinstance(o, bytes) else raw(o) for o in outs]
    if pre is not None:
        pre = (pre[0], pre[1] if isinstance(pre[1], bytes) else raw(pre[1]))
    cases.append((name, port, inp, outb, verdict, pre))


def eth_in(dst=EXT_MAC):
    return Ether(dst=dst, src=CLI_MAC)


def ipip(inner, dst, nh_mac, src=INT_IP, src_mac=INT_MAC):
    i = IP(raw(inner))
    df = "DF" if i.flags.DF else 0
    return Ether(dst=nh_mac, src=src_mac) / IP(src=src, dst=dst, proto=4, tos=i.tos, id=i.id, flags=df, ttl=64) / raw(inner)


def gre(inner, dst, nh_mac, key=None):
    i = IP(raw(inner))
    df = "DF" if i.flags.DF else 0
    g = GRE(proto=0x0800, key_present=1, key=key) if key is not None else GRE(proto=0x0800)
    return Ether(dst=nh_mac, src=INT_MAC) / IP(src=INT_IP, dst=dst, proto=47, tos=i.tos, id=i.id, flags=df, ttl=64) / g / raw(inner)


# ---- ARP ---------------------------------------------------------------------------------
req = lambda tpa, dst="ff:ff:ff:ff:ff:ff": Ether(dst=dst, src=CLI_MAC) / ARP(op=1, hwsrc=CLI_MAC, psrc=CLI_IP, hwdst="00:00:00:00:00:00", pdst=tpa)
rep = lambda spa, mac=EXT_MAC: Ether(dst=CLI_MAC, src=mac) / ARP(op=2, hwsrc=mac, psrc=spa, hwdst=CLI_MAC, pdst=CLI_IP)
case("arp request for a VIP is answered", 0, req(VIP), rep(VIP), "arp_reply:0")
case("arp request for the port address is answered", 0, req(EXT_IP), rep(EXT_IP), "arp_reply:0")
case("arp request for another host is dropped", 0, req("198.18.0.77"), None, "drop:arp_not_for_us")
case("arp request padded to 60 bytes keeps its length", 0, req(VIP) / Raw(b"\0" * 18), rep(VIP) / Raw(b"\0" * 18), "arp_reply:0")
case("arp truncated", 0, raw(req(VIP))[:14 + 20], None, "drop:arp_truncated")
case("arp for ipv6 protocol type", 0, Ether(dst="ff:ff:ff:ff:ff:ff", src=CLI_MAC) / ARP(ptype=0x86dd, plen=4, op=1, hwsrc=CLI_MAC, psrc=CLI_IP, pdst=VIP), None, "drop:arp_unsupported")
tagged_req = Ether(dst="ff:ff:ff:ff:ff:ff", src=CLI_MAC) / Dot1Q(vlan=100) / ARP(op=1, hwsrc=CLI_MAC, psrc="198.21.0.2", pdst=TAG_IP)
tagged_rep = Ether(dst=CLI_MAC, src=TAG_MAC) / Dot1Q(vlan=100) / ARP(op=2, hwsrc=TAG_MAC, psrc=TAG_IP, hwdst=CLI_MAC, pdst="198.21.0.2")
case("arp on a tagged port is answered tagged", 3, tagged_req, tagged_rep, "arp_reply:3")
case("tagged frame on an untagged port", 0, Ether(dst="ff:ff:ff:ff:ff:ff", src=CLI_MAC) / Dot1Q(vlan=100) / ARP(op=1, hwsrc=CLI_MAC, psrc=CLI_IP, pdst=VIP), None, "drop:vlan_mismatch")
case("untagged frame on a tagged port", 3, req(TAG_IP), None, "drop:vlan_mismatch")
case("tagged frame with another vlan", 3, Ether(dst="ff:ff:ff:ff:ff:ff", src=CLI_MAC) / Dot1Q(vlan=101) / ARP(op=1, hwsrc=CLI_MAC, psrc="198.21.0.2", pdst=TAG_IP), None, "drop:vlan_mismatch")

# ---- ICMP echo -----------------------------------------------------------------------------
def echo(dst, payload=b"sluice-ping-0123456789", ttl=61):
    return eth_in() / IP(src=CLI_IP, dst=dst, ttl=ttl, id=0x1234, flags="DF") / ICMP(type=8, id=0x77, seq=3) / Raw(payload)


def echo_reply(src, payload=b"sluice-ping-0123456789"):
    return Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=src, dst=CLI_IP, ttl=64, id=0x1234, flags="DF") / ICMP(type=0, id=0x77, seq=3) / Raw(payload)


case("ping of a VIP is answered", 0, echo(VIP), echo_reply(VIP), "echo_reply:0")
case("ping of the port address is answered", 0, echo(EXT_IP), echo_reply(EXT_IP), "echo_reply:0")
case("ping of a VIP with an odd payload and link padding", 0, raw(echo(VIP, b"abc")) + b"\0" * 15, raw(echo_reply(VIP, b"abc")) + b"\0" * 15, "echo_reply:0")
zero_req = eth_in() / IP(src=CLI_IP, dst=VIP, ttl=64, id=0, flags="DF") / ICMP(type=8, id=0, seq=0)
zero_rep = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP, dst=CLI_IP, ttl=64, id=0, flags="DF") / ICMP(type=0, id=0, seq=0)
case("ping with id, sequence and data all zero (reply checksum must be 0xffff)", 0, zero_req, zero_rep, "echo_reply:0")
bad = bytearray(raw(echo(VIP)))
bad[14 + 20 + 2] ^= 0x5a
case("ping with a bad icmp checksum", 0, bytes(bad), None, "drop:icmp_bad_checksum")
case("icmp unreachable to a VIP quoting no IPv4 packet", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / ICMP(type=3, code=3) / Raw(b"x" * 28), None, "drop:icmp_error_malformed")
# The timestamps fixed (scapy fills in the time of day), as when the case was first written.
ts = 0x00F44234
case("icmp timestamp request to a VIP", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / ICMP(type=13, ts_ori=ts, ts_rx=ts, ts_tx=ts) / Raw(b"\0" * 12), None, "drop:icmp_unsupported")
case("icmp truncated", 0, eth_in() / IP(src=CLI_IP, dst=VIP, proto=1) / Raw(b"\x08\x00\x00"), None, "drop:icmp_truncated")

# ---- TCP and UDP to a VIP: DSR tunnels -----------------------------------------------------
syn = IP(src=CLI_IP, dst=VIP, id=0x4242, flags="DF", ttl=63) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64240, options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
# mss_clamp auto: port 1's MTU 1500 less IPIP's 20 less 40 is 1440 (keyed GRE's 28: 1432).
syn_clamped = IP(src=CLI_IP, dst=VIP, id=0x4242, flags="DF", ttl=63) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64240, options=[("MSS", 1440), ("SAckOK", b""), ("WScale", 7)])
case("tcp syn to a VIP goes to its backend in IPIP, its MSS clamped to the tunnel path", 0, eth_in() / syn, ipip(syn_clamped, "198.19.0.10", B10_MAC), "tunnel:1")
syn_small = IP(src=CLI_IP, dst=VIP, id=0x4244, flags="DF", ttl=63) / TCP(sport=40010, dport=80, flags="S", seq=1000, window=64240, options=[("NOP", None), ("MSS", 1400), ("SAckOK", b"")])
case("tcp syn whose MSS fits the tunnel path is unchanged", 0, eth_in() / syn_small, ipip(syn_small, "198.19.0.10", B10_MAC), "tunnel:1")
data = IP(src=CLI_IP, dst=VIP, id=0x4243, flags="DF", tos=0x28) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5) / Raw(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
case("tcp data with a dscp keeps its tos in the outer header", 0, eth_in() / data, ipip(data, "198.19.0.10", B10_MAC), "tunnel:1")
bare = IP(src=CLI_IP, dst=VIP, id=7) / TCP(sport=40001, dport=80, flags="S", seq=1)
padded = raw(eth_in() / bare) + b"\0" * 6
assert len(padded) == 60
case("link padding is not carried into the tunnel", 0, padded, ipip(bare, "198.19.0.10", B10_MAC), "tunnel:1")
opts = IP(src=CLI_IP, dst=VIP, id=9, options=[IPOption(b"\x94\x04\x00\x00")]) / TCP(sport=40002, dport=80, flags="S")
case("ip options are carried inside the tunnel", 0, eth_in() / opts, ipip(opts, "198.19.0.10", B10_MAC), "tunnel:1")
dns = IP(src=CLI_IP, dst=VIP, id=0x1111) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6)
case("udp to a VIP goes in GRE with the service key", 0, eth_in() / dns, gre(dns, "198.19.0.11", B11_MAC, key=1001), "tunnel:1")
syn2 = IP(src=CLI_IP, dst=VIP2, id=0x0101) / TCP(sport=40003, dport=80, flags="S")
case("tcp to a keyless GRE service", 0, eth_in() / syn2, gre(syn2, "198.19.0.10", B10_MAC), "tunnel:1")
tagged_syn = IP(src="198.21.0.2", dst=VIP, id=0x0202) / TCP(sport=40004, dport=80, flags="S")
case("tagged ingress, untagged egress", 3, Ether(dst=TAG_MAC, src=CLI_MAC) / Dot1Q(vlan=100) / tagged_syn, ipip(tagged_syn, "198.19.0.10", B10_MAC), "tunnel:1")

# ---- traffic that is not for a service ----------------------------------------------------
case("tcp to a host that is not a VIP", 0, eth_in() / IP(src=CLI_IP, dst="198.18.0.50") / TCP(sport=1, dport=80), None, "drop:not_for_us")
case("tcp to a VIP port without a service", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / TCP(sport=1, dport=81), None, "drop:no_service")
case("udp to a tcp-only VIP port", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / UDP(sport=1, dport=80), None, "drop:no_service")
case("service with only drained backends", 0, eth_in() / IP(src=CLI_IP, dst=VIP_DEAD) / TCP(sport=1, dport=80), None, "drop:no_backend")
case("backend whose MAC is unknown", 0, eth_in() / IP(src=CLI_IP, dst=VIP_UNRES) / TCP(sport=1, dport=80), None, "drop:neighbor_unresolved")
# Without DF, cut before encapsulation into fragments that fit the tunnel (556: 536 bytes of
# payload each, a multiple of 8), each in its own IPIP packet.
big = IP(src=CLI_IP, dst=VIP_TINY, id=0x5150) / TCP(sport=1, dport=80) / Raw(bytes(range(256)) * 3)
case("packet over the tunnel's MTU without DF: fragments, each tunneled", 0, eth_in() / big, [ipip(f, "198.20.0.10", "02:00:00:00:02:0a", src="198.20.0.1", src_mac="02:00:00:00:02:01") for f in fragment(big, fragsize=536)], "fragments:2")


def too_big(packet, vip, mtu):
    """ICMP fragmentation needed from `vip` to the client quoting `packet` (548 bytes at most)."""
    return Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=vip, dst=CLI_IP, ttl=64, id=0) / ICMP(type=3, code=4, nexthopmtu=mtu) / raw(packet)[:548]


# Port 2's MTU 576 less IPIP's 20: 556 fits.
big_df = IP(src=CLI_IP, dst=VIP_TINY, id=0x5151, flags="DF", ttl=63) / TCP(sport=40030, dport=80, flags="PA", seq=7, ack=9) / Raw(bytes(range(256)) * 3)
case("DF packet too big for the tunnel: fragmentation needed from the VIP, 548 bytes quoted", 0, eth_in() / big_df, too_big(big_df, VIP_TINY, 556), "too_big:0")
case("tcp to the appliance's own address", 0, eth_in() / IP(src=CLI_IP, dst=EXT_IP) / TCP(sport=1, dport=22), None, "drop:local_unsupported")
case("gre to a VIP", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / GRE() / Raw(b"\0" * 20), None, "drop:protocol_unsupported")
case("ip broadcast", 0, Ether(dst="ff:ff:ff:ff:ff:ff", src=CLI_MAC) / IP(src=CLI_IP, dst="255.255.255.255") / UDP(sport=68, dport=67), None, "drop:not_for_us")
case("unicast to another MAC", 0, eth_in(dst="02:00:00:00:00:42") / syn, None, "drop:foreign_mac")
# (scapy gives Raw after Ether the EtherType 0x9000: an unknown EtherType, whatever it carries.)
case("ipv6 ethertype", 0, eth_in() / Raw(bytes.fromhex("6000000000083a40") + b"\0" * 40), None, "drop:ethertype_unsupported")

# ---- NAT (TGW VPC) -------------------------------------------------------------------------
nat_syn = IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=0x4242, flags="DF") / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64240)
nat_syn_dnat = IP(src=CLI_IP, dst=NAT_BE, ttl=63, id=0x4242, flags="DF") / TCP(sport=40000, dport=8080, flags="S", seq=1000, window=64240)
case("tcp syn to a NAT VIP: DNAT to the backend's port, GRE keyed with the VPC", 0, eth_in() / nat_syn, gre(nat_syn_dnat, "198.19.0.10", B10_MAC, key=7), "tunnel:1")
nat_syn_mss = IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=0x4245, flags="DF") / TCP(sport=40020, dport=80, flags="S", seq=1000, window=64240, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
nat_syn_mss_dnat = IP(src=CLI_IP, dst=NAT_BE, ttl=63, id=0x4245, flags="DF") / TCP(sport=40020, dport=8080, flags="S", seq=1000, window=64240, options=[("MSS", 1432), ("NOP", None), ("WScale", 7)])
# Port 1's MTU 1500 less keyed GRE's 28: 1472 fits. The quote is the packet as the client sent
# it (to the VIP), not as it would have gone to the backend.
nat_big = IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=0x4246, flags="DF") / TCP(sport=40021, dport=80, flags="PA", seq=1, ack=1) / Raw(b"n" * 1460)
case("DF packet to a NAT VIP too big for the tunnel: fragmentation needed quoting it as sent", 0, eth_in() / nat_big, too_big(nat_big, VIP_NAT, 1472), "too_big:0")
case("tcp syn to a NAT VIP: DNAT and the MSS clamped to keyed GRE's path", 0, eth_in() / nat_syn_mss, gre(nat_syn_mss_dnat, "198.19.0.10", B10_MAC, key=7), "tunnel:1")
nat_dns = IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=7) / UDP(sport=5555, dport=53) / Raw(b"query")
nat_dns_dnat = IP(src=CLI_IP, dst=NAT_BE_UDP, ttl=63, id=7) / UDP(sport=5555, dport=5353) / Raw(b"query")
case("udp to a NAT VIP on the physical network: DNAT in IPIP", 0, eth_in() / nat_dns, ipip(nat_dns_dnat, "198.19.0.11", B11_MAC), "tunnel:1")
nat_dns0 = IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=8) / UDP(sport=5556, dport=53, chksum=0) / Raw(b"query")
nat_dns0_dnat = IP(src=CLI_IP, dst=NAT_BE_UDP, ttl=63, id=8) / UDP(sport=5556, dport=5353, chksum=0) / Raw(b"query")
case("udp without a checksum stays without one through DNAT", 0, eth_in() / nat_dns0, ipip(nat_dns0_dnat, "198.19.0.11", B11_MAC), "tunnel:1")


# ---- ICMP errors about a flow of a VIP ----------------------------------------------------------
ROUTER_FAR = "203.0.113.9"   # a router on the way to the client


def icmp_err(vip, quoted, t=3, c=4, mtu=1400, n=None):
    """An ICMP error from a far router to `vip` quoting the first `n` bytes of `quoted` (a
    packet the service sent to the client)."""
    q = raw(quoted)[:n] if n else raw(quoted)
    extra = dict(nexthopmtu=mtu) if (t, c) == (3, 4) else {}
    return IP(src=ROUTER_FAR, dst=vip, ttl=60, id=0x0e0e) / ICMP(type=t, code=c, **extra) / q


to_client = IP(src=VIP, dst=CLI_IP, id=0x77, flags="DF") / TCP(sport=80, dport=40000, flags="PA", seq=5000, ack=1001) / Raw(bytes(range(200)))
e = icmp_err(VIP, to_client, n=548)
case("fragmentation needed to a VIP about a dsr flow: to its backend unchanged", 0, eth_in() / e, ipip(e, "198.19.0.10", B10_MAC), "tunnel:1")
dns_to_client = IP(src=VIP, dst=CLI_IP, id=0x78) / UDP(sport=53, dport=5555) / Raw(b"answer")
e = icmp_err(VIP, dns_to_client, t=11, c=0)
case("time exceeded to a VIP about a dsr udp flow: in the service's GRE", 0, eth_in() / e, gre(e, "198.19.0.11", B11_MAC, key=1001), "tunnel:1")
# nat: the quote is what the appliance sent the client (VIP_NAT:80); the backend gets it as
# it sent it (192.0.2.10:8080), every checksum recomputed by scapy.
nat_to_client = lambda src, sport: IP(src=src, dst=CLI_IP, id=0x79, flags="DF") / TCP(sport=sport, dport=40000, flags="A", seq=5001, ack=1001) / Raw(b"d" * 1300)
for n, what in ((28, "28 bytes quoted"), (548, "548 bytes quoted, the TCP checksum among them")):
    e_in = icmp_err(VIP_NAT, nat_to_client(VIP_NAT, 80), n=n)
    e_out = IP(src=ROUTER_FAR, dst=NAT_BE, ttl=60, id=0x0e0e) / ICMP(type=3, code=4, nexthopmtu=1400) / raw(nat_to_client(NAT_BE, 8080))[:n]
    case(f"fragmentation needed to a NAT VIP, {what}: translated to the backend's form", 0, eth_in() / e_in, gre(e_out, "198.19.0.10", B10_MAC, key=7), "tunnel:1", pre=(0, eth_in() / nat_syn))
e = icmp_err(VIP, IP(src=VIP, dst=CLI_IP) / TCP(sport=81, dport=40000))
case("icmp error quoting a port of the VIP without a service", 0, eth_in() / e, None, "drop:icmp_error_unknown")
e = icmp_err(VIP, IP(src=VIP2, dst=CLI_IP) / TCP(sport=80, dport=40000))
case("icmp error to one VIP quoting another's packet", 0, eth_in() / e, None, "drop:icmp_error_unknown")
e = icmp_err(VIP, IP(src=VIP, dst=CLI_IP) / TCP(sport=80, dport=40000), n=24)
case("icmp error whose quote stops inside the ports", 0, eth_in() / e, None, "drop:icmp_error_malformed")
bad_icmp = bytearray(raw(eth_in() / icmp_err(VIP, to_client, n=60)))
bad_icmp[14 + 20 + 30] ^= 0x01
case("icmp error to a VIP with a bad checksum", 0, bytes(bad_icmp), None, "drop:icmp_bad_checksum")


def from_host(inner, host="198.19.0.10", mac=B10_MAC, key=7, proto=47):
    g = GRE(proto=0x0800, key_present=1, key=key) if key is not None else GRE(proto=0x0800)
    outer = IP(src=host, dst=INT_IP, proto=proto, ttl=64)
    return Ether(dst=INT_MAC, src=mac) / (outer / g / inner if proto == 47 else outer / inner)


synack = IP(src=NAT_BE, dst=CLI_IP, ttl=64, id=0x99) / TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001, window=65160) / Raw(b"hello")
synack_out = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_NAT, dst=CLI_IP, ttl=64, id=0x99) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001, window=65160) / Raw(b"hello")
pre_syn = (0, eth_in() / nat_syn)
case("nat reply in the VPC's GRE: out of the tunnel, source back to VIP:port, to the client", 1, from_host(synack), synack_out, "nat_reply:0", pre=pre_syn)
case("nat reply with link padding after the tunnel", 1, raw(from_host(synack)) + b"\0" * 9, synack_out, "nat_reply:0", pre=pre_syn)
synack_mss = IP(src=NAT_BE, dst=CLI_IP, ttl=64, id=0x9a) / TCP(sport=8080, dport=40020, flags="SA", seq=5000, ack=1001, window=65160, options=[("MSS", 8960), ("SAckOK", b"")])
synack_mss_out = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_NAT, dst=CLI_IP, ttl=64, id=0x9a) / TCP(sport=80, dport=40020, flags="SA", seq=5000, ack=1001, window=65160, options=[("MSS", 1432), ("SAckOK", b"")])
case("nat syn-ack: the backend's MSS clamped to the tunnel path the client's segments take", 1, from_host(synack_mss), synack_mss_out, "nat_reply:0", pre=(0, eth_in() / nat_syn_mss))
dns_reply = IP(src=NAT_BE_UDP, dst=CLI_IP, ttl=64, id=3) / UDP(sport=5353, dport=5555) / Raw(b"answer")
dns_reply_out = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_NAT, dst=CLI_IP, ttl=64, id=3) / UDP(sport=53, dport=5555) / Raw(b"answer")
case("nat reply over IPIP (physical network)", 1, from_host(dns_reply, "198.19.0.11", B11_MAC, None, 4), dns_reply_out, "nat_reply:0", pre=(0, eth_in() / nat_dns))
# A backend's ICMP error about a client's packet comes back through its host: to the client
# from the VIP, quoting the packet as the client sent it.
def from_client(dst, dport, sport=40000):
    return IP(src=CLI_IP, dst=dst, id=0x42, flags="DF") / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=5001) / Raw(b"c" * 100)


be_err = IP(src=NAT_BE, dst=CLI_IP, ttl=64, id=0x9b) / ICMP(type=3, code=4, nexthopmtu=1400) / raw(from_client(NAT_BE, 8080))
be_err_out = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_NAT, dst=CLI_IP, ttl=64, id=0x9b) / ICMP(type=3, code=4, nexthopmtu=1400) / raw(from_client(VIP_NAT, 80))
case("a nat backend's icmp error through its host: to the client in the VIP's form", 1, from_host(be_err), be_err_out, "nat_reply:0", pre=pre_syn)
udp_err = IP(src=NAT_BE_UDP, dst=CLI_IP, ttl=64, id=0x9c) / ICMP(type=3, code=3) / raw(IP(src=CLI_IP, dst=NAT_BE_UDP, ttl=63, id=7) / UDP(sport=5555, dport=5353) / Raw(b"query"))
udp_err_out = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_NAT, dst=CLI_IP, ttl=64, id=0x9c) / ICMP(type=3, code=3) / raw(IP(src=CLI_IP, dst=VIP_NAT, ttl=63, id=7) / UDP(sport=5555, dport=53) / Raw(b"query"))
case("a nat backend's port unreachable over IPIP: to the client in the VIP's form", 1, from_host(udp_err, "198.19.0.11", B11_MAC, None, 4), udp_err_out, "nat_reply:0", pre=(0, eth_in() / nat_dns))
be_err_other = IP(src=NAT_BE, dst=CLI_IP, ttl=64) / ICMP(type=3, code=3) / raw(from_client(NAT_BE, 8080, sport=40999))
case("a nat backend's icmp error about no session", 1, from_host(be_err_other), None, "drop:nat_no_session", pre=pre_syn)
case("nat reply without a session", 1, from_host(synack), None, "drop:nat_no_session")
case("nat reply in another VPC's tunnel", 1, from_host(synack, key=8), None, "drop:nat_no_session", pre=pre_syn)
case("nat reply from another backend port", 1, from_host(IP(src=NAT_BE, dst=CLI_IP) / TCP(sport=8081, dport=40000, flags="A")), None, "drop:nat_no_session", pre=pre_syn)
bad_gre = bytearray(raw(Ether(dst=INT_MAC, src=B10_MAC) / IP(src="198.19.0.10", dst=INT_IP, proto=47) / GRE(proto=0x0800, chksum_present=1, key_present=1, key=7) / synack))
bad_gre[14 + 20 + 4] ^= 0xff
case("nat reply with a bad GRE checksum", 1, bytes(bad_gre), None, "drop:tunnel_malformed", pre=pre_syn)
case("GRE carrying something other than IPv4 or IPv6", 1, Ether(dst=INT_MAC, src=B10_MAC) / IP(src="198.19.0.10", dst=INT_IP, proto=47) / GRE(proto=0x6558, key_present=1, key=7) / Raw(b"\0" * 40), None, "drop:tunnel_malformed")
case("nat reply whose inner packet is truncated", 1, from_host(Raw(raw(synack)[:30])), None, "drop:nat_reply_malformed", pre=pre_syn)
far_syn = IP(src="203.0.113.9", dst=VIP_NAT, ttl=63) / TCP(sport=41000, dport=80, flags="S")
far_reply = IP(src=NAT_BE, dst="203.0.113.9") / TCP(sport=8080, dport=41000, flags="SA")
case("nat reply to a client with no route back", 1, from_host(far_reply), None, "drop:no_route_to_client", pre=(0, eth_in() / far_syn))

# ---- SYN proxy ---------------------------------------------------------------------------
# VIP .9 tcp/80: NAT to 192.0.2.10:8080 in VPC 7 with synproxy. The cookie is recomputed here
# with a SipHash-2-4 of our own from the keys testkit::synproxy() gives the proxy (base
# [1, 2], slots [[3, 4], [5, 6]]), at time 1 ns: cookie period 0, the appliance's timestamp
# clock 0.
VIP_SP = "198.18.10.9"
M64 = (1 << 64) - 1


def siphash24(k0, k1, data):
    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & M64
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rnd():
        v[0] = (v[0] + v[1]) & M64; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M64; v[3] = rotl(v[3], 16); v[3] ^= v[2]
        v[0] = (v[0] + v[3]) & M64; v[3] = rotl(v[3], 21); v[3] ^= v[0]
        v[2] = (v[2] + v[1]) & M64; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32)
    tail = len(data) % 8
    for i in range(0, len(data) - tail, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v[3] ^= m; rnd(); rnd(); v[0] ^= m
    b = (len(data) & 0xFF) << 56 | int.from_bytes(data[len(data) - tail:], "little")
    v[3] ^= b; rnd(); rnd(); v[0] ^= b
    v[2] ^= 0xFF
    for _ in range(4):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def flow_bytes(src, sport, dst, dport):
    a = lambda ip: (0xFFFF00000000 | int.from_bytes(bytes(map(int, ip.split("."))), "big")).to_bytes(16, "little")
    return a(src) + a(dst) + (sport << 16 | dport).to_bytes(4, "little")


def cookie(src, sport, dst, dport, isn, t, mss_i, ws, sack, ts):
    """dataplane/src/cookie.rs, independently: H1 + isn + t << 24 + (options | MAC << 9)."""
    f = flow_bytes(src, sport, dst, dport)
    o = mss_i | (15 if ws is None else ws) << 3 | sack << 7 | ts << 8
    key = (3, 4) if (t // 4) % 2 == 0 else (5, 6)
    mac = siphash24(*key, f + t.to_bytes(4, "little") + isn.to_bytes(4, "little") + o.to_bytes(4, "little"))
    h1 = siphash24(1, 2, f) & 0xFFFFFFFF
    return (h1 + isn + ((t & 0xFF) << 24) + (o | (mac & 0x7FFF) << 9)) & 0xFFFFFFFF


SP_ISN, SP_TS = 0xFFFFFFF0, 12345
sp_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (SP_TS, 0)), ("NOP", None), ("WScale", 7)]
sp_syn = IP(src=CLI_IP, dst=VIP_SP, ttl=63, id=0x5151, flags="DF") / TCP(sport=40300, dport=80, flags="S", seq=SP_ISN, window=64240, options=sp_opts)
SP_COOKIE = cookie(CLI_IP, 40300, VIP_SP, 80, SP_ISN, 0, 6, 7, 1, 1)  # MSS_TABLE[6] = 1460
# MSS: the tunnel path (1500 less GRE with a key, 28) less 40; the window: 536 bytes, one segment from any stack (synproxy::FIRST_WINDOW).
sp_synack = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_SP, dst=CLI_IP, ttl=64, id=0, flags="DF") / TCP(
    sport=80, dport=40300, flags="SA", seq=SP_COOKIE, ack=(SP_ISN + 1) & 0xFFFFFFFF, window=536,
    options=[("MSS", 1432), ("SAckOK", b""), ("Timestamp", (0, SP_TS)), ("NOP", None), ("WScale", 7)])
case("syn to a SYN-proxied VIP: a SYN-ACK with the cookie, nothing kept", 0, eth_in() / sp_syn, sp_synack, "synack:0")
sp_ack = IP(src=CLI_IP, dst=VIP_SP, ttl=63, id=0x5152, flags="DF") / TCP(
    sport=40300, dport=80, flags="A", seq=(SP_ISN + 1) & 0xFFFFFFFF, ack=(SP_COOKIE + 1) & 0xFFFFFFFF, window=502,
    options=[("NOP", None), ("NOP", None), ("Timestamp", (SP_TS + 1, 0))])
# The backend's SYN: the client's ISN and options (MSS clamped to the path), its newer timestamp.
sp_backend_syn = IP(src=CLI_IP, dst=NAT_BE, ttl=64, id=0x5152, flags="DF") / TCP(
    sport=40300, dport=8080, flags="S", seq=SP_ISN, window=502,
    options=[("MSS", 1432), ("SAckOK", b""), ("Timestamp", (SP_TS + 1, 0)), ("NOP", None), ("WScale", 7)])
case("ack with a valid cookie: the SYN to the backend, with the client's options", 0, eth_in() / sp_ack, gre(sp_backend_syn, "198.19.0.10", B10_MAC, key=7), "tunnel:1")
sp_forged = sp_ack.copy()
sp_forged[TCP].ack = (SP_COOKIE + 2) & 0xFFFFFFFF
case("ack with a forged cookie to a SYN-proxied VIP", 0, eth_in() / sp_forged, None, "drop:syn_cookie_invalid")
case("rst to a SYN-proxied VIP without a session", 0, eth_in() / IP(src=CLI_IP, dst=VIP_SP) / TCP(sport=40301, dport=80, flags="R", seq=1), None, "drop:synproxy_no_session")
case("syn with malformed options to a SYN-proxied VIP", 0, eth_in() / IP(src=CLI_IP, dst=VIP_SP) / TCP(sport=40302, dport=80, flags="S", dataofs=6) / Raw(b"\x02\x03\x05\x00"), None, "drop:synproxy_malformed")

# ---- no backend can take a new flow: on_no_backend ----------------------------------------
down_syn = IP(src=CLI_IP, dst=VIP_DOWN_RST, ttl=63, id=0x1111) / TCP(sport=40100, dport=80, flags="S", seq=7000)
down_rst = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_DOWN_RST, dst=CLI_IP, ttl=64, id=0, flags="DF") / TCP(sport=80, dport=40100, flags="RA", seq=0, ack=7001, window=0)
case("new tcp flow, every backend down, on_no_backend reset: RST from the VIP", 0, eth_in() / down_syn, down_rst, "reset:0")
case("new udp flow, every backend down, on_no_backend reset: dropped", 0, eth_in() / IP(src=CLI_IP, dst=VIP_DOWN_RST) / UDP(sport=1, dport=80), None, "drop:no_backend")
icmp_syn = IP(src=CLI_IP, dst=VIP_DOWN_ICMP, ttl=63, id=0x2222) / TCP(sport=40200, dport=80, flags="S", seq=9) / Raw(b"data")
unreach = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_DOWN_ICMP, dst=CLI_IP, ttl=64, id=0) / ICMP(type=3, code=3) / raw(icmp_syn)[:28]
case("new tcp flow, every backend down, on_no_backend icmp_unreachable", 0, eth_in() / icmp_syn, unreach, "unreachable:0")
small_udp = IP(src=CLI_IP, dst=VIP_DOWN_ICMP, ttl=63, id=5) / UDP(sport=7, dport=80)
unreach_udp = Ether(dst=CLI_MAC, src=EXT_MAC) / IP(src=VIP_DOWN_ICMP, dst=CLI_IP, ttl=64, id=0) / ICMP(type=3, code=3) / raw(small_udp)[:28]
case("a minimal udp datagram grows into its icmp unreachable", 0, eth_in() / small_udp, unreach_udp, "unreachable:0")

# ---- malformed -----------------------------------------------------------------------------
good = raw(eth_in() / syn)


def mutate(b, at, val):
    b = bytearray(b)
    b[at] = val
    return bytes(b)


case("ethernet truncated", 0, good[:10], None, "drop:eth_truncated")
case("vlan tag truncated", 0, raw(Ether(dst=EXT_MAC, src=CLI_MAC, type=0x8100)) + b"\x00\x64", None, "drop:eth_truncated")
case("ipv4 header truncated", 0, good[:14 + 12], None, "drop:ipv4_truncated")
case("ipv4 ihl below 5", 0, mutate(good, 14, 0x44), None, "drop:ipv4_malformed")
case("ipv4 version 6 under the ipv4 ethertype", 0, mutate(good, 14, 0x65), None, "drop:ipv4_malformed")
case("ipv4 total length past the frame", 0, mutate(good, 17, good[17] + 1), None, "drop:ipv4_truncated")
case("ipv4 total length under the header", 0, mutate(mutate(good, 16, 0), 17, 16), None, "drop:ipv4_malformed")
case("ipv4 header longer than its total length", 0, mutate(good, 14, 0x4f), None, "drop:ipv4_malformed")
case("ipv4 bad header checksum", 0, mutate(good, 14 + 10, good[14 + 10] ^ 0xff), None, "drop:ipv4_bad_checksum")
first_frag = IP(src=CLI_IP, dst=VIP, flags="MF", id=5) / TCP(sport=1, dport=80)
case("first fragment to a VIP: to the datagram's backend", 0, eth_in() / first_frag, ipip(first_frag, "198.19.0.10", B10_MAC), "tunnel:1")
case("later fragment to a VIP whose first was not seen", 0, eth_in() / IP(src=CLI_IP, dst=VIP, frag=100, id=5, proto=6) / Raw(b"x" * 16), None, "drop:fragment_no_first")
case("fragment to the appliance's own address", 0, eth_in() / IP(src=CLI_IP, dst=EXT_IP, flags="MF", id=6) / UDP(sport=1, dport=53), None, "drop:ipv4_fragment")
case("tcp header truncated", 0, eth_in() / IP(src=CLI_IP, dst=VIP, proto=6) / Raw(b"\x9c\x40\x00\x50" + b"\0" * 6), None, "drop:l4_truncated")
case("tcp data offset below 5", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / TCP(sport=1, dport=80, dataofs=4), None, "drop:l4_malformed")
case("tcp options past the segment", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / TCP(sport=1, dport=80, dataofs=15), None, "drop:l4_truncated")
case("udp length below 8", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / UDP(sport=1, dport=53, len=7), None, "drop:l4_malformed")
case("udp length past the datagram", 0, eth_in() / IP(src=CLI_IP, dst=VIP) / UDP(sport=1, dport=53, len=40) / Raw(b"x" * 4), None, "drop:l4_truncated")

# ---- IPv6: neighbor discovery and echo on the data ports --------------------------------------
def nsma(a):
    """The solicited-node multicast address of `a` and its MAC (scapy's)."""
    group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, a)))
    return group, in6_getnsmac(socket.inet_pton(socket.AF_INET6, group))


EXT_NSMA, EXT_NSMA_MAC = nsma(EXT6)


def ns(src, dst, tgt, eth_dst, lladdr=CLI_MAC, hlim=255, eth_src=CLI_MAC):
    m = ICMPv6ND_NS(tgt=tgt)
    if lladdr is not None:
        m = m / ICMPv6NDOptSrcLLAddr(lladdr=lladdr)
    return Ether(dst=eth_dst, src=eth_src) / IPv6(src=src, dst=dst, hlim=hlim) / m


def na_from_port(dst, eth_dst, solicited=1, tgt=EXT6):
    return Ether(dst=eth_dst, src=EXT_MAC) / IPv6(src=tgt, dst=dst, hlim=255) / ICMPv6ND_NA(tgt=tgt, R=0, S=solicited, O=1) / ICMPv6NDOptDstLLAddr(lladdr=EXT_MAC)


case("nd: solicitation for the port address to its solicited-node group is answered", 0, ns(CLI6, EXT_NSMA, EXT6, EXT_NSMA_MAC), na_from_port(CLI6, CLI_MAC), "nd_advert:0")
case("nd: unicast solicitation without a link-layer option: answered to the frame's source", 0, ns(CLI6, EXT6, EXT6, EXT_MAC, lladdr=None), na_from_port(CLI6, CLI_MAC), "nd_advert:0")
case("nd: solicitation whose link-layer option names another MAC: answered there", 0, ns(CLI6, EXT_NSMA, EXT6, EXT_NSMA_MAC, lladdr="02:00:00:00:00:77"), na_from_port(CLI6, "02:00:00:00:00:77"), "nd_advert:0")
case("nd: duplicate address detection for the port address: defended to all nodes", 0, ns("::", EXT_NSMA, EXT6, EXT_NSMA_MAC, lladdr=None), na_from_port("ff02::1", "33:33:00:00:00:01", solicited=0), "nd_advert:0")
case("nd: solicitation from the router (a next hop) is answered", 0, ns(ROUTER6, EXT_NSMA, EXT6, EXT_NSMA_MAC), na_from_port(ROUTER6, CLI_MAC), "nd_advert:0")
case("nd: solicitation with link padding: the advertisement is cut to its length", 0, raw(ns(CLI6, EXT6, EXT6, EXT_MAC)) + b"\0" * 10, na_from_port(CLI6, CLI_MAC), "nd_advert:0")
case("nd: solicitation for an address the appliance does not have", 0, ns(CLI6, nsma("2001:db8:18::77")[0], "2001:db8:18::77", nsma("2001:db8:18::77")[1]), None, "drop:nd_not_for_us")
case("nd: solicitation for the other port's address", 0, ns(CLI6, nsma(INT6)[0], INT6, nsma(INT6)[1]), None, "drop:nd_not_for_us")
case("nd: solicitation with hop limit 254 (forwarded, not from the link)", 0, ns(CLI6, EXT_NSMA, EXT6, EXT_NSMA_MAC, hlim=254), None, "drop:nd_invalid")
bad_ns = bytearray(raw(ns(CLI6, EXT_NSMA, EXT6, EXT_NSMA_MAC)))
bad_ns[14 + 40 + 2] ^= 0x5a
case("nd: solicitation with a bad checksum", 0, bytes(bad_ns), None, "drop:nd_invalid")
case("nd: duplicate address detection with a link-layer option", 0, ns("::", EXT_NSMA, EXT6, EXT_NSMA_MAC), None, "drop:nd_invalid")
na_in = lambda src, tgt, lladdr, dst=EXT6, eth_dst=EXT_MAC, S=1, O=1: Ether(dst=eth_dst, src=CLI_MAC) / IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NA(tgt=tgt, R=1, S=S, O=O) / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
case("nd: advertisement from the router (the port's gateway): its MAC learned", 0, na_in(ROUTER6, ROUTER6, CLI_MAC), None, "consumed")
case("nd: unsolicited advertisement from the router to all nodes: its MAC learned", 0, na_in(ROUTER6, ROUTER6, CLI_MAC, dst="ff02::1", eth_dst="33:33:00:00:00:01", S=0), None, "consumed")
case("nd: advertisement from a host the appliance does not send to", 0, na_in(CLI6, CLI6, CLI_MAC), None, "drop:nd_not_for_us")
case("nd: router solicitation to all routers", 0, Ether(dst="33:33:00:00:00:02", src=CLI_MAC) / IPv6(src=CLI6, dst="ff02::2", hlim=255) / ICMPv6ND_RS(), None, "drop:not_for_us")
case("nd: solicitation to another group", 0, ns(CLI6, "ff02::2", EXT6, "33:33:00:00:00:02"), None, "drop:not_for_us")


def echo6(dst, payload=b"sluice-ping6-0123456789", hlim=61, ext=None, src=CLI6):
    ip = IPv6(src=src, dst=dst, hlim=hlim, fl=0x12345)
    e = ICMPv6EchoRequest(id=0x77, seq=3, data=payload)
    return eth_in() / (ip / ext / e if ext is not None else ip / e)


def echo6_reply(src, payload=b"sluice-ping6-0123456789", dst=CLI6):
    return Ether(dst=CLI_MAC, src=EXT_MAC) / IPv6(src=src, dst=dst, hlim=64, fl=0x12345) / ICMPv6EchoReply(id=0x77, seq=3, data=payload)


case("icmpv6 echo to the port address is answered", 0, echo6(EXT6), echo6_reply(EXT6), "echo_reply:0")
case("icmpv6 echo to the other port's address is answered", 0, echo6(INT6), echo6_reply(INT6), "echo_reply:0")
case("icmpv6 echo with link padding keeps it", 0, raw(echo6(EXT6, b"ab")) + b"\0" * 6, raw(echo6_reply(EXT6, b"ab")) + b"\0" * 6, "echo_reply:0")
case("icmpv6 echo after a destination options header: answered without it", 0, echo6(EXT6, ext=IPv6ExtHdrDestOpt()), echo6_reply(EXT6), "echo_reply:0")
eight = IPv6ExtHdrDestOpt()
for _ in range(7):
    eight = eight / IPv6ExtHdrDestOpt()
case("icmpv6 echo after eight extension headers (the most walked)", 0, echo6(EXT6, ext=eight), echo6_reply(EXT6), "echo_reply:0")
case("icmpv6 echo after nine extension headers", 0, echo6(EXT6, ext=eight / IPv6ExtHdrDestOpt()), None, "drop:ipv6_malformed")
bad_echo6 = bytearray(raw(echo6(EXT6)))
bad_echo6[14 + 40 + 2] ^= 0x5a
case("icmpv6 echo with a bad checksum", 0, bytes(bad_echo6), None, "drop:icmp_bad_checksum")
case("icmpv6 echo truncated", 0, eth_in() / IPv6(src=CLI6, dst=EXT6, nh=58) / Raw(b"\x80\x00\x00\x00"), None, "drop:icmp_truncated")
case("icmpv6 echo to all nodes", 0, Ether(dst="33:33:00:00:00:01", src=CLI_MAC) / IPv6(src=CLI6, dst="ff02::1") / ICMPv6EchoRequest(id=1, seq=1), None, "drop:not_for_us")
case("icmpv6 error to the port address", 0, eth_in() / IPv6(src=CLI6, dst=EXT6) / ICMPv6DestUnreach(code=4) / raw(IPv6(src=EXT6, dst=CLI6) / UDP(sport=53, dport=5353)), None, "drop:icmpv6_unsupported")
case("ipv6 tcp to the port address", 0, eth_in() / IPv6(src=CLI6, dst=EXT6) / TCP(sport=40000, dport=22, flags="S"), None, "drop:local_unsupported")
case("ipv6 udp to another host", 0, eth_in() / IPv6(src=CLI6, dst="2001:db8:18::50") / UDP(sport=1, dport=53), None, "drop:not_for_us")
case("ipv6 fragment to the port address", 0, eth_in() / IPv6(src=CLI6, dst=EXT6) / IPv6ExtHdrFragment(m=1, id=7) / ICMPv6EchoRequest(id=1, seq=1), None, "drop:ipv6_fragment")
good6 = raw(echo6(EXT6))
case("ipv6 header truncated", 0, good6[:14 + 30], None, "drop:ipv6_truncated")
case("ipv6 payload length past the frame", 0, mutate(good6, 14 + 5, good6[14 + 5] + 1), None, "drop:ipv6_truncated")
case("ipv6 extension header running past the payload", 0, eth_in() / IPv6(src=CLI6, dst=EXT6, nh=60) / Raw(b"\x3a\x01" + b"\0" * 6), None, "drop:ipv6_truncated")
case("ipv6 version 4 under the ipv6 ethertype", 0, mutate(good6, 14, 0x40), None, "drop:ipv6_malformed")
case("ipv6 from a multicast source", 0, echo6(EXT6, src="ff02::1"), None, "drop:ipv6_malformed")
case("ipv6 from the unspecified source, not neighbor discovery", 0, echo6(EXT6, src="::"), None, "drop:ipv6_malformed")

# ---- IPv6 services: each encapsulation -----------------------------------------------------
VIP6, HOST6_10, VIP_OVER6 = "2001:db8:10::1", "2001:db8:19::a", "198.18.10.10"
SVC_WEB6, SVC_DNS6, SVC_OVER6 = 13, 14, 15  # service ids: the order of testkit::golden::spec()
M64 = (1 << 64) - 1


def mix64(x):
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & M64
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M64
    return x ^ (x >> 33)


def flow_label(client, sport, service_id, seed=1):
    """The outer IPv6 flow label of a flow's tunnel: bits 32..51 of its session hash
    (SessionTable::hash over the client's address (IPv4 mapped), port and the service id, with
    the golden tests' table seed 1)."""
    if ":" in client:
        a = int.from_bytes(socket.inet_pton(socket.AF_INET6, client), "big")
    else:
        a = 0xffff00000000 | int.from_bytes(socket.inet_aton(client), "big")
    seeds = [mix64(seed ^ 1), mix64(seed ^ 2), mix64(seed ^ 3)]
    w = [a & M64, a >> 64, sport | 1 << 16 | service_id << 32]
    k = [0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9]
    x = 0
    for wi, si, ki in zip(w, seeds, k):
        x ^= ((wi ^ si) * ki) & M64
    return (mix64(x) >> 32) & 0xfffff


def over6(inner, nh, key=None, label=0):
    """`inner` tunneled from port 1 over IPv6 to `nh` (2001:db8:19::a): IPv4 or IPv6 in IPv6,
    or GRE with `key`; the outer traffic class is the inner TOS or class."""
    b = raw(inner)
    v6 = b[0] >> 4 == 6
    tc = IPv6(b).tc if v6 else IP(b).tos
    ip = IPv6(src=INT6, dst=nh, tc=tc, fl=label, hlim=64)
    if key is None:
        tunnel = ip / Raw(b)
        tunnel.nh = 41 if v6 else 4
    else:
        tunnel = ip / GRE(proto=0x86DD if v6 else 0x0800, key_present=1, key=key) / Raw(b)
    return Ether(dst=B10_MAC, src=INT_MAC) / tunnel


syn6 = IPv6(src=CLI6, dst=VIP6, tc=0x28, fl=0x12345, hlim=61) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64800, options=[("MSS", 1440), ("SAckOK", b"")])
syn6_clamped = IPv6(src=CLI6, dst=VIP6, tc=0x28, fl=0x12345, hlim=61) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64800, options=[("MSS", 1420), ("SAckOK", b"")])
v6_in_v4 = Ether(dst=B10_MAC, src=INT_MAC) / IP(src=INT_IP, dst="198.19.0.10", proto=41, tos=0x28, id=0, flags="DF", ttl=64) / raw(syn6_clamped)
case("ipv6 tcp syn to a dsr vip: ipv6 in ipip over ipv4, its MSS clamped to the path (1480 - 60)", 0, eth_in() / syn6, v6_in_v4, "tunnel:1")
data6 = IPv6(src=CLI6, dst=VIP6, hlim=61) / IPv6ExtHdrDestOpt() / TCP(sport=40001, dport=80, flags="PA", seq=5, ack=7) / Raw(b"GET / HTTP/1.1\r\n\r\n")
case("ipv6 tcp after a destination options header: carried whole", 0, eth_in() / data6, Ether(dst=B10_MAC, src=INT_MAC) / IP(src=INT_IP, dst="198.19.0.10", proto=41, tos=0, id=0, flags="DF", ttl=64) / raw(data6), "tunnel:1")
dns6 = IPv6(src=CLI6, dst=VIP6, hlim=61, tc=0xb8) / UDP(sport=40053, dport=53) / Raw(b"query")
case("ipv6 udp to a dsr vip: gre with its key over ipv6, flow label from the flow", 0, eth_in() / dns6, over6(dns6, HOST6_10, key=6, label=flow_label(CLI6, 40053, SVC_DNS6)), "tunnel:1")
web4 = IP(src=CLI_IP, dst=VIP_OVER6, ttl=63, tos=0x10, id=0x3333, flags="DF") / TCP(sport=40002, dport=80, flags="A", seq=1, ack=1)
case("ipv4 to a vip whose backend is on the ipv6 underlay: ipv4 in ipv6", 0, eth_in() / web4, over6(web4, HOST6_10, label=flow_label(CLI_IP, 40002, SVC_OVER6)), "tunnel:1")
big6 = IPv6(src=CLI6, dst=VIP6, hlim=61) / TCP(sport=40003, dport=80, flags="PA", seq=9, ack=9) / Raw((bytes(range(256)) * 6)[:1500 - 60])
ptb = Ether(dst=CLI_MAC, src=EXT_MAC) / IPv6(src=VIP6, dst=CLI6, hlim=64) / ICMPv6PacketTooBig(mtu=1480) / raw(big6)[:1232]
case("ipv6 packet too big for the tunnel: packet too big from the vip, 1232 bytes quoted", 0, eth_in() / big6, ptb, "too_big:0")
case("nd: solicitation for an ipv6 vip is answered (a host: router flag clear)", 0, ns(CLI6, nsma(VIP6)[0], VIP6, nsma(VIP6)[1]), na_from_port(CLI6, CLI_MAC, tgt=VIP6), "nd_advert:0")
case("icmpv6 echo to an ipv6 vip is answered", 0, echo6(VIP6), echo6_reply(VIP6), "echo_reply:0")
case("ipv6 tcp to a vip on a port no service has", 0, eth_in() / IPv6(src=CLI6, dst=VIP6) / TCP(sport=40000, dport=81, flags="S"), None, "drop:no_service")

# ---- ICMPv6 errors to an IPv6 VIP: to the quoted flow's backend, unchanged (dsr) -----------
def icmp6_err(kind, quoted, n=None):
    q = raw(quoted)[:n] if n is not None else raw(quoted)
    return IPv6(src=ROUTER6, dst=VIP6, hlim=63, tc=0x10) / kind / Raw(q)


web6_reply = IPv6(src=VIP6, dst=CLI6, hlim=64) / TCP(sport=80, dport=40000, flags="PA", seq=5, ack=9) / Raw(b"x" * 1400)
e6 = icmp6_err(ICMPv6PacketTooBig(mtu=1280), web6_reply, n=1232)
case("icmpv6 packet too big to an ipv6 vip: to the flow's backend, unchanged, in ipip", 0, eth_in() / e6, Ether(dst=B10_MAC, src=INT_MAC) / IP(src=INT_IP, dst="198.19.0.10", proto=41, tos=0x10, id=0, flags="DF", ttl=64) / raw(e6), "tunnel:1")
dns6_reply = IPv6(src=VIP6, dst=CLI6, hlim=64) / UDP(sport=53, dport=40053) / Raw(b"answer")
e6 = icmp6_err(ICMPv6DestUnreach(code=4), dns6_reply)
case("icmpv6 port unreachable to an ipv6 vip: to the flow's backend over ipv6", 0, eth_in() / e6, over6(e6, HOST6_10, key=6), "tunnel:1")
e6 = icmp6_err(ICMPv6DestUnreach(code=4), IPv6(src=VIP6, dst=CLI6) / UDP(sport=54, dport=40053))
case("icmpv6 error quoting a port of the ipv6 vip without a service", 0, eth_in() / e6, None, "drop:icmp_error_unknown")
e6 = icmp6_err(ICMPv6TimeExceeded(), web6_reply, n=40 + 6)
case("icmpv6 error whose quote stops inside the ports", 0, eth_in() / e6, None, "drop:icmp_error_malformed")
bad_e6 = bytearray(raw(eth_in() / icmp6_err(ICMPv6DestUnreach(code=4), dns6_reply)))
bad_e6[14 + 40 + 2] ^= 0x5a
case("icmpv6 error with a bad checksum", 0, bytes(bad_e6), None, "drop:icmp_bad_checksum")

# ---- IPv6 fragments to an IPv6 VIP: each where its datagram's flow goes ------------------------
def frag6(datagram, offset, size, more, ident=0x5a5a):
    """The fragment of IPv6 `datagram` (no extension headers) holding bytes offset..offset+size
    of its payload, with a fragment header."""
    d = raw(datagram)
    ip = IPv6(d)
    part = d[40 + offset:40 + offset + size]
    return IPv6(src=ip.src, dst=ip.dst, hlim=ip.hlim, tc=ip.tc) / IPv6ExtHdrFragment(nh=ip.nh, offset=offset // 8, m=int(more), id=ident) / Raw(part)


dns6_big = IPv6(src=CLI6, dst=VIP6, hlim=61) / UDP(sport=40054, dport=53) / Raw(bytes(range(200)))
f1, f2 = frag6(dns6_big, 0, 104, True), frag6(dns6_big, 104, 104, False)
label = flow_label(CLI6, 40054, SVC_DNS6)
case("ipv6 first fragment to a vip goes to its flow's backend (gre over ipv6)", 0, eth_in() / f1, over6(f1, HOST6_10, key=6, label=label), "tunnel:1")
# (A later fragment after its first needs the worker's fragment table: dataplane/tests/path_mtu.rs.)
case("ipv6 later fragment whose first was not seen", 0, eth_in() / f2, None, "drop:fragment_no_first")
case("ipv6 first fragment to a port of the vip without a service", 0, eth_in() / frag6(IPv6(src=CLI6, dst=VIP6) / UDP(sport=1, dport=54) / Raw(b"y" * 40), 0, 24, True), None, "drop:no_service")
past = IPv6(src=CLI6, dst=VIP6) / IPv6ExtHdrFragment(nh=17, offset=(65536 - 16) // 8, m=0, id=9) / Raw(b"z" * 24)
case("ipv6 fragment reaching past 65535 bytes", 0, eth_in() / past, None, "drop:ipv6_malformed")

# ---- NAT66: IPv6 VIPs to IPv6 backends (tenant VMs) ------------------------------------------
# [2001:db8:10::2]:80/tcp -> [2001:db8:c0::10]:8080 in VPC 7 on 198.19.0.10 (GRE key 7 over
# IPv4); :53/udp -> [2001:db8:c0::20]:5353 on 2001:db8:19::a (IPv6 in IPv6); :443/tcp ->
# [2001:db8:c0::10]:8080 in VPC 8 on 2001:db8:19::a (GRE key 8 over IPv6): the same address and
# port as VPC 7's VM; :22/tcp -> [2001:db8:c0::30]:2222 on 198.19.0.11 (IPv6 in IPv4). CLI6N is
# a static neighbour of port 0 (so replies have a next hop).
VIP6N, CLI6N, VM10, VM20, VM30 = "2001:db8:10::2", "2001:db8:18::98", "2001:db8:c0::10", "2001:db8:c0::20", "2001:db8:c0::30"
SVC_NAT6_WEB, SVC_NAT6_DNS, SVC_NAT6_T8, SVC_NAT6_SSH = 16, 17, 18, 19


def v6_over4(inner, key=None, dst="198.19.0.10", mac=B10_MAC):
    """An IPv6 packet tunneled from port 1 over IPv4: IPIP (protocol 41) or GRE with `key`
    (protocol type 0x86DD); the outer TOS is the inner traffic class, DF set, ID 0."""
    b = raw(inner)
    if key is None:
        t = IP(src=INT_IP, dst=dst, proto=41, tos=IPv6(b).tc, id=0, flags="DF", ttl=64) / Raw(b)
    else:
        t = IP(src=INT_IP, dst=dst, tos=IPv6(b).tc, id=0, flags="DF", ttl=64) / GRE(proto=0x86DD, key_present=1, key=key) / Raw(b)
    return Ether(dst=mac, src=INT_MAC) / t


def from_host6(inner, key=None, outer6=False, gre_proto=0x86DD):
    """`inner` tunneled back by host 10 (198.19.0.10, or 2001:db8:19::a with `outer6`) to the
    appliance: IPIP (41 for an IPv6 inner, 4 for IPv4) or GRE with `key`."""
    b = raw(inner)
    outer = IPv6(src=HOST6_10, dst=INT6, hlim=64) if outer6 else IP(src="198.19.0.10", dst=INT_IP, ttl=64)
    if key is None:
        t = outer / Raw(b)
        proto = 41 if b[0] >> 4 == 6 else 4
        if outer6:
            t.nh = proto
        else:
            t.proto = proto
    else:
        t = outer / GRE(proto=gre_proto, key_present=1, key=key) / Raw(b)
    return Ether(dst=INT_MAC, src=B10_MAC) / t


def to_client6(packet):
    return Ether(dst=CLI_MAC, src=EXT_MAC) / packet


n6_syn = IPv6(src=CLI6N, dst=VIP6N, tc=0x28, fl=0x12345, hlim=61) / TCP(sport=41000, dport=80, flags="S", seq=1000, window=64800, options=[("MSS", 1440), ("SAckOK", b"")])
# Port 1's MTU 1500 less keyed GRE's 28, less IPv6's and TCP's 60: 1412.
n6_syn_dnat = IPv6(src=CLI6N, dst=VM10, tc=0x28, fl=0x12345, hlim=61) / TCP(sport=41000, dport=8080, flags="S", seq=1000, window=64800, options=[("MSS", 1412), ("SAckOK", b"")])
case("nat66: tcp syn to an ipv6 nat vip: DNAT to the VM's address and port, in the VPC's GRE over ipv4, its MSS clamped", 0, eth_in() / n6_syn, v6_over4(n6_syn_dnat, key=7), "tunnel:1")
n6_pre = (0, eth_in() / n6_syn)
n6_synack = IPv6(src=VM10, dst=CLI6N, hlim=64, fl=0x54321) / TCP(sport=8080, dport=41000, flags="SA", seq=5000, ack=1001, window=65000, options=[("MSS", 8940), ("SAckOK", b"")])
n6_synack_out = IPv6(src=VIP6N, dst=CLI6N, hlim=64, fl=0x54321) / TCP(sport=80, dport=41000, flags="SA", seq=5000, ack=1001, window=65000, options=[("MSS", 1412), ("SAckOK", b"")])
case("nat66: a VM's syn-ack in the VPC's GRE over ipv4: from the VIP and port, MSS clamped, to the client", 1, from_host6(n6_synack, key=7), to_client6(n6_synack_out), "nat_reply:0", pre=n6_pre)
n6_data = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / IPv6ExtHdrDestOpt() / TCP(sport=sport, dport=41000, flags="PA", seq=5001, ack=1001) / Raw(b"HTTP/1.1 200 OK\r\n\r\n")
case("nat66: a reply after a destination options header, in GRE over the ipv6 underlay", 1, from_host6(n6_data(VM10, 8080), key=7, outer6=True), to_client6(n6_data(VIP6N, 80)), "nat_reply:0", pre=n6_pre)
case("nat66: a reply with link padding after the tunnel", 1, raw(from_host6(n6_synack, key=7)) + b"\0" * 9, to_client6(n6_synack_out), "nat_reply:0", pre=n6_pre)
n6_big = IPv6(src=CLI6N, dst=VIP6N, hlim=61) / TCP(sport=41001, dport=80, flags="PA", seq=9, ack=9) / Raw(b"n" * 1440)
n6_ptb = IPv6(src=VIP6N, dst=CLI6N, hlim=64) / ICMPv6PacketTooBig(mtu=1472) / raw(n6_big)[:1232]
case("nat66: a packet too big for the tunnel: packet too big from the VIP quoting it as sent", 0, eth_in() / n6_big, to_client6(n6_ptb), "too_big:0")

n6_dns = IPv6(src=CLI6N, dst=VIP6N, hlim=61) / UDP(sport=41053, dport=53) / Raw(b"query")
n6_dns_dnat = IPv6(src=CLI6N, dst=VM20, hlim=61) / UDP(sport=41053, dport=5353) / Raw(b"query")
case("nat66: udp to an ipv6 nat vip on the physical network: DNAT, ipv6 in ipv6 with the flow's label", 0, eth_in() / n6_dns, over6(n6_dns_dnat, HOST6_10, label=flow_label(CLI6N, 41053, SVC_NAT6_DNS)), "tunnel:1")
n6_dns_pre = (0, eth_in() / n6_dns)
n6_answer = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / UDP(sport=sport, dport=41053) / Raw(b"answer")
case("nat66: a udp reply in ipv6-in-ipv6: to the client from the VIP", 1, from_host6(n6_answer(VM20, 5353), outer6=True), to_client6(n6_answer(VIP6N, 53)), "nat_reply:0", pre=n6_dns_pre)
case("nat66: a udp reply in ipv6-in-ipv4 (protocol 41)", 1, from_host6(n6_answer(VM20, 5353)), to_client6(n6_answer(VIP6N, 53)), "nat_reply:0", pre=n6_dns_pre)


def udp_first_fragment(src, sport):
    """The first 1000 bytes (UDP header included) of a 1544-byte UDP datagram from `src`:`sport`
    to the client, its checksum over the whole datagram (computed by scapy)."""
    whole = IPv6(src=src, dst=CLI6N, hlim=64) / UDP(sport=sport, dport=41053) / Raw(bytes(range(256)) * 6)
    udp = raw(whole)[40:]
    return IPv6(src=src, dst=CLI6N, hlim=64) / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=0xabcd) / Raw(udp[:1000])


case("nat66: a udp reply's first fragment: its ports and checksum translated", 1, from_host6(udp_first_fragment(VM20, 5353), outer6=True), to_client6(udp_first_fragment(VIP6N, 53)), "nat_reply:0", pre=n6_dns_pre)
n6_later = IPv6(src=VM20, dst=CLI6N, hlim=64) / IPv6ExtHdrFragment(nh=17, offset=125, m=0, id=0xabce) / Raw(b"x" * 544)
case("nat66: a later fragment of a udp reply whose first was not seen", 1, from_host6(n6_later, outer6=True), None, "drop:fragment_no_first", pre=n6_dns_pre)

# Tenants: VPC 8's VM has VPC 7's VM's address and port; its GRE key tells them apart.
t8_syn = IPv6(src=CLI6N, dst=VIP6N, hlim=61) / TCP(sport=41000, dport=443, flags="S", seq=77, window=64800)
t8_syn_dnat = IPv6(src=CLI6N, dst=VM10, hlim=61) / TCP(sport=41000, dport=8080, flags="S", seq=77, window=64800)
case("nat66: tcp syn to the other tenant's VIP port: DNAT, its VPC's GRE key over the ipv6 underlay", 0, eth_in() / t8_syn, over6(t8_syn_dnat, HOST6_10, key=8, label=flow_label(CLI6N, 41000, SVC_NAT6_T8)), "tunnel:1")
t8_synack = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / TCP(sport=sport, dport=41000, flags="SA", seq=9000, ack=78, window=65000)
case("nat66: VPC 8's VM's syn-ack in its GRE over ipv6: from the VIP's port 443", 1, from_host6(t8_synack(VM10, 8080), key=8, outer6=True), to_client6(t8_synack(VIP6N, 443)), "nat_reply:0", pre=(0, eth_in() / t8_syn))
case("nat66: VPC 8's VM answering for a session VPC 7's VM has: no session", 1, from_host6(t8_synack(VM10, 8080), key=8, outer6=True), None, "drop:nat_no_session", pre=n6_pre)
case("nat66: a reply without a session", 1, from_host6(n6_synack, key=7), None, "drop:nat_no_session")

# A VM's ICMPv6 errors about a client's packet: to the client from the VIP, quoting the packet
# as the client sent it (to the VIP and service port), every checksum recomputed by scapy.
n6_query = lambda dst, dport: IPv6(src=CLI6N, dst=dst, hlim=61) / UDP(sport=41053, dport=dport) / Raw(b"query")
n6_unreach = IPv6(src=VM20, dst=CLI6N, hlim=64) / ICMPv6DestUnreach(code=4) / raw(n6_query(VM20, 5353))
n6_unreach_out = IPv6(src=VIP6N, dst=CLI6N, hlim=64) / ICMPv6DestUnreach(code=4) / raw(n6_query(VIP6N, 53))
case("nat66: a VM's port unreachable in ipv6-in-ipv6: to the client in the VIP's form", 1, from_host6(n6_unreach, outer6=True), to_client6(n6_unreach_out), "nat_reply:0", pre=n6_dns_pre)
n6_seg = lambda dst, dport: IPv6(src=CLI6N, dst=dst, hlim=61) / TCP(sport=41000, dport=dport, flags="PA", seq=1001, ack=5001) / Raw(b"c" * 1300)
n6_too_big = IPv6(src=VM10, dst=CLI6N, hlim=64) / ICMPv6PacketTooBig(mtu=1400) / raw(n6_seg(VM10, 8080))[:1232]
n6_too_big_out = IPv6(src=VIP6N, dst=CLI6N, hlim=64) / ICMPv6PacketTooBig(mtu=1400) / raw(n6_seg(VIP6N, 80))[:1232]
case("nat66: a VM's packet too big in the VPC's GRE: to the client in the VIP's form, the TCP checksum quoted", 1, from_host6(n6_too_big, key=7), to_client6(n6_too_big_out), "nat_reply:0", pre=n6_pre)
n6_other = IPv6(src=VM20, dst=CLI6N, hlim=64) / ICMPv6DestUnreach(code=4) / raw(IPv6(src=CLI6N, dst=VM20) / UDP(sport=41999, dport=5353))
case("nat66: a VM's icmpv6 error about no session", 1, from_host6(n6_other, outer6=True), None, "drop:nat_no_session", pre=n6_dns_pre)
n6_elsewhere = IPv6(src=VM20, dst=CLI6N, hlim=64) / ICMPv6DestUnreach(code=4) / raw(n6_query("2001:db8:c0::77", 5353))
case("nat66: a VM's icmpv6 error quoting a packet to another address", 1, from_host6(n6_elsewhere, outer6=True), None, "drop:icmp_error_unknown", pre=n6_dns_pre)
bad_n6 = bytearray(raw(from_host6(n6_unreach, outer6=True)))
bad_n6[14 + 40 + 40 + 2] ^= 0x01
case("nat66: a VM's icmpv6 error with a bad checksum", 1, bytes(bad_n6), None, "drop:icmp_bad_checksum", pre=n6_dns_pre)
case("nat66: a VM's icmpv6 echo reply (not an error)", 1, from_host6(IPv6(src=VM20, dst=CLI6N) / ICMPv6EchoReply(id=1, seq=1), outer6=True), None, "drop:icmp_error_malformed", pre=n6_dns_pre)

# IPv6 in IPv4 (protocol 41) to a VM of the physical network, and its reply the same way.
ssh_syn = lambda dst, dport: IPv6(src=CLI6N, dst=dst, hlim=61, tc=0x10) / TCP(sport=41022, dport=dport, flags="S", seq=3, window=64800)
case("nat66: tcp syn to an ipv6 nat vip over ipip: DNAT, ipv6 in ipv4 (protocol 41) to the VM's host", 0, eth_in() / ssh_syn(VIP6N, 22), v6_over4(ssh_syn(VM30, 2222), dst="198.19.0.11", mac=B11_MAC), "tunnel:1")
ssh_synack = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / TCP(sport=sport, dport=41022, flags="SA", seq=70, ack=4, window=65000)
case("nat66: its syn-ack in ipv6-in-ipv4 from the VM's host: from the VIP's port 22", 1, from_host6(ssh_synack(VM30, 2222)), to_client6(ssh_synack(VIP6N, 22)), "nat_reply:0", pre=(0, eth_in() / ssh_syn(VIP6N, 22)))

# ICMPv6 errors from the Internet about a NAT66 VIP's reply (VIP:port -> client): to the flow's
# VM in its form (to the VM; quoting VM:port -> client), every checksum recomputed by scapy.
n6_web_reply = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / TCP(sport=sport, dport=41000, flags="PA", seq=5001, ack=1001) / Raw(b"x" * 1400)
n6_err = lambda dst, kind, quoted, n=None: IPv6(src=ROUTER6, dst=dst, hlim=63, tc=0x10) / kind / Raw(raw(quoted)[:n] if n else raw(quoted))
case("nat66: packet too big from a router to a nat vip: to the VM in its VPC's GRE, translated", 0, eth_in() / n6_err(VIP6N, ICMPv6PacketTooBig(mtu=1280), n6_web_reply(VIP6N, 80), 1232), v6_over4(n6_err(VM10, ICMPv6PacketTooBig(mtu=1280), n6_web_reply(VM10, 8080), 1232), key=7), "tunnel:1", pre=n6_pre)
t8_reply = lambda src, sport: IPv6(src=src, dst=CLI6N, hlim=64) / TCP(sport=sport, dport=41000, flags="A", seq=9001, ack=78)
case("nat66: time exceeded about VPC 8's flow: to VPC 8's VM in its GRE over ipv6, translated", 0, eth_in() / n6_err(VIP6N, ICMPv6TimeExceeded(), t8_reply(VIP6N, 443)), over6(n6_err(VM10, ICMPv6TimeExceeded(), t8_reply(VM10, 8080)), HOST6_10, key=8), "tunnel:1", pre=(0, eth_in() / t8_syn))
case("nat66: port unreachable about a udp flow without a session: to the VM Maglev picks, translated", 0, eth_in() / n6_err(VIP6N, ICMPv6DestUnreach(code=4), n6_answer(VIP6N, 53)), over6(n6_err(VM20, ICMPv6DestUnreach(code=4), n6_answer(VM20, 5353)), HOST6_10), "tunnel:1")

# Malformed IPv6 inside a tunnel.
case("nat66: GRE's ipv6 protocol type carrying a truncated packet", 1, from_host6(Raw(raw(n6_synack)[:30]), key=7), None, "drop:nat_reply_malformed", pre=n6_pre)
case("nat66: ipv6-in-ipv4 (protocol 41) carrying ipv4", 1, Ether(dst=INT_MAC, src=B10_MAC) / IP(src="198.19.0.10", dst=INT_IP, proto=41, ttl=64) / raw(IP(src="192.0.2.20", dst=CLI_IP) / UDP(sport=5353, dport=5555)), None, "drop:nat_reply_malformed")
case("nat66: a reply after nine extension headers", 1, from_host6(IPv6(src=VM10, dst=CLI6N) / eight / IPv6ExtHdrDestOpt() / TCP(sport=8080, dport=41000, flags="A"), key=7), None, "drop:nat_reply_malformed", pre=n6_pre)
case("nat66: a reply of another upper layer", 1, from_host6(IPv6(src=VM10, dst=CLI6N, nh=132) / Raw(b"\0" * 16), key=7), None, "drop:nat_reply_malformed", pre=n6_pre)
bad_gre6 = bytearray(raw(Ether(dst=INT_MAC, src=B10_MAC) / IPv6(src=HOST6_10, dst=INT6, hlim=64) / GRE(proto=0x86DD, chksum_present=1, key_present=1, key=7) / n6_synack))
bad_gre6[14 + 40 + 4] ^= 0xff
case("nat66: a reply in GRE over ipv6 with a bad GRE checksum", 1, bytes(bad_gre6), None, "drop:tunnel_malformed", pre=n6_pre)
# And an IPv4 NAT VIP's reply over the IPv6 underlay (IPv4 in IPv6, next header 4).
case("nat reply of an ipv4 VIP in ipv4-in-ipv6", 1, from_host6(dns_reply, outer6=True), dns_reply_out, "nat_reply:0", pre=(0, eth_in() / nat_dns))

print("# Generated by gen.py (scapy); do not edit by hand. Format: blank-line separated records.")
for name, port, inp, out, verdict, pre in cases:
    print()
    print(f"case: {name}")
    if pre is not None:
        print(f"pre: {pre[0]} {pre[1].hex()}")
    print(f"port: {port}")
    print(f"in: {inp.hex()}")
    print(f"out: {','.join(o.hex() for o in out) if out else '-'}")
    print(f"verdict: {verdict}")
