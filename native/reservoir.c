/* The summary's reservoir of a hop segment past its cap, compiled (issue 9):
 * render.py's _Samples.add_many draws each new value's slot (a uniform
 * times the count so far, numpy: the draws stay those of adding the values
 * one at a time) and the value goes there if the slot is under the cap, a
 * later value replacing an earlier one drawn for the same slot. numpy has
 * no in-order scatter: its path finds each slot's last value with a sort
 * (np.unique), ~60 % of `trace`'s summary once its segments are past the
 * cap; here one pass in order. The numpy path stays the reference (the
 * tests compare the samples).
 *
 * reservoir_put(samples, slots, values): for each i in order, samples[slots[i]]
 * = values[i] where 0 <= slots[i] < len(samples). */
#include "parts.h"

PyObject *native_reservoir_put(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[3];
    if (!PyArg_ParseTuple(args, "OOO", &o[0], &o[1], &o[2])) return NULL;
    static const char *const names[3] = {"samples", "slots", "values"};
    column c[3] = {0};
    PyObject *result = NULL;
    for (int i = 0; i < 3; i++)
        if (load_column(o[i], &c[i], i == 0 ? COL_WRITABLE : COL_INT64, "reservoir_put", names[i]) < 0) goto done;
    Py_buffer *outs[1] = {&c[0].view}, *ins[2] = {&c[1].view, &c[2].view};
    if (any_overlap(outs, 1, ins, 2)) {
        PyErr_SetString(PyExc_ValueError, "reservoir_put: samples overlaps an input");
        goto done;
    }
    if (c[1].n != c[2].n) {
        PyErr_SetString(PyExc_ValueError, "reservoir_put: slots and values differ in length");
        goto done;
    }
    int64_t *samples = c[0].v;
    const int64_t *slots = c[1].v, *values = c[2].v, cap = c[0].n;
    for (Py_ssize_t i = 0; i < c[1].n; i++)
        if (slots[i] >= 0 && slots[i] < cap) samples[slots[i]] = values[i];
    result = Py_None;
    Py_INCREF(result);
done:
    release_columns(c, 3);
    return result;
}

const char native_reservoir_put_doc[] =
    "reservoir_put(samples, slots, values) -> None\n\n"
    "In order, samples[slots[i]] = values[i] where the slot is within samples (a later\n"
    "value wins its slot). Contiguous int64 arrays; samples is written.";
