//! Deterministic hashing. Every appliance behind an ECMP router must pick the same backend for
//! a flow without talking to the others, so nothing here may depend on a per-process seed.

/// The 64-bit finaliser of MurmurHash3: a bijection that spreads every input bit.
#[inline(always)]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hashes a byte string (for backend identities in Maglev's permutation).
pub fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    let mut h = mix64(seed ^ data.len() as u64);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix64(h ^ u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix64(h ^ u64::from_le_bytes(w) ^ 0x8000_0000_0000_0000);
    }
    h
}

/// Maps a 64-bit hash uniformly onto `0..n` without a division (Lemire's multiply-shift on
/// the hash's upper 32 bits).
#[inline(always)]
pub fn reduce(hash: u64, n: u32) -> u32 {
    (((hash >> 32) * u64::from(n)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values() {
        // Pinned: changing these moves every flow on every appliance at upgrade time.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_ne!(hash_bytes(b"abc", 0), hash_bytes(b"abc", 1));
        assert_ne!(hash_bytes(b"abc", 0), hash_bytes(b"abc\0", 0));
    }

    #[test]
    fn reduce_stays_in_range_and_spreads() {
        let n = 65537;
        let mut hits = vec![0u32; 16];
        for i in 0..100_000u64 {
            let r = reduce(mix64(i), n);
            assert!(r < n);
            hits[(r as usize * 16) / n as usize] += 1;
        }
        for h in hits {
            assert!((5_500..7_000).contains(&h), "{h}");
        }
    }
}
