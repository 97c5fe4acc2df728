/* What the native writers share (journey_json.c, journey_text.c, journey_rows.c, segments.c,
 * address_ids.c, journey_layout.c): integer columns taken from numpy arrays without copies,
 * tables of pre-formatted texts, and the inline writers of fragments and
 * numbers. */
#ifndef TRACER_NATIVE_PARTS_H
#define TRACER_NATIVE_PARTS_H

#include "native.h"

#include <stdint.h>
#include <string.h>

typedef struct {
    const char *s;
    Py_ssize_t n;
} frag;

/* A table's texts, each copied into one arena at a 16-byte boundary with
 * at least 16 bytes after it: put_frag then copies whole 16-byte blocks
 * (inlined vector moves, not a memcpy call per fragment; a journey has
 * about a hundred fragments). The output has room for the overshoot. */
typedef struct {
    frag *f;
    char *arena;
    Py_ssize_t n, max;
} table;

/* A 64-bit column taken from a numpy array (any buffer) without a copy.
 * ``v`` holds its values; a COL_UINT64 column's are read through
 * (uint64_t) casts, a COL_FLOAT64 column's through (double *). ``held``:
 * the view is acquired (release_columns). */
typedef struct {
    Py_buffer view;
    int64_t *v;
    Py_ssize_t n;
    int held;
} column;

/* What each call says of each column it takes: its element type, exactly
 * (the C reads the bits as that type: another 8-byte type, float64, the
 * other signedness or byte order, would be wrong data, so it is refused),
 * and whether the C writes it. */
enum { COL_INT64 = 0, COL_UINT64 = 1, COL_WRITABLE = 2, COL_FLOAT64 = 4 };

/* journey columns, then hop columns, then the text tables, as passed */

int load_column(PyObject *obj, column *c, unsigned rule, const char *fn, const char *what);
int load_columns(PyObject *tuple, column *c, int n, const char *fn, const char *what, const char *const *names,
                 unsigned uint64_cols, unsigned writable_cols);
void release_columns(column *c, int n);
int load_table(PyObject *list, table *t, const char *what);
int check_codes(const column *c, const table *t, const char *what);
int check_range(const column *c, Py_ssize_t size, const char *what);
int load_tables(PyObject *tuple, table *t, int n, const char *const *names);
void release_tables(table *t, int n);
int check_journey_shape(const char *fn, const column *j, int n_journey, int starts, const char *const *jnames,
                        const column *h, int n_hop, int hook, const char *const *hnames, Py_ssize_t *count);

/* Whether two buffers share a byte */
static inline int overlap(const Py_buffer *a, const Py_buffer *b) {
    const char *x = a->buf, *y = b->buf;
    return a->len > 0 && b->len > 0 && x < y + b->len && y < x + a->len;
}

/* Whether any of the n writable buffers ``out`` overlaps another of them
 * or one of the m buffers ``in``: the passes write each output once and
 * read only what they wrote themselves, which holds only if no output is
 * also an input or another output. */
static inline int any_overlap(Py_buffer *const *out, int n, Py_buffer *const *in, int m) {
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++)
            if (overlap(out[i], out[j])) return 1;
        for (int j = 0; j < m; j++)
            if (overlap(out[i], in[j])) return 1;
    }
    return 0;
}

#define PUT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

/* Two digits a step (a 10-digit netns is 5 divisions, not 10): the
 * numbers were the JSON writer's hottest loop (perf, docs/benchmarks.md
 * "Session 10: `trace --json` CPU"). */
static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 10^k for k = 0..19: a number's digit count, by comparisons */
static const uint64_t POW10[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull, 1000000000ull,
    10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull, 100000000000000ull,
    1000000000000000ull, 10000000000000000ull, 100000000000000000ull, 1000000000000000000ull,
    10000000000000000000ull};

/* The digits go straight to their place, right to left, once the count is
 * known: a copy from a scratch buffer was a memcpy call of variable length
 * per number, ~4 % of `trace --json`'s CPU live (perf, docs/benchmarks.md
 * "Session 11: trace --json"). */
static inline char *put_int(char *p, int64_t v) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0) *p++ = '-';
    int n = 1;
    while (n < 20 && u >= POW10[n]) n++;
    char *q = p + n;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        q -= 2;
        memcpy(q, DIGIT_PAIRS + 2 * r, 2);
    }
    if (u >= 10) {
        q -= 2;
        memcpy(q, DIGIT_PAIRS + 2 * u, 2);
    } else {
        *--q = (char)('0' + u);
    }
    return p + n;
}

/* an id as tracer/ids.py prints it in JSON: quoted lower-case hex, null for 0 */
static inline char *put_id(char *p, uint64_t v) {
    if (!v) return PUT(p, "null"), p;
    char tmp[16];
    int k = 0;
    while (v) {
        tmp[k++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    }
    *p++ = '"';
    while (k) *p++ = tmp[--k];
    *p++ = '"';
    return p;
}

static inline char *put_frag(char *p, const frag *f) {
    for (Py_ssize_t k = 0; k < f->n; k += 16) memcpy(p + k, f->s + k, 16);
    return p + f->n;
}

/* The direct output's stage (tracer/direct_output.py, written_in): a
 * writable buffer a text writer puts its text into from byte `at` on,
 * never growing it. stage_take: ``into`` taken as one (a TypeError saying
 * ``message`` otherwise): 0, or -1. stage_room: where the text goes, or
 * NULL where fewer than ``bound`` bytes are left there (the writer then
 * returns -(at + bound): the stage is grown to that and the call made again). */
static inline int stage_take(PyObject *into, Py_buffer *view, const char *message) {
    if (PyObject_GetBuffer(into, view, PyBUF_WRITABLE | PyBUF_SIMPLE) == 0) return 0;
    PyErr_SetString(PyExc_TypeError, message);
    return -1;
}

static inline char *stage_room(const Py_buffer *view, Py_ssize_t at, Py_ssize_t bound) {
    return at <= view->len && view->len - at >= bound ? (char *)view->buf + at : NULL;
}

/* An endpoint as tracer/journey_json.py's _endpoint_text writes it, from
 * its address' JSON text ('"10.0.0.1"', or null): the address alone for
 * ICMP, else '"ip:port"', '"[ip6]:port"'. Only the closing quote moves:
 * ':', '[', ']' and digits need no escaping. */
static inline char *put_endpoint(char *p, const frag *ip, int64_t port, int64_t icmp) {
    if (icmp || ip->n < 2 || ip->s[0] != '"') return put_frag(p, ip);
    int v6 = memchr(ip->s, ':', (size_t)ip->n) != NULL;
    if (v6) *p++ = '"', *p++ = '[';
    p = put_frag(p, &(frag){ip->s + v6, ip->n - 1 - v6});
    if (v6) *p++ = ']';
    *p++ = ':';
    p = put_int(p, port);
    *p++ = '"';
    return p;
}

#endif
