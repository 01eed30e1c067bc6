//! Host-side system calls for `sluice-agent` and sluiced, the only place with `unsafe` for
//! them: TUN devices (here) and interface addresses ([`netdev`]).
//!
//! [`Tun`] creates a Linux TUN device (`IFF_TUN | IFF_NO_PI`): every `read` on its file gives
//! one IP packet the kernel sent out of the device, every `write` hands one IP packet to the
//! kernel as if it had arrived on it. The device is not persistent: it disappears when the
//! file is closed. It may be moved to another network namespace (`ip link set NAME netns X`)
//! and the file keeps working; after that its name no longer resolves here, so keep the file.
//!
//! Raw IP sockets need no wrapper: `socket2` has a safe API for them.

pub mod netdev;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// The longest interface name Linux accepts (IFNAMSIZ minus the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// A TUN device this process created, and the file to read and write its packets.
#[derive(Debug)]
pub struct Tun {
    name: String,
    file: File,
}

impl Tun {
    /// Creates the TUN device `name` (IFF_TUN | IFF_NO_PI) in this process's network namespace.
    /// Needs CAP_NET_ADMIN. Fails if `name` is empty, too long, contains a NUL or `/`, or names
    /// a device that exists and is not a TUN device this process may attach to.
    pub fn create(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.bytes().any(|b| b == 0 || b == b'/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
        }
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;

        let mut req = libc::ifreq {
            ifr_name: [0; libc::IFNAMSIZ],
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            },
        };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: `file` is an open descriptor of /dev/net/tun for the whole call; TUNSETIFF
        // reads and writes one `struct ifreq`, and `req` is a valid, initialised, exclusively
        // borrowed `ifreq` (its name NUL-terminated: at most IFNAMSIZ - 1 bytes were copied
        // into a zeroed array) that outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req as *mut libc::ifreq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel writes back the device's name (the same one, since it had no `%d`).
        let len = req.ifr_name.iter().position(|&c| c == 0).unwrap_or(libc::IFNAMSIZ);
        let name = req.ifr_name[..len].iter().map(|&c| c as u8 as char).collect();
        Ok(Tun { name, file })
    }

    /// The device's name as the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's file: `read` one packet out of it, `write` one packet into it
    /// (`&File` implements `Read` and `Write`, so it can be shared between threads).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Splits into the name and the file.
    pub fn into_parts(self) -> (String, File) {
        (self.name, self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_before_any_system_call() {
        for bad in ["", "a/b", "nul\0x", "a-name-far-too-long"] {
            let e = Tun::create(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    /// Creating a device needs root (CAP_NET_ADMIN) and /dev/net/tun; skipped otherwise.
    #[test]
    fn creates_a_tun_when_allowed() {
        let name = format!("slt{}", std::process::id() % 100_000);
        match Tun::create(&name) {
            Ok(t) => {
                assert_eq!(t.name(), name);
                assert!(std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
                drop(t);
                // Not persistent: closing the file removes the device.
                assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
            }
            Err(e) => eprintln!("skipped: cannot create a TUN device here: {e}"),
        }
    }
}
