//! Config validation: good configs load; each broken one is refused with file, line and field.

use sluice_control::config::Config;

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
    assert_eq!(s.table_size, 65537);
    assert_eq!(s.backends.iter().map(|b| b.weight).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(c.session_capacity, 4_000_000);
    assert_eq!(c.timeouts, sluice_dataplane::session::Timeouts::default());
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
    assert!(e.contains("unknown field `wieght`"), "{e}");
}

#[test]
fn bad_address() {
    let e = refuse("vip: 198.18.10.1", "vip: 198.18.10.300");
    assert_eq!(e, "p.yaml:15:5: services[0].vip: \"198.18.10.300\" is not an IPv4 address");
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
        "p.yaml:22:9: services[0].backends[1].address: no route to 203.0.113.9: no port's prefix holds it and no port has a gateway"
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
        ("tunnel: gre", "tunnel: gre\n    vpc: 9", "services[0].vpc"),
        ("services:", "metrics: { listen: nowhere }\nservices:", "metrics.listen"),
        ("tunnel: gre", "tunnel: gre\n    health: { type: tcp, path: /x }", "services[0].health.path"),
        ("tunnel: gre", "tunnel: gre\n    health: { fall: 0 }", "services[0].health.fall"),
        ("tunnel: gre", "tunnel: gre\n    health: { interval: 1, timeout: 2 }", "services[0].health.timeout"),
        ("tunnel: gre", "tunnel: gre\n    health: { status: 42 }", "services[0].health.status"),
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
    assert!(Config::load_for_apply(&file, &running).is_ok());
    // A port's device and the worker cores may not; each is named with its line.
    std::fs::write(
        &file,
        GOOD.replace("device: net_null0", "device: net_null1").replace("cores: [1]", "cores: [2]"),
    )
    .unwrap();
    let e = Config::load_for_apply(&file, &running).unwrap_err().to_string();
    assert!(e.contains("new.yaml:8:5: ports[0].device: cannot change while sluiced runs"), "{e}");
    assert!(e.contains("workers: cannot change"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
