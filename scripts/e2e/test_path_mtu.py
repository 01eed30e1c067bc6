"""Path MTU, ICMP errors and fragments, end to end: every link of the lab at MTU 1500, so a
client's full-size packet does not fit a tunnel, and a third client (cli3) behind a link of
MTU 1400 (`Lab(narrow=True)`), so full-size packets toward it get "fragmentation needed" from
the router, addressed to the VIP they came from.

- Downloads to cli3 through a `dsr`, a `nat` and a SYN-proxied VIP: the backend's (or VM's)
  stack learns the smaller path only from the router's ICMP error, which sluiced passes on to
  it (as is in `dsr`, translated in `nat`); without that the transfers hang.
- Uploads from cli1 (a 1500-byte path): a `dsr` backend offers MSS 1460, so cli1's segments do
  not fit the tunnel and sluiced answers with "fragmentation needed" from the VIP; `nat`
  handshakes get the tunnel's MSS (clamped). And uploads from cli3.
- 4000-byte UDP datagrams (sent in fragments, too big for the tunnel once more) to a `dsr` and
  a `nat` service, and their 4000-byte answers (a VM's in fragments through its agent).
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab as labmod
from lab import CONFIG, VIP, VIP_A, VIP_S, metrics

VIPS = [("dsr", VIP), ("nat", VIP_A), ("synproxy", VIP_S)]


@pytest.fixture(scope="module")
def narrow_lab(sluiced):
    lab = labmod.Lab(prefix="slm", narrow=True)
    lab.up()
    try:
        # A DPDK file prefix of its own (lab.yaml's is every other test's).
        config = lab.run_dir / "mtu.yaml"
        text = CONFIG.read_text().replace("--file-prefix, sluice-lab,", "--file-prefix, sluice-lab-m,")
        assert "sluice-lab-m" in text
        config.write_text(text)
        lab.gw = lab.start_sluiced(sluiced, config)
        lab.start_agents(Path(sluiced).parent / "sluice-agent")
        lab.start_servers()
        yield lab
    finally:
        lab.down()


def blob():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import lab_server
    return lab_server.blob()


def run_in(lab, cli, cmd, timeout):
    return subprocess.run(["ip", "netns", "exec", lab.ns(cli), *cmd], capture_output=True, timeout=timeout)


def test_downloads_through_a_narrower_path_complete(narrow_lab):
    lab, want = narrow_lab, blob()
    before = metrics(lab)
    for kind, vip in VIPS:
        out = lab.run_dir / f"download-{kind}"
        r = run_in(lab, "cli3", ["curl", "-sS", "--max-time", "60", "-o", str(out), f"http://{vip}/blob"], 90)
        assert r.returncode == 0, (kind, r.stderr)
        got = out.read_bytes()
        assert got == want, f"{kind}: {len(got)} bytes, not the blob"
        print(f"download to cli3 through {kind}: {len(got)} bytes, the blob")
    m = metrics(lab)
    forwarded = m["sluice_icmp_errors_forwarded_total"] - before.get("sluice_icmp_errors_forwarded_total", 0)
    print(f"ICMP errors passed on to backends: {forwarded:.0f}")
    assert forwarded >= len(VIPS), "the router's fragmentation-needed reached every backend through sluiced"
    assert m.get('sluice_drops_total{reason="icmp_error_unknown"}', 0) == 0


@pytest.mark.parametrize("cli", ["cli1", "cli3"])
def test_uploads_complete(narrow_lab, cli):
    lab = narrow_lab
    data = os.urandom(10 * 1024 * 1024)
    src = lab.run_dir / f"upload-{cli}"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    before = metrics(lab)
    for kind, vip in VIPS:
        r = run_in(lab, cli, ["curl", "-sS", "--max-time", "60", "-H", "Expect:", "-T", str(src),
                              f"http://{vip}/upload"], 90)
        assert r.returncode == 0, (kind, r.stderr)
        assert r.stdout.decode().strip() == digest, f"{kind}: the server got other bytes"
        print(f"upload from {cli} through {kind}: 10 MB, the same SHA-256")
    m = metrics(lab)
    delta = {k: m[k] - before.get(k, 0) for k in ("sluice_icmp_too_big_sent_total", "sluice_mss_clamped_total")}
    print(delta)
    assert delta["sluice_mss_clamped_total"] >= 2, "the dsr and nat SYNs (1460) lowered to their tunnel's MSS"
    if cli == "cli1":
        # A 1500-byte path: the dsr backend's MSS 1460 makes segments 20 bytes too big for IPIP.
        assert delta["sluice_icmp_too_big_sent_total"] >= 1, "fragmentation needed from the VIP"
    assert m.get('sluice_drops_total{reason="mtu_exceeded"}', 0) == 0


def udp_exchange(lab, cli, host, port, size, answer):
    """A `size`-byte datagram asking for an `answer`-byte one; whether that came, whole."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n"
            "n,a=int(sys.argv[3]),int(sys.argv[4])\n"
            "m=b'pad:%d:' % a;m+=bytes((i*7+3)%256 for i in range(n-len(m)))\n"
            "s.sendto(m,(sys.argv[1],int(sys.argv[2])))\n"
            "r=s.recv(65535)\n"
            "print(len(r), r.split(b':',1)[1][:n]==m and set(r[len(r.split(b':',1)[0])+1+n:])<={46})\n")
    r = run_in(lab, cli, [sys.executable, "-c", code, host, str(port), str(size), str(answer)], 15)
    return r.stdout.decode().split() if r.returncode == 0 else None


def test_fragmented_datagrams_both_ways(narrow_lab):
    """A 4000-byte question (cli1 sends it in three fragments, which the lab's af_packet device
    reassembles before DPDK sees them: DPDK's af_packet PMD asks the kernel to, and lab.yaml
    gives it 8 KiB frames and buffers; a real NIC hands sluiced the fragments, which the unit
    tests cover) is too big for the tunnel without DF: sluiced cuts it. The 4000-byte answers
    come back in fragments: a `dsr` backend's directly, a VM's through its host agent and
    sluiced, each fragment where its first went."""
    lab = narrow_lab
    before = metrics(lab)
    for kind, vip in (("dsr", VIP), ("nat", VIP_A)):
        got = udp_exchange(lab, "cli1", vip, 53, 4000, 4000)
        if got is None:
            print({k: v for k, v in metrics(lab).items() if v and ("drop" in k or "frag" in k)})
        assert got is not None, f"{kind}: no answer"
        size, whole = got
        # The answer: the server's name, the question, padded to 4000 bytes (here past them).
        assert int(size) >= 4000 and whole == "True", (kind, got)
        print(f"4000-byte datagram through {kind}: answered with {size} bytes in fragments, whole")
    m = metrics(lab)
    fragmented = m["sluice_packets_fragmented_total"] - before.get("sluice_packets_fragmented_total", 0)
    print(f"client datagrams cut to fit a tunnel: {fragmented:.0f}")
    assert fragmented >= 2
    assert m.get('sluice_drops_total{reason="fragment_no_first"}', 0) == 0
