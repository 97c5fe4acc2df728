/* Latency mode (tracer latency): no per-packet events leave the kernel. Each
 * sighting adds the time since the packet's previous sighting to a histogram
 * of that segment (pair of hop codes), in an mmap-able array that user space
 * reads once per interval. Included only when LATENCY_MODE is defined.
 *
 * Hop codes, roles, N_HOPS and the histogram layout are generated from
 * tracer/kernel/hop_codes.py (c_definitions): HOP_<NAME>, ROLE_<ROLE>. The tc
 * codes of one direction are contiguous by role, the netfilter "after" code
 * follows its "before" one.
 */
#define N_SEGMENTS (N_HOPS * N_HOPS)
/* Rows after the segments: end-to-end time by conntrack direction (1, 2). */
#define E2E_ROW(dir) (N_SEGMENTS + (dir))
#define HIST_ROWS (N_SEGMENTS + 3)
/* Buckets: log2 split in 2^HIST_SUB_BITS linear sub-buckets: a bucket is at
 * most 1/16 (6.25%) of its value wide, so percentiles are good to a few %. */

/* HIST_SLICES copies of the histograms (and of hop_counts): CPU c adds to
 * copy c % HIST_SLICES, so CPUs do not bounce the cache lines of the busiest
 * buckets between them; user space sums the copies. Atomic adds remain for
 * CPUs that share a copy (more CPUs than slices). Set from user space:
 * min(CPUs, 8), at most ~13 MiB. */
#define HIST_SLICE (HIST_ROWS * HIST_BUCKETS)
BPF_F_TABLE("array", u32, u64, hist, HIST_SLICES * HIST_SLICE, BPF_F_MMAPABLE);
/* [N_HOPS + hop] = packets first seen at that hop. [hop], sightings there, is
 * left 0: user space derives it from the histograms (arrivals) plus the
 * starts, which saves a shared atomic add per sighting. */
BPF_F_TABLE("array", u32, u64, hop_counts, HIST_SLICES * 2 * N_HOPS, BPF_F_MMAPABLE);

static __always_inline u32 hist_slice(void)
{
    return bpf_get_smp_processor_id() % HIST_SLICES;
}

static __always_inline u32 tc_hop_code(u8 hook, u32 role)
{
    return (hook == HOOK_TC_EGRESS ? HOP_TC_EGRESS_EXTERNAL : HOP_TC_INGRESS_EXTERNAL) + (role & 3);
}

static __always_inline u32 nf_hop_code(u8 hook, u8 stage)
{
    u32 s = stage == NAT_AFTER ? 1 : 0;
    switch (hook) {
    case HOOK_NF_PREROUTING: return HOP_NF_PREROUTING_BEFORE + s;
    case HOOK_NF_INPUT: return HOP_NF_INPUT_BEFORE + s;
    case HOOK_NF_FORWARD: return HOP_NF_FORWARD;
    case HOOK_NF_OUTPUT: return HOP_NF_OUTPUT_BEFORE + s;
    default: return HOP_NF_POSTROUTING_BEFORE + s; /* HOOK_NF_POSTROUTING */
    }
}

/* Where a packet's journey through this host ends (see journeys.py). */
static __always_inline int terminal_hop(u32 hop)
{
    return hop == HOP_TC_INGRESS_CONTAINER || hop == HOP_TC_EGRESS_EXTERNAL || hop == HOP_NF_INPUT_AFTER;
}

static __always_inline u32 hist_bucket(u64 d)
{
    if (d < (1 << HIST_SUB_BITS))
        return d;
    u32 msb = 0;
    u64 v = d;
    if (v >> 32) { v >>= 32; msb += 32; }
    if (v >> 16) { v >>= 16; msb += 16; }
    if (v >> 8) { v >>= 8; msb += 8; }
    if (v >> 4) { v >>= 4; msb += 4; }
    if (v >> 2) { v >>= 2; msb += 2; }
    if (v >> 1) { msb += 1; }
    u32 sub = (d >> (msb - HIST_SUB_BITS)) & ((1 << HIST_SUB_BITS) - 1);
    u32 b = (msb - HIST_SUB_BITS + 1) * (1 << HIST_SUB_BITS) + sub;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static __always_inline void bump(void *map_value)
{
    if (map_value)
        __sync_fetch_and_add((u64 *)map_value, 1);
}

static __always_inline void hist_add(u32 slice, u32 row, u64 delta)
{
    u32 idx = slice * HIST_SLICE + row * HIST_BUCKETS + hist_bucket(delta);
    bump(hist.lookup(&idx));
}

/* A sighting of the packet in `seen`: the segment from its last hop. */
static __always_inline void latency_hop(struct pkt_slot *seen, u32 hop, u32 dir, u64 now)
{
    u32 slice = hist_slice();
    u32 prev = seen->last_hop;
    /* Another CPU may have stamped the slot a little after `now`: 0. */
    s64 d = now - seen->last_seen;
    s32 e2e = (u32)now - seen->first_seen;
    if (prev < N_HOPS)
        hist_add(slice, prev * N_HOPS + hop, d > 0 ? d : 0);
    if (terminal_hop(hop) && (dir == DIR_ORIGINAL || dir == DIR_REPLY))
        hist_add(slice, E2E_ROW(dir), e2e > 0 ? e2e : 0);
    /* A drop ends the packet: a later one with its fingerprint starts afresh. */
    seen->last_seen = hop == HOP_DROP ? 0 : now;
    seen->last_hop = hop == HOP_DROP ? N_HOPS : hop;
}

/* -DTRACER_COUNT_FAST (TRACER_BPF_CFLAGS, tests only): hops the fast paths
 * took, [0] tc, [1] netfilter, so a test can tell they ran; compiled out of
 * the shipped build. */
#ifdef TRACER_COUNT_FAST
BPF_PERCPU_ARRAY(fast_hops, u64, 2);
#endif

static __always_inline void count_fast(u32 i)
{
#ifdef TRACER_COUNT_FAST
    u64 *c = fast_hops.lookup(&i);
    if (c)
        *c += 1;
#endif
}

/* What a last sighting's slot must still hold: the packet's first time
 * (claims rewrite it, hops do not) and, above it, the low 32 bits of the
 * flow id its first sighting found (0: none; the netfilter sensor follows
 * on from tc only for the conntrack entry whose views are written). */
static __always_inline u64 latency_check(u32 first_seen, u64 flow_id)
{
    return first_seen | (flow_id << 32);
}

/* After a sighting at `hop` of the packet in slot k (-1: none): the next
 * hook of this skb follows on, unless the way through the host ends here. */
static __always_inline void latency_remember(struct last_sighting *last, u64 skb, s64 k, u32 hop, u64 check, u32 dir)
{
    last->skb = 0;
    if (k < 0 || terminal_hop(hop))
        return;
    last->skb = skb;
    last->slot = k;
    last->check = check;
    last->dir = dir;
}

/* After a full-path sighting at `hop` of the packet in slot k (-1: none),
 * whose first sighting found flow id `flow_id`: what the next hook of this
 * skb follows on from (tc_fast, nf_fast). */
static __always_inline void latency_remember_slot(struct last_sighting *last, u64 skb, s64 k, u32 hop, u64 flow_id,
                                                  u32 dir)
{
    struct pkt_slot *held = NULL;
    if (k >= 0) {
        u32 i = k;
        held = pcache.lookup(&i);
    }
    latency_remember(last, skb, held ? k : -1, hop, held ? latency_check(held->first_seen, flow_id) : 0, dir);
}

/* Returns the packet-cache slot index of the packet (for the sensors' fast
 * paths), or -1. */
static __always_inline s64 latency_sighting(struct fp_key *fp, u32 hop, u32 dir, u64 now)
{
    s64 window = hop == HOP_DROP ? DROP_WINDOW_NS : (s64)FP_WINDOW_NS;
    struct pkt_slot *b = NULL;
    u32 i;
    struct pkt_slot *a = pcache_set(fp, &b, &i); /* once: a miss claims from the same set */
    if (!a || !b)
        return -1;
    struct pkt_slot *seen = pcache_match(a, b, fp, now, window);
    if (seen) {
        latency_hop(seen, hop, dir, now);
        return seen == a ? i : i + 1;
    }
    if (hop == HOP_DROP)
        return -1; /* only drops of packets we are following */
    s64 k = (s64)(a->last_seen - b->last_seen) <= 0 ? i : i + 1; /* the slot pcache_claim takes */
    pcache_claim(a, b, fp, now, 0, hop);
    u32 start = hist_slice() * 2 * N_HOPS + N_HOPS + hop;
    bump(hop_counts.lookup(&start));
    return k;
}
