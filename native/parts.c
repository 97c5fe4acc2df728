/* The one column loader (every native function's 64-bit columns) and the text
 * writers' tables of texts (see parts.h). */
#include "parts.h"

#include <stdio.h>

/* Whether a buffer's struct format is exactly one native 8-byte element of
 * struct code `code`: 'q' int64 or 'Q' uint64 (also "l" / "L" where a long
 * is 8 bytes), 'd' float64. */
static int format_is_64(const char *f, char code) {
    if (!f) return 0; /* PyBUF_FORMAT asked: NULL means unsigned bytes */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    if (*f == '@' || *f == '=' || *f == '>' || *f == '!') f++;
#else
    if (*f == '@' || *f == '=' || *f == '<') f++;
#endif
    const char alias = code == 'q' ? 'l' : code == 'Q' ? 'L' : code; /* long is 8 bytes where sizeof says so */
    return (f[0] == code || (f[0] == alias && sizeof(long) == 8)) && f[1] == 0;
}

/* One contiguous column of the type ``rule`` names (COL_INT64, COL_UINT64
 * or COL_FLOAT64, | COL_WRITABLE where the C writes it); fn and what name
 * it in errors. 0, or -1 with a TypeError (a ValueError for a read-only
 * array asked writable); c->held says whether to release it either way. */
int load_column(PyObject *obj, column *c, unsigned rule, const char *fn, const char *what) {
    const char code = rule & COL_FLOAT64 ? 'd' : rule & COL_UINT64 ? 'Q' : 'q';
    if (PyObject_GetBuffer(obj, &c->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (rule & COL_WRITABLE ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    c->held = 1;
    if (c->view.itemsize != 8 || c->view.len % 8 || !format_is_64(c->view.format, code)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a contiguous 64-bit %s array (%s), not format '%s'", fn, what,
                     code == 'd' ? "float" : "integer", code == 'd' ? "float64" : code == 'Q' ? "uint64" : "int64",
                     c->view.format ? c->view.format : "B");
        return -1;
    }
    c->v = (int64_t *)c->view.buf;
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

/* The n columns of a tuple of exactly n arrays: column i is uint64 where
 * bit i of ``uint64_cols`` is set (else int64) and writable where bit i of
 * ``writable_cols`` is; named names[i] in errors, or "<what> column i"
 * without names. Release them with release_columns, also after an error. */
int load_columns(PyObject *tuple, column *c, int n, const char *fn, const char *what, const char *const *names,
                 unsigned uint64_cols, unsigned writable_cols) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != n) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a tuple of %d arrays", fn, what, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char name[96];
        if (!names) snprintf(name, sizeof name, "%s column %d", what, i);
        unsigned rule = (uint64_cols >> i & 1 ? COL_UINT64 : COL_INT64) | (writable_cols >> i & 1 ? COL_WRITABLE : 0);
        if (load_column(PyTuple_GET_ITEM(tuple, i), &c[i], rule, fn, names ? names[i] : name) < 0) return -1;
    }
    return 0;
}

void release_columns(column *c, int n) {
    for (int i = 0; i < n; i++)
        if (c[i].held) {
            PyBuffer_Release(&c[i].view);
            c[i].held = 0;
        }
}

int load_tables(PyObject *tuple, table *t, int n, const char *const *names) {
    for (int i = 0; i < n; i++)
        if (load_table(PyTuple_GET_ITEM(tuple, i), &t[i], names[i]) < 0) return -1;
    return 0;
}

void release_tables(table *t, int n) {
    for (int i = 0; i < n; i++) {
        PyMem_Free(t[i].f);
        PyMem_Free(t[i].arena);
        t[i].f = NULL;
        t[i].arena = NULL;
    }
}
