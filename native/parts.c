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

/* every code of a column indexes its table */
int check_codes(const column *c, const table *t, const char *what) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->v[i] < 0 || c->v[i] >= t->n) {
            PyErr_Format(PyExc_ValueError, "tracer._native: %s code %lld out of range (%zd texts)", what,
                         (long long)c->v[i], t->n);
            return -1;
        }
    return 0;
}
