/* Journey rows from the kernel's journey records, compiled (issue 9: CPU
 * per traced packet). tracer/journey_records.py builds the same JourneyRows
 * with about a hundred numpy calls a batch (~1.3 us a packet, the largest
 * stage of `trace` after the text); here it is two passes over the records
 * and their hops. tracer/native_rows.py calls them; the numpy path stays
 * the reference and the fallback, and the tests compare both.
 *
 * journey_hops: records -> hops in journey order. Packets by first
 *   sighting (ties by id), a packet's parts adjacent and by their own first
 *   sighting (a stable merge sort on (packet's first sighting, id, part's
 *   first sighting), as journey_records._journey_order's lexsort). Per hop
 *   its hook, NAT stage, time, time since the packet's first hop, place,
 *   drop reason and endpoints; per packet its facts. What needs a name is
 *   given as an index into the distinct values of the batch, in order of
 *   first appearance (places as decode.place_keys' keys, addresses as their
 *   16 recorded bytes, protocol numbers, drop reasons), which Python names
 *   once each.
 * journey_facts: once the places are named, per hop the place's codes
 *   (role, interface, container, container id, netns) and per packet its
 *   verdict, the hop last seen before a drop, its drop reason and its
 *   container(s), by the rules the caller passes in as lookup tables
 *   (journeys.TERMINAL_SIGHTINGS as a (hook, stage, role) table;
 *   journey_rows.journey_containers' comparisons as per-code tables).
 *
 * Every size and code is checked where it is used as an index (read once
 * into a local, compared with its table's size, only the local used), and
 * never read back from a buffer the caller can also write: bad input (codes
 * past their tables, columns that overlap, a buffer another thread rewrites
 * during the call) is a ValueError or TypeError, never a read or write out
 * of bounds. Only int64 columns are taken (parts.c load_column). Multi-byte fields
 * are little-endian but for length, tcp_seq and the ports, which the
 * kernel writes in network order (events.JOURNEY_DTYPE). */
#include "parts.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the record layout, in the order native_rows.LAYOUT passes it */
enum { L_STRIDE, L_PACKET_ID, L_FLOW_ID, L_FIRST_KTIME, L_LAST_KTIME, L_TUPLES, L_TCP_SEQ, L_DROP_REASON,
       L_DROP_NETNS, L_LENGTH, L_PROTOCOL, L_TCP_FLAGS, L_DIRECTION, L_N_HOPS, L_HOPS, L_TCP_DOFF, L_MAX_HOPS,
       L_MAX_TUPLES, L_HOOK_DROP, L_STAGE_SHIFT, L_IN_CT_BIT, N_LAYOUT };

/* journey_hops' outputs, in native_rows.PACKET_COLUMNS / HOP_COLUMNS order */
enum { P_PACKET_ID, P_FLOW_ID, P_DIRECTION, P_PROTOCOL, P_TCP_FLAGS, P_LENGTH, P_TCP_SEQ, P_TCP_DOFF, P_WALL,
       P_STARTS, N_PCOL };
enum { H_HOOK, H_STAGE, H_KTIME, H_DT, H_PLACE, H_REASON, H_SRC, H_SPORT, H_DST, H_DPORT, H_ICMP, N_HCOL };

static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* The distinct keys (16 bytes: two words) of a batch, numbered in order of
 * first appearance: open addressing, grown by doubling. */
typedef struct {
    uint64_t (*keys)[2]; /* position -> key */
    int32_t *slot;       /* slot -> position + 1 (0: empty) */
    Py_ssize_t slots, count;
} distinct;

static inline Py_ssize_t slot_of(uint64_t a, uint64_t b, Py_ssize_t slots) {
    uint64_t h = (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
    return (Py_ssize_t)((h ^ (h >> 29)) & (uint64_t)(slots - 1));
}

static int distinct_grow(distinct *t) {
    Py_ssize_t slots = t->slots ? 2 * t->slots : 64;
    int32_t *slot = calloc((size_t)slots, sizeof *slot);
    uint64_t(*keys)[2] = realloc(t->keys, (size_t)(slots / 2) * sizeof *keys);
    if (!slot || !keys) {
        free(slot);
        if (keys) t->keys = keys;
        return -1;
    }
    t->keys = keys;
    for (Py_ssize_t i = 0; i < t->count; i++) {
        Py_ssize_t s = slot_of(keys[i][0], keys[i][1], slots);
        while (slot[s]) s = (s + 1) & (slots - 1);
        slot[s] = (int32_t)(i + 1);
    }
    free(t->slot);
    t->slot = slot;
    t->slots = slots;
    return 0;
}

/* the key's position (added if new), or -1 (no memory) */
static inline int64_t distinct_find(distinct *t, uint64_t a, uint64_t b) {
    if (2 * (t->count + 1) > t->slots && distinct_grow(t) < 0) return -1;
    Py_ssize_t s = slot_of(a, b, t->slots);
    while (t->slot[s]) {
        const uint64_t *k = t->keys[t->slot[s] - 1];
        if (k[0] == a && k[1] == b) return t->slot[s] - 1;
        s = (s + 1) & (t->slots - 1);
    }
    if (t->count >= INT32_MAX) return -1; /* slots number positions as int32: more keys is no memory */
    t->keys[t->count][0] = a;
    t->keys[t->count][1] = b;
    t->slot[s] = (int32_t)(t->count + 1);
    return t->count++;
}

/* An address' position: the last two found are tried first (a batch's
 * packets are mostly a few connections' between a few addresses). */
typedef struct {
    uint64_t key[2][2];
    int64_t at[2];
} recent_two;

static inline int64_t address_find(distinct *t, const uint8_t *p, recent_two *r) {
    uint64_t a = rd64(p), b = rd64(p + 8);
    for (int i = 0; i < 2; i++)
        if (r->at[i] >= 0 && r->key[i][0] == a && r->key[i][1] == b) return r->at[i];
    int64_t at = distinct_find(t, a, b);
    r->key[1][0] = r->key[0][0], r->key[1][1] = r->key[0][1], r->at[1] = r->at[0];
    r->key[0][0] = a, r->key[0][1] = b, r->at[0] = at;
    return at;
}

static void distinct_free(distinct *t) {
    free(t->keys);
    free(t->slot);
}

/* A record's place in journey order. */
typedef struct {
    int64_t first;  /* its packet's first sighting (over all its parts) */
    uint64_t pid;
    int64_t fk;     /* its own first sighting */
    Py_ssize_t rec; /* its position in the input */
} order_key;

static inline int before(const order_key *a, const order_key *b) {
    if (a->first != b->first) return a->first < b->first;
    if (a->pid != b->pid) return a->pid < b->pid;
    return a->fk < b->fk;
}

/* Stable merge sort from the input's own ascending runs (records come
 * nearly in order: a handful of passes). ``tmp`` holds n keys. */
static void sort_keys(order_key *a, order_key *tmp, Py_ssize_t n, Py_ssize_t *bounds) {
    Py_ssize_t runs = 0;
    bounds[runs++] = 0;
    for (Py_ssize_t i = 1; i < n; i++)
        if (before(&a[i], &a[i - 1])) bounds[runs++] = i;
    bounds[runs] = n;
    order_key *src = a, *dst = tmp;
    while (runs > 1) {
        Py_ssize_t out = 0;
        for (Py_ssize_t r = 0; r < runs; r += 2) {
            Py_ssize_t lo = bounds[r], mid = bounds[r + 1], hi = r + 2 <= runs ? bounds[r + 2] : mid;
            Py_ssize_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) dst[k++] = before(&src[j], &src[i]) ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
            bounds[out++] = lo;
        }
        bounds[out] = n;
        runs = out;
        order_key *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof *a);
}

/* The distinct keys as a list: places as ints, addresses as 16 bytes */
static PyObject *key_list(const distinct *t, int as_bytes) {
    PyObject *list = PyList_New(t->count);
    for (Py_ssize_t i = 0; list && i < t->count; i++) {
        PyObject *item = as_bytes ? PyBytes_FromStringAndSize((const char *)t->keys[i], 16)
                                  : PyLong_FromUnsignedLongLong(t->keys[i][0]);
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, item);
    }
    return list;
}

PyObject *native_journey_hops(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "journey_hops";
    Py_buffer in, icmp;
    PyObject *layout_obj, *p_obj, *h_obj;
    long long boot_offset;
    if (!PyArg_ParseTuple(args, "y*O!y*LOO", &in, &PyTuple_Type, &layout_obj, &icmp, &boot_offset, &p_obj, &h_obj))
        return NULL;
    column pc[N_PCOL] = {0}, hc[N_HCOL] = {0}; /* outputs: every column written */
    int no_memory = 0, changed = 0;
    PyObject *result = NULL;
    distinct places = {0}, addrs = {0}, reasons = {0};
    int16_t proto_code[256];
    uint8_t protos[256];
    int n_protos = 0;
    order_key *keys = NULL, *tmp = NULL;
    Py_ssize_t *bounds = NULL;
    distinct ids = {0};
    int64_t *first_of = NULL;
    Py_ssize_t L[N_LAYOUT], kept = 0, hops = 0, packets = 0;

    if (icmp.len != 256) {
        PyErr_Format(PyExc_ValueError, "%s: icmp must be 256 flags, one per protocol number", fn);
        goto done;
    }
    if (PyTuple_GET_SIZE(layout_obj) != N_LAYOUT) {
        PyErr_Format(PyExc_TypeError, "%s: the layout has %d numbers", fn, N_LAYOUT);
        goto done;
    }
    for (int i = 0; i < N_LAYOUT; i++) {
        L[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout_obj, i));
        if (L[i] < 0) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: negative layout number", fn);
            goto done;
        }
    }
    const Py_ssize_t stride = L[L_STRIDE], max_hops = L[L_MAX_HOPS], max_tuples = L[L_MAX_TUPLES];
    /* every field inside the record (offsets compared as "L > stride - width": no overflow) */
    if (stride <= 0 || in.len % stride || max_tuples < 1 || max_tuples > 16 || max_hops < 1 || max_hops > 255
        || L[L_HOPS] > stride - 12 * max_hops || L[L_TUPLES] > stride - 40 * max_tuples || L[L_STAGE_SHIFT] > 6) {
        PyErr_Format(PyExc_ValueError, "%s: records and layout do not fit", fn);
        goto done;
    }
    static const Py_ssize_t width[N_LAYOUT] = {[L_PACKET_ID] = 8, [L_FLOW_ID] = 8, [L_FIRST_KTIME] = 8,
        [L_LAST_KTIME] = 8, [L_TCP_SEQ] = 4, [L_DROP_REASON] = 4, [L_DROP_NETNS] = 4, [L_LENGTH] = 2,
        [L_PROTOCOL] = 1, [L_TCP_FLAGS] = 1, [L_DIRECTION] = 1, [L_N_HOPS] = 1, [L_TCP_DOFF] = 1};
    for (int i = L_PACKET_ID; i <= L_TCP_DOFF; i++)
        if (i != L_TUPLES && i != L_HOPS && L[i] > stride - width[i]) {
            PyErr_Format(PyExc_ValueError, "%s: a field lies outside the record", fn);
            goto done;
        }
    const uint8_t *base = in.buf;
    const Py_ssize_t n = in.len / stride;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t h = base[i * stride + L[L_N_HOPS]];
        if (!h) continue;
        kept++;
        hops += h < max_hops ? h : max_hops;
    }
    /* packet columns: room for every kept record being a packet of its own */
    if (load_columns(p_obj, pc, N_PCOL, fn, "packet", NULL, 1u << P_PACKET_ID | 1u << P_FLOW_ID, ~0u) < 0
        || load_columns(h_obj, hc, N_HCOL, fn, "hop", NULL, 0, ~0u) < 0)
        goto done;
    for (int i = 0; i < N_PCOL + N_HCOL; i++) {
        const column *c = i < N_PCOL ? &pc[i] : &hc[i - N_PCOL];
        const Py_ssize_t want = i < N_PCOL ? kept + (i == P_STARTS) : hops;
        if (c->n != want) {
            PyErr_Format(PyExc_ValueError, "%s: %s column %d has %zd values, not %zd", fn, i < N_PCOL ? "packet" : "hop",
                         i < N_PCOL ? i : i - N_PCOL, c->n, want);
            goto done;
        }
    }
    {
        Py_buffer *out[N_PCOL + N_HCOL], *ins[2] = {&in, &icmp};
        for (int i = 0; i < N_PCOL; i++) out[i] = &pc[i].view;
        for (int i = 0; i < N_HCOL; i++) out[N_PCOL + i] = &hc[i].view;
        if (any_overlap(out, N_PCOL + N_HCOL, ins, 2)) {
            PyErr_Format(PyExc_ValueError, "%s: an output column overlaps another column or the records", fn);
            goto done;
        }
    }
    if (!kept) {
        pc[P_STARTS].v[0] = 0;
        result = Py_BuildValue("(nNNNN)", (Py_ssize_t)0, PyList_New(0), PyList_New(0), PyList_New(0),
                               PyList_New(0));
        goto done;
    }
    keys = malloc((size_t)kept * sizeof *keys);
    tmp = malloc((size_t)kept * sizeof *tmp);
    bounds = malloc((size_t)(kept + 1) * sizeof *bounds);
    first_of = malloc((size_t)kept * sizeof *first_of);
    if (!keys || !tmp || !bounds || !first_of) {
        PyErr_NoMemory();
        goto done;
    }

    Py_BEGIN_ALLOW_THREADS
    /* Records in journey order: a packet's first sighting over all its
     * parts (most packets have one part) keys it. */
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + i * stride;
        if (!r[L[L_N_HOPS]]) continue;
        if (k == kept) { /* the records changed since they were counted */
            changed = 1;
            break;
        }
        keys[k].pid = rd64(r + L[L_PACKET_ID]);
        keys[k].fk = (int64_t)rd64(r + L[L_FIRST_KTIME]);
        keys[k].rec = i;
        Py_ssize_t seen = ids.count;
        int64_t at = distinct_find(&ids, keys[k].pid, 0);
        if (at < 0) {
            no_memory = 1;
            break;
        }
        if (ids.count > seen || keys[k].fk < first_of[at]) first_of[at] = keys[k].fk;
        tmp[k].rec = at; /* the packet's position among the distinct ids, for the pass below */
        k++;
    }
    if (!changed && !no_memory && k != kept) changed = 1;
    if (!changed && !no_memory) {
        for (Py_ssize_t i = 0; i < kept; i++) keys[i].first = first_of[tmp[i].rec];
        sort_keys(keys, tmp, kept, bounds);
    }

    uint64_t *packet_id = (uint64_t *)pc[P_PACKET_ID].v, *flow_id = (uint64_t *)pc[P_FLOW_ID].v;
    int64_t *direction = pc[P_DIRECTION].v, *protocol = pc[P_PROTOCOL].v, *tcp_flags = pc[P_TCP_FLAGS].v,
            *length = pc[P_LENGTH].v, *tcp_seq = pc[P_TCP_SEQ].v, *tcp_doff = pc[P_TCP_DOFF].v,
            *wall = pc[P_WALL].v, *starts = pc[P_STARTS].v;
    int64_t *hook = hc[H_HOOK].v, *stage = hc[H_STAGE].v, *ktime = hc[H_KTIME].v, *dt = hc[H_DT].v,
            *place = hc[H_PLACE].v, *reason = hc[H_REASON].v, *src = hc[H_SRC].v, *sport = hc[H_SPORT].v,
            *dst = hc[H_DST].v, *dport = hc[H_DPORT].v, *is_icmp = hc[H_ICMP].v;
    const uint8_t *icmp_of = icmp.buf;
    const unsigned hook_drop = (unsigned)L[L_HOOK_DROP], shift = (unsigned)L[L_STAGE_SHIFT];
    const unsigned in_ct_bit = (unsigned)L[L_IN_CT_BIT];
    memset(proto_code, 0xFF, sizeof proto_code);
    uint64_t last_key = 0;
    int64_t last_place = -1; /* most hops are where the one before was */
    recent_two recent[1] = {{.at = {-1, -1}}};
    Py_ssize_t h = 0, g = -1, first_hop = 0; /* the packet's first hop: kept here, never read back from starts */
    for (Py_ssize_t x = 0; x < kept && !changed && !no_memory; x++) {
        const uint8_t *r = base + keys[x].rec * stride;
        Py_ssize_t nh_ = r[L[L_N_HOPS]];
        if (nh_ > max_hops) nh_ = max_hops;
        if (!nh_ || h + nh_ > hops) { /* changed since counted: never write past the outputs */
            changed = 1;
            break;
        }
        uint64_t flow = rd64(r + L[L_FLOW_ID]);
        int64_t dir = r[L[L_DIRECTION]];
        if (x == 0 || keys[x].pid != keys[x - 1].pid) { /* a packet's first part: its facts */
            g++;
            first_hop = h;
            starts[g] = h;
            packet_id[g] = keys[x].pid;
            flow_id[g] = flow;
            direction[g] = dir;
            uint8_t p = r[L[L_PROTOCOL]];
            if (proto_code[p] < 0) {
                proto_code[p] = (int16_t)n_protos;
                protos[n_protos++] = p;
            }
            protocol[g] = proto_code[p];
            tcp_flags[g] = r[L[L_TCP_FLAGS]];
            length[g] = be16(r + L[L_LENGTH]);
            tcp_seq[g] = be32(r + L[L_TCP_SEQ]);
            tcp_doff[g] = r[L[L_TCP_DOFF]];
        } else { /* flow and direction: the largest any part knew */
            if (flow > flow_id[g]) flow_id[g] = flow;
            if (dir > direction[g]) direction[g] = dir;
        }
        /* the record's tuples that a hop points at: endpoints once each
         * (a hop's and a tuple's fields at native_rows.C_HOP_FIELDS' and
         * C_TUPLE_FIELDS' offsets, which native_rows checks against the dtypes) */
        const uint8_t *hp = r + L[L_HOPS];
        int64_t t_src[16], t_dst[16], t_sport[16], t_dport[16];
        uint32_t pointed = 0;
        for (Py_ssize_t y = 0; y < nh_; y++) {
            unsigned t = hp[12 * y + 10];
            pointed |= 1u << (t < max_tuples - 1 ? t : (unsigned)(max_tuples - 1));
        }
        for (unsigned t = 0; t < (unsigned)max_tuples; t++) {
            if (!(pointed >> t & 1)) continue;
            const uint8_t *tp = r + L[L_TUPLES] + 40 * t;
            int64_t s = address_find(&addrs, tp, recent), d = address_find(&addrs, tp + 16, recent);
            no_memory |= s < 0 || d < 0;
            t_src[t] = s;
            t_dst[t] = d;
            t_sport[t] = be16(tp + 32);
            t_dport[t] = be16(tp + 34);
        }
        int64_t icmp_rec = icmp_of[r[L[L_PROTOCOL]]] != 0;
        int64_t fk = keys[x].fk;
        uint32_t drop_netns = rd32(r + L[L_DROP_NETNS]);
        int64_t drop_reason = -2; /* looked up at the first drop hop */
        for (Py_ssize_t y = 0; y < nh_; y++, hp += 12, h++) {
            unsigned code = hp[8], hk = code & 0x0F, t = hp[10];
            if (t > max_tuples - 1) t = (unsigned)(max_tuples - 1);
            hook[h] = hk;
            stage[h] = (code >> shift) & 0x03;
            /* the last hop: last_ktime only where dt_ns saturated, as tracer/last_hop.py (it may
             * name a hop the record does not carry) */
            ktime[h] = y == nh_ - 1 && rd32(hp) == 0xffffffffu ? (int64_t)rd64(r + L[L_LAST_KTIME])
                                                              : (int64_t)((uint64_t)fk + rd32(hp));
            /* decode.place_keys' key: netns << 32 | in-container << 31 | ifindex (netns only on a drop hop) */
            uint64_t key = (uint64_t)(hk == hook_drop ? drop_netns : 0) << 32 | (uint64_t)((code & in_ct_bit) != 0) << 31
                           | rd32(hp + 4);
            if (key != last_key || last_place < 0) {
                last_key = key;
                last_place = distinct_find(&places, key, 0);
                no_memory |= last_place < 0;
            }
            place[h] = last_place;
            if (hk == hook_drop) {
                if (drop_reason == -2) {
                    drop_reason = distinct_find(&reasons, rd32(r + L[L_DROP_REASON]), 0);
                    no_memory |= drop_reason < 0;
                }
                reason[h] = drop_reason;
            } else {
                reason[h] = -1;
            }
            src[h] = t_src[t];
            sport[h] = t_sport[t];
            dst[h] = t_dst[t];
            dport[h] = t_dport[t];
            is_icmp[h] = icmp_rec;
        }
        if (x + 1 == kept || keys[x + 1].pid != keys[x].pid) { /* the packet's last part: times from its first hop */
            /* (as unsigned: numpy's int64 arithmetic wraps, C's must not overflow) */
            const int64_t first_ktime = ktime[first_hop];
            wall[g] = (int64_t)((uint64_t)first_ktime + (uint64_t)boot_offset);
            for (Py_ssize_t y = first_hop; y < h; y++) dt[y] = (int64_t)((uint64_t)ktime[y] - (uint64_t)first_ktime);
        }
    }
    packets = g + 1;
    if (!changed && !no_memory) starts[packets] = h;
    if (!changed && h != hops) changed = 1;
    Py_END_ALLOW_THREADS
    if (no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (changed) {
        PyErr_Format(PyExc_ValueError, "%s: records changed while read", fn);
        goto done;
    }
    PyObject *proto_list = PyList_New(n_protos);
    for (int i = 0; proto_list && i < n_protos; i++) {
        PyObject *v = PyLong_FromLong(protos[i]);
        if (!v) Py_CLEAR(proto_list);
        else PyList_SET_ITEM(proto_list, i, v);
    }
    result = Py_BuildValue("(nNNNN)", packets, key_list(&places, 0), key_list(&addrs, 1), proto_list,
                           key_list(&reasons, 0));
done:
    free(keys);
    free(tmp);
    free(bounds);
    free(first_of);
    distinct_free(&ids);
    distinct_free(&places);
    distinct_free(&addrs);
    distinct_free(&reasons);
    release_columns(pc, N_PCOL);
    release_columns(hc, N_HCOL);
    PyBuffer_Release(&in);
    PyBuffer_Release(&icmp);
    return result;
}

const char native_journey_hops_doc[] =
    "journey_hops(records, layout, icmp, boot_offset_ns, packet_columns, hop_columns)\n"
    "The hops of the journey records in journey order and each packet's facts, into the given columns\n"
    "(tracer/native_rows.py); returns (packets, place keys, addresses, protocol numbers, drop reasons), the\n"
    "distinct values the columns index, in order of first appearance.";

/* journey_facts' inputs and outputs, in native_rows.py's order */
enum { F_HOOK, F_STAGE, F_PLACE, F_REASON, N_FHOP };                               /* hop columns in */
enum { T_ROLE, T_IFNAME, T_CONTAINER, T_CONTAINER_ID, T_NETNS, N_PLACECOL };         /* per place */
enum { C_NAMED, C_SAME, C_ID_KNOWN, C_ID_SAME, N_CTAB };                             /* per container / id code */
enum { O_VERDICT, O_LAST_SEEN, O_REASON, O_CONTAINER_OF, O_CONTAINER_TO, N_POUT };    /* per packet out */
enum { S_N_HOOK, S_N_STAGE, S_N_ROLE, S_HOOK_DROP, S_N_REASONS, S_CONTAINER_NULL, N_SIZES };

static int in_range(const column *c, int64_t size) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->v[i] < 0 || c->v[i] >= size) return 0;
    return 1;
}

/* what journey_facts found wrong while it ran without the GIL */
enum { FACTS_OK, FACTS_BAD_CODE, FACTS_BAD_REASON, FACTS_BAD_STARTS };

PyObject *native_journey_facts(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "journey_facts";
    PyObject *hop_obj, *starts_obj, *place_obj, *terminal_obj, *sizes_obj, *ctab_obj, *hop_out_obj, *p_out_obj;
    if (!PyArg_ParseTuple(args, "O!OO!OO!O!O!O!", &PyTuple_Type, &hop_obj, &starts_obj, &PyTuple_Type, &place_obj,
                          &terminal_obj, &PyTuple_Type, &sizes_obj, &PyTuple_Type, &ctab_obj, &PyTuple_Type,
                          &hop_out_obj, &PyTuple_Type, &p_out_obj))
        return NULL;
    column hin[N_FHOP] = {0}, st = {0}, pt[N_PLACECOL] = {0}, term = {0}, ct[N_CTAB] = {0}, hout[N_PLACECOL] = {0},
        pout[N_POUT] = {0};
    PyObject *result = NULL;
    int64_t S[N_SIZES];
    if (PyTuple_GET_SIZE(sizes_obj) != N_SIZES) {
        PyErr_Format(PyExc_TypeError, "%s: sizes has %d numbers", fn, N_SIZES);
        return NULL;
    }
    for (int i = 0; i < N_SIZES; i++) {
        S[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(sizes_obj, i));
        if (S[i] < 0 || S[i] > (1 << 30)) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: a size out of range", fn);
            return NULL;
        }
    }
    /* of the hop columns only the drop reasons are rewritten (in place) */
    if (load_columns(hop_obj, hin, N_FHOP, fn, "hops", NULL, 0, 1u << F_REASON) < 0
        || load_column(starts_obj, &st, COL_INT64, fn, "starts") < 0
        || load_columns(place_obj, pt, N_PLACECOL, fn, "place tables", NULL, 0, 0) < 0
        || load_column(terminal_obj, &term, COL_INT64, fn, "terminal") < 0
        || load_columns(ctab_obj, ct, N_CTAB, fn, "container tables", NULL, 0, 0) < 0
        || load_columns(hop_out_obj, hout, N_PLACECOL, fn, "hop outputs", NULL, 0, ~0u) < 0
        || load_columns(p_out_obj, pout, N_POUT, fn, "packet outputs", NULL, 0, ~0u) < 0)
        goto done;
    {
        Py_buffer *out[1 + N_PLACECOL + N_POUT], *ins[N_FHOP - 1 + 2 + N_PLACECOL + N_CTAB];
        int n_out = 0, n_in = 0;
        out[n_out++] = &hin[F_REASON].view;
        for (int i = 0; i < N_PLACECOL; i++) out[n_out++] = &hout[i].view;
        for (int i = 0; i < N_POUT; i++) out[n_out++] = &pout[i].view;
        for (int i = 0; i < N_FHOP; i++)
            if (i != F_REASON) ins[n_in++] = &hin[i].view;
        ins[n_in++] = &st.view;
        ins[n_in++] = &term.view;
        for (int i = 0; i < N_PLACECOL; i++) ins[n_in++] = &pt[i].view;
        for (int i = 0; i < N_CTAB; i++) ins[n_in++] = &ct[i].view;
        if (any_overlap(out, n_out, ins, n_in)) {
            PyErr_Format(PyExc_ValueError, "%s: an output column overlaps another column or table", fn);
            goto done;
        }
    }

    const Py_ssize_t H = hin[F_HOOK].n, P = st.n - 1, n_places = pt[0].n;
    const int64_t n_hook = S[S_N_HOOK], n_stage = S[S_N_STAGE], n_role = S[S_N_ROLE];
    int64_t n_terminal; /* (each size is at most 2^30: the product may not fit an int64) */
    int ok = !__builtin_mul_overflow(n_hook, n_stage, &n_terminal) && !__builtin_mul_overflow(n_terminal, n_role, &n_terminal)
             && P >= 0 && term.n == n_terminal && ct[C_NAMED].n == ct[C_SAME].n && ct[C_ID_KNOWN].n == ct[C_ID_SAME].n;
    for (int i = 0; ok && i < N_FHOP; i++) ok = hin[i].n == H;
    for (int i = 0; ok && i < N_PLACECOL; i++) ok = pt[i].n == n_places && hout[i].n == H;
    for (int i = 0; ok && i < N_POUT; i++) ok = pout[i].n == P;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: columns and tables do not fit together", fn);
        goto done;
    }
    /* the tables (a few entries each) checked whole here; the hop columns
     * and whatever the loops below use as an index checked again there */
    if (!in_range(&pt[T_ROLE], n_role) || !in_range(&pt[T_CONTAINER], ct[C_NAMED].n)
        || !in_range(&pt[T_CONTAINER_ID], ct[C_ID_KNOWN].n) || !in_range(&ct[C_SAME], ct[C_NAMED].n)
        || !in_range(&ct[C_ID_SAME], ct[C_ID_KNOWN].n) || S[S_CONTAINER_NULL] >= ct[C_NAMED].n) {
        PyErr_Format(PyExc_ValueError, "%s: a hook, stage, place, role or container code out of range", fn);
        goto done;
    }

    int bad = FACTS_OK;
    Py_BEGIN_ALLOW_THREADS
    /* Each value used as an index is read once into a local, compared with
     * its table's size and only the local used: the buffers are the
     * caller's, and another thread may write them while this runs. */
    const int64_t *hook = hin[F_HOOK].v, *stage = hin[F_STAGE].v, *place = hin[F_PLACE].v, *terminal = term.v,
                  *starts = st.v;
    int64_t *reason = hin[F_REASON].v;
    const int64_t *place_role = pt[T_ROLE].v, *place_container = pt[T_CONTAINER].v, *place_cid = pt[T_CONTAINER_ID].v;
    const int64_t *named = ct[C_NAMED].v, *same = ct[C_SAME].v, *id_known = ct[C_ID_KNOWN].v, *id_same = ct[C_ID_SAME].v;
    const int64_t null_reason = S[S_N_REASONS], null_container = S[S_CONTAINER_NULL], hook_drop = S[S_HOOK_DROP];
    const uint64_t hooks = (uint64_t)n_hook, stages = (uint64_t)n_stage, roles = (uint64_t)n_role,
                   places = (uint64_t)n_places, containers = (uint64_t)ct[C_NAMED].n, ids = (uint64_t)ct[C_ID_KNOWN].n;
    for (Py_ssize_t i = 0; i < H; i++) {
        const int64_t p = place[i], r = reason[i];
        if ((uint64_t)p >= places || (uint64_t)hook[i] >= hooks || (uint64_t)stage[i] >= stages) {
            bad = FACTS_BAD_CODE;
            break;
        }
        if (r < -1 || r >= null_reason) {
            bad = FACTS_BAD_REASON;
            break;
        }
        for (int t = 0; t < N_PLACECOL; t++) hout[t].v[i] = pt[t].v[p];
        if (r < 0) reason[i] = null_reason;
    }
    /* a packet's hops are starts[g] to starts[g + 1] - 1: each bound read once */
    int64_t first = starts[0]; /* P >= 0: starts has an entry */
    if (!bad && first != 0) bad = FACTS_BAD_STARTS;
    for (Py_ssize_t g = 0; !bad && g < P; g++) {
        const int64_t end = starts[g + 1];
        if (end <= first || end > H) {
            bad = FACTS_BAD_STARTS;
            break;
        }
        const Py_ssize_t last = end - 1;
        /* journeys.verdict_of: a drop right after a terminal sighting is a delivered packet */
        const int64_t hook_last = hook[last];
        const int last_drop = hook_last == hook_drop, two = last > first;
        const Py_ssize_t judged = last_drop && two ? last - 1 : last;
        const int64_t hk = judged == last ? hook_last : hook[judged], sg = stage[judged], pj = place[judged];
        if ((uint64_t)hk >= hooks || (uint64_t)sg >= stages || (uint64_t)pj >= places) {
            bad = FACTS_BAD_CODE;
            break;
        }
        const int64_t rl = place_role[pj];
        if ((uint64_t)rl >= roles) {
            bad = FACTS_BAD_CODE;
            break;
        }
        const int terminal_at = terminal[(hk * n_stage + sg) * n_role + rl] != 0;
        const int delivered = last_drop ? two && terminal_at : terminal_at;
        const int dropped = last_drop && !delivered;
        const int64_t rs = dropped ? reason[last] : null_reason;
        if (rs < 0 || rs > null_reason) {
            bad = FACTS_BAD_REASON;
            break;
        }
        pout[O_VERDICT].v[g] = delivered ? 0 : dropped ? 1 : 2;
        pout[O_LAST_SEEN].v[g] = last_drop && two ? last - 1 : -1;
        pout[O_REASON].v[g] = rs;
        /* journey_rows.journey_containers: the first hop that names a
         * container, and the last one where it is another container (told
         * by container ids where both hops know theirs, else by names) */
        int found = 0;
        int64_t c_first = 0, c_last = 0, id_first = 0, id_last = 0;
        for (Py_ssize_t i = first; i <= last; i++) {
            const int64_t p = place[i];
            if ((uint64_t)p >= places) {
                bad = FACTS_BAD_CODE;
                break;
            }
            const int64_t c = place_container[p];
            if ((uint64_t)c >= containers) {
                bad = FACTS_BAD_CODE;
                break;
            }
            if (!named[c]) continue;
            const int64_t id = place_cid[p];
            if ((uint64_t)id >= ids) {
                bad = FACTS_BAD_CODE;
                break;
            }
            if (!found) {
                found = 1;
                c_first = c;
                id_first = id;
            }
            c_last = c;
            id_last = id;
        }
        if (bad) break;
        int64_t of = found ? c_first : null_container, to = null_container;
        if (found) {
            int other = same[c_last] != same[c_first];
            if (id_known[id_first] && id_known[id_last]) other = id_same[id_first] != id_same[id_last];
            if (other) to = c_last;
        }
        pout[O_CONTAINER_OF].v[g] = of;
        pout[O_CONTAINER_TO].v[g] = to;
        first = end;
    }
    if (!bad && first != H) bad = FACTS_BAD_STARTS;
    Py_END_ALLOW_THREADS
    if (bad == FACTS_BAD_CODE)
        PyErr_Format(PyExc_ValueError, "%s: a hook, stage, place, role or container code out of range", fn);
    else if (bad == FACTS_BAD_REASON)
        PyErr_Format(PyExc_ValueError, "%s: a drop reason code out of range", fn);
    else if (bad == FACTS_BAD_STARTS)
        PyErr_Format(PyExc_ValueError, "%s: starts do not fit the hops (0, rising, the last one the hop count)", fn);
    else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    release_columns(hin, N_FHOP);
    release_columns(&st, 1);
    release_columns(pt, N_PLACECOL);
    release_columns(&term, 1);
    release_columns(ct, N_CTAB);
    release_columns(hout, N_PLACECOL);
    release_columns(pout, N_POUT);
    return result;
}

const char native_journey_facts_doc[] =
    "journey_facts(hops, starts, place_tables, terminal, sizes, container_tables, hop_outputs, packet_outputs)\n"
    "Per hop its place's codes, per packet its verdict, hop last seen, drop reason and containers, from\n"
    "journey_hops' columns and the named places (tracer/native_rows.py).";
