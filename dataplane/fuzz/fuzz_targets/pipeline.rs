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
//!
//! State: one snapshot, session table and SYN proxy per process (building a table per input
//! cost ~300 µs, the most of an input's time). Every input starts from the same state: the
//! table is emptied before it (`common::empty_table`), and the snapshot's next hops are put
//! back as built (`NextHop::forget`: learning a MAC or claiming an ARP request changes them). `FUZZ_CHECK_FRESH=1` runs each input
//! again on state built afresh and asserts the same outcome.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::io::{Frame, VecFrame};
use sluice_dataplane::pipeline::{process, Ctx, Resolve, Verdict};
use sluice_dataplane::sched::SchedState;
use sluice_dataplane::session::{SessionTable, Timeouts};
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::synproxy::SynProxy;
use sluice_dataplane::testkit;
use std::cell::RefCell;

struct State {
    snap: Snapshot,
    table: SessionTable,
    // No service here is SYN-proxied; the proxy's state is only passed along.
    proxy: SynProxy,
}

impl State {
    fn new() -> State {
        State {
            snap: common::snapshot(),
            table: SessionTable::new(64, Timeouts::default(), 1),
            proxy: testkit::synproxy(),
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

/// What an input did: the verdict, the frame after it, the next hops to resolve, MACs learned.
type Outcome = (Verdict, Vec<u8>, Vec<u16>, u32);

fn run(st: &State, rx_port: u16, frame: &[u8], headroom: Option<usize>) -> Outcome {
    let mut f = match headroom {
        Some(h) => VecFrame::with_headroom(frame, h),
        None => VecFrame::new(frame),
    };
    let mut resolve = Resolve::new();
    let mut sched = SchedState::new(0, 1);
    let mut cx = Ctx::new(&st.snap, &st.table, &st.proxy, &mut sched, 1_000_000_000, &mut resolve);
    let v = process(&mut cx, rx_port, &mut f);
    let learned = cx.learned;
    common::check_contract(&st.snap, rx_port, frame, v, f.data());
    for &nh in &resolve {
        assert!(usize::from(nh) < st.snap.nexthops.len(), "resolve names next hop {nh} that does not exist");
    }
    (v, f.data().to_vec(), resolve.to_vec(), learned)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let rx_port = u16::from(sel & 3);
    let mut frame = frame[..frame.len().min(common::MAX_FRAME)].to_vec();
    if sel & 4 != 0 {
        common::fix_checksums(&mut frame);
    }
    let headroom = (sel & 0x80 != 0).then(|| 2 * usize::from((sel >> 3) & 15) + 3);

    STATE.with(|cell| {
        let st = cell.borrow();
        // Learning a MAC or claiming an ARP request changes the snapshot's next hops.
        common::forget_neighbors(&st.snap);
        common::empty_table(&st.table);
        let out = run(&st, rx_port, &frame, headroom);
        if common::check_fresh() {
            assert_eq!(run(&State::new(), rx_port, &frame, headroom), out, "fresh state, other outcome");
        }
    });
});
