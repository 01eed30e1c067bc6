/*
 * shim.h - exported (non-inline) wrappers around DPDK's `static inline`
 * functions and macro constants that bindgen cannot see.
 *
 * Rule: every symbol defined here is named `shim_<dpdk name>` and does
 * nothing but forward to the DPDK function or macro of the same name.
 * No logic lives in the shim; the Rust safe layer owns the policy.
 */
#ifndef DPDK_SYS_SHIM_H
#define DPDK_SYS_SHIM_H

#include <stdint.h>

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* ---- ethdev fast path ---- */
uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

/* ---- mbuf ---- */
struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp);
int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp,
				struct rte_mbuf **mbufs, unsigned int count);
void shim_rte_pktmbuf_free(struct rte_mbuf *m);
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
struct rte_mbuf *shim_rte_pktmbuf_lastseg(struct rte_mbuf *m);
/* rte_pktmbuf_mtod(m, void *) */
void *shim_rte_pktmbuf_mtod(const struct rte_mbuf *m);
uint16_t shim_rte_mbuf_refcnt_read(const struct rte_mbuf *m);

/*
 * rte_mempool_avail_count / rte_mempool_in_use_count are exported
 * functions in 22.11, so they are bound directly (no shim).
 */

/* ---- EAL: thread-locals and inline helpers ---- */
unsigned int shim_rte_lcore_id(void);
int shim_rte_errno(void);
void shim_rte_errno_set(int value);
uint64_t shim_rte_rdtsc(void);
void shim_rte_prefetch0(const volatile void *p);

/* ---- macro constants built from RTE_BIT64() or other expressions ---- */
extern const uint64_t shim_RTE_ETH_RSS_IP;
extern const uint64_t shim_RTE_ETH_RSS_TCP;
extern const uint64_t shim_RTE_ETH_RSS_UDP;
extern const uint64_t shim_RTE_ETH_RX_OFFLOAD_RSS_HASH;
extern const uint64_t shim_RTE_MBUF_F_RX_RSS_HASH;
extern const uint16_t shim_RTE_PKTMBUF_HEADROOM;
extern const uint16_t shim_RTE_MBUF_DEFAULT_BUF_SIZE;
extern const int32_t shim_SOCKET_ID_ANY;
extern const uint32_t shim_LCORE_ID_ANY;
extern const uint32_t shim_RTE_MAX_ETHPORTS;
extern const uint32_t shim_RTE_ETH_NAME_MAX_LEN;

#endif /* DPDK_SYS_SHIM_H */
