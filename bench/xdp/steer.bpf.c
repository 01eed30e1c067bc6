// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
// Steering program for DPDK's net_af_xdp PMD (bench/xdp/measure.py loads it with the
// devarg `xdp_prog=steer.bpf.o`): an IPv4 frame whose destination is one of the appliance's
// data addresses (VIPs, the cluster tunnel address) goes to the AF_XDP socket of its queue,
// i.e. to DPDK; everything else (ARP, BGP, BFD and pings to the port's own address, IPv6,
// ...) is XDP_PASS, so the kernel keeps the port, its address and its neighbours.
//
// The set of addresses is the hash map `steer_dst`, filled from user space (bpftool, or
// bench/xdp/measure.py through bpf(2)); compile-time addresses may be added with
// -DSTEER_DST0=0x..., host order, which the program checks before the map.
//
// The PMD requires an XSKMAP named `xsks_map` (it inserts its socket at the queue's index).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

// Destination addresses steered into DPDK (network byte order) -> 1.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} steer_dst SEC(".maps");

// [0] frames redirected, [1] frames passed (per CPU, summed by the reader).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} steer_stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *n = bpf_map_lookup_elem(&steer_stats, &i);
	if (n)
		*n += 1;
}

static __always_inline int pass(void)
{
	count(1);
	return XDP_PASS;
}

SEC("xdp")
int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 dst;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return pass();
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return pass();
	dst = ip->daddr;
#ifdef STEER_DST0
	if (dst == bpf_htonl(STEER_DST0))
		goto steer;
#endif
	if (!bpf_map_lookup_elem(&steer_dst, &dst))
		return pass();
#ifdef STEER_DST0
steer:
#endif
	count(0);
	// No socket on this queue: the frame goes to the kernel rather than being dropped.
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
