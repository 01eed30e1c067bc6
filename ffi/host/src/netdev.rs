//! An interface's IPv4 address and its up flag, set the way `ip addr add` and `ip link set
//! up` do for one address (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCSIFFLAGS` on a datagram
//! socket of this network namespace): what sluiced does for an exception path's TAP device.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `ifreq` naming `name` (checked: 1 to IFNAMSIZ - 1 bytes, no NUL or `/`).
fn request(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() > crate::MAX_NAME_LEN || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: `ifreq` is plain data (a byte array and a union of integers and addresses), for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// A socket to address the interface ioctls to.
fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so OwnedFd may take it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One interface ioctl `op` on `req`.
fn ioctl(sock: &OwnedFd, op: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `sock` is an open socket for the whole call; the SIOC[GS]IF* requests read and
    // write one `struct ifreq`, and `req` is a valid, exclusively borrowed `ifreq` whose name
    // is NUL-terminated (`request` copied at most IFNAMSIZ - 1 bytes into zeroes).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and both are plain data;
    // the kernel reads a sockaddr_in out of the ifreq's sockaddr for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Gives interface `name` the address `addr/prefix_len` (its primary IPv4 address, which it
/// replaces) and brings it up. Needs CAP_NET_ADMIN.
pub fn set_ipv4_up(name: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("prefix length {prefix_len}")));
    }
    let sock = socket()?;
    let mut req = request(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)?;
    let mut req = request(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS has just written the union's flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Interface `name`'s primary IPv4 address and netmask, and whether it is up.
pub fn ipv4_of(name: &str) -> io::Result<(Ipv4Addr, Ipv4Addr, bool)> {
    let sock = socket()?;
    let read = |op, req: &mut libc::ifreq| -> io::Result<Ipv4Addr> {
        ioctl(&sock, op, req)?;
        // SAFETY: SIOCGIFADDR and SIOCGIFNETMASK have just written an AF_INET sockaddr_in
        // into the union (same size as the sockaddr member read here).
        let sin = unsafe { std::mem::transmute::<libc::sockaddr, libc::sockaddr_in>(req.ifr_ifru.ifru_addr) };
        Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
    };
    let addr = read(libc::SIOCGIFADDR, &mut request(name)?)?;
    let mask = read(libc::SIOCGIFNETMASK, &mut request(name)?)?;
    let mut req = request(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS has just written the union's flags member.
    let up = unsafe { req.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short != 0;
    Ok((addr, mask, up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_gets_its_address_and_comes_up() {
        // In a network namespace of this test's own (a thread's), on a TUN device of its own.
        std::thread::spawn(|| {
            // SAFETY: unshare(2) takes no pointers; it moves only this thread to a new network
            // namespace, which ends with it.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", io::Error::last_os_error());
            let tun = crate::Tun::create("sl-netdev0").unwrap();
            assert!(!ipv4_of(tun.name()).is_ok_and(|(_, _, up)| up));
            set_ipv4_up(tun.name(), Ipv4Addr::new(198, 18, 255, 1), 24).unwrap();
            assert_eq!(
                ipv4_of(tun.name()).unwrap(),
                (Ipv4Addr::new(198, 18, 255, 1), Ipv4Addr::new(255, 255, 255, 0), true)
            );
            assert!(set_ipv4_up("no-such-if", Ipv4Addr::new(198, 18, 255, 1), 24).is_err());
            assert!(set_ipv4_up(tun.name(), Ipv4Addr::new(198, 18, 255, 1), 33).is_err());
            assert!(set_ipv4_up("a/b", Ipv4Addr::new(198, 18, 255, 1), 24).is_err());
        })
        .join()
        .unwrap();
    }
}
