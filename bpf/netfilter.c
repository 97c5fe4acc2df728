/* Netfilter sensor: BPF netfilter links on the IPv4 hooks of the host netns,
 * at priorities just before and just after NAT. Sees the skb address and the
 * conntrack entry, whose tuples give the NAT mapping exactly. */

struct nf_ctx {
    u64 state; /* const struct nf_hook_state * */
    u64 skb;   /* struct sk_buff * */
};

/* One conntrack tuple read into flow_key form. */
static __always_inline void read_tuple(struct flow_key *k, u64 tuple)
{
    u8 t[TUPLE_SIZE] = {};
    bpf_probe_read_kernel(t, sizeof(t), (void *)tuple);
    __builtin_memcpy(&k->saddr, t + OFF_TUPLE_SRC_U3, 4);
    __builtin_memcpy(&k->sport, t + OFF_TUPLE_SRC_U, 2);
    __builtin_memcpy(&k->daddr, t + OFF_TUPLE_DST_U3, 4);
    __builtin_memcpy(&k->dport, t + OFF_TUPLE_DST_U, 2);
    k->proto = t[OFF_TUPLE_DST_PROTONUM];
    if (k->proto == IPPROTO_ICMP)
        k->dport = 0; /* type/code: not part of our ICMP key (see parse_ipv4) */
}

static __always_inline void invert(struct flow_key *out, struct flow_key *in)
{
    out->saddr = in->daddr;
    out->daddr = in->saddr;
    out->proto = in->proto;
    if (in->proto == IPPROTO_ICMP) {
        out->sport = in->sport; /* echo id: same in both directions */
        return;
    }
    out->sport = in->dport;
    out->dport = in->sport;
}

/* Remember every view of a traced connection, so tc sensors on either side of
 * NAT and packets of either direction find it: orig and inverted reply are the
 * original direction before and after NAT, reply and inverted orig the reply. */
static __always_inline void track_flow(struct flow_key *orig, struct flow_key *reply, u64 ct, u32 sig)
{
    struct flow_key view = {};
    struct flow_val v = {};
    v.flow_id = FLOW_ID(ct);
    v.reply_sig = sig;
    v.direction = DIR_ORIGINAL;
    flows.update(orig, &v);
    invert(&view, reply);
    flows.update(&view, &v);
    v.direction = DIR_REPLY;
    flows.update(reply, &v);
    invert(&view, orig);
    flows.update(&view, &v);
}

/* The drop sensor finds traced packets by skb address. Written once per
 * packet, not per hook: a lookup is cheaper than an LRU update. */
static __always_inline void remember_skb(u64 skb, struct skb_val *sv)
{
    struct skb_val *old = skbs.lookup(&skb);
    if (old && old->packet_id == sv->packet_id && old->fp.seq == sv->fp.seq && old->fp.ip_id == sv->fp.ip_id)
        return;
    skbs.update(&skb, sv);
}

/* Is this conntrack entry's connection traced? Decided from the entry alone
 * (2 kernel reads and a map lookup for untraced traffic); a new match gets
 * its views written to the flows map. */
static __always_inline int ct_traced(u64 ct)
{
    struct flow_key orig = {}, reply = {};
    read_tuple(&orig, ct + OFF_CT_TUPLE_ORIG);
#ifdef FILTER_PROTO
    if (orig.proto != FILTER_PROTO)
        return 0;
#endif
    struct flow_val *known = flows.lookup(&orig);
    read_tuple(&reply, ct + OFF_CT_TUPLE_REPLY);
    if (!known && !((filter_match(&orig) || filter_match(&reply)) && sampled(&orig)))
        return 0;
    /* Write the views once per NAT setup (the reply tuple changes when NAT
     * binds), not per packet. */
    u32 sig = reply.saddr ^ reply.daddr ^ ((u32)reply.sport << 16 | reply.dport);
    if (!known || known->reply_sig != sig || known->flow_id != FLOW_ID(ct))
        track_flow(&orig, &reply, ct, sig);
    return 1;
}

static __always_inline int nf_sense(struct nf_ctx *ctx, u8 hook, u8 stage)
{
    u64 skb = ctx->skb;
    u64 state = ctx->state;
    u64 nfct = 0;
    bpf_probe_read_kernel(&nfct, sizeof(nfct), (void *)(skb + OFF_SKB_NFCT));
    u64 ct = nfct & ~NFCT_INFOMASK;
    u32 ctinfo = nfct & NFCT_INFOMASK;
    u32 direction = 0;
    struct pkt p = {};
    if (ct && ctinfo != IP_CT_UNTRACKED) {
        /* Untraced connections leave before the packet is even parsed. */
        if (!ct_traced(ct) || !parse_kernel_skb(&p, skb))
            return 1;
        direction = ctinfo >= IP_CT_IS_REPLY ? DIR_REPLY : DIR_ORIGINAL;
    } else {
        ct = 0;
        if (!parse_kernel_skb(&p, skb))
            return 1;
        if (!flows.lookup(&p.key) && !(filter_match(&p.key) && sampled(&p.key)))
            return 1;
    }

    u64 now = bpf_ktime_get_ns();
    struct skb_val sv = {};
    fingerprint(&sv.fp, &p);
#ifdef LATENCY_MODE
    latency_sighting(&sv.fp, nf_hop_code(hook, stage), direction, now);
    remember_skb(skb, &sv);
    return 1;
#endif
    struct event e = {};
    e.packet_id = packet_identity(&sv.fp, now, &e.flags);
    sv.packet_id = e.packet_id;
    remember_skb(skb, &sv);

    e.ktime_ns = now;
    fill_event(&e, &p, hook);
    e.nat_stage = stage;
    e.skb = skb;
    e.flow_id = FLOW_ID(ct);
    e.direction = direction;

    u64 in = 0, out = 0, net = 0;
    bpf_probe_read_kernel(&in, sizeof(in), (void *)(state + OFF_STATE_IN));
    bpf_probe_read_kernel(&out, sizeof(out), (void *)(state + OFF_STATE_OUT));
    bpf_probe_read_kernel(&net, sizeof(net), (void *)(state + OFF_STATE_NET));
    e.out_ifindex = dev_ifindex(out);
    e.ifindex = in ? dev_ifindex(in) : e.out_ifindex;
    if (hook == HOOK_NF_POSTROUTING || hook == HOOK_NF_OUTPUT)
        e.ifindex = e.out_ifindex;
    e.netns = net_inum(net);
    emit(&e, SENSOR_NETFILTER);
    return 1; /* NF_ACCEPT: we only watch */
}

/* One program per (hook, side of NAT); priorities are chosen in
 * tracer/sensors/netfilter.py next to, never on, the tables' own. */
int trc_nf_pre_b(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_PREROUTING, NAT_BEFORE); }
int trc_nf_pre_a(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_PREROUTING, NAT_AFTER); }
int trc_nf_in_b(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_INPUT, NAT_BEFORE); }
int trc_nf_in_a(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_INPUT, NAT_AFTER); }
int trc_nf_fwd(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_FORWARD, 0); }
int trc_nf_out_b(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_OUTPUT, NAT_BEFORE); }
int trc_nf_out_a(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_OUTPUT, NAT_AFTER); }
int trc_nf_post_b(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_POSTROUTING, NAT_BEFORE); }
int trc_nf_post_a(struct nf_ctx *ctx) { return nf_sense(ctx, HOOK_NF_POSTROUTING, NAT_AFTER); }
