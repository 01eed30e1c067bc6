#!/usr/bin/env python3
"""What sluiced.service's Type=notify and ExecReload rely on, with the package's own binaries
(scripts/package-check.sh runs it on the unpacked tree; root, DPDK):

    python3 scripts/package-ready.py ROOT WORKDIR

A Unix datagram socket stands for systemd's NOTIFY_SOCKET. sluiced runs a pipeline on a
net_null port (no hugepages, no PCI, one worker, file prefix slpkg-ready-PID) and must send
READY=1 only once its worker has said it runs (its log line is written before the worker's
word), with its admin socket already answering; `sluicectl apply` (the reload) must apply the
file, and refuse a broken one with exit 1; SIGTERM must bring STOPPING=1 and exit 0.
Exits 1 with the reason otherwise."""

import os
import shutil
import signal
import socket
import subprocess
import sys

PIPELINE = """\
dpdk:
  args: [--no-huge, -m, '256', --no-pci, --file-prefix, slpkg-ready-{pid}, --log-level, 'lib.eal:notice']
  vdevs: [net_null0]
workers:
  cores: [1]
  control_core: 0
ports:
  - name: ext
    device: net_null0
    address: 198.18.0.1/24
    mac: 02:00:00:00:00:01
    neighbors:
      - {{ address: 198.18.0.10, mac: 02:00:00:00:00:0a }}
sessions:
  capacity: 65536
services:
  - name: web
    vip: 198.18.10.1
    port: 80
    protocol: tcp
    tunnel: gre
    gre_key: 7
    backends:
      - {{ address: 198.18.0.10, weight: {weight} }}
"""


def fail(why):
    print(f"package-ready: {why}", file=sys.stderr)
    sys.exit(1)


def main(root, work):
    pipeline, broken = f"{work}/ready.yaml", f"{work}/broken.yaml"
    with open(pipeline, "w") as f:
        f.write(PIPELINE.format(pid=os.getpid(), weight=3))
    with open(broken, "w") as f:
        f.write(PIPELINE.format(pid=os.getpid(), weight=-3))
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(f"{work}/notify.sock")
    systemd.settimeout(60)  # a bound for a sluiced that never says anything, not a measure
    admin, log_path = f"{work}/admin.sock", f"{work}/sluiced.log"
    ctl = [f"{root}/usr/bin/sluicectl", "--socket", admin]
    env = dict(os.environ, NOTIFY_SOCKET=f"{work}/notify.sock")
    with open(log_path, "w") as log:
        sluiced = subprocess.Popen(
            [f"{root}/usr/bin/sluiced", "--config", pipeline, "--admin-socket", admin],
            env=env, stdout=log, stderr=log)
    try:
        try:
            ready = systemd.recv(4096).decode()
        except socket.timeout:
            fail(f"no notification from sluiced (exit {sluiced.poll()}); its log:\n{open(log_path).read()}")
        if not ready.startswith("READY=1\n"):
            fail(f"first notification {ready!r}, not READY=1")
        if "worker 0 on core 1" not in open(log_path).read():
            fail(f"READY=1 before the worker said it runs; the log then:\n{open(log_path).read()}")
        status = subprocess.run(ctl + ["status"], capture_output=True, text=True)
        if status.returncode != 0 or "workers 1" not in status.stdout:
            fail(f"sluicectl status at READY=1: exit {status.returncode}: {status.stdout}{status.stderr}")
        reload = subprocess.run(ctl + ["apply"], capture_output=True, text=True)
        if reload.returncode != 0 or "applied" not in reload.stdout:
            fail(f"sluicectl apply (the reload): exit {reload.returncode}: {reload.stdout}{reload.stderr}")
        refused = subprocess.run(ctl + ["apply", broken], capture_output=True, text=True)
        if refused.returncode != 1 or "weight" not in refused.stderr:
            fail(f"sluicectl apply of a broken file: exit {refused.returncode}: {refused.stderr}")
        sluiced.send_signal(signal.SIGTERM)
        try:
            stopping = systemd.recv(4096).decode()
        except socket.timeout:
            fail("no STOPPING=1 after SIGTERM")
        if stopping != "STOPPING=1\n":
            fail(f"after SIGTERM {stopping!r}, not STOPPING=1")
        code = sluiced.wait(timeout=60)
        if code != 0:
            fail(f"sluiced exited {code} after SIGTERM")
    finally:
        if sluiced.poll() is None:
            sluiced.kill()
            sluiced.wait()
        shutil.rmtree(f"/var/run/dpdk/slpkg-ready-{os.getpid()}", ignore_errors=True)
    print(f"package-ready: READY=1 ({ready.split(chr(10))[1]}) after the worker ran, reload applied "
          "and refused a broken file, STOPPING=1, exit 0")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
