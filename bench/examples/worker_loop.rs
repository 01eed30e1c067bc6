//! Runs the worker over in-memory bursts of established-flow packets, for profilers:
//! `valgrind --tool=callgrind target/release/examples/worker_loop 200000`
//! (instruction counts per packet, without DPDK). A second argument `isolation` gives the
//! service limits that always apply and never drop (isolation's cost per packet); `baseline`
//! runs the loop with the packets moved from the receive queue to the transmit queue
//! untouched, so that the example's own share (making packets, its queues) can be taken out.
//! `too-big` and `fragment` send 1500-byte packets, 20 bytes too big for the tunnel, with DF
//! (each answered by a too-big message while the worker's rate allows, dropped after) and
//! without (each cut into two fragments): the cost of those paths per packet. `ipv6` and
//! `ipv6-underlay` send the established-flow packets from IPv6 clients to an IPv6 VIP (74
//! bytes, TCP over IPv6), tunneled to IPv4 hosts (IPv6 in IPIP, protocol 41: the common
//! deployment) or to IPv6 hosts (IPv6 in IPv6, RFC 2473); `ipv6-baseline` is `baseline` with
//! those packets. With fewer than a million packets every packet is of a new flow (the walk
//! visits 1 M flows before it repeats): the new-flow cost.

use arc_swap::ArcSwap;
use sluice_bench::{FlowWalk, Template, Template6, Traffic};
use sluice_dataplane::io::{MemIo, VecFrame};
use sluice_dataplane::limit::{Limit, Limits};
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::stats::WorkerStats;
use sluice_dataplane::testkit::bench::{dsr6_snapshot, dsr_snapshot_limited, Underlay, VIP6};
use sluice_dataplane::testkit::{self, vip, EXT_MAC, GEN_MAC};
use sluice_dataplane::wire::ipv4::{self, Ipv4Packet};
use sluice_dataplane::worker::Worker;
use std::sync::Arc;

fn main() {
    let packets: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode = std::env::args().nth(2);
    let mode = mode.as_deref().unwrap_or("");
    let baseline = matches!(mode, "baseline" | "ipv6-baseline");
    let limits = match mode {
        "isolation" => {
            let big = Some(Limit { value: 1 << 40, on_overload: false });
            Limits { rates: [big; 3], sessions: big }
        }
        _ => Limits::default(),
    };
    // IPv6 clients to an IPv6 VIP, and the underlay toward its backends.
    let ipv6 = match mode {
        "ipv6" | "ipv6-baseline" => Some(Underlay::V4),
        "ipv6-underlay" => Some(Underlay::V6),
        _ => None,
    };
    let snap = match ipv6 {
        Some(underlay) => dsr6_snapshot(4, underlay),
        None => dsr_snapshot_limited(4, limits),
    };
    let config = Arc::new(ArcSwap::from_pointee(snap));
    let stats = Arc::new(WorkerStats::default());
    let mut w = Worker::new(
        (1, 2),
        MemIo::new(2),
        2,
        config,
        (Arc::new(SessionTable::new(1 << 21, Timeouts::default(), 1)), Arc::new(testkit::synproxy())),
        Arc::clone(&stats),
    );
    let t = Template::new(EXT_MAC, GEN_MAC, vip(1), 80, Some(0x10));
    let t6 = Template6::new(EXT_MAC, GEN_MAC, VIP6, 80, Some(0x10));
    let len = if ipv6.is_some() { t6.bytes.len() } else { t.bytes.len() };
    let mut walk = FlowWalk::new(Traffic::Established { flows: 1_000_000 });
    // 1500-byte packets (`too-big`, `fragment`): the 60-byte template's headers, then zeros.
    let big = match mode {
        "too-big" => Some(true),
        "fragment" => Some(false),
        _ => None,
    };
    let mut b = [0u8; 74];
    let mut wide = vec![0u8; 14 + 1500];
    let (mut done, mut now) = (0, 1u64);
    let mut spare: Vec<VecFrame> = (0..32).map(|_| VecFrame::new(&b[..len])).collect();
    while done < packets {
        for mut f in spare.drain(..) {
            if ipv6.is_some() {
                t6.fill(&mut walk, &mut b);
            } else {
                t.fill(&mut walk, &mut b);
            }
            match big {
                Some(df) => {
                    widen(&b, &mut wide, df);
                    f.reset(&wide);
                }
                None => f.reset(&b[..len]),
            }
            w.io().rx[0].push_back(f);
        }
        // 1 us a burst: the buckets refill.
        now += 1000;
        if baseline {
            let io = w.io();
            done += io.rx[0].len();
            io.tx[1].extend(io.rx[0].drain(..));
        } else {
            done += w.poll(now);
        }
        spare.append(&mut w.io().tx[1]);
        // Too-big messages leave by port 0; dropped frames are gone: made again.
        spare.append(&mut w.io().tx[0]);
        while spare.len() < 32 {
            spare.push(VecFrame::new(&b[..len]));
        }
    }
    println!(
        "tunneled {}, too-big sent {}, packets fragmented {}",
        stats.tunneled.get(),
        stats.too_big_sent.get(),
        stats.fragmented.get()
    );
    if baseline {
        println!("baseline: {done} packets made and moved, none processed");
    }
}

/// `frame` (a 60-byte TCP packet of the template) as a 1500-byte IPv4 packet in `out`, with DF
/// set or clear, its header checksum made again.
fn widen(frame: &[u8], out: &mut [u8], df: bool) {
    out[..54].copy_from_slice(&frame[..54]);
    let mut ip = Ipv4Packet::new_checked(&mut out[14..]).expect("the template is an IPv4 packet");
    ip.set_total_len(1500);
    ip.set_flags_frag(if df { ipv4::FLAG_DF } else { 0 });
    ip.fill_checksum();
}
