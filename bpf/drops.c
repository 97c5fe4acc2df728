/* Drop sensor: raw tracepoint skb:kfree_skb, for packets being traced: the
 * packet's addresses belong to a traced flow (or match the filter) and the
 * packet cache knows its fingerprint. The fingerprint alone is weak for UDP
 * and ICMP (IP id 0 with DF, length), hence the address check. Drops are
 * rare next to packets, so reading each dropped skb's headers costs little.
 * Raw tracepoint args
 * (kernel >= 5.17):
 * (struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...). */

int trc_drop(struct bpf_raw_tracepoint_args *ctx)
{
#ifdef TRACER_NOOP
    return 0;
#endif
    u64 skb = ctx->args[0];
    u32 reason = (u32)ctx->args[2];
    if (reason == DROP_REASON_CONSUMED)
        return 0;
    struct pkt p = {};
    if (!parse_kernel_skb(&p, skb))
        return 0;
    if (!flow_find(&p.key, NULL) && !(filter_match(&p.key) && sampled(&p.key) && pcap_match_skb(skb)))
        return 0;
    struct fp_key fp = {};
    fingerprint(&fp, &p);
    u64 now = bpf_ktime_get_ns();
#ifdef LATENCY_MODE
    latency_sighting(&fp, HOP_DROP, 0, now);
    return 0;
#endif
    u64 dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), (void *)(skb + OFF_SKB_DEV));
    u32 netns = 0, ifindex = 0;
    if (dev) {
        u64 net = 0;
        /* ifindex and nd_net are a few words apart in struct net_device
         * (224 and 264 on 6.18): one read for both. */
        PROBE_READ_PAIR(ifindex, OFF_DEV_IFINDEX, net, OFF_DEV_ND_NET, dev);
        netns = net_inum(net);
    }
#if defined(SIGHTING_EVENTS) || defined(LATENCY_MODE) /* latency mode returned above */
    struct pkt_slot *seen = pcache_find_within(&fp, now, DROP_WINDOW_NS);
    if (!seen)
        return 0;
    struct event e = {};
    e.ktime_ns = now;
    fill_event(&e, &p, HOOK_DROP);
    e.packet_id = seen->packet_id;
    /* Gone: the same fingerprint later is another packet. */
    seen->last_seen = 0;
    e.skb = skb;
    e.drop_reason = reason;
    e.ifindex = ifindex;
    e.netns = netns;
    emit(&e, SENSOR_DROP);
#else
    struct sighting s = {};
    s.skb = skb;
    s.ifindex = ifindex;
    s.drop_netns = netns;
    s.drop_reason = reason;
    s.code = HOOK_DROP;
    u64 held;
    journey_sighting(&fp, &p, &s, now, SENSOR_DROP, &held);
#endif
    return 0;
}
