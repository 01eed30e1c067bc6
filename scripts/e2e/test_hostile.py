"""Hostile input on every control surface (issue 19), against a running sluiced in the lab
while real traffic flows through it: configs that used to crash or hang it (a NaN interval,
a FIFO, /dev/zero, a config over the memory budget, a secret file) are refused and change
nothing; slow clients hold the admin socket and the metrics endpoint while a normal client
is still served; the admin socket is 0600 whatever the umask; and a tunnel packet spoofed to
a host agent from a non-appliance address leaves the flow's replies going to the appliance.
"""
import hashlib
import os
import socket
import stat
import struct
import sys
import subprocess
import threading
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import CLIENT_IPS, VIP, VIP_A, VMS, curl, wrk
from lab_server import blob as expected_blob

SECRET = "sluice-secret-line-7f3a9c"


@pytest.fixture(scope="module")
def hostile_lab(sluiced):
    agent = Path(sluiced).parent / "sluice-agent"
    sluicectl = Path(sluiced).parent / "sluicectl"
    assert agent.exists() and sluicectl.exists(), "scripts/test.sh builds sluice-agent and sluicectl"
    lab = labmod.Lab(prefix="slh")
    lab.up()
    old_umask = os.umask(0)  # sluiced inherits it: its admin socket must still be 0600
    try:
        lab.config = lab.run_dir / "live.yaml"
        lab.config.write_text(labmod.CONFIG.read_text())
        lab.gw = lab.start_sluiced(sluiced, lab.config)
        os.umask(old_umask)
        lab.agents = lab.start_agents(agent)
        lab.logs = lab.start_servers()

        def ctl(*args, timeout=60):
            r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), *map(str, args)],
                               text=True, capture_output=True, timeout=timeout)
            return r.returncode, r.stdout + r.stderr

        lab.ctl = ctl
        yield lab
    finally:
        os.umask(old_umask)
        lab.down()


def generation(lab):
    code, out = lab.ctl("status", timeout=10)
    assert code == 0, out
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("generation ")))


class Traffic:
    """curl in a loop from cli1 to the DSR VIP, and wrk from cli2 to tenant A's NAT VIP."""

    def __init__(self, lab, seconds):
        self.lab, self.results, self.stop = lab, [], threading.Event()
        self.wrk_out = None
        self.threads = [threading.Thread(target=self.curls), threading.Thread(target=self.wrk, args=(seconds,))]
        for t in self.threads:
            t.start()

    def curls(self):
        while not self.stop.is_set():
            self.results.append(curl(self.lab, "cli1", f"http://{VIP}/", timeout=5))
            time.sleep(0.05)

    def wrk(self, seconds):
        self.wrk_out = wrk(self.lab, "cli2", f"http://{VIP_A}/", connections=8, seconds=seconds)

    def end(self):
        self.threads[1].join()
        self.stop.set()
        self.threads[0].join()
        return self.results, self.wrk_out


def over_budget(text):
    """The lab config plus 1000 services with the largest Maglev table each."""
    extra = ["  - name: big-%d\n    vip: 198.18.20.%d\n    port: %d\n    protocol: tcp\n"
             "    table_size: 4194301\n    backends:\n      - { address: 198.19.0.11 }\n"
             % (i, 1 + i % 250, 1000 + i) for i in range(1000)]
    return text + "".join(extra)


def test_hostile_configs_are_refused_while_traffic_flows(hostile_lab):
    lab = hostile_lab
    gen = generation(lab)
    text = lab.config.read_text()
    assert "interval: 0.5" in text
    cases = {}
    nan = lab.run_dir / "nan.yaml"
    nan.write_text(text.replace("interval: 0.5", "interval: .nan", 1))
    cases["nan"] = (nan, "interval")
    fifo = lab.run_dir / "fifo.yaml"
    fifo.unlink(missing_ok=True)  # a run dir is kept for reading after a run
    os.mkfifo(fifo)
    cases["fifo"] = (fifo, "regular file")
    cases["zero"] = (Path("/dev/zero"), "regular file")
    big = lab.run_dir / "big.yaml"
    big.write_text(over_budget(text))
    cases["budget"] = (big, "budget")
    secret = lab.run_dir / "secret"
    secret.write_text(SECRET + ": [\n")
    secret.chmod(0o600)
    cases["secret"] = (secret, str(secret))

    traffic = Traffic(lab, seconds=20)
    answers = {}
    try:
        time.sleep(1)
        for name, (path, expect) in cases.items():
            started = time.time()
            code, out = lab.ctl("apply", path, timeout=30)
            answers[name] = (code, out, time.time() - started)
            # Answering admin requests throughout, the running generation unchanged.
            assert generation(lab) == gen, out
    finally:
        results, (reqs, errors, wrk_out) = traffic.end()
    for name, (path, expect) in cases.items():
        code, out, took = answers[name]
        print(f"\n{name}: exit {code} in {took:.2f} s: {out.strip().splitlines()[0]}")
        assert code != 0, (name, out)
        assert expect in out, (name, out)
        assert SECRET not in out, (name, out)
    failed = [e for ok, e in results if not ok]
    assert failed == [] and len(results) >= 20, (len(results), failed[:3])
    assert errors == 0 and reqs > 0, wrk_out
    assert SECRET not in (lab.run_dir / "sluiced.log").read_text(errors="replace")
    # The good config still applies: nothing was left half-done.
    code, out = lab.ctl("apply", lab.config)
    assert code == 0 and generation(lab) == gen + 1, out


def test_slow_clients_hold_one_slot_each(hostile_lab):
    lab = hostile_lab
    mode = stat.S_IMODE(os.stat(lab.admin_socket).st_mode)
    assert mode == 0o600, oct(mode)
    slow = []
    try:
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(lab.admin_socket))
            s.sendall(b'{"cmd": "sta')  # half a line, never finished
            slow.append(s)
        # The metrics endpoint listens in the appliance's namespace: the slow clients run
        # there too, each sending part of a request head and then nothing.
        script = ("import socket,time\nss=[]\n"
                  "for _ in range(10):\n s=socket.create_connection(('127.0.0.1',9109));s.sendall(b'GET /me');ss.append(s)\n"
                  "print('held',flush=True);time.sleep(8)\n")
        holder = subprocess.Popen(["ip", "netns", "exec", lab.ns("gw"), sys.executable, "-c", script],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            code, out = lab.ctl("status", timeout=10)
            assert code == 0 and "generation" in out, out
            m = labmod.metrics(lab)
            assert m.get("sluice_config_generation", 0) >= 1, m
        finally:
            holder.kill()
            holder.wait()
    finally:
        for s in slow:
            s.close()


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def gre_ack(client, cport, vm, vport, key):
    """A GRE packet (key `key`) carrying a valid client:cport -> vm:vport TCP ACK at a sequence
    number outside the connection's window, which the VM's kernel answers with an ACK of its
    own (RFC 9293 3.10.7.4): a reply of the flow, sent wherever the agent has the flow's
    return path."""
    src, dst = socket.inet_aton(client), socket.inet_aton(vm)
    tcp = struct.pack("!HHIIBBHHH", cport, vport, 12345, 67890, 5 << 4, 0x10, 1024, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return struct.pack("!HHI", 0x2000, 0x0800, key) + ip + tcp


def test_a_spoofed_tunnel_packet_does_not_move_a_flows_replies(hostile_lab):
    lab = hostile_lab
    port = 45123
    out = lab.run_dir / "spoofed-blob"
    dl = subprocess.Popen(["ip", "netns", "exec", lab.ns("cli1"), "curl", "-sS", "--max-time", "60",
                           "--local-port", str(port), "--limit-rate", "2M", "-o", str(out), f"http://{VIP_A}/blob"],
                          stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    # Tunnel packets that reach the router from the backend network: the replies of a flow
    # whose return path the spoofed packet would have taken.
    cap = lab.capture("rtr", "r-sw", "to-spoofer.pcap", f"(ip proto 47 or ip proto 4) and dst host {labmod.RTR_INT_IP}")
    # From the router (on the backend network, not an appliance): the flow's packet in GRE
    # with tenant A's key, to both hosts' agents, as if it came from another appliance.
    sender = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_GRE)\n"
              "for i in range(1,len(sys.argv),2):\n"
              " s.sendto(bytes.fromhex(sys.argv[i]),(sys.argv[i+1],0))\n")
    args = []
    for host, vpc, addr, _ in VMS:
        if vpc == 100:
            args += [gre_ack(CLIENT_IPS[0], port, addr, 8080, 100).hex(), labmod.backend_ip(host)]
    # Three times, further apart than Linux's limit on such answers (500 ms).
    for _ in range(3):
        lab.sh("rtr", sys.executable, "-c", sender, *args)
        time.sleep(0.6)
    _, err = dl.communicate(timeout=90)
    time.sleep(0.3)
    lab.stop(cap, timeout=5)
    to_spoofer = labmod.read_pcap(lab.run_dir / "to-spoofer.pcap")
    assert to_spoofer == [], f"{len(to_spoofer)} tunnel packets went to the spoofer"
    assert dl.returncode == 0, err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(expected_blob()).hexdigest()
