/* Shared by every sensor: header parsing, the in-kernel filter, packet and
 * flow identity, and the ring buffer.
 *
 * Prepended at load time (see tracer/kernel/program.py):
 *   - struct event and the HOOK_/NAT_/DIR_/SENSOR_/FLAG_ codes (tracer/events.py)
 *   - ROLE_*, HOP_* and the histogram layout (tracer/kernel/hop_codes.py)
 *   - FILTER_ON_* (the filter's parts: tracer/kernel/kernel_filter.py)
 *   - -D flags: OFF_* struct member offsets read from the running kernel's
 *     BTF, the filter's values (FILTER_ON: which parts are on; the port,
 *     protocol and sample rate; addresses and more ports live in maps),
 *     table sizes, the mode (LATENCY_MODE, SIGHTING_EVENTS)
 * Followed by journey.h (trace/record: struct journey from tracer/events.py)
 * or latency.h, then the sensors.
 */
#include <uapi/linux/pkt_cls.h>

/* The IPPROTO_* used here, as uapi/linux/in.h defines them: that header
 * pulls in the kernel's linux/socket.h and its includes, which clang then
 * parses in each of BCC's three passes (~0.35 s of CPU, a fifth of a
 * start that compiles). */
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define IP_CT_NEW 2
#define IP_CT_IS_REPLY 3
#define IP_CT_UNTRACKED 7
#define NFCT_INFOMASK 7UL
/* Flow id from the nf_conn address: unique among live entries (they sit in
 * the kernel's direct map, 8-byte aligned), below 2^53 for JSON readers,
 * and tagged with bit 45 so it is above every tuple flow id (below 2^44,
 * netfilter.c tuple_flow_id) whatever the architecture's address layout. */
#define FLOW_ID(ct) ((((ct) & 0xffffffffffffULL) >> 3) | (1ULL << 45))
/* A drop may come long after a packet's last sighting: a packet waiting for
 * ARP is dropped (NEIGH_FAILED) after ~3 s. */
#define DROP_WINDOW_NS 5000000000LL

#define AF_INET6_ 10
#define IPPROTO_ICMPV6_ 58

/* Typed loads: one instruction each, where byte-wise __builtin_memcpy from a
 * u8 pointer costs a load and a shift per byte. Packet pointers may be
 * unaligned: fine for BPF on the architectures with efficient unaligned
 * access that the kernel's verifier accepts them on (x86-64, arm64). */
#define LD16(ptr) (*(const u16 *)(ptr))
#define LD32(ptr) (*(const u32 *)(ptr))
#define LD64(ptr) (*(const u64 *)(ptr))

/* A value the loader writes into the program (tracer/kernel/program_cache.py):
 * one 64-bit load of a marker constant, which the compiler cannot fold,
 * rewritten to the value when the program is loaded. The verifier still sees
 * a constant: it follows only the branches that value takes. */
#define TRC_VALUE(marker)                                \
    ({                                                   \
        u64 v_;                                          \
        asm volatile("%0 = " #marker " ll" : "=r"(v_)); \
        v_;                                              \
    })

/* The program's own value (PARAM_MARKER): one compiled body serves several
 * programs (tc's four hooks, netfilter's two NAT stages: TRC_SHARED_ENTRIES)
 * at a fraction of the compile. */
static __always_inline u64 trc_param(void)
{
    return TRC_VALUE(0x5452435f50415231); /* "TRC_PAR1" */
}

/* The filter's values (FILTER_VALUE_MARKERS), the same in every program:
 * builds for tracer's loader leave them open (-DFILTER_ON=TRC_FILTER_ON,
 * -DFILTER_PORT=TRC_FILTER_PORT, ...: tracer/kernel/kernel_filter.py), so one
 * compiled program serves every value of them (`--port 3000` as well as the
 * prebuilt `--port 8000`, `--container web`, `--proto udp`...). FILTER_ON
 * says which parts are on (FILTER_ON_* bits); the verifier sees it constant
 * and drops the parts that are off. BCC's own builds (TRACER_DEBUG) get the
 * values as -D constants. Each use is a load: read once where used twice. */
#define TRC_FILTER_ON ((u64)TRC_VALUE(0x5452435f464f4e53))    /* "TRC_FONS" */
#define TRC_FILTER_PORT ((u16)TRC_VALUE(0x5452435f46505254))  /* "TRC_FPRT", network order */
#define TRC_FILTER_PROTO ((u8)TRC_VALUE(0x5452435f4650524f)) /* "TRC_FPRO" */
#define TRC_SAMPLE_N ((u32)TRC_VALUE(0x5452435f46534d50))     /* "TRC_FSMP" */

/* struct trc_addr (tracer/events.py): an IPv6 address, or an IPv4 one as
 * IPv4-mapped IPv6 (::ffff:a.b.c.d), so one key, one record and one filter
 * serve both families. Two words, compared and copied as u64. The words are
 * the address's bytes as loaded on a little-endian machine (x86-64, arm64). */
static __always_inline void addr_v4(struct trc_addr *a, u32 ip)
{
    a->hi = 0;
    a->lo = 0xffff0000ULL | ((u64)ip << 32); /* bytes 8..15: 00 00 ff ff a b c d */
}

static __always_inline void addr_v6(struct trc_addr *a, const u8 *p)
{
    a->hi = LD64(p);
    a->lo = LD64(p + 8);
}

/* The same from stack memory only 4-byte aligned (the verifier refuses
 * misaligned stack loads): a conntrack tuple's dst.u3 is at offset 20. */
static __always_inline void addr_v6_words(struct trc_addr *a, const u8 *p)
{
    a->hi = LD32(p) | (u64)LD32(p + 4) << 32;
    a->lo = LD32(p + 8) | (u64)LD32(p + 12) << 32;
}

static __always_inline int addr_eq(const struct trc_addr *a, const struct trc_addr *b)
{
    return a->hi == b->hi && a->lo == b->lo;
}

/* 32 bits of an address for hashing (the IPv4 address, xor a constant, for
 * a mapped one). */
static __always_inline u32 addr_fold(const struct trc_addr *a)
{
    u64 x = a->hi ^ a->lo;
    return (u32)x ^ (u32)(x >> 32);
}

/* A packet's addresses as seen at one hop (network byte order throughout). */
struct flow_key {
    struct trc_addr saddr;
    struct trc_addr daddr;
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
    u8 proto;
    u8 tcp_flags;
    /* Not part of the fingerprint (0 in a packet's, masked out by
     * fp_equal): in a trace-mode packet-cache slot, the journey slot of the
     * packet's journey (bpf/journey.h, journey_take). */
    u16 jslot;
};
#define FP_MATCH_MASK 0x0000ffffffffffffULL /* the second word without jslot */

/* A packet followed across sensors: one slot of the packet cache. 32 bytes,
 * so a set of two is one cache line: a first sighting costs one miss. */
struct pkt_slot {
    struct fp_key fp;
    u64 last_seen;
    union {
        u64 packet_id; /* trace mode */
        struct {       /* latency mode */
            u32 first_seen; /* low 32 bits of ktime: end-to-end times are far below 4 s */
            u32 last_hop;   /* hop code of the last sighting */
        };
    };
};

struct pkt {
    struct flow_key key;
    u32 seq;
    u32 ack;
    u16 ip_id;
    u16 tot_len;
    u8 ttl;
    u8 tcp_flags;
    u8 tcp_doff; /* TCP data offset (header length / 4): payload = tot_len - ihl*4 - doff*4 */
};

/* Tracked connections: every view of a traced flow (each side of NAT) ->
 * flow id. Filled by the netfilter sensor from conntrack. A view's key is
 * its two endpoints in one order (flow_key_canonical), whichever way a
 * packet goes, so a connection has one view a side of NAT (two with NAT,
 * one without), not one a direction and side: half the inserts into the
 * LRU map (~0.3 us each once it is full: docs/benchmarks.md, session 27),
 * and half its lines. A value's direction is that of a packet whose
 * addresses are the key's as stored; the other way, the other one. */
BPF_TABLE("lru_hash", struct flow_key, struct flow_val, flows, FLOW_ENTRIES);

/* k with its endpoints in the canonical order (the lower address first;
 * for equal addresses, the lower port) into *out: 1 if that swapped them.
 * An ICMP key's ports are the echo id and 0 either way: only its addresses
 * swap. */
static __always_inline int flow_key_canonical(struct flow_key *out, const struct flow_key *k)
{
    int icmp = k->proto == IPPROTO_ICMP || k->proto == IPPROTO_ICMPV6_;
    int swap = k->saddr.hi != k->daddr.hi ? k->saddr.hi > k->daddr.hi
             : k->saddr.lo != k->daddr.lo ? k->saddr.lo > k->daddr.lo
                                          : !icmp && k->sport > k->dport;
    *out = *k;
    if (swap) {
        out->saddr = k->daddr;
        out->daddr = k->saddr;
        if (!icmp) {
            out->sport = k->dport;
            out->dport = k->sport;
        }
    }
    return swap;
}

static __always_inline u32 other_direction(u32 dir)
{
    return dir ? DIR_ORIGINAL + DIR_REPLY - dir : 0;
}

/* The view of canonical key c (flow_key_canonical: `swapped` as it
 * returned), and the direction of the packet it came from in *dir (NULL:
 * not wanted). */
static __always_inline struct flow_val *flow_find_canonical(struct flow_key *c, int swapped, u32 *dir)
{
    struct flow_val *v = flows.lookup(c);
    if (v && dir)
        *dir = swapped ? other_direction(v->direction) : v->direction;
    return v;
}

/* The view of a packet's addresses k, and the packet's direction in *dir
 * (NULL: not wanted). */
static __always_inline struct flow_val *flow_find(const struct flow_key *k, u32 *dir)
{
    struct flow_key c = {};
    int swapped = flow_key_canonical(&c, k);
    return flow_find_canonical(&c, swapped, dir);
}

/* Packet cache: fingerprint -> packet id (and latency state), so later
 * sensors, the drop sensor included, reuse the first sighting's id. A 2-way
 * set-associative array, not LRU hashes: an LRU insert costs ~0.5 us under
 * load (free-list refill, eviction, bucket locks) and every traced packet
 * needed two (fingerprint and skb maps); an array slot costs a few loads and
 * stores. A set holds two
 * packets in flight; a third evicts the older one (its journey splits), which
 * at PACKET_ENTRIES slots and microsecond transit times is rare. Concurrent
 * writers to one slot may tear it: the fingerprint check catches most of it,
 * and the rest is one mis-joined sighting, never a fault. */
/* BPF_F_MMAPABLE for its layout, not for mmap: the values then start on a
 * page, so a set (two slots, 64 bytes) is one cache line and no slot
 * straddles two. A plain array's values start 312 bytes into struct
 * bpf_array (6.18), 56 bytes into a line: every set spanned two lines. */
BPF_F_TABLE("array", int, struct pkt_slot, pcache, PACKET_ENTRIES, BPF_F_MMAPABLE);
_Static_assert((PACKET_ENTRIES & (PACKET_ENTRIES - 1)) == 0, "PACKET_ENTRIES: a power of two (set index mask)");
/* Filter values, written by user space before attaching. */
BPF_HASH(filter_ports, u16, u8, FILTER_PORT_ENTRIES);
BPF_HASH(filter_hosts, struct trc_addr, u8, FILTER_HOST_ENTRIES);
BPF_HASH(filter_ctr_addrs, struct trc_addr, u8, 1024);
BPF_HASH(filter_ctr_ports, u16, u8, 1024);
/* Container address and port of each docker-proxy whose host port (or
 * container) the filter names: the proxy's own connection to the container
 * (its backend leg, bpf/proxy.c) is traced because its client leg is. */
struct backend_key {
    struct trc_addr addr;
    u16 port;
    u16 _pad[3];
};
BPF_HASH(filter_proxy_backends, struct backend_key, u8, 256);

static __always_inline int proxy_backend(struct flow_key *k)
{
    struct backend_key b = {};
    b.addr = k->daddr;
    b.port = k->dport;
    if (filter_proxy_backends.lookup(&b))
        return 1;
    b.addr = k->saddr;
    b.port = k->sport;
    return filter_proxy_backends.lookup(&b) != NULL;
}
/* [sensor*2] = records emitted, [sensor*2+1] = records lost (ring buffer full). */
BPF_PERCPU_ARRAY(counters, u64, 2 * N_SENSORS);
BPF_PERCPU_ARRAY(id_seq, u64, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* Interface role + 1 of host-netns tc attachments by ifindex (container-side
 * is implied; 0 = not attached = external): journeys end where a packet leaves
 * by an external interface, and latency mode keys its hop codes by role. An
 * array: read on every tc sighting, and an array lookup is a bounds check and
 * a load. Interfaces numbered beyond it (rare) are in the hash. ROLE_* and
 * IF_ROLE_SLOTS come from tracer/kernel/hop_codes.py. */
BPF_ARRAY(if_roles, u32, IF_ROLE_SLOTS);
BPF_HASH(if_roles_high, u32, u32, 4096);

static __always_inline u32 if_role(u32 ifindex)
{
    /* Two calls, each on its own map: one call on either map (a pointer
     * chosen at run time) is not inlined by the verifier, and costs an
     * indirect call through the map's ops (~30 ns with retpolines). An
     * ifindex past the array (rare) also reads its slot 0 and drops it: one
     * inlined array load, correct either way. */
    u32 k = ifindex < IF_ROLE_SLOTS ? ifindex : 0;
    u32 *r = if_roles.lookup(&k);
    if (ifindex >= IF_ROLE_SLOTS)
        r = if_roles_high.lookup(&ifindex);
    return r && *r ? *r - 1 : ROLE_EXTERNAL;
}

/* The start of an L4 header (20 bytes readable at l4) into the packet's key
 * and fingerprint. */
static __always_inline void parse_l4(struct pkt *p, const u8 *l4)
{
    if (p->key.proto == IPPROTO_TCP) {
        p->key.sport = LD16(l4);
        p->key.dport = LD16(l4 + 2);
        p->seq = LD32(l4 + 4);
        p->ack = LD32(l4 + 8);
        p->tcp_flags = l4[13];
        p->tcp_doff = l4[12] >> 4;
    } else if (p->key.proto == IPPROTO_UDP) {
        p->key.sport = LD16(l4);
        p->key.dport = LD16(l4 + 2);
        /* UDP length + checksum are not rewritten by NAT... the checksum is,
         * so only the length goes into the fingerprint. */
        *(u16 *)&p->seq = LD16(l4 + 4);
    } else if (p->key.proto == IPPROTO_ICMP || p->key.proto == IPPROTO_ICMPV6_) {
        /* Conntrack keys echo by id alone (src.u.icmp.id), so the key has
         * the id as "source port" and no destination port; NAT may rewrite
         * the id, so the fingerprint uses type, code and sequence instead.
         * ICMPv6 echo has the same layout. */
        p->key.sport = LD16(l4 + 4);
        *(u16 *)&p->seq = LD16(l4);
        *(u16 *)&p->ack = LD16(l4 + 6);
    }
}

/* Parse an IPv4 header and the start of its L4 header (20 bytes readable
 * at l4 when l4_ok), from packet or stack memory. */
static __always_inline int parse_ipv4(struct pkt *p, const u8 *ip, const u8 *l4, int l4_ok)
{
    if ((ip[0] >> 4) != 4)
        return 0;
    p->key.proto = ip[9];
    p->ttl = ip[8];
    p->tot_len = LD16(ip + 2);
    p->ip_id = LD16(ip + 4);
    addr_v4(&p->key.saddr, LD32(ip + 12));
    addr_v4(&p->key.daddr, LD32(ip + 16));
    /* Non-first fragments carry no L4 header. */
    /* Fragment offset: the low 5 bits of byte 6 and all of byte 7, i.e. mask
     * 0xff1f of a little-endian load (x86-64 and arm64, where this runs). */
    if ((LD16(ip + 6) & 0xff1f) != 0 || !l4_ok)
        return 1;
    parse_l4(p, l4);
    return 1;
}

/* IPv6 payload length -> total length (network order), as IPv4 counts it. */
static __always_inline u16 ipv6_total_len(const u8 *ip)
{
    return __builtin_bswap16(__builtin_bswap16(LD16(ip + 4)) + 40);
}

/* Parse an IPv6 header (40 bytes) and, when the next header is TCP, UDP or
 * ICMPv6 and l4_ok, the start of its L4 header (20 bytes at l4). Extension
 * headers are not followed: such packets are keyed by addresses alone. No
 * IP id exists in IPv6: the low 16 bits of the flow label (the sender's, per
 * connection; NAT and forwarding keep it) stand in for it, and the hop
 * limit for the TTL. */
static __always_inline int parse_ipv6(struct pkt *p, const u8 *ip, const u8 *l4, int l4_ok)
{
    if ((ip[0] >> 4) != 6)
        return 0;
    p->key.proto = ip[6];
    p->ttl = ip[7];
    p->tot_len = ipv6_total_len(ip);
    p->ip_id = LD16(ip + 2);
    addr_v6(&p->key.saddr, ip + 8);
    addr_v6(&p->key.daddr, ip + 24);
    if (l4_ok)
        parse_l4(p, l4);
    return 1;
}

static __always_inline int l4_follows_ipv6(u8 next)
{
    return next == IPPROTO_TCP || next == IPPROTO_UDP || next == IPPROTO_ICMPV6_;
}

/* The user's filter. Each option given must match (AND across options); an
 * option matches when either end of the packet does. */
static __always_inline int filter_match(struct flow_key *k)
{
    u64 on = FILTER_ON;
    if ((on & FILTER_ON_PROTO) && k->proto != FILTER_PROTO)
        return 0;
    if ((on & FILTER_ON_PROXY_BACKENDS) && proxy_backend(k))
        return 1;
    if (on & FILTER_ON_PORT) {
        u16 port = FILTER_PORT;
        if (k->sport != port && k->dport != port)
            return 0;
    }
    if ((on & FILTER_ON_PORTS) && !filter_ports.lookup(&k->sport) && !filter_ports.lookup(&k->dport))
        return 0;
    if ((on & FILTER_ON_HOSTS) && !filter_hosts.lookup(&k->saddr) && !filter_hosts.lookup(&k->daddr))
        return 0;
    /* The container's own address (after DNAT, or as a MASQUERADE source) or
     * one of its published host ports (before DNAT). */
    if ((on & FILTER_ON_CONTAINERS) && !filter_ctr_addrs.lookup(&k->saddr) && !filter_ctr_addrs.lookup(&k->daddr) &&
        !filter_ctr_ports.lookup(&k->sport) && !filter_ctr_ports.lookup(&k->dport))
        return 0;
    return 1;
}

/* 1-in-SAMPLE_N flows, chosen by a hash that is the same in both directions
 * (addresses and ports combined with xor), so a chosen flow is followed whole.
 * Callers hash the conntrack original tuple where they have it. */
static __always_inline int sampled(struct flow_key *k)
{
    if (!(FILTER_ON & FILTER_ON_SAMPLE))
        return 1;
    u32 h = (addr_fold(&k->saddr) ^ addr_fold(&k->daddr)) * 0x9E3779B1u;
    h ^= ((u32)(k->sport ^ k->dport) | (k->proto << 16)) * 0x85EBCA6Bu;
    h ^= h >> 15;
    return h % SAMPLE_N == 0;
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

static __always_inline int fp_equal(struct fp_key *a, struct fp_key *b)
{
    u64 a0, a1, b0, b1;
    __builtin_memcpy(&a0, a, 8);
    __builtin_memcpy(&a1, (u8 *)a + 8, 8);
    __builtin_memcpy(&b0, b, 8);
    __builtin_memcpy(&b1, (u8 *)b + 8, 8);
    return a0 == b0 && ((a1 ^ b1) & FP_MATCH_MASK) == 0;
}

/* A TCP connection's packets in one group of PACKET_GROUP slots (two
 * kilobytes of the cache, and the group's journey slots seven or eight
 * pages): a
 * packet's first sighting writes cold slots, and on this VM a TLB miss in
 * a large vmalloc'ed map (4 KiB pages, nested paging) cost more than the
 * cache miss; the connection's next packets then find the group's pages
 * mapped. The group follows the connection's sequence numbers to 4 KiB (seq
 * xor ack: the same both ways), the set within it the whole fingerprint;
 * other protocols, whose fingerprints carry nothing per connection, spread
 * over the whole cache as before, and so do TCP fingerprints without sequence
 * numbers (non-first fragments: seq and ack 0) and the latency and sighting
 * modes' (no journey slots: grouping would only crowd a connection's packets
 * into fewer sets). Smaller groups cost less (32: ~70 ns less
 * per first sighting here) but a connection's own packets then take each
 * other's sets sooner: of a 12-packet exchange, ~0.2 slots are reused
 * within the exchange at 64 (~0.9 at 32), and a packet whose slot was
 * reused can no longer be found by a late drop (freed after delivery). */
#define PACKET_GROUP 64
_Static_assert(PACKET_ENTRIES % PACKET_GROUP == 0, "PACKET_ENTRIES: whole groups");

/* Index of the first slot of a fingerprint's set. tests/e2e/test_journey_kernel.py
 * (pcache_set_index) computes the same. */
static __always_inline u32 pcache_index(struct fp_key *fp)
{
    u64 a, b;
    __builtin_memcpy(&a, fp, 8);
    __builtin_memcpy(&b, (u8 *)fp + 8, 8);
    u64 h = (a ^ (b * 0x9E3779B97F4A7C15ULL)) * 0xC2B2AE3D27D4EB4FULL;
    u32 set = (u32)(h >> 32);
    u32 group = set;
#if !defined(SIGHTING_EVENTS) && !defined(LATENCY_MODE) /* only journeys' slots have the pages to share */
    if (fp->proto == IPPROTO_TCP && (fp->seq | fp->ack)) /* not a non-first fragment (no TCP header read) */
        group = (u32)(((u64)(__builtin_bswap32(fp->seq ^ fp->ack) >> 12) * 0x9E3779B97F4A7C15ULL) >> 32);
#endif
    return (group & (PACKET_ENTRIES - 1) & ~(PACKET_GROUP - 1)) | (set & (PACKET_GROUP - 2));
}

/* The two slots of a fingerprint's set; *index is the first one's (NULL only
 * if the verifier's bounds fail, never in practice). */
static __always_inline struct pkt_slot *pcache_set(struct fp_key *fp, struct pkt_slot **other, u32 *index)
{
    u32 i = pcache_index(fp);
    u32 j = i + 1;
    *index = i;
    *other = pcache.lookup(&j);
    return pcache.lookup(&i);
}

/* Start loading the packet's set (its fingerprint's: the same index the
 * search computes later), and go on: nothing waits for the value, so the
 * CPU overlaps the cache miss with what the caller does next (~7 % of a
 * claim's sensor run here: docs/benchmarks.md, session 27). */
static __always_inline void pcache_touch(struct fp_key *fp)
{
    u32 i = pcache_index(fp);
    struct pkt_slot *s = pcache.lookup(&i);
    if (s)
        asm volatile("" ::"r"(s->last_seen));
}

/* Of a set's two slots, the live one for this fingerprint (seen within
 * `window` ns), or NULL. */
static __always_inline struct pkt_slot *pcache_match(struct pkt_slot *a, struct pkt_slot *b, struct fp_key *fp,
                                                     u64 now, s64 window)
{
    /* Signed: another CPU may have just written a slightly later time. */
    if (fp_equal(&a->fp, fp) && (s64)(now - a->last_seen) < window)
        return a;
    if (fp_equal(&b->fp, fp) && (s64)(now - b->last_seen) < window)
        return b;
    return NULL;
}

static __always_inline struct pkt_slot *pcache_find_within(struct fp_key *fp, u64 now, s64 window)
{
    struct pkt_slot *b = NULL;
    u32 i;
    struct pkt_slot *a = pcache_set(fp, &b, &i);
    return a && b ? pcache_match(a, b, fp, now, window) : NULL;
}

/* Take the older of a set's two slots for a packet not in the cache and
 * fill it: packet id (trace mode) or first hop (latency mode). The
 * fingerprint goes in last, so a reader on another CPU that matches it sees
 * the rest (x86 keeps stores in order; the compiler barrier keeps clang
 * from reordering them; elsewhere a rare race mis-joins one sighting). */
static __always_inline void pcache_claim(struct pkt_slot *a, struct pkt_slot *b, struct fp_key *fp, u64 now,
                                         u64 packet_id, u32 hop)
{
    struct pkt_slot *s = (s64)(a->last_seen - b->last_seen) <= 0 ? a : b;
    s->last_seen = now;
#ifdef LATENCY_MODE
    s->first_seen = (u32)now;
    s->last_hop = hop;
#else
    s->packet_id = packet_id;
#endif
    asm volatile("" ::: "memory");
    s->fp = *fp;
}

/* A sensor's last sighting on this CPU, kept per CPU for its fast path
 * (bpf/netfilter.c, bpf/tc.c): the next hook of the same skb finds the
 * packet's slot here instead of searching the cache. */
struct last_sighting {
    u64 skb;
    u64 nfct;  /* netfilter: the conntrack pointer and info bits */
    u64 check; /* what the slot must still hold: the journey's packet id
                * (open bit included) or, in latency mode, latency_check */
    u32 slot;
    u16 rank;  /* netfilter: where that hook comes in a pass (nf_rank) */
    u16 dir;   /* latency mode: the packet's conntrack direction */
};

#ifndef SIGHTING_EVENTS
/* Each sensor's last sighting on this CPU, for its fast path (bpf/tc.c
 * tc_known, bpf/netfilter.c nf_known) and for the other sensor's: one skb
 * goes tc ingress -> netfilter -> tc egress on one CPU, so the first
 * netfilter hook of a packet tc has just seen (and the first tc hook after
 * netfilter) finds its journey (latency mode: its slot) here instead of
 * paying the full path a second time per packet. Here, not in the sensors'
 * files, so each sensor sees the other's whether or not it is loaded. */
BPF_PERCPU_ARRAY(tc_last, struct last_sighting, 1);
BPF_PERCPU_ARRAY(nf_last, struct last_sighting, 1);
#endif

/* The packet-cache slot of a last sighting, if it saw the packet within the
 * joining window: a fast path never joins what the full path would not. The
 * caller checks it still holds the same packet. */
static __always_inline struct pkt_slot *last_slot(struct last_sighting *last, u64 now)
{
    u32 k = last->slot & (PACKET_ENTRIES - 1);
    struct pkt_slot *slot = pcache.lookup(&k);
    if (!slot || (s64)(now - slot->last_seen) >= (s64)FP_WINDOW_NS)
        return NULL;
    return slot;
}

/* counter++ on a per-CPU counter, the value before: a netfilter hook in
 * process context (OUTPUT) can be interrupted by a softirq's sensors on the
 * same CPU, and both must not take one value. A compare-and-swap (BCC's
 * clang targets a BPF without fetch-and-add's result), again once if
 * interrupted; interrupted twice, a value no counter reaches (bit 39 set:
 * 5.5e11 packets on one CPU). */
static __always_inline u64 per_cpu_take(u64 *counter)
{
    u64 n = *counter;
    u64 was = __sync_val_compare_and_swap(counter, n, n + 1);
    if (was == n)
        return n;
    if (__sync_val_compare_and_swap(counter, was, was + 1) == was)
        return was;
    return was | (1ULL << 39);
}

static __always_inline u64 new_packet_id(void)
{
    int zero = 0;
    u64 *seq = id_seq.lookup(&zero);
    u64 n = 0;
    if (seq)
        n = per_cpu_take(seq) + 1;
    /* Per-CPU counters, CPU above them: unique without a shared counter, and below
     * 2^53 so JSON readers that use doubles (jq, JavaScript) keep it exact. */
    return ((u64)(bpf_get_smp_processor_id() + 1) << PACKET_ID_CPU_SHIFT) | (n & ((1ULL << PACKET_ID_CPU_SHIFT) - 1));
}

/* The packet's id: the one an earlier sensor gave it, else a new one. */
static __always_inline u64 packet_identity(struct fp_key *fp, u64 now, u8 *flags)
{
    struct pkt_slot *b = NULL;
    u32 i;
    struct pkt_slot *a = pcache_set(fp, &b, &i); /* once: a miss claims from the same set */
    struct pkt_slot *seen = a && b ? pcache_match(a, b, fp, now, (s64)FP_WINDOW_NS) : NULL;
    if (seen) {
        seen->last_seen = now;
        return seen->packet_id;
    }
    u64 id = new_packet_id();
    if (a && b)
        pcache_claim(a, b, fp, now, id, 0);
    *flags |= FLAG_NEW_PACKET;
    return id;
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
    e->tcp_doff = p->tcp_doff;
    e->tcp_seq = p->seq;
    e->tcp_ack = p->ack;
    e->cpu = bpf_get_smp_processor_id();
}

static __always_inline void count(int slot)
{
    u64 *c = counters.lookup(&slot);
    if (c)  /* atomic: an OUTPUT hook in process context can be interrupted by a softirq's sensor on its CPU */
        __sync_fetch_and_add(c, 1);
}

static __always_inline void emit(struct event *e, int sensor)
{
    if (events.ringbuf_output(e, sizeof(*e), 0) == 0)
        count(sensor * 2);
    else
        count(sensor * 2 + 1);
}

/* Read IPv4 or IPv6 + L4 headers of a kernel sk_buff, given skb->head and
 * skb->network_header (netfilter and tracepoints). One read covers both
 * headers when the IP header has no options (nearly always). */
static __always_inline int parse_kernel_headers(struct pkt *p, u64 head, u16 nh)
{
    u8 h[40] __attribute__((aligned(8))) = {};
    if (!head || nh == 0xffff)
        return 0;
    if (bpf_probe_read_kernel(h, sizeof(h), (void *)(head + nh)) < 0) {
        /* The buffer may end sooner than 40 bytes after the header. */
        if (bpf_probe_read_kernel(h, 28, (void *)(head + nh)) < 0)
            return 0;
    }
    if ((h[0] >> 4) == 6) {
        /* The whole IPv6 header is in h; the L4 header follows it. */
        u8 l4[20] __attribute__((aligned(8))) = {};
        int l4_ok = l4_follows_ipv6(h[6]) && bpf_probe_read_kernel(l4, sizeof(l4), (void *)(head + nh + 40)) == 0;
        return parse_ipv6(p, h, l4, l4_ok);
    }
    u32 ihl = (h[0] & 0x0f) * 4;
    if (ihl == 20)
        return parse_ipv4(p, h, h + 20, 1);
    u8 l4[20] __attribute__((aligned(8))) = {};
    int l4_ok = bpf_probe_read_kernel(l4, sizeof(l4), (void *)(head + nh + ihl)) == 0;
    return parse_ipv4(p, h, l4, l4_ok);
}

/* Two fields of one kernel struct, `lo` at base + off_lo and `hi` at base +
 * off_hi: one bpf_probe_read_kernel for both where they lie within
 * PAIR_SPAN_MAX bytes in that order (a probe read costs far more than the
 * bytes it copies), two elsewhere (the offsets are constants: the branch
 * not taken is compiled out). < 0: the one read failed (both left as they
 * were); the two reads are not checked (a failed one zeroes its field). */
#define PAIR_SPAN_MAX 64
#define PROBE_READ_PAIR(lo, off_lo, hi, off_hi, base)                                               \
    ({                                                                                              \
        long pair_err = 0;                                                                          \
        if ((off_hi) > (off_lo) && (off_hi) + sizeof(hi) - (off_lo) <= PAIR_SPAN_MAX) {             \
            u8 pair_b[PAIR_SPAN_MAX] __attribute__((aligned(8))); /* written by the read */         \
            pair_err = bpf_probe_read_kernel(pair_b, (off_hi) + sizeof(hi) - (off_lo),              \
                                             (void *)((base) + (off_lo)));                          \
            if (pair_err == 0) { /* memcpy: loads the offsets' alignment allows */                  \
                __builtin_memcpy(&(lo), pair_b, sizeof(lo));                                        \
                __builtin_memcpy(&(hi), pair_b + ((off_hi) - (off_lo)), sizeof(hi));                \
            }                                                                                       \
        } else {                                                                                    \
            bpf_probe_read_kernel(&(lo), sizeof(lo), (void *)((base) + (off_lo)));                  \
            bpf_probe_read_kernel(&(hi), sizeof(hi), (void *)((base) + (off_hi)));                  \
        }                                                                                           \
        pair_err;                                                                                   \
    })

/* parse_kernel_headers from an untyped skb address (raw tracepoint
 * arguments). head and network_header are a few bytes apart in struct
 * sk_buff (180 and 192 on 6.18): one read for both. */
static __always_inline int parse_kernel_skb(struct pkt *p, u64 skb)
{
    u64 head = 0;
    u16 nh = 0;
    if (PROBE_READ_PAIR(nh, OFF_SKB_NETWORK_HEADER, head, OFF_SKB_HEAD, skb) < 0)
        return 0;
    return parse_kernel_headers(p, head, nh);
}

static __always_inline u32 net_inum(u64 net)
{
    u32 inum = 0;
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(net + OFF_NET_INUM));
    return inum;
}
