/* Shared by every sensor: header parsing, the in-kernel filter, packet and
 * flow identity, and the ring buffer.
 *
 * Prepended at load time (see tracer/kernel/program.py):
 *   - struct event and the HOOK_/NAT_/DIR_/SENSOR_ codes (tracer/events.py)
 *   - OFF_* macros: struct member offsets read from the running kernel's BTF
 *   - FILTER_* macros: which filters are on (the values live in maps)
 */
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/in.h>

#define IP_CT_IS_REPLY 3
#define IP_CT_UNTRACKED 7
#define NFCT_INFOMASK 7UL
/* Flow id from the nf_conn address: unique among live entries (they sit in
 * the kernel's direct map, 8-byte aligned) and below 2^53 for JSON readers. */
#define FLOW_ID(ct) (((ct) & 0xffffffffffffULL) >> 3)

/* A packet's addresses as seen at one hop (network byte order throughout). */
struct flow_key {
    u32 saddr;
    u32 daddr;
    u16 sport;
    u16 dport;
    u32 proto;
};

struct flow_val {
    u64 flow_id;   /* nf_conn address */
    u32 reply_sig; /* which reply tuple the views were written for */
    u32 direction;
};

/* NAT-invariant fingerprint: nothing NAT or forwarding rewrites. */
struct fp_key {
    u32 seq;
    u32 ack;
    u16 ip_id;
    u16 tot_len;
    u16 proto;
    u16 tcp_flags;
};

struct fp_val {
    u64 packet_id;
    u64 last_seen;
    u64 first_seen; /* latency mode: end-to-end time */
    u32 last_hop;   /* latency mode: hop code of the last sighting */
    u32 _pad;
};

struct skb_val {
    u64 packet_id;
    struct fp_key fp;
};

struct pkt {
    struct flow_key key;
    u32 seq;
    u32 ack;
    u16 ip_id;
    u16 tot_len;
    u8 ttl;
    u8 tcp_flags;
};

/* Tracked connections: every view of a traced flow (both directions, both
 * sides of NAT) -> flow id. Filled by the netfilter sensor from conntrack. */
BPF_TABLE("lru_hash", struct flow_key, struct flow_val, flows, FLOW_ENTRIES);
/* Fingerprint -> packet id, so later sensors reuse the first sensor's id.
 * Written once per traced packet: per-CPU LRU lists avoid a shared lock. */
#define BPF_F_NO_COMMON_LRU_ 2
BPF_F_TABLE("lru_hash", struct fp_key, struct fp_val, packets, PACKET_ENTRIES, BPF_F_NO_COMMON_LRU_);
/* skb address -> packet id, for the drop sensor (only traced skbs land here). */
BPF_F_TABLE("lru_hash", u64, struct skb_val, skbs, PACKET_ENTRIES, BPF_F_NO_COMMON_LRU_);
/* Filter values, written by user space before attaching. */
BPF_HASH(filter_ports, u16, u8, 64);
BPF_HASH(filter_hosts, u32, u8, 256);
BPF_HASH(filter_ctr_addrs, u32, u8, 1024);
BPF_HASH(filter_ctr_ports, u16, u8, 1024);
/* [sensor*2] = events emitted, [sensor*2+1] = events lost (ring buffer full). */
BPF_PERCPU_ARRAY(counters, u64, 2 * N_SENSORS);
BPF_PERCPU_ARRAY(id_seq, u64, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* Parse an IPv4 header and the start of its L4 header from byte buffers. */
static __always_inline int parse_ipv4(struct pkt *p, const u8 *ip, const u8 *l4, int l4_ok)
{
    if ((ip[0] >> 4) != 4)
        return 0;
    p->key.proto = ip[9];
    p->ttl = ip[8];
    __builtin_memcpy(&p->tot_len, ip + 2, 2);
    __builtin_memcpy(&p->ip_id, ip + 4, 2);
    __builtin_memcpy(&p->key.saddr, ip + 12, 4);
    __builtin_memcpy(&p->key.daddr, ip + 16, 4);
    /* Non-first fragments carry no L4 header. */
    if (((ip[6] & 0x1f) | ip[7]) != 0 || !l4_ok)
        return 1;
    if (p->key.proto == IPPROTO_TCP) {
        __builtin_memcpy(&p->key.sport, l4, 2);
        __builtin_memcpy(&p->key.dport, l4 + 2, 2);
        __builtin_memcpy(&p->seq, l4 + 4, 4);
        __builtin_memcpy(&p->ack, l4 + 8, 4);
        p->tcp_flags = l4[13];
    } else if (p->key.proto == IPPROTO_UDP) {
        __builtin_memcpy(&p->key.sport, l4, 2);
        __builtin_memcpy(&p->key.dport, l4 + 2, 2);
        /* UDP length + checksum are not rewritten by NAT... the checksum is,
         * so only the length goes into the fingerprint. */
        __builtin_memcpy(&p->seq, l4 + 4, 2);
    } else if (p->key.proto == IPPROTO_ICMP) {
        /* Conntrack keys echo by id alone (src.u.icmp.id), so the key has
         * the id as "source port" and no destination port; NAT may rewrite
         * the id, so the fingerprint uses type, code and sequence instead. */
        __builtin_memcpy(&p->key.sport, l4 + 4, 2);
        __builtin_memcpy(&p->seq, l4, 2);
        __builtin_memcpy(&p->ack, l4 + 6, 2);
    }
    return 1;
}

/* The user's filter. Each option given must match (AND across options); an
 * option matches when either end of the packet does. */
static __always_inline int filter_match(struct flow_key *k)
{
#ifdef FILTER_PROTO
    if (k->proto != FILTER_PROTO)
        return 0;
#endif
#ifdef FILTER_PORT
    if (k->sport != FILTER_PORT && k->dport != FILTER_PORT)
        return 0;
#endif
#ifdef FILTER_PORTS
    if (!filter_ports.lookup(&k->sport) && !filter_ports.lookup(&k->dport))
        return 0;
#endif
#ifdef FILTER_HOSTS
    if (!filter_hosts.lookup(&k->saddr) && !filter_hosts.lookup(&k->daddr))
        return 0;
#endif
#ifdef FILTER_CONTAINERS
    /* The container's own address (after DNAT, or as a MASQUERADE source) or
     * one of its published host ports (before DNAT). */
    if (!filter_ctr_addrs.lookup(&k->saddr) && !filter_ctr_addrs.lookup(&k->daddr) &&
        !filter_ctr_ports.lookup(&k->sport) && !filter_ctr_ports.lookup(&k->dport))
        return 0;
#endif
    return 1;
}

/* 1-in-SAMPLE_N flows, chosen by a hash that is the same in both directions
 * (addresses and ports combined with xor), so a chosen flow is followed whole.
 * Callers hash the conntrack original tuple where they have it. */
static __always_inline int sampled(struct flow_key *k)
{
#ifdef SAMPLE_N
    u32 h = (k->saddr ^ k->daddr) * 0x9E3779B1u;
    h ^= ((u32)(k->sport ^ k->dport) | (k->proto << 16)) * 0x85EBCA6Bu;
    h ^= h >> 15;
    return h % SAMPLE_N == 0;
#else
    return 1;
#endif
}

static __always_inline void fingerprint(struct fp_key *fp, struct pkt *p)
{
    fp->seq = p->seq;
    fp->ack = p->ack;
    fp->ip_id = p->ip_id;
    fp->tot_len = p->tot_len;
    fp->proto = p->key.proto;
    fp->tcp_flags = p->tcp_flags;
}

static __always_inline u64 new_packet_id(void)
{
    int zero = 0;
    u64 *seq = id_seq.lookup(&zero);
    u64 n = 0;
    if (seq) {
        *seq += 1;
        n = *seq;
    }
    /* Per-CPU counters, CPU above them: unique without atomics, and below
     * 2^53 so JSON readers that use doubles (jq, JavaScript) keep it exact. */
    return ((u64)(bpf_get_smp_processor_id() + 1) << PACKET_ID_CPU_SHIFT) | (n & ((1ULL << PACKET_ID_CPU_SHIFT) - 1));
}

/* The packet's id: the one an earlier sensor gave it, else a new one. */
static __always_inline u64 packet_identity(struct fp_key *fp, u64 now, u8 *flags)
{
    struct fp_val *seen = packets.lookup(fp);
    if (seen && now - seen->last_seen < FP_WINDOW_NS) {
        seen->last_seen = now;
        return seen->packet_id;
    }
    struct fp_val fresh = {};
    fresh.packet_id = new_packet_id();
    fresh.last_seen = now;
    fresh.first_seen = now;
    packets.update(fp, &fresh);
    *flags |= FLAG_NEW_PACKET;
    return fresh.packet_id;
}

static __always_inline void fill_event(struct event *e, struct pkt *p, u8 hook)
{
    e->hook = hook;
    e->protocol = p->key.proto;
    e->src_ip = p->key.saddr;
    e->dst_ip = p->key.daddr;
    e->src_port = p->key.sport;
    e->dst_port = p->key.dport;
    e->ip_id = p->ip_id;
    e->length = p->tot_len;
    e->ttl = p->ttl;
    e->tcp_flags = p->tcp_flags;
    e->tcp_seq = p->seq;
    e->tcp_ack = p->ack;
    e->cpu = bpf_get_smp_processor_id();
}

static __always_inline void count(int slot)
{
    u64 *c = counters.lookup(&slot);
    if (c)
        *c += 1;
}

static __always_inline void emit(struct event *e, int sensor)
{
    if (events.ringbuf_output(e, sizeof(*e), 0) == 0)
        count(sensor * 2);
    else
        count(sensor * 2 + 1);
}

/* Read IPv4 + L4 headers of a kernel sk_buff (netfilter and tracepoints). */
static __always_inline int parse_kernel_skb(struct pkt *p, u64 skb)
{
    u64 head = 0;
    u16 nh = 0;
    u8 ip[20] = {};
    u8 l4[20] = {};
    bpf_probe_read_kernel(&head, sizeof(head), (void *)(skb + OFF_SKB_HEAD));
    bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + OFF_SKB_NETWORK_HEADER));
    if (!head || nh == 0xffff)
        return 0;
    if (bpf_probe_read_kernel(ip, sizeof(ip), (void *)(head + nh)) < 0)
        return 0;
    u32 ihl = (ip[0] & 0x0f) * 4;
    int l4_ok = bpf_probe_read_kernel(l4, sizeof(l4), (void *)(head + nh + ihl)) == 0;
    return parse_ipv4(p, ip, l4, l4_ok);
}

static __always_inline u32 dev_ifindex(u64 dev)
{
    u32 ifindex = 0;
    if (dev)
        bpf_probe_read_kernel(&ifindex, sizeof(ifindex), (void *)(dev + OFF_DEV_IFINDEX));
    return ifindex;
}

static __always_inline u32 net_inum(u64 net)
{
    u32 inum = 0;
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(net + OFF_NET_INUM));
    return inum;
}
