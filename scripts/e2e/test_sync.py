"""Session sync in the lab (issue 9) behind a real routing daemon (issue 21), over IPv4:
failover.py's failover (two appliances announcing the VIPs over BGP and BFD to the router's
ECMP routes; long-lived streams to a NAT VIP and a SYN-proxied VIP and silent downloads
carry on through B when A, which carried some of them, is killed); then a forged and a
replayed sync message change nothing on B; a restarted A rejoins with B's sessions before it
announces, and a second failover (B killed) keeps them.
"""
import sys
import time

import pytest

import failover
import lab as labmod
from failover import SYNC_PORT, V4, spawn_streams, stream_result
from lab import VIP_A


@pytest.fixture(scope="module")
def pair_lab(sluiced):
    lab = labmod.Lab(prefix="sls2", appliances=2, bgp=True)
    lab.up()
    try:
        failover.start_pair(lab, sluiced, V4)
        yield lab
    finally:
        lab.down()


def test_long_streams_survive_the_death_of_their_appliance(pair_lab, sluiced):
    lab = pair_lab
    # Capture B's sync traffic (for the replay below).
    cap = lab.capture("gw2", "mgmt0", "sync.pcap", f"udp dst port {SYNC_PORT} and dst host {labmod.GW2_MGMT_IP}")
    failover.fail_over(lab, sluiced, V4)

    # A forged and a replayed message change nothing on B.
    lab.stop(cap, timeout=5)
    frames = labmod.read_pcap(lab.run_dir / "sync.pcap")
    assert frames, "B received sync messages"
    payload = udp_payload(frames[-1])
    before = labmod.metrics(lab, "gw2")
    forged = bytearray(payload)
    forged[40] ^= 0x01
    send_from_a(lab, bytes(forged))
    send_from_a(lab, payload)
    time.sleep(0.5)
    after = labmod.metrics(lab, "gw2")
    rejected = {k: after[k] - before.get(k, 0) for k in after if k.startswith("sluice_sync_rejected_total")}
    print(f"forged and replayed: {rejected}")
    assert rejected['sluice_sync_rejected_total{reason="bad_tag"}'] == 1
    assert rejected['sluice_sync_rejected_total{reason="replayed"}'] == 1
    for k in after:
        if k.startswith("sluice_sync_records_applied_total"):
            assert after[k] == before[k], k


def udp_payload(frame):
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    return bytes(ip[ihl + 8:])


def send_from_a(lab, payload):
    """Sends `payload` to B's sync port from A's management address (a peer's address)."""
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{labmod.GW_MGMT_IP}',0))\n"
            f"s.sendto(bytes.fromhex(sys.argv[1]),('{labmod.GW2_MGMT_IP}',{SYNC_PORT}))\n")
    lab.sh("gw", sys.executable, "-c", code, payload.hex())


def test_a_restarted_appliance_rejoins_with_the_sessions_and_a_second_failover_keeps_them(pair_lab, sluiced):
    """After the first test A is dead and B carries everything. A restarts: it asks B for every
    session, announces its VIPs only once B's full copy is in (the router then moves part of
    the flows back to A, which knows them), and when B dies in turn, the same streams go on
    through A."""
    lab = pair_lab
    seconds = 40
    streams = spawn_streams(lab, V4, 8, seconds, log="rejoin-stream")
    time.sleep(7)   # older than sync.after: B would sync them, but A is not there to hear it

    # A restarts and rejoins: a fresh exception path and BIRD for it.
    lab.stop(lab.birds["gw"])
    if lab.a.poll() is None:   # the first test failed before it killed A
        lab.a.kill()
        lab.a.wait()
    lab.a = lab.start_sluiced(sluiced, lab.run_dir / "a.yaml")
    lab.birds.update(lab.start_routing(["gw"], router=False))
    failover.wait_routes(lab, V4, lambda hops: hops == sorted(V4.exts), 60)
    log = lab.a.log_path.read_text()
    joined = log.find("sync: joined: every peer's sessions are here")
    announced = log.find(f"routing: announcing {VIP_A}")
    assert 0 <= joined < announced, log
    a = labmod.metrics(lab, "gw")
    installed = a.get('sluice_sync_records_applied_total{outcome="installed"}', 0)
    print(f"A rejoined with {installed:.0f} sessions from B")
    assert installed >= len(streams), a
    time.sleep(3)
    hits_a = labmod.metrics(lab, "gw")["sluice_session_hits_total"]
    assert hits_a > 0, "the router moved flows back to A, which knew them"

    # B dies: every stream goes on through A.
    t0 = time.time()
    lab.b.kill()
    lab.b.wait()
    failover.wait_routes(lab, V4, lambda hops: labmod.GW2_EXT_IP not in hops, 10, step=0.02)
    print(f"the router dropped B {(time.time() - t0) * 1000:.0f} ms after SIGKILL")
    failed = []
    for i, vip, _, p in streams:
        r = stream_result(p, seconds + 90)
        print(f"stream {i} to {vip}: {r.get('received')} of {r.get('sent')} bytes {'ok' if r['ok'] else r['error']}")
        if not r["ok"]:
            failed.append(r)
    assert not failed, failed
