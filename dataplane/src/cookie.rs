//! SYN cookies: the SYN proxy's stateless answer to a client's SYN.
//!
//! The SYN-ACK's sequence number carries everything the appliance must remember about the
//! SYN until the client's ACK comes back: the options the client offered (MSS, as an index in
//! [`MSS_TABLE`]; window scale; SACK permitted; timestamps) and when it was made. The ACK
//! acknowledges `cookie + 1`, so checking that number is checking the client:
//!
//! ```text
//! cookie = H1(flow) + client_isn + (t << 24) + (options | MAC(flow, t, client_isn, options) << 9)
//! ```
//!
//! `t` is the time in [`PERIOD_SECS`] units (8 bits); `H1` is SipHash-2-4 under a key fixed
//! for the process (it hides the period and makes the number unpredictable); `options` takes
//! [`OPTION_BITS`] bits; the MAC is 15 bits of SipHash-2-4 under the period's key. An ACK is
//! valid if its `t` is the current period or at most [`MAX_AGE`] periods old and the MAC
//! matches: a forger, or anyone altering a cookie, its flow or the client's sequence number,
//! passes with probability 2^-15 per try, within the validity window only. (Linux's
//! syncookies have the same shape but check only that the options decode, so a cookie
//! altered in its low bits can pass with other options.)
//!
//! Keys: two slots; the key of period `t` is slot `(t / KEY_PERIODS) % 2`. The control thread
//! puts a fresh random key in the slot that is not in use before its turn comes
//! ([`CookieKeys::rotate`]), so every key lives `2 * KEY_PERIODS` periods and a cookie
//! outlives its key never (`MAX_AGE < KEY_PERIODS`).

use crate::flow::FlowKey;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Seconds per cookie period.
pub const PERIOD_SECS: u64 = 64;
/// Oldest accepted cookie, in periods (so 64 to 128 s of validity).
pub const MAX_AGE: u32 = 1;
/// Periods each key is the current one.
pub const KEY_PERIODS: u64 = 4;
/// Bits of the encoded options.
pub const OPTION_BITS: u32 = 9;

/// The MSS values a cookie can say (the largest not above the client's is used).
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1360, 1400, 1440, 1460, 8960];

/// What the client's SYN offered, as the cookie keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOptions {
    /// One of [`MSS_TABLE`].
    pub mss: u16,
    /// Window scale shift 0..=14, if offered.
    pub wscale: Option<u8>,
    pub sack: bool,
    pub timestamps: bool,
}

impl SynOptions {
    /// The options to keep for a SYN that offered these: MSS rounded down to the table
    /// (536 when absent, RFC 9293), a window scale clamped to 14 (RFC 7323).
    pub fn from_syn(mss: Option<u16>, wscale: Option<u8>, sack: bool, timestamps: bool) -> SynOptions {
        let want = mss.unwrap_or(536);
        let mss = MSS_TABLE.iter().rev().copied().find(|&m| m <= want).unwrap_or(MSS_TABLE[0]);
        SynOptions { mss, wscale: wscale.map(|w| w.min(14)), sack, timestamps }
    }

    fn encode(self) -> u32 {
        let mss = MSS_TABLE.iter().position(|&m| m == self.mss).unwrap_or(0) as u32;
        let ws = self.wscale.map_or(15, |w| u32::from(w.min(14)));
        mss | ws << 3 | u32::from(self.sack) << 7 | u32::from(self.timestamps) << 8
    }

    fn decode(v: u32) -> Option<SynOptions> {
        if v >> OPTION_BITS != 0 {
            return None;
        }
        let ws = (v >> 3 & 15) as u8;
        Some(SynOptions {
            mss: MSS_TABLE[(v & 7) as usize],
            wscale: (ws != 15).then_some(ws),
            sack: v >> 7 & 1 == 1,
            timestamps: v >> 8 & 1 == 1,
        })
    }
}

/// Why an ACK's cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// Made by the appliance for this flow, but one period too long ago. (Older cookies
    /// cannot be told from forgeries and are `Invalid`.)
    Stale,
    /// Not one the appliance made for this flow and sequence number.
    Invalid,
}

/// The cookie period of a time in seconds.
#[inline]
pub fn period(now_secs: u64) -> u32 {
    (now_secs / PERIOD_SECS) as u32
}

/// The two key slots, shared by all workers (read per SYN and ACK, written by the control
/// thread on rotation).
#[derive(Debug)]
pub struct CookieKeys {
    base: [u64; 2],
    slots: [[AtomicU64; 2]; 2],
}

impl CookieKeys {
    /// Keys from random 128-bit values: the fixed one, then one per slot.
    pub fn new(base: [u64; 2], seeds: [[u64; 2]; 2]) -> CookieKeys {
        CookieKeys { base, slots: seeds.map(|k| k.map(AtomicU64::new)) }
    }

    /// The keys as words: the fixed one, then one per slot (what a session region keeps, for
    /// [`CookieKeys::new`] in the next process).
    pub fn words(&self) -> ([u64; 2], [[u64; 2]; 2]) {
        (self.base, [0, 1].map(|i| [self.slots[i][0].load(Relaxed), self.slots[i][1].load(Relaxed)]))
    }

    fn slot(t: u32) -> usize {
        ((u64::from(t) / KEY_PERIODS) % 2) as usize
    }

    fn key(&self, t: u32) -> (u64, u64) {
        let s = &self.slots[Self::slot(t)];
        (s[0].load(Relaxed), s[1].load(Relaxed))
    }

    /// Whether [`CookieKeys::rotate`] would put a fresh key in now (so one need be made only
    /// then).
    pub fn rotation_due(&self, now_t: u32, last_rotated: Option<u64>) -> bool {
        let next_start = (u64::from(now_t) / KEY_PERIODS + 1) * KEY_PERIODS;
        next_start - u64::from(now_t) <= u64::from(MAX_AGE) + 1 && last_rotated != Some(next_start)
    }

    /// Call at least once per period with the current period and a fresh random key: if the
    /// next key period starts within `MAX_AGE + 1` periods, its slot (the one not in use, and
    /// holding a key no valid cookie uses any more) gets `fresh`. Returns true if it did.
    pub fn rotate(&self, now_t: u32, fresh: [u64; 2], last_rotated: &mut Option<u64>) -> bool {
        if !self.rotation_due(now_t, *last_rotated) {
            return false;
        }
        let next_start = (u64::from(now_t) / KEY_PERIODS + 1) * KEY_PERIODS;
        let s = &self.slots[((next_start / KEY_PERIODS) % 2) as usize];
        s[0].store(fresh[0], Relaxed);
        s[1].store(fresh[1], Relaxed);
        *last_rotated = Some(next_start);
        true
    }

    fn hasher(k: (u64, u64), flow: &FlowKey) -> SipHasher24 {
        let mut h = SipHasher24::new_with_keys(k.0, k.1);
        h.write_u128(flow.src.0);
        h.write_u128(flow.dst.0);
        h.write_u32(u32::from(flow.src_port) << 16 | u32::from(flow.dst_port));
        h
    }

    fn h1(&self, flow: &FlowKey) -> u32 {
        Self::hasher((self.base[0], self.base[1]), flow).finish() as u32
    }

    /// The 15-bit MAC, already in place above the options.
    fn mac(&self, flow: &FlowKey, t: u32, client_isn: u32, opts: u32) -> u32 {
        let mut h = Self::hasher(self.key(t), flow);
        h.write_u32(t);
        h.write_u32(client_isn);
        h.write_u32(opts);
        (h.finish() as u32 & 0x7fff) << OPTION_BITS
    }

    /// The initial sequence number of the SYN-ACK answering a SYN of `flow` (client to VIP)
    /// with sequence number `client_isn`, made in period `t`.
    pub fn make(&self, flow: &FlowKey, client_isn: u32, t: u32, opts: SynOptions) -> u32 {
        let o = opts.encode();
        self.h1(flow)
            .wrapping_add(client_isn)
            .wrapping_add((t & 0xff) << 24)
            .wrapping_add(o | self.mac(flow, t, client_isn, o))
    }

    /// Checks the ACK of `flow` with sequence number `seq` (client_isn + 1) acknowledging
    /// `ack` (cookie + 1) in period `now_t`; the options the SYN offered if valid.
    pub fn check(&self, flow: &FlowKey, seq: u32, ack: u32, now_t: u32) -> Result<SynOptions, CookieError> {
        let (client_isn, cookie) = (seq.wrapping_sub(1), ack.wrapping_sub(1));
        let v = cookie.wrapping_sub(self.h1(flow)).wrapping_sub(client_isn);
        let age = (now_t & 0xff).wrapping_sub(v >> 24) & 0xff;
        // One period past the window the cookie can still be checked (its key is kept at least
        // that long): a genuine late cookie is `Stale`. Anything else outside is `Invalid`.
        if age > MAX_AGE + 1 {
            return Err(CookieError::Invalid);
        }
        let t = now_t.wrapping_sub(age);
        let o = v & ((1 << OPTION_BITS) - 1);
        if v & 0x00ff_ffff != o | self.mac(flow, t, client_isn, o) {
            return Err(CookieError::Invalid);
        }
        if age > MAX_AGE {
            return Err(CookieError::Stale);
        }
        SynOptions::decode(o).ok_or(CookieError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;
    use std::net::Ipv4Addr;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            src: Addr::v4(Ipv4Addr::new(198, 18, 1, 10)),
            dst: Addr::v4(Ipv4Addr::new(198, 18, 10, 2)),
            src_port: port,
            dst_port: 80,
            protocol: 6,
        }
    }

    fn keys() -> CookieKeys {
        CookieKeys::new([11, 12], [[1, 2], [3, 4]])
    }

    #[test]
    fn a_valid_cookie_gives_back_the_options_sent() {
        let k = keys();
        let cases = [
            SynOptions::from_syn(Some(1460), Some(7), true, true),
            SynOptions::from_syn(Some(1400), None, false, false),
            SynOptions::from_syn(None, Some(14), true, false),
            SynOptions::from_syn(Some(9000), Some(0), false, true),
        ];
        for (i, o) in cases.into_iter().enumerate() {
            for isn in [0u32, 1, 0x7fff_ffff, u32::MAX] {
                let t = 1000 + i as u32;
                let c = k.make(&flow(40000), isn, t, o);
                assert_eq!(k.check(&flow(40000), isn.wrapping_add(1), c.wrapping_add(1), t), Ok(o));
                // One period later still good; two, stale.
                assert_eq!(k.check(&flow(40000), isn.wrapping_add(1), c.wrapping_add(1), t + 1), Ok(o));
                assert_eq!(
                    k.check(&flow(40000), isn.wrapping_add(1), c.wrapping_add(1), t + 2),
                    Err(CookieError::Stale)
                );
            }
        }
    }

    #[test]
    fn options_round_to_what_the_table_can_say() {
        let o = SynOptions::from_syn(Some(1459), Some(20), true, false);
        assert_eq!(o.mss, 1440);
        assert_eq!(o.wscale, Some(14));
        assert_eq!(SynOptions::from_syn(Some(100), None, false, false).mss, 536);
        assert_eq!(SynOptions::from_syn(None, None, false, false).mss, 536);
    }

    #[test]
    fn altered_or_forged_cookies_are_refused() {
        let k = keys();
        let o = SynOptions::from_syn(Some(1460), Some(7), true, true);
        let t = 5000;
        let c = k.make(&flow(40000), 777, t, o);
        // Another flow, another client ISN, another acknowledgement number.
        assert!(k.check(&flow(40001), 778, c.wrapping_add(1), t).is_err());
        assert!(k.check(&flow(40000), 779, c.wrapping_add(1), t).is_err());
        for bit in 0..32 {
            let r = k.check(&flow(40000), 778, (c ^ 1 << bit).wrapping_add(1), t);
            assert!(r.is_err(), "bit {bit} flipped: {r:?}");
        }
        // Another key: nothing passes.
        let other = CookieKeys::new([11, 12], [[9, 9], [8, 8]]);
        assert!(other.check(&flow(40000), 778, c.wrapping_add(1), t).is_err());
        // Guessing: of 100 000 random acknowledgement numbers, about 2^-15 of those in the
        // right period pass, so a handful at most.
        let mut x = 0x1234_5678u32;
        let mut passed = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            passed += k.check(&flow(40000), 778, x, t).is_ok() as u32;
        }
        assert!(passed <= 3, "{passed} guesses passed");
    }

    #[test]
    fn a_cookie_from_a_future_period_is_refused() {
        let k = keys();
        let o = SynOptions::from_syn(Some(1460), None, false, false);
        let c = k.make(&flow(1), 10, 300, o);
        assert!(k.check(&flow(1), 11, c.wrapping_add(1), 299).is_err());
    }

    #[test]
    fn rotation_replaces_only_the_key_not_in_use_and_cookies_stay_valid() {
        let k = keys();
        let o = SynOptions::from_syn(Some(1460), Some(7), true, true);
        let mut last = None;
        // Period 6: key slot 1 (periods 4..8) is current; the next key period starts at 8,
        // within MAX_AGE + 1 = 2 periods: slot 0 (periods 8..12) gets the fresh key.
        let c6 = k.make(&flow(5), 100, 6, o);
        assert!(!k.rotation_due(5, None), "three periods before the next key period: not yet");
        assert!(k.rotation_due(6, None));
        assert!(k.rotate(6, [42, 43], &mut last));
        assert!(!k.rotation_due(7, last), "done for this key period");
        assert!(!k.rotate(6, [44, 45], &mut last), "once per key period");
        assert_eq!(k.check(&flow(5), 101, c6.wrapping_add(1), 7), Ok(o), "slot 1 untouched");
        // Period 8 uses the new key; a cookie of period 7 (old key) is still checked with it.
        let c7 = k.make(&flow(5), 100, 7, o);
        let c8 = k.make(&flow(5), 100, 8, o);
        assert_eq!(k.check(&flow(5), 101, c7.wrapping_add(1), 8), Ok(o));
        assert_eq!(k.check(&flow(5), 101, c8.wrapping_add(1), 8), Ok(o));
        assert!(!k.rotate(4, [1, 1], &mut None), "too early: slot in use");
    }
}
