/* The user's pcap-filter expression, applied where a connection is first
 * recognised (an unknown flow's packet, see tc.c, netfilter.c, drops.c);
 * known flows skip it, so a NAT'd reply still belongs to its connection.
 *
 * With -DPCAP_FILTER, pcap_filter_run() precedes this file: libpcap's
 * classic BPF for the expression, translated to C by tracer/cbpf.py. It
 * reads the packet from its IP header (DLT_RAW) out of a per-CPU buffer
 * holding the first PCAP_SNAP bytes; a load beyond them rejects the packet,
 * as libpcap does beyond its captured length. `len` is the packet's length
 * from its IP header: IPv4's total length, IPv6's payload length + 40 (what
 * the capture's `length` column holds, so `show` answers the same).
 * Self-contained (no struct pkt): tests load it alone (tests/e2e/test_pcap_filter.py). */
#ifdef PCAP_FILTER
struct pcap_buf {
    u8 b[PCAP_SNAP + 8]; /* slack: masked indirect loads stay inside */
};
BPF_PERCPU_ARRAY(pcap_scratch, struct pcap_buf, 1);

/* 20 <= *len <= PCAP_SNAP, in a form the verifier follows: clang would
 * merge two compares into one unsigned range check it cannot (the asm
 * statements keep them apart). */
static __always_inline int pcap_bounded(u64 *len)
{
    u64 n = *len; /* 64-bit: no zero-extending copy that the compares would bound instead */
    asm volatile("%0 &= %1" : "+r"(n) : "i"(2 * PCAP_SNAP - 1));
    if (n > PCAP_SNAP)
        return 0;
    asm volatile("" : "+r"(n));
    if (n < 20)
        return 0;
    *len = n;
    return 1;
}

/* Caplen and wirelen from the copied bytes (at least 20): the packet's
 * length from its IP header bounds both. IPv6 bytes 2-3 are the flow
 * label's: its payload length is at 4-5. */
static __always_inline int pcap_run_copied(struct pcap_buf *buf, u32 caplen)
{
    if (caplen < 20)
        return 0;
    u32 wirelen = (buf->b[0] >> 4) == 6 ? ((u32)buf->b[4] << 8 | buf->b[5]) + 40 : (u32)buf->b[2] << 8 | buf->b[3];
    if (caplen > wirelen)
        caplen = wirelen;
    return pcap_filter_run(buf->b, caplen, wirelen);
}

/* tc: the frame after its Ethernet header, through the helper (which reads
 * non-linear skbs too). */
static __always_inline int pcap_match_tc(struct __sk_buff *ctx)
{
    int zero = 0;
    struct pcap_buf *buf = pcap_scratch.lookup(&zero);
    if (!buf || ctx->len < 14 + 20)
        return 0;
    u64 len = ctx->len - 14;
    if (len > PCAP_SNAP)
        len = PCAP_SNAP;
    if (!pcap_bounded(&len))
        return 0;
    if (bpf_skb_load_bytes(ctx, 14, buf->b, len) < 0)
        return 0;
    return pcap_run_copied(buf, len);
}

/* A kernel sk_buff (netfilter, tracepoints): the linear bytes from the
 * network header on (up to skb->tail). */
static __always_inline int pcap_match_skb(u64 skb)
{
    int zero = 0;
    struct pcap_buf *buf = pcap_scratch.lookup(&zero);
    u64 head = 0;
    u16 nh = 0;
    u32 tail = 0;
    if (!buf)
        return 0;
    bpf_probe_read_kernel(&head, sizeof(head), (void *)(skb + OFF_SKB_HEAD));
    bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + OFF_SKB_NETWORK_HEADER));
    bpf_probe_read_kernel(&tail, sizeof(tail), (void *)(skb + OFF_SKB_TAIL));
    if (!head || nh == 0xffff || tail <= nh)
        return 0;
    u64 len = tail - nh;
    if (len > PCAP_SNAP)
        len = PCAP_SNAP;
    if (!pcap_bounded(&len))
        return 0;
    if (bpf_probe_read_kernel(buf->b, len, (void *)(head + nh)) < 0)
        return 0;
    return pcap_run_copied(buf, len);
}
#else
#define pcap_match_tc(ctx) 1
#define pcap_match_skb(skb) 1
#endif
