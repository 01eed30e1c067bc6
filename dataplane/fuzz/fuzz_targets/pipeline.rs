//! `pipeline::process` on arbitrary bytes.
//!
//! Input: byte 0 is a selector, the rest is the frame (at most 2048 bytes, `VecFrame`'s data
//! room). Selector bits 0-1: the rx port, 0..=3 (the snapshot has ports 0-2; 3 does not
//! exist). Bit 2: first make the frame's IPv4 header checksum (and ICMP checksum) valid, so
//! mutations get past the checksum checks. Bit 7: give the frame only `2 * bits[3..=6] + 3`
//! bytes of headroom (odd, 3..=33: one under and one over every tunnel's need) instead of 128.
//!
//! Asserts the contract (see `common::check_contract`): a verdict, never a panic; a frame grows
//! by at most a tunnel header; a `Tunnel` output is a valid outer IPv4 packet whose checksum
//! verifies, carrying the input's IP packet unchanged; replies are built in place.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::io::{Frame, VecFrame};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::pipeline::{process, Ctx, Resolve};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::synproxy::SynProxy;
use std::cell::RefCell;

thread_local! {
    static SNAP: RefCell<Snapshot> = RefCell::new(common::snapshot());
    // No service here is SYN-proxied; the proxy's state is only passed along.
    static PROXY: SynProxy = SynProxy::new([1, 2], [[3, 4], [5, 6]]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let rx_port = u16::from(sel & 3);
    let mut frame = frame[..frame.len().min(common::MAX_FRAME)].to_vec();
    if sel & 4 != 0 {
        common::fix_checksums(&mut frame);
    }
    let frame = &frame[..];
    let mut f = if sel & 0x80 != 0 {
        VecFrame::with_headroom(frame, 2 * usize::from((sel >> 3) & 15) + 3)
    } else {
        VecFrame::new(frame)
    };

    SNAP.with(|cell| {
        let mut resolve = Resolve::new();
        let learned = {
            let snap = cell.borrow();
            // A fresh table per input keeps runs reproducible.
            let table = SessionTable::new(64, Timeouts::default(), 1);
            let mut sched = SchedState::new(0, 1);
            let v = PROXY.with(|proxy| {
                let mut cx = Ctx::new(&snap, &table, proxy, &mut sched, 1_000_000_000, &mut resolve);
                let v = process(&mut cx, rx_port, &mut f);
                (v, cx.learned)
            });
            let (v, learned) = v;
            common::check_contract(&snap, rx_port, frame, v, f.data());
            for &nh in &resolve {
                assert!(
                    usize::from(nh) < snap.nexthops.len(),
                    "resolve names next hop {nh} that does not exist"
                );
            }
            learned
        };
        // Learning a MAC or claiming an ARP request mutates the snapshot: start the next input
        // from the same state.
        if learned > 0 || !resolve.is_empty() {
            *cell.borrow_mut() = common::snapshot();
        }
    });
});
