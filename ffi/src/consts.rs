//! DPDK flag macros that bindgen cannot evaluate (they are built with
//! `RTE_BIT64()` or from other macros). They are written out here as Rust
//! constants so they can be used in `const` contexts; the unit tests below
//! check each one against the value the C compiler computes in `shim.c`.

/// `RTE_ETH_RSS_IP`: hash on IPv4/IPv6 addresses (incl. fragments, "other").
pub const ETH_RSS_IP: u64 = 0xa38c;
/// `RTE_ETH_RSS_TCP`: hash on IPv4/IPv6 TCP 4-tuples.
pub const ETH_RSS_TCP: u64 = 0x1_0410;
/// `RTE_ETH_RSS_UDP`: hash on IPv4/IPv6 UDP 4-tuples.
pub const ETH_RSS_UDP: u64 = 0x2_0820;
/// `RTE_ETH_RX_OFFLOAD_RSS_HASH`: deliver the RSS hash in the mbuf.
pub const ETH_RX_OFFLOAD_RSS_HASH: u64 = 1 << 19;
/// `RTE_MBUF_F_RX_RSS_HASH`: `ol_flags` bit saying `hash.rss` is valid.
pub const MBUF_F_RX_RSS_HASH: u64 = 1 << 1;

/// The hash types [`crate::Port::configure`] asks for when it enables RSS
/// (intersected with what the device supports).
pub const RSS_HF_DEFAULT: u64 = ETH_RSS_IP | ETH_RSS_TCP | ETH_RSS_UDP;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw;

    #[test]
    fn flag_constants_match_the_c_macros() {
        // SAFETY: these are immutable `const` globals defined in shim.c,
        // initialised at compile time; reading them is a plain load.
        unsafe {
            assert_eq!(ETH_RSS_IP, raw::shim_RTE_ETH_RSS_IP);
            assert_eq!(ETH_RSS_TCP, raw::shim_RTE_ETH_RSS_TCP);
            assert_eq!(ETH_RSS_UDP, raw::shim_RTE_ETH_RSS_UDP);
            assert_eq!(ETH_RX_OFFLOAD_RSS_HASH, raw::shim_RTE_ETH_RX_OFFLOAD_RSS_HASH);
            assert_eq!(MBUF_F_RX_RSS_HASH, raw::shim_RTE_MBUF_F_RX_RSS_HASH);
        }
    }

    #[test]
    fn bindgen_constants_match_the_c_macros() {
        // SAFETY: as above, immutable globals from shim.c.
        unsafe {
            assert_eq!(raw::RTE_PKTMBUF_HEADROOM, u32::from(raw::shim_RTE_PKTMBUF_HEADROOM));
            assert_eq!(raw::RTE_MBUF_DEFAULT_BUF_SIZE, u32::from(raw::shim_RTE_MBUF_DEFAULT_BUF_SIZE));
            assert_eq!(raw::SOCKET_ID_ANY, raw::shim_SOCKET_ID_ANY);
            assert_eq!(raw::LCORE_ID_ANY, raw::shim_LCORE_ID_ANY);
            assert_eq!(raw::RTE_MAX_ETHPORTS, raw::shim_RTE_MAX_ETHPORTS);
            assert_eq!(raw::RTE_ETH_NAME_MAX_LEN, raw::shim_RTE_ETH_NAME_MAX_LEN);
        }
    }
}
