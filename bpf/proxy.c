/* Proxy sensor: which two TCP connections a userland proxy (Docker's
 * docker-proxy) relays between, told exactly by what the proxy does.
 *
 * A proxy copies bytes from one socket to the other on one thread, one call
 * right after the other: docker-proxy (Go io.Copy between two TCPConns)
 * splices socket A into a pipe and the pipe into socket B, n bytes each;
 * other proxies read(A) n bytes and write(B, n). So on one thread of a
 * proxy process, a call that took n > 0 bytes from socket A followed by a
 * call that gives the same n bytes to socket B links A and B: no timing, no
 * guess, and two clients relayed at the same time are told apart by their
 * threads and sockets. Syscall tracepoints (process context: pid and tid)
 * see the calls; the fd is resolved to its socket through task->files and
 * the socket's own addresses are read (struct offsets from BTF).
 *
 * Only the pids user space put in proxy_pids are looked at: every other
 * process's read/write/splice costs a pid lookup.
 *
 * Links go to proxy_links (user space reads and deletes them); the legs'
 * own packets are traced by the other sensors (the backend leg is in the
 * filter, see FILTER_PROXY_BACKENDS in common.h). */

#define AF_INET_ 2

BPF_HASH(proxy_pids, u32, u8, 256);

/* A syscall in flight on a thread: which fd it takes bytes from. */
struct px_call {
    s32 fd_in;
    u32 _pad;
};
BPF_HASH(px_calls, u64, struct px_call, 4096);

/* The last bytes a thread took from a socket, until it gives them on. */
struct px_src {
    struct flow_key from; /* the socket's remote -> local */
    u64 count;
};
BPF_HASH(px_srcs, u64, struct px_src, 4096);

/* One relay seen: bytes that came in on socket A's connection (from its
 * peer) went out on socket B's (to its peer). Both as packets carry them:
 * inb = A's peer -> A's local address, out = B's local -> B's peer. */
struct px_link_key {
    struct flow_key inb;
    struct flow_key out;
};
struct px_link {
    u64 first_ns;
    u64 bytes;
    u32 pid;
    u32 relays;
};
BPF_TABLE("lru_hash", struct px_link_key, struct px_link, proxy_links, 4096);

/* The TCP socket behind fd of the current task, as (remote -> local) in
 * `in` order; 0 if fd is not an IPv4/IPv6 socket. */
static __always_inline int fd_socket(s32 fd, struct flow_key *k)
{
    if (fd < 0)
        return 0;
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0, fds = 0, file = 0, sock = 0, sk = 0, back = 0;
    u32 max_fds = 0;
    bpf_probe_read_kernel(&files, 8, (void *)(task + OFF_TASK_FILES));
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, 8, (void *)(files + OFF_FILES_FDT));
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, 4, (void *)(fdt + OFF_FDT_MAX_FDS));
    if ((u32)fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, 8, (void *)(fdt + OFF_FDT_FD));
    if (!fds)
        return 0;
    bpf_probe_read_kernel(&file, 8, (void *)(fds + 8 * (u64)(u32)fd));
    if (!file)
        return 0;
    /* A socket's file has a struct socket as private_data, whose file is
     * this file again: a pipe or a regular file fails the check. */
    bpf_probe_read_kernel(&sock, 8, (void *)((file & ~1ULL) + OFF_FILE_PRIVATE));
    if (!sock)
        return 0;
    bpf_probe_read_kernel(&back, 8, (void *)(sock + OFF_SOCKET_FILE));
    if (back != (file & ~1ULL))
        return 0;
    bpf_probe_read_kernel(&sk, 8, (void *)(sock + OFF_SOCKET_SK));
    if (!sk)
        return 0;
    u16 family = 0, num = 0, dport = 0, protocol = 0;
    bpf_probe_read_kernel(&family, 2, (void *)(sk + OFF_SKC_FAMILY));
    bpf_probe_read_kernel(&protocol, 2, (void *)(sk + OFF_SK_PROTOCOL));
    if (protocol != IPPROTO_TCP)
        return 0;
    bpf_probe_read_kernel(&num, 2, (void *)(sk + OFF_SKC_NUM));
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
    k->sport = dport;                 /* network order already */
    k->dport = __builtin_bswap16(num); /* skc_num is host order */
    k->proto = IPPROTO_TCP;
    return 1;
}

static __always_inline int is_proxy(void)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    return proxy_pids.lookup(&pid) != NULL;
}

/* Bytes taken from fd_in (syscall entry): remembered until the exit says how many. */
static __always_inline void px_take_enter(s32 fd_in)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct px_call c = {};
    c.fd_in = fd_in;
    px_calls.update(&tid, &c);
}

static __always_inline void px_take_exit(long ret)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct px_call *c = px_calls.lookup(&tid);
    if (!c)
        return;
    s32 fd = c->fd_in;
    px_calls.delete(&tid);
    struct px_src src = {};
    if (ret > 0 && fd_socket(fd, &src.from)) {
        src.count = ret;
        px_srcs.update(&tid, &src);
    }
    /* Not from a socket (a pipe: the second half of a splice relay) leaves
     * the last socket's bytes waiting for their socket. */
}

/* Bytes given to fd_out (syscall entry): the bytes this thread last took
 * from a socket, if the count matches, went out here. */
static __always_inline void px_give(s32 fd_out, u64 len)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct px_src *src = px_srcs.lookup(&tid);
    if (!src)
        return;
    struct px_link_key key = {};
    if (!fd_socket(fd_out, &key.out))
        return; /* into a pipe: the splice relay's first half */
    if (src->count != len) {
        px_srcs.delete(&tid);
        return;
    }
    key.inb = src->from;
    /* out as packets carry it: local -> remote */
    struct trc_addr a = key.out.saddr;
    key.out.saddr = key.out.daddr;
    key.out.daddr = a;
    u16 p = key.out.sport;
    key.out.sport = key.out.dport;
    key.out.dport = p;
    px_srcs.delete(&tid);
    struct px_link *link = proxy_links.lookup(&key);
    if (link) {
        __sync_fetch_and_add(&link->bytes, len);
        __sync_fetch_and_add(&link->relays, 1);
        return;
    }
    struct px_link fresh = {};
    fresh.first_ns = bpf_ktime_get_ns();
    fresh.bytes = len;
    fresh.pid = bpf_get_current_pid_tgid() >> 32;
    fresh.relays = 1;
    proxy_links.update(&key, &fresh);
}

#ifdef PX_RAW_SYSCALLS
/* Raw syscall tracepoints (sys_enter/sys_exit), x86-64: one program for
 * every syscall, which leaves at once unless the syscall is one of ours:
 * far cheaper for other processes than the syscalls:* tracepoints, whose
 * perf-event path costs hundreds of ns per call even when the program
 * returns at once. Arguments come from pt_regs (offsets from BTF). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SPLICE 275

static __always_inline u64 px_arg(u64 regs, u32 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)(regs + off));
    return v;
}

int trc_px_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    long id = ctx->args[1];
    if (id != NR_READ && id != NR_WRITE && id != NR_SPLICE && id != NR_SENDTO && id != NR_RECVFROM)
        return 0;
    if (!is_proxy())
        return 0;
    u64 regs = ctx->args[0];
    s32 fd = (s32)px_arg(regs, OFF_REGS_ARG0);
    if (id == NR_SPLICE) {
        px_give((s32)px_arg(regs, OFF_REGS_ARG2), px_arg(regs, OFF_REGS_ARG4));
        px_take_enter(fd);
    } else if (id == NR_READ || id == NR_RECVFROM) {
        px_take_enter(fd);
    } else {
        px_give(fd, px_arg(regs, OFF_REGS_ARG2));
    }
    return 0;
}

int trc_px_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    /* Only a take's exit matters (read, recvfrom, splice). The syscall
     * number first, as on entry: one 8-byte read of pt_regs costs every
     * other process's syscalls less than the pid lookup did (bench_bpf.py
     * --live, trace mode, with bpf_stats' own ~70 ns: 112-116 -> 104-106 ns
     * per exit). */
    long id = (long)px_arg(ctx->args[0], OFF_REGS_ORIG_AX);
    if (id != NR_READ && id != NR_RECVFROM && id != NR_SPLICE)
        return 0;
    if (!is_proxy())
        return 0;
    px_take_exit((long)ctx->args[1]); /* a no-op unless a take is in flight on this thread */
    return 0;
}
#endif

/* Tracepoint contexts (the syscalls:* format files): 8 bytes of common
 * fields, the syscall number, then each argument as 8 bytes; exits carry
 * the return value. */
struct px_enter {
    u64 common;
    s32 nr;
    u32 _pad;
    u64 args[6];
};
struct px_exit {
    u64 common;
    s32 nr;
    u32 _pad;
    s64 ret;
};

/* splice(fd_in, off_in, fd_out, off_out, len, flags) */
int trc_px_splice_enter(struct px_enter *ctx)
{
    if (!is_proxy())
        return 0;
    px_give((s32)ctx->args[2], ctx->args[4]);
    px_take_enter((s32)ctx->args[0]);
    return 0;
}

/* read(fd, buf, count) / recvfrom(fd, buf, len, ...) */
int trc_px_read_enter(struct px_enter *ctx)
{
    if (!is_proxy())
        return 0;
    px_take_enter((s32)ctx->args[0]);
    return 0;
}

int trc_px_take_exit(struct px_exit *ctx)
{
    if (!is_proxy())
        return 0;
    px_take_exit(ctx->ret);
    return 0;
}

/* write(fd, buf, count) / sendto(fd, buf, len, ...) */
int trc_px_write_enter(struct px_enter *ctx)
{
    if (!is_proxy())
        return 0;
    px_give((s32)ctx->args[0], ctx->args[2]);
    return 0;
}
