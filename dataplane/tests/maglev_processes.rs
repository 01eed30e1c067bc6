//! Two processes given the same backends build the same Maglev table: the ECMP property
//! (any appliance sends a flow to the same backend) depends on it. The parent builds a table,
//! runs this test binary again as a child to build its own, and compares digests.

use sluice_dataplane::hash::hash_bytes;
use sluice_dataplane::maglev::{Maglev, MaglevInput, DEFAULT_TABLE_SIZE};
use std::process::Command;

fn digest(reverse: bool) -> u64 {
    let mut ids: Vec<(Vec<u8>, u32)> = (0..300u32)
        .map(|i| (format!("198.19.{}.{}", i / 200, i % 200 + 1).into_bytes(), 1 + i % 5))
        .collect();
    if reverse {
        ids.reverse();
    }
    let inputs: Vec<MaglevInput<'_>> = ids.iter().map(|(id, w)| MaglevInput { id, weight: *w }).collect();
    let m = Maglev::build(&inputs, DEFAULT_TABLE_SIZE);
    // Digest of the backend *identity* in each slot, so list order does not matter.
    let named: Vec<u8> =
        m.slots().iter().flat_map(|&s| ids[usize::from(s)].0.iter().copied().chain([b';'])).collect();
    hash_bytes(&named, 0)
}

/// Run by the parent as a separate process; prints the digest of its table.
#[test]
#[ignore = "child process of same_table_in_two_processes"]
fn child_prints_digest() {
    println!("MAGLEV-DIGEST {:016x}", digest(true));
}

#[test]
fn same_table_in_two_processes() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--ignored", "--exact", "child_prints_digest", "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .split_once("MAGLEV-DIGEST ")
        .map(|(_, rest)| &rest[..16.min(rest.len())])
        .expect("child printed a digest");
    assert_eq!(
        line,
        format!("{:016x}", digest(false)),
        "the child (reversed config order) built another table"
    );
}
