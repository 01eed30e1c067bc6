//! IPv4 fragmentation (RFC 791 2.3 and 3.2): cutting a packet too big for the path into
//! fragments that the destination's own stack reassembles. The appliance cuts an inner packet
//! before encapsulating it, so that each tunnelled fragment fits the path; it never
//! reassembles.
//!
//! [`plan`] decides the cuts from lengths alone; [`write_fragment`] writes one fragment.
//! Every fragment carries as much payload as the first one's header leaves room for (later
//! headers can only be shorter: they keep only the options marked copied), so each fragment is
//! at most the MTU, and all but the last carry a multiple of 8 bytes. A packet that is itself
//! a fragment is cut the same way: offsets count from its own, and its more-fragments flag
//! stays on its last piece. Packets with don't-fragment set are the caller's to answer (ICMP
//! "fragmentation needed"); [`write_fragment`] refuses them.

use super::ipv4::{Ipv4Packet, FLAG_MF, FRAG_OFFSET_MASK, HEADER_LEN, MAX_HEADER_LEN};
use super::WireError;

/// Most fragments a packet is cut into (a 64 KiB packet at an MTU of 1044 bytes or more).
pub const MAX_FRAGMENTS: usize = 64;

/// The option type bit that asks for the option in every fragment (RFC 791 3.1).
const OPT_COPIED: u8 = 0x80;
/// End of Option List: ends the options, and pads them to a multiple of 4 bytes.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;

/// Why [`plan`] cannot cut a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// The MTU leaves fewer than 8 payload bytes after the header.
    MtuTooSmall,
    /// More than [`MAX_FRAGMENTS`] fragments would be needed.
    TooManyFragments,
    /// The header length is not an IPv4 one (20 to 60, a multiple of 4) or exceeds the total.
    BadLengths,
}

/// One fragment of a [`Plan`]: the part of the packet's payload it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    offset: usize,
    len: usize,
    more: bool,
}

impl Fragment {
    /// Where its payload starts in the packet's payload, in bytes (a multiple of 8).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// How many payload bytes it carries.
    pub fn payload_len(&self) -> usize {
        self.len
    }

    /// Whether more fragments of the plan follow it (false for the last).
    pub fn more(&self) -> bool {
        self.more
    }
}

/// The fragments of one packet, in order of offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    payload_len: usize,
    step: usize,
    next: usize,
    count: usize,
}

impl Plan {
    /// The payload bytes of every fragment but the last (a multiple of 8).
    pub fn step(&self) -> usize {
        self.step
    }
}

impl Iterator for Plan {
    type Item = Fragment;

    fn next(&mut self) -> Option<Fragment> {
        if self.next >= self.count {
            return None;
        }
        let offset = self.next * self.step;
        self.next += 1;
        let len = self.step.min(self.payload_len.saturating_sub(offset));
        Some(Fragment { offset, len, more: self.next < self.count })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Plan {}

/// Cuts a packet of `total_len` bytes, `header_len` of them header (both as the packet says),
/// into fragments of at most `mtu` bytes each. A packet that fits gives one fragment, the whole
/// payload.
pub fn plan(total_len: usize, header_len: usize, mtu: usize) -> Result<Plan, PlanError> {
    if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&header_len)
        || !header_len.is_multiple_of(4)
        || header_len > total_len
    {
        return Err(PlanError::BadLengths);
    }
    let step = mtu.saturating_sub(header_len) & !7;
    if step == 0 {
        return Err(PlanError::MtuTooSmall);
    }
    let payload_len = total_len - header_len;
    let count = payload_len.div_ceil(step).max(1);
    if count > MAX_FRAGMENTS {
        return Err(PlanError::TooManyFragments);
    }
    Ok(Plan { payload_len, step, next: 0, count })
}

/// Writes `frag` of the IPv4 packet at the front of `packet` to the front of `out`, and returns
/// its length: the header (all options in the first fragment, only the copied ones after it,
/// padded with End of Option List), total length, fragment offset (the packet's own plus the
/// fragment's), more-fragments (set unless this is the last fragment of a packet that had it
/// clear) and header checksum, then the fragment's payload.
///
/// Refused: a don't-fragment packet (`Unsupported`); a packet shorter than its header says, or
/// an `out` shorter than the fragment (`Truncated`); a fragment outside the packet's payload,
/// an option whose length is wrong, or an offset past 13 bits (`Malformed`).
pub fn write_fragment(packet: &[u8], frag: &Fragment, out: &mut [u8]) -> Result<usize, WireError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    if ip.dont_frag() {
        return Err(WireError::Unsupported);
    }
    let end = frag.offset.checked_add(frag.len).ok_or(WireError::Malformed)?;
    let payload = ip.payload().get(frag.offset..end).ok_or(WireError::Malformed)?;
    let mut copied = [0u8; MAX_HEADER_LEN - HEADER_LEN];
    let copied_len = copy_options(ip.options(), &mut copied)?;
    let options = if frag.offset == 0 { ip.options() } else { &copied[..copied_len] };
    let word = flags_frag(ip.flags_frag(), frag)?;
    let header_len = HEADER_LEN + options.len();
    let total = header_len + payload.len();
    let out = out.get_mut(..total).ok_or(WireError::Truncated)?;
    out[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
    out[HEADER_LEN..header_len].copy_from_slice(options);
    out[header_len..].copy_from_slice(payload);
    let mut f = Ipv4Packet::new_unchecked(out);
    f.set_header_len(header_len);
    // No longer than the packet, whose length is a u16.
    f.set_total_len(total as u16);
    f.set_flags_frag(word);
    f.fill_checksum();
    Ok(total)
}

/// The flags and offset word of `frag` of a packet whose word is `own`.
fn flags_frag(own: u16, frag: &Fragment) -> Result<u16, WireError> {
    let units = usize::from(own & FRAG_OFFSET_MASK) + frag.offset / 8;
    let units = u16::try_from(units).ok().filter(|&u| u <= FRAG_OFFSET_MASK).ok_or(WireError::Malformed)?;
    let mf = if frag.more || own & FLAG_MF != 0 { FLAG_MF } else { 0 };
    Ok(own & !(FLAG_MF | FRAG_OFFSET_MASK) | mf | units)
}

/// Copies the options of `opts` that have the copied flag to the front of `out`, padded with
/// End of Option List to a multiple of 4 bytes, and returns the padded length.
fn copy_options(opts: &[u8], out: &mut [u8; MAX_HEADER_LEN - HEADER_LEN]) -> Result<usize, WireError> {
    let (mut at, mut n) = (0, 0);
    while let Some(len) = option_len(opts, at)? {
        // option_len keeps at + len within opts, which is at most as long as out.
        if opts[at] & OPT_COPIED != 0 {
            out[n..n + len].copy_from_slice(&opts[at..at + len]);
            n += len;
        }
        at += len;
    }
    let padded = n.next_multiple_of(4).min(out.len());
    out[n..padded].fill(OPT_END);
    Ok(padded)
}

/// The length of the option at `at` of `opts`: `None` at End of Option List or past the end;
/// `Malformed` if its length byte is missing, below 2 or runs past the options.
fn option_len(opts: &[u8], at: usize) -> Result<Option<usize>, WireError> {
    match opts.get(at) {
        None | Some(&OPT_END) => Ok(None),
        Some(&OPT_NOP) => Ok(Some(1)),
        Some(_) => match opts.get(at + 1).map(|&l| usize::from(l)) {
            Some(len) if len >= 2 && at + len <= opts.len() => Ok(Some(len)),
            _ => Err(WireError::Malformed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::checksum;
    use super::super::ipv4::FLAG_DF;
    use super::*;

    /// The payload bytes of every golden packet: `bytes(i % 251 for i in range(n))` in Python.
    fn pat(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn packet(header: &[u8], l4: &[u8], data: usize) -> Vec<u8> {
        [header, l4, &pat(data)].concat()
    }

    /// Cuts `p` for `mtu` and checks each fragment against `want`: (header, payload offset,
    /// payload length), the payload being those bytes of `p`'s.
    fn check(p: &[u8], mtu: usize, want: &[(&[u8], usize, usize)]) {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let plan = plan(ip.total_len(), ip.header_len(), mtu).unwrap();
        assert_eq!(plan.len(), want.len());
        let mut out = [0u8; 1600];
        for (i, (frag, (header, at, len))) in plan.zip(want).enumerate() {
            assert_eq!((frag.offset(), frag.payload_len()), (*at, *len), "fragment {i}");
            let n = write_fragment(p, &frag, &mut out).unwrap();
            assert!(n <= mtu, "fragment {i}: {n} bytes");
            assert_eq!(&out[..header.len()], *header, "fragment {i}'s header");
            assert_eq!(&out[header.len()..n], &ip.payload()[*at..at + len], "fragment {i}'s payload");
        }
    }

    const UDP_4000: [u8; 20] = [
        0x45, 0x00, 0x0f, 0xb4, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, 0xc2, 0xdd, 0xc6, 0x12, 0x00, 0x02, 0xc6,
        0x12, 0x0a, 0x01,
    ];
    const UDP_4000_L4: [u8; 8] = [0x9c, 0x40, 0x00, 0x35, 0x0f, 0xa0, 0x90, 0xff];

    #[test]
    fn udp_4000_at_1500() {
        // p = IP(src="198.18.0.2", dst="198.18.10.1", id=0x1234)/UDP(sport=40000, dport=53)
        //     /Raw(bytes(i % 251 for i in range(3992))); fragment(p, fragsize=1480)
        let p = packet(&UDP_4000, &UDP_4000_L4, 3992);
        check(
            &p,
            1500,
            &[
                (
                    &[
                        0x45, 0x00, 0x05, 0xdc, 0x12, 0x34, 0x20, 0x00, 0x40, 0x11, 0xac, 0xb5, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    0,
                    1480,
                ),
                (
                    &[
                        0x45, 0x00, 0x05, 0xdc, 0x12, 0x34, 0x20, 0xb9, 0x40, 0x11, 0xab, 0xfc, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    1480,
                    1480,
                ),
                (
                    &[
                        0x45, 0x00, 0x04, 0x24, 0x12, 0x34, 0x01, 0x72, 0x40, 0x11, 0xcc, 0xfb, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    2960,
                    1040,
                ),
            ],
        );
    }

    #[test]
    fn udp_4000_at_1480() {
        // As udp_4000_at_1500, fragment(p, fragsize=1456): 1460 rounded down to 8 bytes.
        let p = packet(&UDP_4000, &UDP_4000_L4, 3992);
        check(
            &p,
            1480,
            &[
                (
                    &[
                        0x45, 0x00, 0x05, 0xc4, 0x12, 0x34, 0x20, 0x00, 0x40, 0x11, 0xac, 0xcd, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    0,
                    1456,
                ),
                (
                    &[
                        0x45, 0x00, 0x05, 0xc4, 0x12, 0x34, 0x20, 0xb6, 0x40, 0x11, 0xac, 0x17, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    1456,
                    1456,
                ),
                (
                    &[
                        0x45, 0x00, 0x04, 0x54, 0x12, 0x34, 0x01, 0x6c, 0x40, 0x11, 0xcc, 0xd1, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    2912,
                    1088,
                ),
            ],
        );
    }

    #[test]
    fn tcp_1500_at_1476() {
        // p = IP(src="198.18.0.2", dst="198.18.10.1", id=0xbeef, tos=0x10)/TCP(sport=40000,
        //     dport=80, seq=1000, ack=2000, flags="PA", window=502)
        //     /Raw(bytes(i % 251 for i in range(1480))); fragment(p, fragsize=1456)
        let header = [
            0x45, 0x10, 0x05, 0xf0, 0xbe, 0xef, 0x00, 0x00, 0x40, 0x06, 0x1f, 0xe1, 0xc6, 0x12, 0x00, 0x02,
            0xc6, 0x12, 0x0a, 0x01,
        ];
        let tcp = [
            0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x50, 0x18, 0x01, 0xf6,
            0x60, 0xa2, 0x00, 0x00,
        ];
        let p = packet(&header, &tcp, 1480);
        check(
            &p,
            1476,
            &[
                (
                    &[
                        0x45, 0x10, 0x05, 0xc4, 0xbe, 0xef, 0x20, 0x00, 0x40, 0x06, 0x00, 0x0d, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    0,
                    1456,
                ),
                (
                    &[
                        0x45, 0x10, 0x00, 0x40, 0xbe, 0xef, 0x00, 0xb6, 0x40, 0x06, 0x24, 0xdb, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01,
                    ],
                    1456,
                    44,
                ),
            ],
        );
    }

    /// IP(src="198.18.0.2", dst="198.18.10.1", id=0x4242, options=[IPOption_RR(routers=
    /// ["10.0.0.1"]), IPOption_Router_Alert()])/UDP(sport=40000, dport=53)
    /// /Raw(bytes(i % 251 for i in range(150))): record route (not copied), router alert
    /// (copied), one byte of padding.
    fn with_options() -> Vec<u8> {
        let header = [
            0x48, 0x00, 0x00, 0xbe, 0x42, 0x42, 0x00, 0x00, 0x40, 0x11, 0x8e, 0x20, 0xc6, 0x12, 0x00, 0x02,
            0xc6, 0x12, 0x0a, 0x01, 0x07, 0x07, 0x04, 0x0a, 0x00, 0x00, 0x01, 0x94, 0x04, 0x00, 0x00, 0x00,
        ];
        packet(&header, &[0x9c, 0x40, 0x00, 0x35, 0x00, 0x9e, 0x08, 0x06], 150)
    }

    #[test]
    fn later_fragments_keep_only_copied_options() {
        // fragment(p, fragsize=64), then in every fragment but the first:
        // f.options = [IPOption_Router_Alert()]; f.ihl = None; del f.chksum; del f.len
        // (scapy keeps every option in every fragment).
        let p = with_options();
        check(
            &p,
            96,
            &[
                (
                    &[
                        0x48, 0x00, 0x00, 0x60, 0x42, 0x42, 0x20, 0x00, 0x40, 0x11, 0x6e, 0x7e, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01, 0x07, 0x07, 0x04, 0x0a, 0x00, 0x00, 0x01, 0x94,
                        0x04, 0x00, 0x00, 0x00,
                    ],
                    0,
                    64,
                ),
                (
                    &[
                        0x46, 0x00, 0x00, 0x58, 0x42, 0x42, 0x20, 0x08, 0x40, 0x11, 0xed, 0x1e, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01, 0x94, 0x04, 0x00, 0x00,
                    ],
                    64,
                    64,
                ),
                (
                    &[
                        0x46, 0x00, 0x00, 0x36, 0x42, 0x42, 0x00, 0x10, 0x40, 0x11, 0x0d, 0x39, 0xc6, 0x12,
                        0x00, 0x02, 0xc6, 0x12, 0x0a, 0x01, 0x94, 0x04, 0x00, 0x00,
                    ],
                    128,
                    30,
                ),
            ],
        );
    }

    #[test]
    fn a_fragment_is_cut_from_its_own_offset() {
        // A middle fragment: IP(src="198.18.0.2", dst="198.18.10.1", id=0x7777, proto=17,
        // flags="MF", frag=185)/Raw(bytes(i % 251 for i in range(200))); fragment(p, fragsize=96).
        // Every piece keeps MF.
        let header = [
            0x45, 0x00, 0x00, 0xdc, 0x77, 0x77, 0x20, 0xb9, 0x40, 0x11, 0x4b, 0xb9, 0xc6, 0x12, 0x00, 0x02,
            0xc6, 0x12, 0x0a, 0x01,
        ];
        let want: [(&[u8], usize, usize); 3] = [
            (
                &[
                    0x45, 0x00, 0x00, 0x74, 0x77, 0x77, 0x20, 0xb9, 0x40, 0x11, 0x4c, 0x21, 0xc6, 0x12, 0x00,
                    0x02, 0xc6, 0x12, 0x0a, 0x01,
                ],
                0,
                96,
            ),
            (
                &[
                    0x45, 0x00, 0x00, 0x74, 0x77, 0x77, 0x20, 0xc5, 0x40, 0x11, 0x4c, 0x15, 0xc6, 0x12, 0x00,
                    0x02, 0xc6, 0x12, 0x0a, 0x01,
                ],
                96,
                96,
            ),
            (
                &[
                    0x45, 0x00, 0x00, 0x1c, 0x77, 0x77, 0x20, 0xd1, 0x40, 0x11, 0x4c, 0x61, 0xc6, 0x12, 0x00,
                    0x02, 0xc6, 0x12, 0x0a, 0x01,
                ],
                192,
                8,
            ),
        ];
        check(&packet(&header, &[], 200), 116, &want);
    }

    #[test]
    fn a_last_fragment_keeps_mf_clear_on_its_last_piece() {
        // As above with flags=0 and 100 bytes: the last piece has MF clear.
        let header = [
            0x45, 0x00, 0x00, 0x78, 0x77, 0x77, 0x00, 0xb9, 0x40, 0x11, 0x6c, 0x1d, 0xc6, 0x12, 0x00, 0x02,
            0xc6, 0x12, 0x0a, 0x01,
        ];
        let want: [(&[u8], usize, usize); 2] = [
            (
                &[
                    0x45, 0x00, 0x00, 0x74, 0x77, 0x77, 0x20, 0xb9, 0x40, 0x11, 0x4c, 0x21, 0xc6, 0x12, 0x00,
                    0x02, 0xc6, 0x12, 0x0a, 0x01,
                ],
                0,
                96,
            ),
            (
                &[
                    0x45, 0x00, 0x00, 0x18, 0x77, 0x77, 0x00, 0xc5, 0x40, 0x11, 0x6c, 0x71, 0xc6, 0x12, 0x00,
                    0x02, 0xc6, 0x12, 0x0a, 0x01,
                ],
                96,
                4,
            ),
        ];
        check(&packet(&header, &[], 100), 116, &want);
    }

    #[test]
    fn plans() {
        let cuts = |total, header, mtu| {
            plan(total, header, mtu)
                .map(|p| p.map(|f| (f.offset(), f.payload_len(), f.more())).collect::<Vec<_>>())
        };
        assert_eq!(cuts(100, 20, 1500), Ok(vec![(0, 80, false)]), "a packet that fits is one fragment");
        assert_eq!(cuts(20, 20, 28), Ok(vec![(0, 0, false)]), "no payload: one empty fragment");
        assert_eq!(cuts(44, 20, 28), Ok(vec![(0, 8, true), (8, 8, true), (16, 8, false)]));
        assert_eq!(cuts(45, 20, 35), Ok(vec![(0, 8, true), (8, 8, true), (16, 8, true), (24, 1, false)]));
        assert_eq!(cuts(100, 20, 27), Err(PlanError::MtuTooSmall), "mtu < 28");
        assert_eq!(cuts(100, 60, 67), Err(PlanError::MtuTooSmall), "no room past 60 header bytes");
        assert_eq!(cuts(100, 20, 0), Err(PlanError::MtuTooSmall));
        assert!(plan(100, 60, 68).is_ok());
        assert_eq!(cuts(65535, 20, 1000), Err(PlanError::TooManyFragments), "68 of 976 bytes");
        assert_eq!(plan(65535, 20, 1044).map(|p| p.len()), Ok(64));
        for (total, header) in [(100, 19), (100, 22), (100, 64), (20, 24)] {
            assert_eq!(cuts(total, header, 1500), Err(PlanError::BadLengths), "{total} {header}");
        }
        let p = plan(4020, 20, 1500).unwrap();
        assert_eq!((p.step(), p.len()), (1480, 3));
    }

    fn first(p: &[u8], mtu: usize) -> Fragment {
        plan(p.len(), Ipv4Packet::new_checked(p).unwrap().header_len(), mtu).unwrap().next().unwrap()
    }

    #[test]
    fn refusals() {
        let p = packet(&UDP_4000, &UDP_4000_L4, 3992);
        let f = first(&p, 1500);
        let mut out = [0u8; 1500];
        let mut df = p.clone();
        df[6] |= (FLAG_DF >> 8) as u8;
        assert_eq!(write_fragment(&df, &f, &mut out), Err(WireError::Unsupported), "DF");
        assert_eq!(write_fragment(&p[..4000], &f, &mut out), Err(WireError::Truncated), "cut short");
        assert_eq!(write_fragment(&p[..19], &f, &mut out), Err(WireError::Truncated));
        assert_eq!(write_fragment(&p, &f, &mut out[..1499]), Err(WireError::Truncated), "small out");
        assert_eq!(write_fragment(&p, &f, &mut out), Ok(1500));
        let past = Fragment { offset: 4000, len: 8, more: false };
        assert_eq!(write_fragment(&p, &past, &mut out), Err(WireError::Malformed), "outside payload");
        let huge = Fragment { offset: usize::MAX - 3, len: 8, more: false };
        assert_eq!(write_fragment(&p, &huge, &mut out), Err(WireError::Malformed));
        // A fragment already at offset 8184 whose pieces would need offsets past 13 bits.
        let mut late = p.clone();
        late[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
        let second = Fragment { offset: 1480, len: 1480, more: true };
        assert_eq!(write_fragment(&late, &second, &mut out), Err(WireError::Malformed));
    }

    #[test]
    fn bad_options_are_refused_in_every_fragment() {
        let mut p = with_options();
        p[21] = 13; // the record route's length runs past the options
        let f = first(&p, 96);
        assert_eq!(write_fragment(&p, &f, &mut [0u8; 96]), Err(WireError::Malformed));
        p[21] = 1; // below 2
        assert_eq!(write_fragment(&p, &f, &mut [0u8; 96]), Err(WireError::Malformed));
    }

    #[test]
    fn options_after_end_of_list_are_dropped_and_nops_are_not_copied() {
        let mut opts = [0u8; 40];
        // NOP, router alert, End of Option List, then bytes that are not options.
        let n = copy_options(&[1, 0x94, 4, 0, 0, 0, 0x83, 9], &mut opts).unwrap();
        assert_eq!(&opts[..n], &[0x94, 4, 0, 0]);
        // Loose source route (copied, 7 bytes) and a NOP: padded to 8.
        let n = copy_options(&[0x83, 7, 4, 10, 0, 0, 1, 1], &mut opts).unwrap();
        assert_eq!(&opts[..n], &[0x83, 7, 4, 10, 0, 0, 1, 0]);
        assert_eq!(copy_options(&[0x94], &mut opts), Err(WireError::Malformed), "no length byte");
    }

    proptest::proptest! {
        #[test]
        fn fragments_reassemble_to_the_packet(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            mtu in 28usize..1600, options in 0usize..3, units in 0u16..0x100,
            mf in proptest::prelude::any::<bool>(),
        ) {
            // Headers of 20, 24 (router alert) or 28 bytes (and a not-copied timestamp).
            let opts: &[u8] = [&[][..], &[0x94, 4, 0, 0], &[0x94, 4, 0, 0, 0x44, 4, 5, 0]][options];
            let hl = HEADER_LEN + opts.len();
            let mut p = vec![0x40 | (hl / 4) as u8, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
            p.extend_from_slice(opts);
            p.extend_from_slice(&data);
            let total = p.len() as u16;
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_total_len(total);
            ip.set_flags_frag(units | if mf { FLAG_MF } else { 0 });
            let Ok(plan) = plan(p.len(), hl, mtu) else { return Ok(()) };
            let (mut out, mut whole) = ([0u8; 1600], vec![]);
            let own = Ipv4Packet::new_checked(&p[..]).unwrap().frag_offset();
            for (i, f) in plan.enumerate() {
                let n = write_fragment(&p, &f, &mut out).unwrap();
                proptest::prop_assert!(n <= mtu);
                let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
                proptest::prop_assert!(ip.verify_checksum());
                proptest::prop_assert_eq!(ip.frag_offset(), own + whole.len());
                proptest::prop_assert_eq!(ip.more_frags(), f.more() || mf);
                proptest::prop_assert!(!f.more() || ip.payload().len().is_multiple_of(8));
                proptest::prop_assert_eq!(ip.header_len(), if i == 0 { hl } else { hl.min(24) });
                whole.extend_from_slice(ip.payload());
            }
            proptest::prop_assert_eq!(&whole[..], &p[hl..]);
        }

        #[test]
        fn any_bytes_are_refused_or_cut_without_panic(
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            offset in 0usize..256, len in 0usize..256, more in proptest::prelude::any::<bool>(),
            out_len in 0usize..256,
        ) {
            let mut out = vec![0u8; out_len];
            if let Ok(n) = write_fragment(&b, &Fragment { offset, len, more }, &mut out) {
                let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
                proptest::prop_assert!(checksum::fold(checksum::sum(&out[..ip.header_len()])) == 0xffff);
            }
        }
    }
}
