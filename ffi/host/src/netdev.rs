//! An interface's IPv4 address and its up flag, set the way `ip addr add` and `ip link set
//! up` do for one address (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCSIFFLAGS` on a datagram
//! socket of this network namespace), and an IPv6 address added (`SIOCSIFADDR` on an IPv6
//! socket): what sluiced does for an exception path's TAP device.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
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
    socket_of(libc::AF_INET)
}

/// A datagram socket of `family`.
fn socket_of(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so OwnedFd may take it.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
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

/// Adds the IPv6 address `addr/prefix_len` to interface `name`, without duplicate address
/// detection (the port's address is the appliance's; the kernel side must use it at once).
/// Needs CAP_NET_ADMIN.
pub fn add_ipv6(name: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 128 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("prefix length {prefix_len}")));
    }
    let mut req = request(name)?;
    ioctl(&socket()?, libc::SIOCGIFINDEX, &mut req)?;
    // The interface exists (and its name is plain): its DAD switch is a file of that name.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0");
    // SAFETY: SIOCGIFINDEX has just written the union's index member.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    let mut req6 = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr { s6_addr: addr.octets() },
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: index,
    };
    let sock = socket_of(libc::AF_INET6)?;
    // SAFETY: `sock` is open for the whole call; SIOCSIFADDR on an IPv6 socket reads one
    // `struct in6_ifreq`, and `req6` is a valid one that lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut req6 as *mut libc::in6_ifreq) };
    match rc {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            e => Err(e),
        },
    }
}

/// Whether interface `name` has the IPv6 address `addr/prefix_len` (from the calling thread's
/// network namespace's `if_inet6`).
pub fn has_ipv6(name: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<bool> {
    let hex: String = addr.octets().iter().map(|b| format!("{b:02x}")).collect();
    let table = std::fs::read_to_string("/proc/thread-self/net/if_inet6")?;
    Ok(table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6 && f[0] == hex && u8::from_str_radix(f[2], 16) == Ok(prefix_len) && f[5] == name
    }))
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
            let v6: Ipv6Addr = "2001:db8:ff::1".parse().unwrap();
            assert!(!has_ipv6(tun.name(), v6, 64).unwrap());
            add_ipv6(tun.name(), v6, 64).unwrap();
            add_ipv6(tun.name(), v6, 64).unwrap();
            assert!(has_ipv6(tun.name(), v6, 64).unwrap());
            assert!(add_ipv6("no-such-if", v6, 64).is_err() && add_ipv6(tun.name(), v6, 129).is_err());
        })
        .join()
        .unwrap();
    }
}
