//! Config validation: good configs load; each broken one is refused with file, line and field.

use sluice_control::config::Config;
use sluice_control::stage::{Basis, Staged};

const GOOD: &str = "\
dpdk:
  args: [--no-huge, -m, '512', --no-pci]
  vdevs: [net_null0]
workers:
  cores: [1]
ports:
  - name: ext
    device: net_null0
    address: 198.18.0.1/24
    mac: 02:00:00:00:00:01
    neighbors:
      - { address: 198.18.0.10, mac: 02:00:00:00:00:0a }
services:
  - name: web
    vip: 198.18.10.1
    port: 80
    protocol: tcp
    tunnel: gre
    gre_key: 7
    backends:
      - { address: 198.18.0.10, weight: 3 }
      - address: 198.18.0.11
";

/// Replaces the first occurrence of `from` in GOOD and returns the single error line.
fn refuse(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    let text = GOOD.replacen(from, to, 1);
    let errs = Config::parse(&text, "p.yaml").expect_err(&format!("{from:?} -> {to:?} was accepted"));
    errs.to_string()
}

#[test]
fn good_config_loads() {
    let c = Config::parse(GOOD, "p.yaml").unwrap();
    assert_eq!(c.eal_args, ["--no-huge", "-m", "512", "--no-pci", "--vdev", "net_null0"]);
    assert_eq!(c.worker_cores, [1]);
    assert_eq!(c.ports[0].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(c.ports[0].spec.neighbors.len(), 1);
    let s = &c.services[0];
    assert_eq!(s.tunnel, sluice_dataplane::snapshot::Tunnel::Gre { key: Some(7) });
    // Two backends and no table_size: the first step (maglev::size_for).
    assert_eq!(s.table_size, 4093);
    assert_eq!(s.backends.iter().map(|b| b.weight).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(c.session_capacity, 4_000_000);
    assert_eq!(c.timeouts, sluice_dataplane::session::Timeouts::default());
}

#[test]
fn table_size_follows_the_backend_count_unless_given() {
    let size = |text: &str| Config::parse(text, "p.yaml").unwrap().services[0].table_size;
    let more: String = (12..21).map(|i| format!("      - address: 198.18.0.{i}\n")).collect();
    assert_eq!(size(&format!("{GOOD}{more}")), 16381, "11 backends");
    let given = GOOD.replacen("gre_key: 7", "gre_key: 7\n    table_size: 65537", 1);
    assert_eq!(size(&given), 65537);
    assert_eq!(size(&format!("{given}{more}")), 65537);
}

#[test]
fn schedulers_and_session_settings() {
    let text = GOOD.replacen(
        "tunnel: gre",
        "tunnel: gre\n    scheduler: ip_hash\n    persistence: 90\n    on_backend_removed: reset",
        1,
    ) + "sessions:\n  capacity: 1000\n  timeouts: { tcp_established: 60, udp: 5 }\n";
    let c = Config::parse(&text, "p.yaml").unwrap();
    let s = &c.services[0];
    use sluice_dataplane::snapshot::{OnRemoved, Scheduler};
    assert_eq!((s.scheduler, s.persistence, s.on_backend_removed), (Scheduler::IpHash, 90, OnRemoved::Reset));
    assert_eq!(
        (c.session_capacity, c.timeouts.tcp_established, c.timeouts.udp, c.timeouts.tcp_syn),
        (1000, 60, 5, 30)
    );
    for (name, want) in [
        ("round_robin", Scheduler::RoundRobin),
        ("least_conn", Scheduler::LeastConn),
        ("maglev", Scheduler::Maglev),
    ] {
        let text = GOOD.replacen("tunnel: gre", &format!("tunnel: gre\n    scheduler: {name}"), 1);
        assert_eq!(Config::parse(&text, "p.yaml").unwrap().services[0].scheduler, want);
    }
}

#[test]
fn unknown_key_names_line_and_field() {
    let e = refuse("weight: 3", "wieght: 3");
    assert!(e.starts_with("p.yaml:21:"), "{e}");
    assert!(e.contains("services[0].backends[0]"), "{e}");
    // The key is not quoted (a file that is not a config is never echoed); its position is.
    assert!(e.contains("unknown field, expected one of `address`"), "{e}");
    assert!(!e.contains("wieght"), "{e}");
}

#[test]
fn bad_address() {
    let e = refuse("vip: 198.18.10.1", "vip: 198.18.10.300");
    assert_eq!(e, "p.yaml:15:5: services[0].vip: \"198.18.10.300\" is not an IPv4 or IPv6 address");
}

#[test]
fn ipv6_nat_takes_ipv6_backends_only() {
    // Addresses are family-neutral from the parser on; the rule on families is
    // Snapshot::build's, placed by its path. A `dsr` service takes an IPv6 VIP, and so does a
    // `nat` one with IPv6 backends (NAT66) on hosts of either underlay; NAT64 is refused.
    let v6 = Config::parse(&GOOD.replacen("vip: 198.18.10.1", "vip: 2001:db8::10", 1), "p.yaml").unwrap();
    assert_eq!(v6.services[0].vip, "2001:db8::10".parse::<std::net::IpAddr>().unwrap());
    let nat = GOOD.replacen("vip: 198.18.10.1", "vip: 2001:db8::10", 1).replacen(
        "    tunnel: gre\n    gre_key: 7\n",
        "    forwarding: nat\n    vpc: 100\n",
        1,
    );
    let e = Config::parse(&nat, "p.yaml").unwrap_err().to_string();
    assert_eq!(
        e,
        "p.yaml:21:11: services[0].backends[0].address: 198.18.0.10: a `nat` backend is of its VIP's \
         family (NAT46 and NAT64 are not done)"
    );
    let nat66 = nat
        .replacen(
            "{ address: 198.18.0.10, weight: 3 }",
            "{ address: '2001:db8:c0::10', port: 8080, host: 198.18.0.10 }",
            1,
        )
        .replacen("address: 198.18.0.11\n", "address: '2001:db8:c0::11'\n        host: 198.18.0.10\n", 1);
    let c = Config::parse(&nat66, "p.yaml").unwrap();
    assert_eq!(c.services[0].backends[0].address, "2001:db8:c0::10".parse::<std::net::IpAddr>().unwrap());
    // An HTTP health check's Host is the VIP by default: an IPv6 literal in brackets.
    let checked = GOOD.replacen("vip: 198.18.10.1", "vip: 2001:db8::10", 1).replacen(
        "tunnel: gre\n",
        "tunnel: gre\n    health: { type: http }\n",
        1,
    );
    let c = Config::parse(&checked, "p.yaml").unwrap();
    let check = &c.health[0].as_ref().unwrap().check;
    assert!(
        matches!(check, sluice_control::health::Check::Http(c) if c.host == "[2001:db8::10]"),
        "{check:?}"
    );
}

#[test]
fn a_port_may_have_an_address_of_each_family() {
    let dual = GOOD.replacen(
        "address: 198.18.0.1/24",
        "address: [198.18.0.1/24, '2001:db8:18::1/64']\n    gateway: ['2001:db8:18::fe']",
        1,
    ) + "tunnel:\n  source: ['2001:db8:18::1', 198.18.0.1]\n  cluster: '2001:db8:9::1'\n";
    let c = Config::parse(&dual, "p.yaml").unwrap();
    let spec = c.snapshot_spec(1, None);
    let want: Vec<String> = vec!["198.18.0.1/24".into(), "2001:db8:18::1/64".into()];
    assert_eq!(spec.ports[0].addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(), want);
    assert_eq!(spec.ports[0].gateways, vec!["2001:db8:18::fe".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(spec.tunnel_sources.len(), 2);
    assert_eq!(spec.clusters, vec!["2001:db8:9::1".parse::<std::net::IpAddr>().unwrap()]);

    let e = refuse("address: 198.18.0.1/24", "address: [198.18.0.1/24, 198.18.1.1/24]");
    assert_eq!(e, "p.yaml:9:5: ports[0].address: at most one IPv4 address");
    let e = refuse("address: 198.18.0.1/24", "address: [198.18.0.1/24, '2001:db8::1/129']");
    assert_eq!(e, "p.yaml:9:30: ports[0].address[1]: prefix length in \"2001:db8::1/129\" must be 1 to 128");
    let e = refuse("address: 198.18.0.1/24", "address: []");
    assert_eq!(e, "p.yaml:9:5: ports[0].address: a port needs an address");
    let e = refuse("address: 198.18.0.1/24", "address: [198.18.0.1/24, '2001:db8::1/64', '2001:db8::2/64']");
    assert!(e.contains("ports[0].address: at most two addresses, one of each family"), "{e}");
    let e = refuse(
        "address: 198.18.0.1/24",
        "address: 198.18.0.1/24\n    gateway: [198.18.0.254, '2001:db8::fe']",
    );
    assert_eq!(e, "p.yaml:10:29: ports[0].gateway[1]: 2001:db8::fe: the port has no address of its family");
    let e = refuse("    neighbors:", "    gateway: 198.18.1.254\n    neighbors:");
    assert_eq!(e, "p.yaml:11:5: ports[0].gateway: 198.18.1.254 is not inside 198.18.0.1/24");
}

#[test]
fn weight_out_of_range() {
    let e = refuse("weight: 3", "weight: 5000");
    assert_eq!(e, "p.yaml:21:33: services[0].backends[0].weight: 5000 is outside 0..=1000");
}

#[test]
fn wrong_type() {
    let e = refuse("port: 80", "port: eighty");
    assert!(e.starts_with("p.yaml:16:"), "{e}");
    assert!(e.contains("services[0].port"), "{e}");
}

#[test]
fn duplicate_service_is_refused_at_the_second() {
    let text = format!(
        "{GOOD}  - name: web2\n    vip: 198.18.10.1\n    port: 80\n    protocol: tcp\n    backends: [{{ address: 198.18.0.12 }}]\n"
    );
    let e = Config::parse(&text, "p.yaml").unwrap_err().to_string();
    assert_eq!(
        e,
        "p.yaml:23:5: services[1]: duplicate service 198.18.10.1:80 Tcp: services[0] already uses it"
    );
}

#[test]
fn unroutable_backend() {
    let e = refuse("- address: 198.18.0.11", "- address: 203.0.113.9");
    assert_eq!(
        e,
        "p.yaml:22:9: services[0].backends[1].address: no route to 203.0.113.9: no port's prefix holds it and no port has a gateway of its family"
    );
}

#[test]
fn several_errors_are_all_reported() {
    let text = GOOD
        .replacen("port: 80", "port: 0", 1)
        .replacen("    gre_key: 7\n", "", 1)
        .replacen("tunnel: gre", "tunnel: ipip\n    gre_key: 1", 1)
        .replacen("mac: 02:00:00:00:00:01", "mac: 01:00:00:00:00:01", 1);
    let e = Config::parse(&text, "p.yaml").unwrap_err();
    let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["ports[0].mac", "services[0].port", "services[0].gre_key"], "{e}");
}

#[test]
fn other_refusals() {
    for (from, to, field) in [
        ("address: 198.18.0.1/24", "address: 198.18.0.1", "ports[0].address"),
        ("address: 198.18.0.1/24", "address: 198.18.0.1/33", "ports[0].address"),
        ("mac: 02:00:00:00:00:0a", "mac: 02:00:00:00:0a", "ports[0].neighbors[0].mac"),
        ("{ address: 198.18.0.10, mac", "{ address: 198.19.0.10, mac", "ports[0].neighbors[0].address"),
        ("cores: [1]", "cores: [1, 1]", "workers.cores[1]"),
        ("protocol: tcp", "protocol: sctp", "services[0].protocol"),
        ("tunnel: gre", "tunnel: vxlan", "services[0].tunnel"),
        ("name: web", "name: ext\n    table_size: 65536", "services[0].table_size"),
        ("vip: 198.18.10.1", "vip: 198.18.0.1", "services[0].vip"),
        ("vip: 198.18.10.1", "vip: 224.0.0.1", "services[0].vip"),
        ("tunnel: gre", "tunnel: gre\n    persistence: 60", "services[0].persistence"),
        ("tunnel: gre", "tunnel: gre\n    scheduler: fastest", "services[0].scheduler"),
        ("tunnel: gre", "tunnel: gre\n    on_backend_removed: keep", "services[0].on_backend_removed"),
        ("services:", "sessions: { capacity: 0 }\nservices:", "sessions.capacity"),
        ("services:", "sessions: { timeouts: { udp: 0 } }\nservices:", "sessions.timeouts.udp"),
        ("services:", "sessions: { timeouts: { tcp_fin: 5 } }\nservices:", "sessions.timeouts"),
        ("services:", "sessions: { region: { path: sessions } }\nservices:", "sessions.region.path"),
        ("services:", "sessions: { region: { path: / } }\nservices:", "sessions.region.path"),
        (
            "services:",
            "sessions: { region: { path: /dev/shm/s, on_mismatch: keep } }\nservices:",
            "sessions.region.on_mismatch",
        ),
        ("tunnel: gre", "tunnel: gre\n    vpc: 9", "services[0].vpc"),
        ("services:", "metrics: { listen: nowhere }\nservices:", "metrics.listen"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: tcp, path: /x }", "services[0].health.path"),
        ("tunnel: gre", "tunnel: gre\n    health: { fall: 0 }", "services[0].health.fall"),
        ("tunnel: gre", "tunnel: gre\n    health: { interval: 1, timeout: 2 }", "services[0].health.timeout"),
        ("tunnel: gre", "tunnel: gre\n    health: { status: 42 }", "services[0].health.status"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: tcp, body: x }", "services[0].health.body"),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: http, verify: false }",
            "services[0].health.verify",
        ),
        ("tunnel: gre", "tunnel: gre\n    health: { type: https, send: x }", "services[0].health.send"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: udp, path: / }", "services[0].health.path"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: tls }", "services[0].health.type"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: http, body: ok }", "services[0].health.body"),
        ("tunnel: gre", "tunnel: gre\n    health: { method: get, body: '' }", "services[0].health.body"),
        ("tunnel: gre", "tunnel: gre\n    health: { host: 'me@web' }", "services[0].health.host"),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: https, host: web..test }",
            "services[0].health.host",
        ),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: https, verify: false, ca: /x }",
            "services[0].health.ca",
        ),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: https, ca: /nonexistent/ca.pem }",
            "services[0].health.ca",
        ),
        ("tunnel: gre", "tunnel: gre\n    health: { type: udp }", "services[0].health.send"),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: udp, send: a, send_hex: '61' }",
            "services[0].health.send",
        ),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: udp, send_hex: abc }",
            "services[0].health.send_hex",
        ),
        (
            "tunnel: gre",
            "tunnel: gre\n    health: { type: udp, send: a, expect_hex: '' }",
            "services[0].health.expect_hex",
        ),
        ("tunnel: gre", "tunnel: gre\n    on_no_backend: explode", "services[0].on_no_backend"),
        ("tunnel: gre", "forwarding: nat\n    vpc: 9", "services[0].gre_key"),
        (
            "tunnel: gre\n    gre_key: 7",
            "tunnel: ipip\n    forwarding: nat\n    vpc: 9",
            "services[0].tunnel",
        ),
        (
            "{ address: 198.18.0.10, weight: 3 }",
            "{ address: 198.18.0.10, port: 8080 }",
            "services[0].backends[0].port",
        ),
        (
            "{ address: 198.18.0.10, weight: 3 }",
            "{ address: 198.18.0.10, host: 198.18.0.11 }",
            "services[0].backends[0].host",
        ),
        ("tunnel: gre", "tunnel: gre\n    forwarding: snat", "services[0].forwarding"),
    ] {
        let e = refuse(from, to);
        assert!(
            e.contains(&format!(": {field}:")) || e.contains(&format!(" {field}: ")),
            "{from} -> {to}: {e}"
        );
        assert!(e.starts_with("p.yaml:"), "{e}");
    }
}

#[test]
fn limits_and_the_overload_check_load() {
    use sluice_control::isolation::Load;
    use sluice_dataplane::limit::{Limit, Rate};
    let text = GOOD.replacen(
        "tunnel: gre",
        "tunnel: gre\n    limits:\n      when: on_overload\n      packets_per_second: 20000\n      \
         connections_per_second: { value: 500, when: always }\n      sessions: 1000",
        1,
    ) + "isolation:\n  interval: 2\n  high: { packets_per_second: 50000, busy: 0.9 }\n  \
         low: { busy: 0.5 }\n  calm_checks: 3\n";
    let c = Config::parse(&text, "p.yaml").unwrap();
    let l = c.services[0].limits;
    assert_eq!(l.rate(Rate::Packets), Some(Limit { value: 20000, on_overload: true }));
    assert_eq!(l.rate(Rate::Bytes), None);
    assert_eq!(l.rate(Rate::Connections), Some(Limit { value: 500, on_overload: false }));
    assert_eq!(l.sessions, Some(Limit { value: 1000, on_overload: true }));
    let iso = &c.isolation;
    assert_eq!(iso.interval, std::time::Duration::from_secs(2));
    assert_eq!(iso.high, Load { busy: Some(0.9), packets_per_second: Some(50000), sessions: None });
    assert_eq!(
        iso.low,
        Load { busy: Some(0.5), packets_per_second: Some(40000), sessions: None },
        "80% of high"
    );
    assert_eq!(iso.calm_checks, 3);
    // Without a section: every 5 s, on at a busy ratio of 0.85.
    let d = Config::parse(GOOD, "p.yaml").unwrap();
    assert!(d.services[0].limits.is_empty());
    assert_eq!((d.isolation.interval.as_secs(), d.isolation.high.busy), (5, Some(0.85)));
}

#[test]
fn bad_limits_are_refused_with_line_and_field() {
    for (to, field) in [
        ("limits: { packets_per_second: 0 }", "services[0].limits.packets_per_second"),
        ("limits: { sessions: { value: 0 } }", "services[0].limits.sessions"),
        ("limits: {}", "services[0].limits"),
        ("limits: { when: sometimes, sessions: 5 }", "services[0].limits.when"),
        ("limits: { packets: 5 }", "services[0].limits"),
        ("limits: { bytes_per_second: lots }", "services[0].limits.bytes_per_second"),
    ] {
        let e = refuse("tunnel: gre", &format!("tunnel: gre\n    {to}"));
        assert!(e.contains(&format!(": {field}:")) || e.contains(&format!(" {field}: ")), "{to}: {e}");
        assert!(e.starts_with("p.yaml:"), "{e}");
    }
    for (to, field) in [
        ("isolation: { interval: 0 }", "isolation.interval"),
        ("isolation: { high: { busy: 1.5 } }", "isolation.high.busy"),
        ("isolation: { high: {} }", "isolation.high"),
        ("isolation: { high: { sessions: 10 }, low: { sessions: 20 } }", "isolation.low.sessions"),
        ("isolation: { high: { sessions: 10 }, low: { busy: 0.2 } }", "isolation.low.busy"),
        ("isolation: { calm_checks: 0 }", "isolation.calm_checks"),
        ("isolation: { high: { pps: 5 } }", "isolation.high"),
    ] {
        let e = refuse("services:", &format!("{to}\nservices:"));
        assert!(e.contains(&format!(": {field}:")) || e.contains(&format!(" {field}: ")), "{to}: {e}");
        assert!(e.starts_with("p.yaml:"), "{e}");
    }
}

#[test]
fn session_sync_loads_and_bad_sync_is_refused() {
    let key = "ab".repeat(32);
    let text = format!("{GOOD}sync:\n  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key: {key}\n");
    let c = Config::parse(&text, "p.yaml").unwrap();
    let s = c.sync.expect("sync");
    assert_eq!(s.listen, "198.19.0.2:7946".parse().unwrap());
    assert_eq!(s.peers, ["198.19.0.4:7946".parse().unwrap()]);
    assert!(s.key == sluice_control::sync::SyncKey::new([0xab; 32]));
    assert_eq!((s.after.as_secs(), s.refresh.as_secs(), s.window.as_secs()), (5, 30, 30));
    assert!(Config::parse(GOOD, "p.yaml").unwrap().sync.is_none());
    let sync = |body: &str| format!("{GOOD}sync:\n{body}");
    for (body, field) in [
        (format!("  listen: nowhere\n  peers: [198.19.0.4:7946]\n  key: {key}\n"), "sync.listen"),
        (format!("  listen: 198.19.0.2:7946\n  key: {key}\n"), "sync.peers"),
        (format!("  listen: 198.19.0.2:7946\n  peers: [0.0.0.0:7946]\n  key: {key}\n"), "sync.peers[0]"),
        ("  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key: abcd\n".into(), "sync.key"),
        ("  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n".into(), "sync"),
        (
            format!("  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key: {key}\n  refresh: 500\n"),
            "sync.refresh",
        ),
        (
            format!("  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key: {key}\n  after: 0\n"),
            "sync.after",
        ),
        (
            format!("  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key: {key}\n  every: 3\n"),
            "sync",
        ),
        (
            "  listen: 198.19.0.2:7946\n  peers: [198.19.0.4:7946]\n  key_file: /nonexistent/key\n".into(),
            "sync.key_file",
        ),
    ] {
        let e = Config::parse(&sync(&body), "p.yaml").expect_err(&body).to_string();
        assert!(e.contains(&format!(": {field}:")) || e.contains(&format!(" {field}: ")), "{body}: {e}");
        assert!(e.starts_with("p.yaml:"), "{e}");
    }
}

#[test]
fn syntax_error_has_a_line() {
    let e = refuse("  - name: web\n", "  - name: web\n   bad indent: [\n");
    assert!(e.starts_with("p.yaml:"), "{e}");
    assert!(e.chars().nth(7).unwrap().is_ascii_digit(), "{e}");
}

#[test]
fn nat_service_loads() {
    let text = GOOD.replacen(
        "    tunnel: gre\n    gre_key: 7\n    backends:\n      - { address: 198.18.0.10, weight: 3 }\n      - address: 198.18.0.11\n",
        "    forwarding: nat\n    vpc: 100\n    backends:\n      - { address: 192.0.2.10, port: 8080, host: 198.18.0.10 }\n      - { address: 192.0.2.10, port: 8081, host: 198.18.0.11, weight: 2 }\n",
        1,
    );
    assert_ne!(text, GOOD);
    let c = Config::parse(&text, "p.yaml").unwrap();
    let s = &c.services[0];
    assert_eq!(s.forwarding, sluice_dataplane::snapshot::Forwarding::Nat);
    assert_eq!(s.tunnel, sluice_dataplane::snapshot::Tunnel::Gre { key: Some(100) });
    assert_eq!(s.backends[1].port, Some(8081));
    assert_eq!(s.backends[1].host, Some("198.18.0.11".parse().unwrap()));
    // The SYN proxy: on for NAT; refused for DSR (line and field of the key).
    let proxied = text.replacen("    forwarding: nat\n", "    forwarding: nat\n    synproxy: true\n", 1);
    assert!(Config::parse(&proxied, "p.yaml").unwrap().services[0].synproxy);
    let e = refuse("    tunnel: gre\n", "    synproxy: true\n    tunnel: gre\n");
    assert!(e.starts_with("p.yaml:18:5:"), "{e}");
    assert!(e.contains("services[0].synproxy") && e.contains("needs forwarding: nat"), "{e}");
    // A NAT backend's host must be routable like a DSR backend's address.
    let e = Config::parse(&text.replacen("host: 198.18.0.10", "host: 203.0.113.1", 1), "p.yaml").unwrap_err();
    assert!(e.to_string().contains("services[0].backends[0].host"), "{e}");
}

#[test]
fn live_apply_refuses_what_needs_a_restart_with_line_and_field() {
    let dir = std::env::temp_dir().join(format!("sluice-apply-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let running = Config::parse(GOOD, "p.yaml").unwrap();
    let file = dir.join("new.yaml");
    // Services may change live.
    std::fs::write(&file, GOOD.replace("weight: 3", "weight: 5")).unwrap();
    assert!(Staged::load(&file, &running, Basis::default(), None).is_ok());
    // A port's device and the worker cores may not; each is named with its line.
    std::fs::write(
        &file,
        GOOD.replace("device: net_null0", "device: net_null1").replace("cores: [1]", "cores: [2]"),
    )
    .unwrap();
    let e = Staged::load(&file, &running, Basis::default(), None).unwrap_err().to_string();
    assert!(e.contains("new.yaml:8:5: ports[0].device: cannot change while sluiced runs"), "{e}");
    assert!(e.contains("workers: cannot change"), "{e}");
    // The host agents' channel is made at start.
    let agents = format!("agents:\n  listen: 198.19.0.2:7946\n  key: {}\n", "cd".repeat(32));
    std::fs::write(&file, format!("{GOOD}{agents}")).unwrap();
    let e = Staged::load(&file, &running, Basis::default(), None).unwrap_err().to_string();
    assert!(e.contains("agents: cannot change while sluiced runs"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- hostile input: numbers, files, sizes, secrets ---------------------------------------------

/// Every numeric field of the schema, each on its own line marked `# f:<field>`.
const FULL: &str = "\
dpdk:
  args: [--no-huge]
  mbufs: 4096  # f:dpdk.mbufs
  rx_desc: 1024  # f:dpdk.rx_desc
  tx_desc: 1024  # f:dpdk.tx_desc
workers:
  cores:
    - 1  # f:workers.cores[0]
  control_core: 0  # f:workers.control_core
ports:
  - name: ext
    device: net_null0
    address: 198.18.0.1/24
    mtu: 1500  # f:ports[0].mtu
    vlan: 10  # f:ports[0].vlan
services:
  - name: web
    vip: 198.18.10.1
    port: 80  # f:services[0].port
    protocol: tcp
    tunnel: gre
    gre_key: 7  # f:services[0].gre_key
    scheduler: ip_hash
    persistence: 60  # f:services[0].persistence
    table_size: 65537  # f:services[0].table_size
    limits:
      packets_per_second: 1000  # f:services[0].limits.packets_per_second
      bytes_per_second:
        value: 100000  # f:services[0].limits.bytes_per_second.value
      connections_per_second: 100  # f:services[0].limits.connections_per_second
      sessions: 1000  # f:services[0].limits.sessions
    health:
      port: 8080  # f:services[0].health.port
      interval: 2  # f:services[0].health.interval
      timeout: 1  # f:services[0].health.timeout
      status: 200  # f:services[0].health.status
      rise: 2  # f:services[0].health.rise
      fall: 3  # f:services[0].health.fall
    backends:
      - address: 198.18.0.10
        weight: 3  # f:services[0].backends[0].weight
  - name: nat
    vip: 198.18.10.2
    port: 80
    protocol: tcp
    forwarding: nat
    vpc: 100  # f:services[1].vpc
    backends:
      - address: 192.0.2.10
        port: 8080  # f:services[1].backends[0].port
        host: 198.18.0.11
sessions:
  capacity: 100000  # f:sessions.capacity
  timeouts:
    tcp_syn: 5  # f:sessions.timeouts.tcp_syn
    tcp_established: 3600  # f:sessions.timeouts.tcp_established
    tcp_closing: 10  # f:sessions.timeouts.tcp_closing
    tcp_closed: 5  # f:sessions.timeouts.tcp_closed
    udp: 60  # f:sessions.timeouts.udp
isolation:
  interval: 1  # f:isolation.interval
  calm_checks: 3  # f:isolation.calm_checks
  high:
    busy: 0.9  # f:isolation.high.busy
    packets_per_second: 1000000  # f:isolation.high.packets_per_second
    sessions: 50000  # f:isolation.high.sessions
  low:
    busy: 0.5  # f:isolation.low.busy
    packets_per_second: 500000  # f:isolation.low.packets_per_second
    sessions: 10000  # f:isolation.low.sessions
sync:
  listen: 127.0.0.1:7000
  peers: [127.0.0.2:7000]
  key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
  after: 5  # f:sync.after
  refresh: 10  # f:sync.refresh
  window: 30  # f:sync.window
budget:
  memory: 1GiB  # f:budget.memory
";

/// How many fields FULL marks.
const FIELDS: usize = 42;

/// The marked fields of FULL: (field, 1-based line).
fn numeric_fields() -> Vec<(String, usize)> {
    FULL.lines()
        .enumerate()
        .filter_map(|(i, l)| l.split_once("# f:").map(|(_, f)| (f.to_string(), i + 1)))
        .collect()
}

/// FULL with the value on `line` replaced by `value`.
fn with_value(line: usize, value: &str) -> String {
    let mut out = String::new();
    for (i, l) in FULL.lines().enumerate() {
        if i + 1 == line {
            let (key, _) = l.split_once(": ").or_else(|| l.split_once("- ")).unwrap();
            let sep = if l.trim_start().starts_with("- ") { "- " } else { ": " };
            out.push_str(&format!("{key}{sep}{value}\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_full_config_loads_and_marks_every_numeric_field() {
    let c = Config::parse(FULL, "f.yaml").unwrap();
    assert_eq!(c.services.len(), 2);
    assert!(c.sync.is_some());
    assert_eq!(numeric_fields().len(), FIELDS);
}

#[test]
fn non_finite_negative_and_huge_numbers_are_refused_at_their_field() {
    let bad =
        ["-1", ".nan", ".inf", "-.inf", "1e300", "-1e300", "100000000000000000000", "-100000000000000000000"];
    for (field, line) in numeric_fields() {
        for value in bad {
            let text = with_value(line, value);
            let e = Config::parse(&text, "f.yaml").expect_err(&format!("{field}: {value} was accepted"));
            assert!(
                e.0.iter().any(|e| e.field == field && e.pos.map(|p| p.line) == Some(line)),
                "{field}: {value}: not refused at f.yaml:{line} {field}:\n{e}"
            );
        }
    }
}

mod numbers {
    use super::*;
    use proptest::prelude::*;

    /// Any number as YAML writes it: floats of every kind (NaN and infinities in YAML's
    /// spelling) and integers far beyond every field's type.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|f| match f {
                f if f.is_nan() => ".nan".to_string(),
                f if f.is_infinite() => if f > 0.0 { ".inf" } else { "-.inf" }.to_string(),
                f => format!("{f:?}"),
            }),
            any::<i128>().prop_map(|i| i.to_string()),
            any::<u32>().prop_map(|i| i.to_string()),
            (0u32..100_000).prop_map(|i| i.to_string()),
            (0.0f64..10.0).prop_map(|f| format!("{f:?}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever number goes into whatever numeric field: no panic, and a refusal says where.
        #[test]
        fn any_number_in_any_field_never_panics(i in 0usize..FIELDS, value in number()) {
            let (field, line) = numeric_fields()[i].clone();
            if let Err(e) = Config::parse(&with_value(line, &value), "f.yaml") {
                for one in &e.0 {
                    prop_assert!(one.pos.is_some(), "{field}: {value}: {one} has no line");
                    prop_assert!(!one.field.is_empty(), "{field}: {value}: {one} has no field");
                }
            }
        }
    }
}

/// A scratch directory of one test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("sluice-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `f()` on a thread, given 60 s: a read that blocks fails the test instead of hanging it.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("still blocked after a minute")
}

fn mkfifo(path: &std::path::Path) {
    assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn a_fifo_a_device_or_a_directory_as_config_is_refused_at_once() {
    let s = Scratch::new("special");
    let fifo = s.0.join("pipe.yaml");
    mkfifo(&fifo);
    for (path, what) in
        [(fifo, "a FIFO"), ("/dev/zero".into(), "a character device"), (s.0.clone(), "a directory")]
    {
        let p = path.clone();
        let e = within_a_minute(move || Config::load(&p)).unwrap_err().to_string();
        assert!(e.contains(&format!("{what}, not a regular file")), "{}: {e}", path.display());
        let running = Config::parse(GOOD, "p.yaml").unwrap();
        let e = within_a_minute(move || Staged::load(&path, &running, Basis::default(), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{what}, not a regular file")), "{e}");
    }
}

#[test]
fn a_fifo_a_device_or_a_directory_as_key_file_is_refused_at_once() {
    let s = Scratch::new("keyfile");
    let fifo = s.0.join("key");
    mkfifo(&fifo);
    for (path, what) in
        [(fifo, "a FIFO"), ("/dev/zero".into(), "a character device"), (s.0.clone(), "a directory")]
    {
        let text = FULL.replace(
            "key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            &format!("key_file: {}", path.display()),
        );
        let e = within_a_minute(move || Config::parse(&text, "f.yaml")).unwrap_err().to_string();
        assert!(e.contains("sync.key_file: ") && e.contains(&format!("{what}, not a regular file")), "{e}");
    }
}

#[test]
fn a_config_file_over_the_size_cap_is_refused() {
    let s = Scratch::new("big");
    let f = s.0.join("big.yaml");
    let pad = format!("# {}\n", "x".repeat(1000));
    let big = GOOD.to_string() + &pad.repeat((sluice_control::readfile::MAX_CONFIG_BYTES / 1000) as usize);
    std::fs::write(&f, big).unwrap();
    let e = Config::load(&f).unwrap_err().to_string();
    assert!(e.contains("more than the 16777216 bytes read at most"), "{e}");
}

#[test]
fn deep_nesting_is_refused_before_parsing_it() {
    for deep in ["[".repeat(100_000), "{a: ".repeat(100_000), format!("\n  {}x", "- ".repeat(10_000))] {
        let text = format!("services: {deep}\n");
        // Not one for serde_yaml to read first (its parser takes minutes over such nesting):
        // the nesting scan gives no bound within the schema's depth.
        assert_eq!(sluice_control::locate::Locations::plainly_shallow(&text, 16).ok(), Some(false));
        let e = Config::parse(&text, "p.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].pos.is_some_and(|p| p.line <= 2), "{e}");
        assert!(e.to_string().contains("nested more than 16 deep"), "{e}");
    }
    // As deep as the schema goes is fine.
    let limits = GOOD.replacen(
        "    tunnel: gre\n",
        "    tunnel: gre\n    limits: { packets_per_second: { value: 10, when: on_overload } }\n",
        1,
    );
    Config::parse(&limits, "p.yaml").unwrap();
}

#[test]
fn a_second_document_is_refused_where_it_starts() {
    // Found by the config fuzz target: serde_yaml's own refusal has no position.
    let lines = GOOD.lines().count();
    for second in ["---\nservices: []\n", "--- 1\n", "...\n---\n"] {
        let text = format!("{GOOD}{second}");
        let e = Config::parse(&text, "p.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].pos.is_some_and(|p| p.line > lines), "{e}");
        assert!(e.to_string().contains("a second YAML document"), "{e}");
    }
    // A document marker before the only document is fine.
    Config::parse(&format!("---\n{GOOD}"), "p.yaml").unwrap();
}

#[test]
fn yaml_1_1_line_breaks_are_refused_where_they_are() {
    // Found by the config fuzz target: libyaml (serde_yaml) breaks lines at NEL, yaml-rust2
    // does not, so serde_yaml saw two documents where the locator saw one, and its refusal
    // had no position.
    for nel in ['\u{85}', '\u{2028}', '\u{2029}'] {
        let text = format!("{GOOD}# a comment{nel}--- \n");
        let e = Config::parse(&text, "p.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let line = GOOD.lines().count() + 1;
        assert_eq!(e.0[0].pos.map(|p| (p.line, p.col)), Some((line, 12)), "{e}");
        assert!(e.to_string().contains("a line break other than LF"), "{e}");
    }
}

#[test]
fn many_errors_are_capped_with_a_count_of_the_rest() {
    let mut text = GOOD.to_string();
    for i in 0..200 {
        text += &format!("  - {{ name: s{i}, vip: 'no address', port: 80, protocol: tcp }}\n");
    }
    let e = Config::parse(&text, "p.yaml").unwrap_err();
    assert_eq!(e.0.len(), sluice_control::config::MAX_ERRORS + 1);
    assert_eq!(e.0[0].field, "services[1].vip");
    assert_eq!(e.0.last().unwrap().message, "and 150 more errors (the first 50 are listed)");
}

#[test]
fn one_huge_value_makes_a_short_refusal() {
    let e = refuse("vip: 198.18.10.1", &format!("vip: {}", "9".repeat(1 << 20)));
    assert!(e.len() < 400, "{} bytes", e.len());
    assert!(e.starts_with("p.yaml:15:5: services[0].vip: \"999"), "{e}");
}

/// GOOD with `n` more services of `table_size` slots and one backend each.
fn with_services(n: usize, table_size: u32) -> String {
    let mut text = GOOD.to_string();
    for i in 0..n {
        text += &format!(
            "  - {{ name: s{i}, vip: 198.18.{}.{}, port: 80, protocol: tcp, table_size: {table_size}, backends: [{{ address: 198.18.0.10 }}] }}\n",
            20 + i / 200,
            1 + i % 200
        );
    }
    text
}

#[test]
fn a_config_over_the_memory_budget_is_refused_before_any_table_is_built() {
    use sluice_control::budget::{service_bytes, DEFAULT_MEMORY};
    let first = service_bytes(65537, 2);
    // A budget from the file: the service that takes the total over it is named.
    let small = with_services(8, 65537) + "budget:\n  memory: 1MiB\n";
    let e = Config::parse(&small, "p.yaml").unwrap_err().to_string();
    let per = service_bytes(65537, 1);
    let over = (0..).find(|k| first + (k + 1) * per > 1 << 20).unwrap() + 1;
    let want = format!("services[{over}].table_size: the services up to this one need about");
    assert!(e.contains(&want), "{e}");
    let roomy = with_services(8, 65537) + "budget: { memory: 4 MiB }\n";
    Config::parse(&roomy, "p.yaml").unwrap();
    for bad in ["-1", "'2 GB'", "'1TiB2'", "1024", "2TiB"] {
        let e =
            Config::parse(&format!("{GOOD}budget: {{ memory: {bad} }}\n"), "p.yaml").unwrap_err().to_string();
        assert!(e.contains("budget.memory"), "{bad}: {e}");
    }
    // The default budget: 1000 services of the largest table would take about 12 GiB to
    // build; the one that crosses 2 GiB is named, and nothing was built.
    let e = Config::parse(&with_services(1000, 4_194_301), "p.yaml").unwrap_err();
    let per = service_bytes(4_194_301, 1);
    let over = (0..).find(|k| first + (k + 1) * per > DEFAULT_MEMORY).unwrap() + 1;
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].field, format!("services[{over}].table_size"), "{e}");
    assert!(e.0[0].message.contains("more than budget.memory (2.0 GiB)"), "{e}");
    assert!(e.0[0].pos.is_some());
}

#[test]
fn names_with_controls_or_too_long_are_refused() {
    let e = refuse("name: web", "name: \"we\\u0007b\"");
    assert!(e.contains("services[0].name: \"we\\u{7}b\" has control characters"), "{e}");
    let e = refuse("name: ext", &format!("name: {}", "e".repeat(65)));
    assert!(e.contains("ports[0].name: 65 bytes long: at most 64"), "{e}");
    let e = refuse("cores: [1]", "cores: [1024]");
    assert!(e.contains("workers.cores[0]: 1024: a CPU number from 0 to 1023"), "{e}");
}

/// The first line of every file below; none of it may appear in a refusal.
const SECRET: &str = "hunter2-s3cr3t-T0KEN";

#[test]
fn a_refusal_never_quotes_the_file() {
    let s = Scratch::new("secret");
    let running = Config::parse(GOOD, "p.yaml").unwrap();
    for body in [
        format!("{SECRET}\n"),
        format!("root:{SECRET}:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"),
        format!("-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n"),
        format!("{SECRET}: 1\n"),
        format!("{SECRET}=1\nother=2\n"),
        format!("services: {SECRET}\n"),
        format!("services:\n  - {SECRET}\n"),
        format!("ports:\n  - name: a\n    mtu: {SECRET}\n"),
        format!("services:\n  - name: web\n    protocol: {SECRET}\n"),
        format!("\"{SECRET}\": [1, 2]\n"),
        format!("'{SECRET}\n"),
        format!("[{SECRET}\n"),
        format!("budget: {{ memory: {SECRET} }}\n"),
    ] {
        let f = s.0.join("secret");
        std::fs::write(&f, &body).unwrap();
        let e = Staged::load(&f, &running, Basis::default(), None).unwrap_err().to_string();
        assert!(!e.contains(&SECRET[..7]), "{body:?} echoed: {e}");
        assert!(e.contains("secret:"), "{e}");
    }
}

#[test]
fn an_exception_path_is_numbered_after_the_data_ports_and_its_name_checked() {
    let text = GOOD.replacen("    device: net_null0\n", "    device: net_null0\n    kernel: ext0\n", 1);
    let c = Config::parse(&text, "p.yaml").unwrap();
    assert_eq!(c.ports[0].kernel.as_deref(), Some("ext0"));
    assert_eq!(c.ports[0].spec.kernel, Some(1), "port index 1: after the one data port");
    for bad in ["", "a-name-far-too-long", "ext 0", "ext/0"] {
        let e = refuse("    device: net_null0\n", &format!("    device: net_null0\n    kernel: '{bad}'\n"));
        assert!(e.contains("ports[0].kernel: an interface name"), "{bad:?}: {e}");
        assert!(e.starts_with("p.yaml:9:5: "), "{bad:?}: {e}");
    }
}

#[test]
fn routing_names_birds_socket_and_include_and_each_service_its_policy() {
    use sluice_control::announce::Policy;
    let routing = "routing:\n  bird: { socket: /run/bird.ctl, include: /run/vips.conf }\n";
    let text = format!("{GOOD}{routing}").replacen(
        "    tunnel: gre\n",
        "    tunnel: gre\n    announce: always\n",
        1,
    );
    let c = Config::parse(&text, "p.yaml").unwrap();
    let r = c.routing.as_ref().unwrap();
    assert_eq!((r.socket.to_str(), r.include.to_str()), (Some("/run/bird.ctl"), Some("/run/vips.conf")));
    assert_eq!(r.heartbeat, std::time::Duration::from_millis(500));
    assert_eq!(c.announce["web"], Policy::Always);
    let cluster = Config::parse(&format!("{GOOD}tunnel:\n  cluster: 198.18.9.1\n"), "p.yaml").unwrap();
    assert_eq!(cluster.clusters, vec!["198.18.9.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(cluster.snapshot_spec(1, None).clusters, cluster.clusters);
    assert_eq!(Config::parse(GOOD, "p.yaml").unwrap().announce["web"], Policy::Healthy);

    let bad = |r: &str| Config::parse(&format!("{GOOD}{r}"), "p.yaml").unwrap_err().to_string();
    let e = bad("routing:\n  bird: { socket: bird.ctl, include: /run/vips.conf }\n");
    assert!(e.contains("routing.bird.socket: an absolute path"), "{e}");
    let e = bad("routing:\n  bird: { socket: /b, include: /i }\n  heartbeat: 60\n");
    assert!(e.contains("routing.heartbeat: 60 s is outside 0.05..=10"), "{e}");
    let e = Config::parse(
        &GOOD.replacen("    tunnel: gre\n", "    tunnel: gre\n    announce: sometimes\n", 1),
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("services[0].announce"), "{e}");
}

const BGP: &str = "routing:
  bird: { socket: /run/bird.ctl, include: /run/vips.conf, config: /run/bird.conf }
  bgp:
    as: 65001
    router_id: 198.18.0.1
    neighbors:
      - { address: 198.18.0.254, as: 65000 }
      - { address: 198.18.0.253, as: 65000, bfd: false }
    bfd: { interval: 0.1, multiplier: 3 }
    communities: [\"65001:100\"]
";

#[test]
fn routing_bgp_gives_birds_whole_configuration() {
    use sluice_control::bird_config::Community;
    let c = Config::parse(&format!("{GOOD}{BGP}"), "p.yaml").unwrap();
    let (path, bgp) = c.routing.as_ref().unwrap().bgp.as_ref().unwrap();
    assert_eq!(path.to_str(), Some("/run/bird.conf"));
    assert_eq!((bgp.local_as, bgp.router_id.to_string()), (65001, "198.18.0.1".into()));
    assert_eq!(
        bgp.neighbors.iter().map(|n| (n.remote_as, n.bfd)).collect::<Vec<_>>(),
        [(65000, true), (65000, false)]
    );
    assert_eq!((bgp.bfd_interval.as_millis(), bgp.bfd_multiplier), (100, 3));
    assert_eq!(bgp.communities, [Community::Standard(65001, 100)]);
    let plain = BGP.replace("    bfd: { interval: 0.1, multiplier: 3 }\n", "");
    let c = Config::parse(&format!("{GOOD}{plain}"), "p.yaml").unwrap();
    let detection =
        c.routing.as_ref().unwrap().bgp.as_ref().map(|(_, b)| b.bfd_interval * b.bfd_multiplier.into());
    assert!(detection.unwrap() < std::time::Duration::from_secs(1), "default detection within 1 s");
}

#[test]
fn bad_bgp_is_refused_with_line_and_field() {
    // Lines of GOOD + BGP: routing starts at GOOD's line count + 1.
    let at = |line: usize| format!("p.yaml:{}:", GOOD.lines().count() + line);
    for (from, to, field, line) in [
        ("as: 65001", "as: 0", "routing.bgp.as: 0 is not an AS", 4),
        ("as: 65001", "as: 23456", "routing.bgp.as: 23456", 4),
        ("router_id: 198.18.0.1", "router_id: 0.0.0.0", "routing.bgp.router_id", 5),
        ("router_id: 198.18.0.1", "router_id: 2001:db8::1", "routing.bgp.router_id", 5),
        ("address: 198.18.0.253, as: 65000,", "address: 198.18.0.254, as: 65000,", "neighbors[1].address: 198.18.0.254 is a neighbour twice", 8),
        ("address: 198.18.0.253", "address: 224.0.0.5", "neighbors[1].address", 8),
        ("address: 198.18.0.253", "address: ff02::1", "neighbors[1].address: \"ff02::1\" is not a unicast address", 8),
        ("as: 65000, bfd", "as: 4294967295, bfd", "neighbors[1].as", 8),
        ("interval: 0.1", "interval: 30", "routing.bgp.bfd.interval: 30 s is outside", 9),
        ("multiplier: 3", "multiplier: 256", "routing.bgp.bfd.multiplier: 256 is outside 1..=255", 9),
        ("\"65001:100\"", "\"65001:100000\"", "routing.bgp.communities[0]: \"65001:100000\" is neither", 10),
        (", config: /run/bird.conf", "", "routing.bird.config: the file sluiced writes", 2),
        ("config: /run/bird.conf", "config: '/run/b\"ird.conf'", "routing.bird.config: an absolute path", 2),
        ("    neighbors:\n      - { address: 198.18.0.254, as: 65000 }\n      - { address: 198.18.0.253, as: 65000, bfd: false }\n",
         "    neighbors: []\n", "routing.bgp.neighbors: one to 64", 6),
    ] {
        let text = format!("{GOOD}{}", BGP.replacen(from, to, 1));
        assert_ne!(text, format!("{GOOD}{BGP}"), "{from}");
        let e = Config::parse(&text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains(field), "{to}: {e}");
        assert!(e.contains(&at(line)), "{to}: {e} (line {line})");
    }
    let e = Config::parse(
        &format!("{GOOD}routing:\n  bird: {{ socket: /b, include: /i, config: /c }}\n"),
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("routing.bgp: what BIRD's configuration says"), "{e}");
}

#[test]
fn mss_clamp_is_auto_off_or_a_value_and_tcps_alone() {
    use sluice_dataplane::snapshot::Snapshot;
    let clamp = |to: &str| {
        let text = GOOD.replacen("    gre_key: 7\n", &format!("    gre_key: 7\n{to}"), 1);
        let c = Config::parse(&text, "p.yaml").unwrap();
        Snapshot::build(&c.snapshot_spec(1, None), None).unwrap().services[0].mss_clamp
    };
    // auto: the port's MTU (1500) less IPv4 and keyed GRE (28) less 40.
    assert_eq!(clamp(""), Some(1432));
    assert_eq!(clamp("    mss_clamp: auto\n"), Some(1432));
    assert_eq!(clamp("    mss_clamp: off\n"), None);
    assert_eq!(clamp("    mss_clamp: 1200\n"), Some(1200));
    for (bad, why) in [
        ("    mss_clamp: 100\n", "100 is outside 536..=9160"),
        ("    mss_clamp: 70000\n", "70000 is outside 536..=9160"),
        ("    mss_clamp: sometimes\n", "auto, off, or an MSS"),
    ] {
        let e = refuse("    gre_key: 7\n", &format!("    gre_key: 7\n{bad}"));
        assert!(e.starts_with("p.yaml:20:5: services[0].mss_clamp: "), "{e}");
        assert!(e.contains(why), "{e}");
    }
    let udp = GOOD.replacen("protocol: tcp", "protocol: udp", 1).replacen(
        "    gre_key: 7\n",
        "    gre_key: 7\n    mss_clamp: 1200\n",
        1,
    );
    let e = Config::parse(&udp, "p.yaml").unwrap_err().to_string();
    assert!(e.contains("services[0].mss_clamp: an MSS is TCP's"), "{e}");
    let udp_auto = GOOD.replacen("protocol: tcp", "protocol: udp", 1);
    let c = Config::parse(&udp_auto, "p.yaml").unwrap();
    assert_eq!(Snapshot::build(&c.snapshot_spec(1, None), None).unwrap().services[0].mss_clamp, None);
}

#[test]
fn buffer_size_is_2048_by_default_and_bounded() {
    assert_eq!(Config::parse(GOOD, "p.yaml").unwrap().buffer_size, 2048);
    let text = GOOD.replacen("  vdevs: [net_null0]\n", "  vdevs: [net_null0]\n  buffer_size: 9216\n", 1);
    assert_eq!(Config::parse(&text, "p.yaml").unwrap().buffer_size, 9216);
    for bad in ["1500", "20000"] {
        let e = refuse("  vdevs: [net_null0]\n", &format!("  vdevs: [net_null0]\n  buffer_size: {bad}\n"));
        assert!(e.starts_with("p.yaml:4:3: dpdk.buffer_size: "), "{e}");
        assert!(e.contains("outside 2048..=16384"), "{e}");
    }
}

/// A CA certificate (EC P-256, self-signed, valid for a century) for `ca:` fields.
const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUP0xdlSLqZ/2OANmVZenh5G7KRfAwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVc2x1aWNlIGNvbmZpZyB0ZXN0IENBMCAXDTI2MTIwNzE3MzE1
MFoYDzIxMjYxMTEzMTczMTUwWjAgMR4wHAYDVQQDDBVzbHVpY2UgY29uZmlnIHRl
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQPk8VF9zShrWAmEK4wpQYc
mrIfpB14dXbjJZRadn7vObX1S2Yhr+Wt5L2OcJXfkI2iqw2EnsmO+L9jiIa8iZpS
o1MwUTAdBgNVHQ4EFgQUCem6a2vCkHrhRDTNDCn3KwWzhxIwHwYDVR0jBBgwFoAU
Cem6a2vCkHrhRDTNDCn3KwWzhxIwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiAj9jKO1JNBg7qAGdtBi7OnB7G2AMPoBWSExjv7ZAEfjwIhALy/+jOp
+16xo3qeHvBIxHck1jOht/O5eV4vBZRFIaO5
-----END CERTIFICATE-----
";

/// GOOD with `health` on its service.
fn with_health(health: &str) -> String {
    GOOD.replacen("tunnel: gre\n", &format!("tunnel: gre\n    health: {health}\n"), 1)
}

#[test]
fn health_check_types_load() {
    use sluice_control::health::http::{HttpCheck, Tls};
    use sluice_control::health::udp::UdpCheck;
    use sluice_control::health::Check;
    let check = |health: &str| {
        Config::parse(&with_health(health), "p.yaml").unwrap().health[0].clone().unwrap().check
    };
    let https = check("{ type: https, method: get, host: web.test, path: /ready, body: ok, verify: false }");
    let tls = Some(Tls { verify: false, ca: None });
    let want = HttpCheck {
        get: true,
        path: "/ready".into(),
        host: "web.test".into(),
        status: 200,
        body: Some("ok".into()),
        tls,
    };
    assert_eq!(https, Check::Http(want));
    // verify is on by default, against the built-in roots.
    assert!(
        matches!(check("{ type: https }"), Check::Http(c) if c.tls == Some(Tls { verify: true, ca: None }))
    );
    assert_eq!(
        check("{ type: udp, send_hex: '00 01', expect: be }"),
        Check::Udp(UdpCheck { send: vec![0, 1], expect: Some(b"be".to_vec()) })
    );
    assert_eq!(
        check("{ type: udp, send: ping }"),
        Check::Udp(UdpCheck { send: b"ping".to_vec(), expect: None })
    );

    let dir = std::env::temp_dir().join(format!("sluice-config-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, junk) = (dir.join("ca.pem"), dir.join("junk.pem"));
    std::fs::write(&ca, CA_PEM).unwrap();
    std::fs::write(&junk, CA_PEM.replace("MIIBlzCCAT2g", "MIIBlzCCAT2h")).unwrap();
    let c = check(&format!("{{ type: https, ca: {} }}", ca.display()));
    assert!(
        matches!(&c, Check::Http(h) if h.tls.as_ref().is_some_and(|t| t.verify && t.ca.as_ref().is_some_and(|c| c.len() == 1))),
        "{c:?}"
    );
    let e = Config::parse(&with_health(&format!("{{ type: https, ca: {} }}", junk.display())), "p.yaml")
        .unwrap_err();
    let e = e.to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.starts_with("p.yaml:19:")
            && e.contains("services[0].health.ca: ")
            && e.contains("certificate 1 is not"),
        "{e}"
    );
}

#[test]
fn agent_health_checks_load_and_bad_ones_are_refused() {
    use sluice_control::health::By;
    let key = "cd".repeat(32);
    let agents = format!("agents:\n  listen: 198.19.0.2:7946\n  key: {key}\n");
    let by_agent = |h: &str| GOOD.replacen("tunnel: gre", &format!("tunnel: gre\n    health: {h}"), 1);
    let text = by_agent("{ type: tcp, by: agent }") + &agents;
    let c = Config::parse(&text, "p.yaml").unwrap();
    let a = c.agents.expect("agents");
    assert_eq!((a.listen, a.port, a.window.as_secs()), ("198.19.0.2:7946".parse().unwrap(), 7947, 30));
    assert!(a.key == sluice_control::sync::SyncKey::new([0xcd; 32]));
    assert_eq!(c.health[0].as_ref().unwrap().by, By::Agent);
    let plain = Config::parse(&by_agent("{ type: tcp }"), "p.yaml").unwrap();
    assert_eq!(plain.health[0].as_ref().unwrap().by, By::Appliance, "the appliance probes by default");
    for (text, field) in [
        (by_agent("{ type: tcp, by: agent }"), "services[0].health.by"),
        (by_agent("{ type: http, by: agent }") + &agents, "services[0].health.by"),
        (by_agent("{ type: tcp, by: router }") + &agents, "services[0].health.by"),
        (format!("{GOOD}agents:\n  listen: nowhere\n  key: {key}\n"), "agents.listen"),
        (format!("{GOOD}agents:\n  listen: 198.19.0.2:7946\n  port: 0\n  key: {key}\n"), "agents.port"),
        (format!("{GOOD}agents:\n  listen: 198.19.0.2:7946\n  key: abcd\n"), "agents.key"),
        (format!("{GOOD}agents:\n  listen: 198.19.0.2:7946\n"), "agents"),
        (format!("{GOOD}agents:\n  listen: 198.19.0.2:7946\n  key: {key}\n  window: 0\n"), "agents.window"),
    ] {
        let e = Config::parse(&text, "p.yaml").expect_err(&text).to_string();
        assert!(e.contains(&format!(": {field}:")) || e.contains(&format!(" {field}: ")), "{text}: {e}");
        assert!(e.starts_with("p.yaml:"), "{e}");
    }
}
