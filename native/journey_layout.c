/* The kernel's journey records -> the flat columns of a capture's journey
 * rows, for `record -w` (tracer/journey_layout.py).
 *
 * Why C: the records are 440 bytes each and the columns are ~20 fields of
 * the record, up to 16 hops and 4 address tuples inside it. numpy reads
 * them field by field, one strided pass over the whole flush's records per
 * field and gathers for the hops (about 0.45 us of CPU a packet); one pass
 * over each record writing every column costs a tenth of that. The numpy
 * path (journey_layout.layout_numpy) stays the reference: the tests compare
 * both outputs column by column.
 *
 * The caller gives the record layout (field offsets, from events.py) and
 * the output arrays, sized for the records kept (those with hops), their
 * used hops and used tuples; every size is checked before anything is
 * written. Multi-byte fields of the kernel's records are little-endian but
 * for ip_id, length, tcp_seq, tcp_ack and the ports, which are in network
 * order (as events.JOURNEY_DTYPE says). */
#include "parts.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the record layout, in the order journey_layout.LAYOUT_FIELDS passes it */
enum { L_STRIDE, L_PACKET_ID, L_FLOW_ID, L_FIRST_KTIME, L_LAST_KTIME, L_SKB, L_TUPLES, L_TCP_SEQ, L_TCP_ACK,
       L_DROP_REASON, L_DROP_NETNS, L_FWD_OUT, L_IP_ID, L_LENGTH, L_CPU, L_PROTOCOL, L_TCP_FLAGS, L_DIRECTION,
       L_N_HOPS, L_N_TUPLES, L_END, L_HOPS, L_TCP_DOFF, L_MAX_HOPS, L_MAX_TUPLES, L_HOOK_DROP, L_STAGE_SHIFT,
       L_IN_CT_BIT, N_LAYOUT };

/* the outputs, in the order of journey_layout.RECORD_COLUMNS / HOP_COLUMNS / TUPLE_COLUMNS */
enum { R_PACKET_ID, R_FLOW_ID, R_SKB, R_KTIME, R_LAST_GAP, R_DROP_NETNS, R_FWD_OUT, R_IP_ID, R_LENGTH,
       R_CPU, R_TCP_FLAGS, R_TCP_DOFF, R_TCP_SEQ, R_TCP_ACK, R_END, R_DIRECTION, R_PROTOCOL, R_DROP_REASON,
       R_PATH, R_TUPLE_LIST, R_HOP_OFFSETS, R_TUPLE_OFFSETS, N_REC };
enum { H_DT_B0, H_DT_B1, H_DT_B2, H_DT_B3, H_PLACE, N_HOPCOL };
enum { T_SADDR, T_DADDR, T_SPORT, T_DPORT, N_TUPCOL };

static const Py_ssize_t rec_size[N_REC] = {8, 8, 8, 8, 8, 4, 4, 2, 2, 2, 1, 1, 4, 4, 1, 1, 1, 8, 4, 4, 4, 4};
static const Py_ssize_t hop_size[N_HOPCOL] = {1, 1, 1, 1, 8};
static const Py_ssize_t tup_size[N_TUPCOL] = {16, 16, 2, 2};

static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* Writable C-contiguous buffers of a tuple, each exactly count * size bytes
 * (+ extra elements); returns how many were acquired (all on success).
 * Not parts.c's load_columns: these columns are 1 to 16 bytes an element
 * (the capture's own types, given by journey_layout.py), checked by size
 * alone, where load_columns takes 64-bit integers of a stated type. */
static int get_outputs(PyObject *tuple, Py_buffer *views, int n, const Py_ssize_t *size, Py_ssize_t count,
                       int extra_from, const char *what) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != n) {
        PyErr_Format(PyExc_TypeError, "journey_layout: %s must be a tuple of %d arrays", what, n);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(tuple, i), &views[i], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            return i;
        Py_ssize_t want = (count + (i >= extra_from ? 1 : 0)) * size[i];
        if (views[i].len != want) {
            PyErr_Format(PyExc_ValueError, "journey_layout: %s column %d has %zd bytes, not %zd", what, i,
                         views[i].len, want);
            return i + 1;
        }
    }
    return n;
}

static void release(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

/* Open-addressing slots of (hash, number) pairs, grown by doubling: the one
 * mechanism of the layout's two tables below, each of which says what a
 * number stands for and when two equal hashes are the same thing. */
typedef struct {
    uint64_t *hash; /* slot -> hash */
    int32_t *id;    /* slot -> number (-1: empty) */
    Py_ssize_t slots;
} slot_table;

static void slots_free(slot_table *t) {
    free(t->hash);
    free(t->id);
}

static inline Py_ssize_t slot_of(const slot_table *t, uint64_t hash) {
    return (Py_ssize_t)(hash >> 40) & (t->slots - 1);
}

/* at least twice as many slots (and ``at_least``), the pairs put back */
static int slots_grow(slot_table *t, Py_ssize_t at_least) {
    Py_ssize_t slots = t->slots ? 2 * t->slots : 256;
    while (slots < at_least) slots *= 2;
    uint64_t *hash = malloc((size_t)slots * sizeof *hash);
    int32_t *id = malloc((size_t)slots * sizeof *id);
    if (!hash || !id) {
        free(hash);
        free(id);
        return -1;
    }
    for (Py_ssize_t i = 0; i < slots; i++) id[i] = -1;
    slot_table grown = {hash, id, slots};
    for (Py_ssize_t i = 0; i < t->slots; i++) {
        if (t->id[i] < 0) continue;
        Py_ssize_t s = slot_of(&grown, t->hash[i]);
        while (id[s] >= 0) s = (s + 1) & (slots - 1);
        hash[s] = t->hash[i];
        id[s] = t->id[i];
    }
    slots_free(t);
    *t = grown;
    return 0;
}

/* ``array`` with room for ``need`` elements of ``width`` bytes (its size
 * doubled from ``first`` as needed, the used part kept; *size updated), or
 * NULL (no memory: ``array`` as it was) */
static void *room_for(void *array, Py_ssize_t *size, Py_ssize_t need, size_t width, Py_ssize_t first) {
    if (array && need <= *size) return array;
    Py_ssize_t n = *size ? 2 * *size : first;
    while (n < need) n *= 2;
    void *grown = realloc(array, (size_t)n * width);
    if (grown) *size = n;
    return grown;
}

/* The distinct place keys of a flush's hops (a few dozen), in order of
 * first appearance. A key's hash is the key times an odd constant, one key
 * a hash: equal hashes are equal keys. */
typedef struct {
    slot_table s;
    uint64_t *order; /* position -> key */
    Py_ssize_t count, order_size;
} key_table;

/* the key's position among the distinct keys (added if new), or -1 (no memory) */
static int64_t table_find(key_table *t, uint64_t key) {
    if (2 * (t->count + 1) > t->s.slots && slots_grow(&t->s, 0) < 0) return -1;
    uint64_t *order = room_for(t->order, &t->order_size, t->count + 1, sizeof *order, 64);
    if (!order) return -1;
    t->order = order;
    uint64_t hash = key * 0x9E3779B97F4A7C15ull;
    Py_ssize_t s = slot_of(&t->s, hash);
    while (t->s.id[s] >= 0) {
        if (t->s.hash[s] == hash) return t->s.id[s];
        s = (s + 1) & (t->s.slots - 1);
    }
    t->s.hash[s] = hash;
    t->s.id[s] = (int32_t)t->count;
    t->order[t->count] = key;
    return t->count++;
}

/* Distinct lists of 64-bit words, numbered in order of first appearance:
 * a flush's hop paths (a record's hops but for their times: one word a hop
 * of hook, NAT stage, flags, TTL, tuple index and place index) and its
 * tuple lists (a record's addresses and ports at its first hop and after
 * each NAT step: five words a tuple). Many packets share them (a path: a
 * few dozen a batch of ~30,000 rows on the lab's HTTP; a tuple list: every
 * packet of a connection's direction), and a capture stores each batch's
 * once, as dictionaries: zstd packed them row by row for ~70 and ~95 ns a
 * packet. Keyed here, while the record is at hand (a pass of its own over
 * the laid-out rows cost ~50 ns a row). Each list's words are kept in a
 * pool (small and hot: comparing against the record they came from would
 * read a cold record); equal hashes are told apart by comparing them. */
typedef struct {
    slot_table s;
    Py_ssize_t count;
    uint64_t *pool;        /* the lists' words, one after the other */
    Py_ssize_t pool_used, pool_size;
    Py_ssize_t *start;     /* list -> its first word in the pool (count + 1 of them) */
    Py_ssize_t starts_size;
} word_table;

static void words_free(word_table *t) {
    slots_free(&t->s);
    free(t->pool);
    free(t->start);
}

static inline uint64_t rotl(uint64_t v, int r) { return v << r | v >> (64 - r); }

/* each word multiplied on its own (they pipeline), folded by rotation */
static uint64_t words_hash(const uint64_t *w, Py_ssize_t n) {
    uint64_t h = (uint64_t)n;
    for (Py_ssize_t i = 0; i < n; i++) h = rotl(h, 23) ^ (w[i] * 0x9E3779B97F4A7C15ull);
    h *= 0xC2B2AE3D27D4EB4Full;
    return h ^ h >> 31;
}

/* room for ``lists`` lists of ``words`` words in all */
static int words_room(word_table *t, Py_ssize_t lists, Py_ssize_t words) {
    Py_ssize_t *start = room_for(t->start, &t->starts_size, lists + 1, sizeof *start, 256);
    if (start) t->start = start;
    uint64_t *pool = room_for(t->pool, &t->pool_size, words > 0 ? words : 1, sizeof *pool, 4096);
    if (pool) t->pool = pool;
    if (!start || !pool) return -1;
    t->start[0] = 0; /* (the first list starts at the pool's first word) */
    return 0;
}

/* the list of words ``w`` (n of them): its number (*is_new set if added), or -1 (no memory) */
static int32_t words_find(word_table *t, const uint64_t *w, Py_ssize_t n, int *is_new) {
    *is_new = 0;
    if (2 * (t->count + 1) > t->s.slots && slots_grow(&t->s, 0) < 0) return -1;
    uint64_t hash = words_hash(w, n);
    Py_ssize_t s = slot_of(&t->s, hash);
    while (t->s.id[s] >= 0) {
        if (t->s.hash[s] == hash) {
            int32_t l = t->s.id[s];
            Py_ssize_t at = t->start[l];
            if (t->start[l + 1] - at == n && !memcmp(t->pool + at, w, (size_t)n * sizeof *w)) return l;
        }
        s = (s + 1) & (t->s.slots - 1);
    }
    if (words_room(t, t->count + 1, t->pool_used + n) < 0) return -1;
    memcpy(t->pool + t->pool_used, w, (size_t)n * sizeof *w);
    t->pool_used += n;
    t->s.hash[s] = hash;
    t->s.id[s] = (int32_t)t->count;
    t->start[t->count + 1] = t->pool_used;
    *is_new = 1;
    return (int32_t)t->count++;
}

/* a tuple's words: both addresses and both ports (not the 4 bytes after) */
#define TUPLE_WORDS 5

/* Room for ``lists`` lists of ``words`` words in all, at once: a flush's
 * tuple lists are many (one a connection's direction), and growing their
 * table and pool from small sizes rehashed and copied them pass after pass. */
static int words_reserve(word_table *t, Py_ssize_t lists, Py_ssize_t words) {
    return slots_grow(&t->s, 2 * (lists + 1)) < 0 ? -1 : words_room(t, lists + 1, words);
}

PyObject *native_journey_layout(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    PyObject *layout_obj, *rec_obj, *hop_obj, *tup_obj;
    Py_ssize_t kept, n_hops_total, n_tuples_total;
    if (!PyArg_ParseTuple(args, "y*O!nnnOOO", &in, &PyTuple_Type, &layout_obj, &kept, &n_hops_total,
                          &n_tuples_total, &rec_obj, &hop_obj, &tup_obj))
        return NULL;
    Py_buffer rv[N_REC], hv[N_HOPCOL], tv[N_TUPCOL];
    int nr = 0, nh = 0, nt = 0, no_memory = 0, changed = 0;
    PyObject *result = NULL;
    key_table places = {0};
    word_table paths = {0}, lists = {0};
    uint64_t words[255 * TUPLE_WORDS]; /* the record's path or tuple list (max_hops, max_tuples <= 255) */
    Py_ssize_t L[N_LAYOUT];

    if (PyTuple_GET_SIZE(layout_obj) != N_LAYOUT) {
        PyErr_Format(PyExc_TypeError, "journey_layout: the layout has %d numbers", N_LAYOUT);
        goto done;
    }
    for (int i = 0; i < N_LAYOUT; i++) {
        L[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout_obj, i));
        if (L[i] < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "journey_layout: negative layout number");
            goto done;
        }
    }
    const Py_ssize_t stride = L[L_STRIDE], max_hops = L[L_MAX_HOPS], max_tuples = L[L_MAX_TUPLES];
    /* every field (hops and tuples whole) inside the record */
    /* (offsets compared as "L > stride - width": a huge offset must not overflow the sum) */
    if (stride <= 0 || in.len % stride || max_tuples < 1 || max_tuples > 255 || max_hops < 0 || max_hops > 255
        || L[L_HOPS] < 0 || L[L_HOPS] > stride - 12 * max_hops || L[L_TUPLES] < 0
        || L[L_TUPLES] > stride - 40 * max_tuples) {
        PyErr_SetString(PyExc_ValueError, "journey_layout: records and layout do not fit");
        goto done;
    }
    /* each field's width, as the layout lists them (tuples and hops: checked above) */
    static const Py_ssize_t width[N_LAYOUT] = {[L_PACKET_ID] = 8, [L_FLOW_ID] = 8, [L_FIRST_KTIME] = 8,
        [L_LAST_KTIME] = 8, [L_SKB] = 8, [L_TCP_SEQ] = 4, [L_TCP_ACK] = 4, [L_DROP_REASON] = 4,
        [L_DROP_NETNS] = 4, [L_FWD_OUT] = 4, [L_IP_ID] = 2, [L_LENGTH] = 2, [L_CPU] = 2, [L_PROTOCOL] = 1,
        [L_TCP_FLAGS] = 1, [L_DIRECTION] = 1, [L_N_HOPS] = 1, [L_N_TUPLES] = 1, [L_END] = 1, [L_TCP_DOFF] = 1};
    for (int i = L_PACKET_ID; i <= L_TCP_DOFF; i++)
        if (L[i] < 0 || L[i] > stride - width[i]) {
            PyErr_SetString(PyExc_ValueError, "journey_layout: a field lies outside the record");
            goto done;
        }
    if ((nr = get_outputs(rec_obj, rv, N_REC, rec_size, kept, R_HOP_OFFSETS, "record")) != N_REC) goto done;
    if ((nh = get_outputs(hop_obj, hv, N_HOPCOL, hop_size, n_hops_total, N_HOPCOL, "hop")) != N_HOPCOL) goto done;
    if ((nt = get_outputs(tup_obj, tv, N_TUPCOL, tup_size, n_tuples_total, N_TUPCOL, "tuple")) != N_TUPCOL) goto done;
    {
        /* every output is written once and some read back (a hop's place
         * key): none may be another, or the records */
        Py_buffer *out[N_REC + N_HOPCOL + N_TUPCOL], *ins[1] = {&in};
        for (int i = 0; i < N_REC; i++) out[i] = &rv[i];
        for (int i = 0; i < N_HOPCOL; i++) out[N_REC + i] = &hv[i];
        for (int i = 0; i < N_TUPCOL; i++) out[N_REC + N_HOPCOL + i] = &tv[i];
        if (any_overlap(out, N_REC + N_HOPCOL + N_TUPCOL, ins, 1)) {
            PyErr_SetString(PyExc_ValueError, "journey_layout: an output column overlaps another column or the records");
            goto done;
        }
    }

    /* the counts first: nothing is written unless they are the caller's */
    const uint8_t *base = in.buf;
    const Py_ssize_t n = in.len / stride;
    Py_ssize_t k = 0, H = 0, T = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + i * stride;
        Py_ssize_t h = r[L[L_N_HOPS]], t = r[L[L_N_TUPLES]];
        if (!h) continue;
        k++;
        H += h < max_hops ? h : max_hops;
        T += t < 1 ? 1 : (t > max_tuples ? max_tuples : t);
    }
    if (k != kept || H != n_hops_total || T != n_tuples_total) {
        PyErr_SetString(PyExc_ValueError, "journey_layout: counts are not the records'");
        goto done;
    }
    /* at most a tuple list a record, its tuples' words at most all of theirs */
    if (words_reserve(&lists, kept, TUPLE_WORDS * n_tuples_total) < 0) {
        PyErr_NoMemory();
        goto done;
    }

    Py_BEGIN_ALLOW_THREADS
    uint64_t *packet_id = rv[R_PACKET_ID].buf, *flow_id = rv[R_FLOW_ID].buf, *skb = rv[R_SKB].buf,
             *ktime = rv[R_KTIME].buf, *last_gap = rv[R_LAST_GAP].buf;
    int64_t *drop_reason = rv[R_DROP_REASON].buf;
    uint32_t *drop_netns = rv[R_DROP_NETNS].buf, *fwd_out = rv[R_FWD_OUT].buf, *tcp_seq = rv[R_TCP_SEQ].buf,
             *tcp_ack = rv[R_TCP_ACK].buf;
    uint16_t *ip_id = rv[R_IP_ID].buf, *length = rv[R_LENGTH].buf, *cpu = rv[R_CPU].buf;
    uint8_t *tcp_flags = rv[R_TCP_FLAGS].buf, *tcp_doff = rv[R_TCP_DOFF].buf, *end = rv[R_END].buf,
            *direction = rv[R_DIRECTION].buf, *protocol = rv[R_PROTOCOL].buf;
    int32_t *hop_off = rv[R_HOP_OFFSETS].buf, *tup_off = rv[R_TUPLE_OFFSETS].buf, *path = rv[R_PATH].buf,
            *tuple_list = rv[R_TUPLE_LIST].buf;
    uint8_t *dt0 = hv[H_DT_B0].buf, *dt1 = hv[H_DT_B1].buf, *dt2 = hv[H_DT_B2].buf, *dt3 = hv[H_DT_B3].buf;
    int64_t *place = hv[H_PLACE].buf;
    uint64_t last_key = 0;
    int64_t last_place = -1; /* the previous hop's (most hops are where the one before was) */
    uint8_t *saddr = tv[T_SADDR].buf, *daddr = tv[T_DADDR].buf;
    uint16_t *sport = tv[T_SPORT].buf, *dport = tv[T_DPORT].buf;
    const unsigned hook_drop = (unsigned)L[L_HOOK_DROP], in_ct_bit = (unsigned)L[L_IN_CT_BIT];
    const unsigned last_tuple = (unsigned)(max_tuples - 1);

    Py_ssize_t j = 0, h_at = 0, t_at = 0;
    hop_off[0] = 0;
    tup_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + i * stride;
        Py_ssize_t nh_ = r[L[L_N_HOPS]], nt_ = r[L[L_N_TUPLES]];
        if (!nh_) continue;
        if (nh_ > max_hops) nh_ = max_hops;
        nt_ = nt_ < 1 ? 1 : (nt_ > max_tuples ? max_tuples : nt_);
        /* the counts were checked above, but read again here: never write
         * past the outputs even if the records changed in between */
        if (j >= kept || h_at + nh_ > n_hops_total || t_at + nt_ > n_tuples_total) {
            changed = 1;
            break;
        }
        packet_id[j] = rd64(r + L[L_PACKET_ID]);
        flow_id[j] = rd64(r + L[L_FLOW_ID]);
        skb[j] = rd64(r + L[L_SKB]);
        ktime[j] = rd64(r + L[L_FIRST_KTIME]);
        uint32_t rec_netns = rd32(r + L[L_DROP_NETNS]);
        drop_netns[j] = rec_netns;
        fwd_out[j] = rd32(r + L[L_FWD_OUT]);
        ip_id[j] = be16(r + L[L_IP_ID]);
        length[j] = be16(r + L[L_LENGTH]);
        cpu[j] = rd16(r + L[L_CPU]);
        tcp_flags[j] = r[L[L_TCP_FLAGS]];
        tcp_doff[j] = r[L[L_TCP_DOFF]];
        tcp_seq[j] = be32(r + L[L_TCP_SEQ]);
        tcp_ack[j] = be32(r + L[L_TCP_ACK]);
        end[j] = r[L[L_END]];
        direction[j] = r[L[L_DIRECTION]];
        protocol[j] = r[L[L_PROTOCOL]];
        int dropped = 0;
        const uint8_t *hp = r + L[L_HOPS];
        for (Py_ssize_t x = 0; x < nh_; x++, hp += 12, h_at++) {
            unsigned code = hp[8];
            unsigned hk = code & 0x0F;
            /* dt_ns as its four bytes, each a column (events.DT_PLANES: zstd packs them ~3x faster) */
            dt0[h_at] = hp[0];
            dt1[h_at] = hp[1];
            dt2[h_at] = hp[2];
            dt3[h_at] = hp[3];
            int is_drop = hk == hook_drop;
            dropped |= is_drop;
            /* decode.resolve_place_keys' key: netns << 32 | in-container << 31 | ifindex
             * (a drop hop's netns is the record's; the others' the host's: 0) */
            uint64_t key = (uint64_t)(is_drop ? rec_netns : 0) << 32 | (uint64_t)((code & in_ct_bit) != 0) << 31
                         | rd32(hp + 4);
            if (key != last_key || last_place < 0) {
                last_key = key;
                last_place = table_find(&places, key);
                no_memory |= last_place < 0;
            }
            place[h_at] = last_place;
            /* the hop's path word (journey_layout.path_fields reads it back):
             * its code byte (hook, NAT stage, flag bits), TTL, tuple, place index */
            unsigned tup = hp[10] < last_tuple ? hp[10] : last_tuple;
            words[x] = (uint64_t)code | (uint64_t)hp[9] << 8 | (uint64_t)tup << 16 | (uint64_t)last_place << 24;
        }
        /* the last sighting's time as its gap after the last hop's (ktime +
         * dt_ns): 0 but where the packet was seen after its last hop carried,
         * or dt_ns saturated; wraps as uint64 (readers add it back) */
        hp -= 12;
        last_gap[j] = rd64(r + L[L_LAST_KTIME]) - (ktime[j] + (uint64_t)rd32(hp));
        int is_new;
        int32_t p = words_find(&paths, words, nh_, &is_new);
        no_memory |= p < 0;
        path[j] = p;
        drop_reason[j] = dropped ? (int64_t)rd32(r + L[L_DROP_REASON]) : -1;
        /* the record's tuples: laid out if it is the first of its list */
        const uint8_t *tp = r + L[L_TUPLES];
        for (Py_ssize_t x = 0; x < nt_; x++) {
            uint64_t *w = words + TUPLE_WORDS * x;
            for (int b = 0; b < 4; b++) w[b] = rd64(tp + 40 * x + 8 * b);
            w[4] = rd32(tp + 40 * x + 32);
        }
        int32_t lst = words_find(&lists, words, TUPLE_WORDS * nt_, &is_new);
        no_memory |= lst < 0;
        tuple_list[j] = lst;
        if (is_new) {
            for (Py_ssize_t x = 0; x < nt_; x++, tp += 40, t_at++) {
                memcpy(saddr + 16 * t_at, tp, 16);
                memcpy(daddr + 16 * t_at, tp + 16, 16);
                sport[t_at] = be16(tp + 32);
                dport[t_at] = be16(tp + 34);
            }
            tup_off[lists.count] = (int32_t)t_at;
        }
        j++;
        hop_off[j] = (int32_t)h_at;
    }
    Py_END_ALLOW_THREADS
    if (changed) {
        PyErr_SetString(PyExc_ValueError, "journey_layout: records changed while laid out");
        goto done;
    }
    if (no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    /* the distinct place keys, as the hops' place column indexes them; the
     * distinct paths' words and where each starts (and the last ends), as
     * the records' path column indexes them; how many tuple lists there are */
    PyObject *keys = PyList_New(places.count);
    for (Py_ssize_t i = 0; keys && i < places.count; i++) {
        PyObject *k = PyLong_FromUnsignedLongLong(places.order[i]);
        if (!k) Py_CLEAR(keys);
        else PyList_SET_ITEM(keys, i, k);
    }
    PyObject *words_out = PyBytes_FromStringAndSize((const char *)paths.pool, paths.pool_used * 8);
    PyObject *starts = PyList_New(paths.count + 1);
    for (Py_ssize_t i = 0; starts && i <= paths.count; i++) {
        PyObject *at = PyLong_FromSsize_t(paths.count ? paths.start[i] : 0);
        if (!at) Py_CLEAR(starts);
        else PyList_SET_ITEM(starts, i, at);
    }
    PyObject *n_lists = PyLong_FromSsize_t(lists.count);
    if (keys && words_out && starts && n_lists) result = PyTuple_Pack(4, keys, words_out, starts, n_lists);
    Py_XDECREF(n_lists);
    Py_XDECREF(keys);
    Py_XDECREF(words_out);
    Py_XDECREF(starts);
done:
    slots_free(&places.s);
    free(places.order);
    words_free(&paths);
    words_free(&lists);
    release(rv, nr);
    release(hv, nh);
    release(tv, nt);
    PyBuffer_Release(&in);
    return result;
}

const char native_journey_layout_doc[] =
    "journey_layout(records, layout, kept, hops, tuples, record_columns, hop_columns, tuple_columns)\n"
    "Fill the flat columns of the journey rows of ``records`` (tracer/journey_layout.py); returns the distinct\n"
    "place keys of their hops in order of first appearance, which the hops' place column indexes; the distinct\n"
    "hop paths' words (bytes, uint64 each) and where each path starts in them (a list, one more than the paths),\n"
    "which the records' path column indexes; and how many distinct tuple lists there are: each laid out once\n"
    "(tuple_offsets delimits them), the records' tuple_list column indexes them.";
