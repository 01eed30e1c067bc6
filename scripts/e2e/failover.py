"""Session sync's failover in the two-appliance lab, for either family (test_sync.py over
IPv4, test_sync6.py over IPv6): two sluiced instances, A and B, each announce the VIPs over
BGP (with BFD) through their exception path to BIRD on the router, which installs one ECMP
route per VIP hashed on the 5-tuple. Long-lived TCP streams (a client sends a deterministic
byte stream, the tenant VM echoes it) run to a NAT VIP and to a SYN-proxied VIP, beside silent
downloads; once they are older than sync's 5 s, A is killed (SIGKILL) and the router drops it
from every route by itself (measured from the router's view). Every stream and download that
went through A carries on through B to its last byte, with no reset.

Streams younger than `sync.after` (5 s) when A dies are not protected (documented, not
tested). The client must keep sending for the host agent to learn the new return path (it
follows each flow's latest forward packet); a stream whose client falls silent would stall
until it sends again. A silent download's data reaches B with no help from its client: the
agents send the replies of flows older than 5 s to the cluster's tunnel address (of the
underlay's family), which both appliances announce.
"""
import ipaddress
import json
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lab as labmod
from lab import VIP_A, VIP_S, VIP6_A, VIP6_B, VM6, backend_ip, backend_ip6

STREAM_PORT = labmod.ECHO_PORT
KEY = "5a" * 32
STREAMS = int(os.environ.get("STREAMS", 12))   # over two VIPs and two clients: some go through A, some through B
SECONDS = 24          # each stream's length; A dies at 10 s
DOWNLOADS = 8         # silent downloads beside the streams (with 4, one CI run had all of them through B)
SYNC_PORT = 7946
CLUSTER = "198.18.9.1"       # the appliances' cluster tunnel addresses (NAT replies of old flows)
CLUSTER6 = "2001:db8:9::1"
VIP6_S = "2001:db8:10::4"    # the IPv6 SYN-proxied stream service's VIP (these tests' own)
CLIENT = Path(__file__).resolve().parent.parent / "stream_client.py"


@dataclass(frozen=True)
class Family:
    """What the failover runs over: the streams' VIPs (NAT, SYN-proxied) and each one's
    backends as (VM address, its host: the underlay), the clients' addresses, A's and B's
    addresses toward the router (the VIPs' next hops), and their management addresses
    (session sync's), the cluster's tunnel addresses, the downloads' service and VIP (port
    80, /blob), and A's and B's DPDK file prefixes."""
    dual: bool
    nat_vip: str
    proxied_vip: str
    backends: tuple
    clients: tuple
    exts: tuple
    mgmt: tuple
    clusters: tuple
    download: tuple
    file_prefixes: tuple


V4 = Family(dual=False, nat_vip=VIP_A, proxied_vip=VIP_S,
            backends=((("192.0.2.10", backend_ip(1)), ("192.0.2.11", backend_ip(2))),) * 2,
            clients=tuple(labmod.CLIENT_IPS), exts=(labmod.GW_EXT_IP, labmod.GW2_EXT_IP),
            mgmt=(labmod.GW_MGMT_IP, labmod.GW2_MGMT_IP), clusters=(CLUSTER,),
            download=("tenant-a-web", VIP_A), file_prefixes=("sluice-lab", "sluice-lab-b"))
# IPv6 clients, VIPs and VMs; each stream service with one VM over each underlay (GRE over
# IPv6, GRE over IPv4), so that the agents reply to both cluster addresses. The downloads go
# to tenant B's NAT66 service, whose VM is reached over the IPv6 underlay only: the IPv6
# cluster address is what brings their data to B.
V6 = Family(dual=True, nat_vip=VIP6_A, proxied_vip=VIP6_S,
            backends=(((VM6["a1"], backend_ip6(1)), (VM6["a2"], backend_ip(2))),
                      ((VM6["a1"], backend_ip(1)), (VM6["a2"], backend_ip6(2)))),
            clients=tuple(labmod.CLIENT6_IPS), exts=(labmod.GW_EXT6, labmod.GW2_EXT6),
            mgmt=(labmod.GW_MGMT6, labmod.GW2_MGMT6), clusters=(CLUSTER, CLUSTER6),
            download=("tenant-b-web6", VIP6_B), file_prefixes=("sluice-lab-6s", "sluice-lab-6s-b"))


def sockaddr(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def configs(fam):
    """A's and B's pipelines: the lab's (dual-stack for IPv6), plus echo services on a NAT VIP
    and a SYN-proxied VIP (port 9000), the cluster's tunnel addresses, and session sync with
    each other over their management addresses."""
    text = labmod.CONFIG.read_text()
    text = labmod.dual_config(text) if fam.dual else text
    text = text.replace("--file-prefix, sluice-lab,", f"--file-prefix, {fam.file_prefixes[0]},")
    assert fam.file_prefixes[0] in text
    stream_services = ""
    for name, vip, extra, backends in (("stream-nat", fam.nat_vip, "", fam.backends[0]),
                                       ("stream-proxied", fam.proxied_vip, "    synproxy: true\n", fam.backends[1])):
        stream_services += (
            f"  - name: {name}\n    vip: '{vip}'\n    port: {STREAM_PORT}\n    protocol: tcp\n"
            f"    forwarding: nat\n    vpc: 100\n{extra}    backends:\n"
            + "".join(f"      - {{ address: '{a}', port: {STREAM_PORT}, host: '{h}' }}\n" for a, h in backends))
    clusters = ", ".join(f"'{c}'" for c in fam.clusters)
    base = text + stream_services + f"tunnel:\n  cluster: [{clusters}]\n"

    def sync(me, peer):
        return (f"sync:\n  listen: '{sockaddr(me, SYNC_PORT)}'\n  peers: ['{sockaddr(peer, SYNC_PORT)}']\n"
                f"  key: {KEY}\n  after: 5\n")

    a = base + sync(*fam.mgmt)
    b = labmod.second_appliance(base, fam.file_prefixes[1]) + sync(*reversed(fam.mgmt))
    return a, b


def start_pair(lab, sluiced, fam):
    """In `lab` (up, two appliances, BGP): A and B on `fam`'s configs, the host agents (NAT
    replies of old flows to the cluster addresses), the servers, and BIRD on the appliances
    and the router; returns once the router has both appliances on the streams' routes."""
    a, b = configs(fam)
    (lab.run_dir / "a.yaml").write_text(lab.routing_config(a, "gw"))
    (lab.run_dir / "b.yaml").write_text(lab.routing_config(b, "gw2"))
    lab.a = lab.start_sluiced(sluiced, lab.run_dir / "a.yaml")
    lab.b = lab.start_sluiced(sluiced, lab.run_dir / "b.yaml", gw="gw2")
    lab.start_agents(Path(sluiced).parent / "sluice-agent", reply_to=list(fam.clusters))
    lab.logs = lab.start_servers()
    lab.birds = lab.start_routing(["gw", "gw2"])
    wait_routes(lab, fam, lambda hops: hops == sorted(fam.exts), 60)


def wait_routes(lab, fam, want, timeout, step=0.2):
    """Waits until the router's next hops toward each VIP of the streams and the downloads
    satisfy `want`."""
    t0, vips = time.time(), (fam.nat_vip, fam.proxied_vip, fam.download[1])
    while not all(want(lab.learned(v)) for v in vips):
        assert time.time() - t0 < timeout, {v: lab.learned(v) for v in vips}
        time.sleep(step)


def client_ports(listing, own=False):
    """(client address, port) of each session in a `sluicectl sessions` listing; `own`: only
    the appliance's own sessions, not those a peer synced to it."""
    out = set()
    for line in listing.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] == "->" and not (own and " synced " in line):
            address, _, port = words[1].rpartition(":")
            out.add((address.strip("[]"), port))
    return out


def sessions_of(lab, sluicectl, gw, service):
    """`sluicectl sessions` of `service` on appliance `gw` (one line per session)."""
    sock = lab.run_dir / ("admin.sock" if gw == "gw" else f"admin-{gw}.sock")
    r = subprocess.run([str(sluicectl), "--socket", str(sock), "sessions", "--service", service, "--limit", "1000"],
                       text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def stream_sessions(lab, sluicectl, gw):
    return sessions_of(lab, sluicectl, gw, "stream-nat") + sessions_of(lab, sluicectl, gw, "stream-proxied")


def spawn_streams(lab, fam, count, seconds, log="stream", args=()):
    """`count` stream clients, alternating between the NAT and the SYN-proxied VIP and (by
    twos) between the clients, with `args` for stream_client.py besides: [(i, vip, client
    namespace, process)]."""
    streams = []
    for i in range(count):
        vip = fam.nat_vip if i % 2 == 0 else fam.proxied_vip
        cli = "cli1" if i % 4 < 2 else "cli2"
        p = lab.spawn(cli, [sys.executable, str(CLIENT), "--host", vip, "--port", str(STREAM_PORT),
                            "--seconds", str(seconds), *args], f"{log}-{i}.log")
        streams.append((i, vip, cli, p))
    return streams


def stream_result(p, timeout):
    """The stream client's closing JSON line, once it ends."""
    p.wait(timeout=timeout)
    out = p.log_path.read_text().strip().splitlines()
    return json.loads(out[-1]) if out else {"ok": False, "error": "no output"}


def fail_over(lab, sluiced, fam):
    """Streams and silent downloads through both appliances; A is killed once they are older
    than sync's delay; every one that went through A must end whole through B. Prints how many
    went through A and how long the router took to drop A."""
    sluicectl = Path(sluiced).parent / "sluicectl"
    # Each stream as its client and its VM saw it (printed for a stream that fails).
    trace = [lab.capture(f"cli{c}", "cli0", f"streams-cli{c}.pcap", f"tcp port {STREAM_PORT}") for c in (1, 2)]
    trace += [lab.capture(lab.vm(h, v), f"v{v}", f"streams-{name}.pcap", f"tcp port {STREAM_PORT}")
              for h, v, _, name in labmod.VMS if v == 100]
    # Silent downloads besides (the client only ACKs): once A is gone, their data must reach a
    # survivor with no help from the client, by the cluster's tunnel address.
    # The router's multipath hash is seeded per boot, so which appliance a port goes through is
    # chance: with DOWNLOADS of them, all through B (the check below fails) is 1 in 2^DOWNLOADS.
    service, vip = fam.download
    host = f"[{vip}]" if ":" in vip else vip
    downloads = [lab.spawn("cli1", ["curl", "-sS", "-g", "--limit-rate", "600k", "-o", str(lab.run_dir / f"blob-{i}"),
                                    "--local-port", str(41000 + i), f"http://{host}/blob"], f"download-{i}.log")
                 for i in range(DOWNLOADS)]
    streams = spawn_streams(lab, fam, STREAMS, SECONDS)
    time.sleep(10)
    # Which streams A carries: its own sessions of the two stream services (not the ones B
    # synced to it), by client port.
    on_a = stream_sessions(lab, sluicectl, "gw")
    a_ports = client_ports(on_a, own=True)
    a_downloads = client_ports(sessions_of(lab, sluicectl, "gw", service), own=True)
    a_metrics = labmod.metrics(lab, "gw")
    # What A did (for a failure's diagnosis): its SYN-proxy counters and drops, and its sessions.
    print("\nA:", {k: v for k, v in a_metrics.items() if v and (k.startswith("sluice_synproxy")
                                                               or k.startswith("sluice_drops_total"))})
    print(on_a)
    assert a_ports, f"no stream went through A (sessions on A: {on_a!r})"
    # A stream spawned last (the clients start one by one, slower on a loaded machine) may
    # cross sync's 5 s only now: wait until B knows every one of A's before A dies.
    def missing_on_b():
        on_b = stream_sessions(lab, sluicectl, "gw2")
        return a_ports - client_ports(on_b), on_b
    (missing, on_b), deadline = missing_on_b(), time.time() + 10
    while missing and time.time() < deadline:
        time.sleep(0.2)
        missing, on_b = missing_on_b()
    print(f"\nbefore the failover: A carries {len(a_ports)} of {STREAMS} streams; B knows "
          f"{len(a_ports - missing)} of them")
    if missing:
        print(on_b, {k: v for k, v in labmod.metrics(lab, "gw2").items() if "sync" in k})
    assert not missing, missing

    # A dies; the router notices by itself (A's exception path and BFD die with it).
    t0 = time.time()
    lab.a.kill()
    lab.a.wait()
    wait_routes(lab, fam, lambda hops: fam.exts[0] not in hops, 10, step=0.02)
    took = time.time() - t0
    print(f"the router dropped A from every route {took * 1000:.0f} ms after SIGKILL")
    assert all(lab.learned(v) == [fam.exts[1]] for v in (fam.nat_vip, fam.proxied_vip, fam.download[1]))
    results = []
    for i, vip, cli, p in streams:
        r = stream_result(p, SECONDS + 90)
        r["on_a"] = (fam.clients[int(cli[-1]) - 1], str(r.get("local_port"))) in a_ports
        results.append((i, vip, r))
    through_a = [(i, vip, r) for i, vip, r in results if r["on_a"]]
    blob = lab_blob()
    a_clients = {port for ip, port in a_downloads if ip == fam.clients[0]}
    for i, d in enumerate(downloads):
        assert d.wait(timeout=90) == 0, d.log_path.read_text()
        got = (lab.run_dir / f"blob-{i}").read_bytes()
        print(f"download {i} ({'through A' if str(41000 + i) in a_clients else 'B'}): {len(got)} bytes")
        assert got == blob, f"download {i}: {len(got)} bytes, not the blob"
    assert any(str(41000 + i) in a_clients for i in range(DOWNLOADS)), "no download went through A"

    for i, vip, r in results:
        print(f"stream {i} to {vip}: {'A then B' if r['on_a'] else 'B'}: "
              f"{r.get('received')} of {r.get('sent')} bytes {'ok' if r['ok'] else r['error']}")
    assert through_a, "the streams A carried were not found again"
    failed = [r for _, _, r in results if not r["ok"]]
    if failed:
        for p in trace:
            lab.stop(p, timeout=5)
        for r in failed:
            print(f"stream from port {r.get('local_port')}, packets as its client and the VMs saw them:")
            for where in ("cli1", "cli2", "a1", "a2"):
                for line in tcp_trace(lab.run_dir / f"streams-{where}.pcap", r.get("local_port")):
                    print(f"  {where}: {line}")
    assert not failed, failed
    print(f"through A: {sum(vip == fam.proxied_vip for _, vip, _ in through_a)} SYN-proxied, "
          f"{sum(vip == fam.nat_vip for _, vip, _ in through_a)} NAT")
    b_after = labmod.metrics(lab, "gw2")
    received = b_after.get('sluice_sync_records_total{direction="received"}', 0)
    print(f"B: {received:.0f} records received, lag {b_after.get('sluice_sync_lag_seconds', 0):.3f} s")
    return took


def tcp_trace(pcap, port, most=60):
    """One line per TCP segment to or from `port` in `pcap` (Ethernet frames, or IP packets
    of either family from a TUN): the first `most` of them."""
    ethernet = struct.unpack_from("<I", Path(pcap).read_bytes(), 20)[0] == 1   # the link type
    lines = []
    for frame in labmod.read_pcap(pcap):
        ip = frame[14:] if ethernet else frame
        if len(ip) >= 60 and ip[0] >> 4 == 6 and ip[6] == 6:
            hl, src, dst = 40, ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
            total = 40 + struct.unpack_from(">H", ip, 4)[0]
        elif len(ip) >= 40 and ip[0] >> 4 == 4 and ip[9] == 6:
            hl, src, dst = (ip[0] & 15) * 4, labmod.ip4(ip[12:16]), labmod.ip4(ip[16:20])
            total = struct.unpack_from(">H", ip, 2)[0]
        else:
            continue
        t = ip[hl:]
        sport, dport, seq, ack = struct.unpack_from(">HHII", t, 0)
        if port not in (sport, dport):
            continue
        flags = "".join(c for c, bit in zip("FSRPAU", (1, 2, 4, 8, 16, 32)) if t[13] & bit)
        payload = min(total, len(ip)) - hl - (t[12] >> 4) * 4
        win = struct.unpack_from(">H", t, 14)[0]
        lines.append(f"{src}:{sport} > {dst}:{dport} {flags} seq {seq} ack {ack} win {win} len {payload}")
    return lines[:most]


def lab_blob():
    """The lab servers' /blob (lab_server.py), rebuilt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import lab_server
    return lab_server.blob()
