/* Drop sensor: raw tracepoint skb:kfree_skb, for skbs already being traced.
 * Unrelated drops cost one map miss. Raw tracepoint args (kernel >= 5.17):
 * (struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...). */

int trc_drop(struct bpf_raw_tracepoint_args *ctx)
{
    u64 skb = ctx->args[0];
    u32 reason = (u32)ctx->args[2];
    struct skb_val *sv = skbs.lookup(&skb);
    if (!sv)
        return 0;
    struct skb_val seen = *sv;
    skbs.delete(&skb);
    if (reason == DROP_REASON_CONSUMED)
        return 0;

    /* The address may have been reused by an untraced packet: check. */
    struct pkt p = {};
    if (!parse_kernel_skb(&p, skb))
        return 0;
    struct fp_key fp = {};
    fingerprint(&fp, &p);
    if (fp.seq != seen.fp.seq || fp.ack != seen.fp.ack || fp.ip_id != seen.fp.ip_id ||
        fp.tot_len != seen.fp.tot_len || fp.proto != seen.fp.proto)
        return 0;

#ifdef LATENCY_MODE
    latency_sighting(&fp, HOP_CODE_DROP, 0, bpf_ktime_get_ns());
    return 0;
#endif
    struct event e = {};
    e.ktime_ns = bpf_ktime_get_ns();
    fill_event(&e, &p, HOOK_DROP);
    e.packet_id = seen.packet_id;
    e.skb = skb;
    e.drop_reason = reason;
    u64 dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), (void *)(skb + OFF_SKB_DEV));
    e.ifindex = dev_ifindex(dev);
    if (dev) {
        u64 net = 0;
        bpf_probe_read_kernel(&net, sizeof(net), (void *)(dev + OFF_DEV_ND_NET));
        e.netns = net_inum(net);
    }
    emit(&e, SENSOR_DROP);
    return 0;
}
