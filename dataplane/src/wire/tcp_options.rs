//! TCP options (RFC 9293 3.1; MSS, window scale and timestamps RFC 7323; SACK RFC 2018): read
//! from a segment's option bytes, written for a SYN or SYN-ACK, and shifted in place (the SYN
//! proxy moves sequence numbers and timestamps between the two halves of a connection), and a
//! SYN's MSS clamped.

use super::tcp::{self, TcpPacket};
use super::{checksum, write_u16, WireError};
use arrayvec::ArrayVec;

pub const KIND_END: u8 = 0;
pub const KIND_NOP: u8 = 1;
pub const KIND_MSS: u8 = 2;
pub const KIND_WSCALE: u8 = 3;
pub const KIND_SACK_PERM: u8 = 4;
pub const KIND_SACK: u8 = 5;
pub const KIND_TIMESTAMP: u8 = 8;

/// The options of one segment that matter to a proxy, and where the shiftable ones are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    /// Offset of the MSS option's value within the option bytes.
    pub mss_at: Option<usize>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// Offset of the timestamp option's TSval within the option bytes.
    pub ts_at: Option<usize>,
    /// SACK blocks (left, right edges).
    pub sack: ArrayVec<(u32, u32), 4>,
    /// Offset of the first SACK block's left edge within the option bytes.
    pub sack_at: Option<usize>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the option bytes of a segment (what follows the 20-byte header, up to the data
/// offset). Unknown options are skipped by their length; a length that is too short for its
/// kind or runs past the end is `Malformed`.
pub fn parse(b: &[u8]) -> Result<TcpOptions, WireError> {
    let mut o = TcpOptions::default();
    let mut i = 0;
    while i < b.len() {
        let kind = b[i];
        match kind {
            KIND_END => break,
            KIND_NOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = b.get(i + 1) else { return Err(WireError::Malformed) };
        let len = usize::from(len);
        if len < 2 || i + len > b.len() {
            return Err(WireError::Malformed);
        }
        let body = &b[i + 2..i + len];
        match (kind, body.len()) {
            (KIND_MSS, 2) => {
                o.mss = Some(u16::from_be_bytes([body[0], body[1]]));
                o.mss_at = Some(i + 2);
            }
            (KIND_WSCALE, 1) => o.wscale = Some(body[0]),
            (KIND_SACK_PERM, 0) => o.sack_perm = true,
            (KIND_TIMESTAMP, 8) => {
                o.timestamps = Some((u32_at(body, 0), u32_at(body, 4)));
                o.ts_at = Some(i + 2);
            }
            (KIND_SACK, n) if n % 8 == 0 && n <= 32 => {
                o.sack_at = Some(i + 2);
                for k in 0..n / 8 {
                    o.sack.push((u32_at(body, 8 * k), u32_at(body, 8 * k + 4)));
                }
            }
            (KIND_MSS | KIND_WSCALE | KIND_SACK_PERM | KIND_TIMESTAMP | KIND_SACK, _) => {
                return Err(WireError::Malformed)
            }
            _ => {}
        }
        i += len;
    }
    Ok(o)
}

/// What a SYN or SYN-ACK offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOffer {
    pub mss: u16,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

/// Longest [`emit_syn`] output.
pub const SYN_OPTIONS_MAX: usize = 20;

/// Writes a SYN's options in the order and padding Linux uses (MSS; SACK-permitted with the
/// timestamp, or NOP NOP SACK-permitted without; NOP window scale), returning their length,
/// a multiple of 4.
pub fn emit_syn(o: &SynOffer, out: &mut [u8; SYN_OPTIONS_MAX]) -> usize {
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        out[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(&[KIND_MSS, 4]);
    put(&o.mss.to_be_bytes());
    match (o.sack_perm, o.timestamps) {
        (true, Some((val, ecr))) => {
            put(&[KIND_SACK_PERM, 2, KIND_TIMESTAMP, 10]);
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        }
        (false, Some((val, ecr))) => {
            put(&[KIND_NOP, KIND_NOP, KIND_TIMESTAMP, 10]);
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        }
        (true, None) => put(&[KIND_NOP, KIND_NOP, KIND_SACK_PERM, 2]),
        (false, None) => {}
    }
    if let Some(ws) = o.wscale {
        put(&[KIND_NOP, KIND_WSCALE, 3, ws]);
    }
    n
}

/// Length of [`emit_timestamps`]' output.
pub const TIMESTAMPS_LEN: usize = 12;

/// Writes the timestamp option as Linux pads it outside a SYN (NOP NOP, kind 8, length 10).
pub fn emit_timestamps(val: u32, ecr: u32) -> [u8; TIMESTAMPS_LEN] {
    let mut out = [KIND_NOP, KIND_NOP, KIND_TIMESTAMP, 10, 0, 0, 0, 0, 0, 0, 0, 0];
    out[4..8].copy_from_slice(&val.to_be_bytes());
    out[8..].copy_from_slice(&ecr.to_be_bytes());
    out
}

/// Adds `delta` to every SACK edge in the option bytes `b` (as read by [`parse`]). Returns the
/// 32-bit words changed, (old, new), for the checksum update.
pub fn shift_sack(b: &mut [u8], o: &TcpOptions, delta: u32) -> ArrayVec<(u32, u32), 8> {
    let mut changed = ArrayVec::new();
    let Some(at) = o.sack_at else { return changed };
    for k in 0..o.sack.len() * 2 {
        let p = at + 4 * k;
        let Some(w) = b.get_mut(p..p + 4) else { break };
        let old = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        let new = old.wrapping_add(delta);
        w.copy_from_slice(&new.to_be_bytes());
        changed.push((old, new));
    }
    changed
}

/// Replaces the timestamp option's TSval (`val`) and/or TSecr (`ecr`) with f(old). Returns the
/// words changed, (old, new).
pub fn shift_timestamps(
    b: &mut [u8],
    o: &TcpOptions,
    val: impl Fn(u32) -> u32,
    ecr: impl Fn(u32) -> u32,
) -> ArrayVec<(u32, u32), 2> {
    let mut changed = ArrayVec::new();
    let Some(at) = o.ts_at else { return changed };
    for (p, f) in [(at, &val as &dyn Fn(u32) -> u32), (at + 4, &ecr)] {
        let Some(w) = b.get_mut(p..p + 4) else { break };
        let old = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        let new = f(old);
        if new != old {
            w.copy_from_slice(&new.to_be_bytes());
            changed.push((old, new));
        }
    }
    changed
}

/// Lowers the MSS option of a SYN or SYN-ACK to `max` when it offers more, in place, and
/// updates the TCP checksum for the two bytes changed (the pseudo-header does not change).
/// `segment` is the TCP header onwards. Returns the MSS replaced; `None`, with nothing changed,
/// for a segment without SYN, without an MSS option or with one of at most `max`, or whose
/// header or option list is malformed (see [`parse`]).
pub fn clamp_mss(segment: &mut [u8], max: u16) -> Option<u16> {
    let mut t = TcpPacket::new_checked(segment).ok()?;
    if t.flags() & tcp::SYN == 0 {
        return None;
    }
    let o = parse(t.options()).ok()?;
    let (old, at) = (o.mss?, o.mss_at?);
    if old <= max {
        return None;
    }
    write_u16(t.options_mut(), at, max);
    // A value at an odd offset of the segment straddles two checksum words: its bytes count
    // swapped (RFC 1071 byte order independence).
    let (old_w, new_w) = match (tcp::HEADER_LEN + at) % 2 {
        0 => (old, max),
        _ => (old.swap_bytes(), max.swap_bytes()),
    };
    t.set_checksum(checksum::update16(t.checksum(), old_w, new_w));
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The option bytes of a SYN in Linux's layout, as scapy builds them from [('MSS', 1460),
    // ('SAckOK', b''), ('Timestamp', (2216879245, 0)), ('NOP', None), ('WScale', 7)].
    const LINUX_SYN: [u8; 20] = [
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x84, 0x22, 0xe4, 0x8d, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x03, 0x03, 0x07,
    ];

    #[test]
    fn timestamps_read_back() {
        let b = emit_timestamps(0x0102_0304, 0x0a0b_0c0d);
        assert_eq!(b, [1, 1, 8, 10, 1, 2, 3, 4, 10, 11, 12, 13]);
        assert_eq!(parse(&b).unwrap().timestamps, Some((0x0102_0304, 0x0a0b_0c0d)));
    }

    #[test]
    fn reads_a_linux_syn() {
        let o = parse(&LINUX_SYN).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_perm);
        assert_eq!(o.timestamps, Some((0x8422_e48d, 0)));
        assert_eq!(o.ts_at, Some(8));
        assert_eq!(o.mss_at, Some(2));
    }

    #[test]
    fn writes_a_syn_as_linux_does() {
        let offer =
            SynOffer { mss: 1460, wscale: Some(7), sack_perm: true, timestamps: Some((0x8422_e48d, 0)) };
        let mut out = [0u8; SYN_OPTIONS_MAX];
        let n = emit_syn(&offer, &mut out);
        assert_eq!(&out[..n], &LINUX_SYN);
        // Without timestamps (Linux: MSS, NOP NOP SACK-permitted, NOP window scale).
        let offer = SynOffer { timestamps: None, ..offer };
        let n = emit_syn(&offer, &mut out);
        assert_eq!(&out[..n], &[2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7]);
        for o in [
            SynOffer { mss: 536, wscale: None, sack_perm: false, timestamps: None },
            SynOffer { mss: 1400, wscale: None, sack_perm: false, timestamps: Some((1, 2)) },
            SynOffer { mss: 1400, wscale: Some(14), sack_perm: true, timestamps: None },
        ] {
            let n = emit_syn(&o, &mut out);
            assert_eq!(n % 4, 0);
            let back = parse(&out[..n]).unwrap();
            assert_eq!(
                (back.mss, back.wscale, back.sack_perm, back.timestamps),
                (Some(o.mss), o.wscale, o.sack_perm, o.timestamps)
            );
        }
    }

    #[test]
    fn sack_blocks_and_timestamps_shift_in_place() {
        // NOP NOP TS(100, 200) NOP NOP SACK(1000-2000, 3000-4000)
        let mut b = vec![1, 1, 8, 10, 0, 0, 0, 100, 0, 0, 0, 200, 1, 1, 5, 18];
        for v in [1000u32, 2000, 3000, 4000] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        let o = parse(&b).unwrap();
        assert_eq!(o.sack.as_slice(), &[(1000, 2000), (3000, 4000)]);
        let changed = shift_sack(&mut b, &o, 5u32.wrapping_neg());
        assert_eq!(changed.len(), 4);
        let ts = shift_timestamps(&mut b, &o, |v| v, |e| e + 7);
        assert_eq!(ts.as_slice(), &[(200, 207)]);
        let again = parse(&b).unwrap();
        assert_eq!(again.sack.as_slice(), &[(995, 1995), (2995, 3995)]);
        assert_eq!(again.timestamps, Some((100, 207)));
    }

    #[test]
    fn malformed_options_are_refused() {
        for bad in [
            &[2u8][..],                   // kind without length
            &[2, 1],                      // length under 2
            &[2, 4, 5],                   // past the end
            &[2, 3, 5],                   // MSS of the wrong length
            &[8, 9, 0, 0, 0, 0, 0, 0, 0], // timestamp of the wrong length
            &[5, 6, 0, 0, 0, 0],          // SACK not a multiple of 8
        ] {
            assert_eq!(parse(bad), Err(WireError::Malformed), "{bad:?}");
        }
        // Unknown options are skipped; END stops.
        let o = parse(&[30, 4, 0, 0, 3, 3, 2, 0, 2, 4, 1, 1]).unwrap();
        assert_eq!((o.wscale, o.mss), (Some(2), None));
    }

    // SYN and SYN-ACK segments (TCP header onwards) and the same with the MSS at 1400, from
    // scapy: raw(IP(src='192.0.2.1', dst='198.51.100.7')/TCP(sport=40000, dport=443, seq=1000,
    // ack=2000 if SYN-ACK else 0, flags=FLAGS, window=64240, options=OPTIONS))[20:], with the
    // FLAGS and OPTIONS of each comment (TS = ('Timestamp', (2216879245, 0))).
    const CLAMPED: [(&[u8], &[u8]); 6] = [
        // 'S', [('MSS', 1460)]
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa,
                0xf0, 0x0f, 0x16, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa,
                0xf0, 0x0f, 0x52, 0x00, 0x00, 0x02, 0x04, 0x05, 0x78,
            ],
        ),
        // 'S', [('NOP', None), ('MSS', 1460)]: the value at an odd offset
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
                0xf0, 0x4d, 0xc2, 0x00, 0x00, 0x01, 0x02, 0x04, 0x05, 0xb4, 0x00, 0x00, 0x00,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
                0xf0, 0x89, 0xc2, 0x00, 0x00, 0x01, 0x02, 0x04, 0x05, 0x78, 0x00, 0x00, 0x00,
            ],
        ),
        // 'S', [('NOP', None), ('NOP', None), ('MSS', 1460)]
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
                0xf0, 0xfe, 0x10, 0x00, 0x00, 0x01, 0x01, 0x02, 0x04, 0x05, 0xb4, 0x00, 0x00,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
                0xf0, 0xfe, 0x4c, 0x00, 0x00, 0x01, 0x01, 0x02, 0x04, 0x05, 0x78, 0x00, 0x00,
            ],
        ),
        // 'S', [('MSS', 1460), ('SAckOK', b''), TS, ('NOP', None), ('WScale', 7)]
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
                0xf0, 0x56, 0x3f, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x84, 0x22,
                0xe4, 0x8d, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
                0xf0, 0x56, 0x7b, 0x00, 0x00, 0x02, 0x04, 0x05, 0x78, 0x04, 0x02, 0x08, 0x0a, 0x84, 0x22,
                0xe4, 0x8d, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
            ],
        ),
        // 'SA', [('MSS', 8960), ('NOP', None), ('NOP', None), ('SAckOK', b''), ('NOP', None),
        // ('WScale', 9)]
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x80, 0x12, 0xfa,
                0xf0, 0xc0, 0xd2, 0x00, 0x00, 0x02, 0x04, 0x23, 0x00, 0x01, 0x01, 0x04, 0x02, 0x01, 0x03,
                0x03, 0x09,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x80, 0x12, 0xfa,
                0xf0, 0xde, 0x5a, 0x00, 0x00, 0x02, 0x04, 0x05, 0x78, 0x01, 0x01, 0x04, 0x02, 0x01, 0x03,
                0x03, 0x09,
            ],
        ),
        // 'SA', [('NOP', None), ('WScale', 7), ('SAckOK', b''), ('MSS', 1460)]
        (
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x80, 0x12, 0xfa,
                0xf0, 0xdf, 0x21, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07, 0x04, 0x02, 0x02, 0x04, 0x05, 0xb4,
                0x00, 0x00,
            ],
            &[
                0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x80, 0x12, 0xfa,
                0xf0, 0xdf, 0x5d, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07, 0x04, 0x02, 0x02, 0x04, 0x05, 0x78,
                0x00, 0x00,
            ],
        ),
    ];

    fn verifies(segment: &[u8]) -> bool {
        let (src, dst) = ("192.0.2.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
        TcpPacket::new_checked(segment).unwrap().verify_checksum_v4(src, dst)
    }

    #[test]
    fn clamps_the_mss_of_syns_as_scapy_recomputes() {
        for (before, after) in CLAMPED {
            assert!(verifies(before));
            let old = parse(TcpPacket::new_checked(before).unwrap().options()).unwrap().mss;
            assert!(old > Some(1400));
            let mut b = before.to_vec();
            assert_eq!(clamp_mss(&mut b, 1400), old, "{before:x?}");
            assert_eq!(b, after, "{before:x?}");
            assert!(verifies(&b), "a full recomputation agrees");
            assert_eq!(clamp_mss(&mut b, 1400), None, "clamped already");
            assert_eq!(b, after);
        }
    }

    #[test]
    fn leaves_other_segments_alone() {
        let syn = CLAMPED[3].0;
        let mut ack = syn.to_vec();
        ack[13] = tcp::ACK;
        let mut no_mss = syn.to_vec();
        no_mss[20..24].copy_from_slice(&[KIND_NOP; 4]);
        let mut bad_options = syn.to_vec();
        bad_options[25] = 9; // SACK-permitted of length 9, past the end
        let mut short_header = syn.to_vec();
        short_header[12] = 0x40; // data offset 16 bytes
        for (b, max) in [
            (syn.to_vec(), 1460),
            (syn.to_vec(), 9000),
            (ack, 1400),
            (no_mss, 1400),
            (bad_options, 1400),
            (short_header, 1400),
            (syn[..19].to_vec(), 1400),
        ] {
            let mut m = b.clone();
            assert_eq!(clamp_mss(&mut m, max), None, "{b:x?}");
            assert_eq!(m, b);
        }
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..44), d in any::<u32>()) {
            let mut b = b;
            if let Ok(o) = parse(&b) {
                shift_sack(&mut b, &o, d);
                shift_timestamps(&mut b, &o, |v| v ^ d, |e| e.wrapping_add(d));
            }
        }

        #[test]
        fn clamping_keeps_the_checksum_right(nops in 0usize..4, tail in proptest::collection::vec(any::<u8>(), 0..28),
                                             mss in any::<u16>(), max in any::<u16>()) {
            // A SYN whose options are NOPs (so the MSS value lies at an odd or even offset),
            // an MSS option and arbitrary bytes (valid options or not).
            let mut o = vec![KIND_NOP; nops];
            o.extend_from_slice(&[KIND_MSS, 4, (mss >> 8) as u8, mss as u8]);
            o.extend_from_slice(&tail);
            o.resize(o.len().next_multiple_of(4), KIND_END);
            let (src, dst) = ("192.0.2.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
            let mut b = vec![0u8; 20 + o.len()];
            b[12] = (((20 + o.len()) / 4) << 4) as u8;
            b[13] = tcp::SYN;
            b[20..].copy_from_slice(&o);
            TcpPacket::new_checked(&mut b[..]).unwrap().fill_checksum_v4(src, dst);
            let before = b.clone();
            let expect = parse(&o).ok().and_then(|p| p.mss).filter(|&m| m > max);
            prop_assert_eq!(clamp_mss(&mut b, max), expect);
            prop_assert!(TcpPacket::new_checked(&b[..]).unwrap().verify_checksum_v4(src, dst));
            match expect {
                Some(_) => prop_assert_eq!(parse(&b[20..]).unwrap().mss, Some(max)),
                None => prop_assert_eq!(b, before),
            }
        }
    }
}
