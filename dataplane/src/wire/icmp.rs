//! ICMPv4 (RFC 792): the fields an echo responder needs.

use super::{checksum, read_u16, write_u16, WireError};

pub const HEADER_LEN: usize = 8;
pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const CODE_PORT_UNREACHABLE: u8 = 3;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
}

/// A view of an ICMP message (the whole IP payload).
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The checksum covers the whole message.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Turns an echo request into an echo reply, updating the checksum incrementally.
    pub fn make_echo_reply(&mut self) {
        let b = self.buffer.as_mut();
        let old = read_u16(b, field::TYPE);
        b[field::TYPE] = TYPE_ECHO_REPLY;
        let new = read_u16(b, field::TYPE);
        let c = checksum::update16(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
    }
}

/// Writes an echo request or reply header into `b` (payload after 8 bytes) with its checksum.
pub fn emit_echo(b: &mut [u8], msg_type: u8, ident: u16, seq: u16) {
    b[field::TYPE] = msg_type;
    b[field::CODE] = 0;
    write_u16(b, field::CHECKSUM, 0);
    write_u16(b, 4, ident);
    write_u16(b, 6, seq);
    let c = checksum::checksum(b);
    write_u16(b, field::CHECKSUM, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_echo_matches_scapy() {
        // scapy: ICMP(type=8, id=0x77, seq=3) / "ping"
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(b"ping");
        emit_echo(&mut b, TYPE_ECHO_REQUEST, 0x77, 3);
        assert_eq!(b, [0x08, 0x00, 0x18, 0xb5, 0x00, 0x77, 0x00, 0x03, 0x70, 0x69, 0x6e, 0x67]);
    }

    // Echo request id 0x1234 seq 1, payload "abcd", checksum 0x0f1c... computed below.
    fn echo_request() -> Vec<u8> {
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    #[test]
    fn echo_reply_checksum_is_valid() {
        let mut m = echo_request();
        let mut p = IcmpPacket::new_checked(&mut m[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        p.make_echo_reply();
        assert_eq!(p.msg_type(), TYPE_ECHO_REPLY);
        assert!(p.verify_checksum());
        // Same as a recomputation from scratch.
        let mut fresh = m.clone();
        fresh[2] = 0;
        fresh[3] = 0;
        let c = checksum::checksum(&fresh);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), c);
    }

    #[test]
    fn truncated_and_corrupt() {
        let m = echo_request();
        assert_eq!(IcmpPacket::new_checked(&m[..7]).unwrap_err(), WireError::Truncated);
        let mut bad = m.clone();
        bad[9] ^= 0xff;
        assert!(!IcmpPacket::new_checked(&bad[..]).unwrap().verify_checksum());
    }
}
