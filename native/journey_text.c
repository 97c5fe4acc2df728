/* Journeys -> the human text of `trace` (a header per packet, a line per
 * hop, columns padded per journey, NAT named where addresses change).
 *
 * Why C: the Python path (tracer/render_rows.py) factorizes every padded
 * combination and glues the text with numpy and Arrow, about 2 us of CPU
 * per packet in a busy pass; this loop writes it directly. The Python path
 * stays the reference (tests compare both paths' bytes): every name arrives
 * here already escaped for the terminal by Python (tracer/text.py) as UTF-8,
 * and times that round exactly half-way are formatted by format_dt itself. */
#include "parts.h"

enum { J_PACKET_ID, J_FLOW_ID, J_WALL_NS, J_DIRECTION, J_PROTOCOL, J_TCP_KEY, J_CONTAINER_OF, J_CONTAINER_TO,
       J_VERDICT, J_REASON, J_LAST_SEEN, J_STARTS, N_JOURNEY };
enum { H_HOOK, H_STAGE, H_IFNAME, H_CONTAINER, H_SRC_IP, H_SRC_PORT, H_SRC_ICMP, H_DST_IP, H_DST_PORT, H_DST_ICMP,
       H_DT, H_DROP_REASON, H_IS_DROP, N_HOP };
/* hook_stage: hook code * n_stage + stage code; container: "" for none;
 * src_ip/dst_ip: plain address text ("?" for none); reason: the header's
 * ("" for none); drop: a drop hop's ("dropped" for none); flags: 257, ""
 * for none; verdict: style on + verdict; verdict_end: style off; nat: 8 by
 * code ("" for none); style: bold on, bold off, red on, red off. */
enum { T_HOOK_STAGE, T_IFNAME, T_CONTAINER, T_SRC_IP, T_DST_IP, T_REASON, T_DROP, T_PROTOCOL, T_FLAGS, T_DIRECTION,
       T_VERDICT, T_VERDICT_END, T_NAT, T_STYLE, N_TABLE };
enum { K_SRC, K_DST, N_KEY };

#define MAX_PAD 255
#define DT_SLOT 48

/* characters a UTF-8 text shows as (Python's len of the str) */
static Py_ssize_t width_of(const frag *f) {
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < f->n; i++) w += ((unsigned char)f->s[i] & 0xC0) != 0x80;
    return w;
}

static inline char *put_pad(char *p, Py_ssize_t k) {
    if (k > MAX_PAD) k = MAX_PAD;
    memset(p, ' ', (size_t)k);
    return p + k;
}

/* an endpoint as _endpoint_plain writes it: the address alone for ICMP, else ip:port, [ip6]:port; ? for none */
static inline char *put_plain_endpoint(char *p, const frag *ip, int known, int64_t port, int64_t icmp) {
    if (!known || icmp) return put_frag(p, ip);
    int v6 = memchr(ip->s, ':', (size_t)ip->n) != NULL;
    if (v6) *p++ = '[';
    p = put_frag(p, ip);
    if (v6) *p++ = ']';
    *p++ = ':';
    return put_int(p, port);
}

/* a plain hex id, '-' for 0 */
static inline char *put_hex(char *p, uint64_t v) {
    if (!v) return *p++ = '-', p;
    char tmp[16];
    int k = 0;
    while (v) tmp[k++] = "0123456789abcdef"[v & 15], v >>= 4;
    while (k) *p++ = tmp[--k];
    return p;
}

static inline char *put_digits(char *p, int64_t v, int digits) {
    for (int d = digits - 1; d >= 0; d--, v /= 10) p[d] = (char)('0' + v % 10);
    return p + digits;
}

/* wallclock.clock_array: HH:MM:SS.uuuuuu of the UTC day, '-' for 0 */
static inline char *put_clock(char *p, int64_t ns) {
    if (!ns) return *p++ = '-', p;
    int64_t sec = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) frac += 1000000000, sec -= 1;
    int64_t day = sec % 86400;
    if (day < 0) day += 86400;
    p = put_digits(p, day / 3600, 2);
    *p++ = ':';
    p = put_digits(p, day % 3600 / 60, 2);
    *p++ = ':';
    p = put_digits(p, day % 60, 2);
    *p++ = '.';
    return put_digits(p, frac / 1000, 6);
}

/* render_rows._dt_texts for one hop into ``slot``: its length in bytes, and
 * its width in ``*width``; -1 with an exception set on failure. Values half
 * way between two shown digits, and negative ones, go to format_dt. */
static int dt_text(char *slot, int64_t dt, PyObject *format_dt, Py_ssize_t *width) {
    static const int64_t steps[3] = {100, 10000, 10000000};
    int unit = dt < 1000000 ? 0 : dt < 1000000000 ? 1 : 2;
    int64_t step = steps[unit];
    if (dt >= 0 && (dt % step) * 2 != step) {
        int64_t v = dt / step + ((dt % step) * 2 > step);
        char *p = slot;
        *p++ = '+';
        if (unit == 0) {
            p = put_int(p, v / 10);
            *p++ = '.';
            *p++ = (char)('0' + v % 10);
            PUT(p, "\xc2\xb5s");
            *width = (p - slot) - 1;  /* µ is two bytes, one character */
        } else {
            p = put_int(p, v / 100);
            *p++ = '.';
            p = put_digits(p, v % 100, 2);
            if (unit == 1) *p++ = 'm';
            *p++ = 's';
            *width = p - slot;
        }
        return (int)(p - slot);
    }
    PyObject *text = PyObject_CallFunction(format_dt, "L", (long long)dt);
    if (!text) return -1;
    Py_ssize_t n;
    const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (!s || n >= DT_SLOT) {
        if (s) PyErr_SetString(PyExc_ValueError, "journey_text: format_dt gave too long a text");
        else if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "journey_text: format_dt must return str");
        Py_DECREF(text);
        return -1;
    }
    memcpy(slot, s, (size_t)n);
    *width = PyUnicode_GET_LENGTH(text);
    Py_DECREF(text);
    return (int)n;
}

PyObject *native_journey_text(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *jcols, *hcols, *texts, *keys, *format_dt, *into = Py_None, *out = NULL, *result = NULL;
    Py_ssize_t n_stage, at = 0;
    if (!PyArg_ParseTuple(args, "O!O!O!O!nO|On", &PyTuple_Type, &jcols, &PyTuple_Type, &hcols, &PyTuple_Type, &texts,
                          &PyTuple_Type, &keys, &n_stage, &format_dt, &into, &at))
        return NULL;
    if (PyTuple_GET_SIZE(jcols) != N_JOURNEY || PyTuple_GET_SIZE(hcols) != N_HOP || PyTuple_GET_SIZE(texts) != N_TABLE ||
        PyTuple_GET_SIZE(keys) != N_KEY || n_stage < 1) {
        PyErr_SetString(PyExc_TypeError, "journey_text: wrong number of columns, tables or keys");
        return NULL;
    }
    /* into: a writable buffer (the direct output's page-aligned stage,
     * tracer/direct_output.py) the text goes into from byte `at` on; not
     * grown here: too small, the call returns minus the size it needs. */
    Py_buffer stage_view = {0};
    int stage_held = 0;
    if (at < 0 || (into == Py_None && at != 0)) {
        PyErr_SetString(PyExc_ValueError, "journey_text: at is negative, or given without into");
        return NULL;
    }
    if (into != Py_None) {
        if (stage_take(into, &stage_view, "journey_text: into must be a writable buffer or None") < 0) return NULL;
        stage_held = 1;
    }
    static const char *jnames[N_JOURNEY] = {"packet_id", "flow_id", "wall_ns", "direction", "protocol", "tcp_key",
                                            "container_of", "container_to", "verdict", "reason", "last_seen", "starts"};
    static const char *hnames[N_HOP] = {"hook", "stage", "ifname", "container", "src_ip", "src_port", "src_icmp",
                                        "dst_ip", "dst_port", "dst_icmp", "dt", "drop_reason", "is_drop"};
    static const char *tnames[N_TABLE] = {"hook_stage", "ifname", "container", "src_ip", "dst_ip", "reason", "drop",
                                          "protocol", "flags", "direction", "verdict", "verdict_end", "nat", "style"};
    static const char *knames[N_KEY] = {"src_key", "dst_key"};
    column j[N_JOURNEY] = {0}, h[N_HOP] = {0}, k[N_KEY] = {0};
    table t[N_TABLE] = {0};
    char *scratch = NULL;
    Py_ssize_t *wid = NULL;

    /* the ids are uint64 (tracer/native.py u64), every other column int64 */
    if (load_columns(jcols, j, N_JOURNEY, "journey_text", "journeys", jnames, 1u << J_PACKET_ID | 1u << J_FLOW_ID, 0) < 0
        || load_columns(hcols, h, N_HOP, "journey_text", "hops", hnames, 0, 0) < 0
        || load_columns(keys, k, N_KEY, "journey_text", "keys", knames, 0, 0) < 0
        || load_tables(texts, t, N_TABLE, tnames) < 0)
        goto done;

    Py_ssize_t count, n = h[H_HOOK].n;
    if (check_journey_shape("journey_text", j, N_JOURNEY, J_STARTS, jnames, h, N_HOP, H_HOOK, hnames, &count) < 0) goto done;
    const int64_t *starts = j[J_STARTS].v;
    if (k[K_SRC].n != t[T_SRC_IP].n || k[K_DST].n != t[T_DST_IP].n || t[T_FLAGS].n != 257 || t[T_DIRECTION].n != 3 ||
        t[T_VERDICT].n != 3 || t[T_VERDICT_END].n != 3 || t[T_NAT].n != 8 || t[T_STYLE].n != 4 ||
        t[T_HOOK_STAGE].n % n_stage) {
        PyErr_SetString(PyExc_ValueError, "journey_text: a table of the wrong size");
        goto done;
    }
    {
        static const struct { int col; int tab; } jcodes[] = {{J_DIRECTION, T_DIRECTION}, {J_PROTOCOL, T_PROTOCOL},
            {J_TCP_KEY, T_FLAGS}, {J_CONTAINER_OF, T_CONTAINER}, {J_CONTAINER_TO, T_CONTAINER},
            {J_VERDICT, T_VERDICT}, {J_REASON, T_REASON}};
        static const struct { int col; int tab; } hcodes[] = {{H_IFNAME, T_IFNAME}, {H_CONTAINER, T_CONTAINER},
            {H_SRC_IP, T_SRC_IP}, {H_DST_IP, T_DST_IP}, {H_DROP_REASON, T_DROP}};
        for (size_t i = 0; i < sizeof jcodes / sizeof *jcodes; i++)
            if (check_codes(&j[jcodes[i].col], &t[jcodes[i].tab], jnames[jcodes[i].col]) < 0) goto done;
        for (size_t i = 0; i < sizeof hcodes / sizeof *hcodes; i++)
            if (check_codes(&h[hcodes[i].col], &t[hcodes[i].tab], hnames[hcodes[i].col]) < 0) goto done;
        if (t[T_REASON].n != t[T_DROP].n) {
            PyErr_SetString(PyExc_ValueError, "journey_text: reason and drop tables differ in size");
            goto done;
        }
        if (check_range(&h[H_HOOK], t[T_HOOK_STAGE].n / n_stage, "hook") < 0 ||
            check_range(&h[H_STAGE], n_stage, "stage") < 0)
            goto done;
        for (Py_ssize_t g = 0; g < count; g++) {
            int64_t seen = j[J_LAST_SEEN].v[g];
            if (seen != -1 && (seen < starts[g] || seen >= starts[g + 1])) {
                PyErr_SetString(PyExc_ValueError, "journey_text: last_seen outside its journey");
                goto done;
            }
        }
    }

    /* per hop: its dt text (slot) and length; widths per text of the padded columns */
    scratch = PyMem_Malloc((size_t)(n ? n : 1) * DT_SLOT);
    Py_ssize_t n_hs = t[T_HOOK_STAGE].n, n_if = t[T_IFNAME].n, n_ct = t[T_CONTAINER].n;
    wid = PyMem_Malloc((size_t)(2 * n + n_hs + n_if + n_ct + 1) * sizeof(Py_ssize_t));
    if (!scratch || !wid) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *dt_len = wid, *dt_w = wid + n, *hs_w = wid + 2 * n, *if_w = hs_w + n_hs, *ct_w = if_w + n_if;
    for (Py_ssize_t i = 0; i < n_hs; i++) hs_w[i] = width_of(&t[T_HOOK_STAGE].f[i]);
    for (Py_ssize_t i = 0; i < n_if; i++) if_w[i] = width_of(&t[T_IFNAME].f[i]);
    for (Py_ssize_t i = 0; i < n_ct; i++) ct_w[i] = width_of(&t[T_CONTAINER].f[i]);
    for (Py_ssize_t i = 0; i < n; i++) {
        int len = dt_text(scratch + i * DT_SLOT, h[H_DT].v[i], format_dt, &dt_w[i]);
        if (len < 0) goto done;
        dt_len[i] = len;
    }

    /* An upper bound of the text, then one pass writing it. */
    Py_ssize_t ip_max = t[T_SRC_IP].max > t[T_DST_IP].max ? t[T_SRC_IP].max : t[T_DST_IP].max;
    Py_ssize_t style_max = 0;
    for (int i = 0; i < 4; i++) style_max += t[T_STYLE].f[i].n;
    Py_ssize_t per_journey = 160 + style_max + t[T_PROTOCOL].max + t[T_FLAGS].max + 2 * ip_max + t[T_DIRECTION].max +
                             2 * t[T_CONTAINER].max + t[T_VERDICT].max + t[T_VERDICT_END].max + t[T_REASON].max;
    Py_ssize_t tail = t[T_DROP].max + t[T_HOOK_STAGE].max + 16;
    if (2 * ip_max + 48 + t[T_NAT].max > tail) tail = 2 * ip_max + 48 + t[T_NAT].max;
    /* a pad is at most its column's widest text (a width is at most its
     * bytes), and at most MAX_PAD: a bound near the text's size, since the
     * direct output's stage is grown to it (tracer/direct_output.py) */
    Py_ssize_t pads = DT_SLOT;
    const int padded[] = {T_HOOK_STAGE, T_IFNAME, T_CONTAINER};
    for (size_t i = 0; i < sizeof padded / sizeof *padded; i++)
        pads += t[padded[i]].max < MAX_PAD ? t[padded[i]].max : MAX_PAD;
    Py_ssize_t per_hop = 32 + style_max + pads + DT_SLOT + t[T_HOOK_STAGE].max + t[T_IFNAME].max +
                         t[T_CONTAINER].max + tail;
    Py_ssize_t bound = count * per_journey + n * per_hop + 64;
    char *base;
    if (stage_held) {
        if (!(base = stage_room(&stage_view, at, bound))) {
            result = PyLong_FromSsize_t(-(at + bound));
            goto done;
        }
    } else {
        out = PyBytes_FromStringAndSize(NULL, bound);
        if (!out) goto done;
        base = PyBytes_AS_STRING(out);
    }
    char *p = base;
    const frag *style = t[T_STYLE].f;
    const int64_t *src_key = k[K_SRC].v, *dst_key = k[K_DST].v;
    for (Py_ssize_t g = 0; g < count; g++) {
        int64_t first = starts[g], end = starts[g + 1];
        /* the header */
        p = put_frag(p, &style[0]);
        p = put_clock(p, j[J_WALL_NS].v[g]);
        PUT(p, " #");
        p = put_hex(p, (uint64_t)j[J_PACKET_ID].v[g]);
        *p++ = ' ';
        p = put_frag(p, &t[T_PROTOCOL].f[j[J_PROTOCOL].v[g]]);
        const frag *flags = &t[T_FLAGS].f[j[J_TCP_KEY].v[g]];
        if (flags->n) *p++ = ' ', p = put_frag(p, flags);
        *p++ = ' ';
        const frag *fs = &t[T_SRC_IP].f[h[H_SRC_IP].v[first]], *fd = &t[T_DST_IP].f[h[H_DST_IP].v[first]];
        p = put_plain_endpoint(p, fs, src_key[h[H_SRC_IP].v[first]] >= 0, h[H_SRC_PORT].v[first], h[H_SRC_ICMP].v[first]);
        PUT(p, " \xe2\x86\x92 ");
        p = put_plain_endpoint(p, fd, dst_key[h[H_DST_IP].v[first]] >= 0, h[H_DST_PORT].v[first], h[H_DST_ICMP].v[first]);
        p = put_frag(p, &style[1]);
        PUT(p, "  ");
        p = put_frag(p, &t[T_DIRECTION].f[j[J_DIRECTION].v[g]]);
        PUT(p, "  flow ");
        p = put_hex(p, (uint64_t)j[J_FLOW_ID].v[g]);
        const frag *ct = &t[T_CONTAINER].f[j[J_CONTAINER_OF].v[g]], *to = &t[T_CONTAINER].f[j[J_CONTAINER_TO].v[g]];
        if (ct->n) {
            PUT(p, "  [");
            p = put_frag(p, ct);
            if (to->n) PUT(p, " \xe2\x86\x92 "), p = put_frag(p, to);
            *p++ = ']';
        }
        PUT(p, "  ");
        int64_t v = j[J_VERDICT].v[g];
        p = put_frag(p, &t[T_VERDICT].f[v]);
        const frag *reason = &t[T_REASON].f[j[J_REASON].v[g]];
        if (reason->n) *p++ = ' ', p = put_frag(p, reason);
        p = put_frag(p, &t[T_VERDICT_END].f[v]);
        *p++ = '\n';

        /* the columns' widths over the journey's hops */
        Py_ssize_t w_dt = 0, w_hs = 0, w_if = 0, w_ct = 0;
        for (int64_t i = first; i < end; i++) {
            Py_ssize_t hs = h[H_HOOK].v[i] * n_stage + h[H_STAGE].v[i];
            if (dt_w[i] > w_dt) w_dt = dt_w[i];
            if (hs_w[hs] > w_hs) w_hs = hs_w[hs];
            if (if_w[h[H_IFNAME].v[i]] > w_if) w_if = if_w[h[H_IFNAME].v[i]];
            if (ct_w[h[H_CONTAINER].v[i]] > w_ct) w_ct = ct_w[h[H_CONTAINER].v[i]];
        }
        int reply = j[J_DIRECTION].v[g] == 2;
        int64_t seen = j[J_LAST_SEEN].v[g], prev = -1;
        for (int64_t i = first; i < end; i++) {
            int drop = h[H_IS_DROP].v[i] != 0;
            Py_ssize_t hs = h[H_HOOK].v[i] * n_stage + h[H_STAGE].v[i];
            if (drop) p = put_frag(p, &style[2]);
            PUT(p, "    ");
            p = put_pad(p, w_dt - dt_w[i]);
            memcpy(p, scratch + i * DT_SLOT, (size_t)dt_len[i]);
            p += dt_len[i];
            PUT(p, "  ");
            p = put_frag(p, &t[T_HOOK_STAGE].f[hs]);
            p = put_pad(p, w_hs - hs_w[hs]);
            PUT(p, "  ");
            p = put_frag(p, &t[T_IFNAME].f[h[H_IFNAME].v[i]]);
            p = put_pad(p, w_if - if_w[h[H_IFNAME].v[i]]);
            if (w_ct > 0) {
                PUT(p, "  ");
                p = put_frag(p, &t[T_CONTAINER].f[h[H_CONTAINER].v[i]]);
                p = put_pad(p, w_ct - ct_w[h[H_CONTAINER].v[i]]);
            }
            PUT(p, "  ");
            if (drop) {
                p = put_frag(p, &t[T_DROP].f[h[H_DROP_REASON].v[i]]);
                if (seen >= 0) {
                    PUT(p, " (last seen ");
                    p = put_frag(p, &t[T_HOOK_STAGE].f[h[H_HOOK].v[seen] * n_stage + h[H_STAGE].v[seen]]);
                    *p++ = ')';
                }
                p = put_frag(p, &style[3]);
                *p++ = '\n';
                continue;
            }
            int64_t si = h[H_SRC_IP].v[i], di = h[H_DST_IP].v[i];
            int s_known = src_key[si] >= 0, d_known = dst_key[di] >= 0;
            p = put_plain_endpoint(p, &t[T_SRC_IP].f[si], s_known, h[H_SRC_PORT].v[i], h[H_SRC_ICMP].v[i]);
            PUT(p, " \xe2\x86\x92 ");
            p = put_plain_endpoint(p, &t[T_DST_IP].f[di], d_known, h[H_DST_PORT].v[i], h[H_DST_ICMP].v[i]);
            /* NAT: the addresses as shown (ICMP shows no ids) against the
             * journey's previous hop that had both */
            if (s_known && d_known) {
                if (prev >= 0) {
                    int64_t pi = prev;
                    int d_changed = dst_key[di] != dst_key[h[H_DST_IP].v[pi]] ||
                                    (h[H_DST_ICMP].v[i] != 0) != (h[H_DST_ICMP].v[pi] != 0) ||
                                    (!h[H_DST_ICMP].v[i] && h[H_DST_PORT].v[i] != h[H_DST_PORT].v[pi]);
                    int s_changed = src_key[si] != src_key[h[H_SRC_IP].v[pi]] ||
                                    (h[H_SRC_ICMP].v[i] != 0) != (h[H_SRC_ICMP].v[pi] != 0) ||
                                    (!h[H_SRC_ICMP].v[i] && h[H_SRC_PORT].v[i] != h[H_SRC_PORT].v[pi]);
                    int code = d_changed + 2 * s_changed + 4 * (reply && (d_changed || s_changed));
                    p = put_frag(p, &t[T_NAT].f[code]);
                }
                prev = i;
            }
            *p++ = '\n';
        }
    }
    if (stage_held) {
        result = PyLong_FromSsize_t(p - base);  /* from `at` in the stage */
    } else if (_PyBytes_Resize(&out, p - base) == 0) {
        result = out;
        out = NULL;
    }

done:
    release_columns(j, N_JOURNEY);
    release_columns(h, N_HOP);
    release_columns(k, N_KEY);
    release_tables(t, N_TABLE);
    if (stage_held) PyBuffer_Release(&stage_view);
    PyMem_Free(scratch);
    PyMem_Free(wid);
    Py_XDECREF(out);
    return result;
}

const char native_journey_text_doc[] =
    "journey_text(journey_columns, hop_columns, texts, address_keys, n_stage, format_dt, into=None, at=0)\n"
    "    -> bytes | int\n\n"
    "The human text of a batch of journeys, as tracer/render_rows.py writes it.\n"
    "With ``into`` (a writable buffer) the text goes from byte ``at`` on and its length is\n"
    "returned, or, where the buffer is too small, minus the size it would need (at + an\n"
    "upper bound of the text): grow it and call again.\n"
    "Columns are contiguous int64 arrays (the two ids uint64), texts lists of UTF-8 bytes;\n"
    "see tracer/native_render.py, which builds the arguments.";
