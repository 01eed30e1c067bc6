//! The Prometheus endpoint: exact sums and labels from real worker counters, a real session
//! table and a real snapshot; the HTTP server; `promtool check metrics` on what it serves; a
//! real Prometheus server scraping it.

#![cfg(feature = "dpdk")] // The endpoint reports the NICs' counters: it is built with DPDK only.

use arc_swap::ArcSwap;
use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use sluice_control::metrics::{self, ApplyState, MetricsSource, SluiceCollector};
use sluice_control::serving::{Limits, Refusal, Refusals};
use sluice_dataplane::flow::Addr;
use sluice_dataplane::session::{Session, SessionKey, SessionTable, TcpState, Timeouts};
use sluice_dataplane::snapshot::{
    BackendSpec, Forwarding, PortSpec, Protocol, ServiceSpec, Snapshot, SnapshotSpec, Tunnel,
};
use sluice_dataplane::stats::{DropReason, WorkerStats};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- a small appliance's state ----------------------------------------------------------------

fn port(name: &str, last: u8, address: [u8; 4], gateway: Option<[u8; 4]>) -> PortSpec {
    PortSpec {
        name: name.into(),
        mac: [2, 0, 0, 0, 0, last],
        addresses: vec![sluice_dataplane::flow::Prefix::new(address, 24)],
        mtu: 1500,
        vlan: None,
        gateways: gateway.into_iter().map(|g| std::net::Ipv4Addr::from(g).into()).collect(),
        neighbors: vec![],
        kernel: None,
    }
}

/// Services "web" (DSR, backends 198.19.0.11 id 0 weight 1, 198.19.0.12 id 1 weight 2) and
/// "tenant" (NAT in VPC 100, backend 10.0.0.5:8000 on host 198.19.0.21, id 2, weight 1), or
/// without "web"'s second backend.
fn snapshot(generation: u64, with_second_web_backend: bool) -> Snapshot {
    let mut web_backends = vec![BackendSpec { id: Some(0), ..BackendSpec::new([198, 19, 0, 11].into(), 1) }];
    if with_second_web_backend {
        web_backends.push(BackendSpec { id: Some(1), ..BackendSpec::new([198, 19, 0, 12].into(), 2) });
    }
    let mut web = ServiceSpec::dsr("web", [198, 18, 10, 1].into(), 80, Protocol::Tcp, web_backends);
    web.id = Some(0);
    let mut tenant = ServiceSpec::dsr(
        "tenant",
        [198, 18, 10, 2].into(),
        8080,
        Protocol::Tcp,
        vec![BackendSpec {
            id: Some(2),
            ..BackendSpec::nat([10, 0, 0, 5].into(), 8000, [198, 19, 0, 21].into(), 1)
        }],
    );
    tenant.id = Some(1);
    tenant.forwarding = Forwarding::Nat;
    tenant.tunnel = Tunnel::Gre { key: Some(100) };
    let spec = SnapshotSpec {
        generation,
        ports: vec![
            port("ext", 1, [198, 18, 0, 1], Some([198, 18, 0, 254])),
            port("int", 2, [198, 19, 0, 1], None),
        ],
        tunnel_sources: vec![],
        clusters: vec![],
        services: vec![web, tenant],
    };
    Snapshot::build(&spec, None).expect("snapshot")
}

/// What the tests keep of a source after handing it to the collector.
struct Handles {
    workers: Vec<Arc<WorkerStats>>,
    sessions: Arc<SessionTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    apply: Arc<ApplyState>,
    live: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
}

fn add_session(table: &SessionTable, client_port: u16, service: u16, backend: u32) {
    let key = SessionKey::flow(Addr::v4(Ipv4Addr::new(198, 18, 1, 10)), client_port, service);
    let r = table.insert(&key, table.hash(&key), &Session::new(backend, TcpState::Established, 0));
    assert!(matches!(r, sluice_dataplane::session::Insert::Inserted(_)), "{r:?}");
}

/// Two workers with counts, 3 sessions on web's 198.19.0.12 and 1 on tenant's backend.
fn appliance() -> (MetricsSource, Handles) {
    let a = Arc::new(WorkerStats::default());
    let b = Arc::new(WorkerStats::default());
    a.ports[0].rx_packets.add(3);
    b.ports[0].rx_packets.add(4);
    a.ports[0].rx_bytes.add(300);
    b.ports[0].rx_bytes.add(400);
    a.ports[1].tx_packets.add(5);
    b.ports[1].tx_bytes.add(1500);
    a.count_drop(DropReason::NoService, 2);
    b.count_drop(DropReason::NoService, 5);
    b.count_drop(DropReason::TxFull, 1);
    a.tunneled.add(10);
    b.tunneled.add(11);
    a.nat_replies.add(6);
    b.arp_replies.add(2);
    a.icmp_echo_replies.add(1);
    a.sessions_created.add(4);
    b.sessions_created.add(1);
    b.session_hits.add(40);
    a.sessions_fallback.add(2);
    b.resets_sent.add(3);
    a.polls.add(1000);
    a.busy_polls.add(250);
    b.polls.add(10);
    b.busy_polls.add(10);

    let sessions = Arc::new(SessionTable::new(1000, Timeouts::default(), 42));
    for p in 0..3 {
        add_session(&sessions, 40000 + p, 0, 1);
    }
    add_session(&sessions, 50000, 1, 2);

    let h = Handles {
        workers: vec![a, b],
        sessions,
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot(7, true))),
        apply: Arc::new(ApplyState::new()),
        // The sweeper's count lags the table (4 sessions now): the gauge is the sweeper's.
        live: Arc::new(AtomicU64::new(6)),
        expired: Arc::new(AtomicU64::new(9)),
    };
    h.apply.record_applied_at(7, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let src = MetricsSource {
        stats: h.workers.clone(),
        port_names: vec!["ext".into(), "int".into()],
        sessions: Arc::clone(&h.sessions),
        snapshot: Arc::clone(&h.snapshot),
        apply: Arc::clone(&h.apply),
        sessions_live: Arc::clone(&h.live),
        sessions_expired: Arc::clone(&h.expired),
        nic_stats: Some(Box::new(|| {
            vec![
                dpdk_sys::PortStats { ipackets: 8, imissed: 13, rx_nombuf: 1, ..Default::default() },
                dpdk_sys::PortStats { opackets: 5, obytes: 1500, oerrors: 2, ..Default::default() },
            ]
        })),
        health: None,
        isolation: None,
        sync: None,
        agents: None,
        routing: None,
        connections: vec![],
    };
    (src, h)
}

/// The value of the sample of family `name` with exactly these (label, value) pairs.
fn value(mfs: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mf = mfs.iter().find(|m| m.name() == name)?;
    let m = mf.get_metric().iter().find(|m| {
        m.get_label().len() == labels.len()
            && m.get_label().iter().zip(labels).all(|(l, (k, v))| l.name() == *k && l.value() == *v)
    })?;
    Some(match mf.get_field_type() {
        MetricType::COUNTER => m.get_counter().get_value(),
        MetricType::GAUGE => m.get_gauge().get_value(),
        t => panic!("{name}: unexpected type {t:?}"),
    })
}

fn samples(mfs: &[MetricFamily], name: &str) -> usize {
    mfs.iter().find(|m| m.name() == name).map_or(0, |m| m.get_metric().len())
}

fn registry(src: MetricsSource) -> prometheus::Registry {
    metrics::registry(src).expect("registry")
}

// ---- the collector --------------------------------------------------------------------------

#[test]
fn sums_the_workers_per_port_queue_and_reason() {
    let (src, _h) = appliance();
    let mfs = registry(src).gather();
    let v = |name: &str, labels: &[(&str, &str)]| value(&mfs, name, labels);

    assert_eq!(v("sluice_port_rx_packets_total", &[("port", "ext")]), Some(7.0));
    assert_eq!(v("sluice_port_rx_bytes_total", &[("port", "ext")]), Some(700.0));
    assert_eq!(v("sluice_port_rx_packets_total", &[("port", "int")]), Some(0.0));
    assert_eq!(v("sluice_port_tx_packets_total", &[("port", "int")]), Some(5.0));
    assert_eq!(v("sluice_port_tx_bytes_total", &[("port", "int")]), Some(1500.0));
    // Only the configured ports, not every slot of WorkerStats::ports.
    assert_eq!(samples(&mfs, "sluice_port_rx_packets_total"), 2);

    // Queue q is worker q's.
    assert_eq!(v("sluice_queue_rx_packets_total", &[("port", "ext"), ("queue", "0")]), Some(3.0));
    assert_eq!(v("sluice_queue_rx_packets_total", &[("port", "ext"), ("queue", "1")]), Some(4.0));
    assert_eq!(v("sluice_queue_tx_bytes_total", &[("port", "int"), ("queue", "1")]), Some(1500.0));
    assert_eq!(samples(&mfs, "sluice_queue_rx_packets_total"), 4);

    // The NIC hook.
    assert_eq!(v("sluice_nic_rx_missed_packets_total", &[("port", "ext")]), Some(13.0));
    assert_eq!(v("sluice_nic_rx_packets_total", &[("port", "ext")]), Some(8.0));
    assert_eq!(v("sluice_nic_tx_errors_total", &[("port", "int")]), Some(2.0));
    assert_eq!(v("sluice_nic_rx_mbuf_allocation_failures_total", &[("port", "ext")]), Some(1.0));

    // Every drop reason, zeros included.
    assert_eq!(samples(&mfs, "sluice_drops_total"), DropReason::COUNT);
    for r in DropReason::ALL {
        let want = match r {
            DropReason::NoService => 7.0,
            DropReason::TxFull => 1.0,
            _ => 0.0,
        };
        assert_eq!(v("sluice_drops_total", &[("reason", r.label())]), Some(want), "{}", r.label());
    }

    assert_eq!(v("sluice_tunneled_packets_total", &[]), Some(21.0));
    assert_eq!(v("sluice_nat_replies_total", &[]), Some(6.0));
    assert_eq!(v("sluice_arp_replies_total", &[]), Some(2.0));
    assert_eq!(v("sluice_icmp_echo_replies_total", &[]), Some(1.0));
    assert_eq!(v("sluice_sessions_created_total", &[]), Some(5.0));
    assert_eq!(v("sluice_session_hits_total", &[]), Some(40.0));
    assert_eq!(v("sluice_sessions_fallback_total", &[]), Some(2.0));
    assert_eq!(v("sluice_resets_sent_total", &[]), Some(3.0));
    assert_eq!(v("sluice_sessions_expired_total", &[]), Some(9.0));

    // Worker 0: 250 of 1000 polls busy; worker 1: all of them.
    assert_eq!(v("sluice_worker_busy_ratio", &[("worker", "0")]), Some(0.25));
    assert_eq!(v("sluice_worker_busy_ratio", &[("worker", "1")]), Some(1.0));
    assert_eq!(v("sluice_worker_polls_total", &[("worker", "0")]), Some(1000.0));
}

#[test]
fn agent_reports_by_agent_and_refusals_by_reason() {
    use sluice_control::health::agents::AgentCounters;
    use std::sync::atomic::Ordering::Relaxed;
    let (without, _h0) = appliance();
    assert!(registry(without).gather().iter().all(|m| !m.name().starts_with("sluice_agent_")));
    let (mut src, _h) = appliance();
    let c = Arc::new(AgentCounters::default());
    c.assigns_sent.store(5, Relaxed);
    c.refused[4].store(2, Relaxed); // Reject::ALL[4]: bad_tag
    c.refused[9].store(3, Relaxed); // unknown_backend
    c.reports.lock().unwrap().insert("198.19.0.11".parse().unwrap(), 7);
    src.agents = Some(c);
    let mfs = registry(src).gather();
    assert_eq!(value(&mfs, "sluice_agent_assignments_sent_total", &[]), Some(5.0));
    assert_eq!(value(&mfs, "sluice_agent_reports_total", &[("agent", "198.19.0.11")]), Some(7.0));
    assert_eq!(value(&mfs, "sluice_agent_reports_refused_total", &[("reason", "bad_tag")]), Some(2.0));
    assert_eq!(
        value(&mfs, "sluice_agent_reports_refused_total", &[("reason", "unknown_backend")]),
        Some(3.0)
    );
    assert_eq!(value(&mfs, "sluice_agent_reports_refused_total", &[("reason", "unknown_agent")]), Some(0.0));
}

#[test]
fn sessions_backends_config_and_build() {
    let (src, h) = appliance();
    let mfs = registry(src).gather();
    let v = |name: &str, labels: &[(&str, &str)]| value(&mfs, name, labels);

    assert_eq!(v("sluice_sessions", &[]), Some(6.0));
    assert_eq!(v("sluice_session_capacity", &[]), Some(1000.0));
    assert_eq!(v("sluice_session_slots", &[]), Some(h.sessions.slot_count() as f64));
    assert_eq!(v("sluice_session_table_full", &[]), Some(0.0));

    let web = |b: &'static str| [("service", "web"), ("backend", b)];
    assert_eq!(v("sluice_backend_active_sessions", &web("198.19.0.11")), Some(0.0));
    assert_eq!(v("sluice_backend_active_sessions", &web("198.19.0.12")), Some(3.0));
    let tenant = [("service", "tenant"), ("backend", "10.0.0.5:8000")];
    assert_eq!(v("sluice_backend_active_sessions", &tenant), Some(1.0));
    assert_eq!(v("sluice_backend_weight", &web("198.19.0.12")), Some(2.0));
    assert_eq!(v("sluice_backend_weight", &tenant), Some(1.0));
    assert_eq!(samples(&mfs, "sluice_backend_weight"), 3);
    assert_eq!(v("sluice_service_usable_backends", &[("service", "web")]), Some(2.0));
    // No health checks wired: no health series at all.
    assert_eq!(samples(&mfs, "sluice_backend_healthy"), 0);

    assert_eq!(v("sluice_config_generation", &[]), Some(7.0));
    assert_eq!(v("sluice_config_last_apply_success", &[]), Some(1.0));
    assert_eq!(v("sluice_config_last_apply_timestamp_seconds", &[]), Some(1_700_000_000.0));
    assert_eq!(v("sluice_config_applies_total", &[("result", "applied")]), Some(1.0));
    assert_eq!(v("sluice_config_applies_total", &[("result", "refused")]), Some(0.0));

    let build = mfs.iter().find(|m| m.name() == "sluice_build_info").expect("build info");
    let labels: Vec<(&str, &str)> =
        build.get_metric()[0].get_label().iter().map(|l| (l.name(), l.value())).collect();
    assert!(labels.contains(&("version", env!("CARGO_PKG_VERSION"))), "{labels:?}");
    assert_eq!(build.get_metric()[0].get_gauge().get_value(), 1.0);
}

#[test]
fn each_scrape_reads_the_state_of_the_moment() {
    let (src, h) = appliance();
    let c = SluiceCollector::new(src).expect("collector");
    let first = c.collect();
    assert_eq!(
        value(&first, "sluice_backend_weight", &[("service", "web"), ("backend", "198.19.0.12")]),
        Some(2.0)
    );

    // A new config without web's second backend, a refused apply, more traffic, a sweep.
    h.snapshot.store(Arc::new(snapshot(8, false)));
    h.apply.record_applied_at(8, UNIX_EPOCH + Duration::from_secs(1_700_000_100));
    h.apply.record_refused_at(UNIX_EPOCH + Duration::from_secs(1_700_000_200));
    h.workers[1].count_drop(DropReason::NoService, 3);
    h.workers[0].polls.add(100);
    h.workers[0].busy_polls.add(100);
    h.live.store(1, Ordering::Relaxed);
    h.sessions.set_full(true);

    let second = c.collect();
    let v = |name: &str, labels: &[(&str, &str)]| value(&second, name, labels);
    assert_eq!(v("sluice_backend_weight", &[("service", "web"), ("backend", "198.19.0.12")]), None);
    assert_eq!(samples(&second, "sluice_backend_weight"), 2);
    assert_eq!(v("sluice_drops_total", &[("reason", "no_service")]), Some(10.0));
    assert_eq!(v("sluice_sessions", &[]), Some(1.0));
    assert_eq!(v("sluice_session_table_full", &[]), Some(1.0));
    assert_eq!(v("sluice_config_generation", &[]), Some(8.0));
    assert_eq!(v("sluice_config_last_apply_success", &[]), Some(0.0));
    assert_eq!(v("sluice_config_last_apply_timestamp_seconds", &[]), Some(1_700_000_200.0));
    assert_eq!(v("sluice_config_applies_total", &[("result", "applied")]), Some(2.0));
    assert_eq!(v("sluice_config_applies_total", &[("result", "refused")]), Some(1.0));
    // Since the previous scrape, worker 0 was busy on all of its 100 polls.
    assert_eq!(v("sluice_worker_busy_ratio", &[("worker", "0")]), Some(1.0));
}

#[test]
fn descriptors_are_valid_and_registration_is_exclusive() {
    let (src, _h) = appliance();
    let c = SluiceCollector::new(src).expect("collector");
    let names: Vec<String> = c.desc().iter().map(|d| d.fq_name.clone()).collect();
    assert!(names.contains(&"sluice_drops_total".to_string()));
    let r = prometheus::Registry::new();
    r.register(Box::new(c)).expect("register");
    // A second collector with the same descriptors is refused rather than doubling series.
    let (src2, _h2) = appliance();
    assert!(r.register(Box::new(SluiceCollector::new(src2).expect("collector"))).is_err());
}

// ---- the HTTP endpoint ----------------------------------------------------------------------

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn request(addr: SocketAddr, raw: &[u8]) -> Reply {
    exchange(addr, raw, false)
}

/// Sends `raw`, closes the sending side if `close`, reads the answer until the server closes.
fn exchange(addr: SocketAddr, raw: &[u8], close: bool) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(raw).expect("send");
    if close {
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_string(), body: body.to_string() }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes())
}

/// The metrics server on 127.0.0.1, stopped and joined when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// Its refused connections, also exported as `endpoint="metrics"`.
    refusals: Arc<Refusals>,
}

impl Server {
    fn start(src: MetricsSource) -> Server {
        Server::with_limits(src, metrics::LIMITS)
    }

    fn with_limits(mut src: MetricsSource, limits: Limits) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let refusals = Arc::new(Refusals::default());
        src.connections.push(("metrics", Arc::clone(&refusals)));
        let listen = "127.0.0.1:0".parse().expect("addr");
        let (addr, thread) =
            metrics::serve(listen, registry(src), limits, Arc::clone(&refusals), Arc::clone(&stop))
                .expect("serve");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        Server { addr, stop, thread: Some(thread), refusals }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("metrics thread");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn serves_metrics_and_refuses_everything_else() {
    let (src, _h) = appliance();
    let mut server = Server::start(src);
    let addr = server.addr;

    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"), "{}", r.head);
    assert!(r.head.contains(&format!("\r\nContent-Length: {}\r\n", r.body.len())), "{}", r.head);
    assert!(r.body.contains("# TYPE sluice_drops_total counter\n"), "{}", r.body);
    assert!(r.body.contains("\nsluice_drops_total{reason=\"no_service\"} 7\n"), "{}", r.body);
    assert!(r.body.contains("\nsluice_port_rx_packets_total{port=\"ext\"} 7\n"), "{}", r.body);
    assert!(
        r.body.contains("\nsluice_backend_active_sessions{service=\"tenant\",backend=\"10.0.0.5:8000\"} 1\n"),
        "{}",
        r.body
    );
    assert_eq!(get(addr, "/metrics?debug=1").status, 200);

    let head = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((head.status, head.body.as_str()), (200, ""), "{}", head.head);

    let post = request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(post.status, 405, "{}", post.head);
    assert!(post.head.contains("\r\nAllow: GET, HEAD"), "{}", post.head);
    assert_eq!(get(addr, "/").status, 404);
    assert_eq!(get(addr, "/metrics/x").status, 404);
    assert_eq!(request(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").status, 400);
    assert_eq!(request(addr, b"GET /metrics\r\n\r\n").status, 400);
    // Closed before the head ended.
    assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", true).status, 400);

    // A head over the cap: 431, without reading it all into memory.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
    big.resize(metrics::MAX_REQUEST_HEAD + 2000, b'a');
    assert_eq!(request(addr, &big).status, 431);

    // A client that connects and says nothing, then leaves; the server carries on.
    drop(TcpStream::connect(addr).expect("connect"));
    assert_eq!(get(addr, "/metrics").status, 200);

    server.stop();
    assert!(TcpStream::connect(addr).is_err(), "still listening after stop");
}

fn limits(max_connections: usize, request_deadline: Duration) -> Limits {
    Limits { max_connections, request_deadline, write_deadline: Duration::from_secs(5) }
}

/// Connects and sends `part` of a request, then waits.
fn hold(addr: SocketAddr, part: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(part).expect("send");
    s
}

/// A client that sends a request head that never ends, a byte every 50 ms, until the server
/// closes or the value is dropped.
struct Trickler {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Trickler {
    fn start(addr: SocketAddr) -> Trickler {
        let stream = TcpStream::connect(addr).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let _ = writer.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
            while !stopped.load(Ordering::Relaxed) && writer.write_all(b"a").is_ok() {
                thread::sleep(Duration::from_millis(50));
            }
        });
        Trickler { stream, stop, thread: Some(thread) }
    }

    /// What the server says before closing; an error if it has not closed in 20 s.
    fn answer(&mut self) -> std::io::Result<String> {
        self.stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Scrapes until the server answers 200 (slots of closed connections come back once their
/// threads see them gone).
/// A scrape once a slot is free, and how many tries were refused as over the cap first (the
/// holders' threads may not have let go of their slots yet; each such try is counted too).
fn scrape_when_free(addr: SocketAddr) -> (Reply, u64) {
    let mut refused = 0;
    for _ in 0..500 {
        let r = get(addr, "/metrics");
        match r.status {
            200 => return (r, refused),
            503 => refused += 1,
            s => panic!("status {s} while waiting for a slot: {}", r.head),
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("no free slot after the holders left");
}

#[test]
fn a_trickling_client_is_cut_at_the_head_deadline() {
    let (src, _h) = appliance();
    let server = Server::with_limits(src, limits(4, Duration::from_millis(300)));
    let text = Trickler::start(server.addr).answer().expect("cut off");
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert_eq!(server.refusals.get(Refusal::TimedOut), 1);
    let r = get(server.addr, "/metrics");
    assert!(
        r.body.contains(
            "\nsluice_control_connections_refused_total{endpoint=\"metrics\",reason=\"timed_out\"} 1\n"
        ),
        "{}",
        r.body
    );
}

#[test]
fn a_scrape_is_answered_while_slow_clients_hold_connections() {
    let (src, _h) = appliance();
    let server = Server::with_limits(src, limits(8, Duration::from_secs(60)));
    // Three that trickle a head that never ends, three that send part of one and wait.
    let tricklers: Vec<Trickler> = (0..3).map(|_| Trickler::start(server.addr)).collect();
    let idle: Vec<TcpStream> = (0..3).map(|_| hold(server.addr, b"GET /metr")).collect();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answered while the slow clients wait");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\nsluice_drops_total{reason=\"no_service\"} 7\n"), "{text}");
    drop((tricklers, idle));
}

#[test]
fn connections_over_the_cap_get_503_and_are_counted() {
    let (src, _h) = appliance();
    let server = Server::with_limits(src, limits(2, Duration::from_secs(60)));
    let held: Vec<TcpStream> = (0..2).map(|_| hold(server.addr, b"")).collect();
    // Accepted in order: the two above hold both slots.
    let r = exchange(server.addr, b"", false);
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.head.contains("\r\nRetry-After: 1\r\n"), "{}", r.head);
    assert_eq!(server.refusals.get(Refusal::OverCap), 1);
    drop(held);
    let (r, retried) = scrape_when_free(server.addr);
    let want = format!(
        "\nsluice_control_connections_refused_total{{endpoint=\"metrics\",reason=\"over_cap\"}} {}\n",
        1 + retried
    );
    assert!(r.body.contains(&want), "{want}\n{}", r.body);
    assert_eq!(server.refusals.get(Refusal::OverCap), 1 + retried);
}

// ---- promtool and a real Prometheus ---------------------------------------------------------

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    if !Path::new(PROMTOOL).exists() {
        eprintln!("SKIPPED: {PROMTOOL} is not installed (scripts/setup.sh installs the prometheus package)");
        return;
    }
    let (src, _h) = appliance();
    let server = Server::start(src);
    let body = get(server.addr, "/metrics").body;
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool ({}): {said}\n--- body:\n{body}",
        out.status
    );
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A Prometheus server with its own data directory, killed and removed when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill signals this child's pid, nothing else.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

/// Starts Prometheus on 127.0.0.1 scraping `target` every second.
fn start_prometheus(target: SocketAddr) -> Prometheus {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("sluice-metrics-prom-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prom.yml"), config).expect("config");
    let addr = free_loopback_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", dir.join("prom.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn();
    match child {
        Ok(child) => Prometheus { child, dir, addr },
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("starting {PROMETHEUS}: {e}");
        }
    }
}

/// `GET path` from Prometheus's API, as JSON (`None` while it does not answer).
fn api(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the answer comes whole (no chunks) and the server closes.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

fn query_path(promql: &str) -> String {
    let mut q = String::from("/api/v1/query?query=");
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
            q.push(char::from(b));
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

/// The single value `promql` evaluates to now, if it returns exactly one series.
fn query_one(addr: SocketAddr, promql: &str) -> Option<String> {
    let v = api(addr, &query_path(promql))?;
    let result = v.pointer("/data/result")?.as_array()?;
    match result.as_slice() {
        [one] => Some(one.pointer("/value/1")?.as_str()?.to_string()),
        _ => None,
    }
}

#[test]
fn a_prometheus_server_scrapes_the_endpoint() {
    if !Path::new(PROMETHEUS).exists() {
        eprintln!(
            "SKIPPED: {PROMETHEUS} is not installed (scripts/setup.sh installs the prometheus package)"
        );
        return;
    }
    if effective_uid() != Some(0) {
        eprintln!("SKIPPED: not root (the suite runs the Prometheus server test as root, as CI does)");
        return;
    }
    let (src, h) = appliance();
    let server = Server::start(src);
    let mut prom = start_prometheus(server.addr);
    let scrape_url = format!("http://{}/metrics", server.addr);
    let checks: [(&str, &str); 4] = [
        ("up{job=\"sluice\"}", "1"),
        ("sluice_drops_total{reason=\"no_service\"}", "7"),
        ("sluice_backend_active_sessions{service=\"web\",backend=\"198.19.0.12\"}", "3"),
        ("sum(sluice_port_rx_packets_total)", "7"),
    ];

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let mut done = false;
    while !done && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        if let Ok(Some(status)) = prom.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", prom.log());
        }
        let Some(targets) = api(prom.addr, "/api/v1/targets?state=active") else {
            last = "the API does not answer yet".into();
            continue;
        };
        let up = targets.pointer("/data/activeTargets").and_then(|t| t.as_array()).is_some_and(|ts| {
            ts.iter().any(|t| {
                t.get("scrapeUrl").and_then(|u| u.as_str()) == Some(scrape_url.as_str())
                    && t.get("health").and_then(|h| h.as_str()) == Some("up")
            })
        });
        if !up {
            last = format!("target not up: {targets}");
            continue;
        }
        let answers: Vec<(&str, Option<String>)> =
            checks.iter().map(|(q, _)| (*q, query_one(prom.addr, q))).collect();
        done = answers.iter().zip(&checks).all(|((_, got), (_, want))| got.as_deref() == Some(*want));
        last = format!("queries: {answers:?}");
    }
    assert!(done, "Prometheus did not see the expected series within 60 s; last: {last}\n{}", prom.log());

    // A count that changes shows up in a later scrape.
    h.workers[0].count_drop(DropReason::NoService, 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = query_one(prom.addr, "sluice_drops_total{reason=\"no_service\"}");
        if seen.as_deref() == Some("12") {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(seen.as_deref(), Some("12"), "{}", prom.log());
    let dir = prom.dir.clone();
    drop(prom);
    assert!(!dir.exists(), "{} left behind", dir.display());
}
