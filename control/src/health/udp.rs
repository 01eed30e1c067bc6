//! The `udp` check: a datagram sent from a fresh connected socket, and one reply awaited
//! within the timeout. It passes on any reply or, with `expect`, on a reply that contains
//! those bytes. An ICMP port unreachable (the connected socket's ECONNREFUSED) fails at once.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// The largest payload sent: what one IPv4 datagram can carry.
pub const MAX_PAYLOAD: usize = 65_507;

/// A `udp` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// The datagram's payload.
    pub send: Vec<u8>,
    /// Bytes the reply must contain (`None`: any reply passes).
    pub expect: Option<Vec<u8>>,
}

/// Bytes from hex digits, in pairs, with optional whitespace between pairs.
pub fn hex(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        if word.len() % 2 != 0 {
            return Err(format!("{word:?}: an odd number of hex digits"));
        }
        for pair in word.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).map_err(|_| format!("{word:?}: not hex digits"))?;
            out.push(u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not a hex byte"))?);
        }
    }
    Ok(out)
}

/// One probe: `Ok` or why it failed.
pub fn probe(addr: SocketAddr, check: &UdpCheck, timeout: Duration) -> Result<(), String> {
    let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(any).map_err(|e| format!("socket: {e}"))?;
    s.connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).map_err(|e| format!("socket: {e}"))?;
    s.send(&check.send).map_err(|e| reason(e, timeout, "send"))?;
    let mut buf = vec![0u8; 65_536];
    let n = s.recv(&mut buf).map_err(|e| reason(e, timeout, "receive"))?;
    let Some(want) = &check.expect else { return Ok(()) };
    if want.is_empty() || buf[..n].windows(want.len()).any(|w| w == want.as_slice()) {
        Ok(())
    } else {
        Err(format!("reply ({n} bytes) lacks the expected {} bytes", want.len()))
    }
}

/// A short reason for a failed send or receive.
fn reason(e: std::io::Error, timeout: Duration, what: &str) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused (ICMP port unreachable)".into(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("no reply within {timeout:?}"),
        _ => format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const T: Duration = Duration::from_secs(5);

    /// A UDP server on loopback answering one datagram with `prefix` and the datagram.
    fn echo(prefix: &'static [u8]) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, peer) = s.recv_from(&mut buf).unwrap();
            s.send_to(&[prefix, &buf[..n]].concat(), peer).unwrap();
        });
        addr
    }

    fn check(send: &[u8], expect: Option<&[u8]>) -> UdpCheck {
        UdpCheck { send: send.to_vec(), expect: expect.map(<[u8]>::to_vec) }
    }

    #[test]
    fn any_reply_passes_without_expect() {
        assert_eq!(probe(echo(b""), &check(b"ping", None), T), Ok(()));
    }

    #[test]
    fn the_reply_must_hold_the_expected_bytes() {
        assert_eq!(probe(echo(b"be1:"), &check(b"ping", Some(b"1:pi")), T), Ok(()));
        assert_eq!(
            probe(echo(b"be1:"), &check(b"ping", Some(b"pong")), T),
            Err("reply (8 bytes) lacks the expected 4 bytes".into())
        );
    }

    #[test]
    fn a_closed_port_is_refused_and_silence_times_out() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let short = Duration::from_millis(200);
        assert_eq!(probe(addr, &check(b"x", None), short), Err("no reply within 200ms".into()));
        drop(s);
        assert_eq!(probe(addr, &check(b"x", None), T), Err("refused (ICMP port unreachable)".into()));
    }

    #[test]
    fn hex_payloads() {
        assert_eq!(hex("00ff 10").unwrap(), vec![0, 255, 16]);
        assert_eq!(hex("").unwrap(), Vec::<u8>::new());
        assert!(hex("abc").unwrap_err().contains("odd"));
        assert!(hex("zz").unwrap_err().contains("not a hex byte"));
        assert!(hex("éé").is_err());
    }
}
