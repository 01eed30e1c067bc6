"""Resource isolation in the lab (issue 8): the DSR VIP's two services are flooded from spoofed
lab addresses (UDP at its dns service, SYNs at its web service) far above their limits, while
tenant A's web service, which has none, keeps being served. With `always` limits the flood is
held to the limits at once; with `on_overload` limits nothing is dropped until the appliance's
packet rate passes the high-water mark, and isolation engages at the first check after.

Rates are measured from sluiced's own counters (Prometheus endpoint) over wall-clock windows of
several seconds; latencies are printed, never asserted.
"""
import re
import statistics
import subprocess
import time
from pathlib import Path

import pytest

import lab as labmod
from lab import VIP, VIP_A

# Spoofed flood sources: lab addresses that no namespace holds (replies die at the router).
FLOOD_SOURCES = [f"198.18.64.{i}" for i in range(11, 15)]
DNS_PPS = 1000          # the dns service's packets/s limit
WEB_CPS = 200           # the web service's connections/s limit
HIGH_PPS = 6000         # the overload check's high-water mark (packets/s received)


def config(when, isolation=""):
    """lab.yaml with limits on the DSR VIP's services, `when` they apply."""
    text = labmod.CONFIG.read_text()
    web = "    on_no_backend: reset\n"
    dns = "    tunnel: gre\n    backends:\n      - { address: 198.19.0.11 }\n"
    assert web in text and dns in text
    text = text.replace(web, web + f"    limits: {{ connections_per_second: {WEB_CPS}, when: {when} }}\n", 1)
    text = text.replace(dns, f"    tunnel: gre\n    limits: {{ packets_per_second: {DNS_PPS}, when: {when} }}\n"
                        "    backends:\n      - { address: 198.19.0.11 }\n", 1)
    return text + isolation


ON_OVERLOAD = config("on_overload", (
    "isolation:\n"
    "  interval: 2\n"
    f"  high: {{ packets_per_second: {HIGH_PPS} }}\n"
    f"  low: {{ packets_per_second: {HIGH_PPS // 2} }}\n"
    "  calm_checks: 1\n"))


@pytest.fixture(scope="module")
def iso_lab(sluiced):
    agent = Path(sluiced).parent / "sluice-agent"
    sluicectl = Path(sluiced).parent / "sluicectl"
    lab = labmod.Lab(prefix="sli")
    lab.up()
    try:
        lab.config = lab.run_dir / "isolation.yaml"
        lab.config.write_text(config("always"))
        lab.gw = lab.start_sluiced(sluiced, lab.config)
        lab.start_agents(agent)
        lab.logs = lab.start_servers()

        def apply(text):
            lab.config.write_text(text)
            r = subprocess.run([str(sluicectl), "--socket", str(lab.admin_socket), "apply"],
                               text=True, capture_output=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        lab.apply = apply
        yield lab
    finally:
        lab.down()


def scrape(lab):
    """sluiced's metrics: {'name{labels}': value}, and when they were read."""
    return labmod.metrics(lab), time.monotonic()


def flood(lab, kind, interval, sources=FLOOD_SOURCES):
    """hping3 from cli1 at the DSR VIP, one process per spoofed source (never --rand-source):
    `udp` to port 53 or `syn` to port 80, one packet per `interval`."""
    args = ["--udp", "-p", "53", "-d", "32"] if kind == "udp" else ["-S", "-p", "80"]
    return [lab.spawn("cli1", ["hping3", "-q", "-a", src, "-i", interval, *args, VIP], f"hping-{kind}-{src}.log")
            for src in sources]


def stop(lab, procs):
    for p in procs:
        lab.stop(p, sig=subprocess.signal.SIGINT, timeout=5)


def timed_requests(lab, n):
    """n requests to tenant A's web service (no limits); (all succeeded, curl's time_total of
    each in ms: connect, request and answer, without the process start)."""
    oks, ms = [], []
    for _ in range(n):
        r = subprocess.run(["ip", "netns", "exec", lab.ns("cli2"), "curl", "-sS", "--max-time", "10", "-o",
                            "/dev/null", "-w", "%{http_code} %{time_total}", f"http://{VIP_A}/"],
                           text=True, capture_output=True, timeout=15)
        code, _, total = r.stdout.partition(" ")
        oks.append(r.returncode == 0 and code == "200")
        ms.append(float(total or "nan") * 1000)
    return all(oks), ms


def wait_active(lab, active, tries=100):
    """Scrapes until `sluice_isolation_active` is `active` (0 or 1); those metrics, or None."""
    for _ in range(tries):
        m, _ = scrape(lab)
        if m["sluice_isolation_active"] == active:
            return m
        time.sleep(0.1)
    return None


def rate(a, b, key):
    (ma, ta), (mb, tb) = a, b
    return (mb.get(key, 0) - ma.get(key, 0)) / (tb - ta)


DNS_FWD = 'sluice_service_packets_total{service="dns"}'
DNS_LIMITED = 'sluice_service_limited_total{service="dns",limit="packets"}'
WEB_NEW = 'sluice_service_sessions_created_total{service="web"}'
WEB_LIMITED = 'sluice_service_limited_total{service="web",limit="connections"}'
OTHER_FWD = 'sluice_service_packets_total{service="tenant-a-web"}'
LOAD_PPS = 'sluice_isolation_load{measure="packets_per_second"}'


def test_always_limits_hold_a_flood_and_the_other_service_is_served(iso_lab):
    lab = iso_lab
    ok, baseline = timed_requests(lab, 30)
    assert ok
    procs = flood(lab, "udp", "u200") + flood(lab, "syn", "u400")
    try:
        time.sleep(1.5)
        a = scrape(lab)
        ok, during = timed_requests(lab, 50)
        time.sleep(max(0.0, 6 - (time.monotonic() - a[1])))
        b = scrape(lab)
    finally:
        stop(lab, procs)
    dns, web = rate(a, b, DNS_FWD), rate(a, b, WEB_NEW)
    offered_dns = dns + rate(a, b, DNS_LIMITED)
    offered_web = web + rate(a, b, WEB_LIMITED)
    print(f"\nalways: dns {dns:.0f} pkt/s forwarded of {offered_dns:.0f} offered (limit {DNS_PPS}); "
          f"web {web:.0f} conn/s of {offered_web:.0f} (limit {WEB_CPS}); other service: "
          f"median {statistics.median(baseline):.1f} ms unflooded, {statistics.median(during):.1f} ms flooded")
    assert ok, "every request to the unlimited service succeeded during the flood"
    assert offered_dns > 5 * DNS_PPS and offered_web > 3 * WEB_CPS, "the flood is well above the limits"
    assert abs(dns - DNS_PPS) <= 0.1 * DNS_PPS, dns
    assert abs(web - WEB_CPS) <= 0.1 * WEB_CPS, web
    assert rate(a, b, OTHER_FWD) > 0
    # Once the flood is over, the drop reasons and the per-service counts agree.
    time.sleep(0.5)
    c, _ = scrape(lab)
    assert c[DNS_LIMITED] > 0 and c[WEB_LIMITED] > 0
    assert c['sluice_drops_total{reason="limit_packets"}'] == c[DNS_LIMITED]
    assert c['sluice_drops_total{reason="limit_connections"}'] == c[WEB_LIMITED]


def test_on_overload_limits_wait_for_the_high_water_mark(iso_lab):
    lab = iso_lab
    before, _ = scrape(lab)
    lab.apply(ON_OVERLOAD)
    # Let checks pass with the new marks in force, until one whose whole interval came after
    # the apply finds the appliance calm: the previous test's flood may still be in the window
    # of the first (CI saw isolation active 4.5 s after the apply, and once off at the first
    # scrape, then on at the next check, whose interval held the flood's tail).
    checks = "sluice_isolation_checks_total"
    deadline = time.monotonic() + 15
    while True:
        time.sleep(0.5)
        m0, _ = scrape(lab)
        calm = m0["sluice_isolation_active"] == 0 and m0.get(checks, 0) >= before.get(checks, 0) + 2
        if calm or time.monotonic() > deadline:
            break
    assert m0["sluice_isolation_active"] == 0
    assert m0['sluice_service_limit{service="dns",limit="packets",when="on_overload"}'] == DNS_PPS

    # Below the mark: 2000 packets/s at dns, twice its limit, but the appliance is not loaded.
    procs = flood(lab, "udp", "u1000", FLOOD_SOURCES[:2])
    try:
        time.sleep(1)
        a = scrape(lab)
        time.sleep(5)
        b = scrape(lab)
    finally:
        stop(lab, procs)
    below = rate(a, b, DNS_FWD)
    print(f"\nbelow the mark: dns {below:.0f} pkt/s forwarded, "
          f"load {b[0][LOAD_PPS]:.0f} pkt/s")
    assert below > 1.3 * DNS_PPS, "more than the limit went through"
    assert b[0][DNS_LIMITED] == m0[DNS_LIMITED], "nothing was dropped below the high-water mark"
    assert b[0]["sluice_isolation_active"] == 0

    # Above it: the flood. Isolation engages at the first check whose interval the flood
    # filled (the next, or the one after if the flood began mid-interval).
    c0, _ = scrape(lab)
    procs = flood(lab, "udp", "u200")
    try:
        engaged = wait_active(lab, 1)
        assert engaged, "isolation never engaged"
        checks = engaged["sluice_isolation_checks_total"] - c0["sluice_isolation_checks_total"]
        print(f"engaged {checks:.0f} check(s) after the flood began, at "
              f"{engaged[LOAD_PPS]:.0f} pkt/s")
        assert 1 <= checks <= 2, checks
        time.sleep(0.5)
        a = scrape(lab)
        time.sleep(4)
        b = scrape(lab)
    finally:
        stop(lab, procs)
    held = rate(a, b, DNS_FWD)
    print(f"overloaded: dns {held:.0f} pkt/s forwarded of {held + rate(a, b, DNS_LIMITED):.0f} offered")
    assert b[0]["sluice_isolation_active"] == 1
    assert abs(held - DNS_PPS) <= 0.1 * DNS_PPS, held

    # The flood gone, the next check is calm (calm_checks: 1): isolation goes off.
    off = wait_active(lab, 0)
    assert off, "isolation stayed on"
    assert off['sluice_isolation_switches_total{to="on"}'] >= 1
    assert off['sluice_isolation_switches_total{to="off"}'] >= 1
    log = lab.gw.log_path.read_text(errors="replace")
    assert re.search(r"isolation on \(check \d+\): packets_per_second \d+ >= 6000", log), log[-2000:]
    assert "isolation off" in log
