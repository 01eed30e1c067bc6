/*
 * shim.c - see shim.h. Each function forwards to one DPDK inline function
 * or macro and adds nothing else.
 */
#include "shim.h"

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>

uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp,
				struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void shim_rte_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len);
}

char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len);
}

char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

struct rte_mbuf *shim_rte_pktmbuf_lastseg(struct rte_mbuf *m)
{
	return rte_pktmbuf_lastseg(m);
}

void *shim_rte_pktmbuf_mtod(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t shim_rte_mbuf_refcnt_read(const struct rte_mbuf *m)
{
	return rte_mbuf_refcnt_read(m);
}

unsigned int shim_rte_lcore_id(void)
{
	return rte_lcore_id();
}

int shim_rte_errno(void)
{
	return rte_errno;
}

void shim_rte_errno_set(int value)
{
	rte_errno = value;
}

uint64_t shim_rte_rdtsc(void)
{
	return rte_rdtsc();
}

void shim_rte_prefetch0(const volatile void *p)
{
	rte_prefetch0(p);
}

const uint64_t shim_RTE_ETH_RSS_IP = RTE_ETH_RSS_IP;
const uint64_t shim_RTE_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
const uint64_t shim_RTE_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
const uint64_t shim_RTE_ETH_RX_OFFLOAD_RSS_HASH = RTE_ETH_RX_OFFLOAD_RSS_HASH;
const uint64_t shim_RTE_MBUF_F_RX_RSS_HASH = RTE_MBUF_F_RX_RSS_HASH;
const uint16_t shim_RTE_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM;
const uint16_t shim_RTE_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE;
const int32_t shim_SOCKET_ID_ANY = SOCKET_ID_ANY;
const uint32_t shim_LCORE_ID_ANY = LCORE_ID_ANY;
const uint32_t shim_RTE_MAX_ETHPORTS = RTE_MAX_ETHPORTS;
const uint32_t shim_RTE_ETH_NAME_MAX_LEN = RTE_ETH_NAME_MAX_LEN;
