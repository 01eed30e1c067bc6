#!/usr/bin/env bash
# Smoke test of sluice-agent, for real, in three throwaway network namespaces (root only).
# Their names (agt6-test*) are this script's own.
#
#   agt6-test-app (the "appliance")          agt6-test (the backend host)
#   agt6-veth1 198.19.255.2/30 <── veth ──>  agt6-veth0 198.19.255.1/30
#              2001:db8:ff::2/64                        2001:db8:ff::1/64
#                                            sluice-agent --address 198.19.255.1
#                                                         --address 2001:db8:ff::1
#                                                         --appliance 198.19.255.2
#                                                         --appliance 2001:db8:ff::2
#                                                         --vpc 7=agt7 --physical agtp
#                                            agtp 10.99.0.10/24, route 198.51.100.0/24 via agtp
#                                                 2001:db8:99::10/64, route 2001:db8:51::/64
#                                            UDP listener on 10.99.0.10:5300
#                                                 │ agt7 moved (ip link set agt7 netns agt6-test-vm)
#                                            agt6-test-vm (a VM of VPC 7)
#                                            agt7 192.0.2.10/24, route 203.0.113.0/24 via agt7
#                                                 2001:db8:7::10/64, route 2001:db8:c::/64
#                                            UDP listener on 192.0.2.10:5300
#
# From agt6-test-app, python sends a GRE (key 7) packet carrying UDP 203.0.113.5:40000 ->
# 192.0.2.10:5300; the listener must get it and answer, and the answer must come back to
# agt6-test-app GRE-encapsulated with key 7 (the NAT return path). The same over IPIP to
# 10.99.0.10 through the physical TUN, answered in IPIP. A GRE packet with key 8 must be
# dropped as unknown_vpc. Then a spoofer sends a GRE packet of the known key-7 flow from
# 198.19.254.9 (not an appliance): it must be dropped as not_appliance, and a datagram the VM's
# listener sends afterwards on that flow must still come back to the real appliance. Then the
# VM answers two 3,000-byte datagrams (one fragmented outside the tunnel, one cut into inner
# fragments) with 4,000 bytes each, whose fragments must all come back in GRE key 7, and a
# datagram to a closed port, whose ICMP port unreachable must come back too. Then the agent is
# stopped with SIGTERM and its counters checked. Before that, over the IPv6 underlay with IPv6
# inside (documentation addresses, 2001:db8::/32, only): an IPv6-in-IPv6 (next header 41)
# datagram to [2001:db8:99::10]:5300 through the physical TUN, answered in IPv6-in-IPv6; a
# GRE-over-IPv6 (key 7, type 0x86DD) datagram to [2001:db8:7::10]:5300 in the VM, answered in
# GRE key 7 over IPv6; and one to a closed port, whose ICMPv6 port unreachable must come back
# in GRE key 7 over IPv6 too. IPv6 is enabled in the namespaces and DAD is off (accept_dad=0,
# nodad), so the addresses work at once. Before all that, an agent started without
# --appliance must refuse to start.
#
# Uses $SLUICE_AGENT if set, else builds target/debug/sluice-agent with cargo.
# Exits 0 when not root (skipped). Everything it creates is removed on exit, also on failure.

set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "smoke.sh: skipped: needs root (network namespaces, TUN devices, raw sockets)"
    exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
if [ -z "${SLUICE_AGENT:-}" ]; then
    (cd "$root" && cargo build -q -p sluice-agent)
    SLUICE_AGENT=$root/target/debug/sluice-agent
fi
python=${PYTHON:-/usr/bin/python3}

NS=agt6-test
APP=agt6-test-app
VM=agt6-test-vm
work=$(mktemp -d /tmp/agt6-test.XXXXXX)
agent_pid=
listener_pids=

cleanup() {
    local rc=$?
    for pid in $listener_pids $agent_pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    for ns in "$NS" "$APP" "$VM"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        echo "smoke.sh: FAILED (exit $rc); agent output:" >&2
        cat "$work/agent.log" >&2 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "smoke.sh: $*" >&2
    exit 1
}

in_ns() { ip netns exec "$NS" "$@"; }
in_app() { ip netns exec "$APP" "$@"; }
in_vm() { ip netns exec "$VM" "$@"; }

# Leftovers of an interrupted earlier run.
for ns in "$NS" "$APP" "$VM"; do
    ip netns del "$ns" 2>/dev/null || true
done

for ns in "$NS" "$APP" "$VM"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip link add agt6-veth0 netns "$NS" type veth peer name agt6-veth1 netns "$APP"
in_ns ip addr add 198.19.255.1/30 dev agt6-veth0
in_app ip addr add 198.19.255.2/30 dev agt6-veth1
in_ns ip addr add 2001:db8:ff::1/64 dev agt6-veth0 nodad
in_app ip addr add 2001:db8:ff::2/64 dev agt6-veth1 nodad
for ns in "$NS" "$APP" "$VM"; do
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
in_ns ip link set agt6-veth0 up
in_app ip link set agt6-veth1 up
in_ns sysctl -qw net.ipv4.conf.agt6-veth0.rp_filter=0
in_app sysctl -qw net.ipv4.conf.agt6-veth1.rp_filter=0

# Without --appliance the agent would take tunnels from anyone: it must refuse to start.
rc=0
ip netns exec "$NS" "$SLUICE_AGENT" --address 198.19.255.1 --physical agtp >"$work/refused.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "sluice-agent without --appliance exited $rc, want 2: $(cat "$work/refused.log")"
grep -q 'no --appliance given' "$work/refused.log" ||
    fail "sluice-agent without --appliance said: $(cat "$work/refused.log")"

# The agent, in the backend namespace (ip netns exec execs it: $! is the agent itself).
RUST_LOG=info ip netns exec "$NS" "$SLUICE_AGENT" --address 198.19.255.1 --address 2001:db8:ff::1 \
    --appliance 198.19.255.2 --appliance 2001:db8:ff::2 \
    --vpc 7=agt7 --physical agtp >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
    grep -q 'running:' "$work/agent.log" && break
    kill -0 "$agent_pid" 2>/dev/null || fail "sluice-agent exited before running"
    sleep 0.1
done
grep -q 'running:' "$work/agent.log" || fail "sluice-agent did not print running: within 10 s"

# The lab's part: address, up, a route back to the client through the TUN; VPC 7's TUN moved
# into its VM's namespace first (the agent keeps using its file).
in_ns ip link set agt7 netns "$VM"
in_vm ip addr add 192.0.2.10/24 dev agt7
in_vm ip link set agt7 up
in_vm ip route add 203.0.113.0/24 dev agt7
in_vm sysctl -qw net.ipv6.conf.agt7.disable_ipv6=0 net.ipv6.conf.agt7.accept_dad=0
in_vm ip addr add 2001:db8:7::10/64 dev agt7 nodad
in_vm ip route add 2001:db8:c::/64 dev agt7
in_vm sysctl -qw net.ipv4.conf.agt7.rp_filter=0
in_ns ip addr add 10.99.0.10/24 dev agtp
in_ns ip link set agtp up
in_ns ip route add 198.51.100.0/24 dev agtp
in_ns sysctl -qw net.ipv6.conf.agtp.disable_ipv6=0 net.ipv6.conf.agtp.accept_dad=0
in_ns ip addr add 2001:db8:99::10/64 dev agtp nodad
in_ns ip route add 2001:db8:51::/64 dev agtp
in_ns sysctl -qw net.ipv4.conf.agtp.rp_filter=0

# The backend application: answers one datagram with "pong:" + what it got; given a third
# argument, then waits for that file to appear and sends "late" to the same peer.
cat >"$work/listener.py" <<'EOF'
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], 5300))
s.settimeout(10)
open(sys.argv[1], "w").close()  # bound: tell the script
data, peer = s.recvfrom(2048)
s.sendto(b"pong:" + data, peer)
print(f"{peer[0]}:{peer[1]} {data.decode()}", flush=True)
if len(sys.argv) > 3:
    deadline = time.time() + 10
    while not os.path.exists(sys.argv[3]):
        if time.time() > deadline:
            sys.exit("no go file within 10 s")
        time.sleep(0.05)
    s.sendto(b"late", peer)
EOF
for where in "$VM 192.0.2.10 $work/go" "$NS 10.99.0.10"; do
    read -r ns addr go <<<"$where"
    # shellcheck disable=SC2086 # $go: no argument when empty
    ip netns exec "$ns" "$python" "$work/listener.py" "$work/listening.$addr" "$addr" $go \
        >"$work/listener.$addr" 2>&1 &
    listener_pids="$listener_pids $!"
    for _ in $(seq 50); do
        [ -e "$work/listening.$addr" ] && break
        sleep 0.1
    done
    [ -e "$work/listening.$addr" ] || fail "UDP listener on $addr did not start"
done

# The appliance: sends GRE (key 7), GRE (key 8) and IPIP packets with UDP inside, then waits
# for the answers to come back the way their requests went.
cat >"$work/appliance.py" <<'EOF'
import select, socket, struct, sys, time

AGENT, ME = "198.19.255.1", "198.19.255.2"

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def udp_in_ipv4(src, sport, dst, dport, payload):
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0x1234, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + udp

def parse_udp(ip):
    ihl = (ip[0] & 0x0F) * 4
    sport, dport, ulen = struct.unpack("!HHH", ip[ihl:ihl + 6])
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    return (src, sport, dst, dport, ip[9], ip[ihl + 8:ihl + ulen])

def gre(key, inner):
    return struct.pack("!HHI", 0x2000, 0x0800, key) + inner

gre_sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
ipip_sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
for s in (gre_sock, ipip_sock):
    s.bind((ME, 0))

gre_inner = udp_in_ipv4("203.0.113.5", 40000, "192.0.2.10", 5300, b"hello-gre")
ipip_inner = udp_in_ipv4("198.51.100.5", 40001, "10.99.0.10", 5300, b"hello-ipip")
gre_sock.sendto(gre(8, gre_inner), (AGENT, 0))  # no VPC 8: dropped as unknown_vpc
gre_sock.sendto(gre(7, gre_inner), (AGENT, 0))
ipip_sock.sendto(ipip_inner, (AGENT, 0))

want = {
    "gre": (7, ("192.0.2.10", 5300, "203.0.113.5", 40000, 17, b"pong:hello-gre")),
    "ipip": (None, ("10.99.0.10", 5300, "198.51.100.5", 40001, 17, b"pong:hello-ipip")),
}
deadline = time.time() + 5
while want and time.time() < deadline:
    ready, _, _ = select.select([gre_sock, ipip_sock], [], [], 0.2)
    for s in ready:
        pkt = s.recv(65535)
        if socket.inet_ntoa(pkt[12:16]) != AGENT:
            continue
        ihl = (pkt[0] & 0x0F) * 4
        if s is gre_sock:
            flags, proto = struct.unpack("!HH", pkt[ihl:ihl + 4])
            if flags != 0x2000 or proto != 0x0800:
                sys.exit(f"GRE reply: flags {flags:#06x} protocol {proto:#06x}, want key only, IPv4")
            (key,) = struct.unpack("!I", pkt[ihl + 4:ihl + 8])
            got, kind = (key, parse_udp(pkt[ihl + 8:])), "gre"
        else:
            got, kind = (None, parse_udp(pkt[ihl:])), "ipip"
        if want.get(kind) != got:
            sys.exit(f"{kind} reply: got {got}, want {want.get(kind)}")
        del want[kind]
        src, sport, dst, dport, _, payload = got[1]
        print(f"{kind} reply back (key {got[0]}): {src}:{sport} -> {dst}:{dport} {payload.decode()}")
if want:
    sys.exit(f"no reply within 5 s for: {', '.join(want)}")

# The spoofer: the known key-7 flow, from an address that is not an appliance. Were it taken,
# the flow's replies would go to 198.19.254.9 (unreachable from the agent) from now on.
SPOOF = "198.19.254.9"
spoof_gre = gre(7, udp_in_ipv4("203.0.113.5", 40000, "192.0.2.10", 5300, b"spoofed"))
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(spoof_gre), 0x4321, 0x4000, 64, 47, 0,
                  socket.inet_aton(SPOOF), socket.inet_aton(AGENT))
hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
raw.sendto(hdr + spoof_gre, (AGENT, 0))
time.sleep(0.5)  # let the agent's GRE thread take it before the VM speaks
open(sys.argv[1], "w").close()  # the VM's listener now sends "late" on the flow
deadline = time.time() + 5
while time.time() < deadline:
    ready, _, _ = select.select([gre_sock], [], [], 0.2)
    if not ready:
        continue
    pkt = gre_sock.recv(65535)
    ihl = (pkt[0] & 0x0F) * 4
    if socket.inet_ntoa(pkt[12:16]) != AGENT or pkt[ihl:ihl + 4] != b"\x20\x00\x08\x00":
        continue
    (key,) = struct.unpack("!I", pkt[ihl + 4:ihl + 8])
    got = (key, parse_udp(pkt[ihl + 8:]))
    if got == (7, ("192.0.2.10", 5300, "203.0.113.5", 40000, 17, b"late")):
        print("late reply back to the real appliance after the spoofed packet")
        sys.exit(0)
sys.exit("the late reply did not come back to the real appliance within 5 s")
EOF
in_app "$python" "$work/appliance.py" "$work/go" || fail "the appliance did not get the answers back"

for pid in $listener_pids; do
    wait "$pid" || fail "a UDP listener failed: $(cat "$work"/listener.*)"
done
listener_pids=
grep -qx '203.0.113.5:40000 hello-gre' "$work/listener.192.0.2.10" ||
    fail "listener on 192.0.2.10 got: $(cat "$work/listener.192.0.2.10")"
grep -qx '198.51.100.5:40001 hello-ipip' "$work/listener.10.99.0.10" ||
    fail "listener on 10.99.0.10 got: $(cat "$work/listener.10.99.0.10")"
echo "listeners got: $(cat "$work/listener.192.0.2.10") / $(cat "$work/listener.10.99.0.10")"

# Fragments and ICMP errors. The VM's second listener answers each datagram with 4,000 bytes
# (its kernel cuts that into three fragments on agt7). The appliance sends one 3,000-byte
# datagram whole (its kernel fragments the GRE packet on the veth; the agent's kernel
# reassembles it before the raw socket), then the same flow's next datagram cut into three
# inner fragments, each in its own GRE packet; every fragment of both answers must come back
# in GRE key 7. Then a datagram to a closed port: the VM's port unreachable must come back in
# GRE key 7 too.
cat >"$work/big.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.10", 5302))
s.settimeout(10)
open(sys.argv[1], "w").close()
for _ in range(2):
    data, peer = s.recvfrom(65535)
    s.sendto(bytes(i * 7 % 256 for i in range(4000)), peer)
    print(f"{peer[0]}:{peer[1]} {len(data)}", flush=True)
EOF
in_vm "$python" "$work/big.py" "$work/listening.big" >"$work/listener.big" 2>&1 &
listener_pids="$!"
for _ in $(seq 50); do
    [ -e "$work/listening.big" ] && break
    sleep 0.1
done
[ -e "$work/listening.big" ] || fail "the VM's second UDP listener did not start"

cat >"$work/appliance2.py" <<'EOF'
import select, socket, struct, sys, time

AGENT, ME, CLIENT, VM = "198.19.255.1", "198.19.255.2", "203.0.113.5", "192.0.2.10"

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def ip_header(proto, payload_len, ident, frag_word):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, frag_word, 64, proto, 0,
                    socket.inet_aton(CLIENT), socket.inet_aton(VM))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]

def udp(sport, dport, payload):
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(CLIENT) + socket.inet_aton(VM) + struct.pack("!BBH", 0, 17, ulen)
    u = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = csum(pseudo + u) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]

def gre7(inner):
    return struct.pack("!HHI", 0x2000, 0x0800, 7) + inner

sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
sock.bind((ME, 0))

def inner_packets(n, what):
    """The next n inner packets the agent sends back in GRE key 7."""
    got, deadline = [], time.time() + 5
    while len(got) < n and time.time() < deadline:
        if not select.select([sock], [], [], 0.2)[0]:
            continue
        pkt = sock.recv(65535)
        ihl = (pkt[0] & 0x0F) * 4
        if socket.inet_ntoa(pkt[12:16]) != AGENT:
            continue
        if pkt[ihl:ihl + 8] != b"\x20\x00\x08\x00\x00\x00\x00\x07":
            sys.exit(f"{what}: GRE header {pkt[ihl:ihl + 8].hex()}, want key 7, IPv4")
        got.append(pkt[ihl + 8:])
    if len(got) < n:
        sys.exit(f"{what}: {len(got)} of {n} packets back within 5 s")
    return got

def reassemble(frags, what):
    parts = sorted(((struct.unpack("!H", f[6:8])[0] & 0x1FFF) * 8, f) for f in frags)
    if any((f[6] & 0x20 == 0) != (i == len(parts) - 1) for i, (_, f) in enumerate(parts)):
        sys.exit(f"{what}: more-fragments flags wrong")
    payload = b"".join(f[(f[0] & 0x0F) * 4:struct.unpack("!H", f[2:4])[0]] for _, f in parts)
    sport, dport, ulen = struct.unpack("!HHH", payload[:6])
    want = bytes(i * 7 % 256 for i in range(4000))
    if (sport, dport, ulen, payload[8:]) != (5302, 40003, 4008, want):
        sys.exit(f"{what}: reassembled {sport} -> {dport} ({ulen} bytes), not the VM's answer")
    print(f"{what}: the answer came back in {len(frags)} fragments, whole")

body = bytes(i % 251 for i in range(3000))
whole = udp(40003, 5302, body)
sock.sendto(gre7(ip_header(17, len(whole), 0x2001, 0) + whole), (AGENT, 0))
reassemble(inner_packets(3, "outer-fragmented request"), "outer-fragmented request")

step = 1376
for off in range(0, len(whole), step):
    more = 0x2000 if off + step < len(whole) else 0
    piece = whole[off:off + step]
    sock.sendto(gre7(ip_header(17, len(piece), 0x2002, more | off // 8) + piece), (AGENT, 0))
reassemble(inner_packets(3, "inner-fragmented request"), "inner-fragmented request")

closed = udp(40005, 5309, b"anyone?")
sock.sendto(gre7(ip_header(17, len(closed), 0x2003, 0x4000) + closed), (AGENT, 0))
(icmp,) = inner_packets(1, "port unreachable")
ihl = (icmp[0] & 0x0F) * 4
q = icmp[ihl + 8:]
qihl = (q[0] & 0x0F) * 4
got = (icmp[9], icmp[ihl], icmp[ihl + 1], socket.inet_ntoa(icmp[12:16]), socket.inet_ntoa(icmp[16:20]),
       struct.unpack("!HH", q[qihl:qihl + 4]))
if got != (1, 3, 3, VM, CLIENT, (40005, 5309)):
    sys.exit(f"port unreachable: got {got}")
print("the VM's port unreachable came back in GRE key 7")
EOF
in_app "$python" "$work/appliance2.py" || fail "fragments or the ICMP error did not come back"
wait "$listener_pids" || fail "the VM's second listener failed: $(cat "$work/listener.big")"
listener_pids=
[ "$(cat "$work/listener.big")" = "$(printf '203.0.113.5:40003 3000\n203.0.113.5:40003 3000')" ] ||
    fail "the VM's second listener got: $(cat "$work/listener.big")"

# The IPv6 underlay, IPv6 inside. Listeners on [2001:db8:99::10]:5300 (the host, physical TUN)
# and [2001:db8:7::10]:5300 (the VM); the appliance sends IPv6-in-IPv6 to the first, GRE key 7
# over IPv6 to the second and to a closed port of the VM.
cat >"$work/listener6.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[2], 5300))
s.settimeout(10)
open(sys.argv[1], "w").close()
data, peer = s.recvfrom(2048)
s.sendto(b"pong:" + data, peer)
print(f"[{peer[0]}]:{peer[1]} {data.decode()}", flush=True)
EOF
listener_pids=
for where in "$VM 2001:db8:7::10" "$NS 2001:db8:99::10"; do
    read -r ns addr <<<"$where"
    ip netns exec "$ns" "$python" "$work/listener6.py" "$work/listening.$addr" "$addr" \
        >"$work/listener.$addr" 2>&1 &
    listener_pids="$listener_pids $!"
    for _ in $(seq 50); do
        [ -e "$work/listening.$addr" ] && break
        sleep 0.1
    done
    [ -e "$work/listening.$addr" ] || fail "UDP listener on $addr did not start"
done

cat >"$work/appliance6.py" <<'EOF'
import select, socket, struct, sys, time

AGENT, ME = "2001:db8:ff::1", "2001:db8:ff::2"

def a6(s):
    return socket.inet_pton(socket.AF_INET6, s)

def addr(b):
    return socket.inet_ntop(socket.AF_INET6, b)

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def udp_in_ipv6(src, sport, dst, dport, payload):
    ulen = 8 + len(payload)
    pseudo = a6(src) + a6(dst) + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + a6(src) + a6(dst) + udp

def parse_udp(ip):
    if ip[0] >> 4 != 6 or ip[6] != 17:
        return ("not IPv6 UDP", ip[:48].hex())
    sport, dport, ulen = struct.unpack("!HHH", ip[40:46])
    return (addr(ip[8:24]), sport, addr(ip[24:40]), dport, ip[48:40 + ulen])

def gre7(inner):
    return struct.pack("!HHI", 0x2000, 0x86DD, 7) + inner

# An IPv6 raw socket reads the payload after the outer header; the sender comes from recvfrom.
ip6ip6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 41)
gre = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 47)
for s in (ip6ip6, gre):
    s.bind((ME, 0))

ip6ip6.sendto(udp_in_ipv6("2001:db8:51::5", 40011, "2001:db8:99::10", 5300, b"hello-ip6ip6"), (AGENT, 0))
gre.sendto(gre7(udp_in_ipv6("2001:db8:c::5", 40012, "2001:db8:7::10", 5300, b"hello-gre6")), (AGENT, 0))
gre.sendto(gre7(udp_in_ipv6("2001:db8:c::5", 40013, "2001:db8:7::10", 5309, b"anyone?")), (AGENT, 0))

want = {
    "ip6ip6": ("2001:db8:99::10", 5300, "2001:db8:51::5", 40011, b"pong:hello-ip6ip6"),
    "gre6": ("2001:db8:7::10", 5300, "2001:db8:c::5", 40012, b"pong:hello-gre6"),
    "icmpv6": (1, 4, "2001:db8:7::10", "2001:db8:c::5", "2001:db8:c::5", (40013, 5309)),
}
deadline = time.time() + 5
while want and time.time() < deadline:
    ready, _, _ = select.select([ip6ip6, gre], [], [], 0.2)
    for s in ready:
        pkt, (src, *_) = s.recvfrom(65535)
        if src != AGENT:
            continue
        if s is ip6ip6:
            kind, got = "ip6ip6", parse_udp(pkt)
        else:
            if pkt[:8] != b"\x20\x00\x86\xdd\x00\x00\x00\x07":
                sys.exit(f"GRE over IPv6: header {pkt[:8].hex()}, want key 7, type IPv6")
            inner = pkt[8:]
            if inner[6] == 58:  # ICMPv6: the port unreachable, quoting the request to 5309
                q = inner[48:]
                kind = "icmpv6"
                got = (inner[40], inner[41], addr(inner[8:24]), addr(inner[24:40]),
                       addr(q[8:24]), struct.unpack("!HH", q[40:44]))
            else:
                kind, got = "gre6", parse_udp(inner)
        if want.get(kind) != got:
            sys.exit(f"{kind} reply: got {got}, want {want.get(kind)}")
        del want[kind]
        print(f"{kind} back from [{src}]: {got}")
if want:
    sys.exit(f"no reply within 5 s for: {', '.join(want)}")
EOF
in_app "$python" "$work/appliance6.py" || fail "the IPv6 answers did not come back"
for pid in $listener_pids; do
    wait "$pid" || fail "an IPv6 UDP listener failed: $(cat "$work"/listener.2001*)"
done
listener_pids=
grep -qx '\[2001:db8:c::5\]:40012 hello-gre6' "$work/listener.2001:db8:7::10" ||
    fail "listener on 2001:db8:7::10 got: $(cat "$work/listener.2001:db8:7::10")"
grep -qx '\[2001:db8:51::5\]:40011 hello-ip6ip6' "$work/listener.2001:db8:99::10" ||
    fail "listener on 2001:db8:99::10 got: $(cat "$work/listener.2001:db8:99::10")"
echo "IPv6 listeners got: $(cat "$work/listener.2001:db8:7::10") / $(cat "$work/listener.2001:db8:99::10")"

# Stop the agent: it prints its counters and exits 0.
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "sluice-agent exited with $? on SIGTERM"
agent_pid=
expect() {
    grep -qxF "$1" "$work/agent.log" || fail "counter missing or wrong: want '$1'"
}
# GRE over IPv4: 3 + 1 reassembled + 3 inner fragments + 1 to the closed port; over IPv6: 2.
# Replies on agt7: 2 + 3 + 3 fragments + 1 ICMP error over IPv4, 1 + 1 ICMPv6 error over IPv6;
# on agtp: 1 IPIP, 1 IPv6-in-IPv6. The inner fragments make no flow (40003 has one already).
expect 'sluice_agent_received_packets_total{underlay="ipv4",proto="gre"} 8'
expect 'sluice_agent_received_packets_total{underlay="ipv4",proto="ipip"} 1'
expect 'sluice_agent_received_packets_total{underlay="ipv6",proto="gre"} 2'
expect 'sluice_agent_received_packets_total{underlay="ipv6",proto="ipv6"} 1'
expect 'sluice_agent_decapsulated_packets_total{tun="agt7"} 8'
expect 'sluice_agent_decapsulated_packets_total{tun="agtp"} 2'
expect 'sluice_agent_replies_tunneled_total{tun="agt7"} 11'
expect 'sluice_agent_replies_fragments_total{tun="agt7"} 6'
expect 'sluice_agent_replies_icmp_errors_total{tun="agt7"} 2'
expect 'sluice_agent_drops_total{reason="outer_fragment"} 0'
expect 'sluice_agent_drops_total{reason="reply_fragment_orphan"} 0'
expect 'sluice_agent_drops_total{reason="icmp_no_flow"} 0'
expect 'sluice_agent_replies_tunneled_total{tun="agtp"} 2'
expect 'sluice_agent_drops_total{reason="unknown_vpc"} 1'
expect 'sluice_agent_drops_total{reason="not_appliance"} 1'
expect 'sluice_agent_drops_total{reason="no_flow"} 0'
expect 'sluice_agent_drops_total{reason="send_failed"} 0'
expect 'sluice_agent_drops_total{reason="inner_not_ipv6"} 0'
expect 'sluice_agent_flows 7'
if in_vm ip link show agt7 >/dev/null 2>&1; then fail "agt7 outlived the agent"; fi
if in_ns ip link show agtp >/dev/null 2>&1; then fail "agtp outlived the agent"; fi
grep "^sluice_agent_" "$work/agent.log" | grep -v " 0$" || true
echo "smoke.sh: ok"
