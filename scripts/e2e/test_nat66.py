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
  on the ACK (over either underlay), a 10 MB download through the translated sequence numbers;
- sluiced's counters: NAT replies translated, no drops but the lab's background noise.
"""
import hashlib
import subprocess

import pytest

import lab as labmod
from lab import CLIENT6_IPS, CONFIG, SHOP6_PORT, VIP6_A, VIP6_B, VM6, access, dual_config

TENANT_A, TENANT_B = {"a1", "a2"}, {"b1"}


@pytest.fixture(scope="module")
def nat66_lab(sluiced):
    lab = labmod.Lab(prefix="sn6", dual=True)
    lab.up()
    try:
        # A DPDK file prefix of its own (lab.yaml's is every other test's).
        text = dual_config(CONFIG.read_text()).replace("--file-prefix, sluice-lab,", "--file-prefix, sluice-lab-n6,")
        assert "sluice-lab-n6" in text
        config = lab.run_dir / "nat66.yaml"
        config.write_text(text)
        lab.gw = lab.start_sluiced(sluiced, config, ["--print-stats"])
        lab.start_agents(sluiced.parent / "sluice-agent")
        lab.logs = lab.start_servers()
        yield lab
    finally:
        lab.down()


def run_in(lab, cli, cmd, timeout=30):
    return subprocess.run(["ip", "netns", "exec", lab.ns(cli), *cmd], capture_output=True, text=True,
                          timeout=timeout)


def curl6(lab, cli, url, out="-", timeout=10):
    """curl -6 from `cli`: (ok, body or error, the address and port that answered)."""
    r = run_in(lab, cli, ["curl", "-6", "-sS", "-g", "--max-time", str(timeout), "-o", out,
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
        r = run_in(lab, "cli1", ["python3", "-c", code, VIP6_A, f"q66-{i}"])
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
    print(f"SYN proxy, IPv6 VIP: answered by {sorted(bodies)}, 10 MB intact; {grew}")


def test_sluiced_counters_after_the_traffic(nat66_lab):
    lab = nat66_lab
    # Run last in the module (pytest keeps file order): stop sluiced and read its counters.
    assert lab.stop(lab.gw) == 0
    c = labmod.counters(lab.gw.log_path.read_text())
    assert c["sluice_nat_replies_total"] > 1000, c
    # The router's and hosts' ARP and neighbour solicitations for each other on the shared
    # segments, and stray kernel multicast.
    noise = ('reason="arp_not_for_us"', 'reason="nd_not_for_us"', 'reason="not_for_us"')
    unexpected = {k: v for k, v in c.items() if k.startswith("sluice_drops_total") and v
                  and not any(n in k for n in noise)}
    assert not unexpected, unexpected


def blob():
    import lab_server
    return lab_server.blob()
