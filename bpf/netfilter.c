/* Netfilter sensor: BPF netfilter links on the IPv4 and IPv6 hooks of the host netns,
 * at priorities just before and just after NAT. Sees the skb address and the
 * conntrack entry, whose tuples give the NAT mapping exactly. */

struct nf_ctx {
    u64 state; /* const struct nf_hook_state * */
    u64 skb;   /* struct sk_buff * */
};

/* For the verifier ctx->skb and ctx->state are typed kernel pointers (BTF),
 * and so are the net_device and net pointers read from them: their fields
 * are read with plain loads, which the JIT guards like a probe read, at a
 * fraction of a bpf_probe_read_kernel call's cost. Constant offsets only. */
#define BTF_LOAD(type, base, off) (*(volatile type *)((base) + (off)))

/* Both conntrack tuples (orig, reply) in one read, up to the last byte
 * read_tuple uses (dst.protonum of the reply tuple). */
#define CT_TUPLES_SIZE (OFF_CT_TUPLE_REPLY - OFF_CT_TUPLE_ORIG + OFF_TUPLE_DST_PROTONUM + 1)

/* One conntrack tuple (bytes t of the tuples read) into flow_key form. */
static __always_inline void read_tuple(struct flow_key *k, u8 *t)
{
    if (LD16(t + OFF_TUPLE_SRC_L3NUM) == AF_INET6_) {
        addr_v6_words(&k->saddr, t + OFF_TUPLE_SRC_U3);
        addr_v6_words(&k->daddr, t + OFF_TUPLE_DST_U3);
    } else {
        addr_v4(&k->saddr, LD32(t + OFF_TUPLE_SRC_U3));
        addr_v4(&k->daddr, LD32(t + OFF_TUPLE_DST_U3));
    }
    k->sport = LD16(t + OFF_TUPLE_SRC_U);
    k->dport = LD16(t + OFF_TUPLE_DST_U);
    k->proto = t[OFF_TUPLE_DST_PROTONUM];
    if (k->proto == IPPROTO_ICMP || k->proto == IPPROTO_ICMPV6_)
        k->dport = 0; /* type/code: not part of our ICMP key (see parse_ipv4) */
}

static __always_inline void invert(struct flow_key *out, struct flow_key *in)
{
    out->saddr = in->daddr;
    out->daddr = in->saddr;
    out->proto = in->proto;
    if (in->proto == IPPROTO_ICMP || in->proto == IPPROTO_ICMPV6_) {
        out->sport = in->sport; /* echo id: same in both directions */
        return;
    }
    out->sport = in->dport;
    out->dport = in->sport;
}

_Static_assert(sizeof(struct flow_key) == 40, "flow_key_equal compares five words");

static __always_inline int flow_key_equal(const struct flow_key *a, const struct flow_key *b)
{
    const u64 *x = (const u64 *)a, *y = (const u64 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

/* One view of a connection (k: a packet's addresses, either way; v: its
 * direction's value): written only where the map does not hold it already.
 * An LRU hash update allocates an element and frees the one it replaces
 * (~0.5 us under load, bpf/common.h); a lookup is a tenth of that, and a
 * view already there takes its reply signature in place. A new
 * connection's NAT hooks used to write eight elements, four of them copies
 * of views already there (session 16: ~1.2 us of BPF a connection's NAT
 * hook), then four (one a direction and side of NAT), now two. */
static __always_inline void flow_view_at(struct flow_key *k, struct flow_val *v, struct flow_val *have)
{
    struct flow_key c = {};
    struct flow_val w = *v;
    if (flow_key_canonical(&c, k))
        w.direction = other_direction(w.direction);
    if (have && have->flow_id == w.flow_id && have->direction == w.direction) {
        if (have->reply_sig != w.reply_sig)
            have->reply_sig = w.reply_sig;
        return;
    }
    flows.update(&c, &w);
}

static __always_inline void flow_view(struct flow_key *k, struct flow_val *v)
{
    flow_view_at(k, v, flow_find(k, NULL));
}

/* Remember every view of a traced connection, so tc sensors on either side of
 * NAT and packets of either direction find it: orig's endpoints before NAT,
 * reply's after (a view serves both directions: flow_key_canonical). Without
 * NAT (yet) the reply is the inverted orig, the same view: written only
 * where NAT made it another. `known`: the orig view's element, looked up by
 * the caller. */
static __always_inline void track_flow(struct flow_key *orig, struct flow_key *reply, u64 ct, u32 sig,
                                       struct flow_val *known)
{
    struct flow_key view = {};
    struct flow_val v = {};
    v.flow_id = FLOW_ID(ct);
    v.reply_sig = sig;
    v.direction = DIR_ORIGINAL;
    flow_view_at(orig, &v, known);
    invert(&view, reply);
    if (!flow_key_equal(&view, orig)) { /* NAT: the reply's side is another view */
        v.direction = DIR_REPLY;
        flow_view(reply, &v);
    }
}

/* splitmix64's finaliser: every input bit moves every output bit. */
static __always_inline u64 mix64(u64 x)
{
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static __always_inline u64 endpoint_hash(const struct trc_addr *a, u16 port)
{
    return mix64(a->hi ^ mix64(a->lo ^ ((u64)port << 48)));
}

/* A flow id of a 5-tuple, the same for both directions (the endpoints'
 * hashes in order; an ICMP echo's id is its own part), below 2^44: FLOW_ID
 * of a conntrack entry carries bit 45 (common.h), so the two kinds never
 * meet and journey.h's max prefers conntrack's. The same on
 * every tracer: two at once, and the parts of a rotated capture, agree. */
static __always_inline u64 tuple_flow_id(const struct flow_key *k)
{
    u16 sport = k->sport, dport = k->dport;
    u64 extra = (u64)k->proto << 32;
    if (k->proto == IPPROTO_ICMP || k->proto == IPPROTO_ICMPV6_) {
        extra |= k->sport;
        sport = dport = 0;
    }
    u64 a = endpoint_hash(&k->saddr, sport), b = endpoint_hash(&k->daddr, dport);
    u64 id = mix64((a < b ? a : b) ^ mix64((a < b ? b : a) ^ extra)) & ((1ULL << 44) - 1);
    return id ? id : 1;
}

/* A connection conntrack does not track: IPv6 where no IPv6 table uses
 * conntrack (Docker's default: no IPv6 NAT, no ip6tables rules, so the
 * kernel keeps no IPv6 entries), or a packet conntrack found invalid. Its
 * 5-tuple gets a flow id of its own (tuple_flow_id) at the first packet
 * traced, which is its `original` direction, and its view (both
 * directions'), as track_flow writes for a conntrack entry (a later packet
 * with an entry rewrites it with its id). The element, and the packet's
 * direction in *dir. */
static __always_inline struct flow_val *track_untracked(struct flow_key *key, u32 *dir)
{
    struct flow_val v = {};
    v.flow_id = tuple_flow_id(key);
    v.direction = DIR_ORIGINAL;
    flow_view_at(key, &v, NULL);
    return flow_find(key, dir);
}

/* Is this conntrack entry's connection traced? Decided from the entry alone
 * (and the packet, for a filter expression: pcap_filter.h)
 * (one kernel read and a map lookup for untraced traffic); a new match gets
 * its views written to the flows map. */
static __always_inline int ct_traced(u64 ct, u64 skb)
{
    struct flow_key orig = {}, reply = {};
    u8 t[CT_TUPLES_SIZE] __attribute__((aligned(8))) = {}; /* aligned: word loads in read_tuple */
    if (bpf_probe_read_kernel(t, sizeof(t), (void *)(ct + OFF_CT_TUPLE_ORIG)) < 0)
        return 0;
    read_tuple(&orig, t);
    if ((FILTER_ON & FILTER_ON_PROTO) && orig.proto != FILTER_PROTO)
        return 0;
    struct flow_val *known = flow_find(&orig, NULL);
    read_tuple(&reply, t + (OFF_CT_TUPLE_REPLY - OFF_CT_TUPLE_ORIG));
    if (!known && !((filter_match(&orig) || filter_match(&reply)) && sampled(&orig) && pcap_match_skb(skb)))
        return 0;
    /* Write the views once per NAT setup (the reply tuple changes when NAT
     * binds), not per packet. */
    u32 sig = addr_fold(&reply.saddr) ^ addr_fold(&reply.daddr) ^ ((u32)reply.sport << 16 | reply.dport);
    if (!known || known->reply_sig != sig || known->flow_id != FLOW_ID(ct))
        track_flow(&orig, &reply, ct, sig, known);
    return 1;
}

static __always_inline int parse_nf_skb(struct pkt *p, u64 skb)
{
    return parse_kernel_headers(p, BTF_LOAD(u64, skb, OFF_SKB_HEAD), BTF_LOAD(u16, skb, OFF_SKB_NETWORK_HEADER));
}

/* Kernel hook numbers (enum nf_inet_hooks) -> ours. */
static __always_inline u8 nf_hook_of(u8 kernel_hook)
{
    switch (kernel_hook) {
    case 0: return HOOK_NF_PREROUTING;
    case 1: return HOOK_NF_INPUT;
    case 2: return HOOK_NF_FORWARD;
    case 3: return HOOK_NF_OUTPUT;
    default: return HOOK_NF_POSTROUTING;
    }
}

/* The devices of a sighting: ifindex is the in-device at PREROUTING, INPUT
 * and FORWARD, the out-device at OUTPUT and POSTROUTING; out_ifindex the
 * out-device (none at PREROUTING and INPUT: the kernel passes none there,
 * so it is not read; the in-device is not read where it is not kept). */
static __always_inline void nf_devices(u64 state, u8 hook, u32 *ifindex, u32 *out_ifindex)
{
    *out_ifindex = 0;
    if (hook != HOOK_NF_PREROUTING && hook != HOOK_NF_INPUT) {
        u64 out = BTF_LOAD(u64, state, OFF_STATE_OUT);
        if (out)
            *out_ifindex = BTF_LOAD(u32, out, OFF_DEV_IFINDEX);
    }
    *ifindex = *out_ifindex;
    if (hook != HOOK_NF_POSTROUTING && hook != HOOK_NF_OUTPUT) {
        u64 in = BTF_LOAD(u64, state, OFF_STATE_IN);
        if (in)
            *ifindex = BTF_LOAD(u32, in, OFF_DEV_IFINDEX);
    }
}

#ifndef SIGHTING_EVENTS
/* Fast path. One packet passes the netfilter hooks one after the other on
 * one CPU (PREROUTING, FORWARD, POSTROUTING; or INPUT), so the sensor keeps,
 * per CPU, the skb and conntrack pointers of its last sighting and the
 * packet-cache slot of that packet. The next hook of the same skb, still the
 * same packet in that slot, skips what only the first sighting needs: the
 * conntrack tuples read and flows lookup (is it traced?), the fingerprint
 * hash and packet-cache search (which packet?), and at hooks where NAT cannot
 * have acted since (the "before" stages) the header parse: the addresses are
 * the last hop's. 12 header bytes are read to confirm the packet (IP id and
 * length: a freed skb may carry the connection's next packet) and take its
 * TTL. A new connection's packets (IP_CT_NEW, where NAT binds and the flow's
 * views are written) take the full path at the NAT hooks ("after" stages)
 * and, in latency mode, everywhere. nf_last: bpf/common.h. */

/* Where a hook comes in one pass of a packet through the stack: PREROUTING
 * (or OUTPUT), then FORWARD or INPUT, then POSTROUTING; before NAT, then
 * after. The fast path on this sensor's own last sighting only follows a
 * packet forward: the first hook of a pass (a freed skb reused by the
 * connection's next packet starts there) does not take it. It may take the
 * tc sensor's (nf_known) when tc saw this skb under a millisecond before,
 * with this conntrack entry's flow id and the same IP id and length. */
static __always_inline u32 nf_rank(u8 hook, u8 stage)
{
    u32 r = hook == HOOK_NF_PREROUTING || hook == HOOK_NF_OUTPUT ? 0
          : hook == HOOK_NF_POSTROUTING                          ? 4
                                                                 : 2; /* FORWARD, INPUT */
    return r + (stage == NAT_AFTER);
}

/* The first 12 bytes of the skb's IP header into h; 0 if unreadable. */
static __always_inline int nf_head12(u64 skb, u8 *h)
{
    u64 head = BTF_LOAD(u64, skb, OFF_SKB_HEAD);
    u16 nh = BTF_LOAD(u16, skb, OFF_SKB_NETWORK_HEADER);
    return head && nh != 0xffff && bpf_probe_read_kernel(h, 12, (void *)(head + nh)) == 0;
}

/* IP id, total length and TTL from the first 12 bytes of an IP header, as
 * parse_ipv4/parse_ipv6 put them in the fingerprint. */
static __always_inline void head_facts(const u8 *h, u16 *id, u16 *len, u8 *ttl)
{
    if ((h[0] >> 4) == 6) {
        *id = LD16(h + 2);
        *len = ipv6_total_len(h);
        *ttl = h[7];
    } else {
        *id = LD16(h + 4);
        *len = LD16(h + 2);
        *ttl = h[8];
    }
}
#endif

#define NF_FROM_TC_NS 1000000

#ifdef LATENCY_MODE
/* Latency mode's fast path: the segment from the slot's last hop, for the
 * packet of `from` (this sensor's last sighting, or the tc sensor's: as
 * nf_append, from tc only within a millisecond and for the conntrack entry
 * tc's flows lookup found), confirmed by its IP id and length. */
static __always_inline int nf_fast(struct last_sighting *from, struct last_sighting *last, u64 skb, u8 hook, u8 stage,
                                   u64 nfct)
{
    u64 ct = nfct & ~NFCT_INFOMASK;
    u64 now = bpf_ktime_get_ns();
    struct pkt_slot *slot = last_slot(from, now);
    if (!slot || slot->first_seen != (u32)from->check)
        return 0;
    if (from != last && ((u32)(from->check >> 32) != (u32)FLOW_ID(ct) || (s64)(now - slot->last_seen) >= NF_FROM_TC_NS))
        return 0;
    u8 h[12] __attribute__((aligned(4))) = {};
    if (!nf_head12(skb, h))
        return 0;
    u16 id, len;
    u8 ttl;
    head_facts(h, &id, &len, &ttl);
    if (slot->fp.ip_id != id || slot->fp.tot_len != len)
        return 0;
    u32 hop = nf_hop_code(hook, stage);
    u32 dir = (nfct & NFCT_INFOMASK) >= IP_CT_IS_REPLY ? DIR_REPLY : DIR_ORIGINAL;
    u32 k = from->slot;
    u64 check = latency_check(slot->first_seen, FLOW_ID(ct));
    latency_hop(slot, hop, dir, now);
    latency_remember(last, skb, k, hop, check, dir);
    last->nfct = nfct;
    last->rank = nf_rank(hook, stage);
    count_fast(1);
    return 1;
}

/* Whose last sighting has this packet: this sensor's, for the next hook of
 * the same skb, forward in the pass; else the tc sensor's (see nf_known in
 * trace mode). A new connection's packets take the full path (ct_traced
 * writes its views as NAT binds). */
static __always_inline struct last_sighting *nf_known(struct last_sighting *last, u64 skb, u8 hook, u8 stage,
                                                      u64 nfct)
{
    if ((nfct & NFCT_INFOMASK) == IP_CT_NEW)
        return NULL;
    if (last->skb == skb && last->nfct == nfct && nf_rank(hook, stage) > last->rank)
        return last;
    int zero = 0;
    struct last_sighting *tl = tc_last.lookup(&zero);
    return tl && tl->skb == skb ? tl : NULL;
}
#endif

#if !defined(SIGHTING_EVENTS) && !defined(LATENCY_MODE)

/* Append this hook's hop to the open journey of `from` (this sensor's last
 * sighting, or the tc sensor's: see nf_known) and make it this sensor's
 * last sighting. */
static __always_inline int nf_append(struct last_sighting *from, struct last_sighting *last, u64 skb, u64 state,
                                     u8 hook, u8 stage, u64 nfct)
{
    int from_tc = from != last;
    u64 ct = nfct & ~NFCT_INFOMASK;
    u32 ctinfo = nfct & NFCT_INFOMASK;
    u64 now = bpf_ktime_get_ns();
    struct pkt_slot *slot;
    struct journey *j = last_journey(from, now, &slot);
    if (!j)
        return 0;
    /* From tc: the journey's flow id came from the flows map at its claim.
     * It is this entry's only if ct_traced wrote this connection's views
     * already (the full path would find it traced and write nothing). */
    if (from_tc && j->flow_id != FLOW_ID(ct))
        return 0;
    /* From tc, and not within a millisecond: not this packet's way through
     * the stack in one go (tc ingress -> PREROUTING is one call chain, a few
     * microseconds) but an skb freed after its tc sighting and reused by
     * the connection's next packet, which may carry the same IP id and
     * length (IPv6's flow label, an id of 0): the full path decides. */
    if (from_tc && (s64)(now - slot->last_seen) >= NF_FROM_TC_NS)
        return 0;
    /* The packet's IP id and length (its whole fingerprint where the
     * headers are parsed) are checked against the journey's in it
     * (journey_fast_hop): a freed skb may carry the connection's next
     * packet. */
    u8 ttl;
    u16 id, len;
    struct pkt p = {};
    struct pkt *moved = NULL; /* the hop's addresses where NAT may have changed them */
    if (stage == NAT_AFTER) {
        if (!parse_nf_skb(&p, skb))
            return 0;
        ttl = p.ttl;
        id = p.ip_id;
        len = p.tot_len;
        moved = &p;
    } else {
        /* Routing decrements the TTL before FORWARD (bridging does not):
         * read, not guessed. NAT has not acted since the last hop: its
         * addresses. */
        u8 h[12] __attribute__((aligned(4))) = {};
        if (!nf_head12(skb, h))
            return 0;
        head_facts(h, &id, &len, &ttl);
    }
    struct sighting s = {};
    s.skb = skb;
    s.flow_id = FLOW_ID(ct);
    s.direction = ctinfo >= IP_CT_IS_REPLY ? DIR_REPLY : DIR_ORIGINAL;
    nf_devices(state, hook, &s.ifindex, &s.out_ifindex);
    s.code = hop_code(hook, stage, 0);
    s.terminal = hook == HOOK_NF_INPUT && stage == NAT_AFTER;
    adopt_last(last, from, skb);
    last->nfct = nfct;
    last->rank = nf_rank(hook, stage);
    return journey_fast_hop(last, slot, j, &s, now, ttl, moved, id, len, SENSOR_NETFILTER);
}

/* Whose last sighting has this packet's journey: this sensor's, for the
 * next hook of the same skb, forward in the pass; else the tc sensor's, for
 * the first netfilter hook of a packet tc saw last on this CPU (PREROUTING
 * after a tc ingress; a reply's, after the container's egress and the
 * veth's ingress): the tc sighting already found or claimed its journey, so
 * the conntrack tuples, the flows lookup, the header parse and the
 * packet-cache search of the full path are not paid twice per packet. */
static __always_inline struct last_sighting *nf_known(struct last_sighting *last, u64 skb, u8 hook, u8 stage,
                                                      u64 nfct)
{
    /* A new connection's packet (IP_CT_NEW: its views are written, and its
     * NAT binds, as it goes) follows on only from this sensor's own last
     * sighting and only at a hook no NAT comes before since (a "before"
     * stage, FORWARD): NAT binds at the NAT hooks alone, so the views the
     * full path wrote at the last hop are still this entry's, and the full
     * path here would write nothing. */
    int fresh = (nfct & NFCT_INFOMASK) == IP_CT_NEW;
    if (last->skb == skb && last->nfct == nfct && nf_rank(hook, stage) > last->rank && !(fresh && stage == NAT_AFTER))
        return last;
    if (fresh)
        return NULL;
    int zero = 0;
    struct last_sighting *tl = tc_last.lookup(&zero);
    return tl && tl->skb == skb ? tl : NULL;
}
#endif

static __always_inline int nf_sense(struct nf_ctx *ctx, u8 stage)
{
#ifdef TRACER_NOOP
    return 1;
#endif
    u64 skb = ctx->skb;
    u64 state = ctx->state;
    u8 hook = nf_hook_of(BTF_LOAD(u8, state, OFF_STATE_HOOK));
    if (hook == HOOK_NF_FORWARD)
        stage = 0; /* no NAT on FORWARD */
    u64 nfct = BTF_LOAD(u64, skb, OFF_SKB_NFCT);
    u64 ct = nfct & ~NFCT_INFOMASK;
    u32 ctinfo = nfct & NFCT_INFOMASK;
#ifndef SIGHTING_EVENTS
    int zero = 0;
    struct last_sighting *last = nf_last.lookup(&zero);
    if (!last)
        return 1;
#ifndef TRACER_NO_NF_FAST /* -DTRACER_NO_NF_FAST (TRACER_BPF_CFLAGS): measure without it */
#ifdef LATENCY_MODE
    if (ct && ctinfo != IP_CT_UNTRACKED) {
        struct last_sighting *from = nf_known(last, skb, hook, stage, nfct);
        if (from && nf_fast(from, last, skb, hook, stage, nfct))
            return 1;
    }
#else
    if (ct && ctinfo != IP_CT_UNTRACKED) { /* IP_CT_NEW: see nf_known */
        struct last_sighting *from = nf_known(last, skb, hook, stage, nfct);
        if (from && nf_append(from, last, skb, state, hook, stage, nfct))
            return 1;
    }
#endif
#endif
#endif
    u32 direction = 0;
    u64 flow_id = 0;
    struct pkt p = {};
    if (ct && ctinfo != IP_CT_UNTRACKED) {
        /* Untraced connections leave before the packet is even parsed. */
        if (!ct_traced(ct, skb) || !parse_nf_skb(&p, skb))
            return 1;
        direction = ctinfo >= IP_CT_IS_REPLY ? DIR_REPLY : DIR_ORIGINAL;
        flow_id = FLOW_ID(ct);
    } else {
        ct = 0;
        if (!parse_nf_skb(&p, skb))
            return 1;
        u32 dir = 0;
        struct flow_val *known = flow_find(&p.key, &dir);
        if (!known) {
            if (!(filter_match(&p.key) && sampled(&p.key) && pcap_match_skb(skb)))
                return 1;
            known = track_untracked(&p.key, &dir);
        }
        if (known) {
            flow_id = known->flow_id;
            direction = dir;
        }
    }

    u64 now = bpf_ktime_get_ns();
    struct fp_key fp = {};
    fingerprint(&fp, &p);
#ifdef LATENCY_MODE
    u32 hop = nf_hop_code(hook, stage);
    s64 k = latency_sighting(&fp, hop, direction, now);
    /* For nf_fast, tc_fast; a packet without a conntrack entry: never. */
    latency_remember_slot(last, skb, ct ? k : -1, hop, flow_id, direction);
    last->nfct = nfct;
    last->rank = nf_rank(hook, stage);
    return 1;
#endif
    u32 ifindex, out_ifindex;
    nf_devices(state, hook, &ifindex, &out_ifindex);
#if defined(SIGHTING_EVENTS) || defined(LATENCY_MODE) /* latency mode returned above */
    struct event e = {};
    e.packet_id = packet_identity(&fp, now, &e.flags);
    e.ktime_ns = now;
    fill_event(&e, &p, hook);
    e.nat_stage = stage;
    e.skb = skb;
    e.flow_id = flow_id;
    e.direction = direction;
    e.out_ifindex = out_ifindex;
    e.ifindex = ifindex;
    u64 net = BTF_LOAD(u64, state, OFF_STATE_NET);
    if (net)
        e.netns = BTF_LOAD(u32, net, OFF_NET_INUM);
    emit(&e, SENSOR_NETFILTER);
#else
    /* The links are in the host netns: user space knows its inode. */
    struct sighting s = {};
    s.skb = skb;
    s.flow_id = flow_id;
    s.direction = direction;
    s.ifindex = ifindex;
    s.out_ifindex = out_ifindex;
    s.code = hop_code(hook, stage, 0);
    /* Delivered to the host itself ('before' INPUT is not the end: replies
     * of DNATed connections get their source translated back there). */
    s.terminal = hook == HOOK_NF_INPUT && stage == NAT_AFTER;
    u64 held = 0;
    s64 k = journey_sighting(&fp, &p, &s, now, SENSOR_NETFILTER, &held);
    remember_journey(last, skb, k, held); /* for the next hook of this skb (nf_known) */
    last->nfct = nfct;
    last->rank = nf_rank(hook, stage);
#endif
    return 1; /* NF_ACCEPT: we only watch */
}

/* One program per side of NAT, linked on every hook (the hook is read from
 * nf_hook_state); priorities are chosen in tracer/sensors/netfilter.py next
 * to, never on, the tables' own. FORWARD uses the "before" program. */
#ifdef TRC_SHARED_ENTRIES
/* One body for both: the loader writes the stage in (trc_param; the
 * programs: tracer/sensors/netfilter.py VARIANTS). */
int trc_nf(struct nf_ctx *ctx) { return nf_sense(ctx, trc_param()); }
#else
int trc_nf_b(struct nf_ctx *ctx) { return nf_sense(ctx, NAT_BEFORE); }
int trc_nf_a(struct nf_ctx *ctx) { return nf_sense(ctx, NAT_AFTER); }
#endif
