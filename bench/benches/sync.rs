//! Session sync's cost, without sockets: the sender's pass over 100 000 long-lived sessions
//! (walk, records, messages) and the receiver's decode and install of them.
//! `cargo bench -p sluice-bench --bench sync`; figures in docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_control::peers::{install, record_of, ServiceIndex};
use sluice_control::sync::{self, Op, ReplayGuard, SyncKey};
use sluice_dataplane::flow::Addr;
use sluice_dataplane::session::{Session, SessionKey, SessionTable, TcpState, Timeouts};
use sluice_dataplane::testkit::bench::synproxy_snapshot;
use std::hint::black_box;
use std::net::Ipv4Addr;

const SESSIONS: u32 = 100_000;

fn sync(c: &mut Criterion) {
    let snap = synproxy_snapshot(4);
    let ix = ServiceIndex::new(&snap);
    let svc = &snap.services[0];
    let table = SessionTable::new(SESSIONS as usize * 2, Timeouts::default(), 1);
    let now = 10_000;
    for i in 0..SESSIONS {
        let key =
            SessionKey::flow(Addr::v4(Ipv4Addr::from(0xc612_0000 + i)), 40000 + (i % 20000) as u16, svc.id);
        let s = Session {
            created: now - 1000,
            ..Session::new(svc.backends[(i % 4) as usize].id, TcpState::Established, now)
        };
        table.insert(&key, table.hash(&key), &s);
    }
    let key = SyncKey::new([7; 32]);
    let records = |table: &SessionTable| {
        let mut out = Vec::with_capacity(SESSIONS as usize);
        table.sweep_with(
            now,
            0,
            table.slot_count(),
            |_, _| {},
            |k, s| out.extend(record_of(&ix, k, s, now, Op::Upsert)),
        );
        out
    };
    let all = records(&table);
    assert_eq!(all.len(), SESSIONS as usize);
    let mut seq = 1;
    let messages = sync::encode_batches(&key, 1, &mut seq, 0, &all);
    let bytes: usize = messages.iter().map(|m| m.len() + 28).sum();
    eprintln!(
        "sync: {} sessions -> {} records, {} messages, {} bytes with IPv4/UDP headers ({:.1} bytes/session) per peer per refresh",
        SESSIONS,
        all.len(),
        messages.len(),
        bytes,
        bytes as f64 / f64::from(SESSIONS)
    );

    let mut g = c.benchmark_group("sync");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(SESSIONS)));
    g.bench_function("send_pass_100k", |b| {
        b.iter(|| {
            let r = records(&table);
            let mut seq = 1;
            black_box(sync::encode_batches(&key, 1, &mut seq, 0, &r))
        })
    });
    g.bench_function("receive_install_100k", |b| {
        b.iter_with_setup(
            || SessionTable::new(SESSIONS as usize * 2, Timeouts::default(), 2),
            |peer| {
                let mut guard = ReplayGuard::new();
                for m in &messages {
                    let (_, recs) = sync::decode(&key, m, 0, 30_000, &mut guard).expect("genuine");
                    for r in &recs {
                        black_box(install(&peer, &ix, r, now));
                    }
                }
                peer
            },
        )
    });
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
