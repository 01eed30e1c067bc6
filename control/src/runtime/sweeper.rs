//! The session table's expiry walk, a slice per control-loop tick; with session sync, it also
//! feeds the syncer what it walks past.

use crate::peers::{self, ServiceIndex, Syncer};
use crate::report::Totals;
use sluice_dataplane::session::SessionTable;
use sluice_dataplane::snapshot::Snapshot;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Walks the session table in slices from the control thread: a full pass a second, expiring
/// idle sessions; each full pass counts the live ones and sets the table's "full" flag.
#[derive(Debug, Default)]
pub(super) struct Sweeper {
    cursor: usize,
    live_in_pass: usize,
    pub(super) live: usize,
    expired: u64,
    /// The same two figures, for the metrics endpoint.
    pub(super) shared_live: Arc<std::sync::atomic::AtomicU64>,
    pub(super) shared_expired: Arc<std::sync::atomic::AtomicU64>,
}

/// Slices per full pass (the control loop runs every 50 ms).
pub(super) const SWEEP_SLICES: usize = 20;

impl Sweeper {
    /// One slice of the pass; with session sync, the slice's live and expired sessions go to
    /// the syncer (which sends what is due at the slice's end).
    pub(super) fn step(&mut self, table: &SessionTable, now: u32, sync: Option<(&mut Syncer, &Snapshot)>) {
        let slots = table.slot_count();
        let chunk = slots.div_ceil(SWEEP_SLICES);
        let s = match sync {
            Some((syncer, snap)) => {
                let ix = ServiceIndex::new(snap);
                let slice = self.cursor / chunk.max(1);
                let cell = std::cell::RefCell::new(&mut *syncer);
                let s = table.sweep_with(
                    now,
                    self.cursor,
                    chunk,
                    |k, x| cell.borrow_mut().expired(&ix, k, x, now),
                    |k, x| cell.borrow_mut().live(table, &ix, slice, k, x, now),
                );
                syncer.slice_done(slice, now, peers::unix_ms());
                syncer.receive(table, &ix, now, peers::unix_ms());
                s
            }
            None => table.sweep(now, self.cursor, chunk, |_, _| {}),
        };
        self.expired += s.expired as u64;
        self.shared_expired.store(self.expired, Ordering::Relaxed);
        self.live_in_pass += s.live;
        self.cursor += chunk;
        if self.cursor >= slots {
            self.cursor = 0;
            self.live = self.live_in_pass;
            self.shared_live.store(self.live as u64, Ordering::Relaxed);
            self.live_in_pass = 0;
            table.set_full(self.live >= table.capacity());
        }
    }

    pub(super) fn report(&self, t: &mut Totals) {
        t.sessions_live = self.live as u64;
        t.sessions_expired = self.expired;
    }
}
