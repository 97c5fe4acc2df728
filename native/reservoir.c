/* The summary's reservoir of a hop segment past its cap, compiled (issue 9):
 * render.py's _Samples.add_many draws one uniform a new value (numpy: the
 * draws stay those of adding the values one at a time); the value's slot
 * is that uniform times its number among the segment's values, and the
 * value goes there if the slot is under the cap, a later value replacing
 * an earlier one drawn for the same slot. numpy has no in-order scatter:
 * its path finds each slot's last value with a sort (np.unique), ~60 % of
 * `trace`'s summary once its segments are past the cap; here one pass in
 * order, the slots computed in it (numpy's arange, product and cast cost
 * ~4 us a call of their own, a call a segment a pass). The numpy path
 * stays the reference (the tests compare the samples).
 *
 * reservoir_draw(samples, uniforms, values, seen): for each i in order, the
 * slot of value i is (int64)(uniforms[i] * (double)(seen + 1 + i)), as
 * numpy's (uniforms * counts).astype(int64) computes it, and
 * samples[slot] = values[i] where slot < len(samples). */
#include "parts.h"

PyObject *native_reservoir_draw(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[3];
    long long seen;
    if (!PyArg_ParseTuple(args, "OOOL", &o[0], &o[1], &o[2], &seen)) return NULL;
    static const char *const names[3] = {"samples", "uniforms", "values"};
    static const unsigned rules[3] = {COL_WRITABLE, COL_FLOAT64, COL_INT64};
    column c[3] = {0};
    PyObject *result = NULL;
    for (int i = 0; i < 3; i++)
        if (load_column(o[i], &c[i], rules[i], "reservoir_draw", names[i]) < 0) goto done;
    Py_buffer *outs[1] = {&c[0].view}, *ins[2] = {&c[1].view, &c[2].view};
    if (any_overlap(outs, 1, ins, 2)) {
        PyErr_SetString(PyExc_ValueError, "reservoir_draw: samples overlaps an input");
        goto done;
    }
    Py_ssize_t n = c[2].n;
    if (c[1].n != n) {
        PyErr_SetString(PyExc_ValueError, "reservoir_draw: uniforms and values differ in length");
        goto done;
    }
    if (seen < 0 || seen > (1LL << 53) - n - 1) { /* each count exact as a double */
        PyErr_SetString(PyExc_ValueError, "reservoir_draw: seen out of range");
        goto done;
    }
    int64_t *samples = c[0].v;
    const int64_t *values = c[2].v, cap = c[0].n;
    const double *uniforms = (const double *)c[1].v;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t slot = (int64_t)(uniforms[i] * (double)(seen + 1 + i));
        if (slot >= 0 && slot < cap) samples[slot] = values[i];
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release_columns(c, 3);
    return result;
}

const char native_reservoir_draw_doc[] =
    "reservoir_draw(samples, uniforms, values, seen) -> None\n\n"
    "In order, value i goes to slot int(uniforms[i] * (seen + 1 + i)) if that is within samples (a later\n"
    "value wins its slot). Contiguous arrays: samples and values int64 (samples is written), uniforms\n"
    "float64 of the values' length.";
