/* Proxy sensor: which two TCP connections a userland proxy (Docker's
 * docker-proxy) relays between, told exactly by what the proxy does.
 *
 * A proxy copies bytes from one socket to the other on one thread, one call
 * right after the other: docker-proxy (Go io.Copy between two TCPConns)
 * splices socket A into a pipe and the pipe into socket B, n bytes each;
 * other proxies read(A) n bytes and write(B, n). So on one thread of a
 * proxy process, taking n > 0 bytes from socket A and then giving the same
 * n bytes to socket B links A and B: no timing, no guess, and two clients
 * relayed at the same time are told apart by their threads and sockets.
 *
 * The hooks run on TCP receives and socket sends only, not on every
 * syscall of every process (the first version's syscall tracepoints sent
 * every syscall on the host through the slow entry path):
 *  - tcp:tcp_rcv_space_adjust (raw): TCP calls it after it copied data to
 *    the reader: per skb copied in tcp_recvmsg (read, recv, recvmsg) and
 *    at the end of tcp_read_sock (splice from a socket into a pipe). It
 *    does not say how many bytes; the socket does: tp->copied_seq against
 *    where this socket's reader stood at its last event (px_socks).
 *  - sock:sock_send_length (raw, sk, ret, flags): at the end of every
 *    sock_sendmsg, with the bytes actually sent: write, send, sendmsg and
 *    splice from a pipe into a socket (splice_to_socket calls sock_sendmsg,
 *    once per up to 16 pipe buffers, so one relay may be given in parts).
 * Both run in the process context of the thread that reads or sends, so
 * bpf_get_current_pid_tgid() names the proxy thread.
 *
 * Not seen: bytes a proxy moves without reading them into user space or a
 * pipe (sockmap/sk_msg redirects, tcp_read_skb / tcp_read_sock_noack
 * readers), MPTCP sockets (no tcp_rcv_space_adjust on the MPTCP socket:
 * a proxy's sends on one are counted in px_unseen, and user space warns).
 * docker-proxy does none of these.
 *
 * Only the pids user space put in proxy_pids are looked at: every other
 * process's TCP receive and socket send costs one pid lookup.
 *
 * Links go to proxy_links (user space takes them with a batch
 * lookup-and-delete); the legs' own packets are traced by the other
 * sensors (the backend leg is in the filter, see FILTER_ON_PROXY_BACKENDS in
 * common.h). */

#define AF_INET_ 2
#define IPPROTO_MPTCP_ 262
#define PX_RCV_SHUTDOWN 1

BPF_HASH(proxy_pids, u32, u8, 256);

/* Sends by a proxy on MPTCP sockets, which this sensor cannot follow (no
 * tcp_rcv_space_adjust on the MPTCP socket): user space says so. */
BPF_ARRAY(px_unseen, u64, 1);

/* A proxy's socket: how many bytes of its stream its reader has taken so
 * far (data only), as of this sensor's last event on it. `isn` (the
 * peer's first sequence number, rcv_nxt - bytes_received) tells a new
 * connection whose socket reuses a freed one's address (seen within a
 * second here) from the old one. */
struct px_sock {
    u64 taken;
    u32 isn;
    /* Where this socket's outgoing stream stood (write_seq) when the
     * relayed bytes given to it were as many as its source had taken:
     * set at the first relay seen (wbase_set), so every later relay can
     * check that the socket it took from is the one this stream mirrors
     * (see px_mirrors). */
    u32 wbase;
    u32 wbase_set;
    u32 _pad;
};
BPF_TABLE("lru_hash", u64, struct px_sock, px_socks, 4096);

/* A relay in progress on a thread: bytes taken from socket `in` (0: none
 * in progress), and given so far to socket `out` (0 until the first give).
 * One entry per thread, rewritten in place relay after relay. */
struct px_relay {
    u64 in;
    u64 out;
    u64 taken;
    u64 given;
};
BPF_TABLE("lru_hash", u32, struct px_relay, px_relays, 4096);

/* One relay seen: bytes that came in on socket A's connection (from its
 * peer) went out on socket B's (to its peer). Both as packets carry them:
 * inb = A's peer -> A's local address, out = B's local -> B's peer. */
struct px_link_key {
    struct flow_key inb;
    struct flow_key out;
};
struct px_link {
    u32 pid;
};
BPF_TABLE("lru_hash", struct px_link_key, struct px_link, proxy_links, 4096);

/* Links put into proxy_links so far. User space takes the links only when
 * this moved: a batch lookup-and-delete walks all 4,096 buckets, each
 * under its lock, ~0.25 ms a pass even when nothing is there. */
BPF_ARRAY(px_links_made, u64, 1);

static __always_inline u32 px_proxy_pid(void)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    return proxy_pids.lookup(&pid) ? pid : 0;
}

/* The peer's first sequence number (+1) of TCP socket sk, rcv_nxt -
 * bytes_received: the same for a connection's whole life. */
static __always_inline u32 px_isn(u64 sk, u32 *rcv_nxt, u64 *received)
{
    bpf_probe_read_kernel(rcv_nxt, 4, (void *)(sk + OFF_TP_RCV_NXT));
    bpf_probe_read_kernel(received, 8, (void *)(sk + OFF_TP_BYTES_RECEIVED));
    return *rcv_nxt - (u32)*received;
}

/* Bytes of data the reader of TCP socket sk has taken since its connection
 * began. copied_seq counts the peer's FIN once the reader consumed it
 * (tcp_read_sock does so in the same call as the data before it), which is
 * no byte: a FIN was received (RCV_SHUTDOWN) and nothing is left unread. */
static __always_inline u64 px_read_pos(u64 sk, u32 *isn)
{
    u32 copied = 0, rcv_nxt = 0;
    u64 received = 0;
    u8 shutdown = 0;
    *isn = px_isn(sk, &rcv_nxt, &received);
    bpf_probe_read_kernel(&copied, 4, (void *)(sk + OFF_TP_COPIED_SEQ));
    bpf_probe_read_kernel(&shutdown, 1, (void *)(sk + OFF_SK_SHUTDOWN));
    u64 pos = received - (u32)(rcv_nxt - copied);
    if ((shutdown & PX_RCV_SHUTDOWN) && copied == rcv_nxt && pos)
        pos -= 1;
    return pos;
}

/* tcp_rcv_space_adjust(sk): the current thread took bytes from sk. */
int trc_px_recv(struct bpf_raw_tracepoint_args *ctx)
{
    u32 pid = px_proxy_pid();
    if (!pid)
        return 0;
    u64 sk = ctx->args[0];
    /* The reader holds the socket lock (lock_sock): a softirq reader of
     * some other socket, run on top of a proxy thread, does not. */
    s32 owned = 0;
    bpf_probe_read_kernel(&owned, 4, (void *)(sk + OFF_SK_LOCK_OWNED));
    if (!owned)
        return 0;
    u32 isn = 0;
    u64 pos = px_read_pos(sk, &isn);
    u64 n;
    struct px_sock *s = px_socks.lookup(&sk);
    if (s && s->isn == isn) {
        n = pos > s->taken ? pos - s->taken : 0;
        if (n)
            s->taken = pos;
    } else {
        /* First read seen on this connection: it began at 0 (a connection
         * older than the sensor makes this count too big once, and that
         * relay goes unlinked). */
        struct px_sock fresh = {};
        fresh.taken = pos;
        fresh.isn = isn;
        px_socks.update(&sk, &fresh);
        n = pos;
    }
    if (!n)
        return 0; /* nothing taken (EAGAIN, MSG_PEEK, only the FIN) */
    u32 tid = bpf_get_current_pid_tgid();
    struct px_relay *r = px_relays.lookup(&tid);
    if (!r) {
        struct px_relay fresh = {};
        fresh.in = sk;
        fresh.taken = n;
        px_relays.update(&tid, &fresh); /* a thread's first: later relays reuse its entry */
        return 0;
    }
    if (r->in == sk && r->given == 0) {
        r->taken += n; /* one take in several copies (per skb, per splice loop) */
        return 0;
    }
    /* A new take, in place: an LRU insert per relay costs far more. */
    r->in = sk;
    r->out = 0;
    r->taken = n;
    r->given = 0;
    return 0;
}

/* The socket's connection as (remote -> local), the `in` order; 0 if sk is
 * not a TCP socket of IPv4 or IPv6. */
static __always_inline int px_sock_flow(u64 sk, struct flow_key *k)
{
    u16 family = 0, sport = 0, dport = 0, protocol = 0;
    bpf_probe_read_kernel(&protocol, 2, (void *)(sk + OFF_SK_PROTOCOL));
    if (protocol != IPPROTO_TCP)
        return 0;
    bpf_probe_read_kernel(&family, 2, (void *)(sk + OFF_SKC_FAMILY));
    /* inet_sport, not skc_num: a socket closed by then (the peer's RST
     * after its last bytes) has given its port back, skc_num = 0. */
    bpf_probe_read_kernel(&sport, 2, (void *)(sk + OFF_INET_SPORT));
    bpf_probe_read_kernel(&dport, 2, (void *)(sk + OFF_SKC_DPORT));
    if (family == AF_INET_) {
        u32 daddr = 0, saddr = 0;
        bpf_probe_read_kernel(&daddr, 4, (void *)(sk + OFF_SKC_DADDR));
        bpf_probe_read_kernel(&saddr, 4, (void *)(sk + OFF_SKC_RCV_SADDR));
        addr_v4(&k->saddr, daddr);
        addr_v4(&k->daddr, saddr);
    } else if (family == AF_INET6_) {
        u8 a[16] __attribute__((aligned(8))) = {};
        u8 b[16] __attribute__((aligned(8))) = {};
        bpf_probe_read_kernel(a, 16, (void *)(sk + OFF_SKC_V6_DADDR));
        bpf_probe_read_kernel(b, 16, (void *)(sk + OFF_SKC_V6_RCV_SADDR));
        addr_v6(&k->saddr, a);
        addr_v6(&k->daddr, b);
    } else {
        return 0;
    }
    k->sport = dport; /* both in network order */
    k->dport = sport;
    k->proto = IPPROTO_TCP;
    return 1;
}

static __always_inline void px_link(u64 in, u64 out, u32 pid)
{
    struct px_link_key key = {};
    if (!px_sock_flow(in, &key.inb) || !px_sock_flow(out, &key.out))
        return;
    /* out as packets carry it: local -> remote */
    struct trc_addr a = key.out.saddr;
    key.out.saddr = key.out.daddr;
    key.out.daddr = a;
    u16 p = key.out.sport;
    key.out.sport = key.out.dport;
    key.out.dport = p;
    struct px_link link = {};
    link.pid = pid;
    /* BPF_NOEXIST: one not taken by user space yet stays. Counted after
     * it is in the map, so a count user space reads is never ahead of it. */
    if (proxy_links.insert(&key, &link) == 0) {
        int zero = 0;
        u64 *made = px_links_made.lookup(&zero);
        if (made)
            __sync_fetch_and_add(made, 1);
    }
}

/* A relay from `in` to `out` just completed on this thread: is `out`'s
 * stream the mirror of `in`'s? A proxy gives each backend socket exactly
 * the bytes it took from one client socket, so the bytes written to out
 * (write_seq from where it stood at its first relay) equal the bytes taken
 * from in (since its connection began) after every relay. A thread's take
 * and give can belong to two different relays: a Go proxy's goroutine
 * that took bytes, then blocked on a full send buffer, resumes on another
 * OS thread, whose last take was another goroutine's. Then the counts of
 * the two streams differ (save for streams at the very same position), and
 * no link is made. The first relay a socket is seen in is trusted (as the
 * thread-and-count join alone did) and sets the base. */
static __always_inline int px_mirrors(u64 in, u64 out)
{
    struct px_sock *from = px_socks.lookup(&in);
    if (!from)
        return 0; /* evicted between take and give: unsure */
    u32 written = 0, rcv_nxt = 0;
    u64 received = 0;
    bpf_probe_read_kernel(&written, 4, (void *)(out + OFF_TP_WRITE_SEQ));
    u32 isn = px_isn(out, &rcv_nxt, &received); /* the reads' position only for a fresh entry */
    u32 base = written - (u32)from->taken;
    struct px_sock *to = px_socks.lookup(&out);
    if (!to || to->isn != isn) {
        struct px_sock fresh = {};
        fresh.taken = px_read_pos(out, &isn); /* its own reads count from here on */
        fresh.isn = isn;
        fresh.wbase = base;
        fresh.wbase_set = 1;
        px_socks.update(&out, &fresh);
        return 1;
    }
    if (!to->wbase_set) {
        to->wbase = base;
        to->wbase_set = 1;
        return 1;
    }
    return to->wbase == base;
}

/* sock_send_length(sk, ret, flags): the current thread gave ret bytes to sk. */
int trc_px_send(struct bpf_raw_tracepoint_args *ctx)
{
    u32 pid = px_proxy_pid();
    if (!pid)
        return 0;
    s32 ret = (s32)ctx->args[1];
    if (ret <= 0)
        return 0;
    u64 sk = ctx->args[0];
    u16 protocol = 0;
    bpf_probe_read_kernel(&protocol, 2, (void *)(sk + OFF_SK_PROTOCOL));
    if (protocol != IPPROTO_TCP) {
        if (protocol == IPPROTO_MPTCP_) {
            int zero = 0;
            u64 *unseen = px_unseen.lookup(&zero);
            if (unseen)
                __sync_fetch_and_add(unseen, 1);
        }
        return 0; /* a log line to a unix socket: not part of the relay */
    }
    u32 tid = bpf_get_current_pid_tgid();
    struct px_relay *r = px_relays.lookup(&tid);
    if (!r || !r->in)
        return 0; /* nothing taken and not given on yet */
    if (sk == r->in || (r->given && r->out != sk)) {
        r->in = 0; /* an answer on the same socket, or a third socket: no relay */
        return 0;
    }
    r->out = sk;
    r->given += ret;
    if (r->given < r->taken)
        return 0; /* the rest comes in the next sends */
    if (r->given == r->taken && px_mirrors(r->in, sk))
        px_link(r->in, sk, pid);
    r->in = 0; /* done (or more given than taken: not a relay) */
    return 0;
}
