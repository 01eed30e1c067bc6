//! Telling BIRD 2 what to announce: sluiced writes the include files BIRD's static protocols
//! read (one per family: a static protocol has one channel), then asks BIRD to `configure` over its control socket (BIRD keeps its BGP and BFD
//! sessions through a reconfiguration; a config it cannot read leaves the old one running).
//!
//! The control socket speaks lines of a four-digit code, then `-` (more follow) or a space
//! (the last), then text. Codes 0xxx are success; 8xxx and 9xxx errors.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a configure may take before it is given up (BIRD answers in ~100 ms).
const TIMEOUT: Duration = Duration::from_secs(5);

/// The include file of the IPv6 VIPs beside `include` (the IPv4 VIPs'): its name with `6`
/// before the extension (`vips.conf`: `vips6.conf`).
pub fn ipv6_include(include: &Path) -> PathBuf {
    let stem = include.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match include.extension() {
        Some(ext) => format!("{stem}6.{}", ext.to_string_lossy()),
        None => format!("{stem}6"),
    };
    include.with_file_name(name)
}

/// Writes `text` to `path` whole: to a temporary file beside it, then renamed over it, so that
/// BIRD never reads half a file.
pub fn write_whole(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("sluiced-tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Asks the BIRD at control socket `socket` to re-read its configuration; its last reply line
/// on success, the error it gave otherwise.
pub fn configure(socket: &Path) -> Result<String, String> {
    let mut lines = ask(socket, "configure")?;
    reply(&mut lines)
}

/// Connects to the control socket, takes BIRD's greeting and sends `command`: the reader of
/// its answer (every read and write bounded by [`TIMEOUT`]).
fn ask(socket: &Path, command: &str) -> Result<BufReader<UnixStream>, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("BIRD at {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    reply(&mut lines)?; // the greeting
    (&stream).write_all(format!("{command}\n").as_bytes()).map_err(|e| format!("BIRD: {e}"))?;
    Ok(lines)
}

/// BIRD's protocols of type BGP: (name, up), where up is BIRD's `Established`.
pub fn bgp_sessions(socket: &Path) -> Result<Vec<(String, bool)>, String> {
    let mut lines = ask(socket, "show protocols")?;
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let mut line = String::new();
        if lines.read_line(&mut line).map_err(|e| format!("BIRD: {e}"))? == 0 {
            break;
        }
        if let Some(s) = bgp_line(&line) {
            out.push(s);
        }
        if line.starts_with("0000") {
            break;
        }
    }
    Ok(out)
}

/// One line of `show protocols` (`1002-name BGP table state since info`, or without the
/// code on later lines): the BGP protocol's name and whether it is Established.
fn bgp_line(line: &str) -> Option<(String, bool)> {
    let body = match line.get(..5) {
        Some(code) if code[..4].bytes().all(|b| b.is_ascii_digit()) => &line[5..],
        _ => line,
    };
    let mut words = body.split_whitespace();
    let (name, proto) = (words.next()?, words.next()?);
    (proto == "BGP").then(|| (name.to_string(), body.contains("Established")))
}

/// Reads one reply (up to its last line): its last line's text if its code is a success.
fn reply(lines: &mut impl BufRead) -> Result<String, String> {
    for _ in 0..1000 {
        let mut line = String::new();
        if lines.read_line(&mut line).map_err(|e| format!("BIRD: {e}"))? == 0 {
            return Err("BIRD closed its control socket".into());
        }
        let line = line.trim_end();
        let coded = line.get(..4).is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()));
        // The last line of a reply: a code then a space (or nothing); others go on.
        if coded && matches!(line.as_bytes().get(4), Some(b' ') | None) {
            return if line.starts_with('8') || line.starts_with('9') {
                Err(format!("BIRD: {line}"))
            } else {
                Ok(line.to_string())
            };
        }
    }
    Err("BIRD: a reply of more than 1000 lines".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn replies_end_at_a_line_without_a_dash() {
        let mut ok = Cursor::new("0002-Reading configuration from /etc/bird.conf\n0003 Reconfigured\nrest");
        assert_eq!(reply(&mut ok).unwrap(), "0003 Reconfigured");
        let mut bad = Cursor::new("0002-Reading configuration from x\n8002 x:3:1 syntax error\n");
        assert_eq!(reply(&mut bad).unwrap_err(), "BIRD: 8002 x:3:1 syntax error");
        let mut cut = Cursor::new("0002-Reading\n");
        assert!(reply(&mut cut).unwrap_err().contains("closed"));
        let mut greeting = Cursor::new("0001 BIRD 2.0.12 ready.\n");
        assert_eq!(reply(&mut greeting).unwrap(), "0001 BIRD 2.0.12 ready.");
    }

    #[test]
    fn bgp_protocols_and_their_state() {
        let up = "1002-upstream  BGP        ---        up     02:10:05.123  Established   \n";
        assert_eq!(bgp_line(up), Some(("upstream".into(), true)));
        let down =
            " peer2    BGP        ---        start  02:10:05.123  Active        Socket: Connection refused\n";
        assert_eq!(bgp_line(down), Some(("peer2".into(), false)));
        assert_eq!(bgp_line("1002-vips       Static     master4    up     02:10:05.123\n"), None);
        assert_eq!(bgp_line("2002-Name       Proto      Table      State  Since         Info\n"), None);
    }

    #[test]
    fn the_ipv6_include_is_beside_the_ipv4_one() {
        assert_eq!(ipv6_include(Path::new("/run/sluice/vips.conf")), Path::new("/run/sluice/vips6.conf"));
        assert_eq!(ipv6_include(Path::new("/run/vips")), Path::new("/run/vips6"));
    }

    #[test]
    fn the_include_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("sluice-bird-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vips.conf");
        write_whole(&path, "route 198.18.10.1/32 blackhole;\n").unwrap();
        write_whole(&path, "").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(!path.with_extension("sluiced-tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
