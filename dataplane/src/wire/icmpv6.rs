//! ICMPv6 (RFC 4443): the message view, the types and codes, the checksum (over the IPv6
//! pseudo-header, so it needs the addresses of the IPv6 header carrying the message) and the
//! echo responder. Error messages and their quotes are in `icmpv6_error`, Neighbor Discovery
//! in `ndisc`.

use super::ipv6::NEXT_ICMPV6;
use super::{checksum, read_u16, write_u16, WireError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 8;

pub const TYPE_DEST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
pub const TYPE_ROUTER_ADVERT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;

/// Destination unreachable codes (RFC 4443 3.1).
pub const CODE_NO_ROUTE: u8 = 0;
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
pub const CODE_ADDR_UNREACHABLE: u8 = 3;
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// Time exceeded codes (RFC 4443 3.3).
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
pub const CODE_REASSEMBLY_TIME_EXCEEDED: u8 = 1;
/// Parameter problem codes (RFC 4443 3.4); bytes 4..8 point at the offending octet.
pub const CODE_ERRONEOUS_HEADER: u8 = 0;
pub const CODE_UNRECOGNIZED_NEXT_HEADER: u8 = 1;
pub const CODE_UNRECOGNIZED_OPTION: u8 = 2;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: core::ops::Range<usize> = 4..8;
}

/// A view of an ICMPv6 message: the upper layer of its IPv6 packet, exactly (the checksum
/// covers the message's length, so no link padding).
#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Checks that the 8-byte header (type, code, checksum, four type-specific bytes) fits.
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

    /// Header bytes 4..8: an echo's identifier and sequence number, packet too big's MTU, a
    /// parameter problem's pointer, unused elsewhere.
    pub fn rest(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[4], b[5], b[6], b[7]]
    }

    /// Packet too big's MTU (bytes 4..8); `None` for other messages.
    pub fn mtu(&self) -> Option<u32> {
        (self.msg_type() == TYPE_PACKET_TOO_BIG).then(|| u32::from_be_bytes(self.rest()))
    }

    /// Whether an error message (types 0 to 127, RFC 4443 2.1), not an informational one.
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }

    /// The bytes after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The checksum covers the IPv6 pseudo-header (`src`, `dst` of the carrying packet) and
    /// the whole message.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        verify(self.buffer.as_ref(), src, dst)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    pub fn set_rest(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&rest);
    }

    /// Recomputes the checksum from scratch over the pseudo-header and the message.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        fill_checksum(self.buffer.as_mut(), src, dst);
    }

    /// Turns an echo request into an echo reply, updating the checksum incrementally (the
    /// reply swaps the addresses, which leaves the pseudo-header's sum as it was).
    pub fn make_echo_reply(&mut self) {
        let b = self.buffer.as_mut();
        let old = read_u16(b, field::TYPE);
        b[field::TYPE] = TYPE_ECHO_REPLY;
        let new = read_u16(b, field::TYPE);
        let c = checksum::update16(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
    }

    /// Updates the checksum for a change of the carrying packet's source or destination
    /// address from `old` to `new` (a NAT66 translation of the outer header): the
    /// pseudo-header is covered.
    pub fn update_checksum_for_address(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        update_checksum_for_address(self.buffer.as_mut(), old, new);
    }
}

/// Sum of the pseudo-header and the message `m`.
fn sum(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u32 {
    let ph = checksum::pseudo_header_v6(src.octets(), dst.octets(), NEXT_ICMPV6, m.len() as u32);
    checksum::combine(ph, checksum::sum(m))
}

/// Whether the message `m` carried from `src` to `dst` has a right checksum.
pub(super) fn verify(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    checksum::fold(sum(m, src, dst)) == 0xffff
}

/// Fills the checksum of the message `m` (at least 4 bytes) carried from `src` to `dst`.
pub(super) fn fill_checksum(m: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    write_u16(m, field::CHECKSUM, 0);
    let c = !checksum::fold(sum(m, src, dst));
    write_u16(m, field::CHECKSUM, c);
}

/// Updates the checksum of the ICMPv6 message `m` (from its header) for a change of its
/// carrying packet's source or destination address from `old` to `new`. Messages under the
/// 8-byte header are left as they are.
pub fn update_checksum_for_address(m: &mut [u8], old: Ipv6Addr, new: Ipv6Addr) {
    if m.len() < HEADER_LEN {
        return;
    }
    let c = checksum::update128(read_u16(m, field::CHECKSUM), old.octets(), new.octets());
    write_u16(m, field::CHECKSUM, c);
}

/// Writes an echo request or reply header into `b` (payload after 8 bytes) with its checksum
/// for a packet from `src` to `dst`. `b` is at least 8 bytes.
pub fn emit_echo(b: &mut [u8], msg_type: u8, ident: u16, seq: u16, src: Ipv6Addr, dst: Ipv6Addr) {
    b[field::TYPE] = msg_type;
    b[field::CODE] = 0;
    write_u16(b, 4, ident);
    write_u16(b, 6, seq);
    fill_checksum(b, src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("2001:db8::1".parse().unwrap(), "2001:db8:0:1::80".parse().unwrap())
    }

    // scapy: raw(IPv6(src='2001:db8::1', dst='2001:db8:0:1::80')
    //     /ICMPv6EchoRequest(id=0x1234, seq=1, data=b'abcd'))[40:]
    const ECHO_REQUEST: [u8; 12] = [0x80, 0x00, 0x4c, 0xc9, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64];
    // the same with ICMPv6EchoReply, from '2001:db8:0:1::80' to '2001:db8::1'
    const ECHO_REPLY: [u8; 12] = [0x81, 0x00, 0x4b, 0xc9, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64];

    #[test]
    fn echo_request_fields_and_reply_in_place() {
        let (src, dst) = addrs();
        let mut m = ECHO_REQUEST;
        let mut p = Icmpv6Packet::new_checked(&mut m[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.rest(), p.mtu()),
            (TYPE_ECHO_REQUEST, 0, [0x12, 0x34, 0, 1], None)
        );
        assert!(!p.is_error());
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum("2001:db8::2".parse().unwrap(), dst));
        p.make_echo_reply();
        assert!(p.verify_checksum(dst, src));
        assert_eq!(m, ECHO_REPLY);
    }

    #[test]
    fn emit_echo_matches_scapy() {
        let (src, dst) = addrs();
        let mut b = [0xeeu8; 12];
        b[8..].copy_from_slice(b"abcd");
        emit_echo(&mut b, TYPE_ECHO_REQUEST, 0x1234, 1, src, dst);
        assert_eq!(b, ECHO_REQUEST);
        emit_echo(&mut b, TYPE_ECHO_REPLY, 0x1234, 1, dst, src);
        assert_eq!(b, ECHO_REPLY);
    }

    #[test]
    fn setters_and_truncation() {
        let (src, dst) = addrs();
        assert_eq!(Icmpv6Packet::new_checked(&ECHO_REQUEST[..7]).unwrap_err(), WireError::Truncated);
        let mut m = ECHO_REQUEST;
        let mut p = Icmpv6Packet::new_checked(&mut m[..]).unwrap();
        p.set_msg_type(TYPE_PACKET_TOO_BIG);
        p.set_code(0);
        p.set_rest(1280u32.to_be_bytes());
        p.set_checksum(0);
        p.fill_checksum(src, dst);
        assert_eq!((p.mtu(), p.is_error()), (Some(1280), true));
        assert!(p.verify_checksum(src, dst));
    }

    proptest! {
        #[test]
        fn outer_address_change_keeps_the_checksum_right(body in proptest::collection::vec(any::<u8>(), 8..64),
                                                           a in any::<u128>(), dst_end in any::<bool>()) {
            let (src, dst) = addrs();
            let mut m = body;
            fill_checksum(&mut m, src, dst);
            let new = Ipv6Addr::from(a);
            let (s, d) = if dst_end { (src, new) } else { (new, dst) };
            let old = if dst_end { dst } else { src };
            Icmpv6Packet::new_checked(&mut m[..]).unwrap().update_checksum_for_address(old, new);
            prop_assert!(verify(&m, s, d));
            let mut fresh = m.clone();
            fill_checksum(&mut fresh, s, d);
            let (inc, full) = (read_u16(&m, 2), read_u16(&fresh, 2));
            prop_assert!(inc == full || inc ^ full == 0xffff);
        }

        #[test]
        fn echo_reply_verifies(body in proptest::collection::vec(any::<u8>(), 8..64)) {
            let (src, dst) = addrs();
            let mut m = body;
            m[0] = TYPE_ECHO_REQUEST;
            fill_checksum(&mut m, src, dst);
            let mut p = Icmpv6Packet::new_checked(&mut m[..]).unwrap();
            p.make_echo_reply();
            prop_assert!(p.verify_checksum(dst, src));
        }
    }
}
