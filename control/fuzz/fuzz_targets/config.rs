//! `Config::parse` on config documents: arbitrary YAML in every field.
//!
//! Input: byte 0 is the mode. Mode bit 0 clear: the rest is the document's text (lossy UTF-8).
//! Set: byte 1 picks a seed (one of `pipelines/*.yaml`, compiled in, each service given
//! `table_size: 251`: see `small_tables`) and the rest is a list
//! of edits, 3 bytes each, `slot_lo, slot_hi, what`, at most 8 (mode bits 1-3 + 1). A slot is
//! any key or value of the seed: a stretch of a line between the YAML delimiters `: `, `- `,
//! `[`, `]`, `{`, `}`, `,` and a comment. `what` below `FRAGMENTS.len()` puts that fragment in
//! the slot (numbers out of range, NaN and infinities, control characters, deep nesting,
//! aliases that expand a billion times, tags, merge keys, block scalars...); the next values
//! delete the slot's line, duplicate it, indent it, or put the bytes after the edit list in
//! the slot (lossy UTF-8; then the list ends there).
//!
//! Asserts: `Config::parse` returns, never panics (libFuzzer's `-timeout` and `-rss_limit_mb`
//! catch hangs and runaway memory); a refusal has at least one error, and each names the file
//! and either a position or a field.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::config::Config;

const FILE: &str = "fuzz.yaml";

const SEEDS: [&str; 3] = [
    include_str!("../../../pipelines/dsr-ipip.yaml"),
    include_str!("../../../pipelines/lab.yaml"),
    include_str!("../../../pipelines/nat-gre-vpc.yaml"),
];

/// Replacements for one key or value.
const FRAGMENTS: &[&str] = &[
    "-1",
    "0",
    "-0.0",
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "1e300",
    "-1e300",
    "1e-320",
    "0.0000001",
    "255",
    "256",
    "65535",
    "65536",
    "65537",
    "4194301",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "0x7fffffff",
    "0o777",
    "1_000",
    "+12",
    "1.5",
    "true",
    "no",
    "~",
    "null",
    "''",
    "\"\"",
    "\"\\0\\a\\b\\e\\x7f\\u200b\\U0001F600\"",
    "\"a\\nb\\rc\\td\"",
    "\"\\uD800\"",
    "[]",
    "{}",
    "[1, 2, 3]",
    "{a: 1}",
    "0.0.0.0",
    "255.255.255.255",
    "300.1.1.1",
    "1.2.3.4/33",
    "1.2.3.4/-1",
    "::1",
    "fe80::1%eth0",
    "02:00:00:00:00:01",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "zz:00:00:00:00:00",
    "0000:03:00.0",
    "net_null0",
    "/dev/stdin",
    "/proc/self/fd/0",
    "/tmp/fifo",
    "1.2.3.4:99999",
    "[::]:9100",
    "tcp",
    "udp",
    "icmp",
    "dsr",
    "nat",
    "ipip",
    "gre",
    "maglev",
    "round_robin",
    "least_connections",
    "ip_hash",
    "remap",
    "reset",
    "!!binary aGVsbG8=",
    "!!float 1",
    "!!str 1",
    "!custom x",
    "&a 1",
    "*a",
    "*undefined",
    "<<: {a: 1}",
    "? [a]",
    "|\n  block\n  scalar",
    ">-\n  folded",
    "'it''s'",
    "\"unterminated",
    "[unterminated",
    "{a: 1, a: 2}",
    "- - - -",
    "\t",
    "%YAML 1.2",
    "---\n...",
    // A billion laughs: nine levels of nine aliases.
    "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], \
     &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], \
     &g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]",
    // The same with mappings, which serde expands into owned values.
    "{a: &a {x: 1, y: 1}, b: &b {p: *a, q: *a, r: *a}, c: &c {p: *b, q: *b, r: *b}, \
     d: &d {p: *c, q: *c, r: *c}, e: &e {p: *d, q: *d, r: *d}, f: {p: *e, q: *e, r: *e}}",
];

/// The edits after the fragments: what they do to the slot.
const DELETE_LINE: usize = FRAGMENTS.len();
const DUPLICATE_LINE: usize = FRAGMENTS.len() + 1;
const INDENT_LINE: usize = FRAGMENTS.len() + 2;
const RAW_TAIL: usize = FRAGMENTS.len() + 3;
const DEEP_LIST: usize = FRAGMENTS.len() + 4;
const DEEP_MAP: usize = FRAGMENTS.len() + 5;
const LONG_STRING: usize = FRAGMENTS.len() + 6;
const EDIT_KINDS: usize = FRAGMENTS.len() + 7;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Some((&seed, edits)) = rest.split_first() else { return };
        let seeds = SMALL.with(|s| s.clone());
        edit(&seeds[usize::from(seed) % SEEDS.len()], edits, usize::from((mode >> 1) & 7) + 1)
    };
    check(&text);
});

thread_local! {
    static SMALL: [String; 3] = SEEDS.map(small_tables);
}

/// The seed with `table_size: 251` in every service (after its `vip:` line, replacing one it
/// has). Every valid document builds its services' Maglev tables, by default of 65,537 slots:
/// ~5 ms per document with coverage instrumentation, 30 times the parsing. The field stays
/// an edit slot like any other (the fragments include 65537 and the largest size).
fn small_tables(seed: &str) -> String {
    let mut out = String::with_capacity(seed.len() + 256);
    for line in seed.split_inclusive('\n') {
        if line.trim_start().starts_with("table_size:") {
            continue;
        }
        out.push_str(line);
        if let Some(indent) = line.strip_suffix('\n').and_then(|l| l.find("vip:")) {
            out.push_str(&format!("{}table_size: 251\n", " ".repeat(indent)));
        }
    }
    out
}

fn check(text: &str) {
    let Err(errs) = Config::parse(text, FILE) else { return };
    assert!(!errs.0.is_empty(), "a refusal without an error");
    for e in &errs.0 {
        assert_eq!(e.file, FILE, "error names another file: {e}");
        assert!(e.pos.is_some() || !e.field.is_empty(), "error with neither position nor field: {e}");
    }
    // The message is what a user sees: it must render.
    let _ = errs.to_string();
}

/// Applies up to `max` 3-byte edits to `seed`.
fn edit(seed: &str, edits: &[u8], max: usize) -> String {
    let slots = slots(seed);
    let mut chosen: Vec<(std::ops::Range<usize>, usize)> = Vec::new();
    let mut tail: &[u8] = &[];
    for (i, e) in edits.chunks_exact(3).take(max).enumerate() {
        let slot = usize::from(u16::from_le_bytes([e[0], e[1]])) % slots.len();
        let what = usize::from(e[2]) % EDIT_KINDS;
        chosen.push((slots[slot].clone(), what));
        if what == RAW_TAIL {
            tail = &edits[3 * (i + 1)..];
            break;
        }
    }
    // Back to front, so that earlier ranges stay valid; one edit per slot.
    chosen.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    chosen.dedup_by_key(|(r, _)| r.start);
    let mut text = seed.to_string();
    let mut last_line = usize::MAX;
    for (r, what) in chosen {
        // Found in the seed: edits so far were all on later lines, so up to the end of this
        // one the text is still the seed's.
        let line = seed[..r.start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = seed[r.start..].find('\n').map_or(seed.len(), |i| r.start + i + 1);
        // One edit per line: a line edit (delete, duplicate, indent) moves or removes the
        // slots before it on its line, which are edited after it.
        if line == last_line {
            continue;
        }
        match what {
            DELETE_LINE => text.replace_range(line..line_end, ""),
            DUPLICATE_LINE => {
                let copy = text[line..line_end].to_string();
                text.insert_str(line_end, &copy);
            }
            INDENT_LINE => text.insert_str(line, "  "),
            RAW_TAIL => text.replace_range(r, &String::from_utf8_lossy(tail)),
            DEEP_LIST | DEEP_MAP => {
                let depth = 100 + 40 * (r.len() + r.start % 256);
                let (open, close) = if what == DEEP_LIST { ("[", "]") } else { ("{a: ", "}") };
                text.replace_range(r, &format!("{}1{}", open.repeat(depth), close.repeat(depth)));
            }
            LONG_STRING => text.replace_range(r, &"x".repeat(70_000)),
            f => text.replace_range(r, FRAGMENTS[f]),
        }
        last_line = line;
    }
    text
}

/// Every key and value of a YAML document in block and flow style: the stretches of each
/// line between `: `, `- `, brackets, braces, commas and a comment, spaces trimmed.
fn slots(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let b = line.as_bytes();
        let mut start = 0;
        let mut i = 0;
        let mut quoted = None;
        while i <= b.len() {
            let c = b.get(i).copied().unwrap_or(b'\n');
            let end = match (quoted, c) {
                (Some(q), c) if c == q => {
                    quoted = None;
                    None
                }
                (Some(_), b'\n') => Some(1),
                (Some(_), _) => None,
                (None, b'"' | b'\'') => {
                    quoted = Some(c);
                    None
                }
                (None, b'#' | b'\n' | b'\r') => Some(usize::MAX),
                (None, b'[' | b']' | b'{' | b'}' | b',') => Some(1),
                (None, b':' | b'-') if matches!(b.get(i + 1), Some(b' ' | b'\n') | None) => Some(2),
                _ => None,
            };
            if let Some(skip) = end {
                let s = &line[start..i];
                let lead = s.len() - s.trim_start().len();
                if !s.trim().is_empty() {
                    out.push(line_start + start + lead..line_start + start + lead + s.trim().len());
                }
                if skip == usize::MAX {
                    break;
                }
                i += skip;
                start = i;
                continue;
            }
            i += 1;
        }
        line_start += line.len();
    }
    out
}
