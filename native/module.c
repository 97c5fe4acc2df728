/* The module table of tracer._native (see native.h for why it exists). A
 * new job adds its source file to native/, one line here and its name to
 * tracer/native.py's FUNCTIONS (a stale build without it is then not used). */
#include "native.h"

static PyMethodDef methods[] = {
    {"journey_json", native_journey_json, METH_VARARGS, native_journey_json_doc},
    {"journey_text", native_journey_text, METH_VARARGS, native_journey_text_doc},
    {"address_ids", native_address_ids, METH_VARARGS, native_address_ids_doc},
    {"journey_layout", native_journey_layout, METH_VARARGS, native_journey_layout_doc},
    {"journey_hops", native_journey_hops, METH_VARARGS, native_journey_hops_doc},
    {"journey_facts", native_journey_facts, METH_VARARGS, native_journey_facts_doc},
    {"segment_groups", native_segment_groups, METH_VARARGS, native_segment_groups_doc},
    {"reservoir_draw", native_reservoir_draw, METH_VARARGS, native_reservoir_draw_doc},
    {"ring_records", native_ring_records, METH_VARARGS, native_ring_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracer._native",
    "Compiled twins of a few hot Python loops of tracer (see tracer/native.py).", -1, methods,
};

#ifndef TRACER_NATIVE_SOURCES
#define TRACER_NATIVE_SOURCES ""
#endif

/* SOURCES: the hash of native/ this was built from (setup.py), so that
 * tracer/native.py can tell a build older than its sources. */
PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCES", TRACER_NATIVE_SOURCES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
