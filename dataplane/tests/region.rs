//! The session table in a session region (issue 24): a second table on the same file finds
//! the first one's sessions; a slot whose writer was killed mid-write is discarded and nothing
//! else is lost.

use sluice_dataplane::flow::Addr;
use sluice_dataplane::region::{Header, Opened, Region, LAYOUT_VERSION, SLOTS_AT};
use sluice_dataplane::session::{Insert, Recovered, Session, SessionKey, SessionTable, TcpState, Timeouts};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fresh directory under the system's temporary one, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CAPACITY: usize = 32;

fn open_region(path: &Path, seed: u64) -> (Arc<Region>, Opened) {
    let slots = SessionTable::slots_for(CAPACITY) as u64;
    let header = Header {
        layout: LAYOUT_VERSION,
        slots,
        capacity: CAPACITY as u64,
        seeds: SessionTable::seeds_of(seed),
        epoch_ns: 1,
    };
    let (region, opened) = Region::open(path, header, true).unwrap();
    (Arc::new(region), opened)
}

fn open(path: &Path, seed: u64) -> (SessionTable, Opened) {
    let (region, opened) = open_region(path, seed);
    (SessionTable::in_region(region, CAPACITY, Timeouts::default()), opened)
}

fn key(i: u32) -> SessionKey {
    SessionKey::flow(Addr::v4(Ipv4Addr::from(0xc612_0100 + i)), 40000 + i as u16, 3)
}

/// Fills the table's 64 slots half full, so that probe sequences run through each other.
fn fill(t: &SessionTable) -> Vec<(SessionKey, usize, Session)> {
    (0..CAPACITY as u32)
        .map(|i| {
            let (k, s) = (key(i), Session::new(i % 4, TcpState::Established, 100 + i));
            match t.insert(&k, t.hash(&k), &s) {
                Insert::Inserted(slot) => (k, slot, s),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn a_second_process_finds_the_first_ones_sessions() {
    let dir = Dir::new("region-attach");
    let path = dir.0.join("sessions");
    let (a, opened) = open(&path, 1);
    assert!(matches!(opened, Opened::Fresh { why: None }));
    let made = fill(&a);
    drop(a);
    // Another seed: the region's own seeds win, or no key would be found where it lies.
    let (b, opened) = open(&path, 2);
    assert!(matches!(opened, Opened::Attached));
    assert_eq!(b.recover(), Recovered { live: CAPACITY, torn: 0 });
    for (k, slot, s) in &made {
        assert_eq!(b.lookup(k, b.hash(k)), Some((*slot, *s)), "{k:?}");
    }
    for backend in 0..4 {
        assert_eq!(b.active(backend), CAPACITY as u32 / 4, "backend {backend}: counted again");
    }
    assert_eq!(b.service_active(3), CAPACITY as u32);
}

#[test]
fn a_slot_torn_by_a_killed_writer_is_discarded_and_nothing_else_is_lost() {
    let dir = Dir::new("region-torn");
    let path = dir.0.join("sessions");
    let (a, _) = open(&path, 1);
    let made = fill(&a);
    drop(a);
    // The writer of the 6th session was killed after taking its slot (state BUSY, the meta
    // word's bits 24..32) and before publishing it.
    let (_, torn_slot, _) = made[5];
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let at = (SLOTS_AT + torn_slot * 64) as u64;
    let mut meta = [0u8; 8];
    file.read_exact_at(&mut meta, at).unwrap();
    meta[3] = 1;
    file.write_all_at(&meta, at).unwrap();
    drop(file);

    let (b, _) = open(&path, 1);
    assert_eq!(b.recover(), Recovered { live: CAPACITY - 1, torn: 1 });
    for (i, (k, slot, s)) in made.iter().enumerate() {
        let want = if i == 5 { None } else { Some((*slot, *s)) };
        assert_eq!(b.lookup(k, b.hash(k)), want, "session {i}");
    }
    assert_eq!(b.active(1), CAPACITY as u32 / 4 - 1, "the torn session's backend counts one less");
    // Its flow makes a new session as any new flow does.
    let (k, _, s) = made[5];
    assert!(matches!(b.insert(&k, b.hash(&k), &s), Insert::Inserted(_)));
    // And once every session has expired, the sweep leaves no slot in use: the torn one was
    // made a tombstone it can clear (a slot left BUSY would stay in use for ever).
    let slots = b.slot_count();
    for _ in 0..3 {
        b.sweep(1 << 30, 0, slots, |_, _| {});
    }
    assert_eq!(b.sweep(1 << 30, 0, slots, |_, _| {}).visited, 0);
}

#[test]
fn a_table_of_another_size_starts_fresh() {
    let dir = Dir::new("region-size");
    let path = dir.0.join("sessions");
    let (a, _) = open(&path, 1);
    fill(&a);
    drop(a);
    let header = Header {
        layout: LAYOUT_VERSION,
        slots: SessionTable::slots_for(4 * CAPACITY) as u64,
        capacity: 4 * CAPACITY as u64,
        seeds: SessionTable::seeds_of(1),
        epoch_ns: 1,
    };
    let (region, opened) = Region::open(&path, header, true).unwrap();
    let why = match opened {
        Opened::Fresh { why: Some(why) } => why.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(why, "64 slots, the configured capacity makes 256");
    let t = SessionTable::in_region(Arc::new(region), 4 * CAPACITY, Timeouts::default());
    assert_eq!(t.recover(), Recovered::default());
    assert_eq!(t.lookup(&key(0), t.hash(&key(0))), None);
}

#[test]
fn held_syn_proxy_segments_outlive_the_process_and_torn_ones_are_freed() {
    use sluice_dataplane::synproxy::{HoldPool, HOLD_BYTES};
    let dir = Dir::new("region-hold");
    let path = dir.0.join("sessions");
    let region = |seed| open_region(&path, seed).0;
    let segment: Vec<u8> = (0..1400u32).map(|i| (i * 7) as u8).collect();
    {
        let (pool, kept) = HoldPool::in_region(region(1));
        assert_eq!(kept, 0, "a new region holds nothing");
        pool.hold(7, 0xabc, &segment, 100).unwrap();
        pool.hold(9, 0xdef, &segment[..60], 100).unwrap();
    }
    // The process was killed while writing slot 9's entry again: its state word says WRITING.
    let entry_bytes = (16 + HOLD_BYTES) as u64;
    let at = Header::hold_at(SessionTable::slots_for(CAPACITY) as u64) + 9 * entry_bytes;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    file.write_all_at(&1u64.to_le_bytes(), at).unwrap();
    drop(file);

    let (pool, kept) = HoldPool::in_region(region(2));
    assert_eq!(kept, 1, "slot 7's segment kept, slot 9's torn one freed");
    let mut out = vec![0u8; HOLD_BYTES];
    assert_eq!(pool.take(7, 0xabc, Some(&mut out)), Some(segment.len()));
    assert_eq!(&out[..segment.len()], &segment[..]);
    assert_eq!(pool.take(9, 0xdef, None), None);
    pool.hold(9, 0xdef, &segment[..60], 101).expect("the freed entry takes a segment again");
}
