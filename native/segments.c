/* The summary's hop segments of a batch of journeys, compiled (issue 9):
 * each pair of consecutive hops of a journey is a segment between their
 * labels, and its duration goes to that segment's samples. render.py's
 * Summary._add_segments groups them with numpy (labels per hop, a stable
 * argsort, a split: ~25 calls over the hops a batch); here one counting
 * pass. The numpy path stays the reference (the tests compare the samples).
 *
 * segment_groups(hook, stage, role, starts, ktime, label_of, n_stage,
 * n_role, n_labels, durations): a hop's label is label_of[(hook * n_stage +
 * stage) * n_role + role]; a segment's id is first label * n_labels +
 * second. Writes the durations into ``durations`` (one per pair of
 * consecutive hops), grouped by segment in order of first appearance,
 * each group in journey order; returns (segment ids, counts), in that
 * order. */
#include "parts.h"

#include <stdlib.h>

PyObject *native_segment_groups(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[7];
    long long n_stage, n_role, n_labels;
    if (!PyArg_ParseTuple(args, "OOOOOOLLLO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &n_stage, &n_role, &n_labels,
                          &o[6]))
        return NULL;
    static const char *const names[7] = {"hook", "stage", "role", "starts", "ktime", "label_of", "durations"};
    column c[7] = {0}; /* the six inputs, then the durations written */
    PyObject *result = NULL;
    int64_t *count = NULL, *next = NULL, *order = NULL, *label = NULL, *st = NULL;
    for (int i = 0; i < 7; i++)
        if (load_column(o[i], &c[i], i == 6 ? COL_WRITABLE : COL_INT64, "segment_groups", names[i]) < 0) goto done;
    const int64_t *hook = c[0].v, *stage = c[1].v, *role = c[2].v, *ktime = c[4].v, *label_of = c[5].v;
    int64_t *dur = c[6].v;
    const Py_ssize_t H = c[0].n, P = c[3].n - 1;
    Py_buffer *outs[1] = {&c[6].view}, *ins[6];
    for (int i = 0; i < 6; i++)
        ins[i] = &c[i].view;
    if (any_overlap(outs, 1, ins, 6)) { /* the output is written while the inputs are read */
        PyErr_SetString(PyExc_ValueError, "segment_groups: durations overlaps an input");
        goto done;
    }
    if (n_stage < 1 || n_role < 1 || n_labels < 1 || n_labels > 4096 || c[1].n != H || c[2].n != H || c[4].n != H
        || P < 0 || c[6].n != H - P) {
        PyErr_SetString(PyExc_ValueError, "segment_groups: columns and sizes do not fit together");
        goto done;
    }
    const Py_ssize_t n_pair = (Py_ssize_t)(n_labels * n_labels), n_combo = c[5].n;
    count = calloc((size_t)n_pair, sizeof *count);
    next = malloc((size_t)n_pair * sizeof *next);
    order = malloc((size_t)(H > 0 ? H : 1) * sizeof *order);
    label = malloc((size_t)(H > 0 ? H : 1) * sizeof *label);
    st = malloc((size_t)(P + 1) * sizeof *st);
    if (!count || !next || !order || !label || !st) {
        PyErr_NoMemory();
        goto done;
    }
    /* starts and labels copied once and checked as copied: the loops below
     * index with the copies only, whatever the callers' buffers hold later */
    for (Py_ssize_t g = 0; g <= P; g++) {
        st[g] = c[3].v[g];
        if (g ? st[g] <= st[g - 1] || st[g] > H : st[g] != 0) {
            PyErr_SetString(PyExc_ValueError, "segment_groups: every journey needs a hop, in order");
            goto done;
        }
    }
    if (st[P] != H) {
        PyErr_SetString(PyExc_ValueError, "segment_groups: columns and sizes do not fit together");
        goto done;
    }
    for (Py_ssize_t i = 0; i < H; i++) {
        int64_t h = hook[i], s = stage[i], r = role[i], combo;
        if (h < 0 || s < 0 || s >= n_stage || r < 0 || r >= n_role || __builtin_mul_overflow(h, (int64_t)n_stage, &combo)
            || __builtin_add_overflow(combo, s, &combo) || __builtin_mul_overflow(combo, (int64_t)n_role, &combo)
            || __builtin_add_overflow(combo, r, &combo) || combo >= n_combo) {
            PyErr_SetString(PyExc_ValueError, "segment_groups: a hook, stage or role code out of range");
            goto done;
        }
        int64_t l = label_of[combo];
        if (l < 0 || l >= n_labels) {
            PyErr_SetString(PyExc_ValueError, "segment_groups: a label out of range");
            goto done;
        }
        label[i] = l;
    }
    /* segments in order of first appearance, and how many of each */
    Py_ssize_t seen = 0;
    for (Py_ssize_t g = 0; g < P; g++)
        for (Py_ssize_t i = st[g]; i + 1 < st[g + 1]; i++) {
            int64_t pair = label[i] * n_labels + label[i + 1];
            if (!count[pair]++) order[seen++] = pair;
        }
    /* each segment's first slot, then the durations in journey order */
    Py_ssize_t at = 0;
    for (Py_ssize_t k = 0; k < seen; k++) {
        next[order[k]] = at;
        at += count[order[k]];
    }
    for (Py_ssize_t g = 0; g < P; g++)
        for (Py_ssize_t i = st[g]; i + 1 < st[g + 1]; i++)
            dur[next[label[i] * n_labels + label[i + 1]]++] = (int64_t)((uint64_t)ktime[i + 1] - (uint64_t)ktime[i]);
    PyObject *ids = PyList_New(seen), *counts = PyList_New(seen);
    for (Py_ssize_t k = 0; ids && counts && k < seen; k++) {
        PyObject *a = PyLong_FromLongLong(order[k]), *b = PyLong_FromLongLong(count[order[k]]);
        if (!a || !b) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_CLEAR(ids);
            break;
        }
        PyList_SET_ITEM(ids, k, a);
        PyList_SET_ITEM(counts, k, b);
    }
    if (ids && counts) result = Py_BuildValue("(NN)", ids, counts);
    else {
        Py_XDECREF(ids);
        Py_XDECREF(counts);
    }
done:
    free(count);
    free(next);
    free(order);
    free(label);
    free(st);
    release_columns(c, 7);
    return result;
}

const char native_segment_groups_doc[] =
    "segment_groups(hook, stage, role, starts, ktime, label_of, n_stage, n_role, n_labels, durations)\n"
    "The durations between consecutive hops of each journey, grouped by segment (label pair) into durations;\n"
    "returns (segment ids, counts) in order of first appearance (tracer/render.py Summary._add_segments).";
