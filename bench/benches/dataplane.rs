//! Micro-benchmarks of the packet path, without DPDK. `cargo bench -p sluice-bench`.
//! Figures and method: docs/performance.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_bench::{FlowWalk, Template, Template6, Traffic};
use sluice_dataplane::flow::{Addr, FlowKey, SELECT_SEED};
use sluice_dataplane::io::{Frame, VecFrame};
use sluice_dataplane::limit::{Isolation, Limit, LimitState, Limits};
use sluice_dataplane::maglev::{Maglev, MaglevInput, DEFAULT_TABLE_SIZE};
use sluice_dataplane::pipeline::{process, Ctx, Limiter, Resolve, Verdict};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::testkit::bench::{
    dsr6_snapshot, dsr_snapshot as snapshot, dsr_snapshot_limited, linux_syn, synproxy_snapshot, Underlay,
    SYNPROXY_VIP, VIP6,
};
use sluice_dataplane::testkit::{self, vip, EXT_MAC, GEN_MAC};
use sluice_dataplane::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
use std::hint::black_box;
use std::net::Ipv4Addr;

fn packets(n: usize) -> Vec<[u8; 60]> {
    let t = Template::new(EXT_MAC, GEN_MAC, vip(1), 80, Some(0x10));
    let mut walk = FlowWalk::new(Traffic::Established { flows: 1_000_000 });
    (0..n)
        .map(|_| {
            let mut b = [0u8; 60];
            t.fill(&mut walk, &mut b);
            b
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let pkts = packets(1024);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("eth_ipv4_tcp_checked", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let p = &pkts[i];
            let eth = EthernetFrame::new_checked(&p[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let ok = ip.verify_checksum();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            black_box((ok, tcp.src_port(), tcp.dst_port(), ip.src()))
        })
    });
    g.finish();
}

fn maglev(c: &mut Criterion) {
    let snap = snapshot(100);
    let svc = &snap.services[0];
    let keys: Vec<FlowKey> = packets(4096)
        .iter()
        .map(|p| FlowKey {
            src: Addr::v4(Ipv4Addr::new(p[26], p[27], p[28], p[29])),
            dst: Addr::v4(vip(1)),
            src_port: u16::from_be_bytes([p[34], p[35]]),
            dst_port: 80,
            protocol: 6,
        })
        .collect();
    let mut g = c.benchmark_group("maglev");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("flow_hash_and_lookup", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(svc.maglev.lookup(black_box(&keys[i]).hash(SELECT_SEED)))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    for n in [100usize, 1000] {
        let ids: Vec<[u8; 4]> =
            (0..n as u32).map(|i| (u32::from_be_bytes([198, 19, 0, 0]) + i).to_be_bytes()).collect();
        let inputs: Vec<MaglevInput<'_>> = ids.iter().map(|id| MaglevInput { id, weight: 1 }).collect();
        g.bench_with_input(BenchmarkId::new("backends_m65537", n), &inputs, |b, inputs| {
            b.iter(|| black_box(Maglev::build(inputs, DEFAULT_TABLE_SIZE)))
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let snap = snapshot(100);
    let pkts = packets(1024);
    let mut frames: Vec<VecFrame> = pkts.iter().map(|p| VecFrame::new(p)).collect();
    let mut resolve = Resolve::new();
    let table = SessionTable::new(1 << 21, Timeouts::default(), 1);
    let proxy = testkit::synproxy();
    let mut sched = SchedState::new(0, 1);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("dsr_ipip_encap", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let f = &mut frames[i];
            let mut cx = Ctx::new(&snap, &table, &proxy, &mut sched, 1, &mut resolve);
            let v = process(&mut cx, 0, f);
            debug_assert!(matches!(v, Verdict::Tunnel { .. }));
            // Undo the encapsulation for the next round: drop the 20 prepended bytes and put
            // the original Ethernet header back (a 14-byte copy, included in the figure).
            f.adj(20);
            f.data_mut()[..14].copy_from_slice(&pkts[i][..14]);
            let pad = 60 - f.data().len();
            f.append(pad);
            black_box(v)
        })
    });

    // The same for an IPv6 client of an IPv6 VIP (74-byte packets), over the IPv4 underlay
    // (IPv6 in IPIP, 20 bytes prepended) and over the IPv6 underlay (RFC 2473, 40 bytes).
    let t6 = Template6::new(EXT_MAC, GEN_MAC, VIP6, 80, Some(0x10));
    let mut walk = FlowWalk::new(Traffic::Established { flows: 1_000_000 });
    let pkts6: Vec<Vec<u8>> = (0..1024)
        .map(|_| {
            let mut b = vec![0u8; t6.bytes.len()];
            t6.fill(&mut walk, &mut b);
            b
        })
        .collect();
    for (name, underlay, outer) in
        [("dsr6_ipip_encap", Underlay::V4, 20), ("dsr6_ip6ip6_encap", Underlay::V6, 40)]
    {
        let snap6 = dsr6_snapshot(100, underlay);
        let mut frames: Vec<VecFrame> = pkts6.iter().map(|p| VecFrame::new(p)).collect();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let f = &mut frames[i];
                let mut cx = Ctx::new(&snap6, &table, &proxy, &mut sched, 1, &mut resolve);
                let v = process(&mut cx, 0, f);
                debug_assert!(matches!(v, Verdict::Tunnel { .. }));
                // Undo the encapsulation: drop the outer header, put Ethernet back (14 bytes).
                f.adj(outer);
                f.data_mut()[..14].copy_from_slice(&pkts6[i][..14]);
                black_box(v)
            })
        });
    }

    // The same with isolation on: the service has packets/s, bytes/s, connections/s and
    // sessions limits that apply (`always`), set so high that nothing is dropped; every packet
    // takes from two token buckets, reads its share and counts what it offered.
    let big = Some(Limit { value: 1 << 40, on_overload: false });
    let limited = dsr_snapshot_limited(100, Limits { rates: [big; 3], sessions: big });
    let isolation = Isolation::new(1);
    let mut state = LimitState::default();
    let counters = WorkerStats::default().limits;
    // The buckets refill with time: a clock that moves 1 us a packet (earning ~10^6 packets'
    // worth each time at these rates).
    let mut now = 1u64;
    g.bench_function("dsr_ipip_encap_isolation_on", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            now += 1000;
            let f = &mut frames[i];
            let limiter = Limiter {
                state: &mut state,
                isolation: &isolation,
                counters: &counters,
                worker: 0,
                overloaded: false,
            };
            let mut cx =
                Ctx::new(&limited, &table, &proxy, &mut sched, now, &mut resolve).with_limiter(limiter);
            let v = process(&mut cx, 0, f);
            assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
            f.adj(20);
            f.data_mut()[..14].copy_from_slice(&pkts[i][..14]);
            let pad = 60 - f.data().len();
            f.append(pad);
            black_box(v)
        })
    });

    // SYN proxy: SYNs from 1024 clients, each answered with a cookie SYN-ACK built in place;
    // nothing is kept, so every round is a session-table miss and a fresh cookie. Two kinds of
    // SYN: Linux's (MSS, SACK-permitted, timestamps, window scale: 74 bytes, and a SYN-ACK of
    // the same length) and the packet-rate harness's (sluice-gen's template: no options, 60
    // bytes with padding; its SYN-ACK, MSS only, is 58). A table of its own: the DSR
    // benchmark's sessions have the same clients and service id.
    let proxied = synproxy_snapshot(4);
    let gen_syn = Template::new(EXT_MAC, GEN_MAC, SYNPROXY_VIP, 80, Some(0x02));
    for (name, linux) in [("synproxy_cookie_reply", true), ("synproxy_cookie_reply_gen_syn", false)] {
        let table = SessionTable::new(1 << 21, Timeouts::default(), 1);
        let mut walk = FlowWalk::new(Traffic::NewFlows);
        let syns: Vec<Vec<u8>> = (0..1024u32)
            .map(|i| {
                if linux {
                    let (addr, port) = walk.next_flow();
                    linux_syn(Ipv4Addr::from(addr), port, SYNPROXY_VIP, i)
                } else {
                    let mut b = vec![0u8; 60];
                    gen_syn.fill(&mut walk, &mut b);
                    b
                }
            })
            .collect();
        let mut frames: Vec<VecFrame> = syns.iter().map(|p| VecFrame::new(p)).collect();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let f = &mut frames[i];
                let mut cx = Ctx::new(&proxied, &table, &proxy, &mut sched, 1, &mut resolve);
                let v = process(&mut cx, 0, f);
                debug_assert_eq!(v, Verdict::SynAck { port: 0 });
                // Put the SYN back for the next round: size the frame to it again (the gen's
                // SYN-ACK is 2 bytes shorter) and copy its bytes (74 or 60, included in the
                // figure).
                let (len, want) = (f.data().len(), syns[i].len());
                if len < want {
                    f.append(want - len);
                }
                f.data_mut().copy_from_slice(&syns[i]);
                black_box(v)
            })
        });
    }
    g.finish();
}

/// SYN cookies: making one (per SYN of a flood) and checking one (per ACK).
fn cookies(c: &mut Criterion) {
    use sluice_dataplane::cookie::{CookieKeys, SynOptions};
    let keys = CookieKeys::new([1, 2], [[3, 4], [5, 6]]);
    let opts = SynOptions::from_syn(Some(1460), Some(7), true, true);
    let mut g = c.benchmark_group("syn_cookie");
    g.throughput(Throughput::Elements(1));
    let mut port = 0u16;
    g.bench_function("make", |b| {
        b.iter(|| {
            port = port.wrapping_add(1);
            let f = FlowKey {
                src: Addr::v4(Ipv4Addr::new(198, 18, 1, 10)),
                dst: Addr::v4(vip(2)),
                src_port: port,
                dst_port: 80,
                protocol: 6,
            };
            black_box(keys.make(&f, 12345, 1000, opts))
        })
    });
    let f = FlowKey {
        src: Addr::v4(Ipv4Addr::new(198, 18, 1, 10)),
        dst: Addr::v4(vip(2)),
        src_port: 40000,
        dst_port: 80,
        protocol: 6,
    };
    let cookie = keys.make(&f, 12345, 1000, opts);
    g.bench_function("check", |b| b.iter(|| black_box(keys.check(&f, 12346, cookie.wrapping_add(1), 1000))));
    g.finish();
}

criterion_group!(benches, parse, maglev, pipeline, cookies);
criterion_main!(benches);
