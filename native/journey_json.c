/* Journeys -> JSON lines, the README's journey contract, for `trace --json`.
 *
 * Why C: the Python path (tracer/journey_json.py) glues the text from
 * per-distinct-value fragments with numpy and Arrow, about 2.3 us of CPU
 * per packet in a busy pass; a loop that copies the same fragments and
 * formats the numbers costs a tenth of that. The Python path stays the
 * reference: every string here arrives already JSON-encoded by Python's
 * json.dumps (once per distinct value), so escaping is Python's, and the
 * tests compare both paths' bytes. */
#include "parts.h"

#include <time.h>

enum { J_PACKET_ID, J_FLOW_ID, J_WALL_NS, J_DIRECTION, J_PROTOCOL, J_TCP_KEY, J_CONTAINER, J_VERDICT, J_REASON,
       J_STARTS, N_JOURNEY };
enum { H_HOOK, H_STAGE, H_IFNAME, H_NETNS, H_CONTAINER, H_SRC_IP, H_SRC_PORT, H_SRC_ICMP, H_DST_IP, H_DST_PORT,
       H_DST_ICMP, H_DT,
       H_CONTAINER_ID, H_KTIME, N_HOP };
enum { T_DIRECTION, T_PROTOCOL, T_FLAGS, T_CONTAINER, T_VERDICT, T_REASON, T_HOOK, T_STAGE, T_IFNAME, T_SRC_IP,
       T_DST_IP, T_CONTAINER_ID, N_TABLE };

/* per line: fixed keys and punctuation, the time and four numbers */
#define JOURNEY_BOUND 400
/* per hop: fixed keys and punctuation and two numbers */
#define HOP_BOUND 192

/* The fragment ``code`` names in ``t``. Codes are checked here, as the
 * writing loop reads each one once, not in a pass of their own before it
 * (check_codes: a second read of every code column, ~2 % of `trace`'s
 * CPU live); one outside its table sets *bad and names nothing. */
static inline const frag *frag_of(const table *t, int64_t code, int *bad) {
    static const frag none = {"", 0};
    if ((uint64_t)code >= (uint64_t)t->n) {
        *bad = 1;
        return &none;
    }
    return &t->f[code];
}

PyObject *native_journey_json(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *jcols, *hcols, *texts, *into = Py_None, *ends_arg = Py_None, *out = NULL;
    Py_ssize_t at = 0;
    if (!PyArg_ParseTuple(args, "O!O!O!|OOn", &PyTuple_Type, &jcols, &PyTuple_Type, &hcols, &PyTuple_Type, &texts,
                          &into, &ends_arg, &at))
        return NULL;
    if (PyTuple_GET_SIZE(jcols) != N_JOURNEY || PyTuple_GET_SIZE(hcols) != N_HOP || PyTuple_GET_SIZE(texts) != N_TABLE) {
        PyErr_SetString(PyExc_TypeError, "journey_json: wrong number of columns or tables");
        return NULL;
    }
    /* into: a bytearray this call grows (the text at its start), or another
     * writable buffer (the direct output's page-aligned stage,
     * tracer/direct_output.py), written from byte `at` on, which it does not
     * grow: too small, the call returns minus the size it needs. */
    int stage = into != Py_None && !PyByteArray_Check(into);
    if (at < 0 || (!stage && at != 0)) {
        PyErr_SetString(PyExc_ValueError, "journey_json: at is negative, or given with a bytearray");
        return NULL;
    }
    Py_buffer stage_view = {0};
    int stage_held = 0;
    if (stage) {
        if (stage_take(into, &stage_view, "journey_json: into must be a bytearray, a writable buffer, or None") < 0)
            return NULL;
        stage_held = 1;
    }
    /* A view of into from an earlier call still held: refused whatever this
     * batch's size (a smaller one would rewrite the bytes under the view, a
     * bigger one could not grow the buffer). */
    if (into != Py_None && !stage && ((PyByteArrayObject *)into)->ob_exports > 0) {
        PyErr_SetString(PyExc_BufferError, "journey_json: a view of into is still held");
        return NULL;
    }
    static const char *jnames[N_JOURNEY] = {"packet_id", "flow_id", "wall_ns", "direction", "protocol",
                                            "tcp_key", "container_of", "verdict", "reason", "starts"};
    static const char *hnames[N_HOP] = {"hook", "stage", "ifname", "netns", "container", "src_ip", "src_port",
                                        "src_icmp", "dst_ip", "dst_port", "dst_icmp", "dt", "container_id", "ktime"};
    static const char *tnames[N_TABLE] = {"direction", "protocol", "flags", "container", "verdict", "reason",
                                          "hook", "stage", "ifname", "src_ip", "dst_ip", "container_id"};
    column j[N_JOURNEY] = {0}, h[N_HOP] = {0}, ends = {0};
    table t[N_TABLE] = {0};
    PyObject *result = NULL;

    /* the ids are uint64 (tracer/native.py u64), every other column int64 */
    if (load_columns(jcols, j, N_JOURNEY, "journey_json", "journeys", jnames, 1u << J_PACKET_ID | 1u << J_FLOW_ID, 0) < 0
        || load_columns(hcols, h, N_HOP, "journey_json", "hops", hnames, 0, 0) < 0
        || load_tables(texts, t, N_TABLE, tnames) < 0)
        goto done;

    Py_ssize_t count, n = h[H_HOOK].n;
    if (check_journey_shape("journey_json", j, N_JOURNEY, J_STARTS, jnames, h, N_HOP, H_HOOK, hnames, &count) < 0) goto done;
    if (ends_arg != Py_None) {
        if (load_column(ends_arg, &ends, COL_INT64 | COL_WRITABLE, "journey_json", "ends") < 0) goto done;
        if (ends.n != count) {
            PyErr_Format(PyExc_ValueError, "journey_json: ends has %zd slots for %zd journeys", ends.n, count);
            goto done;
        }
        Py_buffer *written[] = {&ends.view}, *read[N_JOURNEY + N_HOP];
        for (int i = 0; i < N_JOURNEY; i++) read[i] = &j[i].view;
        for (int i = 0; i < N_HOP; i++) read[N_JOURNEY + i] = &h[i].view;
        if (any_overlap(written, 1, read, N_JOURNEY + N_HOP)) {
            PyErr_SetString(PyExc_ValueError, "journey_json: ends shares memory with a column");
            goto done;
        }
    }
    const int64_t *starts = j[J_STARTS].v;
    static const struct { int col, tab; } jcodes[] = {{J_DIRECTION, T_DIRECTION}, {J_PROTOCOL, T_PROTOCOL},
        {J_TCP_KEY, T_FLAGS}, {J_CONTAINER, T_CONTAINER}, {J_VERDICT, T_VERDICT}, {J_REASON, T_REASON}};
    static const struct { int col, tab; } hcodes[] = {{H_HOOK, T_HOOK}, {H_STAGE, T_STAGE}, {H_IFNAME, T_IFNAME},
        {H_CONTAINER, T_CONTAINER}, {H_SRC_IP, T_SRC_IP}, {H_DST_IP, T_DST_IP}, {H_CONTAINER_ID, T_CONTAINER_ID}};

    /* An upper bound of the text, then one pass writing it. */
    Py_ssize_t per_journey = JOURNEY_BOUND, per_hop = HOP_BOUND;
    for (size_t i = 0; i < sizeof jcodes / sizeof *jcodes; i++) per_journey += t[jcodes[i].tab].max;
    for (size_t i = 0; i < sizeof hcodes / sizeof *hcodes; i++) per_hop += t[hcodes[i].tab].max;
    per_hop += 2 * 24;  /* the ports, and the brackets and quotes of endpoints */
    Py_ssize_t bound = count * per_journey + n * per_hop + 64;  /* + a 16-byte block's overshoot */
    char *base;
    if (stage) {
        if (!(base = stage_room(&stage_view, at, bound))) {
            result = PyLong_FromSsize_t(-(at + bound));
            goto done;
        }
    } else if (into != Py_None) {
        /* The caller's buffer, grown (never shrunk) to the bound: its pages
         * stay mapped from one call to the next, where a new bytes object
         * of ~2x the text every call took fresh zeroed pages (page faults:
         * a third of this function's CPU live). How much of it is kept
         * from one batch to the next is the caller's (tracer/live_output.py). */
        if (PyByteArray_GET_SIZE(into) < bound) {
            /* emptied first: a resize in place would copy the old text
             * (realloc), faulting the new pages in for nothing; half as
             * much again, so shows a little bigger than the last fit */
            if (PyByteArray_Resize(into, 0) < 0 || PyByteArray_Resize(into, bound + bound / 2) < 0) goto done;
        }
        base = PyByteArray_AS_STRING(into);
    } else {
        out = PyBytes_FromStringAndSize(NULL, bound);
        if (!out) goto done;
        base = PyBytes_AS_STRING(out);
    }
    char *p = base;
    /* A hop's netns: a few distinct values over a batch, each 10 digits:
     * formatted once into a small direct-mapped cache, then copied. */
    struct { int64_t v; int n; char s[24]; } netns_text[16];
    for (int i = 0; i < 16; i++) netns_text[i].n = 0;
    int bad = 0;  /* a code outside its table was read (frag_of) */
    int64_t last_second = INT64_MIN;
    char second_text[64];
    size_t second_len = 0;
    for (Py_ssize_t g = 0; g < count; g++) {
        PUT(p, "{\"packet_id\": ");
        p = put_id(p, (uint64_t)j[J_PACKET_ID].v[g]);
        PUT(p, ", \"flow_id\": ");
        p = put_id(p, (uint64_t)j[J_FLOW_ID].v[g]);
        int64_t wall = j[J_WALL_NS].v[g];
        if (wall) {
            int64_t sec = wall / 1000000000, frac = wall % 1000000000;
            if (frac < 0) frac += 1000000000, sec -= 1;
            if (sec != last_second) {
                time_t tt = (time_t)sec;
                struct tm tm;
                if (!gmtime_r(&tt, &tm)) {
                    PyErr_SetString(PyExc_ValueError, "journey_json: time out of range");
                    goto done;
                }
                int k = snprintf(second_text, sizeof second_text, ", \"time\": \"%04d-%02d-%02dT%02d:%02d:%02d.",
                                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
                second_len = (size_t)k < sizeof second_text ? (size_t)k : sizeof second_text - 1;
                last_second = sec;
            }
            memcpy(p, second_text, second_len);
            p += second_len;
            for (int d = 8; d >= 0; d--, frac /= 10) p[d] = (char)('0' + frac % 10);
            p += 9;
            PUT(p, "Z\", \"ktime_ns\": ");
        } else {
            PUT(p, ", \"time\": null, \"ktime_ns\": ");
        }
        int64_t first = starts[g], end = starts[g + 1];
        p = put_int(p, h[H_KTIME].v[first]);
        PUT(p, ", \"direction\": ");
        p = put_frag(p, frag_of(&t[T_DIRECTION], j[J_DIRECTION].v[g], &bad));
        PUT(p, ", \"protocol\": ");
        p = put_frag(p, frag_of(&t[T_PROTOCOL], j[J_PROTOCOL].v[g], &bad));
        PUT(p, ", \"tcp_flags\": ");
        p = put_frag(p, frag_of(&t[T_FLAGS], j[J_TCP_KEY].v[g], &bad));
        PUT(p, ", \"container\": ");
        p = put_frag(p, frag_of(&t[T_CONTAINER], j[J_CONTAINER].v[g], &bad));
        PUT(p, ", \"verdict\": ");
        p = put_frag(p, frag_of(&t[T_VERDICT], j[J_VERDICT].v[g], &bad));
        PUT(p, ", \"drop_reason\": ");
        p = put_frag(p, frag_of(&t[T_REASON], j[J_REASON].v[g], &bad));
        PUT(p, ", \"hops\": [");
        for (int64_t i = first; i < end; i++) {
            if (i > first) PUT(p, ", ");
            PUT(p, "{\"hook\": ");
            p = put_frag(p, frag_of(&t[T_HOOK], h[H_HOOK].v[i], &bad));
            PUT(p, ", \"nat_stage\": ");
            p = put_frag(p, frag_of(&t[T_STAGE], h[H_STAGE].v[i], &bad));
            PUT(p, ", \"ifname\": ");
            p = put_frag(p, frag_of(&t[T_IFNAME], h[H_IFNAME].v[i], &bad));
            PUT(p, ", \"netns\": ");
            {
                int64_t ns = h[H_NETNS].v[i];
                unsigned slot = (unsigned)(((uint64_t)ns * 0x9E3779B97F4A7C15ull) >> 60);
                if (!netns_text[slot].n || netns_text[slot].v != ns) {
                    netns_text[slot].v = ns;
                    netns_text[slot].n = (int)(put_int(netns_text[slot].s, ns) - netns_text[slot].s);
                }
                memcpy(p, netns_text[slot].s, (size_t)netns_text[slot].n);
                p += netns_text[slot].n;
            }
            PUT(p, ", \"container\": ");
            p = put_frag(p, frag_of(&t[T_CONTAINER], h[H_CONTAINER].v[i], &bad));
            PUT(p, ", \"src\": ");
            p = put_endpoint(p, frag_of(&t[T_SRC_IP], h[H_SRC_IP].v[i], &bad), h[H_SRC_PORT].v[i], h[H_SRC_ICMP].v[i]);
            PUT(p, ", \"dst\": ");
            p = put_endpoint(p, frag_of(&t[T_DST_IP], h[H_DST_IP].v[i], &bad), h[H_DST_PORT].v[i], h[H_DST_ICMP].v[i]);
            PUT(p, ", \"dt_ns\": ");
            p = put_int(p, h[H_DT].v[i]);
            PUT(p, ", \"container_id\": ");
            p = put_frag(p, frag_of(&t[T_CONTAINER_ID], h[H_CONTAINER_ID].v[i], &bad));
            *p++ = '}';
        }
        PUT(p, "]}\n");
        if (ends.held) ends.v[g] = (p - base) - 1;
    }
    if (bad) {  /* named by the checks' own message, or changed since it was read */
        for (size_t i = 0; i < sizeof jcodes / sizeof *jcodes; i++)
            if (check_codes(&j[jcodes[i].col], &t[jcodes[i].tab], jnames[jcodes[i].col]) < 0) goto done;
        for (size_t i = 0; i < sizeof hcodes / sizeof *hcodes; i++)
            if (check_codes(&h[hcodes[i].col], &t[hcodes[i].tab], hnames[hcodes[i].col]) < 0) goto done;
        PyErr_SetString(PyExc_ValueError, "journey_json: a code out of range (its column changed during the call)");
        goto done;
    }
    if (into != Py_None) {
        result = PyLong_FromSsize_t(p - base);  /* from `at` in a stage */
    } else if (_PyBytes_Resize(&out, p - base) == 0) {
        result = out;
        out = NULL;
    }

done:
    release_columns(j, N_JOURNEY);
    release_columns(h, N_HOP);
    release_columns(&ends, 1);
    release_tables(t, N_TABLE);
    if (stage_held) PyBuffer_Release(&stage_view);
    Py_XDECREF(out);
    return result;
}

const char native_journey_json_doc[] =
    "journey_json(journey_columns, hop_columns, texts, into=None, ends=None, at=0) -> bytes | int\n\n"
    "The JSON lines of a batch of journeys, each ended by a newline. Columns are\n"
    "contiguous int64 arrays (the two ids uint64), texts lists of JSON-encoded bytes; see\n"
    "tracer/native_json.py, which builds the arguments. With ``into`` (a bytearray, grown\n"
    "as needed, never shrunk, and refused while a view of it is held) the text is written\n"
    "at its start and its length returned. With another writable buffer as ``into``, the\n"
    "text goes from byte ``at`` on and its length is returned, or, where the buffer is too\n"
    "small, minus the size it would need (at + an upper bound of the text): grow it and call again.\n"
    "``ends`` (a writable int64 array, one slot a journey) gets each line's newline offset.";
