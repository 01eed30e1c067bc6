//! Reading a file that a config or an operator names (the config itself, a sync key file),
//! bounded: regular files only, opened without blocking, and no more than a stated size.
//!
//! A FIFO would block the reader until some writer came; `/dev/zero` would never end; a
//! directory reads as an error deep in the parser. Each is refused here, with a message that
//! says what the path is and never quotes what it holds.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest config file read: 16 MiB. A config of 1000 services of 64 backends each is about
/// 3 MiB of YAML; the cap keeps a wrong path (a log, a disk image) from filling memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Largest CA file read (an `https` health check's `ca`): 1 MiB, room for a few hundred
/// certificates.
pub const MAX_CA_BYTES: u64 = 1 << 20;

/// Largest key file read: 4 KiB. A sync key is 64 hex digits and a newline.
pub const MAX_KEY_BYTES: u64 = 4 << 10;

/// What kind of file `meta` describes, for messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Refuses anything but a regular file no larger than `max` bytes.
fn check(meta: &Metadata, max: u64) -> Result<(), String> {
    if !meta.file_type().is_file() {
        return Err(format!("{}, not a regular file", kind(meta)));
    }
    if meta.len() > max {
        return Err(format!("{} bytes, more than the {max} bytes read at most", meta.len()));
    }
    Ok(())
}

/// Reads `path` as UTF-8 text: a regular file of at most `max` bytes. The error says why not
/// (without the path: callers name it their own way) and never holds the file's content.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    // A first look at the path spares opening a device at all (opening some has effects);
    // the open file's own status below is what counts.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    check(&meta, max)?;
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    check(&file.metadata().map_err(|e| format!("cannot read: {e}"))?, max)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("more than the {max} bytes read at most (it grew while read)"));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch directory of this test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("sluice-readfile-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_a_small_regular_file() {
        let s = Scratch::new("small");
        let f = s.0.join("a.yaml");
        std::fs::write(&f, "ports: []\n").unwrap();
        assert_eq!(read_text(&f, 100).unwrap(), "ports: []\n");
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let s = Scratch::new("fifo");
        let f = s.0.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&f).status().unwrap();
        assert!(made.success());
        // Without the checks this blocks forever (no writer ever comes).
        let e = read_text(&f, MAX_KEY_BYTES).unwrap_err();
        assert!(e.contains("a FIFO, not a regular file"), "{e}");
    }

    #[test]
    fn refuses_devices_and_directories() {
        let e = read_text(Path::new("/dev/zero"), MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.contains("a character device"), "{e}");
        let s = Scratch::new("dir");
        let e = read_text(&s.0, MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn refuses_a_file_over_the_cap_without_quoting_it() {
        let s = Scratch::new("big");
        let f = s.0.join("big");
        std::fs::write(&f, "secret-".repeat(100)).unwrap();
        let e = read_text(&f, 64).unwrap_err();
        assert_eq!(e, "700 bytes, more than the 64 bytes read at most");
        std::fs::write(&f, b"ok\xff\xfesecret").unwrap();
        let e = read_text(&f, 64).unwrap_err();
        assert_eq!(e, "not UTF-8 text (byte 2)");
    }
}
