/* tc sensor: veth, bridge and host interfaces, attached with tcx (or clsact).
 * tc programs cannot read the sk_buff's fields the netfilter sensor reads
 * (its context is the __sk_buff view), so the fingerprint in the packet
 * cache joins their sightings to the netfilter sensor's. The context's own
 * address is the sk_buff's, though (a root program may compare it): the
 * fast path below uses it to recognise the next tc hook of the same skb. */

#define ETH_HLEN_ 14
#define ETH_P_IP_BE 0x0008   /* htons(ETH_P_IP) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */

/* Return value that lets other tc/tcx programs and the default action run:
 * TCX_NEXT for tcx, TC_ACT_UNSPEC for clsact. Both are -1. */
#define TC_CONTINUE -1

/* Headers in the linear part (almost always): parsed in place with plain
 * loads. Copying them to the stack first cost ~120 instructions of byte
 * loads and shifts on every packet, traced or not. Otherwise copied out with
 * the helper. */
static __always_inline int tc_parse_ipv6(struct __sk_buff *ctx, struct pkt *p)
{
    u8 *pip = (u8 *)(long)ctx->data + ETH_HLEN_;
    void *end = (void *)(long)ctx->data_end;
    if ((void *)(pip + 60) <= end)
        return parse_ipv6(p, pip, pip + 40, l4_follows_ipv6(pip[6]));
    u8 ip[40] __attribute__((aligned(8))) = {};
    u8 l4[20] __attribute__((aligned(8))) = {};
    if (bpf_skb_load_bytes(ctx, ETH_HLEN_, ip, sizeof(ip)) < 0)
        return 0;
    int l4_ok = l4_follows_ipv6(ip[6]) && (bpf_skb_load_bytes(ctx, ETH_HLEN_ + 40, l4, 20) == 0 ||
                                           bpf_skb_load_bytes(ctx, ETH_HLEN_ + 40, l4, 8) == 0);
    return parse_ipv6(p, ip, l4, l4_ok);
}

static __always_inline int tc_parse(struct __sk_buff *ctx, struct pkt *p)
{
    if (ctx->protocol == ETH_P_IPV6_BE)
        return tc_parse_ipv6(ctx, p);
    if (ctx->protocol != ETH_P_IP_BE)
        return 0;
    u8 *pip = (u8 *)(long)ctx->data + ETH_HLEN_;
    void *end = (void *)(long)ctx->data_end;
    if ((void *)(pip + 20) <= end) {
        u32 ihl = (pip[0] & 0x0f) * 4;
        u8 *pl4 = pip + ihl;
        if (ihl >= 20 && (void *)(pl4 + 20) <= end)
            return parse_ipv4(p, pip, pl4, 1);
    }
    u8 ip[20] __attribute__((aligned(8))) = {};
    u8 l4[20] __attribute__((aligned(8))) = {};
    if (bpf_skb_load_bytes(ctx, ETH_HLEN_, ip, sizeof(ip)) < 0)
        return 0;
    u32 ihl = (ip[0] & 0x0f) * 4;
    if (ihl < 20)
        return 0;
    int l4_ok = ip[9] == IPPROTO_TCP ? bpf_skb_load_bytes(ctx, ETH_HLEN_ + ihl, l4, 20) == 0
                                     : bpf_skb_load_bytes(ctx, ETH_HLEN_ + ihl, l4, 8) == 0;
    return parse_ipv4(p, ip, l4, l4_ok);
}

/* Ends here: arrived in a container's netns, or leaving by an external
 * interface (any host interface not marked bridge or veth). */
static __always_inline int tc_terminal(u8 hook, int in_ct, u32 ifindex)
{
    return hook == HOOK_TC_INGRESS ? in_ct != 0 : !in_ct && if_role(ifindex) == ROLE_EXTERNAL;
}

#if !defined(SIGHTING_EVENTS) && !defined(LATENCY_MODE)
/* Fast path, as the netfilter sensor's (bpf/netfilter.c): one skb crosses
 * several tc hooks in a row on one CPU (host ingress, then after routing the
 * bridge's and the veth's egress; the veth's and the bridge's ingress on the
 * way back), and the tc context is the sk_buff itself, so its address tells
 * a sighting of the same skb as the last one on this CPU. The packet is then
 * confirmed by its whole fingerprint against the slot it has, which skips
 * the flows lookup and the packet-cache search (tc_last: bpf/common.h). */

static __always_inline int tc_fast(struct last_sighting *from, struct last_sighting *last, struct pkt *p, u8 hook,
                                   int in_ct, u32 ifindex, u64 skb)
{
    u64 now = bpf_ktime_get_ns();
    struct pkt_slot *slot;
    struct journey *j = last_journey(from, now, &slot);
    if (!j)
        return 0;
    struct fp_key fp = {};
    fingerprint(&fp, p);
    if (!fp_equal(&slot->fp, &fp))
        return 0;
    struct sighting s = {};
    s.ifindex = ifindex;
    s.code = hop_code(hook, 0, in_ct);
    s.terminal = tc_terminal(hook, in_ct, ifindex);
    adopt_last(last, from, skb);
    return journey_fast_hop(last, slot, j, &s, now, p->ttl, p, p->ip_id, p->tot_len, SENSOR_TC);
}

#endif

#ifdef LATENCY_MODE
/* The fast path of latency mode: as tc_fast, the segment from the slot's
 * last hop added instead of a hop appended. */
static __always_inline int tc_fast(struct last_sighting *from, struct last_sighting *last, struct pkt *p, u8 hook,
                                   int in_ct, u32 ifindex, u64 skb)
{
    u64 now = bpf_ktime_get_ns();
    struct pkt_slot *slot = last_slot(from, now);
    if (!slot || slot->first_seen != (u32)from->check)
        return 0;
    struct fp_key fp = {};
    fingerprint(&fp, p);
    if (!fp_equal(&slot->fp, &fp))
        return 0;
    u32 hop = tc_hop_code(hook, in_ct ? ROLE_CONTAINER : if_role(ifindex));
    u32 k = from->slot;
    u64 check = from->check;
    u32 dir = from->dir;
    latency_hop(slot, hop, dir, now);
    latency_remember(last, skb, k, hop, check, dir);
    count_fast(0);
    return 1;
}
#endif

#ifndef SIGHTING_EVENTS
/* Whose last sighting has this packet's journey: this sensor's, for the
 * next tc hook of the same skb; else the netfilter sensor's, for the first
 * tc hook after netfilter hooks of an skb tc did not see last (a packet the
 * host sends: OUTPUT, POSTROUTING, then the egress device). */
static __always_inline struct last_sighting *tc_known(struct last_sighting *last, u64 skb)
{
    if (last->skb == skb)
        return last;
    int zero = 0;
    struct last_sighting *nl = nf_last.lookup(&zero);
    return nl && nl->skb == skb ? nl : NULL;
}
#endif

static __always_inline int tc_sense(struct __sk_buff *ctx, u8 hook, u8 flags)
{
#ifdef TRACER_NOOP
    return TC_CONTINUE;
#endif
    struct pkt p = {};
    if (!tc_parse(ctx, &p))
        return TC_CONTINUE;
#ifndef SIGHTING_EVENTS
    int zero = 0;
    struct last_sighting *last = tc_last.lookup(&zero);
    if (!last)
        return TC_CONTINUE;
    u64 skb = (u64)(long)ctx;
#ifndef TRACER_NO_TC_FAST /* -DTRACER_NO_TC_FAST (TRACER_BPF_CFLAGS): measure without it */
    struct last_sighting *from = tc_known(last, skb);
    if (from && tc_fast(from, last, &p, hook, flags & FLAG_IN_CONTAINER_NS, ctx->ifindex, skb))
        return TC_CONTINUE;
#endif
#endif

    /* Past the fast path: a traced packet's first sighting on this CPU
     * (nearly always its journey's claim), whose packet-cache set is a cold
     * line. Loaded now, it comes in while the flows lookup walks its own
     * cold lines. An untraced packet loads it too, overlapped the same way.
     * The fingerprint and the view's key first: the fewer instructions
     * between the load and the lookup's, the more the two misses overlap. */
    struct fp_key fp = {};
    fingerprint(&fp, &p);
    struct flow_key view = {};
    int swapped = flow_key_canonical(&view, &p.key);
    pcache_touch(&fp);
    u32 flow_dir = 0;
    struct flow_val *flow = flow_find_canonical(&view, swapped, &flow_dir);
    if (!flow && !(filter_match(&p.key) && sampled(&p.key) && pcap_match_tc(ctx)))
        return TC_CONTINUE;

    u64 now = bpf_ktime_get_ns();
#ifdef LATENCY_MODE
    u32 role = (flags & FLAG_IN_CONTAINER_NS) ? ROLE_CONTAINER : if_role(ctx->ifindex);
    u32 hop = tc_hop_code(hook, role);
    u32 dir = flow_dir;
    s64 k = latency_sighting(&fp, hop, dir, now);
    latency_remember_slot(last, skb, k, hop, flow ? flow->flow_id : 0, dir); /* for tc_fast, nf_known */
    return TC_CONTINUE;
#endif
#if defined(SIGHTING_EVENTS) || defined(LATENCY_MODE) /* latency mode returned above */
    struct event e = {};
    e.flags = flags;
    e.packet_id = packet_identity(&fp, now, &e.flags);
    e.ktime_ns = now;
    fill_event(&e, &p, hook);
    e.ifindex = ctx->ifindex;
    if (flow) {
        e.flow_id = flow->flow_id;
        e.direction = flow_dir;
    }
    emit(&e, SENSOR_TC);
#else
    int in_ct = flags & FLAG_IN_CONTAINER_NS;
    struct sighting s = {};
    s.ifindex = ctx->ifindex;
    s.code = hop_code(hook, 0, in_ct);
    s.terminal = tc_terminal(hook, in_ct, ctx->ifindex);
    if (flow) {
        s.flow_id = flow->flow_id;
        s.direction = flow_dir;
    }
    u64 held = 0;
    s64 k = journey_sighting(&fp, &p, &s, now, SENSOR_TC, &held);
    remember_journey(last, skb, k, held); /* for the next tc hook of this skb (tc_fast) */
#endif
    return TC_CONTINUE;
}

#ifdef TRC_SHARED_ENTRIES
/* One body for the four programs below: the loader writes hook | flags << 8
 * into it (trc_param; the programs: tracer/sensors/tc.py VARIANTS). */
int trc_tc(struct __sk_buff *ctx)
{
    u64 v = trc_param();
    return tc_sense(ctx, v, v >> 8);
}
#else
/* Host-netns interfaces (external NICs, bridges, host-side veths). */
int trc_tc_in(struct __sk_buff *ctx) { return tc_sense(ctx, HOOK_TC_INGRESS, 0); }
int trc_tc_eg(struct __sk_buff *ctx) { return tc_sense(ctx, HOOK_TC_EGRESS, 0); }
/* A container's eth0, inside its netns (its ifindex is only unique there). */
int trc_tc_in_ct(struct __sk_buff *ctx) { return tc_sense(ctx, HOOK_TC_INGRESS, FLAG_IN_CONTAINER_NS); }
int trc_tc_eg_ct(struct __sk_buff *ctx) { return tc_sense(ctx, HOOK_TC_EGRESS, FLAG_IN_CONTAINER_NS); }
#endif
