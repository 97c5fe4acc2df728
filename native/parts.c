/* Columns and text tables for the text writers (see parts.h). */
#include "parts.h"

int load_column(PyObject *obj, column *c, const char *what) {
    if (PyObject_GetBuffer(obj, &c->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    c->held = 1;
    const char *fmt = c->view.format ? c->view.format : "B";
    while (*fmt == '@' || *fmt == '=' || *fmt == '<') fmt++;
    if (c->view.itemsize != 8 || strlen(fmt) != 1 || !strchr("qQlL", *fmt)) {
        PyErr_Format(PyExc_TypeError, "tracer._native: %s must be a contiguous 64-bit integer array", what);
        return -1;
    }
    c->v = (const int64_t *)c->view.buf;
    c->n = c->view.len / 8;
    return 0;
}

int load_table(PyObject *list, table *t, const char *what) {
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "tracer._native: %s texts must be a list of bytes", what);
        return -1;
    }
    t->n = PyList_GET_SIZE(list);
    t->max = 0;
    t->f = PyMem_Malloc((size_t)(t->n ? t->n : 1) * sizeof(frag));
    if (!t->f) {
        PyErr_NoMemory();
        return -1;
    }
    size_t size = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "tracer._native: %s texts must be bytes", what);
            return -1;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        size += ((size_t)n + 31) & ~(size_t)15;
        if (n > t->max) t->max = n;
    }
    t->arena = PyMem_Malloc(size + 16);
    if (!t->arena) {
        PyErr_NoMemory();
        return -1;
    }
    char *a = (char *)(((uintptr_t)t->arena + 15) & ~(uintptr_t)15);
    for (Py_ssize_t i = 0; i < t->n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        memcpy(a, PyBytes_AS_STRING(item), (size_t)n);
        memset(a + n, 0, 16);
        t->f[i].s = a;
        t->f[i].n = n;
        a += ((size_t)n + 31) & ~(size_t)15;
    }
    return 0;
}

/* The shape both text writers take: journey columns (one of them the
 * hop starts, running from 0 to the number of hops, each journey with a
 * hop) and hop columns, every column as long as its kind. The number of
 * journeys in *count, or -1 with a ValueError naming fn. */
int check_journey_shape(const char *fn, const column *j, int n_journey, int starts, const char *const *jnames,
                        const column *h, int n_hop, int hook, const char *const *hnames, Py_ssize_t *count) {
    Py_ssize_t c = j[starts].n - 1, n = h[hook].n;
    const int64_t *at = j[starts].v;
    if (c < 0 || at[0] != 0 || at[c] != n) {
        PyErr_Format(PyExc_ValueError, "%s: starts must run from 0 to the number of hops", fn);
        return -1;
    }
    for (Py_ssize_t g = 0; g < c; g++)
        if (at[g + 1] <= at[g]) {
            PyErr_Format(PyExc_ValueError, "%s: every journey needs a hop, in order", fn);
            return -1;
        }
    for (int i = 0; i < n_journey; i++)
        if (i != starts && j[i].n != c) {
            PyErr_Format(PyExc_ValueError, "%s: %s has %zd values for %zd journeys", fn, jnames[i], j[i].n, c);
            return -1;
        }
    for (int i = 0; i < n_hop; i++)
        if (h[i].n != n) {
            PyErr_Format(PyExc_ValueError, "%s: %s has %zd values for %zd hops", fn, hnames[i], h[i].n, n);
            return -1;
        }
    *count = c;
    return 0;
}

/* every code of a column lies in 0 .. size-1 */
int check_range(const column *c, Py_ssize_t size, const char *what) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->v[i] < 0 || c->v[i] >= size) {
            PyErr_Format(PyExc_ValueError, "tracer._native: %s code %lld out of range (%zd)", what, (long long)c->v[i],
                         size);
            return -1;
        }
    return 0;
}

/* every code of a column indexes its table */
int check_codes(const column *c, const table *t, const char *what) { return check_range(c, t->n, what); }

/* n columns (or tables) from a tuple of them, named for errors */
int load_columns(PyObject *tuple, column *c, int n, const char *const *names) {
    for (int i = 0; i < n; i++)
        if (load_column(PyTuple_GET_ITEM(tuple, i), &c[i], names[i]) < 0) return -1;
    return 0;
}

int load_tables(PyObject *tuple, table *t, int n, const char *const *names) {
    for (int i = 0; i < n; i++)
        if (load_table(PyTuple_GET_ITEM(tuple, i), &t[i], names[i]) < 0) return -1;
    return 0;
}
